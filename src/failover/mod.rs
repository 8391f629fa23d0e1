//! Failover between backend levels: primary (level 0), first backup (1), second
//! backup (2)...
//!
//! The request path only reads a pool's failover state (`upstream::levels`:
//! which level to use, and a share during a gradual move); one controller task
//! per pool with backups writes it, following the pool's strategy:
//!
//! - `immediate`: when every backend of the serving level is down, traffic moves to
//!   the lowest level that has a healthy backend, at the next evaluation (every
//!   `check_interval`, and at once when a backend of the pool changes health).
//! - `delayed`: the same, but only once the serving level has been down for
//!   `delay`; a level that recovers within the delay causes no failover, and
//!   until the delay has passed requests stay on the serving level.
//! - `graceful`: like `immediate` when a level dies (traffic cannot wait on a dead
//!   level), but returning traffic — and a manual activation — moves over `ramp` in
//!   ten equal steps.
//!
//! In every strategy, traffic returns to a lower level only after that level has
//! been healthy for `recovery_interval` without interruption. Every move is an
//! event, notified on every channel (`notify`).

pub(crate) mod controller;
pub(crate) mod manual;
pub(crate) mod metrics;
pub(crate) mod notify;

use crate::upstream::pool::Pool;
use std::sync::atomic::Ordering::Relaxed;

/// The pool's failover status, as the API shows it.
pub(crate) fn status_json(p: &Pool) -> serde_json::Value {
    let f = &p.state.failover;
    let primary = p.levels.first().copied().unwrap_or(0);
    let now = crate::clock::now_ms();
    let level = f
        .serving()
        .unwrap_or_else(|| p.healthy_level(now).unwrap_or(primary));
    let since = f.since_ms.load(Relaxed);
    let mut regions: Vec<serde_json::Value> = Vec::new();
    for l in &p.levels {
        let names: std::collections::BTreeSet<&str> = p
            .members
            .iter()
            .filter(|m| m.level == *l)
            .filter_map(|m| m.region.as_deref())
            .collect();
        regions.push(serde_json::json!({
            "level": l,
            "regions": names,
            "healthy": p.level_available(*l, now),
        }));
    }
    serde_json::json!({
        "pool": p.name,
        "active": level != primary,
        "mode": if f.manual.load(Relaxed) { "manual" } else { "auto" },
        "level": level,
        "since": if since == 0 { serde_json::Value::Null } else {
            serde_json::Value::String(crate::clock::rfc3339(crate::clock::unix_secs_of(since)))
        },
        "ramp": f.ramp().map(|(l, pm)| serde_json::json!({"to_level": l, "share": pm as f64 / 1000.0})),
        "levels": regions,
        "events": f.events(),
    })
}
