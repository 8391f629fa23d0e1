//! What a node knows of its ACME certificates and challenges: the certificates
//! issued for each ACME storage directory, and the challenge answers a CA may ask
//! for. The TLS handshake and the request path read it; the ACME manager (and, in
//! a cluster, replicated commands from the primary) write it.

use super::certs::{self, CertInfo, CertTable, Loaded};
use crate::command::ChallengeKind;
use crate::config::AcmeConfig;
use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Every ACME state of the running config.
pub(crate) type AcmeStates = Vec<Arc<AcmeState>>;

/// The key authorization for an http-01 token, if an order of any manager waits
/// on it.
pub(crate) fn http01_answer(states: &AcmeStates, token: &str) -> Option<String> {
    states.iter().find_map(|s| s.http01_answer(token))
}

/// What the handshake and the request path need from ACME.
#[derive(Debug)]
pub(crate) struct AcmeState {
    pub(crate) config: AcmeConfig,
    pub(crate) domains: Vec<String>,
    pub(crate) certs: ArcSwap<CertTable>,
    http01: Mutex<HashMap<String, String>>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// Orders placed so far (for tests and the API).
    pub(crate) orders: std::sync::atomic::AtomicU64,
}

impl AcmeState {
    pub(crate) fn new(config: AcmeConfig, domains: Vec<String>) -> Self {
        AcmeState {
            config,
            domains,
            certs: ArcSwap::from_pointee(CertTable::default()),
            http01: Mutex::new(HashMap::new()),
            alpn: Mutex::new(HashMap::new()),
            orders: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The key authorization for an http-01 token, if an order is waiting on it.
    pub(crate) fn http01_answer(&self, token: &str) -> Option<String> {
        self.http01.lock().ok()?.get(token).cloned()
    }

    /// The tls-alpn-01 certificate for a name being validated.
    pub(crate) fn challenge_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn
            .lock()
            .ok()?
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    pub(crate) fn infos(&self) -> Vec<CertInfo> {
        self.certs.load().infos.clone()
    }

    /// A challenge answer replicated from the primary (`None` removes it), so
    /// any node can answer the CA.
    pub(crate) fn set_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), String> {
        match kind {
            ChallengeKind::Http01 => {
                if let Ok(mut m) = self.http01.lock() {
                    match value {
                        Some(v) => m.insert(name.to_string(), v.to_string()),
                        None => m.remove(name),
                    };
                }
            }
            ChallengeKind::TlsAlpn01 => {
                let cert = match value {
                    Some(hex) => Some(alpn_challenge_cert(name, &from_hex(hex)?)?),
                    None => None,
                };
                if let Ok(mut m) = self.alpn.lock() {
                    match cert {
                        Some(c) => m.insert(name.to_ascii_lowercase(), c),
                        None => m.remove(&name.to_ascii_lowercase()),
                    };
                }
            }
        }
        Ok(())
    }

    /// A certificate issued to the primary: stored here too and served at once.
    pub(crate) fn install(
        &self,
        domain: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(), String> {
        certs::from_pem(chain_pem.as_bytes(), key_pem.as_bytes(), "acme")?;
        std::fs::create_dir_all(&self.config.storage).map_err(|e| e.to_string())?;
        save(&self.config.storage, domain, key_pem, chain_pem)?;
        publish(self, &load_stored(self));
        Ok(())
    }
}

pub(crate) fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad hex `{s}`"))
        })
        .collect()
}

pub(crate) fn save(dir: &Path, domain: &str, key_pem: &str, chain_pem: &str) -> Result<(), String> {
    write_private(
        &storage_file(dir, &format!("{domain}.key.pem")),
        key_pem.as_bytes(),
    )
    .and_then(|_| {
        write_private(
            &storage_file(dir, &format!("{domain}.crt.pem")),
            chain_pem.as_bytes(),
        )
    })
    .map_err(|e| format!("saving the certificate: {e}"))
}

pub(crate) fn storage_file(dir: &Path, name: &str) -> PathBuf {
    // Names are DNS names; keep the file name safe anyway.
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(safe)
}

/// Writes a file readable by the owner only, atomically.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Loads every stored certificate for the manager's domains.
pub(crate) fn load_stored(state: &AcmeState) -> Vec<Loaded> {
    let mut out = Vec::new();
    for d in &state.domains {
        let cert = storage_file(&state.config.storage, &format!("{d}.crt.pem"));
        let key = storage_file(&state.config.storage, &format!("{d}.key.pem"));
        if !cert.exists() {
            continue;
        }
        match std::fs::read(&cert)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                std::fs::read(&key)
                    .map_err(|e| e.to_string())
                    .map(|k| (c, k))
            })
            .and_then(|(c, k)| certs::from_pem(&c, &k, "acme"))
        {
            Ok(l) => out.push(l),
            Err(e) => {
                tracing::warn!(domain = %d, error = %e, "ignoring a stored certificate that cannot be loaded")
            }
        }
    }
    out
}

pub(crate) fn publish(state: &AcmeState, loaded: &[Loaded]) {
    let mut table = CertTable::default();
    for l in loaded {
        table.add(l);
    }
    state.certs.store(Arc::new(table));
}

/// A self-signed certificate carrying the acmeIdentifier extension (RFC 8737).
pub(crate) fn alpn_challenge_cert(
    domain: &str,
    digest: &[u8],
) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(|e| e.to_string())?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `CertifiedKey::from_der`: its key check parses the certificate and
    // rejects the (critical) acmeIdentifier extension this certificate exists for.
    let signing = super::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}
