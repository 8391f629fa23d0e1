//! A pool's `queue:` — where requests wait while every backend is at its
//! `max_requests`.

use super::super::decode::Decoder;
use super::super::serialize::duration;
use super::super::tree::{Loc, Node};
use super::PoolConfig;
use serde_json::{Value, json};
use std::time::Duration;

/// Where requests wait while every backend is at its `max_requests`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    /// Requests allowed to wait at once; one more gets a 503.
    pub size: u32,
    /// How long a request may wait for a free backend before a 503.
    pub timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            size: 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// `queue:` of `pool`, whose caps are already decoded; `key_loc` is where the
/// key was written.
pub(crate) fn decode(d: &mut Decoder, n: &Node, key_loc: Loc, pool: &PoolConfig) -> QueueConfig {
    let mut queue = QueueConfig::default();
    if let Some(q) = d.map(n, "queue", &["size", "timeout"]) {
        if let Some(v) = q
            .get("size")
            .and_then(|v| d.int(v, "queue size", 0, 1_000_000))
        {
            queue.size = v as u32;
        }
        if let Some(v) = q
            .get("timeout")
            .and_then(|v| d.duration(v, "queue timeout"))
        {
            queue.timeout = v;
        }
    }
    // A queue only fills when backends have a cap: without one the key would
    // do nothing, which is worse than saying so.
    let capped = pool.max_requests > 0
        || pool
            .backends
            .iter()
            .any(|b| b.max_requests.unwrap_or(0) > 0);
    if !capped {
        d.error(
            key_loc,
            "`queue` needs `max_requests` on the pool or on a backend (nothing waits otherwise)",
        );
    }
    queue
}

pub(crate) fn serialize(q: &QueueConfig) -> Value {
    json!({"size": q.size, "timeout": duration(q.timeout)})
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "pools:\n  - name: a\n    max_requests: 8\n    queue: { size: 100, timeout: 2s }\n",
        );
        assert_eq!(
            c.pools[0].queue,
            QueueConfig {
                size: 100,
                timeout: Duration::from_secs(2)
            }
        );
        let json = round_trip(&c);
        assert_eq!(
            json["pools"][0]["queue"],
            json!({"size": 100, "timeout": "2s"})
        );
        assert_eq!(json["pools"][0]["max_requests"], 8);
    }

    #[test]
    fn a_queue_needs_a_cap() {
        assert_eq!(
            errors("pools:\n  - name: a\n    queue: { size: 10 }\n"),
            [
                "CFG:3:5: `queue` needs `max_requests` on the pool or on a backend (nothing waits otherwise)"
            ]
        );
    }
}
