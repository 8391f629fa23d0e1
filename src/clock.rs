//! A cheap monotonic clock in milliseconds since process start, so that timestamps fit
//! in atomics shared with the request path.
//!
//! `now_us` reads tokio's clock, which is the system's monotonic clock in a normal
//! build and the paused, steerable clock in tests that ask for one: the failover and
//! health state machines are tested that way. `now_ms` does too in unit tests; in the
//! program it reads the kernel's coarse monotonic clock instead, which is the same
//! clock truncated to the last tick (1 to 4 ms) and several times cheaper to read
//! (about 9 ns against 55 on this project's VMs). Everything stamped in milliseconds
//! (idle connections, ejection windows, latency stamps, upload progress) tolerates a
//! tick, and the request path reads it several times per request. [`coarse_instant`]
//! gives the coarse clock as a tokio instant, for deadlines of seconds that may be
//! a tick early or late; [`us_of`] turns an instant already read into a
//! [`now_us`] value, so that one precise read can serve several stamps.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The process start: tokio's instant and, taken right after, the coarse clock's
/// reading in nanoseconds.
static START: OnceLock<(Instant, u64)> = OnceLock::new();

fn started() -> &'static (Instant, u64) {
    START.get_or_init(|| (Instant::now(), coarse_ns()))
}

fn start() -> Instant {
    started().0
}

/// The coarse monotonic clock in nanoseconds (tokio's clock in unit tests, so
/// that a paused clock steers it).
#[cfg(not(test))]
fn coarse_ns() -> u64 {
    kernel_ns(libc::CLOCK_MONOTONIC_COARSE)
}

#[cfg(test)]
fn coarse_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(origin).as_nanos() as u64
}

/// One of the kernel's clocks, in nanoseconds.
fn kernel_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the monotonic clock ids exist
    // since Linux 2.6.32, and a failure (EINVAL) only leaves zeros.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One of the kernel's clocks, in milliseconds.
fn kernel_ms(clock: libc::clockid_t) -> u64 {
    kernel_ns(clock) / 1_000_000
}

/// Milliseconds since the process started (never 0, so 0 can mean "never").
pub(crate) fn now_ms() -> u64 {
    let &(_, at_start) = started();
    coarse_ns().saturating_sub(at_start) / 1_000_000 + 1
}

/// Now by the coarse clock, as a tokio instant: for deadlines (a head's wait,
/// a backend's answer) that tolerate a tick. The coarse clock lags the precise
/// one by up to a tick (1 to 4 ms), and so may the start's reading of it: the
/// instant is within a tick of the precise clock, either way. In unit tests it
/// is tokio's (paused) clock itself.
#[cfg(not(test))]
pub(crate) fn coarse_instant() -> Instant {
    let &(at, at_start) = started();
    coarse_after(at, at_start, coarse_ns())
}

/// The instant of a coarse reading `now_ns`, given the instant `at` and the
/// coarse reading `at_ns` taken together once.
fn coarse_after(at: Instant, at_ns: u64, now_ns: u64) -> Instant {
    at + std::time::Duration::from_nanos(now_ns.saturating_sub(at_ns))
}

#[cfg(test)]
pub(crate) fn coarse_instant() -> Instant {
    Instant::now()
}

/// The instant of a [`now_ms`] value (for timers).
pub(crate) fn instant_of_ms(ms: u64) -> Instant {
    start() + std::time::Duration::from_millis(ms.saturating_sub(1))
}

/// The instant of a [`now_us`] value.
pub(crate) fn instant_of_us(us: u64) -> Instant {
    start() + std::time::Duration::from_micros(us.saturating_sub(1))
}

/// Microseconds since the process started.
pub(crate) fn now_us() -> u64 {
    us_of(Instant::now())
}

/// The [`now_us`] value of an instant already read.
pub(crate) fn us_of(at: Instant) -> u64 {
    at.saturating_duration_since(start()).as_micros() as u64 + 1
}

/// Ready once `at` has passed, with `timer` armed for it: one timer kept for
/// a connection's life, whose deadline each request moves instead of
/// registering a timer of its own. Moving it later only stores the new
/// deadline (a timer that fires early is re-armed); moving it earlier re-arms
/// at once.
pub(crate) fn poll_deadline(
    timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    at: Instant,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<()> {
    use std::future::Future;
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
    if sleep.deadline() > at {
        sleep.as_mut().reset(at);
    }
    loop {
        std::task::ready!(sleep.as_mut().poll(cx));
        if sleep.deadline() >= at {
            return std::task::Poll::Ready(());
        }
        sleep.as_mut().reset(at);
    }
}

/// Wall-clock milliseconds since the Unix epoch from the kernel's coarse
/// real-time clock: at most a tick (1 to 4 ms) behind, for the access log's time
/// stamp, which every request writes.
pub(crate) fn unix_ms_coarse() -> u64 {
    kernel_ms(libc::CLOCK_REALTIME_COARSE)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_is_the_monotonic_clock_to_within_a_tick() {
        for _ in 0..1000 {
            let coarse = kernel_ms(libc::CLOCK_MONOTONIC_COARSE);
            let fine = kernel_ms(libc::CLOCK_MONOTONIC);
            // Never ahead; behind by at most a tick (4 ms at HZ=250), with room
            // for a descheduled thread between the two reads.
            assert!(coarse <= fine, "{coarse} > {fine}");
            assert!(fine - coarse < 1000, "{coarse} vs {fine}");
        }
    }

    #[test]
    fn a_coarse_instant_is_the_precise_one_to_within_a_tick() {
        let (at, at_ns) = (Instant::now(), kernel_ns(libc::CLOCK_MONOTONIC_COARSE));
        for _ in 0..1000 {
            let coarse = coarse_after(at, at_ns, kernel_ns(libc::CLOCK_MONOTONIC_COARSE));
            let fine = Instant::now();
            // A tick (4 ms at HZ=250) either way: the start's coarse reading may lag
            // as much as the current one; room for a descheduled thread.
            let gap = if coarse > fine {
                coarse - fine
            } else {
                fine - coarse
            };
            assert!(gap < std::time::Duration::from_secs(1), "{gap:?}");
            assert!(
                coarse <= fine + std::time::Duration::from_millis(20),
                "{gap:?} ahead"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moves_later_and_earlier_on_one_timer() {
        use std::time::Duration;
        let mut timer = None;
        let t0 = Instant::now();
        // Armed for 10 s, then moved to 20 s: not ready at 10 s.
        let first = t0 + Duration::from_secs(10);
        let later = t0 + Duration::from_secs(20);
        std::future::poll_fn(|cx| {
            assert!(poll_deadline(&mut timer, first, cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        std::future::poll_fn(|cx| poll_deadline(&mut timer, later, cx)).await;
        assert!(Instant::now() >= later, "fired before the later deadline");
        // Moved earlier than the armed time: fires at the earlier one.
        let far = Instant::now() + Duration::from_secs(60);
        let near = Instant::now() + Duration::from_secs(5);
        std::future::poll_fn(|cx| {
            assert!(poll_deadline(&mut timer, far, cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        std::future::poll_fn(|cx| poll_deadline(&mut timer, near, cx)).await;
        let now = Instant::now();
        assert!(now >= near && now < far, "fired at the earlier deadline");
    }
}
