//! The config as JSON, in the same shape as the YAML it was read from, so that
//! `GET /api/v1/config` can be edited and sent back with `PUT`. Secrets can be
//! redacted.

use super::model::*;
use super::units::format_duration;
use serde_json::{Map, Value};
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
    m.insert("routes".into(), super::routes::serialize(&c.routes));
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
