//! One try of a request on one backend, and sending it.

use super::request::Prepared;
use crate::upstream::backend::Backend;
use crate::upstream::body::UpstreamBody;
use crate::upstream::client;
use crate::upstream::in_flight::{Awaiting, InFlight};
use crate::upstream::pool::Pool;
use http::Request;
use std::sync::Arc;
use std::time::Instant;

/// The attempts of one round (one, or two when hedged) and how each ended.
pub(super) type Outcomes = Vec<(Attempt, client::SendResult)>;

/// One try of a request on one backend.
pub(super) struct Attempt {
    pub(super) idx: usize,
    pub(super) backend: Arc<Backend>,
    /// Counts the request in flight on the backend until it really ends.
    pub(super) guard: InFlight,
    pub(super) sent_at: Instant,
}

impl Attempt {
    /// Counts the request in flight on the member and shapes it for its protocol.
    /// `slot`: the in-flight count already reserved on a capped member (hedges
    /// have none: they may pass a cap).
    pub(super) fn start(
        pool: &Pool,
        idx: usize,
        mut request: Request<UpstreamBody>,
        p: &Prepared,
        slot: Option<InFlight>,
    ) -> (Attempt, Request<UpstreamBody>) {
        let backend = pool.members[idx].backend.clone();
        p.out
            .address(&mut request, backend.address.scheme, &backend.address.key);
        let attempt = Attempt {
            idx,
            guard: slot.unwrap_or_else(|| {
                InFlight::new(
                    backend.clone(),
                    (pool.members[idx].max_requests > 0).then(|| pool.state.clone()),
                )
            }),
            backend,
            sent_at: Instant::now(),
        };
        (attempt, request)
    }
}

pub(super) type SendFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = client::SendResult> + Send>>;

/// A send that owns what it needs, so that a hedged loser can finish on its own.
pub(super) fn send_owned(
    backend: Arc<Backend>,
    request: Request<UpstreamBody>,
    timeouts: crate::config::Timeouts,
) -> SendFuture {
    Box::pin(send_tracked(backend, request, timeouts))
}

/// Sends, keeping the request counted as waiting for an answer until it has one.
pub(super) async fn send_tracked(
    backend: Arc<Backend>,
    request: Request<UpstreamBody>,
    timeouts: crate::config::Timeouts,
) -> client::SendResult {
    let waiting = Awaiting::new(backend.clone());
    let result = client::send(&backend, request, &timeouts).await;
    if matches!(&result, Ok(_) | Err((client::SendError::Exchange(_), _))) {
        waiting.answered();
    }
    result
}
