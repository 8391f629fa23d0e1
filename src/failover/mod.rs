//! Failover between backend levels: primary (level 0), first backup (1), second
//! backup (2)...
//!
//! The request path only reads [`PoolFailoverState`] (which level to use, and a
//! share during a gradual move); one controller task per pool with backups writes
//! it, following the pool's strategy:
//!
//! - `immediate`: when every backend of the serving level is down, traffic moves to
//!   the lowest level that has a healthy backend, at the next evaluation (every
//!   `check_interval`, and at once when a backend of the pool changes health).
//! - `delayed`: the same, but only once the serving level has been down for
//!   `delay`; a level that recovers within the delay causes no failover.
//! - `graceful`: like `immediate` when a level dies (traffic cannot wait on a dead
//!   level), but returning traffic — and a manual activation — moves over `ramp` in
//!   ten equal steps.
//!
//! In every strategy, traffic returns to a lower level only after that level has
//! been healthy for `recovery_interval` without interruption.

pub mod api;
pub mod controller;
pub mod metrics;
pub mod notify;

use crate::upstream::pool::Pool;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// "No controller decision": traffic follows health alone.
pub const UNMANAGED: u32 = u32::MAX;
const HISTORY: usize = 100;

/// One failover event, as sent to notification channels and kept in history.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverEvent {
    pub event: String,
    pub pool: String,
    pub from_level: u32,
    pub to_level: u32,
    pub reason: String,
    pub mode: String,
    /// RFC 3339 time.
    pub ts: String,
    /// For a recovery: how long the failover lasted. For an activation: how long
    /// the level had been down when traffic moved. For a test: 0.
    pub duration_seconds: f64,
}

/// What the failover controller decided for one pool, read on every request.
pub struct PoolFailoverState {
    /// The level traffic goes to, or UNMANAGED.
    serving_level: AtomicU32,
    /// While traffic moves gradually: the level it is moving to...
    ramp_level: AtomicU32,
    /// ...and the share of requests (per mille) that already go there.
    ramp_permille: AtomicU32,
    /// Set by the admin API: the controller leaves the level alone.
    pub manual: AtomicBool,
    /// `delayed` strategy: requests never cascade past the serving level on their
    /// own; only the controller moves traffic, once the delay has passed.
    pub hold: AtomicBool,
    /// When the current failover began (ms, clock::now_ms), 0 when not failed over.
    pub since_ms: AtomicU64,
    pub events_total: AtomicU64,
    pub last_activation_unix: AtomicU64,
    /// Length of the last completed failover, in milliseconds.
    pub last_duration_ms: AtomicU64,
    pub history: Mutex<VecDeque<FailoverEvent>>,
    /// A gradual move in progress: (from level, to level, started at ms).
    pub moving: Mutex<Option<(u32, u32, u64)>>,
}

impl Default for PoolFailoverState {
    fn default() -> Self {
        PoolFailoverState {
            serving_level: AtomicU32::new(UNMANAGED),
            ramp_level: AtomicU32::new(UNMANAGED),
            ramp_permille: AtomicU32::new(0),
            manual: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            since_ms: AtomicU64::new(0),
            events_total: AtomicU64::new(0),
            last_activation_unix: AtomicU64::new(0),
            last_duration_ms: AtomicU64::new(0),
            history: Mutex::new(VecDeque::new()),
            moving: Mutex::new(None),
        }
    }
}

impl PoolFailoverState {
    /// The level a new request should go to.
    pub fn route_level(&self, pool: &Pool, now: u64) -> u32 {
        let serving = self.serving_level.load(Relaxed);
        if serving == UNMANAGED {
            return pool.healthy_level(now).unwrap_or(0);
        }
        let ramp = self.ramp_level.load(Relaxed);
        if ramp != UNMANAGED {
            let share = self.ramp_permille.load(Relaxed) as u64;
            if crate::rand::below(1000) < share {
                return ramp;
            }
        }
        serving
    }

    pub fn serving(&self) -> Option<u32> {
        match self.serving_level.load(Relaxed) {
            UNMANAGED => None,
            l => Some(l),
        }
    }

    pub fn set_serving(&self, level: Option<u32>) {
        self.serving_level
            .store(level.unwrap_or(UNMANAGED), Relaxed);
    }

    /// Sends `permille` of new requests to `level` (a gradual move in progress).
    pub fn set_ramp(&self, level: Option<u32>, permille: u32) {
        self.ramp_permille.store(permille.min(1000), Relaxed);
        self.ramp_level.store(level.unwrap_or(UNMANAGED), Relaxed);
    }

    pub fn ramp(&self) -> Option<(u32, u32)> {
        match self.ramp_level.load(Relaxed) {
            UNMANAGED => None,
            l => Some((l, self.ramp_permille.load(Relaxed))),
        }
    }

    pub fn current_move(&self) -> Option<(u32, u32, u64)> {
        self.moving.lock().ok().and_then(|m| *m)
    }

    pub fn set_move(&self, m: Option<(u32, u32, u64)>) {
        if let Ok(mut slot) = self.moving.lock() {
            *slot = m;
        }
        if m.is_none() {
            self.set_ramp(None, 0);
        }
    }

    pub fn record(&self, e: &FailoverEvent) {
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(e.clone());
        }
    }

    pub fn events(&self) -> Vec<FailoverEvent> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The pool's failover status, as the API shows it.
pub fn status_json(p: &Pool) -> serde_json::Value {
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
            serde_json::Value::String(rfc3339(crate::clock::unix_secs_of(since)))
        },
        "ramp": f.ramp().map(|(l, pm)| serde_json::json!({"to_level": l, "share": pm as f64 / 1000.0})),
        "levels": regions,
        "events": f.events(),
    })
}

pub fn rfc3339(unix_secs: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix_secs.max(0.0));
    humantime::format_rfc3339_millis(t).to_string()
}
