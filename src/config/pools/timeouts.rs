//! A pool's `timeouts:` — connect, response header, idle.

use super::super::decode::Decoder;
use super::super::serialize::duration;
use super::super::tree::Node;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub response_header: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    }
}

/// `timeouts:` (defaults for the keys it leaves out; none may be 0).
pub(crate) fn decode(d: &mut Decoder, n: &Node) -> Timeouts {
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

pub(crate) fn serialize(t: &Timeouts) -> Value {
    json!({"connect": duration(t.connect), "response_header": duration(t.response_header), "idle": duration(t.idle)})
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load("pools:\n  - name: a\n    timeouts: { connect: 1s, idle: 2m }\n");
        assert_eq!(
            c.pools[0].timeouts,
            Timeouts {
                connect: Duration::from_secs(1),
                response_header: Duration::from_secs(60),
                idle: Duration::from_secs(120),
            }
        );
        assert_eq!(
            round_trip(&c)["pools"][0]["timeouts"],
            json!({"connect": "1s", "response_header": "1m", "idle": "2m"})
        );
    }

    #[test]
    fn rejects_zero() {
        assert_eq!(
            errors("pools:\n  - name: a\n    timeouts: { connect: 0 }\n"),
            ["CFG:3:26: timeouts.connect must be more than 0"]
        );
    }
}
