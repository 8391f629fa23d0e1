//! `listeners:` — where clients connect: addresses, TLS certificates (files or
//! ACME), and the plain-HTTP port that redirects to HTTPS.

use super::decode::{Decoder, MapView};
use super::tree::{Loc, Node, Value};
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub redirect_http_from: Option<SocketAddr>,
    pub http2: bool,
    pub loc: Loc,
}

impl ListenerConfig {
    pub fn plain(address: SocketAddr) -> Self {
        ListenerConfig {
            address,
            tls: None,
            redirect_http_from: None,
            http2: true,
            loc: Loc::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub certificates: Vec<CertificateFiles>,
    pub acme: Option<AcmeConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub loc: Loc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    Http01,
    TlsAlpn01,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    pub directory: String,
    pub email: Option<String>,
    pub domains: Vec<String>,
    pub storage: PathBuf,
    pub ca_bundle: Option<PathBuf>,
    pub challenge: AcmeChallenge,
}

/// Without a `listeners` key: plain HTTP on every interface, port 8080.
pub(crate) fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig::plain(
        "0.0.0.0:8080".parse().expect("static address"),
    )]
}

/// Parses a listen address: `0.0.0.0:8080`, `[::]:8443`, `:8080` (all interfaces).
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let full;
    let t = if t.starts_with(':') {
        full = format!("0.0.0.0{t}");
        full.as_str()
    } else {
        t
    };
    t.parse::<SocketAddr>().map_err(|_| {
        format!("invalid listen address `{text}` (expected IP:PORT, e.g. 0.0.0.0:8080)")
    })
}

/// `listeners:` (absent: the default). `base_dir` resolves certificate paths.
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>, base_dir: &Path) -> Vec<ListenerConfig> {
    let Some(n) = n else {
        return default_listeners();
    };
    let items = d.seq(n, "listeners");
    let listeners = items
        .iter()
        .filter_map(|item| listener(d, item, base_dir))
        .collect();
    if items.is_empty() {
        d.error(
            n.loc,
            "listeners must not be empty (omit the key for the default 0.0.0.0:8080)",
        );
    }
    listeners
}

fn listener(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<ListenerConfig> {
    // A bare string is shorthand for `{address: ...}`.
    if let Value::Str(_) = n.value {
        let text = d.string(n, "listener address")?;
        return match parse_listen_address(&text) {
            Ok(a) => Some(ListenerConfig {
                loc: n.loc,
                ..ListenerConfig::plain(a)
            }),
            Err(e) => {
                d.error(n.loc, e);
                None
            }
        };
    }
    let m = d.map(
        n,
        "a listener",
        &["address", "tls", "redirect_http_from", "http2"],
    )?;
    let address = match m.get("address") {
        Some(a) => {
            let text = d.scalar_string(a, "address")?;
            match parse_listen_address(&text) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    d.error(a.loc, e);
                    None
                }
            }
        }
        None => {
            d.error(m.loc, "a listener needs an `address`");
            None
        }
    };
    let mut l = ListenerConfig::plain(address.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()));
    l.loc = m.loc;
    if let Some(t) = m.get("tls") {
        l.tls = tls(d, t, base_dir);
    }

    if let Some(r) = m.get("redirect_http_from") {
        if let Some(text) = d.scalar_string(r, "redirect_http_from") {
            match parse_listen_address(&text) {
                Ok(a) => l.redirect_http_from = Some(a),
                Err(e) => d.error(r.loc, e),
            }
        }
        if m.get("tls").is_none() {
            d.error(
                r.loc,
                "redirect_http_from only makes sense on a listener with `tls`",
            );
        }
    }
    if let Some(h) = m.get("http2")
        && let Some(v) = d.boolean(h, "http2")
    {
        l.http2 = v;
    }
    address.map(|_| l)
}

fn tls(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<TlsConfig> {
    let m = d.map(n, "tls", &["certificates", "acme"])?;
    let mut out = TlsConfig {
        certificates: Vec::new(),
        acme: None,
    };
    if let Some(c) = m.get("certificates") {
        for item in d.seq(c, "certificates") {
            let Some(cm) = d.map(item, "a certificate", &["cert", "key"]) else {
                continue;
            };
            let cert = file_path(d, &cm, "cert", base_dir);
            let key = file_path(d, &cm, "key", base_dir);
            if let (Some(cert), Some(key)) = (cert, key) {
                out.certificates.push(CertificateFiles {
                    cert,
                    key,
                    loc: item.loc,
                });
            }
        }
    }
    if let Some(a) = m.get("acme") {
        out.acme = acme(d, a, base_dir);
    }
    if m.get("certificates").is_none() && m.get("acme").is_none() {
        d.error(n.loc, "tls needs `certificates` or `acme`");
    }
    Some(out)
}

/// A path that must name an existing file (also used by a pool's `tls.ca`).
pub(crate) fn file_path(
    d: &mut Decoder,
    m: &MapView,
    key: &str,
    base_dir: &Path,
) -> Option<PathBuf> {
    let Some(n) = m.get(key) else {
        d.error(m.loc, format!("missing `{key}`"));
        return None;
    };
    let text = d.string(n, key)?;
    let p = base_dir.join(&text);
    if !p.is_file() {
        d.error(
            n.loc,
            format!("{key} file `{}` does not exist", p.display()),
        );
        return None;
    }
    Some(p)
}

fn acme(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<AcmeConfig> {
    let m = d.map(
        n,
        "acme",
        &[
            "directory",
            "email",
            "domains",
            "storage",
            "ca_bundle",
            "challenge",
        ],
    )?;
    let directory = match m.get("directory") {
        Some(v) => d.string(v, "directory")?,
        None => "https://acme-v02.api.letsencrypt.org/directory".into(),
    };
    if !directory.starts_with("https://") && !directory.starts_with("http://") {
        d.error(
            m.get("directory").map(|n| n.loc).unwrap_or(m.loc),
            "acme directory must be a URL",
        );
    }
    let email = m.get("email").and_then(|v| d.string(v, "email"));
    if let (Some(e), Some(v)) = (&email, m.get("email"))
        && let Err(msg) = super::units::check_email(e)
    {
        d.error(v.loc, msg);
    }
    let domains = m
        .get("domains")
        .map(|v| {
            d.string_list(v, "domains")
                .into_iter()
                .map(|(s, _)| s.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let storage = m
        .get("storage")
        .and_then(|v| d.string(v, "storage"))
        .map(|s| base_dir.join(s))
        .unwrap_or_else(|| base_dir.join("acme"));
    let ca_bundle = match m.get("ca_bundle") {
        Some(_) => file_path(d, &m, "ca_bundle", base_dir),
        None => None,
    };
    let challenge = m
        .get("challenge")
        .and_then(|v| {
            d.choice(
                v,
                "challenge",
                &[
                    ("http-01", AcmeChallenge::Http01),
                    ("tls-alpn-01", AcmeChallenge::TlsAlpn01),
                ],
            )
        })
        .unwrap_or(AcmeChallenge::Http01);
    Some(AcmeConfig {
        directory,
        email,
        domains,
        storage,
        ca_bundle,
        challenge,
    })
}

/// No address is listened on twice (a redirect port counts). Returns every
/// address listened on, with the listener that holds it, for the checks
/// against other sections.
pub(crate) fn validate(d: &mut Decoder, listeners: &[ListenerConfig]) -> HashMap<SocketAddr, Loc> {
    let mut seen: HashMap<SocketAddr, Loc> = HashMap::new();
    for l in listeners {
        if let Some(prev) = seen.insert(l.address, l.loc) {
            d.error(
                l.loc,
                format!(
                    "duplicate listener address {} (first at line {})",
                    l.address, prev.line
                ),
            );
        }
        if let Some(r) = l.redirect_http_from
            && let Some(prev) = seen.insert(r, l.loc)
        {
            d.error(
                l.loc,
                format!(
                    "redirect_http_from {r} is already used at line {}",
                    prev.line
                ),
            );
        }
    }
    seen
}

pub(crate) fn serialize(listeners: &[ListenerConfig]) -> Json {
    Json::Array(listeners.iter().map(listener_json).collect())
}

fn listener_json(l: &ListenerConfig) -> Json {
    let mut v = json!({"address": l.address.to_string(), "http2": l.http2});
    if let Some(r) = l.redirect_http_from {
        v["redirect_http_from"] = Json::String(r.to_string());
    }
    if let Some(t) = &l.tls {
        let mut tv = json!({
            "certificates": t.certificates.iter().map(|c| json!({"cert": c.cert.display().to_string(), "key": c.key.display().to_string()})).collect::<Vec<_>>(),
        });
        if let Some(a) = &t.acme {
            tv["acme"] = json!({
                "directory": a.directory,
                "email": a.email,
                "domains": a.domains,
                "storage": a.storage.display().to_string(),
                "ca_bundle": a.ca_bundle.as_ref().map(|p| p.display().to_string()),
                "challenge": match a.challenge { AcmeChallenge::Http01 => "http-01", AcmeChallenge::TlsAlpn01 => "tls-alpn-01" },
            });
        }
        v["tls"] = tv;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "listeners:
  - \":8080\"
  - address: \"127.0.0.1:8443\"
    http2: false
    redirect_http_from: \"127.0.0.1:8081\"
    tls:
      certificates: [{ cert: Cargo.toml, key: Cargo.lock }]
      acme: { domains: [App.Example.com], challenge: tls-alpn-01, ca_bundle: Cargo.toml }
",
        );
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].address, "0.0.0.0:8080".parse().unwrap());
        let tls = c.listeners[1].tls.as_ref().expect("tls");
        let acme = tls.acme.as_ref().expect("acme");
        assert_eq!(acme.domains, ["app.example.com"]);
        assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
        let json = round_trip(&c);
        assert_eq!(json["listeners"][1]["redirect_http_from"], "127.0.0.1:8081");
        assert_eq!(json["listeners"][1]["http2"], false);
        assert_eq!(
            json["listeners"][1]["tls"]["acme"]["challenge"],
            "tls-alpn-01"
        );
        assert_eq!(load("{}\n").listeners, default_listeners());
    }

    #[test]
    fn rejects_a_redirect_without_tls_and_a_duplicate() {
        assert_eq!(
            errors(
                "listeners:\n  - { address: \"127.0.0.1:1\", redirect_http_from: \"127.0.0.1:2\" }\n  - \"127.0.0.1:1\"\n"
            ),
            [
                "CFG:2:51: redirect_http_from only makes sense on a listener with `tls`",
                "CFG:3:5: duplicate listener address 127.0.0.1:1 (first at line 2)",
            ]
        );
    }
}
