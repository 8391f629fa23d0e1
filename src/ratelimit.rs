//! `routes[].rate_limit`: a token bucket per client key, checked on the request
//! path without a lock.
//!
//! Each bucket is one `u64` in a fixed table (its memory never grows: 16,384
//! buckets, 128 KiB per limited route). A bucket is kept the GCRA way, as the
//! "theoretical arrival time" of the next request: a request conforms when that
//! time is no further ahead of now than the burst allows, and pushes it one
//! interval further (one compare-and-swap). A key hashes (SipHash, keyed per
//! limiter, so clients cannot aim at each other's buckets) to a set of 4
//! buckets, tagged with 16 more bits of the hash (two keys of one set whose
//! tags match, about 4 in 65,536, share a bucket). A new key takes the set's
//! bucket that is furthest in the past: a bucket whose time has passed is full
//! and holds nothing worth keeping, so a key loses its state only when more
//! than 4 keys of one set are limited at the same moment; that key then starts
//! again with a full bucket (the limit errs on the lenient side).

use crate::config::RateLimitConfig;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const WAYS: usize = 4;
const SETS: usize = 4096;
const TIME_BITS: u32 = 48;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

pub(crate) struct RateLimiter {
    pub(crate) config: RateLimitConfig,
    /// One token's worth of time (µs).
    interval_us: u64,
    /// How far ahead of now a bucket's time may be and still admit (µs).
    tolerance_us: u64,
    hasher: std::collections::hash_map::RandomState,
    slots: Box<[AtomicU64]>,
    /// Requests refused (the `fulcrum_rate_limited_total` counter).
    pub(crate) refused: AtomicU64,
}

impl RateLimiter {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        let interval_us = (config.interval().as_micros() as u64).max(1);
        RateLimiter {
            config: config.clone(),
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(config.burst.max(1) - 1)),
            hasher: Default::default(),
            slots: (0..SETS * WAYS).map(|_| AtomicU64::new(0)).collect(),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes a token for `key` at `now_us` (µs on `clock::now_us`): `Ok`, or
    /// how long until the next token. `kind` keeps keys of different kinds
    /// (an address, a header value) apart.
    pub(crate) fn check(&self, kind: u8, key: &[u8], now_us: u64) -> Result<(), Duration> {
        let mut hasher = self.hasher.build_hasher();
        hasher.write_u8(kind);
        hasher.write(key);
        let h = hasher.finish();
        let tag = ((h >> TIME_BITS) as u16).max(1) as u64;
        let set = (h as usize) & (SETS - 1);
        let set = &self.slots[set * WAYS..(set + 1) * WAYS];
        let now = now_us & TIME_MASK;
        loop {
            let (slot, seen) = pick_slot(set, tag);
            let tat = if seen >> TIME_BITS == tag {
                seen & TIME_MASK
            } else {
                0
            };
            let start = tat.max(now);
            if start - now > self.tolerance_us {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Duration::from_micros(start - now - self.tolerance_us));
            }
            let next = (start + self.interval_us).min(TIME_MASK);
            if set[slot]
                .compare_exchange_weak(
                    seen,
                    (tag << TIME_BITS) | next,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Ok(());
            }
        }
    }
}

/// The bucket of `tag` in `set`, or the one to take over for it (the furthest in
/// the past), with its current word.
fn pick_slot(set: &[AtomicU64], tag: u64) -> (usize, u64) {
    let mut oldest = (0, u64::MAX, 0);
    for (i, s) in set.iter().enumerate() {
        let v = s.load(Ordering::Acquire);
        if v >> TIME_BITS == tag {
            return (i, v);
        }
        let t = v & TIME_MASK;
        if t < oldest.1 {
            oldest = (i, t, v);
        }
    }
    (oldest.0, oldest.2)
}

/// Seconds for `Retry-After`: the wait rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_micros().div_ceil(1_000_000).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateKey;

    fn limiter(requests: u32, per: Duration, burst: u32) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            requests,
            per,
            burst,
            key: RateKey::ClientIp,
        })
    }

    #[test]
    fn admits_the_burst_then_the_rate() {
        let l = limiter(10, Duration::from_secs(1), 3);
        let t = 1_000_000;
        for _ in 0..3 {
            assert!(l.check(0, b"a", t).is_ok());
        }
        let wait = l.check(0, b"a", t).expect_err("past the burst");
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(retry_after_secs(wait), 1);
        // Another key has its own bucket.
        assert!(l.check(0, b"b", t).is_ok());
        // One interval later, one more token.
        assert!(l.check(0, b"a", t + 100_000).is_ok());
        assert!(l.check(0, b"a", t + 100_000).is_err());
        // Idle long enough: the whole burst again.
        for _ in 0..3 {
            assert!(l.check(0, b"a", t + 10_000_000).is_ok());
        }
        assert_eq!(l.refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn many_keys_almost_never_refuse_a_newcomer() {
        // Far more keys than buckets, each within its burst: only the rare key
        // whose 16-bit tag matches a held bucket of its set (about 4 in 65,536)
        // shares that bucket and is refused.
        let l = limiter(1, Duration::from_secs(60), 1);
        let refused = (0..100_000u32)
            .filter(|i| l.check(0, &i.to_be_bytes(), 5_000_000).is_err())
            .count();
        assert!(refused < 100, "{refused}");
    }

    #[test]
    fn concurrent_takers_never_exceed_the_burst() {
        let l = std::sync::Arc::new(limiter(1, Duration::from_secs(3600), 100));
        let admitted = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (l, a) = (l.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if l.check(0, b"k", 7_000_000).is_ok() {
                            a.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 100);
    }
}
