//! A pool's `tls:` — how `https://` backends are verified, and whether HTTP/2
//! is offered to them.

use super::super::decode::Decoder;
use super::super::listeners::file_path;
use super::super::tree::Node;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// How `https://` backends are verified, and whether HTTP/2 is offered to them.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// Offer h2 (and http/1.1) by ALPN; the backend chooses.
    pub http2: bool,
    /// Trust this CA (PEM) instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Name to send as SNI and verify, instead of the backend's host.
    pub server_name: Option<String>,
    /// Accept any certificate. For tests only; logged loudly.
    pub insecure_skip_verify: bool,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            http2: true,
            ca: None,
            server_name: None,
            insecure_skip_verify: false,
        }
    }
}

/// A pool's `tls:`; `base_dir` resolves `ca`.
pub(crate) fn decode(d: &mut Decoder, n: &Node, base_dir: &Path) -> UpstreamTls {
    let mut tls = UpstreamTls::default();
    let Some(t) = d.map(
        n,
        "pool tls",
        &["ca", "server_name", "insecure_skip_verify", "http2"],
    ) else {
        return tls;
    };
    if let Some(v) = t.get("http2").and_then(|v| d.boolean(v, "http2")) {
        tls.http2 = v;
    }
    if t.get("ca").is_some() {
        tls.ca = file_path(d, &t, "ca", base_dir);
    }
    tls.server_name = t
        .get("server_name")
        .and_then(|v| d.string(v, "server_name"));
    tls.insecure_skip_verify = t
        .get("insecure_skip_verify")
        .and_then(|v| d.boolean(v, "insecure_skip_verify"))
        .unwrap_or(false);
    tls
}

/// Written only when it differs from the default.
pub(crate) fn serialize(t: &UpstreamTls) -> Option<Value> {
    (*t != UpstreamTls::default()).then(|| {
        json!({
            "ca": t.ca.as_ref().map(|c| c.display().to_string()),
            "server_name": t.server_name,
            "insecure_skip_verify": t.insecure_skip_verify,
            "http2": t.http2,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::{errors, load, round_trip};

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "pools:\n  - name: a\n    tls: { ca: Cargo.toml, server_name: app.internal, http2: false }\n",
        );
        let t = &c.pools[0].upstream_tls;
        assert!(!t.http2);
        assert_eq!(t.server_name.as_deref(), Some("app.internal"));
        let json = round_trip(&c);
        assert_eq!(json["pools"][0]["tls"]["server_name"], "app.internal");
        assert_eq!(json["pools"][0]["tls"]["http2"], false);
        let plain = load("pools:\n  - name: a\n    tls: {}\n");
        assert!(round_trip(&plain)["pools"][0].get("tls").is_none());
    }

    #[test]
    fn rejects_a_missing_ca_file() {
        let e = errors("pools:\n  - name: a\n    tls: { ca: no-such-ca.pem }\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("CFG:3:16: ca file `")
                && e[0].ends_with("no-such-ca.pem` does not exist"),
            "{e:?}"
        );
    }
}
