//! `admin:` — the admin API, metrics and dashboard listener.

use super::decode::Decoder;
use super::parse_listen_address;
use super::serialize::secret;
use super::tree::Node;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub token: Option<String>,
    /// A second token that may read (GET) but change nothing.
    pub read_token: Option<String>,
    /// Serve the API over HTTPS (required beyond loopback).
    pub tls: Option<AdminTls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: "127.0.0.1:9000".parse().expect("static address"),
            token: None,
            read_token: None,
            tls: None,
        }
    }
}

const KEYS: &[&str] = &["address", "token", "read_token", "tls", "enabled"];

/// `admin:` — absent: the default listener; `null` or `enabled: false`: none.
/// Takes the raw node so that an explicit `null` is seen.
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>) -> Option<AdminConfig> {
    let n = match n {
        None => return Some(AdminConfig::default()),
        Some(n) if n.is_null() => return None,
        Some(n) => n,
    };
    let m = d.map(n, "admin", KEYS)?;
    if let Some(e) = m.get("enabled")
        && d.boolean(e, "enabled") == Some(false)
    {
        return None;
    }
    let mut a = AdminConfig::default();
    if let Some(v) = m.get("address")
        && let Some(text) = d.scalar_string(v, "admin address")
    {
        match parse_listen_address(&text) {
            Ok(addr) => a.address = addr,
            Err(e) => d.error(v.loc, e),
        }
    }
    if let Some(v) = m.get("token") {
        a.token = d.string(v, "token").filter(|t| !t.is_empty());
    }
    if let Some(v) = m.get("read_token") {
        a.read_token = d.string(v, "read_token").filter(|t| !t.is_empty());
        if a.token.is_none() && a.read_token.is_some() {
            d.error(
                v.loc,
                "`admin.read_token` needs `admin.token` (without a token the API is open to every caller)",
            );
        } else if a.read_token.is_some() && a.read_token == a.token {
            d.error(v.loc, "`admin.read_token` must differ from `admin.token`");
        }
    }
    if let Some(v) = m.get("tls") {
        a.tls = tls(d, v);
    }
    let at = m.get("address").map(|n| n.loc).unwrap_or(m.loc);
    if !a.address.ip().is_loopback() {
        if a.token.is_none() {
            d.error(
                at,
                format!(
                    "the admin address {} is not loopback: set `admin.token` so the API is not open to the network",
                    a.address
                ),
            );
        } else if a.tls.is_none() && m.get("tls").is_none() {
            d.error(
                at,
                format!(
                    "the admin address {} is not loopback: set `admin.tls` (cert and key) so the token does not cross the network in clear",
                    a.address
                ),
            );
        }
    }
    Some(a)
}

/// `tls: { cert, key }` (PEM files, read when the API starts or reloads).
fn tls(d: &mut Decoder, n: &Node) -> Option<AdminTls> {
    let m = d.map(n, "admin.tls", &["cert", "key"])?;
    let mut path = |key: &str| match m.get(key) {
        Some(v) => d.string(v, key).map(PathBuf::from),
        None => {
            d.error(m.loc, format!("admin.tls needs `{key}`"));
            None
        }
    };
    let (cert, key) = (path("cert"), path("key"));
    Some(AdminTls {
        cert: cert?,
        key: key?,
    })
}

/// With `redact`, the tokens are replaced by `<redacted>`.
pub(crate) fn serialize(a: Option<&AdminConfig>, redact: bool) -> Value {
    match a {
        None => json!({"enabled": false}),
        Some(a) => {
            let mut v = json!({"address": a.address.to_string()});
            if let Some(t) = &a.token {
                v["token"] = secret(t, redact);
            }
            if let Some(t) = &a.read_token {
                v["read_token"] = secret(t, redact);
            }
            if let Some(t) = &a.tls {
                v["tls"] = json!({"cert": t.cert, "key": t.key});
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "admin: { address: \"0.0.0.0:9100\", token: s3cret, read_token: look, tls: { cert: a.pem, key: a.key } }\n",
        );
        let a = c.admin.as_ref().expect("admin");
        assert_eq!(a.address.port(), 9100);
        assert_eq!(a.token.as_deref(), Some("s3cret"));
        let json = round_trip(&c);
        assert_eq!(json["admin"]["token"], "s3cret");
        assert_eq!(serialize(Some(a), true)["token"], "<redacted>");
        assert_eq!(serialize(Some(a), true)["read_token"], "<redacted>");
        assert_eq!(
            json["admin"]["tls"],
            json!({"cert": "a.pem", "key": "a.key"})
        );
        assert!(load("admin: null\n").admin.is_none());
        assert!(load("admin: { enabled: false }\n").admin.is_none());
        assert_eq!(load("{}\n").admin, Some(AdminConfig::default()));
        assert_eq!(
            round_trip(&load("admin: null\n"))["admin"],
            json!({"enabled": false})
        );
    }

    #[test]
    fn a_non_loopback_address_needs_a_token() {
        assert_eq!(
            errors("admin:\n  address: \"0.0.0.0:9000\"\n"),
            [
                "CFG:2:12: the admin address 0.0.0.0:9000 is not loopback: set `admin.token` so the API is not open to the network"
            ]
        );
        assert_eq!(
            errors("admin:\n  address: \"0.0.0.0:9000\"\n  token: t\n"),
            [
                "CFG:2:12: the admin address 0.0.0.0:9000 is not loopback: set `admin.tls` (cert and key) so the token does not cross the network in clear"
            ]
        );
        assert_eq!(
            errors("admin:\n  read_token: r\n"),
            [
                "CFG:2:15: `admin.read_token` needs `admin.token` (without a token the API is open to every caller)"
            ]
        );
    }
}
