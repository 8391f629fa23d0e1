//! One controller task per pool with backup levels: it watches the levels' health
//! and moves traffic between them according to the pool's strategy.

use super::{FailoverEvent, PoolFailoverState, rfc3339};
use crate::app::App;
use crate::clock::now_ms;
use crate::config::{FailoverSettings, FailoverStrategy};
use crate::upstream::pool::Pool;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Steps of a gradual (graceful) move.
const RAMP_STEPS: u64 = 10;

#[derive(Default)]
pub struct Controllers {
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
pub fn settings_for(app_config: &crate::config::Config, pool: &Pool) -> FailoverSettings {
    pool.config.failover.apply_to(&app_config.failover.settings)
}

impl Controllers {
    /// Starts controllers for pools that have backups, restarts those whose
    /// settings changed, and stops the rest (their pools then follow health alone).
    pub fn reconcile(&mut self, app: &Arc<App>) {
        let rt = app.runtime.load_full();
        let mut wanted = HashMap::new();
        for p in &rt.pools {
            let s = settings_for(&rt.config, p);
            if p.levels.len() > 1 && s.enabled {
                p.state
                    .failover
                    .hold
                    .store(s.strategy == FailoverStrategy::Delayed, Relaxed);
                wanted.insert(p.name.clone(), s);
            } else {
                p.state.failover.hold.store(false, Relaxed);
                p.state.failover.set_serving(None);
                p.state.failover.set_move(None);
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
            let task = tokio::spawn(run(Arc::downgrade(app), name.clone(), s.clone()));
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

async fn run(app: Weak<App>, pool_name: String, s: FailoverSettings) {
    let mut mem = Memory::default();
    let mut health = match app.upgrade() {
        Some(a) => a.events.subscribe(),
        None => return,
    };
    loop {
        let tick = {
            let Some(app) = app.upgrade() else { return };
            let rt = app.runtime.load_full();
            let Some(pool) = rt.pool(&pool_name) else {
                return;
            };
            evaluate(&app, pool, &s, &mut mem);
            match pool.state.failover.current_move() {
                Some(_) => s.check_interval.min(step_len(&s)),
                None => s.check_interval,
            }
        };
        // Evaluate again after the interval, or at once when a backend of this pool
        // changes health or an operator acts.
        let deadline = tokio::time::sleep(tick);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                e = health.recv() => match e {
                    Ok(e) if e.pool.as_deref() == Some(pool_name.as_str())
                        && (e.kind.starts_with("backend.") || e.kind == "failover.manual") => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(_) => return,
                },
            }
        }
    }
}

fn step_len(s: &FailoverSettings) -> Duration {
    (s.ramp / RAMP_STEPS as u32).max(Duration::from_millis(10))
}

/// Share (per mille) reached `elapsed` into a ramp: 10% at once, +10% each step.
fn ramp_share(s: &FailoverSettings, elapsed_ms: u64) -> u32 {
    let step = step_len(s).as_millis().max(1) as u64;
    (((elapsed_ms / step) + 1).min(RAMP_STEPS) * (1000 / RAMP_STEPS)) as u32
}

fn evaluate(app: &App, pool: &Pool, s: &FailoverSettings, mem: &mut Memory) {
    let f = &pool.state.failover;
    let now = now_ms();
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
                        app,
                        pool,
                        from,
                        to,
                        "moved gradually",
                        if manual { "manual" } else { "auto" },
                        0.0,
                    );
                } else {
                    recovered(app, pool, from, to, if manual { "manual" } else { "auto" });
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
                    app,
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
            recovered(app, pool, serving, to, "auto");
        }
    }
}

fn event(
    pool: &Pool,
    kind: &str,
    from: u32,
    to: u32,
    reason: &str,
    mode: &str,
    duration: f64,
) -> FailoverEvent {
    FailoverEvent {
        event: kind.into(),
        pool: pool.name.clone(),
        from_level: from,
        to_level: to,
        reason: reason.into(),
        mode: mode.into(),
        ts: rfc3339(crate::clock::unix_secs_f64()),
        duration_seconds: (duration * 1000.0).round() / 1000.0,
    }
}

/// Publishes an event: history, process event log, notifications.
pub fn publish(app: &App, pool: &Pool, e: FailoverEvent) {
    let f: &PoolFailoverState = &pool.state.failover;
    f.record(&e);
    // One line per event: a `log` notification channel writes it otherwise.
    if !app.notifier.logs_events() {
        tracing::warn!(pool = %e.pool, event = %e.event, from_level = e.from_level, to_level = e.to_level, reason = %e.reason, mode = %e.mode, "failover");
    }
    app.events.record(
        &e.event,
        Some(&e.pool),
        None,
        format!(
            "level {} -> {}: {} ({})",
            e.from_level, e.to_level, e.reason, e.mode
        ),
    );
    app.notifier.send(e);
}

pub fn activated(
    app: &App,
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
        app,
        pool,
        event(pool, "failover.activated", from, to, reason, mode, duration),
    );
}

pub fn recovered(app: &App, pool: &Pool, from: u32, to: u32, mode: &str) {
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
        app,
        pool,
        event(
            pool,
            "failover.recovered",
            from,
            to,
            &reason,
            mode,
            lasted as f64 / 1000.0,
        ),
    );
}

/// Manual activation: traffic leaves the primary level for the first backup level
/// (gradually with `graceful`). Returns the target level.
pub fn manual_activate(app: &App, pool: &Pool, s: &FailoverSettings) -> Result<u32, String> {
    let f = &pool.state.failover;
    let primary = *pool.levels.first().ok_or("the pool has no backends")?;
    let Some(&target) = pool.levels.iter().find(|&&l| l > primary) else {
        return Err(format!(
            "pool `{}` has no backup level (set failover_level or failover: true on a backend)",
            pool.name
        ));
    };
    f.manual.store(true, Relaxed);
    let serving = f.serving().unwrap_or(primary);
    if serving >= target {
        return Ok(serving);
    }
    if s.strategy == FailoverStrategy::Graceful && !s.ramp.is_zero() {
        // The controller performs the steps; announce it so it wakes up now.
        f.set_move(Some((serving, target, now_ms())));
        f.set_ramp(Some(target), ramp_share(s, 0));
        app.events.record(
            "failover.manual",
            Some(&pool.name),
            None,
            format!("moving to level {target} over {:?}", s.ramp),
        );
    } else {
        f.set_serving(Some(target));
        activated(
            app,
            pool,
            serving,
            target,
            "manual activation",
            "manual",
            0.0,
        );
    }
    Ok(target)
}

/// Back to automatic: if the primary level is healthy traffic returns to it (at
/// once, or gradually with `graceful`), without waiting for `recovery_interval`.
pub fn manual_deactivate(app: &App, pool: &Pool, s: &FailoverSettings) -> u32 {
    let f = &pool.state.failover;
    let now = now_ms();
    f.manual.store(false, Relaxed);
    let primary = pool.levels.first().copied().unwrap_or(0);
    let serving = f.serving().unwrap_or(primary);
    f.set_move(None);
    let best = pool.healthy_level(now).unwrap_or(serving);
    if best < serving {
        if s.strategy == FailoverStrategy::Graceful && !s.ramp.is_zero() {
            f.set_move(Some((serving, best, now)));
            f.set_ramp(Some(best), ramp_share(s, 0));
            app.events.record(
                "failover.manual",
                Some(&pool.name),
                None,
                format!("returning to level {best} over {:?}", s.ramp),
            );
        } else {
            f.set_serving(Some(best));
            recovered(app, pool, serving, best, "manual");
        }
    } else {
        app.events.record(
            "failover.manual",
            Some(&pool.name),
            None,
            "back to automatic",
        );
    }
    best
}
