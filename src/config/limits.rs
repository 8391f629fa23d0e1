//! `limits:` — what one client connection or request may use.

use super::decode::Decoder;
use super::serialize::duration;
use super::tree::Node;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: Option<u64>,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Longest wait for the next bytes of a request body (408 past it).
    pub body_read_timeout: Duration,
    /// Open connections one client address may hold per listener (None: no cap).
    pub max_connections_per_client: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_body_bytes: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            body_read_timeout: Duration::from_secs(60),
            max_connections_per_client: None,
        }
    }
}

const KEYS: &[&str] = &[
    "max_header_bytes",
    "max_body_bytes",
    "header_read_timeout",
    "max_connections",
    "body_read_timeout",
    "max_connections_per_client",
];

/// `limits:` (absent: the defaults).
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>) -> Limits {
    let mut l = Limits::default();
    let Some(m) = n.and_then(|n| d.map(n, "limits", KEYS)) else {
        return l;
    };
    if let Some(v) = m
        .get("max_header_bytes")
        .and_then(|v| d.size(v, "max_header_bytes"))
    {
        if !(1024..=16 * 1024 * 1024).contains(&v) {
            d.error(
                m.get("max_header_bytes").map(|n| n.loc).unwrap_or(m.loc),
                "max_header_bytes must be between 1KiB and 16MiB",
            );
        } else {
            l.max_header_bytes = v as usize;
        }
    }
    if let Some(v) = m.get("max_body_bytes") {
        l.max_body_bytes = d.size(v, "max_body_bytes");
    }
    if let Some(v) = m
        .get("header_read_timeout")
        .and_then(|v| d.duration(v, "header_read_timeout"))
    {
        l.header_read_timeout = v;
    }
    if let Some(v) = m
        .get("max_connections")
        .and_then(|v| d.int(v, "max_connections", 1, 10_000_000))
    {
        l.max_connections = v as usize;
    }
    if let Some(v) = m.get("body_read_timeout") {
        match d.duration(v, "body_read_timeout") {
            Some(t) if t.is_zero() => d.error(v.loc, "body_read_timeout must be more than 0s"),
            Some(t) => l.body_read_timeout = t,
            None => {}
        }
    }
    if let Some(v) = m.get("max_connections_per_client")
        && !v.is_null()
    {
        l.max_connections_per_client = d
            .int(v, "max_connections_per_client", 1, 1_000_000)
            .map(|n| n as u32);
    }
    l
}

pub(crate) fn serialize(l: &Limits) -> Value {
    json!({
        "max_header_bytes": l.max_header_bytes,
        "max_body_bytes": l.max_body_bytes,
        "header_read_timeout": duration(l.header_read_timeout),
        "max_connections": l.max_connections,
        "body_read_timeout": duration(l.body_read_timeout),
        "max_connections_per_client": l.max_connections_per_client,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "limits: { max_header_bytes: 32KiB, max_body_bytes: 10MB, header_read_timeout: 3s, max_connections: 50, body_read_timeout: 5s, max_connections_per_client: 4 }\n",
        );
        assert_eq!(
            c.limits,
            Limits {
                max_header_bytes: 32 * 1024,
                max_body_bytes: Some(10_000_000),
                header_read_timeout: Duration::from_secs(3),
                max_connections: 50,
                body_read_timeout: Duration::from_secs(5),
                max_connections_per_client: Some(4),
            }
        );
        let json = round_trip(&c);
        assert_eq!(
            json["limits"],
            json!({"max_header_bytes": 32768, "max_body_bytes": 10_000_000, "header_read_timeout": "3s", "max_connections": 50, "body_read_timeout": "5s", "max_connections_per_client": 4})
        );
        assert_eq!(
            round_trip(&load("{}\n"))["limits"]["max_body_bytes"],
            Value::Null
        );
    }

    #[test]
    fn rejects_a_tiny_header_limit() {
        assert_eq!(
            errors("limits:\n  max_header_bytes: 10\n"),
            ["CFG:2:21: max_header_bytes must be between 1KiB and 16MiB"]
        );
    }
}
