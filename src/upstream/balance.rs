//! Choosing a backend for a request.
//!
//! Every algorithm works on the same question: among the members that may take this
//! request now (`candidate(i)`), which one? Health, drain state, failover level and
//! earlier tries of the same request decide candidacy elsewhere (see `pool.rs`).

use super::member::Member;
use crate::config::Algorithm;
use crate::rand;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// What a request offers to key-based algorithms.
pub struct PickKey<'a> {
    /// The client address (for `ip_hash`).
    pub client_ip: std::net::IpAddr,
    /// Stable hash of the pool's `hash_key` in this request, if present.
    pub hash: Option<u64>,
    pub _marker: std::marker::PhantomData<&'a ()>,
}

pub struct Balancer {
    pub algorithm: Algorithm,
    counter: AtomicUsize,
    /// Smooth weighted round-robin: a precomputed order of member indices.
    schedule: Vec<u16>,
}

/// Longest smooth-WRR schedule; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

impl Balancer {
    pub fn new(algorithm: Algorithm, members: &[Member]) -> Self {
        let schedule = if algorithm == Algorithm::WeightedRoundRobin {
            smooth_schedule(&members.iter().map(|m| m.weight).collect::<Vec<_>>())
        } else {
            Vec::new()
        };
        Balancer {
            algorithm,
            counter: AtomicUsize::new(rand::below(1 << 16) as usize),
            schedule,
        }
    }

    /// Picks one member index for which `candidate` is true.
    pub fn pick(
        &self,
        members: &[Member],
        key: &PickKey,
        candidate: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = members.len();
        // Nothing to choose from: return before touching any rotation counter, so
        // that an empty try does not shift the round-robin order.
        if !(0..n).any(candidate) {
            return None;
        }
        match self.algorithm {
            Algorithm::RoundRobin => {
                self.nth_candidate(n, self.counter.fetch_add(1, Relaxed), candidate)
            }
            Algorithm::Random => {
                let k = (0..n).filter(|&i| candidate(i)).count();
                if k == 0 {
                    return None;
                }
                self.nth_candidate(n, rand::below(k as u64) as usize, candidate)
            }
            Algorithm::WeightedRoundRobin => {
                let len = self.schedule.len();
                if len == 0 {
                    return None;
                }
                let start = self.counter.fetch_add(1, Relaxed);
                (0..len)
                    .map(|i| self.schedule[(start + i) % len] as usize)
                    .find(|&i| i < n && candidate(i))
            }
            Algorithm::LeastConn => {
                // Fewest in-flight requests per unit of weight; the scan starts at a
                // rotating offset so ties go round-robin.
                let start = self.counter.fetch_add(1, Relaxed);
                let mut best: Option<(usize, f64)> = None;
                for j in 0..n {
                    let i = (start + j) % n;
                    if !candidate(i) {
                        continue;
                    }
                    let m = &members[i];
                    let load = m.backend.in_flight.load(Relaxed) as f64 / m.weight.max(1) as f64;
                    if best.is_none_or(|(_, b)| load < b) {
                        best = Some((i, load));
                    }
                }
                best.map(|(i, _)| i)
            }
            Algorithm::IpHash => {
                let ip = match key.client_ip {
                    std::net::IpAddr::V4(v4) => rand::stable_hash(&v4.octets()),
                    std::net::IpAddr::V6(v6) => rand::stable_hash(&v6.octets()),
                };
                rendezvous(members, ip, candidate)
            }
            Algorithm::Hash => match key.hash {
                Some(h) => rendezvous(members, h, candidate),
                // No key in the request: spread like round-robin.
                None => self.nth_candidate(n, self.counter.fetch_add(1, Relaxed), candidate),
            },
            Algorithm::P2cEwma => {
                let k = (0..n).filter(|&i| candidate(i)).count();
                match k {
                    0 => None,
                    1 => (0..n).find(|&i| candidate(i)),
                    _ => {
                        let a = rand::below(k as u64) as usize;
                        let mut b = rand::below(k as u64 - 1) as usize;
                        if b >= a {
                            b += 1;
                        }
                        let ia = self.nth_candidate(n, a, candidate)?;
                        let ib = self.nth_candidate(n, b, candidate)?;
                        // A backend without a latency sample for a while gets one
                        // request (one at a time) so its estimate stays current and a
                        // recovered backend is not starved.
                        let now = crate::clock::now_ms();
                        for i in [ia, ib] {
                            if members[i].backend.latency_is_stale(now) {
                                return Some(i);
                            }
                        }
                        let now_us = crate::clock::now_us();
                        Some(
                            if p2c_cost(&members[ia], now_us) <= p2c_cost(&members[ib], now_us) {
                                ia
                            } else {
                                ib
                            },
                        )
                    }
                }
            }
            // Strict priority: the first candidate in config order.
            Algorithm::Failover => (0..n).find(|&i| candidate(i)),
        }
    }

    /// The `(nth mod k)`-th candidate, where k is the number of candidates.
    fn nth_candidate(
        &self,
        n: usize,
        nth: usize,
        candidate: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let k = (0..n).filter(|&i| candidate(i)).count();
        if k == 0 {
            return None;
        }
        let mut want = nth % k;
        for i in 0..n {
            if candidate(i) {
                if want == 0 {
                    return Some(i);
                }
                want -= 1;
            }
        }
        None
    }
}

/// Peak-EWMA latency times load (in-flight + 1), per unit of weight. The latency is
/// at least the mean age of the requests in flight, so a backend that stops
/// answering looks slow at once rather than when its first slow answer lands. A
/// backend with no latency sample yet counts as 1 ms so it gets probed.
fn p2c_cost(m: &Member, now_us: u64) -> f64 {
    let lat = m
        .backend
        .latency_ewma_us()
        .max(m.backend.outstanding_age_us(now_us));
    let lat = if lat <= 0.0 { 1000.0 } else { lat };
    lat * (m.backend.in_flight.load(Relaxed) as f64 + 1.0) / m.weight.max(1) as f64
}

/// Weighted rendezvous (highest-random-weight) hashing: each candidate scores
/// `weight / -ln(u)` with `u` a stable hash of (key, backend) in (0, 1); the highest
/// wins. A backend that leaves only moves the keys it had won.
fn rendezvous(members: &[Member], key: u64, candidate: &dyn Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, m) in members.iter().enumerate() {
        if !candidate(i) {
            continue;
        }
        let h = rand::mix(key ^ m.key_hash);
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = m.weight.max(1) as f64 / -u.ln();
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// nginx's smooth weighted round-robin, unrolled into one period: weights 5:1:1 give
/// a,a,b,a,c,a,a rather than five a's in a row.
pub fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, w.max(1) as u64));
    let mut w: Vec<u64> = weights
        .iter()
        .map(|&x| x.max(1) as u64 / g.max(1))
        .collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_SCHEDULE {
        let scale = MAX_SCHEDULE as f64 / sum as f64;
        for x in w.iter_mut() {
            *x = ((*x as f64 * scale).round() as u64).max(1);
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_wrr_has_no_bursts() {
        let s = smooth_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 5);
        // Never three of the heavy one in a row within the cycle (nginx gives a a b a c a a).
        let doubled: Vec<u16> = s.iter().chain(s.iter()).copied().collect();
        assert!(
            !doubled.windows(5).any(|w| w.iter().all(|&i| i == 0)),
            "{s:?}"
        );
    }

    #[test]
    fn schedule_reduces_and_scales() {
        assert_eq!(smooth_schedule(&[100, 100]).len(), 2);
        assert!(smooth_schedule(&[100_000, 1]).len() <= MAX_SCHEDULE as usize + 1);
    }
}
