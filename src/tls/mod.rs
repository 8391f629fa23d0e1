//! TLS with rustls (ring crypto provider): server configs with certificates chosen
//! by SNI (static files and ACME), the ACME certificates and challenge answers a
//! node holds, and client configs for HTTPS backends and outgoing notifications.

pub(crate) mod acme_state;
pub(crate) mod certs;
mod sni;

use crate::config::{ListenerConfig, UpstreamTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::sync::{Arc, OnceLock};

/// ALPN protocol of the ACME tls-alpn-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The process-wide crypto provider: ring (a small C/asm build, unlike aws-lc-rs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trusted roots (loaded once).
pub fn system_roots() -> Arc<rustls::RootCertStore> {
    static R: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    R.get_or_init(|| {
        let mut store = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "could not load some system root certificates");
        }
        let (added, _) = store.add_parsable_certificates(found.certs);
        tracing::debug!(added, "system root certificates loaded");
        Arc::new(store)
    })
    .clone()
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A client config that verifies servers against the system roots.
pub fn client_config(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map(|b| {
            b.with_root_certificates(system_roots())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(system_roots())
                .with_no_client_auth()
        });
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// The client config for a pool's `https://` backends: system roots or the pool's
/// own CA, or no verification at all when explicitly asked (loudly).
pub fn upstream_client_config(t: &UpstreamTls) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?;
    let mut cfg = if t.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification))
            .with_no_client_auth()
    } else if let Some(ca) = &t.ca {
        let mut store = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("cannot read {}: {e}", ca.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid PEM in {}: {e}", ca.display()))?;
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("no CA certificate in {}", ca.display()));
        }
        builder.with_root_certificates(store).with_no_client_auth()
    } else {
        builder
            .with_root_certificates(system_roots())
            .with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate: only for `insecure_skip_verify`.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server config of a TLS listener: TLS 1.2 and 1.3 only, rustls' default
/// suites (all AEAD with forward secrecy), certificates by SNI, ALPN h2 and
/// http/1.1 (and acme-tls/1 when ACME uses tls-alpn-01). Static certificate files
/// are read here, so a reload picks up renewed files.
pub fn server_config(
    l: &ListenerConfig,
    acme: Option<Arc<acme_state::AcmeState>>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let Some(tls) = &l.tls else {
        return Err("not a TLS listener".into());
    };
    let mut table = certs::CertTable::default();
    for c in &tls.certificates {
        table.add(&certs::from_files(&c.cert, &c.key)?);
    }
    let alpn_challenge = acme
        .as_ref()
        .is_some_and(|a| a.config.challenge == crate::config::AcmeChallenge::TlsAlpn01);
    let resolver = sni::SniResolver {
        static_certs: table,
        acme,
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let mut alpn = Vec::new();
    if l.http2 {
        alpn.push(b"h2".to_vec());
    }
    alpn.push(b"http/1.1".to_vec());
    if alpn_challenge {
        alpn.push(ACME_TLS_ALPN.to_vec());
    }
    cfg.alpn_protocols = alpn;
    Ok(Arc::new(cfg))
}

/// The server config of the admin API over HTTPS: one certificate, TLS 1.2
/// and 1.3, HTTP/1.1 and h2 by ALPN. The files are read now (a reload reads
/// them again, so a renewed certificate is picked up).
pub fn admin_server_config(
    t: &crate::config::AdminTls,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let loaded = certs::from_files(&t.cert, &t.key).map_err(|e| format!("admin.tls: {e}"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(loaded.key)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Every certificate served: static ones from the TLS listeners' files (read
/// now, so a renewed file shows), and those issued by ACME.
pub(crate) fn certificates(
    config: &crate::config::Config,
    acme: &acme_state::AcmeStates,
) -> Vec<certs::CertInfo> {
    let mut out = Vec::new();
    for l in &config.listeners {
        for c in l.tls.iter().flat_map(|t| &t.certificates) {
            if let Ok(loaded) = certs::from_files(&c.cert, &c.key) {
                out.push(loaded.info);
            }
        }
    }
    for a in acme {
        out.extend(a.infos());
    }
    out
}
