//! Says when a passive ejection ends. An ejection is a deadline on the backend
//! (`passive_health.fail_duration` after the failures), so nothing happens at
//! the moment it passes; this task looks twice a second, logs the return,
//! records a `backend.returned` event and wakes the pool's failover controller,
//! once per ejection.

use crate::events::{EventKind, Events};
use crate::snapshot::{Current, Snapshot};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Runs until `stop`.
pub(crate) async fn watch(snapshot: Current, events: Arc<Events>, stop: CancellationToken) {
    // Backends (by identity) that were ejected at the last look.
    let mut ejected: HashSet<usize> = HashSet::new();
    loop {
        look(&snapshot.load(), &events, &mut ejected);
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn look(rt: &Snapshot, events: &Events, ejected: &mut HashSet<usize>) {
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
            events.record(
                EventKind::BackendReturned,
                Some(&pool.name),
                Some(m.backend.key()),
                message,
            );
            pool.state.health_changed.notify_one();
        }
    }
    *ejected = still;
}
