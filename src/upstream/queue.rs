//! A pool's queue: where requests wait while every backend that could take them
//! is at its `max_requests` (as with HAProxy's `maxconn` on a server).

use super::balance::{Balancer, PickKey};
use super::pick::{Pick, Tried};
use super::pool::Pool;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Instant;

impl Pool {
    /// Waits until a member below its cap may take the request. The wait is
    /// bounded by the queue's timeout, counted from the first time this request
    /// queued (`deadline` keeps it across calls); a full queue refuses at once.
    pub(crate) async fn wait_for_room(
        &self,
        balancer: &Balancer,
        key: &PickKey<'_>,
        tried: &Tried,
        deadline: &mut Option<Instant>,
    ) -> Result<(), &'static str> {
        let Some(queue) = self.queue else {
            return Ok(());
        };
        let state = &self.state;
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + queue.timeout);
        if state.queued.fetch_add(1, Relaxed) >= queue.size {
            state.queued.fetch_sub(1, Relaxed);
            state.queue_rejected.fetch_add(1, Relaxed);
            return Err("every backend is at its max_requests and the queue is full");
        }
        let _queued = Queued(&state.queued);
        let freed = state.slot_freed.notified();
        tokio::pin!(freed);
        // Registered before looking again, so that a slot freed in between is not
        // missed.
        freed.as_mut().enable();
        if !matches!(self.pick(balancer, key, tried), Pick::Full) {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline.into(), freed).await {
            Ok(()) => Ok(()),
            Err(_) => {
                state.queue_rejected.fetch_add(1, Relaxed);
                Err("no backend below its max_requests within the queue timeout")
            }
        }
    }
}

/// Counts a request as waiting in a pool's queue while it exists.
struct Queued<'a>(&'a AtomicU32);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
