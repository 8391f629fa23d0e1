//! Which failover level a pool's traffic goes to: primary (level 0), first backup
//! (1), second backup (2)...
//!
//! The failover controller of a pool writes this; the request path only reads it
//! (a few atomics per request). Without a controller decision a pool follows
//! health alone: the lowest level with an available backend.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// "No controller decision": traffic follows health alone.
const UNMANAGED: u32 = u32::MAX;
const HISTORY: usize = 100;

/// One failover event, as sent to notification channels and kept in history.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FailoverEvent {
    pub(crate) event: crate::events::EventKind,
    pub(crate) pool: String,
    pub(crate) from_level: u32,
    pub(crate) to_level: u32,
    pub(crate) reason: String,
    pub(crate) mode: String,
    /// RFC 3339 time.
    pub(crate) ts: String,
    /// For a recovery: how long the failover lasted. For an activation: how long
    /// the level had been down when traffic moved. For a test: 0.
    pub(crate) duration_seconds: f64,
}

/// A gradual move between levels: from, to, and when it started (ms).
pub(crate) type Move = (u32, u32, u64);

/// What the failover controller decided for one pool, read on every request.
pub(crate) struct FailoverState {
    /// The level traffic goes to, or UNMANAGED.
    serving_level: AtomicU32,
    /// While traffic moves gradually: the level it is moving to...
    ramp_level: AtomicU32,
    /// ...and the share of requests (per mille) that already go there.
    ramp_permille: AtomicU32,
    /// Set by the admin API: the controller leaves the level alone.
    pub(crate) manual: AtomicBool,
    /// `delayed` strategy: requests never cascade past the serving level on their
    /// own; only the controller moves traffic, once the delay has passed.
    pub(crate) hold: AtomicBool,
    /// When the current failover began (ms, clock::now_ms), 0 when not failed over.
    pub(crate) since_ms: AtomicU64,
    pub(crate) events_total: AtomicU64,
    pub(crate) last_activation_unix: AtomicU64,
    /// Length of the last completed failover, in milliseconds.
    pub(crate) last_duration_ms: AtomicU64,
    history: Mutex<VecDeque<FailoverEvent>>,
    moving: Mutex<Option<Move>>,
}

impl Default for FailoverState {
    fn default() -> Self {
        FailoverState {
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

impl FailoverState {
    /// The level a new request should go to. `primary` is the pool's lowest
    /// level; `healthy` finds its lowest level with an available member.
    pub(crate) fn route_level(&self, primary: u32, healthy: impl FnOnce() -> Option<u32>) -> u32 {
        let serving = self.serving_level.load(Relaxed);
        if serving == UNMANAGED {
            // A `delayed` pool never follows health alone: until its controller
            // has decided, traffic stays on the primary level.
            if self.hold.load(Relaxed) {
                return primary;
            }
            return healthy().unwrap_or(0);
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

    /// The highest level a request may cascade to by itself: with `hold`, none
    /// past the level the controller chose.
    pub(crate) fn cascade_limit(&self, target: u32) -> u32 {
        if self.hold.load(Relaxed) {
            target
        } else {
            u32::MAX
        }
    }

    pub(crate) fn serving(&self) -> Option<u32> {
        match self.serving_level.load(Relaxed) {
            UNMANAGED => None,
            l => Some(l),
        }
    }

    pub(crate) fn set_serving(&self, level: Option<u32>) {
        self.serving_level
            .store(level.unwrap_or(UNMANAGED), Relaxed);
    }

    /// Sends `permille` of new requests to `level` (a gradual move in progress).
    pub(crate) fn set_ramp(&self, level: Option<u32>, permille: u32) {
        self.ramp_permille.store(permille.min(1000), Relaxed);
        self.ramp_level.store(level.unwrap_or(UNMANAGED), Relaxed);
    }

    pub(crate) fn ramp(&self) -> Option<(u32, u32)> {
        match self.ramp_level.load(Relaxed) {
            UNMANAGED => None,
            l => Some((l, self.ramp_permille.load(Relaxed))),
        }
    }

    pub(crate) fn current_move(&self) -> Option<Move> {
        self.moving.lock().ok().and_then(|m| *m)
    }

    pub(crate) fn set_move(&self, m: Option<Move>) {
        if let Ok(mut slot) = self.moving.lock() {
            *slot = m;
        }
        if m.is_none() {
            self.set_ramp(None, 0);
        }
    }

    /// Forgets every decision: the pool follows health alone again.
    pub(crate) fn release(&self) {
        self.hold.store(false, Relaxed);
        self.set_serving(None);
        self.set_move(None);
    }

    pub(crate) fn record(&self, e: &FailoverEvent) {
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(e.clone());
        }
    }

    pub(crate) fn events(&self) -> Vec<FailoverEvent> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}
