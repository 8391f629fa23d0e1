//! A compiled pool: its members in config order, its balancer, and the rules that
//! decide which members may take a request right now.

use super::backend::Backend;
use super::balance::Balancer;
use super::member::Member;
use crate::config::{PassiveHealthConfig, PoolConfig, QueueConfig, RetryConfig, Timeouts};
use crate::rand;
use http::Method;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Per-pool state that outlives a reload (failover decisions live here).
pub struct PoolState {
    pub(crate) failover: super::levels::FailoverState,
    /// Woken when a member's health or admin state changes, so the failover
    /// controller re-evaluates at once instead of at its next tick.
    pub(crate) health_changed: tokio::sync::Notify,
    pub retries: AtomicU64,
    pub hedges: AtomicU64,
    /// Smoothed response-header latency and its deviation, in microseconds
    /// (f64 bits), as TCP estimates round-trip times.
    srtt_us: AtomicU64,
    rttvar_us: AtomicU64,
    /// Hedging budget in tenths of a hedge: each request adds one, a hedge costs
    /// ten, so at most about 10% of requests are hedged.
    hedge_tokens: AtomicU64,
    /// Requests waiting for a backend below its `max_requests`.
    pub queued: AtomicU32,
    /// Requests refused because the queue was full or they waited too long.
    pub queue_rejected: AtomicU64,
    /// Signalled each time a request ends on a capped backend of the pool.
    pub slot_freed: tokio::sync::Notify,
}

const HEDGE_TOKEN_CAP: u64 = 1000;

impl Default for PoolState {
    fn default() -> Self {
        PoolState {
            failover: Default::default(),
            health_changed: tokio::sync::Notify::new(),
            retries: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
            srtt_us: AtomicU64::new(0),
            rttvar_us: AtomicU64::new(0),
            // Room for ten hedges from the start.
            hedge_tokens: AtomicU64::new(100),
            queued: AtomicU32::new(0),
            queue_rejected: AtomicU64::new(0),
            slot_freed: tokio::sync::Notify::new(),
        }
    }
}

impl PoolState {
    pub fn observe_latency(&self, us: f64) {
        let srtt = f64::from_bits(self.srtt_us.load(Relaxed));
        if srtt == 0.0 {
            self.srtt_us.store(us.to_bits(), Relaxed);
            self.rttvar_us.store((us / 2.0).to_bits(), Relaxed);
            return;
        }
        let var = f64::from_bits(self.rttvar_us.load(Relaxed));
        let var = 0.75 * var + 0.25 * (srtt - us).abs();
        let srtt = 0.875 * srtt + 0.125 * us;
        self.srtt_us.store(srtt.to_bits(), Relaxed);
        self.rttvar_us.store(var.to_bits(), Relaxed);
    }

    pub fn srtt_us(&self) -> f64 {
        f64::from_bits(self.srtt_us.load(Relaxed))
    }

    /// The adaptive hedge delay: smoothed latency + 4 deviations, at least 5 ms.
    pub fn auto_hedge_delay(&self) -> Duration {
        let srtt = f64::from_bits(self.srtt_us.load(Relaxed));
        let var = f64::from_bits(self.rttvar_us.load(Relaxed));
        let us = (srtt + 4.0 * var).max(5_000.0);
        Duration::from_micros(us as u64)
    }

    /// Adds budget for one request.
    pub fn earn_hedge(&self) {
        if self.hedge_tokens.load(Relaxed) < HEDGE_TOKEN_CAP {
            self.hedge_tokens.fetch_add(1, Relaxed);
        }
    }

    /// Takes the budget for one hedge, if there is enough.
    pub fn spend_hedge(&self) -> bool {
        self.hedge_tokens
            .fetch_update(Relaxed, Relaxed, |t| t.checked_sub(10))
            .is_ok()
    }
}

/// A set of methods: the standard ones as bits, any other in a list.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MethodSet {
    bits: u16,
    others: Vec<Method>,
}

impl MethodSet {
    pub fn of(methods: &[Method]) -> MethodSet {
        let mut set = MethodSet::default();
        for m in methods {
            match bit_of(m) {
                Some(b) => set.bits |= b,
                None if !set.others.contains(m) => set.others.push(m.clone()),
                None => {}
            }
        }
        set
    }

    #[inline]
    pub fn contains(&self, m: &Method) -> bool {
        match bit_of(m) {
            Some(b) => self.bits & b != 0,
            None => self.others.contains(m),
        }
    }
}

/// The bit of a standard method; `None` for an extension method.
#[inline]
fn bit_of(m: &Method) -> Option<u16> {
    let i = match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        Method::QUERY => 9,
        _ => return None,
    };
    Some(1 << i)
}

pub struct Pool {
    pub name: String,
    /// The name, shared with the request counters.
    pub name_arc: Arc<str>,
    pub members: Vec<Member>,
    pub balancer: Balancer,
    pub retries: RetryConfig,
    /// The methods a request may be sent again to another backend with
    /// (`retries.methods`, none when `try_duration` is 0), as a set: looked
    /// up per request, the list was searched.
    pub retry_methods: MethodSet,
    pub timeouts: Timeouts,
    pub passive: PassiveHealthConfig,
    pub fail_open: bool,
    pub slow_start_ms: u64,
    pub hash_key: Option<crate::config::HashKey>,
    /// Distinct failover levels, ascending.
    pub levels: Vec<u32>,
    pub state: Arc<PoolState>,
    /// Present when some member has a `max_requests` cap.
    pub queue: Option<QueueConfig>,
    pub config: PoolConfig,
}

impl Pool {
    pub fn new(config: &PoolConfig, backends: Vec<Arc<Backend>>, state: Arc<PoolState>) -> Pool {
        let members: Vec<Member> = config
            .backends
            .iter()
            .zip(backends)
            .map(|(b, backend)| Member {
                key_hash: rand::stable_hash(b.address.key.as_bytes()),
                backend,
                weight: b.weight,
                level: b.failover_level,
                region: b.region.clone(),
                name: b.name.clone(),
                health_check: config.health_check_for(b),
                max_requests: config.max_requests_for(b),
            })
            .collect();
        let mut levels: Vec<u32> = members.iter().map(|m| m.level).collect();
        levels.sort_unstable();
        levels.dedup();
        let queue = members
            .iter()
            .any(|m| m.max_requests > 0)
            .then_some(config.queue);
        Pool {
            name_arc: Arc::from(config.name.as_str()),
            name: config.name.clone(),
            balancer: Balancer::new(config.algorithm, &members),
            members,
            retries: config.retries.clone(),
            retry_methods: match config.retries.try_duration.is_zero() {
                true => MethodSet::default(),
                false => MethodSet::of(&config.retries.methods),
            },
            timeouts: config.timeouts,
            passive: config.passive_health.clone(),
            fail_open: config.fail_open,
            slow_start_ms: config.slow_start.as_millis() as u64,
            hash_key: config.hash_key.clone(),
            levels,
            state,
            queue,
            config: config.clone(),
        }
    }

    /// How long to wait before hedging a request, if this pool hedges.
    pub fn hedge_delay(&self) -> Option<Duration> {
        match self.retries.hedge_after? {
            crate::config::HedgeDelay::Fixed(d) => Some(d),
            crate::config::HedgeDelay::Auto => Some(self.state.auto_hedge_delay()),
        }
    }

    /// Whether any member of `level` is available now.
    pub fn level_available(&self, level: u32, now: u64) -> bool {
        self.members
            .iter()
            .any(|m| m.level == level && m.backend.available(now))
    }

    /// The lowest level with an available member, by health alone.
    pub fn healthy_level(&self, now: u64) -> Option<u32> {
        self.levels
            .iter()
            .copied()
            .find(|&l| self.level_available(l, now))
    }
}

#[cfg(test)]
mod tests {
    use super::MethodSet;
    use crate::upstream::pick::tests::pool;
    use http::Method;

    fn methods() -> Vec<Method> {
        let mut all: Vec<Method> = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
            "QUERY", "PURGE", "MKCOL", "get",
        ]
        .iter()
        .map(|m| Method::from_bytes(m.as_bytes()).expect("a method"))
        .collect();
        all.push(Method::from_bytes(b"A-VERY-LONG-EXTENSION-METHOD").expect("a method"));
        all
    }

    #[test]
    fn the_set_holds_what_the_list_holds() {
        let all = methods();
        // Every subset of the methods, as a list and as a set, asked of each.
        for mask in 0u32..(1 << all.len()) {
            let list: Vec<Method> = (0..all.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| all[i].clone())
                .collect();
            let set = MethodSet::of(&list);
            for m in &all {
                assert_eq!(set.contains(m), list.contains(m), "{m} in {list:?}");
            }
        }
    }

    #[test]
    fn a_pool_retries_the_methods_it_lists_unless_it_never_retries() {
        let base = "pools:\n  - name: p\n    backends: [\"10.0.0.1:80\"]\n";
        for retries in [
            "",
            "    retries: { try_duration: 0s }\n",
            "    retries: { methods: [GET, post, PURGE] }\n",
            "    retries: { methods: [] }\n",
        ] {
            let p = pool(&format!("{base}{retries}routes: [{{pool: p}}]\n"));
            let r = &p.retries;
            for m in methods() {
                let rule = !r.try_duration.is_zero() && r.methods.contains(&m);
                assert_eq!(p.retry_methods.contains(&m), rule, "{m} with {retries:?}");
            }
        }
    }
}
