//! Process-wide request counters, updated when each request completes.
//! (The Prometheus exposition lives with the admin API.)

use crate::proxy::completion::Completion;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Telemetry {
    pub requests: AtomicU64,
    /// Responses by class: index 1..=5 for 1xx..5xx, 0 for "no response".
    pub by_class: [AtomicU64; 6],
}

impl Telemetry {
    pub fn request_done(&self, c: &Completion) {
        self.requests.fetch_add(1, Relaxed);
        let class = (c.status / 100).min(5) as usize;
        self.by_class[class].fetch_add(1, Relaxed);
    }
}
