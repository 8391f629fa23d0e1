//! The config as JSON, in the same shape as the YAML it was read from, so that
//! `GET /api/v1/config` can be edited and sent back with `PUT`. Secrets can be
//! redacted.

use super::FailoverOverride;
use super::model::*;
use super::units::format_duration;
use serde_json::{Map, Value, json};
use std::time::Duration;

const REDACTED: &str = "<redacted>";

/// A duration as the config writes it (`250ms`, `5s`, `2m`).
pub(crate) fn duration(v: Duration) -> Value {
    Value::String(format_duration(v))
}

/// A secret, or `<redacted>` in its place with `redact`.
pub(crate) fn secret(value: &str, redact: bool) -> Value {
    Value::String(if redact { REDACTED } else { value }.to_string())
}

fn d(v: Duration) -> Value {
    duration(v)
}

fn status(m: &StatusMatcher) -> Value {
    let items: Vec<Value> = m
        .ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                Value::from(lo)
            } else {
                Value::String(format!("{}xx", lo / 100))
            }
        })
        .collect();
    match items.len() {
        1 => items.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Array(items),
    }
}

fn address(a: &BackendAddress) -> String {
    match a.scheme {
        Scheme::Http => a.key.clone(),
        Scheme::Https => format!("https://{}", a.key),
        Scheme::H2c => format!("h2c://{}", a.key),
    }
}

fn health(h: &HealthCheckOverride) -> Value {
    let mut m = Map::new();
    if let Some(v) = &h.path {
        m.insert("path".into(), Value::String(v.clone()));
    }
    if let Some(v) = h.interval {
        m.insert("interval".into(), d(v));
    }
    if let Some(v) = h.down_interval {
        m.insert("down_interval".into(), d(v));
    }
    if let Some(v) = h.timeout {
        m.insert("timeout".into(), d(v));
    }
    if let Some(v) = &h.expected_status {
        m.insert("expected_status".into(), status(v));
    }
    if let Some(v) = h.unhealthy_threshold {
        m.insert("unhealthy_threshold".into(), Value::from(v));
    }
    if let Some(v) = h.healthy_threshold {
        m.insert("healthy_threshold".into(), Value::from(v));
    }
    Value::Object(m)
}

pub fn backend(b: &BackendConfig) -> Value {
    let mut m = Map::new();
    m.insert("address".into(), Value::String(address(&b.address)));
    m.insert("weight".into(), Value::from(b.weight));
    m.insert("failover_level".into(), Value::from(b.failover_level));
    if let Some(r) = &b.region {
        m.insert("region".into(), Value::String(r.clone()));
    }
    if let Some(h) = &b.health_check {
        m.insert("health_check".into(), health(h));
    }
    if let Some(v) = b.max_requests {
        m.insert("max_requests".into(), Value::from(v));
    }
    Value::Object(m)
}

fn pool(p: &PoolConfig) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), Value::String(p.name.clone()));
    m.insert("algorithm".into(), Value::String(p.algorithm.name().into()));
    if let Some(k) = &p.hash_key {
        let text = match k {
            HashKey::Header(h) => format!("header:{h}"),
            HashKey::Cookie(c) => format!("cookie:{c}"),
            HashKey::Path => "path".into(),
            HashKey::Query(q) => format!("query:{q}"),
        };
        m.insert("hash_key".into(), Value::String(text));
    }
    m.insert(
        "backends".into(),
        Value::Array(p.backends.iter().map(backend).collect()),
    );
    if let Some(h) = &p.health_check {
        m.insert("health_check".into(), health(h));
    }
    if p.upstream_tls != UpstreamTls::default() {
        let t = &p.upstream_tls;
        m.insert(
            "tls".into(),
            json!({
                "ca": t.ca.as_ref().map(|c| c.display().to_string()),
                "server_name": t.server_name,
                "insecure_skip_verify": t.insecure_skip_verify,
                "http2": t.http2,
            }),
        );
    }
    m.insert(
        "passive_health".into(),
        json!({
            "max_fails": p.passive_health.max_fails,
            "fail_duration": d(p.passive_health.fail_duration),
            "unhealthy_status": match status(&p.passive_health.unhealthy_status) {
                Value::Array(a) => Value::Array(a),
                Value::Null => Value::Array(vec![]),
                one => Value::Array(vec![one]),
            },
        }),
    );
    let mut retries = json!({
        "try_duration": d(p.retries.try_duration),
        "try_interval": d(p.retries.try_interval),
        "methods": p.retries.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
    });
    retries["hedge_after"] = match p.retries.hedge_after {
        None => Value::String("off".into()),
        Some(HedgeDelay::Auto) => Value::String("auto".into()),
        Some(HedgeDelay::Fixed(v)) => d(v),
    };
    m.insert("retries".into(), retries);
    m.insert(
        "timeouts".into(),
        json!({"connect": d(p.timeouts.connect), "response_header": d(p.timeouts.response_header), "idle": d(p.timeouts.idle)}),
    );
    if p.failover != FailoverOverride::default() {
        m.insert(
            "failover".into(),
            super::failover::serialize_override(&p.failover),
        );
    }
    m.insert("fail_open".into(), Value::Bool(p.fail_open));
    m.insert("slow_start".into(), d(p.slow_start));
    if p.max_requests > 0 || p.backends.iter().any(|b| b.max_requests.is_some()) {
        m.insert("max_requests".into(), Value::from(p.max_requests));
        m.insert(
            "queue".into(),
            json!({"size": p.queue.size, "timeout": d(p.queue.timeout)}),
        );
    }
    Value::Object(m)
}

fn header_ops(o: &HeaderOps) -> Value {
    let set: Map<String, Value> = o
        .set
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    json!({"set": set, "remove": o.remove.iter().map(|h| h.as_str()).collect::<Vec<_>>()})
}

fn route(r: &RouteConfig) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), Value::String(r.name.clone()));
    match &r.host {
        Some(HostMatch::Exact(h)) => {
            m.insert("host".into(), Value::String(h.clone()));
        }
        Some(HostMatch::Wildcard(s)) => {
            m.insert("host".into(), Value::String(format!("*.{s}")));
        }
        None => {}
    }
    m.insert("path_prefix".into(), Value::String(r.path_prefix.clone()));
    match &r.target {
        RouteTarget::Pool { name, .. } => {
            m.insert("pool".into(), Value::String(name.clone()));
        }
        RouteTarget::Split(vs) => {
            m.insert(
                "split".into(),
                Value::Array(
                    vs.iter()
                        .map(|v| json!({"pool": v.pool, "weight": v.weight}))
                        .collect(),
                ),
            );
            m.insert("sticky".into(), Value::Bool(r.sticky));
        }
    }
    if let Some(a) = r.load_balancing {
        m.insert("load_balancing".into(), json!({"method": a.name()}));
    }
    m.insert("strip_prefix".into(), Value::Bool(r.strip_prefix));
    if !(r.headers.request.is_empty() && r.headers.response.is_empty()) {
        m.insert(
            "headers".into(),
            json!({"request": header_ops(&r.headers.request), "response": header_ops(&r.headers.response)}),
        );
    }
    Value::Object(m)
}

/// The whole config. With `redact`, secrets (admin token, SMTP password, webhook
/// URLs) are replaced by `<redacted>`.
pub fn config(c: &Config, redact: bool) -> Value {
    let mut m = Map::new();
    m.insert(
        "listeners".into(),
        super::listeners::serialize(&c.listeners),
    );
    m.insert(
        "admin".into(),
        super::admin::serialize(c.admin.as_ref(), redact),
    );
    m.insert(
        "access_log".into(),
        super::access_log::serialize(&c.access_log),
    );
    m.insert("limits".into(), super::limits::serialize(&c.limits));
    m.insert(
        "trusted_proxies".into(),
        super::trusted_proxies::serialize(&c.trusted_proxies),
    );
    m.insert("shutdown_timeout".into(), d(c.shutdown_timeout));
    m.insert(
        "pools".into(),
        Value::Array(c.pools.iter().map(pool).collect()),
    );
    m.insert(
        "routes".into(),
        Value::Array(c.routes.iter().map(route).collect()),
    );
    m.insert(
        "failover".into(),
        super::failover::serialize(&c.failover, redact),
    );
    if let Some(t) = &c.tracing {
        m.insert("tracing".into(), super::tracing::serialize(t));
    }
    if let Some(cl) = &c.cluster {
        m.insert("cluster".into(), super::cluster::serialize(cl, redact));
    }
    Value::Object(m)
}
