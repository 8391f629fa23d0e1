//! TLS with rustls (ring crypto provider): client configs for HTTPS backends and
//! outgoing notifications.

use std::sync::{Arc, OnceLock};

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

/// A client config that verifies servers against the system roots.
pub fn client_config(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
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
