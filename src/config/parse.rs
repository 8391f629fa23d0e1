//! Decoding the tree into the typed model, then cross-checking it. Every problem found
//! is collected; nothing stops at the first one.

use super::decode::Decoder;
use super::model::*;
use super::tree::{Loc, Node, Value};
use super::{Algorithm, Config};
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::path::Path;

const TOP_KEYS: &[&str] = &[
    "listeners",
    "admin",
    "access_log",
    "limits",
    "trusted_proxies",
    "shutdown_timeout",
    "pools",
    "routes",
    "failover",
    "cluster",
    "discovery",
    "tracing",
];

/// Decodes a whole document. `base_dir` resolves relative file paths.
pub fn decode_config(d: &mut Decoder, root: &Node, base_dir: &Path) -> Config {
    let mut cfg = Config::default();
    let Some(m) = d.map(root, "the config", TOP_KEYS) else {
        return cfg;
    };
    cfg.listeners = super::listeners::decode(d, m.get("listeners"), base_dir);
    cfg.admin = super::admin::decode(d, m.get_raw("admin"));
    cfg.access_log = super::access_log::decode(d, m.get("access_log"), base_dir);
    cfg.limits = super::limits::decode(d, m.get("limits"));
    cfg.trusted_proxies = super::trusted_proxies::decode(d, m.get("trusted_proxies"));
    if let Some(n) = m.get("shutdown_timeout")
        && let Some(v) = d.duration(n, "shutdown_timeout")
    {
        cfg.shutdown_timeout = v;
    }
    cfg.pools = super::pools::decode(d, m.get("pools"), base_dir);
    if let Some(n) = m.get("routes") {
        cfg.routes = d
            .seq(n, "routes")
            .iter()
            .filter_map(|r| route(d, r))
            .collect();
    }
    cfg.failover = super::failover::decode(d, m.get("failover"));

    cfg.tracing = super::tracing::decode(d, m.get("tracing"));
    cfg.cluster = super::cluster::decode(d, m.get("cluster"), base_dir);
    d.unbuilt(&m, "discovery", "Docker discovery");
    validate(d, &cfg);
    cfg
}

const ROUTE_KEYS: &[&str] = &[
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
];

fn route(d: &mut Decoder, n: &Node) -> Option<RouteConfig> {
    let m = d.map(n, "a route", ROUTE_KEYS)?;
    let host = match m.get("host") {
        Some(v) => {
            let text = d
                .string(v, "host")?
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if let Some(suffix) = text.strip_prefix("*.") {
                if suffix.is_empty() || suffix.contains('*') {
                    d.error(v.loc, format!("invalid wildcard host `{text}`"));
                }
                Some(HostMatch::Wildcard(suffix.to_string()))
            } else if text.is_empty()
                || text.contains('*')
                || text.contains('/')
                || text.contains(' ')
            {
                d.error(v.loc, format!("invalid host `{text}` (expected a name like app.example.com or *.example.com)"));
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
    let pool = m.get("pool").and_then(|v| {
        d.scalar_string(v, "pool")
            .map(|name| RouteTarget::Pool { name, loc: v.loc })
    });
    let split = m.get("split").map(|v| split(d, v));
    let target = match (pool, split) {
        (Some(_), Some(_)) => {
            d.error(
                m.key_loc("split").unwrap_or(m.loc),
                "a route has either `pool` or `split`, not both",
            );
            return None;
        }
        (Some(p), None) => p,
        (None, Some(s)) => RouteTarget::Split(s),
        (None, None) => {
            if m.get("pool").is_none() {
                d.error(m.loc, "a route needs a `pool` (or a `split`)");
            }
            return None;
        }
    };
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
    d.unbuilt(&m, "cache", "response caching");
    let name = match m.get("name") {
        Some(v) => d.scalar_string(v, "route name").unwrap_or_default(),
        None => {
            let h = match &host {
                Some(HostMatch::Exact(h)) => h.clone(),
                Some(HostMatch::Wildcard(s)) => format!("*.{s}"),
                None => "*".into(),
            };
            format!("{h}{path_prefix}")
        }
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
        loc: m.loc,
    })
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
                let Some(value) = d.scalar_string(v, "header value") else {
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

/// Checks that need the whole model: names, references, combinations.
fn validate(d: &mut Decoder, cfg: &Config) {
    let seen_listeners = super::listeners::validate(d, &cfg.listeners);
    if let Some(a) = &cfg.admin
        && let Some(prev) = seen_listeners.get(&a.address)
        && a.address.port() != 0
    {
        d.error(
            *prev,
            format!("listener address {} is also the admin address", a.address),
        );
    }
    let pools = super::pools::validate(d, &cfg.pools);
    let mut seen_routes: HashMap<(Option<HostMatch>, &str), Loc> = HashMap::new();
    for r in &cfg.routes {
        let key = (r.host.clone(), r.path_prefix.as_str());
        if let Some(prev) = seen_routes.insert(key, r.loc) {
            d.error(
                r.loc,
                format!(
                    "duplicate route for the same host and path_prefix `{}` (first at line {})",
                    r.path_prefix, prev.line
                ),
            );
        }
        let check_pool = |d: &mut Decoder, name: &str, loc: Loc| {
            if !pools.contains_key(name) {
                let names: Vec<&str> = pools.keys().copied().collect();
                let hint = super::decode::suggest(name, &names)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                d.error(loc, format!("route refers to unknown pool `{name}`{hint}"));
            }
        };
        match &r.target {
            RouteTarget::Pool { name, loc } => check_pool(d, name, *loc),
            RouteTarget::Split(vs) => {
                for v in vs {
                    check_pool(d, &v.pool, v.loc);
                }
            }
        }
        if r.load_balancing == Some(Algorithm::Hash)
            && let RouteTarget::Pool { name, loc } = &r.target
            && pools
                .get(name.as_str())
                .is_some_and(|p| p.hash_key.is_none())
        {
            d.error(
                *loc,
                format!("load_balancing hash needs `hash_key` on pool `{name}`"),
            );
        }
    }
}
