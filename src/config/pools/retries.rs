//! A pool's `retries:` — retrying on another backend, and hedged requests.

use super::super::decode::Decoder;
use super::super::serialize::duration;
use super::super::tree::{Node, Value};
use http::Method;
use serde_json::{Value as Json, json};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub try_duration: Duration,
    pub try_interval: Duration,
    pub methods: Vec<Method>,
    /// Hedged requests: a bodyless request of a listed method whose backend has not
    /// answered within this delay is also sent to another backend; the first
    /// answer wins.
    pub hedge_after: Option<HedgeDelay>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// From the pool's recent latency: smoothed latency + 4 x its deviation.
    Auto,
    Fixed(Duration),
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            try_duration: Duration::from_secs(2),
            try_interval: Duration::from_millis(250),
            methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
            ],
            hedge_after: None,
        }
    }
}

/// `retries:` (defaults for the keys it leaves out).
pub(crate) fn decode(d: &mut Decoder, n: &Node) -> RetryConfig {
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

pub(crate) fn serialize(r: &RetryConfig) -> Json {
    let mut retries = json!({
        "try_duration": duration(r.try_duration),
        "try_interval": duration(r.try_interval),
        "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
    });
    retries["hedge_after"] = match r.hedge_after {
        None => Json::String("off".into()),
        Some(HedgeDelay::Auto) => Json::String("auto".into()),
        Some(HedgeDelay::Fixed(v)) => duration(v),
    };
    retries
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "pools:\n  - name: a\n    retries: { try_duration: 3s, methods: [get, POST], hedge_after: 50ms }\n",
        );
        let r = &c.pools[0].retries;
        assert_eq!(r.methods, [Method::GET, Method::POST]);
        assert_eq!(
            r.hedge_after,
            Some(HedgeDelay::Fixed(Duration::from_millis(50)))
        );
        let json = round_trip(&c);
        assert_eq!(
            json["pools"][0]["retries"],
            json!({"try_duration": "3s", "try_interval": "250ms", "methods": ["GET", "POST"], "hedge_after": "50ms"})
        );
        let auto = load("pools:\n  - name: a\n    retries: { hedge_after: auto }\n");
        assert_eq!(auto.pools[0].retries.hedge_after, Some(HedgeDelay::Auto));
        assert_eq!(
            round_trip(&auto)["pools"][0]["retries"]["hedge_after"],
            "auto"
        );
    }

    #[test]
    fn rejects_a_bad_method() {
        assert_eq!(
            errors("pools:\n  - name: a\n    retries: { methods: [\"G E T\"] }\n"),
            ["CFG:3:26: invalid HTTP method `G E T`"]
        );
    }
}
