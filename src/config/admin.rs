//! `admin:` — the admin API, metrics and dashboard listener.

use super::decode::Decoder;
use super::parse_listen_address;
use super::serialize::secret;
use super::tree::Node;
use serde_json::{Value, json};
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: "127.0.0.1:9000".parse().expect("static address"),
            token: None,
        }
    }
}

const KEYS: &[&str] = &["address", "token", "enabled"];

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
    if !a.address.ip().is_loopback() && a.token.is_none() {
        d.error(
            m.get("address").map(|n| n.loc).unwrap_or(m.loc),
            format!(
                "the admin address {} is not loopback: set `admin.token` so the API is not open to the network",
                a.address
            ),
        );
    }
    Some(a)
}

/// With `redact`, the token is replaced by `<redacted>`.
pub(crate) fn serialize(a: Option<&AdminConfig>, redact: bool) -> Value {
    match a {
        None => json!({"enabled": false}),
        Some(a) => {
            let mut v = json!({"address": a.address.to_string()});
            if let Some(t) = &a.token {
                v["token"] = secret(t, redact);
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
        let c = load("admin: { address: \"0.0.0.0:9100\", token: s3cret }\n");
        let a = c.admin.as_ref().expect("admin");
        assert_eq!(a.address.port(), 9100);
        assert_eq!(a.token.as_deref(), Some("s3cret"));
        let json = round_trip(&c);
        assert_eq!(json["admin"]["token"], "s3cret");
        assert_eq!(serialize(Some(a), true)["token"], "<redacted>");
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
    }
}
