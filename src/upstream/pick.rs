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
        let primary = self.levels.first().copied().unwrap_or(0);
        let target = failover.route_level(primary, || self.healthy_level(now));
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Config, load_str};
    use crate::upstream::backend::Backend;
    use crate::upstream::in_flight::InFlight;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// A compiled pool from the `pools[0]` of a config text.
    pub(crate) fn pool(yaml: &str) -> Pool {
        let c: Config = load_str(yaml, "test", std::path::Path::new(".")).expect("valid config");
        let pc = &c.pools[0];
        let backends = pc
            .backends
            .iter()
            .map(|b| Arc::new(Backend::new(&pc.name, b.address.clone(), None)))
            .collect();
        Pool::new(pc, backends, Default::default())
    }

    fn key() -> PickKey<'static> {
        PickKey {
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            hash: None,
            _marker: std::marker::PhantomData,
        }
    }

    fn pick(p: &Pool) -> Pick {
        p.pick(&p.balancer, &key(), &Tried::default())
    }

    /// Which members 200 picks went to.
    fn shares(p: &Pool) -> HashMap<usize, usize> {
        let mut m = HashMap::new();
        for _ in 0..200 {
            if let Pick::Member(i) = pick(p) {
                *m.entry(i).or_insert(0) += 1;
            }
        }
        m
    }

    const LEVELS: &str = "
pools:
  - name: p
    backends:
      - \"10.0.0.1:80\"
      - \"10.0.0.2:80\"
      - { address: \"10.0.0.3:80\", failover_level: 1 }
      - { address: \"10.0.0.4:80\", failover_level: 2 }
routes: [{pool: p}]
";

    fn down(p: &Pool, i: usize) {
        p.members[i].backend.set_active_up(false);
    }

    #[test]
    fn traffic_stays_on_the_lowest_level_with_a_healthy_member() {
        let p = pool(LEVELS);
        assert_eq!(
            shares(&p)
                .keys()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [0, 1].into()
        );
        down(&p, 0);
        assert_eq!(shares(&p).keys().copied().collect::<Vec<_>>(), [1]);
        down(&p, 1);
        assert_eq!(pick(&p), Pick::Member(2), "cascades to the first backup");
        down(&p, 2);
        assert_eq!(pick(&p), Pick::Member(3), "then to the second");
        down(&p, 3);
        assert_eq!(pick(&p), Pick::NoneAvailable);
    }

    #[test]
    fn a_retry_goes_to_an_untried_member_then_reports_all_tried() {
        let p = pool(LEVELS);
        let mut tried = Tried::default();
        tried.add(0);
        assert_eq!(p.pick(&p.balancer, &key(), &tried), Pick::Member(1));
        tried.add(1);
        // Both primaries tried: the backups are not for retries of a healthy level.
        assert_eq!(p.pick(&p.balancer, &key(), &tried), Pick::Member(2));
    }

    #[test]
    fn the_controller_decision_wins_over_health() {
        let p = pool(LEVELS);
        p.state.failover.set_serving(Some(1));
        assert_eq!(pick(&p), Pick::Member(2));
        // The decided level goes down: requests cascade upwards (the controller
        // brings them back down after `recovery_interval`)...
        down(&p, 2);
        assert_eq!(pick(&p), Pick::Member(3));
        // ...and to a lower level only when nothing above is up.
        down(&p, 3);
        assert!(matches!(pick(&p), Pick::Member(0 | 1)));
        down(&p, 0);
        down(&p, 1);
        p.members[3].backend.set_active_up(true);
        // ...unless the pool holds its level (`delayed`): then they stay on it,
        // down or not, until the controller decides otherwise.
        p.state.failover.hold.store(true, Relaxed);
        assert_eq!(pick(&p), Pick::Member(2));
    }

    #[test]
    fn a_delayed_pool_stays_on_its_primary_before_any_decision() {
        let p = pool(LEVELS);
        p.state.failover.hold.store(true, Relaxed);
        down(&p, 0);
        down(&p, 1);
        assert!(matches!(pick(&p), Pick::Member(0 | 1)));
    }

    #[test]
    fn drained_and_disabled_members_take_nothing_even_held() {
        let p = pool(LEVELS);
        p.state.failover.hold.store(true, Relaxed);
        for i in 0..2 {
            p.members[i]
                .backend
                .set_admin_state(crate::upstream::backend::AdminState::Draining);
        }
        assert_eq!(pick(&p), Pick::NoneAvailable);
    }

    #[test]
    fn passive_ejections_alone_do_not_refuse_requests() {
        let p = pool(LEVELS);
        let passive = crate::config::PassiveHealthConfig {
            max_fails: 1,
            ..p.passive.clone()
        };
        for m in &p.members {
            assert!(m.backend.record_failure(&passive));
        }
        assert!(
            matches!(pick(&p), Pick::Member(0 | 1)),
            "lowest level first"
        );
    }

    #[test]
    fn fail_open_spreads_over_everything_not_taken_out_by_an_operator() {
        let text = LEVELS.replace("routes:", "    fail_open: true\nroutes:");
        let p = pool(&text);
        for i in 0..4 {
            down(&p, i);
        }
        p.members[3]
            .backend
            .set_admin_state(crate::upstream::backend::AdminState::Disabled);
        let got = shares(&p);
        assert!(got.len() >= 2 && !got.contains_key(&3), "{got:?}");
        // Without `fail_open` the same pool refuses nothing on the primary level
        // either (the round-robin start is random, so either primary may come first).
        assert!(matches!(pick(&pool(LEVELS)), Pick::Member(0 | 1)));
    }

    #[test]
    fn slow_start_ramps_a_returning_member() {
        let p = pool(
            "pools: [{name: p, backends: [\"10.0.0.1:80\", \"10.0.0.2:80\"], slow_start: 100s}]\nroutes: [{pool: p}]",
        );
        // Member 1 came back just now: it gets the floor share (2%), not half.
        p.members[1]
            .backend
            .up_since_ms
            .store(crate::clock::now_ms(), Relaxed);
        let got = shares(&p);
        assert!(got.get(&1).copied().unwrap_or(0) < 30, "{got:?}");
        // Once the ramp is over (or for a member up from the start) it takes its
        // full share again.
        p.members[1].backend.up_since_ms.store(0, Relaxed);
        let got = shares(&p);
        assert!(got.get(&1).copied().unwrap_or(0) > 60, "{got:?}");
    }

    #[test]
    fn a_full_level_queues_instead_of_spilling_to_a_backup() {
        let p = pool(
            "
pools:
  - name: p
    max_requests: 1
    backends:
      - \"10.0.0.1:80\"
      - { address: \"10.0.0.2:80\", failover_level: 1 }
routes: [{pool: p}]
",
        );
        let slot = InFlight::reserve(p.members[0].backend.clone(), 1, p.state.clone());
        assert!(slot.is_some());
        assert!(
            InFlight::reserve(p.members[0].backend.clone(), 1, p.state.clone()).is_none(),
            "the cap holds"
        );
        assert_eq!(pick(&p), Pick::Full);
        // A hedge may pass the cap.
        assert_eq!(
            p.pick_for_hedge(&p.balancer, &key(), &Tried::default()),
            Some(0)
        );
        drop(slot);
        assert_eq!(pick(&p), Pick::Member(0));
    }
}
