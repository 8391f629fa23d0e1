//! The config as JSON, in the same shape as the YAML it was read from, so that
//! `GET /api/v1/config` can be edited and sent back with `PUT`. Secrets can be
//! redacted. Each section writes its own part, in its own file; here are the
//! entry points and the pieces they share.

use super::units::format_duration;
use serde_json::{Map, Value};
use std::time::Duration;

pub(crate) use super::pools::backend::serialize as backend;
pub(crate) use super::root::serialize as config;

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
