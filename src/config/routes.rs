//! `routes:` — which requests go to which pool (host and path prefix), weighted
//! splits between pools, and the header rules applied on the way in and out.

use super::cache::CacheConfig;
use super::decode::{Decoder, MapView};
use super::pools::Algorithm;
use super::rate_limit::{self, RateLimitConfig};
use super::serialize::put;
use super::tree::{Loc, Node, Value};
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value as Json, json};
use std::collections::HashMap;

/// Host part of a route: exact name, or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Exact(String),
    /// Stored without the leading `*.`; matches any name ending in `.suffix`.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SplitVariant {
    pub pool: String,
    pub weight: u32,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteTarget {
    Pool { name: String, loc: Loc },
    Split(Vec<SplitVariant>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderRules {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path_prefix: String,
    pub target: RouteTarget,
    pub sticky: bool,
    pub load_balancing: Option<Algorithm>,
    pub strip_prefix: bool,
    pub headers: HeaderRules,
    pub rate_limit: Option<RateLimitConfig>,
    /// Bytes of a request body read whole before it is sent (0: streamed).
    pub buffer_request_body: u64,
    /// The response cache, when on.
    pub cache: Option<CacheConfig>,
    pub loc: Loc,
}

const KEYS: &[&str] = &[
    "name",
    "host",
    "path_prefix",
    "pool",
    "load_balancing",
    "strip_prefix",
    "split",
    "sticky",
    "headers",
    "cache",
    "rate_limit",
    "buffer_request_body",
];

/// `routes:` (absent: none).
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>) -> Vec<RouteConfig> {
    let Some(n) = n else {
        return Vec::new();
    };
    d.seq(n, "routes")
        .iter()
        .filter_map(|r| route(d, r))
        .collect()
}

fn route(d: &mut Decoder, n: &Node) -> Option<RouteConfig> {
    let m = d.map(n, "a route", KEYS)?;
    let host = match m.get("host") {
        Some(v) => {
            let text = d.string(v, "host")?;
            host_match(d, text, v.loc)
        }
        None => None,
    };
    let path_prefix = match m.get("path_prefix") {
        Some(v) => {
            let p = d.string(v, "path_prefix").unwrap_or_else(|| "/".into());
            if !p.starts_with('/') {
                d.error(v.loc, format!("path_prefix `{p}` must start with `/`"));
            }
            p
        }
        None => "/".into(),
    };
    let target = target(d, &m)?;
    let sticky = m
        .get("sticky")
        .and_then(|v| d.boolean(v, "sticky"))
        .unwrap_or(false);
    if sticky && !matches!(target, RouteTarget::Split(_)) {
        d.error(
            m.key_loc("sticky").unwrap_or(m.loc),
            "`sticky` only applies to a route with `split`",
        );
    }
    let load_balancing = m.get("load_balancing").and_then(|v| {
        let lb = d.map(v, "load_balancing", &["method"])?;
        let method = lb.get("method")?;
        d.choice(method, "load_balancing.method", &Algorithm::NAMES)
    });
    let strip_prefix = m
        .get("strip_prefix")
        .and_then(|v| d.boolean(v, "strip_prefix"))
        .unwrap_or(false);
    let headers = m
        .get("headers")
        .map(|v| header_rules(d, v))
        .unwrap_or_default();
    let rate_limit = m.get("rate_limit").and_then(|v| rate_limit::decode(d, v));
    let buffer_request_body = m
        .get("buffer_request_body")
        .map_or(0, |v| rate_limit::decode_buffer(d, v));
    let cache = m.get("cache").and_then(|v| super::cache::decode(d, v));
    let name = match m.get("name") {
        Some(v) => d.scalar_string(v, "route name").unwrap_or_default(),
        None => default_name(host.as_ref(), &path_prefix),
    };
    Some(RouteConfig {
        name,
        host,
        path_prefix,
        target,
        sticky,
        load_balancing,
        strip_prefix,
        headers,
        rate_limit,
        buffer_request_body,
        cache,
        loc: m.loc,
    })
}

/// `host:` as written (a name, `*.suffix`, a trailing dot or port ignored).
fn host_match(d: &mut Decoder, text: String, loc: Loc) -> Option<HostMatch> {
    let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Some(suffix) = text.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') {
            d.error(loc, format!("invalid wildcard host `{text}`"));
        }
        Some(HostMatch::Wildcard(suffix.to_string()))
    } else if text.is_empty() || text.contains('*') || text.contains('/') || text.contains(' ') {
        d.error(
            loc,
            format!(
                "invalid host `{text}` (expected a name like app.example.com or *.example.com)"
            ),
        );
        None
    } else {
        // The port of a Host header is ignored when routing, so drop one here too.
        let name = match text.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => {
                h.to_string()
            }
            _ => text,
        };
        Some(HostMatch::Exact(name))
    }
}

/// `pool` or `split`: exactly one of them.
fn target(d: &mut Decoder, m: &MapView) -> Option<RouteTarget> {
    let pool = m.get("pool").and_then(|v| {
        d.scalar_string(v, "pool")
            .map(|name| RouteTarget::Pool { name, loc: v.loc })
    });
    let split = m.get("split").map(|v| split(d, v));
    match (pool, split) {
        (Some(_), Some(_)) => {
            d.error(
                m.key_loc("split").unwrap_or(m.loc),
                "a route has either `pool` or `split`, not both",
            );
            None
        }
        (Some(p), None) => Some(p),
        (None, Some(s)) => Some(RouteTarget::Split(s)),
        (None, None) => {
            if m.get("pool").is_none() {
                d.error(m.loc, "a route needs a `pool` (or a `split`)");
            }
            None
        }
    }
}

/// A route without a `name` is named by its host and path prefix.
fn default_name(host: Option<&HostMatch>, path_prefix: &str) -> String {
    let h = match host {
        Some(HostMatch::Exact(h)) => h.clone(),
        Some(HostMatch::Wildcard(s)) => format!("*.{s}"),
        None => "*".into(),
    };
    format!("{h}{path_prefix}")
}

fn split(d: &mut Decoder, n: &Node) -> Vec<SplitVariant> {
    let mut out = Vec::new();
    for item in d.seq(n, "split") {
        let Some(m) = d.map(item, "a split variant", &["pool", "weight"]) else {
            continue;
        };
        let Some(pool_node) = m.get("pool") else {
            d.error(m.loc, "a split variant needs a `pool`");
            continue;
        };
        let Some(pool) = d.scalar_string(pool_node, "pool") else {
            continue;
        };
        let weight = m
            .get("weight")
            .and_then(|v| d.int(v, "weight", 0, 1_000_000))
            .unwrap_or(1) as u32;
        out.push(SplitVariant {
            pool,
            weight,
            loc: pool_node.loc,
        });
    }
    if out.is_empty() {
        d.error(n.loc, "split needs at least one variant");
    } else if out.iter().all(|v| v.weight == 0) {
        d.error(n.loc, "split weights must not all be 0");
    }
    out
}

fn header_rules(d: &mut Decoder, n: &Node) -> HeaderRules {
    let mut r = HeaderRules::default();
    let Some(m) = d.map(n, "headers", &["request", "response"]) else {
        return r;
    };
    if let Some(v) = m.get("request") {
        r.request = header_ops(d, v, "headers.request");
    }
    if let Some(v) = m.get("response") {
        r.response = header_ops(d, v, "headers.response");
    }
    r
}

fn header_ops(d: &mut Decoder, n: &Node, what: &str) -> HeaderOps {
    let mut ops = HeaderOps::default();
    let Some(m) = d.map(n, what, &["set", "remove"]) else {
        return ops;
    };
    if let Some(set) = m.get("set") {
        if let Value::Map(entries) = &set.value {
            for (k, v) in entries {
                let Some(name) = k.scalar_text() else {
                    continue;
                };
                let name = match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(h) => h,
                    Err(_) => {
                        d.error(k.loc, format!("invalid header name `{name}`"));
                        continue;
                    }
                };
                // `X-Version: 2` or `X-Debug: true` mean the text, as a person expects.
                let value = match &v.value {
                    Value::Bool(_) | Value::Float(_) => v.scalar_text(),
                    _ => d.scalar_string(v, "header value"),
                };
                let Some(value) = value else {
                    continue;
                };
                match HeaderValue::from_str(&value) {
                    Ok(hv) => ops.set.push((name, hv)),
                    Err(_) => d.error(v.loc, format!("invalid value for header `{name}`")),
                }
            }
        } else {
            d.error(
                set.loc,
                format!("{what}.set must be a mapping of header names to values"),
            );
        }
    }
    if let Some(remove) = m.get("remove") {
        for (name, loc) in d.string_list(remove, "remove") {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => ops.remove.push(h),
                Err(_) => d.error(loc, format!("invalid header name `{name}`")),
            }
        }
    }
    ops
}

/// No two routes for the same host and path prefix. (Which pools they name is
/// checked with the pools, in `root`.)
pub(crate) fn validate(d: &mut Decoder, routes: &[RouteConfig]) {
    let mut seen: HashMap<(Option<HostMatch>, &str), Loc> = HashMap::new();
    for r in routes {
        let key = (r.host.clone(), r.path_prefix.as_str());
        if let Some(prev) = seen.insert(key, r.loc) {
            d.error(
                r.loc,
                format!(
                    "duplicate route for the same host and path_prefix `{}` (first at line {})",
                    r.path_prefix, prev.line
                ),
            );
        }
    }
}

pub(crate) fn serialize(routes: &[RouteConfig]) -> Json {
    Json::Array(routes.iter().map(route_json).collect())
}

fn route_json(r: &RouteConfig) -> Json {
    let mut m = Map::new();
    put(&mut m, "name", Json::String(r.name.clone()));
    let host = r.host.as_ref().map(|h| match h {
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Wildcard(s) => format!("*.{s}"),
    });
    put(&mut m, "host", host.map(Json::String));
    put(&mut m, "path_prefix", Json::String(r.path_prefix.clone()));
    match &r.target {
        RouteTarget::Pool { name, .. } => {
            put(&mut m, "pool", Json::String(name.clone()));
        }
        RouteTarget::Split(vs) => {
            let variants = vs
                .iter()
                .map(|v| json!({"pool": v.pool, "weight": v.weight}))
                .collect();
            put(&mut m, "split", Json::Array(variants));
            put(&mut m, "sticky", Json::Bool(r.sticky));
        }
    }
    put(
        &mut m,
        "load_balancing",
        r.load_balancing.map(|a| json!({"method": a.name()})),
    );
    put(&mut m, "strip_prefix", Json::Bool(r.strip_prefix));
    if !(r.headers.request.is_empty() && r.headers.response.is_empty()) {
        put(
            &mut m,
            "headers",
            json!({"request": header_ops_json(&r.headers.request), "response": header_ops_json(&r.headers.response)}),
        );
    }
    if let Some(r) = &r.rate_limit {
        put(&mut m, "rate_limit", rate_limit::serialize(r));
    }
    if r.buffer_request_body > 0 {
        put(&mut m, "buffer_request_body", json!(r.buffer_request_body));
    }
    if let Some(c) = &r.cache {
        put(&mut m, "cache", super::cache::serialize(c));
    }
    Json::Object(m)
}

fn header_ops_json(o: &HeaderOps) -> Json {
    let set: Map<String, Json> = o
        .set
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Json::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    json!({"set": set, "remove": o.remove.iter().map(|h| h.as_str()).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    const POOLS: &str =
        "pools:\n  - { name: a, algorithm: hash, hash_key: path }\n  - { name: b }\n";

    #[test]
    fn decodes_and_round_trips() {
        let c = load(&format!(
            "{POOLS}routes:
  - host: App.Example.com:8080.
    path_prefix: /api
    pool: a
    strip_prefix: true
    load_balancing: {{ method: hash }}
    headers:
      request: {{ set: {{ X-Env: prod }}, remove: [X-Debug] }}
      response: {{ remove: [Server] }}
  - host: \"*.example.com\"
    split: [{{ pool: a, weight: 90 }}, {{ pool: b, weight: 10 }}]
    sticky: true
"
        ));
        let r = &c.routes[0];
        assert_eq!(r.host, Some(HostMatch::Exact("app.example.com".into())));
        assert_eq!(r.name, "app.example.com/api");
        assert_eq!(r.headers.request.set.len(), 1);
        assert_eq!(c.routes[1].name, "*.example.com/");
        let json = round_trip(&c);
        assert_eq!(
            json["routes"][0]["load_balancing"],
            json!({"method": "hash"})
        );
        assert_eq!(
            json["routes"][0]["headers"],
            json!({"request": {"set": {"x-env": "prod"}, "remove": ["x-debug"]}, "response": {"set": {}, "remove": ["server"]}})
        );
        assert_eq!(
            json["routes"][1]["split"],
            json!([{"pool": "a", "weight": 90}, {"pool": "b", "weight": 10}])
        );
        assert_eq!(json["routes"][1]["sticky"], true);
    }

    #[test]
    fn rejects_pool_and_split_together_and_unknown_cache_keys() {
        assert_eq!(
            errors(&format!(
                "{POOLS}routes:\n  - {{ pool: a, split: [{{ pool: b }}] }}\n  - {{ pool: b, cache: {{ ttl: 1s }} }}\n"
            )),
            [
                "CFG:5:16: a route has either `pool` or `split`, not both",
                "CFG:6:25: unknown key `ttl` in cache (known keys: enabled, max_size, max_object_size, default_ttl, stale_if_error, stale_while_revalidate, lock_timeout, key, status_header)",
            ]
        );
    }
}
