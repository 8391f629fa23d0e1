//! Counting what a backend has to do: a request in flight (from the moment it is
//! committed to the backend until it ends, tunnels included) and a request
//! waiting for response headers (what stall steering and p2c look at).

use super::backend::Backend;
use super::pool::PoolState;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// One request in flight on a backend: counted from creation until dropped.
pub struct InFlight {
    backend: Arc<Backend>,
    started_us: u64,
    /// The pool to tell when this request ends, if the backend has a cap and
    /// requests may be queued for it.
    queue: Option<Arc<PoolState>>,
}

impl InFlight {
    /// `started_us`: now, as [`crate::clock::now_us`] gives it (the caller's
    /// own reading, which it needs too).
    pub fn new(backend: Arc<Backend>, queue: Option<Arc<PoolState>>, started_us: u64) -> Self {
        backend.in_flight.fetch_add(1, Relaxed);
        Self::counted(backend, queue, started_us)
    }

    /// Takes one of the backend's `cap` slots, or None when all are taken: the
    /// check and the count are one atomic step, so a cap is never passed.
    pub fn reserve(backend: Arc<Backend>, cap: u32, queue: Arc<PoolState>) -> Option<Self> {
        let mut now = backend.in_flight.load(Relaxed);
        loop {
            if now >= cap {
                return None;
            }
            match backend
                .in_flight
                .compare_exchange_weak(now, now + 1, Relaxed, Relaxed)
            {
                Ok(_) => {
                    let started_us = crate::clock::now_us();
                    return Some(Self::counted(backend, Some(queue), started_us));
                }
                Err(seen) => now = seen,
            }
        }
    }

    /// The rest of the bookkeeping, once `in_flight` counts this request.
    fn counted(backend: Arc<Backend>, queue: Option<Arc<PoolState>>, started_us: u64) -> Self {
        backend
            .outstanding_since_sum_us
            .fetch_add(started_us, Relaxed);
        backend.requests.fetch_add(1, Relaxed);
        InFlight {
            backend,
            started_us,
            queue,
        }
    }
}

/// A request sent to a backend whose response headers have not arrived yet.
pub struct Awaiting(Arc<Backend>);

impl Awaiting {
    pub fn new(backend: Arc<Backend>) -> Self {
        backend.awaiting.fetch_add(1, Relaxed);
        Awaiting(backend)
    }

    /// The backend answered (headers, or an error of its own making) at
    /// `now_us` (as [`crate::clock::now_us`] gives it).
    pub fn answered(self, now_us: u64) {
        self.0.last_answer_us.store(now_us, Relaxed);
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        self.0.awaiting.fetch_sub(1, Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend
            .outstanding_since_sum_us
            .fetch_sub(self.started_us, Relaxed);
        self.backend.in_flight.fetch_sub(1, Relaxed);
        if let Some(pool) = &self.queue {
            pool.slot_freed.notify_one();
        }
    }
}
