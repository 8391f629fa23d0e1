//! `routes[].cache` — the route's response cache (a shared cache, RFC 9111):
//! its memory bound, the largest object stored, stale serving, collapsed
//! forwarding and the parts of the request that make the key.

use super::decode::Decoder;
use super::serialize::put;
use super::tree::{Loc, Node};
use super::units::format_duration;
use http::HeaderName;
use serde_json::{Map, Value as Json};
use std::time::Duration;

/// One part of the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKeyPart {
    Host,
    Path,
    Query,
    Header(HeaderName),
    Cookie(String),
}

impl CacheKeyPart {
    fn text(&self) -> String {
        match self {
            CacheKeyPart::Host => "host".into(),
            CacheKeyPart::Path => "path".into(),
            CacheKeyPart::Query => "query".into(),
            CacheKeyPart::Header(h) => format!("header:{h}"),
            CacheKeyPart::Cookie(c) => format!("cookie:{c}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Memory for the route's entries, enforced on insert.
    pub max_size: u64,
    /// Larger responses stream through without being stored.
    pub max_object_size: u64,
    /// Freshness for responses that give none (zero: none).
    pub default_ttl: Duration,
    pub stale_if_error: Duration,
    /// A floor; the response's own `stale-while-revalidate` counts too.
    pub stale_while_revalidate: Duration,
    pub lock_timeout: Duration,
    pub key: Vec<CacheKeyPart>,
    pub status_header: bool,
    pub loc: Loc,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_size: 256 << 20,
            max_object_size: 8 << 20,
            default_ttl: Duration::ZERO,
            stale_if_error: Duration::from_secs(3600),
            stale_while_revalidate: Duration::ZERO,
            lock_timeout: Duration::from_secs(5),
            key: vec![CacheKeyPart::Host, CacheKeyPart::Path, CacheKeyPart::Query],
            status_header: true,
            loc: Loc::default(),
        }
    }
}

impl CacheConfig {
    /// Equal settings, wherever they were written.
    pub fn same_settings(&self, other: &CacheConfig) -> bool {
        let mut a = self.clone();
        a.loc = other.loc;
        a == *other
    }
}

const KEYS: &[&str] = &[
    "enabled",
    "max_size",
    "max_object_size",
    "default_ttl",
    "stale_if_error",
    "stale_while_revalidate",
    "lock_timeout",
    "key",
    "status_header",
];

/// `cache:` of a route; `None` when absent or `enabled: false`.
pub(crate) fn decode(d: &mut Decoder, n: &Node) -> Option<CacheConfig> {
    let m = d.map(n, "cache", KEYS)?;
    let enabled = m
        .get("enabled")
        .and_then(|v| d.boolean(v, "cache.enabled"))
        .unwrap_or(true);
    let mut c = CacheConfig {
        loc: m.loc,
        ..CacheConfig::default()
    };
    let size = |d: &mut Decoder, key: &str, into: &mut u64| {
        if let Some(v) = m.get(key)
            && let Some(s) = d.size(v, &format!("cache.{key}"))
        {
            if s == 0 {
                d.error(v.loc, format!("cache.{key} must be more than 0"));
            }
            *into = s;
        }
    };
    size(d, "max_size", &mut c.max_size);
    size(d, "max_object_size", &mut c.max_object_size);
    if m.get("max_object_size").is_none() {
        // The default follows a smaller max_size down.
        c.max_object_size = c.max_object_size.min(c.max_size);
    }
    if c.max_object_size > c.max_size {
        d.error(
            m.key_loc("max_object_size").unwrap_or(m.loc),
            "cache.max_object_size must not be larger than cache.max_size",
        );
    }
    for (key, into) in [
        ("default_ttl", &mut c.default_ttl),
        ("stale_if_error", &mut c.stale_if_error),
        ("stale_while_revalidate", &mut c.stale_while_revalidate),
        ("lock_timeout", &mut c.lock_timeout),
    ] {
        if let Some(v) = m.get(key)
            && let Some(t) = d.duration(v, &format!("cache.{key}"))
        {
            *into = t;
        }
    }
    if let Some(v) = m.get("key") {
        c.key = key_parts(d, v);
    }
    if let Some(v) = m.get("status_header")
        && let Some(b) = d.boolean(v, "cache.status_header")
    {
        c.status_header = b;
    }
    enabled.then_some(c)
}

fn key_parts(d: &mut Decoder, n: &Node) -> Vec<CacheKeyPart> {
    let mut out = Vec::new();
    for (text, loc) in d.string_list(n, "cache.key") {
        let part = match text.as_str() {
            "host" => Some(CacheKeyPart::Host),
            "path" => Some(CacheKeyPart::Path),
            "query" => Some(CacheKeyPart::Query),
            t => match t.split_once(':') {
                Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
                    .ok()
                    .map(CacheKeyPart::Header),
                Some(("cookie", name)) if !name.trim().is_empty() => {
                    Some(CacheKeyPart::Cookie(name.trim().to_string()))
                }
                _ => None,
            },
        };
        match part {
            Some(p) if !out.contains(&p) => out.push(p),
            Some(_) => d.error(loc, format!("cache.key: `{text}` is listed twice")),
            None => d.error(
                loc,
                format!(
                    "cache.key: `{text}` is not a key part (host, path, query, header:NAME, cookie:NAME)"
                ),
            ),
        }
    }
    if !out.contains(&CacheKeyPart::Path) {
        d.error(n.loc, "cache.key must include `path`");
    }
    out
}

pub(crate) fn serialize(c: &CacheConfig) -> Json {
    let mut m = Map::new();
    put(&mut m, "enabled", Json::Bool(true));
    put(&mut m, "max_size", Json::from(c.max_size));
    put(&mut m, "max_object_size", Json::from(c.max_object_size));
    for (key, d) in [
        ("default_ttl", c.default_ttl),
        ("stale_if_error", c.stale_if_error),
        ("stale_while_revalidate", c.stale_while_revalidate),
        ("lock_timeout", c.lock_timeout),
    ] {
        put(&mut m, key, Json::String(format_duration(d)));
    }
    let key = c.key.iter().map(|k| Json::String(k.text())).collect();
    put(&mut m, "key", Json::Array(key));
    put(&mut m, "status_header", Json::Bool(c.status_header));
    Json::Object(m)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    const HEAD: &str = "pools:\n  - { name: a }\nroutes:\n  - pool: a\n    cache:\n";

    #[test]
    fn decodes_defaults_and_round_trips() {
        let c = load(&format!("{HEAD}      enabled: true\n"));
        let cc = c.routes[0].cache.as_ref().unwrap();
        assert_eq!(
            cc,
            &CacheConfig {
                loc: cc.loc,
                ..CacheConfig::default()
            }
        );
        round_trip(&c);
        let c = load(&format!(
            "{HEAD}      max_size: 1MiB\n      max_object_size: 64KiB\n      default_ttl: 30s\n      stale_if_error: 0s\n      stale_while_revalidate: 5s\n      lock_timeout: 1s\n      key: [host, path, \"header:Accept-Language\", \"cookie:lang\"]\n      status_header: false\n"
        ));
        let cc = c.routes[0].cache.as_ref().unwrap();
        assert_eq!(cc.max_size, 1 << 20);
        assert_eq!(cc.max_object_size, 64 << 10);
        assert_eq!(cc.default_ttl, Duration::from_secs(30));
        assert_eq!(cc.stale_if_error, Duration::ZERO);
        assert_eq!(
            cc.key[2],
            CacheKeyPart::Header(HeaderName::from_static("accept-language"))
        );
        assert_eq!(cc.key[3], CacheKeyPart::Cookie("lang".into()));
        assert!(!cc.status_header);
        round_trip(&c);
    }

    #[test]
    fn disabled_is_none() {
        let c = load(&format!("{HEAD}      enabled: false\n"));
        assert!(c.routes[0].cache.is_none());
    }

    #[test]
    fn rejects_bad_values_with_positions() {
        assert_eq!(
            errors(&format!(
                "{HEAD}      max_size: 1KiB\n      max_object_size: 2KiB\n      key: [path, colour, path]\n      ttl: 1s\n"
            )),
            [
                "CFG:7:7: cache.max_object_size must not be larger than cache.max_size",
                "CFG:8:19: cache.key: `colour` is not a key part (host, path, query, header:NAME, cookie:NAME)",
                "CFG:8:27: cache.key: `path` is listed twice",
                "CFG:9:7: unknown key `ttl` in cache (known keys: enabled, max_size, max_object_size, default_ttl, stale_if_error, stale_while_revalidate, lock_timeout, key, status_header)",
            ]
        );
        assert_eq!(
            errors(&format!("{HEAD}      key: [host]\n")),
            ["CFG:6:12: cache.key must include `path`"]
        );
    }
}
