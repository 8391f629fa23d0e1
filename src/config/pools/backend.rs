//! One backend of a pool: its address (`host:port`, `http://`, `https://`,
//! `h2c://`), weight, failover level, region, cap and own health check.

use super::super::decode::Decoder;
use super::super::tree::{Loc, Node, Value};
use super::health::{self, HealthCheckOverride};
use serde_json::{Map, Value as Json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

/// Where a backend lives. `key` (`host:port` as written) names it in the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddress {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub key: String,
}

impl BackendAddress {
    pub fn parse(text: &str) -> Result<BackendAddress, String> {
        let (scheme, rest) = if let Some(r) = text.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = text.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = text.strip_prefix("h2c://") {
            (Scheme::H2c, r)
        } else if text.contains("://") {
            return Err(format!(
                "unsupported scheme in backend address `{text}` (use http://, https:// or h2c://)"
            ));
        } else {
            (Scheme::Http, text)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') {
            return Err(format!("backend address `{text}` must not contain a path"));
        }
        let default_port = if scheme == Scheme::Https { 443 } else { 80 };
        let (host, port) =
            split_host_port(rest).map_err(|e| format!("invalid backend address `{text}`: {e}"))?;
        let port = port.unwrap_or(default_port);
        if host.is_empty() {
            return Err(format!("backend address `{text}` has no host"));
        }
        let hostname_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !hostname_ok && host.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "backend address `{text}`: `{host}` is neither an IP address nor a host name"
            ));
        }
        let key = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(BackendAddress {
            scheme,
            host: host.to_string(),
            port,
            key,
        })
    }
}

/// Splits `host:port`, `[v6]:port` or `host` (port optional).
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed `[`")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?),
            None if after.is_empty() => None,
            None => return Err("junk after `]`".into()),
        };
        return Ok((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?;
            if port == 0 {
                return Err("port 0".into());
            }
            Ok((h, Some(port)))
        }
        Some(_) => Err("IPv6 addresses must be written in brackets".into()),
        None => Ok((s, None)),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub address: BackendAddress,
    pub weight: u32,
    pub failover_level: u32,
    pub region: Option<String>,
    /// A name for people (extension): shown in the API, dashboard and metrics.
    pub name: Option<String>,
    pub health_check: Option<HealthCheckOverride>,
    /// This backend's own cap on requests in flight (overrides the pool's).
    pub max_requests: Option<u32>,
    pub loc: Loc,
}

impl BackendConfig {
    /// A backend with every setting at its default.
    pub fn new(address: BackendAddress) -> Self {
        BackendConfig {
            address,
            weight: 1,
            failover_level: 0,
            region: None,
            name: None,
            health_check: None,
            max_requests: None,
            loc: Loc::default(),
        }
    }
}

const KEYS: &[&str] = &[
    "address",
    "weight",
    "failover",
    "failover_level",
    "region",
    "name",
    "health_check",
    "max_requests",
];

/// One entry of `backends:`: an address, or a mapping with an `address`.
pub(crate) fn decode(d: &mut Decoder, n: &Node) -> Option<BackendConfig> {
    let (address_node, m) = match &n.value {
        Value::Str(_) => (n, None),
        _ => {
            let m = d.map(n, "a backend", KEYS)?;
            match m.get("address") {
                Some(a) => (a, Some(m)),
                None => {
                    d.error(m.loc, "a backend needs an `address`");
                    return None;
                }
            }
        }
    };
    let text = d.scalar_string(address_node, "backend address")?;
    let address = match BackendAddress::parse(&text) {
        Ok(a) => a,
        Err(e) => {
            d.error(address_node.loc, e);
            return None;
        }
    };
    let mut b = BackendConfig {
        loc: address_node.loc,
        ..BackendConfig::new(address)
    };
    let Some(m) = m else { return Some(b) };
    if let Some(v) = m
        .get("weight")
        .and_then(|v| d.int(v, "weight", 1, 1_000_000))
    {
        b.weight = v as u32;
    }
    let shorthand = m.get("failover").and_then(|v| d.boolean(v, "failover"));
    let level = m
        .get("failover_level")
        .and_then(|v| d.int(v, "failover_level", 0, 100));
    match (shorthand, level) {
        (Some(true), Some(0)) => d.error(
            m.key_loc("failover").unwrap_or(m.loc),
            "`failover: true` contradicts `failover_level: 0`",
        ),
        (_, Some(l)) => b.failover_level = l as u32,
        (Some(true), None) => b.failover_level = 1,
        _ => {}
    }
    if let Some(v) = m.get("region") {
        b.region = d.scalar_string(v, "region");
    }
    if let Some(v) = m.get("name") {
        b.name = d.scalar_string(v, "name").filter(|n| {
            let ok = !n.trim().is_empty() && n.len() <= 100;
            if !ok {
                d.error(v.loc, "a backend name must be 1 to 100 characters");
            }
            ok
        });
    }
    if let Some(v) = m
        .get("max_requests")
        .and_then(|v| d.int(v, "max_requests", 0, 1_000_000))
    {
        b.max_requests = Some(v as u32);
    }
    if let Some(v) = m.get("health_check") {
        b.health_check = health::decode_check(d, v);
    }
    Some(b)
}

/// The address as written back: `host:port`, or with its scheme when not plain HTTP.
fn address_text(a: &BackendAddress) -> String {
    match a.scheme {
        Scheme::Http => a.key.clone(),
        Scheme::Https => format!("https://{}", a.key),
        Scheme::H2c => format!("h2c://{}", a.key),
    }
}

/// A backend as the API shows it (in a pool, and when added at run time).
pub(crate) fn serialize(b: &BackendConfig) -> Json {
    let mut m = Map::new();
    m.insert("address".into(), Json::String(address_text(&b.address)));
    m.insert("weight".into(), Json::from(b.weight));
    m.insert("failover_level".into(), Json::from(b.failover_level));
    if let Some(r) = &b.region {
        m.insert("region".into(), Json::String(r.clone()));
    }
    if let Some(n) = &b.name {
        m.insert("name".into(), Json::String(n.clone()));
    }
    if let Some(h) = &b.health_check {
        m.insert("health_check".into(), health::serialize_check(h));
    }
    if let Some(v) = b.max_requests {
        m.insert("max_requests".into(), Json::from(v));
    }
    Json::Object(m)
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn parses_addresses() {
        let a = BackendAddress::parse("https://[::1]").unwrap();
        assert_eq!(
            (a.scheme, a.port, a.key.as_str()),
            (Scheme::Https, 443, "[::1]:443")
        );
        let a = BackendAddress::parse("h2c://app:9000/").unwrap();
        assert_eq!((a.scheme, a.host.as_str()), (Scheme::H2c, "app"));
        assert!(BackendAddress::parse("ftp://x:1").is_err());
        assert!(BackendAddress::parse("x/y").is_err());
    }

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "pools:
  - name: a
    backends:
      - \"10.0.0.1:80\"
      - address: \"https://10.0.0.2\"
        weight: 3
        failover: true
        region: eu
        max_requests: 4
        health_check: { path: /hc, expected_status: [200, 3xx] }
",
        );
        let b = &c.pools[0].backends[1];
        assert_eq!((b.weight, b.failover_level), (3, 1));
        assert_eq!(b.address.key, "10.0.0.2:443");
        let json = round_trip(&c);
        let b = &json["pools"][0]["backends"][1];
        assert_eq!(b["address"], "https://10.0.0.2:443");
        assert_eq!(b["region"], "eu");
        assert_eq!(
            b["health_check"]["expected_status"],
            serde_json::json!([200, "3xx"])
        );
    }

    #[test]
    fn rejects_a_contradicting_failover_level() {
        assert_eq!(
            errors(
                "pools:\n  - name: a\n    backends:\n      - { address: \"1.1.1.1:1\", failover: true, failover_level: 0 }\n"
            ),
            ["CFG:4:33: `failover: true` contradicts `failover_level: 0`"]
        );
    }
}
