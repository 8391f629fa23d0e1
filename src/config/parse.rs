//! Decoding the tree into the typed model, then cross-checking it. Every problem found
//! is collected; nothing stops at the first one.

use super::decode::Decoder;
use super::model::*;
use super::tree::{Loc, Node, Value};
use http::{HeaderName, HeaderValue, Method};
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
    if let Some(n) = m.get("pools") {
        cfg.pools = d
            .seq(n, "pools")
            .iter()
            .filter_map(|p| pool(d, p, base_dir))
            .collect();
    }
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

const POOL_KEYS: &[&str] = &[
    "name",
    "tls",
    "algorithm",
    "hash_key",
    "backends",
    "health_check",
    "passive_health",
    "retries",
    "timeouts",
    "failover",
    "fail_open",
    "slow_start",
    "max_requests",
    "queue",
];

fn pool(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<PoolConfig> {
    let m = d.map(n, "a pool", POOL_KEYS)?;
    let name = match m.get("name") {
        Some(v) => d.scalar_string(v, "pool name")?,
        None => {
            d.error(m.loc, "a pool needs a `name`");
            return None;
        }
    };
    let mut p = PoolConfig::new(&name);
    p.loc = m.get("name").map(|n| n.loc).unwrap_or(m.loc);
    if let Some(v) = m
        .get("algorithm")
        .and_then(|v| d.choice(v, "algorithm", &Algorithm::NAMES))
    {
        p.algorithm = v;
    }
    if let Some(v) = m.get("hash_key") {
        p.hash_key = hash_key(d, v);
    }
    if let Some(v) = m.get("backends") {
        p.backends = d
            .seq(v, "backends")
            .iter()
            .filter_map(|b| backend(d, b))
            .collect();
    }
    if let Some(v) = m.get("health_check") {
        p.health_check = health_check(d, v);
    }
    if let Some(v) = m.get("passive_health") {
        p.passive_health = passive_health(d, v);
    }
    if let Some(v) = m.get("retries") {
        p.retries = retries(d, v);
    }
    if let Some(v) = m.get("timeouts") {
        p.timeouts = timeouts(d, v);
    }
    if let Some(v) = m.get("failover") {
        p.failover = super::failover::decode_override(d, v, "pool failover");
    }

    if let Some(v) = m.get("tls")
        && let Some(t) = d.map(
            v,
            "pool tls",
            &["ca", "server_name", "insecure_skip_verify", "http2"],
        )
    {
        if let Some(v) = t.get("http2").and_then(|v| d.boolean(v, "http2")) {
            p.upstream_tls.http2 = v;
        }
        if t.get("ca").is_some() {
            p.upstream_tls.ca = super::listeners::file_path(d, &t, "ca", base_dir);
        }
        p.upstream_tls.server_name = t
            .get("server_name")
            .and_then(|v| d.string(v, "server_name"));
        p.upstream_tls.insecure_skip_verify = t
            .get("insecure_skip_verify")
            .and_then(|v| d.boolean(v, "insecure_skip_verify"))
            .unwrap_or(false);
    }
    if let Some(v) = m.get("fail_open").and_then(|v| d.boolean(v, "fail_open")) {
        p.fail_open = v;
    }
    if let Some(v) = m
        .get("slow_start")
        .and_then(|v| d.duration(v, "slow_start"))
    {
        p.slow_start = v;
    }
    if let Some(v) = m
        .get("max_requests")
        .and_then(|v| d.int(v, "max_requests", 0, 1_000_000))
    {
        p.max_requests = v as u32;
    }
    if let Some(v) = m.get("queue") {
        if let Some(q) = d.map(v, "queue", &["size", "timeout"]) {
            if let Some(v) = q
                .get("size")
                .and_then(|v| d.int(v, "queue size", 0, 1_000_000))
            {
                p.queue.size = v as u32;
            }
            if let Some(v) = q
                .get("timeout")
                .and_then(|v| d.duration(v, "queue timeout"))
            {
                p.queue.timeout = v;
            }
        }
        // A queue only fills when backends have a cap: without one the key would
        // do nothing, which is worse than saying so.
        let capped =
            p.max_requests > 0 || p.backends.iter().any(|b| b.max_requests.unwrap_or(0) > 0);
        if !capped {
            d.error(
                m.key_loc("queue").unwrap_or(m.loc),
                "`queue` needs `max_requests` on the pool or on a backend (nothing waits otherwise)",
            );
        }
    }
    Some(p)
}

fn hash_key(d: &mut Decoder, n: &Node) -> Option<HashKey> {
    let text = d.string(n, "hash_key")?;
    let key = match text.split_once(':') {
        Some(("header", name)) => match HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(h) => Some(HashKey::Header(h)),
            Err(_) => None,
        },
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Some(HashKey::Cookie(name.trim().into()))
        }
        Some(("query", name)) if !name.trim().is_empty() => {
            Some(HashKey::Query(name.trim().into()))
        }
        None if text == "path" => Some(HashKey::Path),
        _ => None,
    };
    if key.is_none() {
        d.error(
            n.loc,
            format!(
                "invalid hash_key `{text}` (expected header:NAME, cookie:NAME, path or query:NAME)"
            ),
        );
    }
    key
}

fn backend(d: &mut Decoder, n: &Node) -> Option<BackendConfig> {
    let (address_node, m) = match &n.value {
        Value::Str(_) => (n, None),
        _ => {
            let m = d.map(
                n,
                "a backend",
                &[
                    "address",
                    "weight",
                    "failover",
                    "failover_level",
                    "region",
                    "health_check",
                    "max_requests",
                ],
            )?;
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
        address,
        weight: 1,
        failover_level: 0,
        region: None,
        health_check: None,
        max_requests: None,
        loc: address_node.loc,
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
    if let Some(v) = m
        .get("max_requests")
        .and_then(|v| d.int(v, "max_requests", 0, 1_000_000))
    {
        b.max_requests = Some(v as u32);
    }
    if let Some(v) = m.get("health_check") {
        b.health_check = health_check(d, v);
    }
    Some(b)
}

fn status_matcher(d: &mut Decoder, n: &Node, what: &str) -> Option<StatusMatcher> {
    let items: Vec<(String, Loc)> = match &n.value {
        Value::Int(i) => vec![(i.to_string(), n.loc)],
        _ => d.string_list(n, what),
    };
    let mut ranges = Vec::new();
    for (s, loc) in items {
        match StatusMatcher::parse_one(&s) {
            Ok(r) => ranges.push(r),
            Err(e) => d.error(loc, format!("{what}: {e}")),
        }
    }
    Some(StatusMatcher { ranges })
}

fn health_check(d: &mut Decoder, n: &Node) -> Option<HealthCheckOverride> {
    let m = d.map(
        n,
        "health_check",
        &[
            "path",
            "interval",
            "down_interval",
            "timeout",
            "expected_status",
            "unhealthy_threshold",
            "healthy_threshold",
        ],
    )?;
    let mut h = HealthCheckOverride::default();
    if let Some(v) = m.get("path").and_then(|v| d.string(v, "path")) {
        if !v.starts_with('/') {
            d.error(
                m.get("path").map(|n| n.loc).unwrap_or(m.loc),
                "health_check path must start with `/`",
            );
        }
        h.path = Some(v);
    }
    h.interval = m.get("interval").and_then(|v| d.duration(v, "interval"));
    if h.interval == Some(std::time::Duration::ZERO) {
        d.error(
            m.get("interval").map(|n| n.loc).unwrap_or(m.loc),
            "interval must be more than 0",
        );
    }
    h.down_interval = m
        .get("down_interval")
        .and_then(|v| d.duration(v, "down_interval"));
    if h.down_interval == Some(std::time::Duration::ZERO) {
        d.error(
            m.get("down_interval").map(|n| n.loc).unwrap_or(m.loc),
            "down_interval must be more than 0",
        );
    }
    h.timeout = m.get("timeout").and_then(|v| d.duration(v, "timeout"));
    h.expected_status = m
        .get("expected_status")
        .and_then(|v| status_matcher(d, v, "expected_status"));
    h.unhealthy_threshold = m
        .get("unhealthy_threshold")
        .and_then(|v| d.int(v, "unhealthy_threshold", 1, 1000))
        .map(|v| v as u32);
    h.healthy_threshold = m
        .get("healthy_threshold")
        .and_then(|v| d.int(v, "healthy_threshold", 1, 1000))
        .map(|v| v as u32);
    Some(h)
}

fn passive_health(d: &mut Decoder, n: &Node) -> PassiveHealthConfig {
    let mut p = PassiveHealthConfig::default();
    let Some(m) = d.map(
        n,
        "passive_health",
        &["max_fails", "fail_duration", "unhealthy_status"],
    ) else {
        return p;
    };
    if let Some(v) = m
        .get("max_fails")
        .and_then(|v| d.int(v, "max_fails", 0, 1_000_000))
    {
        p.max_fails = v as u32;
    }
    if let Some(v) = m
        .get("fail_duration")
        .and_then(|v| d.duration(v, "fail_duration"))
    {
        p.fail_duration = v;
    }
    if let Some(v) = m
        .get("unhealthy_status")
        .and_then(|v| status_matcher(d, v, "unhealthy_status"))
    {
        p.unhealthy_status = v;
    }
    p
}

fn retries(d: &mut Decoder, n: &Node) -> RetryConfig {
    let mut r = RetryConfig::default();
    let Some(m) = d.map(
        n,
        "retries",
        &["try_duration", "try_interval", "methods", "hedge_after"],
    ) else {
        return r;
    };
    if let Some(v) = m.get_raw("hedge_after") {
        r.hedge_after = match &v.value {
            Value::Null | Value::Bool(false) => None,
            Value::Str(s) if s == "off" => None,
            Value::Str(s) if s == "auto" => Some(HedgeDelay::Auto),
            _ => d
                .duration(v, "hedge_after")
                .filter(|d| !d.is_zero())
                .map(HedgeDelay::Fixed),
        };
    }
    if let Some(v) = m
        .get("try_duration")
        .and_then(|v| d.duration(v, "try_duration"))
    {
        r.try_duration = v;
    }
    if let Some(v) = m
        .get("try_interval")
        .and_then(|v| d.duration(v, "try_interval"))
    {
        r.try_interval = v;
    }
    if let Some(v) = m.get("methods") {
        r.methods = d
            .string_list(v, "methods")
            .into_iter()
            .filter_map(
                |(s, loc)| match Method::from_bytes(s.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => Some(m),
                    Err(_) => {
                        d.error(loc, format!("invalid HTTP method `{s}`"));
                        None
                    }
                },
            )
            .collect();
    }
    r
}

fn timeouts(d: &mut Decoder, n: &Node) -> Timeouts {
    let mut t = Timeouts::default();
    let Some(m) = d.map(n, "timeouts", &["connect", "response_header", "idle"]) else {
        return t;
    };
    for (key, slot) in [
        ("connect", &mut t.connect),
        ("response_header", &mut t.response_header),
        ("idle", &mut t.idle),
    ] {
        if let Some(v) = m.get(key).and_then(|v| d.duration(v, key)) {
            if v.is_zero() {
                d.error(
                    m.get(key).map(|n| n.loc).unwrap_or(m.loc),
                    format!("timeouts.{key} must be more than 0"),
                );
            } else {
                *slot = v;
            }
        }
    }
    t
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
    let mut pools: HashMap<&str, &PoolConfig> = HashMap::new();
    for p in &cfg.pools {
        if let Some(prev) = pools.insert(p.name.as_str(), p) {
            d.error(
                p.loc,
                format!(
                    "duplicate pool name `{}` (first at line {})",
                    p.name, prev.loc.line
                ),
            );
        }
        let mut backends: HashMap<&str, Loc> = HashMap::new();
        for b in &p.backends {
            if let Some(prev) = backends.insert(b.address.key.as_str(), b.loc) {
                d.error(
                    b.loc,
                    format!(
                        "duplicate backend {} in pool `{}` (first at line {})",
                        b.address.key, p.name, prev.line
                    ),
                );
            }
        }
        match (p.algorithm, &p.hash_key) {
            (Algorithm::Hash, None) => d.error(
                p.loc,
                format!("pool `{}` uses algorithm hash: set `hash_key`", p.name),
            ),
            (a, Some(_)) if a != Algorithm::Hash => d.error(
                p.loc,
                format!("pool `{}`: hash_key only applies to algorithm hash", p.name),
            ),
            _ => {}
        }
    }
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
