//! Which member of a pool takes a request: the rules around the balancing
//! algorithm. In order:
//!
//! 1. Levels: the level the failover state names (or the lowest healthy one),
//!    cascading upwards unless the pool holds its level (`delayed`).
//! 2. Candidates: available (healthy, not drained or disabled), not tried yet by
//!    this request, below their `max_requests` cap (a full level queues).
//! 3. Stall steering (pools that hedge): members that stopped answering are left
//!    out while others keep up.
//! 4. Slow start: a member that just came back takes a growing share.
//! 5. Fallbacks when no level has an available member: a held level keeps its
//!    members, then members ejected by passive health alone, then `fail_open`.

use super::backend::AdminState;
use super::balance::{Balancer, PickKey};
use super::pool::Pool;
use crate::clock::{now_ms, now_us};
use crate::rand;
use std::sync::atomic::Ordering::Relaxed;

/// Members already tried by one request (a retry goes elsewhere). Up to 64 members
/// are tracked; beyond that a retry may land on a member tried before.
#[derive(Default, Clone, Copy)]
pub(crate) struct Tried(u64);

impl Tried {
    pub(crate) fn add(&mut self, i: usize) {
        if i < 64 {
            self.0 |= 1 << i;
        }
    }
    pub(crate) fn has(&self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }
    pub(crate) fn clear(&mut self) {
        self.0 = 0;
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    Member(usize),
    /// No member can take the request (and fail_open does not apply).
    NoneAvailable,
    /// Every available member was tried already.
    AllTried,
    /// Members are available but all at their `max_requests`: wait in the queue.
    Full,
}

/// What one level offers a request.
enum InLevel {
    Member(usize),
    /// Untried members are there, but all at their cap.
    Full,
    /// Available members, all tried already.
    Exhausted,
    /// No available member at all.
    Empty,
}

/// One pick in progress.
struct Picking<'a, 'k> {
    pool: &'a Pool,
    balancer: &'a Balancer,
    key: &'a PickKey<'k>,
    tried: &'a Tried,
    /// A hedge may pass a cap (budgeted) but never goes to a stalled member.
    hedge: bool,
    now: u64,
    /// In a pool that hedges: how long without an answer counts as stalled (µs).
    stall_limit: Option<u64>,
}

impl Pool {
    /// Chooses a member for a request with `balancer` (the pool's, or a route's
    /// override), skipping members in `tried`.
    pub(crate) fn pick(&self, balancer: &Balancer, key: &PickKey, tried: &Tried) -> Pick {
        self.pick_with(balancer, key, tried, false)
    }

    /// A member for a hedge: like `pick`, but never one that has stalled (a hedge
    /// there would only wait as well).
    pub(crate) fn pick_for_hedge(
        &self,
        balancer: &Balancer,
        key: &PickKey,
        tried: &Tried,
    ) -> Option<usize> {
        match self.pick_with(balancer, key, tried, true) {
            Pick::Member(i) => Some(i),
            _ => None,
        }
    }

    fn pick_with(&self, balancer: &Balancer, key: &PickKey, tried: &Tried, hedge: bool) -> Pick {
        let now = now_ms();
        let p = Picking {
            pool: self,
            balancer,
            key,
            tried,
            hedge,
            now,
            stall_limit: self
                .retries
                .hedge_after
                .map(|_| (2.0 * self.state.srtt_us()).max(2000.0) as u64),
        };
        let failover = &self.state.failover;
        let target = failover.route_level(self, now);
        let highest = failover.cascade_limit(target);
        let mut any_available = false;
        for &level in self.levels.iter().filter(|&&l| l >= target && l <= highest) {
            match p.in_level(level) {
                InLevel::Member(i) => return Pick::Member(i),
                InLevel::Full => return Pick::Full,
                InLevel::Exhausted => any_available = true,
                InLevel::Empty => {}
            }
        }
        if let Some(i) = p.below(target) {
            return Pick::Member(i);
        }
        if any_available {
            return Pick::AllTried;
        }
        match p.fallback(target, highest) {
            Some(i) => Pick::Member(i),
            None => Pick::NoneAvailable,
        }
    }
}

impl Picking<'_, '_> {
    fn available_in(&self, level: u32, i: usize) -> bool {
        let m = &self.pool.members[i];
        m.level == level && m.backend.available(self.now)
    }

    /// A member at its cap takes no new request; a hedge may go past it.
    fn has_room(&self, i: usize) -> bool {
        self.hedge || !self.pool.members[i].is_full()
    }

    fn in_level(&self, level: u32) -> InLevel {
        let n = self.pool.members.len();
        if !(0..n).any(|i| self.available_in(level, i)) {
            return InLevel::Empty;
        }
        let untried = |i: usize| self.available_in(level, i) && !self.tried.has(i);
        // When the only untried members of the level are full, the request waits
        // for one rather than spilling to a backup level, as with HAProxy's queue.
        if self.pool.queue.is_some()
            && !self.hedge
            && (0..n).any(untried)
            && !(0..n).any(|i| untried(i) && self.has_room(i))
        {
            return InLevel::Full;
        }
        if let Some(limit) = self.stall_limit {
            match self.steer_around_stalls(level, limit) {
                Steer::Member(i) => return InLevel::Member(i),
                Steer::Wait => return InLevel::Full,
                Steer::NextLevel => return InLevel::Exhausted,
                Steer::Anyone => {}
            }
        }
        match self.ramped(&|i| untried(i) && self.has_room(i)) {
            Some(i) => InLevel::Member(i),
            None => InLevel::Exhausted,
        }
    }

    /// Levels below the target are used only when nothing at or above it is up
    /// (e.g. a manual failover to a backup level that is down).
    fn below(&self, target: u32) -> Option<usize> {
        self.pool
            .levels
            .iter()
            .filter(|&&l| l < target)
            .find_map(|&level| {
                let ok = |i: usize| self.available_in(level, i) && !self.tried.has(i);
                self.balancer.pick(&self.pool.members, self.key, &ok)
            })
    }

    /// No level at or above the target has an available member.
    fn fallback(&self, target: u32, highest: u32) -> Option<usize> {
        let members = &self.pool.members;
        let active = |i: usize| members[i].backend.admin_state() == AdminState::Active;
        let untried = |i: usize| !self.tried.has(i);
        // A held level (`delayed`, within the delay) keeps serving: its health
        // may come back before the delay is over, and requests must not reach a
        // backup level until the controller decides they should.
        if highest == target {
            let held = |i: usize| members[i].level == target && active(i) && untried(i);
            if let Some(i) = self.balancer.pick(members, self.key, &held) {
                return Some(i);
            }
        }
        // Everything left was taken out by passive health alone (active checks
        // still pass): rather than refuse the request, try those, lowest level
        // first, as nginx does when all its servers are marked failed.
        for &level in self.pool.levels.iter().filter(|&&l| l <= highest) {
            let ok = |i: usize| {
                members[i].level == level
                    && active(i)
                    && members[i].backend.active_up()
                    && untried(i)
            };
            if let Some(i) = self.balancer.pick(members, self.key, &ok) {
                return Some(i);
            }
        }
        // Panic mode: every backend looks down, which more often means the checks
        // are wrong than that all of them are; spread over those not taken out
        // by an operator.
        if self.pool.fail_open {
            return self
                .balancer
                .pick(members, self.key, &|i: usize| active(i) && untried(i));
        }
        None
    }

    /// Slow start: a member that came back less than `slow_start` ago takes part
    /// with a probability growing linearly from 0 to 1 over that time.
    fn ramped(&self, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let pool = self.pool;
        if pool.slow_start_ms == 0 {
            return self.balancer.pick(&pool.members, self.key, ok);
        }
        let ramp = |i: usize| -> f64 {
            let since = pool.members[i].backend.up_since_ms.load(Relaxed);
            if since == 0 || self.now >= since + pool.slow_start_ms {
                1.0
            } else if self.now <= since {
                0.0
            } else {
                (self.now - since) as f64 / pool.slow_start_ms as f64
            }
        };
        let draw = rand::unit();
        let ramped = |i: usize| ok(i) && draw < ramp(i).max(0.02);
        self.balancer
            .pick(&pool.members, self.key, &ramped)
            .or_else(|| self.balancer.pick(&pool.members, self.key, ok))
    }
}

/// What stall steering decided within one level.
enum Steer {
    Member(usize),
    /// A member that keeps answering is at its cap: worth waiting for.
    Wait,
    /// A hedge finds nobody fresh here: try the next level.
    NextLevel,
    /// Nothing to steer around: pick among all candidates.
    Anyone,
}

impl Picking<'_, '_> {
    /// In a pool that hedges (it asked for latency sensitivity), a member with
    /// requests waiting that has not answered anything for twice the pool's usual
    /// latency has stalled: leave it out while others keep up. This is a
    /// per-request steer, not an ejection: it ends with the next answer.
    fn steer_around_stalls(&self, level: u32, limit: u64) -> Steer {
        let n = self.pool.members.len();
        let now_us = now_us();
        let candidate = |i: usize| self.available_in(level, i) && !self.tried.has(i);
        let gap = |i: usize| self.pool.members[i].backend.stall_us(now_us);
        // Those that keep answering; failing that (a busy moment where every
        // member paused), those that answered most recently. A hedge never goes
        // to a member stalled for long: it would only wait too. Members at their
        // cap count here: they show what "answering" looks like right now.
        let freshest = (0..n).filter(|&i| candidate(i)).map(gap).min().unwrap_or(0);
        let bound = if self.hedge {
            limit.max(freshest + limit).min(4 * limit)
        } else {
            freshest.max(limit) + limit
        };
        let is_fresh = |i: usize| gap(i) <= limit || gap(i) <= bound;
        let fresh = |i: usize| candidate(i) && self.has_room(i) && is_fresh(i);
        if let Some(i) = self.ramped(&fresh) {
            return Steer::Member(i);
        }
        if self.hedge {
            return Steer::NextLevel;
        }
        if (0..n).any(|i| candidate(i) && !self.has_room(i) && is_fresh(i)) {
            return Steer::Wait;
        }
        Steer::Anyone
    }
}
