//! One controller task per pool with backup levels: it watches the levels' health
//! and moves traffic between them according to the pool's strategy. It wakes at
//! every `check_interval` (sooner during a gradual move), and at once when a
//! backend of its pool changes health or an operator acts (the pool's
//! `health_changed` signal).

use super::notify::Notifier;
use crate::clock::now_ms;
use crate::config::{FailoverSettings, FailoverStrategy};
use crate::events::{EventKind, Events};
use crate::snapshot::{Current, Snapshot};
use crate::upstream::levels::FailoverEvent;
use crate::upstream::pool::Pool;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Steps of a gradual (graceful) move.
const RAMP_STEPS: u64 = 10;

/// What the controllers need from the rest of the process.
#[derive(Clone)]
pub(crate) struct Handles {
    pub(crate) snapshot: Current,
    pub(crate) events: Arc<Events>,
    pub(crate) notifier: Arc<Notifier>,
}

pub(crate) struct Controllers {
    handles: Handles,
    running: HashMap<String, (FailoverSettings, JoinHandle<()>)>,
}

impl Drop for Controllers {
    fn drop(&mut self) {
        for (_, (_, t)) in self.running.drain() {
            t.abort();
        }
    }
}

/// The failover settings that apply to a pool: the global section overridden key
/// by key by the pool's own.
pub(crate) fn settings_for(config: &crate::config::Config, pool: &Pool) -> FailoverSettings {
    pool.config.failover.apply_to(&config.failover.settings)
}

impl Controllers {
    pub(crate) fn new(handles: Handles) -> Self {
        Controllers {
            handles,
            running: HashMap::new(),
        }
    }

    /// Starts controllers for pools that have backups, restarts those whose
    /// settings changed, and stops the rest (their pools then follow health alone).
    pub(crate) fn reconcile(&mut self, snapshot: &Snapshot) {
        let mut wanted = HashMap::new();
        for p in &snapshot.pools {
            let s = settings_for(&snapshot.config, p);
            if p.levels.len() > 1 && s.enabled {
                p.state
                    .failover
                    .hold
                    .store(s.strategy == FailoverStrategy::Delayed, Relaxed);
                wanted.insert(p.name.clone(), s);
            } else {
                p.state.failover.release();
            }
        }
        self.running.retain(|name, (s, task)| {
            let keep = wanted.get(name) == Some(s);
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, s) in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            let task = tokio::spawn(run(self.handles.clone(), name.clone(), s.clone()));
            self.running.insert(name, (s, task));
        }
    }
}

/// What a controller remembers between evaluations.
#[derive(Default)]
struct Memory {
    /// When the serving level was first seen entirely down.
    down_since: Option<u64>,
    /// Per lower level: since when it has been healthy without interruption.
    healthy_since: HashMap<u32, u64>,
}

async fn run(h: Handles, pool_name: String, s: FailoverSettings) {
    let mut mem = Memory::default();
    loop {
        let snapshot = h.snapshot.load_full();
        let Some(pool) = snapshot.pool(&pool_name) else {
            return;
        };
        evaluate(&h, pool, &s, &mut mem, now_ms());
        let tick = match pool.state.failover.current_move() {
            Some(_) => s.check_interval.min(step_len(&s)),
            None => s.check_interval,
        };
        let state = pool.state.clone();
        drop(snapshot);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = state.health_changed.notified() => {}
        }
    }
}

fn step_len(s: &FailoverSettings) -> Duration {
    (s.ramp / RAMP_STEPS as u32).max(Duration::from_millis(10))
}

/// Share (per mille) reached `elapsed` into a ramp: 10% at once, +10% each step.
pub(crate) fn ramp_share(s: &FailoverSettings, elapsed_ms: u64) -> u32 {
    let step = step_len(s).as_millis().max(1) as u64;
    (((elapsed_ms / step) + 1).min(RAMP_STEPS) * (1000 / RAMP_STEPS)) as u32
}

/// One evaluation of a pool's levels at time `now` (ms, `clock::now_ms`).
fn evaluate(h: &Handles, pool: &Pool, s: &FailoverSettings, mem: &mut Memory, now: u64) {
    let f = &pool.state.failover;
    let Some(&primary) = pool.levels.first() else {
        return;
    };
    let healthy = |l: u32| pool.level_available(l, now);
    let serving = match f.serving() {
        Some(l) => l,
        None => {
            // First evaluation: start on the primary level, or failed over already
            // if it is down.
            f.set_serving(Some(primary));
            primary
        }
    };

    // A gradual move in progress (graceful recovery, or a manual move).
    if let Some((from, to, started)) = f.current_move() {
        if !healthy(to) {
            f.set_move(None);
            tracing::warn!(pool = %pool.name, level = to, "gradual move abandoned: the target level went down");
        } else {
            let share = ramp_share(s, now.saturating_sub(started));
            if now.saturating_sub(started) >= s.ramp.as_millis() as u64 {
                f.set_serving(Some(to));
                f.set_move(None);
                let manual = f.manual.load(Relaxed);
                if to > from {
                    activated(
                        h,
                        pool,
                        from,
                        to,
                        "moved gradually",
                        if manual { "manual" } else { "auto" },
                        0.0,
                    );
                } else {
                    recovered(h, pool, from, to, if manual { "manual" } else { "auto" });
                }
                return;
            }
            f.set_ramp(Some(to), share);
        }
        return;
    }
    if f.manual.load(Relaxed) {
        return;
    }

    // 1. The serving level is entirely down: move to the lowest healthy level above.
    if !healthy(serving) {
        let since = *mem.down_since.get_or_insert(now);
        let next = pool
            .levels
            .iter()
            .copied()
            .find(|&l| l > serving && healthy(l));
        if let Some(next) = next {
            let waited = now - since;
            let due =
                s.strategy != FailoverStrategy::Delayed || waited >= s.delay.as_millis() as u64;
            if due {
                f.set_serving(Some(next));
                mem.down_since = None;
                mem.healthy_since.clear();
                let reason = format!("every backend of level {serving} is down");
                activated(
                    h,
                    pool,
                    serving,
                    next,
                    &reason,
                    "auto",
                    waited as f64 / 1000.0,
                );
            }
        }
        return;
    }
    mem.down_since = None;

    // 2. A lower level has been healthy for recovery_interval: traffic returns.
    for &l in pool.levels.iter().filter(|&&l| l < serving) {
        if healthy(l) {
            mem.healthy_since.entry(l).or_insert(now);
        } else {
            mem.healthy_since.remove(&l);
        }
    }
    let recover_to = pool
        .levels
        .iter()
        .copied()
        .filter(|&l| l < serving)
        .find(|l| {
            mem.healthy_since
                .get(l)
                .is_some_and(|&t| now - t >= s.recovery_interval.as_millis() as u64)
        });
    if let Some(to) = recover_to {
        mem.healthy_since.clear();
        if s.strategy == FailoverStrategy::Graceful && !s.ramp.is_zero() {
            f.set_move(Some((serving, to, now)));
            f.set_ramp(Some(to), ramp_share(s, 0));
            tracing::info!(pool = %pool.name, from = serving, to, "traffic moving back gradually");
        } else {
            f.set_serving(Some(to));
            recovered(h, pool, serving, to, "auto");
        }
    }
}

pub(crate) fn event(
    pool: &Pool,
    kind: EventKind,
    from: u32,
    to: u32,
    reason: &str,
    mode: &str,
    duration: f64,
) -> FailoverEvent {
    FailoverEvent {
        event: kind,
        pool: pool.name.clone(),
        from_level: from,
        to_level: to,
        reason: reason.into(),
        mode: mode.into(),
        ts: crate::clock::rfc3339(crate::clock::unix_secs_f64()),
        duration_seconds: (duration * 1000.0).round() / 1000.0,
    }
}

/// Publishes an event: history, process event log, notifications.
pub(crate) fn publish(h: &Handles, pool: &Pool, e: FailoverEvent) {
    let f = &pool.state.failover;
    f.record(&e);
    // One line per event: a `log` notification channel writes it otherwise.
    if !h.notifier.logs_events() {
        tracing::warn!(pool = %e.pool, event = %e.event, from_level = e.from_level, to_level = e.to_level, reason = %e.reason, mode = %e.mode, "failover");
    }
    h.events.record(
        e.event,
        Some(&e.pool),
        None,
        format!(
            "level {} -> {}: {} ({})",
            e.from_level, e.to_level, e.reason, e.mode
        ),
    );
    h.notifier.send(e);
}

pub(crate) fn activated(
    h: &Handles,
    pool: &Pool,
    from: u32,
    to: u32,
    reason: &str,
    mode: &str,
    duration: f64,
) {
    let f = &pool.state.failover;
    if f.since_ms.load(Relaxed) == 0 {
        f.since_ms.store(now_ms(), Relaxed);
    }
    f.events_total.fetch_add(1, Relaxed);
    f.last_activation_unix
        .store(crate::clock::unix_secs_f64() as u64, Relaxed);
    publish(
        h,
        pool,
        event(
            pool,
            EventKind::FailoverActivated,
            from,
            to,
            reason,
            mode,
            duration,
        ),
    );
}

pub(crate) fn recovered(h: &Handles, pool: &Pool, from: u32, to: u32, mode: &str) {
    let f = &pool.state.failover;
    let since = f.since_ms.load(Relaxed);
    let lasted = if since == 0 {
        0
    } else {
        now_ms().saturating_sub(since)
    };
    let primary = pool.levels.first().copied().unwrap_or(0);
    if to == primary {
        f.since_ms.store(0, Relaxed);
        f.last_duration_ms.store(lasted, Relaxed);
    }
    f.events_total.fetch_add(1, Relaxed);
    let reason = format!("level {to} healthy again");
    publish(
        h,
        pool,
        event(
            pool,
            EventKind::FailoverRecovered,
            from,
            to,
            &reason,
            mode,
            lasted as f64 / 1000.0,
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use arc_swap::ArcSwap;

    struct Lab {
        current: Current,
        handles: Handles,
        _controllers: Controllers,
    }

    impl Lab {
        fn start(failover: &str) -> Lab {
            let text = format!(
                "
pools:
  - name: p
    backends:
      - \"10.0.0.1:80\"
      - {{ address: \"10.0.0.2:80\", failover_level: 1 }}
routes: [{{pool: p}}]
failover:
  check_interval: 1s
  recovery_interval: 10s
{failover}
  notification: {{ enabled: false }}
"
            );
            let config = load_str(&text, "test", std::path::Path::new(".")).expect("valid");
            let snapshot = Snapshot::compile(Arc::new(config), 1, None).expect("compiles");
            let current: Current = Arc::new(ArcSwap::from_pointee(snapshot));
            let handles = Handles {
                snapshot: current.clone(),
                events: Arc::new(Events::default()),
                notifier: Arc::new(Notifier::default()),
            };
            let mut controllers = Controllers::new(handles.clone());
            controllers.reconcile(&current.load());
            Lab {
                current,
                handles,
                _controllers: controllers,
            }
        }

        fn pool(&self) -> Arc<Pool> {
            self.current.load().pools[0].clone()
        }

        /// The primary's health changes, as a health checker reports it.
        fn primary(&self, up: bool) {
            let p = self.pool();
            p.members[0].backend.set_active_up(up);
            p.state.health_changed.notify_one();
        }

        fn serving(&self) -> Option<u32> {
            self.pool().state.failover.serving()
        }

        fn count(&self, kind: EventKind) -> usize {
            self.handles
                .events
                .recent(100)
                .iter()
                .filter(|e| e.kind == kind)
                .count()
        }
    }

    async fn wait(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn immediate_switches_at_once_and_returns_after_recovery_interval() {
        let lab = Lab::start("  strategy: immediate");
        wait(Duration::from_millis(10)).await;
        assert_eq!(lab.serving(), Some(0));
        lab.primary(false);
        wait(Duration::from_millis(10)).await;
        assert_eq!(lab.serving(), Some(1));
        assert_eq!(lab.count(EventKind::FailoverActivated), 1);
        lab.primary(true);
        wait(Duration::from_secs(5)).await;
        assert_eq!(lab.serving(), Some(1), "back before recovery_interval");
        wait(Duration::from_secs(7)).await;
        assert_eq!(lab.serving(), Some(0));
        assert_eq!(lab.count(EventKind::FailoverRecovered), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_ignores_an_outage_shorter_than_the_delay() {
        let lab = Lab::start("  strategy: delayed\n  delay: 5s");
        wait(Duration::from_millis(10)).await;
        lab.primary(false);
        wait(Duration::from_secs(3)).await;
        assert_eq!(lab.serving(), Some(0), "switched within the delay");
        lab.primary(true);
        wait(Duration::from_secs(10)).await;
        assert_eq!(lab.serving(), Some(0));
        assert_eq!(lab.count(EventKind::FailoverActivated), 0);
        // A longer outage switches once the delay has passed.
        lab.primary(false);
        wait(Duration::from_secs(4)).await;
        assert_eq!(lab.serving(), Some(0));
        wait(Duration::from_secs(2)).await;
        assert_eq!(lab.serving(), Some(1));
        assert_eq!(lab.count(EventKind::FailoverActivated), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_brings_traffic_back_in_steps() {
        let lab = Lab::start("  strategy: graceful\n  ramp: 10s");
        wait(Duration::from_millis(10)).await;
        lab.primary(false);
        wait(Duration::from_millis(10)).await;
        assert_eq!(lab.serving(), Some(1), "a dead level is left at once");
        lab.primary(true);
        wait(Duration::from_millis(10_500)).await;
        let f = &lab.pool().state.failover;
        let (to, first) = f.ramp().expect("moving back");
        assert_eq!(to, 0);
        wait(Duration::from_secs(5)).await;
        let (_, later) = f.ramp().expect("still moving");
        assert!(later > first, "{first} -> {later}");
        wait(Duration::from_secs(6)).await;
        assert_eq!(lab.serving(), Some(0));
        assert_eq!(f.ramp(), None);
        assert_eq!(lab.count(EventKind::FailoverRecovered), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn manual_activation_holds_until_deactivated() {
        let lab = Lab::start("  strategy: immediate");
        wait(Duration::from_millis(10)).await;
        let p = lab.pool();
        let s = settings_for(&lab.current.load().config, &p);
        assert_eq!(super::super::manual::activate(&lab.handles, &p, &s), Ok(1));
        wait(Duration::from_secs(30)).await;
        assert_eq!(
            lab.serving(),
            Some(1),
            "the controller left a manual move alone"
        );
        assert_eq!(super::super::manual::deactivate(&lab.handles, &p, &s), 0);
        assert_eq!(lab.serving(), Some(0));
        assert_eq!(lab.count(EventKind::FailoverRecovered), 1);
    }
}
