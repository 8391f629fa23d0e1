//! Which certificate a TLS handshake gets.

use super::acme_state::AcmeState;
use super::certs::CertTable;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// Picks the certificate for a TLS handshake: an ACME tls-alpn-01 challenge answer
/// when the client asks for `acme-tls/1`, else by SNI among static and ACME
/// certificates, else the default one.
#[derive(Debug)]
pub(crate) struct SniResolver {
    pub(crate) static_certs: CertTable,
    pub(crate) acme: Option<Arc<AcmeState>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_string);
        let wants_challenge = hello
            .alpn()
            .is_some_and(|mut p| p.any(|proto| proto == super::ACME_TLS_ALPN));
        if wants_challenge {
            return self.acme.as_ref()?.challenge_cert(name.as_deref()?);
        }
        if let Some(n) = &name {
            if let Some(k) = self.static_certs.find(n) {
                return Some(k);
            }
            if let Some(k) = self.acme.as_ref().and_then(|a| a.certs.load().find(n)) {
                return Some(k);
            }
        }
        self.static_certs.default_key().or_else(|| {
            self.acme
                .as_ref()
                .and_then(|a| a.certs.load().default_key())
        })
    }
}
