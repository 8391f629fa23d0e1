//! A cheap monotonic clock in milliseconds since process start, so that timestamps fit
//! in atomics shared with the request path.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static START: OnceLock<Instant> = OnceLock::new();

fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process started (never 0, so 0 can mean "never").
pub fn now_ms() -> u64 {
    start().elapsed().as_millis() as u64 + 1
}

/// Microseconds since the process started.
pub fn now_us() -> u64 {
    start().elapsed().as_micros() as u64 + 1
}

/// The `Instant` matching a value from [`now_ms`].
pub fn instant_of(ms: u64) -> Instant {
    start() + Duration::from_millis(ms.saturating_sub(1))
}

/// Wall-clock seconds since the Unix epoch.
pub fn unix_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Wall-clock time of a [`now_ms`] value, as seconds since the Unix epoch.
pub fn unix_secs_of(ms: u64) -> f64 {
    let age = now_ms().saturating_sub(ms) as f64 / 1000.0;
    unix_secs_f64() - age
}
