//! Roles and the rules that decide them, kept free of I/O so they can be tested
//! on their own.
//!
//! Timing model (ET = `election_timeout`): a follower refuses to vote for anyone
//! until 2×ET after it last heard from the leader (openraft's leader lease) and
//! only starts its own election after 2×ET plus a random ET..2×ET. Any new leader
//! needs a vote from a node of the majority that last acknowledged the old one, so
//! none can be elected before 2×ET after that acknowledgement. The primary keeps
//! the VIP only while its last majority acknowledgement is younger than ET,
//! leaving ET of margin for scheduling delays and clock-rate differences: it has
//! let go of the address well before anyone else may take it.

use super::consensus::ConsensusView;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
    Witness,
}

impl Role {
    pub fn word(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
            Role::Witness => "witness",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Role::Primary => 1,
            Role::Secondary => 0,
            Role::Witness => 2,
        }
    }

    pub fn from_code(c: u8) -> Role {
        match c {
            1 => Role::Primary,
            2 => Role::Witness,
            _ => Role::Secondary,
        }
    }
}

/// How long a majority acknowledgement lets the leader act as primary.
pub fn lease(election_timeout: Duration) -> Duration {
    election_timeout
}

/// The role this node should have now.
pub fn decide(witness: bool, view: &ConsensusView, now: Instant, lease: Duration) -> Role {
    if witness {
        return Role::Witness;
    }
    let fresh = view
        .quorum_acked_at
        .is_some_and(|t| now.saturating_duration_since(t) < lease);
    if view.is_leader && fresh {
        Role::Primary
    } else {
        Role::Secondary
    }
}

/// Why the role changed, for logs, events and hooks.
pub fn reason(from: Role, to: Role, view: &ConsensusView, me: &str, handing_over: bool) -> String {
    match (from, to) {
        (_, Role::Primary) => format!("elected primary for term {}", view.term),
        (Role::Primary, _) if handing_over => "handed the role over".into(),
        (Role::Primary, _) if view.is_leader => {
            "lost contact with the majority: lease expired, VIP dropped".into()
        }
        (Role::Primary, _) => match &view.leader {
            Some(l) if l != me => format!("`{l}` became primary (term {})", view.term),
            _ => format!("stepped down (term {})", view.term),
        },
        _ => "starting".into(),
    }
}

/// Preemption on a returning higher-priority node: it asks the primary to hand
/// over once its checks have passed for `delay` without interruption, and asks
/// again at most every `retry`.
#[derive(Debug, Default)]
pub struct Preempt {
    passing_since: Option<Instant>,
    last_ask: Option<Instant>,
}

impl Preempt {
    /// Feeds the checks' verdict; true when the primary should be asked now.
    pub fn update(
        &mut self,
        passing: bool,
        now: Instant,
        delay: Duration,
        retry: Duration,
    ) -> bool {
        if !passing {
            self.passing_since = None;
            return false;
        }
        let since = *self.passing_since.get_or_insert(now);
        if now.saturating_duration_since(since) < delay {
            return false;
        }
        if self
            .last_ask
            .is_some_and(|t| now.saturating_duration_since(t) < retry)
        {
            return false;
        }
        self.last_ask = Some(now);
        true
    }

    pub fn reset(&mut self) {
        self.passing_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(is_leader: bool, acked_ago: Option<u64>, now: Instant) -> ConsensusView {
        ConsensusView {
            term: 3,
            leader: Some(if is_leader { "a" } else { "b" }.into()),
            is_leader,
            quorum_acked_at: acked_ago.map(|ms| now - Duration::from_millis(ms)),
            ..ConsensusView::initial()
        }
    }

    #[test]
    fn primary_only_while_a_majority_acknowledged_within_the_lease() {
        let now = Instant::now() + Duration::from_secs(10);
        let lease = Duration::from_millis(1500);
        assert_eq!(
            decide(false, &view(true, Some(100), now), now, lease),
            Role::Primary
        );
        assert_eq!(
            decide(false, &view(true, Some(1499), now), now, lease),
            Role::Primary
        );
        assert_eq!(
            decide(false, &view(true, Some(1500), now), now, lease),
            Role::Secondary
        );
        assert_eq!(
            decide(false, &view(true, None, now), now, lease),
            Role::Secondary
        );
        assert_eq!(
            decide(false, &view(false, Some(10), now), now, lease),
            Role::Secondary
        );
        assert_eq!(
            decide(true, &view(true, Some(10), now), now, lease),
            Role::Witness
        );
    }

    #[test]
    fn the_lease_ends_before_any_other_node_may_be_elected() {
        // The majority acknowledged at `acked`; each of its members heard the
        // leader at or after that, and refuses votes for 2×ET after hearing it.
        // With at least half of ET as margin, the old primary has let go first.
        for et in [100u64, 500, 1500] {
            let et = Duration::from_millis(et);
            let acked = Instant::now();
            let earliest_new_leader = acked + et * 2;
            let stops_serving = acked + lease(et);
            assert!(stops_serving + et / 2 <= earliest_new_leader);
        }
    }

    #[test]
    fn preemption_waits_for_uninterrupted_passing_checks() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Preempt::default();
        assert!(!p.update(true, t0, 5 * s, 10 * s));
        assert!(!p.update(true, t0 + 4 * s, 5 * s, 10 * s));
        // A failing check restarts the wait.
        assert!(!p.update(false, t0 + 4 * s, 5 * s, 10 * s));
        assert!(!p.update(true, t0 + 6 * s, 5 * s, 10 * s));
        assert!(!p.update(true, t0 + 10 * s, 5 * s, 10 * s));
        assert!(p.update(true, t0 + 11 * s, 5 * s, 10 * s));
        // Not again before `retry`.
        assert!(!p.update(true, t0 + 15 * s, 5 * s, 10 * s));
        assert!(p.update(true, t0 + 21 * s, 5 * s, 10 * s));
    }

    #[test]
    fn reasons_name_what_happened() {
        let now = Instant::now();
        let v = view(true, Some(2000), now);
        assert!(reason(Role::Primary, Role::Secondary, &v, "a", false).contains("lease expired"));
        let v = view(false, None, now);
        assert!(reason(Role::Primary, Role::Secondary, &v, "a", false).contains("`b` became"));
        assert!(reason(Role::Primary, Role::Secondary, &v, "a", true).contains("handed"));
        assert!(reason(Role::Secondary, Role::Primary, &v, "a", false).contains("term 3"));
    }
}
