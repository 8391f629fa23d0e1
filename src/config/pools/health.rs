//! Health: a pool's (or a backend's) active `health_check` and the pool's
//! `passive_health` (failures seen on real requests).

use super::super::decode::Decoder;
use super::super::serialize::duration;
use super::super::tree::{Loc, Node, Value};
use serde_json::{Map, Value as Json, json};
use std::time::Duration;

/// Which response codes count: a code, a class like `2xx`, or a list of those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatcher {
    /// Each entry is (low, high) inclusive.
    pub ranges: Vec<(u16, u16)>,
}

impl StatusMatcher {
    pub fn matches(&self, code: u16) -> bool {
        self.ranges.iter().any(|&(lo, hi)| code >= lo && code <= hi)
    }

    pub fn class(digit: u16) -> Self {
        StatusMatcher {
            ranges: vec![(digit * 100, digit * 100 + 99)],
        }
    }

    pub fn parse_one(text: &str) -> Result<(u16, u16), String> {
        let t = text.trim();
        if t.len() == 3
            && t.ends_with("xx")
            && let Some(d) = t[..1].parse::<u16>().ok().filter(|d| (1..=5).contains(d))
        {
            return Ok((d * 100, d * 100 + 99));
        }
        match t.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok((c, c)),
            _ => Err(format!(
                "invalid status `{text}` (expected a code like 200 or a class like 2xx)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    /// How often a backend that is down is probed (default: a quarter of
    /// `interval`, at least 100ms), so it rejoins soon after it recovers.
    pub down_interval: Option<Duration>,
    pub timeout: Duration,
    pub expected_status: StatusMatcher,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl HealthCheckConfig {
    pub fn down_interval(&self) -> Duration {
        self.down_interval.unwrap_or_else(|| {
            (self.interval / 4)
                .max(Duration::from_millis(100))
                .min(self.interval)
        })
    }
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/health".into(),
            interval: Duration::from_secs(5),
            down_interval: None,
            timeout: Duration::from_secs(2),
            expected_status: StatusMatcher::class(2),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        }
    }
}

/// A health_check block as written: every key optional, so a backend's block can
/// override the pool's key by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthCheckOverride {
    pub path: Option<String>,
    pub interval: Option<Duration>,
    pub down_interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub expected_status: Option<StatusMatcher>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
}

impl HealthCheckOverride {
    pub fn apply_to(&self, base: &HealthCheckConfig) -> HealthCheckConfig {
        HealthCheckConfig {
            path: self.path.clone().unwrap_or_else(|| base.path.clone()),
            interval: self.interval.unwrap_or(base.interval),
            down_interval: self.down_interval.or(base.down_interval),
            timeout: self.timeout.unwrap_or(base.timeout),
            expected_status: self
                .expected_status
                .clone()
                .unwrap_or_else(|| base.expected_status.clone()),
            unhealthy_threshold: self.unhealthy_threshold.unwrap_or(base.unhealthy_threshold),
            healthy_threshold: self.healthy_threshold.unwrap_or(base.healthy_threshold),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealthConfig {
    pub max_fails: u32,
    pub fail_duration: Duration,
    pub unhealthy_status: StatusMatcher,
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        PassiveHealthConfig {
            max_fails: 3,
            fail_duration: Duration::from_secs(10),
            unhealthy_status: StatusMatcher { ranges: Vec::new() },
        }
    }
}

const CHECK_KEYS: &[&str] = &[
    "path",
    "interval",
    "down_interval",
    "timeout",
    "expected_status",
    "unhealthy_threshold",
    "healthy_threshold",
];

/// A `health_check:` block (of a pool or of one backend).
pub(crate) fn decode_check(d: &mut Decoder, n: &Node) -> Option<HealthCheckOverride> {
    let m = d.map(n, "health_check", CHECK_KEYS)?;
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
    if h.interval == Some(Duration::ZERO) {
        d.error(
            m.get("interval").map(|n| n.loc).unwrap_or(m.loc),
            "interval must be more than 0",
        );
    }
    h.down_interval = m
        .get("down_interval")
        .and_then(|v| d.duration(v, "down_interval"));
    if h.down_interval == Some(Duration::ZERO) {
        d.error(
            m.get("down_interval").map(|n| n.loc).unwrap_or(m.loc),
            "down_interval must be more than 0",
        );
    }
    h.timeout = m.get("timeout").and_then(|v| d.duration(v, "timeout"));
    h.expected_status = m
        .get("expected_status")
        .and_then(|v| decode_status(d, v, "expected_status"));
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

/// A pool's `passive_health:` (defaults for the keys it leaves out).
pub(crate) fn decode_passive(d: &mut Decoder, n: &Node) -> PassiveHealthConfig {
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
        .and_then(|v| decode_status(d, v, "unhealthy_status"))
    {
        p.unhealthy_status = v;
    }
    p
}

fn decode_status(d: &mut Decoder, n: &Node, what: &str) -> Option<StatusMatcher> {
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

/// One code or class as a scalar; several as a list.
fn serialize_status(m: &StatusMatcher) -> Json {
    let items: Vec<Json> = m
        .ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                Json::from(lo)
            } else {
                Json::String(format!("{}xx", lo / 100))
            }
        })
        .collect();
    match items.len() {
        1 => items.into_iter().next().unwrap_or(Json::Null),
        _ => Json::Array(items),
    }
}

/// A `health_check:` block: only the keys it sets.
pub(crate) fn serialize_check(h: &HealthCheckOverride) -> Json {
    let mut m = Map::new();
    if let Some(v) = &h.path {
        m.insert("path".into(), Json::String(v.clone()));
    }
    if let Some(v) = h.interval {
        m.insert("interval".into(), duration(v));
    }
    if let Some(v) = h.down_interval {
        m.insert("down_interval".into(), duration(v));
    }
    if let Some(v) = h.timeout {
        m.insert("timeout".into(), duration(v));
    }
    if let Some(v) = &h.expected_status {
        m.insert("expected_status".into(), serialize_status(v));
    }
    if let Some(v) = h.unhealthy_threshold {
        m.insert("unhealthy_threshold".into(), Json::from(v));
    }
    if let Some(v) = h.healthy_threshold {
        m.insert("healthy_threshold".into(), Json::from(v));
    }
    Json::Object(m)
}

pub(crate) fn serialize_passive(p: &PassiveHealthConfig) -> Json {
    json!({
        "max_fails": p.max_fails,
        "fail_duration": duration(p.fail_duration),
        "unhealthy_status": match serialize_status(&p.unhealthy_status) {
            Json::Array(a) => Json::Array(a),
            Json::Null => Json::Array(vec![]),
            one => Json::Array(vec![one]),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "pools:
  - name: a
    backends:
      - { address: \"127.0.0.1:1\", health_check: { timeout: 1s } }
    health_check: { path: /hc, interval: 10s, expected_status: 2xx, unhealthy_threshold: 4 }
    passive_health: { max_fails: 5, unhealthy_status: 503 }
",
        );
        let p = &c.pools[0];
        let h = p.health_check_for(&p.backends[0]).expect("a health check");
        assert_eq!(h.path, "/hc");
        assert_eq!(h.timeout, Duration::from_secs(1));
        assert_eq!(h.unhealthy_threshold, 4);
        assert_eq!(h.down_interval(), Duration::from_millis(2500));
        assert!(p.passive_health.unhealthy_status.matches(503));
        let json = round_trip(&c);
        assert_eq!(
            json["pools"][0]["health_check"],
            json!({"path": "/hc", "interval": "10s", "expected_status": "2xx", "unhealthy_threshold": 4})
        );
        assert_eq!(
            json["pools"][0]["passive_health"],
            json!({"max_fails": 5, "fail_duration": "10s", "unhealthy_status": [503]})
        );
    }

    #[test]
    fn rejects_a_bad_status_and_path() {
        assert_eq!(
            errors(
                "pools:\n  - name: a\n    health_check:\n      path: hc\n      expected_status: [200, 9xx]\n"
            ),
            [
                "CFG:4:13: health_check path must start with `/`",
                "CFG:5:30: expected_status: invalid status `9xx` (expected a code like 200 or a class like 2xx)",
            ]
        );
    }
}
