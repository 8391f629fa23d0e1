//! The config as JSON, in the same shape as the YAML it was read from, so that
//! `GET /api/v1/config` can be edited and sent back with `PUT`. Secrets can be
//! redacted.

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

/// Adds `key` to a JSON object, unless `value` is `None`.
pub(crate) fn put(m: &mut Map<String, Value>, key: &str, value: impl Into<Option<Value>>) {
    if let Some(v) = value.into() {
        m.insert(key.into(), v);
    }
}

fn d(v: Duration) -> Value {
    duration(v)
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
    m.insert("pools".into(), super::pools::serialize(&c.pools));
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

pub(crate) use super::pools::backend::serialize as backend;
