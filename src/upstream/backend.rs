//! One backend's live state. It is shared by the request path (which reads it and
//! updates counters) and by health checks and the admin API (which write it), all
//! through atomics. It survives config reloads as long as the pool keeps the backend.

use super::connpool::ConnPool;
use crate::clock::now_ms;
use crate::config::{BackendAddress, PassiveHealthConfig};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::*};

/// What an operator asked for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    Active = 0,
    /// No new requests; in-flight ones finish.
    Draining = 1,
    Disabled = 2,
    /// Enabled again, waiting for a passing health check before taking traffic.
    Enabling = 3,
}

impl AdminState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Draining,
            2 => AdminState::Disabled,
            3 => AdminState::Enabling,
            _ => AdminState::Active,
        }
    }
}

pub struct Backend {
    pub address: BackendAddress,
    /// The `host:port` key, shared with the request counters.
    pub key_arc: std::sync::Arc<str>,
    /// For `https://` backends: how to speak TLS. A change of the pool's TLS
    /// settings makes a new backend (with fresh connections).
    pub tls: Option<std::sync::Arc<super::io::TlsClient>>,
    pub pool: String,
    pub conns: ConnPool,

    pub in_flight: AtomicU32,
    /// Sum of the start times of the requests in flight: their mean age shows a
    /// backend that stopped answering before any of them completes.
    pub(super) outstanding_since_sum_us: AtomicU64,
    /// Requests waiting for response headers, and when the backend last answered.
    pub(super) awaiting: AtomicU32,
    pub(super) last_answer_us: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Peak-EWMA of response-header latency, in microseconds (f64 bits).
    ewma_us: AtomicU64,
    ewma_stamp_ms: AtomicU64,

    /// Active health: false once `unhealthy_threshold` checks failed in a row.
    active_up: AtomicBool,
    /// Whether an active check is configured (and has produced its first verdict).
    pub checked: AtomicBool,
    pub consecutive_ok: AtomicU32,
    pub consecutive_fail: AtomicU32,
    pub check_failures: AtomicU64,
    pub last_check_error: arc_swap::ArcSwapOption<String>,

    /// Passive health: failures counted in a window; ejected until a deadline.
    fail_window_start_ms: AtomicU64,
    fail_count: AtomicU32,
    ejected_until_ms: AtomicU64,

    admin: AtomicU8,
    /// When the backend last became available (for slow start); 0 = from the start.
    pub up_since_ms: AtomicU64,
}

impl Backend {
    pub fn new(
        pool: &str,
        address: BackendAddress,
        tls: Option<std::sync::Arc<super::io::TlsClient>>,
    ) -> Self {
        Backend {
            key_arc: std::sync::Arc::from(address.key.as_str()),
            tls,
            conns: ConnPool::new(),
            address,
            pool: pool.to_string(),
            in_flight: AtomicU32::new(0),
            outstanding_since_sum_us: AtomicU64::new(0),
            awaiting: AtomicU32::new(0),
            last_answer_us: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            ewma_stamp_ms: AtomicU64::new(0),
            active_up: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            consecutive_ok: AtomicU32::new(0),
            consecutive_fail: AtomicU32::new(0),
            check_failures: AtomicU64::new(0),
            last_check_error: arc_swap::ArcSwapOption::empty(),
            fail_window_start_ms: AtomicU64::new(0),
            fail_count: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            admin: AtomicU8::new(AdminState::Active as u8),
            up_since_ms: AtomicU64::new(0),
        }
    }

    pub fn key(&self) -> &str {
        &self.address.key
    }

    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Relaxed))
    }

    pub fn set_admin_state(&self, s: AdminState) {
        self.admin.store(s as u8, Relaxed);
    }

    pub fn active_up(&self) -> bool {
        self.active_up.load(Relaxed)
    }

    /// Records an active-check verdict; returns true when the health state changed.
    pub fn set_active_up(&self, up: bool) -> bool {
        let was = self.active_up.swap(up, Relaxed);
        if up && !was {
            self.up_since_ms.store(now_ms(), Relaxed);
        }
        was != up
    }

    pub fn passively_ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Relaxed) > now
    }

    /// Healthy by both active checks and passive observation.
    pub fn healthy(&self, now: u64) -> bool {
        self.active_up() && !self.passively_ejected(now)
    }

    /// May take new requests: healthy and not drained/disabled by an operator.
    pub fn available(&self, now: u64) -> bool {
        self.admin.load(Relaxed) == AdminState::Active as u8 && self.healthy(now)
    }

    /// Counts a failed request for passive health. Returns true when this failure
    /// ejected the backend.
    pub fn record_failure(&self, passive: &PassiveHealthConfig) -> bool {
        self.failures.fetch_add(1, Relaxed);
        if passive.max_fails == 0 || passive.fail_duration.is_zero() {
            return false;
        }
        let now = now_ms();
        let window = passive.fail_duration.as_millis() as u64;
        let start = self.fail_window_start_ms.load(Relaxed);
        let count = if start == 0 || now.saturating_sub(start) > window {
            self.fail_window_start_ms.store(now, Relaxed);
            self.fail_count.store(1, Relaxed);
            1
        } else {
            self.fail_count.fetch_add(1, Relaxed) + 1
        };
        if count >= passive.max_fails && !self.passively_ejected(now) {
            self.ejected_until_ms.store(now + window, Relaxed);
            self.fail_count.store(0, Relaxed);
            self.fail_window_start_ms.store(0, Relaxed);
            self.up_since_ms.store(now + window, Relaxed);
            return true;
        }
        false
    }

    /// Ends a passive ejection early (e.g. an active check just passed).
    pub fn clear_ejection(&self) {
        self.ejected_until_ms.store(0, Relaxed);
    }

    /// Feeds one observed latency into the peak-EWMA (decay time constant 10 s):
    /// a slower sample takes effect at once, faster ones pull the average down
    /// gradually, so a backend that turns slow is avoided immediately.
    pub fn observe_latency(&self, micros: f64) {
        const TAU_MS: f64 = 10_000.0;
        let now = now_ms();
        let prev = f64::from_bits(self.ewma_us.load(Relaxed));
        let last = self.ewma_stamp_ms.swap(now, Relaxed);
        let next = if prev == 0.0 || micros > prev {
            micros
        } else {
            let dt = now.saturating_sub(last) as f64;
            let w = (-dt / TAU_MS).exp();
            prev * w + micros * (1.0 - w)
        };
        self.ewma_us.store(next.to_bits(), Relaxed);
    }

    /// No latency sample for a second and nothing in flight: worth probing.
    pub fn latency_is_stale(&self, now: u64) -> bool {
        const STALE_MS: u64 = 1000;
        let stamp = self.ewma_stamp_ms.load(Relaxed);
        stamp != 0 && now.saturating_sub(stamp) > STALE_MS && self.in_flight.load(Relaxed) == 0
    }

    /// How long the backend has had requests waiting without answering anything
    /// (0 when nothing waits).
    pub fn stall_us(&self, now_us: u64) -> u64 {
        if self.awaiting.load(Relaxed) == 0 {
            return 0;
        }
        now_us.saturating_sub(self.last_answer_us.load(Relaxed))
    }

    /// Mean age of the requests in flight, in microseconds (0 when none).
    pub fn outstanding_age_us(&self, now_us: u64) -> f64 {
        let n = self.in_flight.load(Relaxed) as u64;
        if n == 0 {
            return 0.0;
        }
        let mean_start = self.outstanding_since_sum_us.load(Relaxed) / n;
        now_us.saturating_sub(mean_start) as f64
    }

    pub fn latency_ewma_us(&self) -> f64 {
        f64::from_bits(self.ewma_us.load(Relaxed))
    }
}
