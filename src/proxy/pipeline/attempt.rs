//! One try of a request on one backend, and sending it.

use super::request::Prepared;
use crate::upstream::backend::Backend;
use crate::upstream::body::UpstreamBody;
use crate::upstream::client::{self, Conn, EncodedHead, Returned, SendError};
use crate::upstream::in_flight::{Awaiting, InFlight};
use crate::upstream::pool::Pool;
use http::Request;
use std::sync::Arc;
use std::time::Instant;

/// The attempts of a hedged round (one or two) and how each ended.
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
    /// Counts the request in flight on the member and shapes it for its protocol
    /// (in place: the request is large, and moving it costs a copy each way).
    /// `slot`: the in-flight count already reserved on a capped member (hedges
    /// have none: they may pass a cap).
    pub(super) fn start(
        pool: &Pool,
        idx: usize,
        request: &mut Request<UpstreamBody>,
        p: &Prepared,
        slot: Option<InFlight>,
    ) -> Attempt {
        let backend = pool.members[idx].backend.clone();
        let own = client::own_path(&backend, request);
        // A send that may consume the request needs the copy a rebuild uses.
        if !own && p.out.wants_copy() {
            p.out.keep_copy(request);
        }
        // A head encoded in the request phase goes to a connection of our own
        // as those bytes: the request's target and Host are not read there.
        if !(own && p.encoded.is_encoded()) {
            p.out
                .address(request, backend.address.scheme, &backend.address.key);
        }
        Attempt {
            idx,
            guard: slot.unwrap_or_else(|| {
                InFlight::new(
                    backend.clone(),
                    (pool.members[idx].max_requests > 0).then(|| pool.state.clone()),
                )
            }),
            backend,
            sent_at: Instant::now(),
        }
    }
}

pub(super) type SendFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = client::SendResult> + Send>>;

/// Sends the attempt's request; when a pooled connection loses it unanswered,
/// sends it once more on a new connection (see [`again`]).
///
/// This and the sends below it are plain functions returning a block: an
/// `async fn` keeps its arguments apart from the locals they are moved into
/// when it starts, and the request is large (each layer copied it once more).
pub(super) fn send<'a>(
    attempt: &'a Attempt,
    request: Request<UpstreamBody>,
    p: &'a Prepared,
    nth: u64,
    timeouts: crate::config::Timeouts,
) -> impl Future<Output = client::SendResult> + 'a {
    async move {
        let encoded = &p.encoded;
        let backend = &attempt.backend;
        let mut result = send_tracked(backend, request, encoded, timeouts, Conn::Pooled).await;
        match again(&mut result, backend, p, nth) {
            Some(request) => send_tracked(backend, request, encoded, timeouts, Conn::New).await,
            None => result,
        }
    }
}

/// A send that owns what it needs, so that a hedged loser can finish on its own.
pub(super) fn send_owned(
    backend: Arc<Backend>,
    request: Request<UpstreamBody>,
    encoded: EncodedHead,
    timeouts: crate::config::Timeouts,
    conn: Conn,
) -> SendFuture {
    Box::pin(async move { send_tracked(&backend, request, &encoded, timeouts, conn).await })
}

/// The request to send again after `result`, for the `nth` send of its body:
/// when the backend closed a pooled connection before any answer to it and
/// sending it twice is harmless, it is the request the send gave back, or one
/// rebuilt the way a retry rebuilds it. Not a failed try: the backend is not
/// blamed, no retry is counted.
pub(super) fn again(
    result: &mut client::SendResult,
    backend: &Backend,
    p: &Prepared,
    nth: u64,
) -> Option<Request<UpstreamBody>> {
    let Err((SendError::Closed(e), returned)) = result else {
        return None;
    };
    if !p.resendable() {
        return None;
    }
    let mut request = match std::mem::replace(returned, Returned::Lost) {
        Returned::Sent(r) | Returned::Unsent(r) => r,
        Returned::Lost => p.rebuild(nth)?,
    };
    p.out
        .address(&mut request, backend.address.scheme, &backend.address.key);
    tracing::debug!(backend = %backend.key(), error = %e, "pooled connection closed by the backend; sending again on a new one");
    Some(request)
}

/// Sends, keeping the request counted as waiting for an answer until it has one.
fn send_tracked<'a>(
    backend: &'a Arc<Backend>,
    request: Request<UpstreamBody>,
    encoded: &'a EncodedHead,
    timeouts: crate::config::Timeouts,
    conn: Conn,
) -> impl Future<Output = client::SendResult> + 'a {
    async move {
        let waiting = Awaiting::new(backend.clone());
        let result = client::send(backend, request, encoded, &timeouts, conn).await;
        if matches!(&result, Ok(_) | Err((SendError::Exchange(_), _))) {
            waiting.answered();
        }
        result
    }
}
