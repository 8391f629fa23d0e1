//! Says when a passive ejection ends. An ejection is a deadline on the backend
//! (`passive_health.fail_duration` after the failures), so nothing happens at
//! the moment it passes; this task looks twice a second and logs the return
//! (and records a `backend.returned` event) once per ejection.

use crate::app::App;
use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Runs until the app is shut down.
pub async fn watch(app: Weak<App>) {
    // Backends (by identity) that were ejected at the last look.
    let mut ejected: HashSet<usize> = HashSet::new();
    loop {
        let Some(app) = app.upgrade() else { return };
        if app.shutdown.is_cancelled() {
            return;
        }
        look(&app, &mut ejected);
        let stop = app.shutdown.clone();
        drop(app);
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn look(app: &App, ejected: &mut HashSet<usize>) {
    let rt = app.runtime.load();
    let now = crate::clock::now_ms();
    let mut still = HashSet::with_capacity(ejected.len());
    for (pool, m) in rt.backends() {
        let id = Arc::as_ptr(&m.backend) as usize;
        if m.backend.passively_ejected(now) {
            still.insert(id);
        } else if ejected.contains(&id) {
            let message = if m.backend.active_up() {
                "passive ejection over: back in rotation"
            } else {
                "passive ejection over, but its health check still fails"
            };
            tracing::info!(pool = %pool.name, backend = %m.backend.key(), "{message}");
            app.events.record(
                "backend.returned",
                Some(&pool.name),
                Some(m.backend.key()),
                message,
            );
        }
    }
    *ejected = still;
}
