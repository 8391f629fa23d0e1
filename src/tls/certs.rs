//! Certificates: loading PEM files, reading names/issuer/expiry, and choosing a
//! certificate by SNI.

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// What the API and metrics show of a certificate.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CertInfo {
    pub names: Vec<String>,
    pub issuer: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// `static` (from files) or `acme`.
    pub source: String,
}

/// A certificate ready to serve.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Reads names (SAN DNS names, else the CN), issuer and expiry of a DER cert.
pub fn describe(der: &CertificateDer<'_>, source: &str) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("invalid certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| cert.issuer().to_string());
    Ok(CertInfo {
        names,
        issuer,
        not_after: cert.validity().not_after.timestamp(),
        source: source.to_string(),
    })
}

/// Builds a servable certificate from PEM text (chain, then key).
pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], source: &str) -> Result<Loaded, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the PEM data".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("invalid private key PEM: {e}"))?;
    let info = describe(&chain[0], source)?;
    let key = CertifiedKey::from_der(chain, key, &super::provider())
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(Loaded {
        key: Arc::new(key),
        info,
    })
}

pub fn from_files(cert: &Path, key: &Path) -> Result<Loaded, String> {
    let c = std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let k = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    from_pem(&c, &k, "static").map_err(|e| format!("{}: {e}", cert.display()))
}

/// Certificates by name, plus wildcard ones, plus a default.
#[derive(Default, Clone, Debug)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Suffix after `*.` → key.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    pub infos: Vec<CertInfo>,
}

impl CertTable {
    pub fn add(&mut self, c: &Loaded) {
        for n in &c.info.names {
            match n.strip_prefix("*.") {
                Some(suffix) => {
                    self.wildcard
                        .entry(suffix.to_string())
                        .or_insert_with(|| c.key.clone());
                }
                None => {
                    self.exact.entry(n.clone()).or_insert_with(|| c.key.clone());
                }
            }
        }
        if self.default.is_none() {
            self.default = Some(c.key.clone());
        }
        self.infos.push(c.info.clone());
    }

    /// Exact name first, then the wildcard one label up (`*.example.com` covers
    /// `a.example.com`, as certificates do).
    pub fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }

    pub fn default_key(&self) -> Option<Arc<CertifiedKey>> {
        self.default.clone()
    }
}
