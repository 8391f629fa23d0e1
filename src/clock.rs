//! A cheap monotonic clock in milliseconds since process start, so that timestamps fit
//! in atomics shared with the request path.
//!
//! It reads tokio's clock, which is the system's monotonic clock in a normal build
//! and the paused, steerable clock in tests that ask for one: the failover and
//! health state machines are tested that way.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process started (never 0, so 0 can mean "never").
pub(crate) fn now_ms() -> u64 {
    Instant::now()
        .saturating_duration_since(start())
        .as_millis() as u64
        + 1
}

/// The instant of a [`now_ms`] value (for timers).
pub(crate) fn instant_of_ms(ms: u64) -> Instant {
    start() + std::time::Duration::from_millis(ms.saturating_sub(1))
}

/// Microseconds since the process started.
pub(crate) fn now_us() -> u64 {
    Instant::now()
        .saturating_duration_since(start())
        .as_micros() as u64
        + 1
}

/// Wall-clock seconds since the Unix epoch.
pub(crate) fn unix_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Wall-clock time of a [`now_ms`] value, as seconds since the Unix epoch.
pub(crate) fn unix_secs_of(ms: u64) -> f64 {
    let age = now_ms().saturating_sub(ms) as f64 / 1000.0;
    unix_secs_f64() - age
}

/// RFC 3339 text of a Unix time, to the millisecond.
pub(crate) fn rfc3339(unix_secs: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix_secs.max(0.0));
    humantime::format_rfc3339_millis(t).to_string()
}
