//! A compiled pool: its members in config order, its balancer, and the rules that
//! decide which members may take a request right now.

use super::backend::{AdminState, Backend};
use super::balance::{Balancer, PickKey};
use crate::clock::now_ms;
use crate::config::{
    HealthCheckConfig, PassiveHealthConfig, PoolConfig, QueueConfig, RetryConfig, Timeouts,
};
use crate::rand;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub struct Member {
    pub backend: Arc<Backend>,
    pub weight: u32,
    pub level: u32,
    pub region: Option<String>,
    /// The operator's name for the backend (`name` in the config), if any.
    pub name: Option<String>,
    pub health_check: Option<HealthCheckConfig>,
    /// Stable hash of the backend's address (consistent hashing).
    pub key_hash: u64,
    /// Cap on requests in flight (0: none).
    pub max_requests: u32,
}

impl Member {
    /// Whether the member is at its cap on requests in flight.
    pub fn is_full(&self) -> bool {
        self.max_requests != 0 && self.backend.in_flight.load(Relaxed) >= self.max_requests
    }
}

/// Per-pool state that outlives a reload (failover decisions live here).
pub struct PoolState {
    pub failover: crate::failover::PoolFailoverState,
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

pub struct Pool {
    pub name: String,
    /// The name, shared with the request counters.
    pub name_arc: Arc<str>,
    /// Position in the runtime's pool list.
    pub index: usize,
    pub members: Vec<Member>,
    pub balancer: Balancer,
    pub retries: RetryConfig,
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

/// Members already tried by one request (a retry goes elsewhere). Up to 64 members
/// are tracked; beyond that a retry may land on a member tried before.
#[derive(Default, Clone, Copy)]
pub struct Tried(u64);

impl Tried {
    pub fn add(&mut self, i: usize) {
        if i < 64 {
            self.0 |= 1 << i;
        }
    }
    pub fn has(&self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }
    pub fn clear(&mut self) {
        self.0 = 0;
    }
}

pub enum Pick {
    Member(usize),
    /// No member can take the request (and fail_open does not apply).
    NoneAvailable,
    /// Every available member was tried already.
    AllTried,
    /// Members are available but all at their `max_requests`: wait in the queue.
    Full,
}

impl Pool {
    pub fn new(
        index: usize,
        config: &PoolConfig,
        backends: Vec<Arc<Backend>>,
        state: Arc<PoolState>,
    ) -> Pool {
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
            index,
            balancer: Balancer::new(config.algorithm, &members),
            members,
            retries: config.retries.clone(),
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

    pub fn member_index(&self, key: &str) -> Option<usize> {
        self.members.iter().position(|m| m.backend.key() == key)
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

    /// Chooses a member for a request with `balancer` (the pool's, or a route's
    /// override), skipping members in `tried`.
    pub fn pick(&self, balancer: &Balancer, key: &PickKey, tried: &Tried) -> Pick {
        self.pick_inner(balancer, key, tried, false)
    }

    /// A member for a hedge: like `pick`, but never one that has stalled (a hedge
    /// there would only wait as well).
    pub fn pick_for_hedge(
        &self,
        balancer: &Balancer,
        key: &PickKey,
        tried: &Tried,
    ) -> Option<usize> {
        match self.pick_inner(balancer, key, tried, true) {
            Pick::Member(i) => Some(i),
            _ => None,
        }
    }

    fn pick_inner(&self, balancer: &Balancer, key: &PickKey, tried: &Tried, hedge: bool) -> Pick {
        let now = now_ms();
        let n = self.members.len();
        // The level traffic should go to: decided by the failover controller when the
        // pool has backups, otherwise simply the lowest level with a healthy member.
        let target = self.state.failover.route_level(self, now);
        let stall_limit = self
            .retries
            .hedge_after
            .map(|_| (2.0 * self.state.srtt_us()).max(2000.0) as u64);
        let now_us = crate::clock::now_us();
        let mut any_available = false;
        // With the `delayed` strategy, requests do not cascade past the serving
        // level by themselves: only the controller moves traffic.
        let hold =
            self.state.failover.hold.load(Relaxed) && self.state.failover.serving().is_some();
        let highest = if hold { target } else { u32::MAX };
        for &level in self.levels.iter().filter(|&&l| l >= target && l <= highest) {
            let in_level = |i: usize| {
                let m = &self.members[i];
                m.level == level && m.backend.available(now)
            };
            if !(0..n).any(in_level) {
                continue;
            }
            any_available = true;
            // A member at its cap takes no new request (a hedge may go past it:
            // it is budgeted, and it is what rescues requests stuck on a slow
            // member of a saturated pool). When the only untried members of the
            // level are full, the request waits for one rather than spilling to
            // a backup level, as with HAProxy's queue.
            let room = |i: usize| hedge || !self.members[i].is_full();
            if self.queue.is_some()
                && !hedge
                && (0..n).any(|i| in_level(i) && !tried.has(i))
                && !(0..n).any(|i| in_level(i) && !tried.has(i) && room(i))
            {
                return Pick::Full;
            }
            // In a pool that hedges (it asked for latency sensitivity), a member
            // with requests waiting that has not answered anything for twice the
            // pool's usual latency has stalled: leave it out while others keep up.
            // This is a per-request steer, not an ejection: it ends with the next
            // answer.
            if let Some(limit) = stall_limit {
                let candidate = |i: usize| in_level(i) && !tried.has(i);
                let untried = |i: usize| candidate(i) && room(i);
                let gap = |i: usize| self.members[i].backend.stall_us(now_us);
                // Those that keep answering; failing that (a busy moment where
                // every member paused), those that answered most recently. A hedge
                // never goes to a member stalled for long: it would only wait too.
                // Members at their cap count here: they show what "answering"
                // looks like right now.
                let freshest = (0..n).filter(|&i| candidate(i)).map(gap).min().unwrap_or(0);
                let bound = if hedge {
                    limit.max(freshest + limit).min(4 * limit)
                } else {
                    freshest.max(limit) + limit
                };
                let is_fresh = |i: usize| gap(i) <= limit || gap(i) <= bound;
                let fresh = |i: usize| untried(i) && is_fresh(i);
                if let Some(i) = self.pick_ramped(balancer, key, &fresh, now) {
                    return Pick::Member(i);
                }
                if hedge {
                    continue;
                }
                // A member that keeps answering but is at its cap is worth waiting
                // for; a stalled one with room is not.
                if (0..n).any(|i| candidate(i) && !room(i) && is_fresh(i)) {
                    return Pick::Full;
                }
            }
            let untried = |i: usize| in_level(i) && !tried.has(i) && room(i);
            if let Some(i) = self.pick_ramped(balancer, key, &untried, now) {
                return Pick::Member(i);
            }
        }
        // Levels below the target are used only when nothing at or above it is up
        // (e.g. a manual failover to a backup level that is down).
        for &level in self.levels.iter().filter(|&&l| l < target) {
            let ok = |i: usize| {
                let m = &self.members[i];
                m.level == level && m.backend.available(now) && !tried.has(i)
            };
            if let Some(i) = balancer.pick(&self.members, key, &ok) {
                return Pick::Member(i);
            }
        }
        if any_available {
            return Pick::AllTried;
        }
        // Everything left was taken out by passive health alone (active checks still
        // pass): rather than refuse the request, try those, lowest level first, as
        // nginx does when all its servers are marked failed.
        for &level in self.levels.iter().filter(|&&l| l <= highest) {
            let ok = |i: usize| {
                let m = &self.members[i];
                m.level == level
                    && m.backend.admin_state() == AdminState::Active
                    && m.backend.active_up()
                    && !tried.has(i)
            };
            if let Some(i) = balancer.pick(&self.members, key, &ok) {
                return Pick::Member(i);
            }
        }
        if self.fail_open {
            // Panic mode: every backend looks down, which more often means the checks
            // are wrong than that all of them are; spread over those not taken out
            // by an operator.
            let ok = |i: usize| {
                let b = &self.members[i].backend;
                b.admin_state() == AdminState::Active && !tried.has(i)
            };
            if let Some(i) = balancer.pick(&self.members, key, &ok) {
                return Pick::Member(i);
            }
        }
        Pick::NoneAvailable
    }

    /// Applies slow start: a member that came back less than `slow_start` ago takes
    /// part with a probability growing linearly from 0 to 1 over that time.
    fn pick_ramped(
        &self,
        balancer: &Balancer,
        key: &PickKey,
        ok: &dyn Fn(usize) -> bool,
        now: u64,
    ) -> Option<usize> {
        if self.slow_start_ms == 0 {
            return balancer.pick(&self.members, key, ok);
        }
        let ramp = |i: usize| -> f64 {
            let since = self.members[i].backend.up_since_ms.load(Relaxed);
            if since == 0 || now >= since + self.slow_start_ms {
                1.0
            } else if now <= since {
                0.0
            } else {
                (now - since) as f64 / self.slow_start_ms as f64
            }
        };
        let draw = rand::unit();
        let ramped = |i: usize| ok(i) && draw < ramp(i).max(0.02);
        balancer
            .pick(&self.members, key, &ramped)
            .or_else(|| balancer.pick(&self.members, key, ok))
    }
}
