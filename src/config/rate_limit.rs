//! `routes[].rate_limit` and `routes[].buffer_request_body`: what a route does to
//! protect its backends from too many requests and from slow uploads.

use super::decode::Decoder;
use super::serialize::duration;
use super::tree::Node;
use http::HeaderName;
use serde_json::{Value, json};
use std::time::Duration;

/// What one rate-limit bucket is kept for.
#[derive(Debug, Clone, PartialEq)]
pub enum RateKey {
    /// The client address (behind trusted proxies: the one they forwarded).
    ClientIp,
    /// The value of a request header; a request without it is counted by address.
    Header(HeaderName),
    /// The value of a cookie; a request without it is counted by address.
    Cookie(String),
}

/// A token bucket per key: `burst` requests at once, refilled at
/// `requests` per `per`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
    pub key: RateKey,
}

impl RateLimitConfig {
    /// The time one token takes to come back.
    pub fn interval(&self) -> Duration {
        self.per / self.requests
    }
}

/// `rate_limit: { requests, per, burst, key }`.
pub(crate) fn decode(d: &mut Decoder, n: &Node) -> Option<RateLimitConfig> {
    let m = d.map(n, "rate_limit", &["requests", "per", "burst", "key"])?;
    let Some(req_node) = m.get("requests") else {
        d.error(m.loc, "rate_limit needs `requests` (how many per `per`)");
        return None;
    };
    let requests = d.int(req_node, "requests", 1, 1_000_000_000)? as u32;
    let per = match m.get("per") {
        Some(v) => {
            let per = d.duration(v, "per")?;
            if per < Duration::from_millis(1) || per > Duration::from_secs(86_400) {
                d.error(v.loc, "per must be between 1ms and 24h");
                return None;
            }
            if per / requests < Duration::from_micros(1) {
                d.error(
                    v.loc,
                    "rate_limit is finer than one request per microsecond",
                );
                return None;
            }
            per
        }
        None => Duration::from_secs(1),
    };
    let burst = match m.get("burst") {
        Some(v) => d.int(v, "burst", 1, 1_000_000_000)? as u32,
        None => requests,
    };
    let key = match m.get("key") {
        Some(v) => key(d, v)?,
        None => RateKey::ClientIp,
    };
    Some(RateLimitConfig {
        requests,
        per,
        burst,
        key,
    })
}

fn key(d: &mut Decoder, n: &Node) -> Option<RateKey> {
    let text = d.string(n, "key")?;
    let parsed = match text.split_once(':') {
        None if text == "client_ip" => Some(RateKey::ClientIp),
        Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
            .ok()
            .map(RateKey::Header),
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Some(RateKey::Cookie(name.trim().to_string()))
        }
        _ => None,
    };
    if parsed.is_none() {
        d.error(
            n.loc,
            format!(
                "invalid rate_limit key `{text}` (expected client_ip, header:NAME or cookie:NAME)"
            ),
        );
    }
    parsed
}

pub(crate) fn serialize(r: &RateLimitConfig) -> Value {
    let key = match &r.key {
        RateKey::ClientIp => "client_ip".to_string(),
        RateKey::Header(h) => format!("header:{h}"),
        RateKey::Cookie(c) => format!("cookie:{c}"),
    };
    json!({"requests": r.requests, "per": duration(r.per), "burst": r.burst, "key": key})
}

/// `buffer_request_body: SIZE` (0: off), bounded so that a route cannot make
/// the proxy hold unbounded memory per request.
pub(crate) fn decode_buffer(d: &mut Decoder, n: &Node) -> u64 {
    match d.size(n, "buffer_request_body") {
        Some(v) if v > MAX_BUFFER => {
            d.error(n.loc, "buffer_request_body must be at most 64MiB");
            0
        }
        Some(v) => v,
        None => 0,
    }
}

pub(crate) const MAX_BUFFER: u64 = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    const POOLS: &str = "pools:\n  - { name: a }\n";

    #[test]
    fn decodes_and_round_trips() {
        let c = load(&format!(
            "{POOLS}routes:\n  - pool: a\n    rate_limit: {{ requests: 100, per: 1s, burst: 50, key: \"header:X-Api-Key\" }}\n    buffer_request_body: 1MiB\n"
        ));
        let r = c.routes[0].rate_limit.as_ref().expect("rate limit");
        assert_eq!(r.interval(), Duration::from_millis(10));
        assert_eq!(r.burst, 50);
        assert_eq!(c.routes[0].buffer_request_body, 1024 * 1024);
        let json = round_trip(&c);
        assert_eq!(
            json["routes"][0]["rate_limit"],
            json!({"requests": 100, "per": "1s", "burst": 50, "key": "header:x-api-key"})
        );
        assert_eq!(json["routes"][0]["buffer_request_body"], 1024 * 1024);
        let c = load(&format!(
            "{POOLS}routes:\n  - pool: a\n    rate_limit: {{ requests: 5 }}\n"
        ));
        let r = c.routes[0].rate_limit.as_ref().expect("rate limit");
        assert_eq!(
            (r.burst, r.per, &r.key),
            (5, Duration::from_secs(1), &RateKey::ClientIp)
        );
    }

    #[test]
    fn rejects_bad_keys_and_sizes() {
        assert_eq!(
            errors(&format!(
                "{POOLS}routes:\n  - pool: a\n    rate_limit: {{ requests: 5, key: ip }}\n    buffer_request_body: 1GiB\n"
            )),
            [
                "CFG:5:37: invalid rate_limit key `ip` (expected client_ip, header:NAME or cookie:NAME)",
                "CFG:6:26: buffer_request_body must be at most 64MiB",
            ]
        );
        assert_eq!(
            errors(&format!(
                "{POOLS}routes:\n  - pool: a\n    rate_limit: {{ per: 1s }}\n"
            )),
            ["CFG:5:17: rate_limit needs `requests` (how many per `per`)"]
        );
    }
}
