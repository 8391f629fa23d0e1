//! What an operator does by hand: force traffic to the backup level, hand
//! control back, or rehearse a failover without moving traffic.

use super::controller::{Handles, activated, event, ramp_share, recovered};
use crate::clock::now_ms;
use crate::config::{FailoverSettings, FailoverStrategy};
use crate::events::EventKind;
use crate::upstream::levels::FailoverEvent;
use crate::upstream::pool::Pool;
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;

/// Manual activation: traffic leaves the primary level for the first backup level
/// (gradually with `graceful`). Returns the target level.
pub(crate) fn activate(h: &Handles, pool: &Pool, s: &FailoverSettings) -> Result<u32, String> {
    let r = move_to_backup(h, pool, s);
    // The controller looks again at once (a gradual move needs its steps).
    pool.state.health_changed.notify_one();
    r
}

fn move_to_backup(h: &Handles, pool: &Pool, s: &FailoverSettings) -> Result<u32, String> {
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
        h.events.record(
            EventKind::FailoverManual,
            Some(&pool.name),
            None,
            format!("moving to level {target} over {:?}", s.ramp),
        );
    } else {
        f.set_serving(Some(target));
        activated(h, pool, serving, target, "manual activation", "manual", 0.0);
    }
    Ok(target)
}

/// Back to automatic: if the primary level is healthy traffic returns to it (at
/// once, or gradually with `graceful`), without waiting for `recovery_interval`.
pub(crate) fn deactivate(h: &Handles, pool: &Pool, s: &FailoverSettings) -> u32 {
    let level = back_to_auto(h, pool, s);
    pool.state.health_changed.notify_one();
    level
}

fn back_to_auto(h: &Handles, pool: &Pool, s: &FailoverSettings) -> u32 {
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
            h.events.record(
                EventKind::FailoverManual,
                Some(&pool.name),
                None,
                format!("returning to level {best} over {:?}", s.ramp),
            );
        } else {
            f.set_serving(Some(best));
            recovered(h, pool, serving, best, "manual");
        }
    } else {
        h.events.record(
            EventKind::FailoverManual,
            Some(&pool.name),
            None,
            "back to automatic",
        );
    }
    best
}

/// Dry run: probes every backup backend now, sends a test notification on every
/// channel, moves no traffic.
pub(crate) async fn rehearse(h: &Handles, p: &Pool) -> Result<Value, String> {
    let primary = p.levels.first().copied().unwrap_or(0);
    let Some(&first_backup) = p.levels.iter().find(|&&l| l > primary) else {
        return Err(format!("pool `{}` has no backup level", p.name));
    };
    let mut report = Vec::new();
    let mut healthy = 0;
    let mut total = 0;
    for m in p.members.iter().filter(|m| m.level > primary) {
        total += 1;
        let check = m.health_check.clone().unwrap_or_default();
        let (ok, why) = match crate::health::probe(&m.backend, &check).await {
            crate::health::Probe::Pass => (true, None),
            crate::health::Probe::Fail(reason) => (false, Some(reason)),
        };
        if ok {
            healthy += 1;
        }
        report.push(json!({
            "address": m.backend.key(),
            "level": m.level,
            "region": m.region,
            "healthy": ok,
            "error": why,
            "checked": check.path,
        }));
    }
    let reason = format!("test: {healthy} of {total} backup backends healthy");
    let e: FailoverEvent = event(
        p,
        EventKind::FailoverTest,
        primary,
        first_backup,
        &reason,
        "manual",
        0.0,
    );
    p.state.failover.record(&e);
    h.events
        .record(e.event, Some(&p.name), None, e.reason.clone());
    h.notifier.send(e.clone());
    Ok(json!({
        "pool": p.name,
        "ready": healthy > 0,
        "backups": report,
        "event": e,
        "traffic_moved": false,
    }))
}
