//! One try of a request on one backend, and sending it.

use super::request::Prepared;
use crate::upstream::backend::Backend;
use crate::upstream::body::UpstreamBody;
use crate::upstream::client::{self, Answered, Conn, EncodedHead, Fate, Returned, SendError};
use crate::upstream::in_flight::{Awaiting, InFlight};
use crate::upstream::pool::Pool;
use http::Request;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// The attempts of a hedged round (one or two) and how each ended.
pub(super) type Outcomes = Vec<(Attempt, client::SendResult)>;

/// One try of a request on one backend.
pub(super) struct Attempt {
    pub(super) idx: usize,
    pub(super) backend: Arc<Backend>,
    /// Counts the request in flight on the backend until it really ends.
    pub(super) guard: InFlight,
    /// When the attempt started, as [`crate::clock::now_us`] gives it.
    pub(super) sent_us: u64,
    /// When its backend answered, the same way (0 until then): the reading
    /// that stamps the backend's answer also times the attempt. Sends that
    /// own their backend (hedges) leave it 0.
    pub(super) answered_us: AtomicU64,
}

impl Attempt {
    /// Counts the request in flight on the member and shapes it for its protocol
    /// (in place: the request is large, and moving it costs a copy each way).
    /// `slot`: the in-flight count already reserved on a capped member (hedges
    /// have none: they may pass a cap). `now_us`: the time, as
    /// [`crate::clock::now_us`] gives it, when the caller has it; else the
    /// clock is read.
    pub(super) fn start(
        pool: &Pool,
        idx: usize,
        request: &mut Request<UpstreamBody>,
        p: &Prepared,
        slot: Option<InFlight>,
        now_us: Option<u64>,
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
        // One reading for the in-flight count and the attempt's timing.
        let sent_us = now_us.unwrap_or_else(crate::clock::now_us);
        Attempt {
            idx,
            guard: slot.unwrap_or_else(|| {
                InFlight::new(
                    backend.clone(),
                    (pool.members[idx].max_requests > 0).then(|| pool.state.clone()),
                    sent_us,
                )
            }),
            backend,
            sent_us,
            answered_us: AtomicU64::new(0),
        }
    }
}

pub(super) type SendFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = client::SendResult> + Send>>;

/// Sends the attempt's request, which stays in `slot` unless it is lost (see
/// [`client::send_in`]), its answer into `answer` (empty); when a pooled
/// connection loses it unanswered, sends it once more on a new connection
/// (see [`again`]).
pub(super) async fn send(
    attempt: &Attempt,
    slot: &mut Option<Request<UpstreamBody>>,
    answer: &mut Option<Answered>,
    p: &Prepared,
    nth: u64,
    timeouts: crate::config::Timeouts,
) -> client::SlotResult {
    let encoded = &p.encoded;
    let (backend, at) = (&attempt.backend, Some(&attempt.answered_us));
    let result = send_tracked(backend, slot, answer, encoded, timeouts, Conn::Pooled, at).await;
    if let Err((e, fate)) = &result
        && again(e, *fate, slot, backend, p, nth)
    {
        send_tracked(backend, slot, answer, encoded, timeouts, Conn::New, at).await
    } else {
        result
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
    Box::pin(async move {
        let (mut slot, mut answer) = (Some(request), None);
        let (s, a) = (&mut slot, &mut answer);
        match send_tracked(&backend, s, a, &encoded, timeouts, conn, None).await {
            Ok(()) => answer.ok_or_else(client::unanswered),
            Err((e, fate)) => Err((e, client::give_back(fate, &mut slot))),
        }
    })
}

/// Whether to send again after a failed send that ended in `e` with its
/// request's `fate`, for the `nth` send of its body: when the backend closed
/// a pooled connection before any answer to it and sending it twice is
/// harmless. `slot` then holds the request the send gave back, or one rebuilt
/// the way a retry rebuilds it. Not a failed try: the backend is not blamed,
/// no retry is counted.
pub(super) fn again(
    e: &SendError,
    fate: Fate,
    slot: &mut Option<Request<UpstreamBody>>,
    backend: &Backend,
    p: &Prepared,
    nth: u64,
) -> bool {
    let SendError::Closed(e) = e else {
        return false;
    };
    if !p.resendable() {
        return false;
    }
    if fate == Fate::Lost || slot.is_none() {
        *slot = p.rebuild(nth);
    }
    let Some(request) = slot.as_mut() else {
        return false;
    };
    p.out
        .address(request, backend.address.scheme, &backend.address.key);
    tracing::debug!(backend = %backend.key(), error = %e, "pooled connection closed by the backend; sending again on a new one");
    true
}

/// [`again`] for a send that owns its request (a hedged one): the request
/// to send again, taken from `result`.
pub(super) fn again_owned(
    result: &mut client::SendResult,
    backend: &Backend,
    p: &Prepared,
    nth: u64,
) -> Option<Request<UpstreamBody>> {
    let Err((e @ SendError::Closed(_), returned)) = result else {
        return None;
    };
    if !p.resendable() {
        return None;
    }
    let (fate, mut slot) = match std::mem::replace(returned, Returned::Lost) {
        Returned::Lost => (Fate::Lost, None),
        Returned::Unsent(r) => (Fate::Unsent, Some(r)),
        Returned::Sent(r) => (Fate::Sent, Some(r)),
    };
    again(e, fate, &mut slot, backend, p, nth).then_some(())?;
    slot
}

/// Sends, keeping the request counted as waiting for an answer until it has one;
/// the time of an answer goes to `answered` too.
async fn send_tracked(
    backend: &Arc<Backend>,
    slot: &mut Option<Request<UpstreamBody>>,
    answer: &mut Option<Answered>,
    encoded: &EncodedHead,
    timeouts: crate::config::Timeouts,
    conn: Conn,
    answered: Option<&AtomicU64>,
) -> client::SlotResult {
    let waiting = Awaiting::new(backend.clone());
    let result = client::send_in(backend, slot, answer, encoded, &timeouts, conn).await;
    if matches!(&result, Ok(_) | Err((SendError::Exchange(_), _))) {
        let now_us = crate::clock::now_us();
        waiting.answered(now_us);
        if let Some(at) = answered {
            at.store(now_us, Relaxed);
        }
    }
    result
}
