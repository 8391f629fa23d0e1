//! Phase 4: forward the request. Pick a backend (the pool's rules, see
//! `upstream::pick`), wait in the pool's queue while every backend is at its cap,
//! send, and on failure try another backend while the retry policy allows;
//! a pool that hedges races a second backend against a slow first one.

use super::attempt::{self, Attempt};
use super::hedge;
use super::request::Prepared;
use super::route::Routed;
use super::{ConnCtx, Refusal, RequestCtx};
use crate::events::EventKind;
use crate::upstream::backend::Backend;
use crate::upstream::body::UpstreamBody;
use crate::upstream::client::{self, Answered, Returned, SendError};
use crate::upstream::in_flight::InFlight;
use crate::upstream::pick::{Pick, Tried};
use crate::upstream::pool::Pool;
use http::{Request, StatusCode};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// The attempt whose backend answered; its answer (`client::Answered`) is
/// kept apart, where the send put it.
pub(super) struct Won {
    pub(super) attempt: Attempt,
    pub(super) client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    pub(super) client_version: http::Version,
}

/// The state of the tries of one request.
struct Tries<'r> {
    tried: Tried,
    attempts: u32,
    /// The status and reason of the last failure, for the final answer.
    last_error: Option<(StatusCode, String)>,
    /// A backend answered with something that is not HTTP: no retry, 502.
    invalid_response: bool,
    /// The request when it can be sent as is (nothing of it was sent yet);
    /// while an attempt is on its way, its request, lent to the send (moved
    /// down the layers of a send, it was copied at each). The place is the
    /// caller's, where `request::prepare` put the first request.
    pending: &'r mut Option<Request<UpstreamBody>>,
    /// A bodiless request that was sent and came back: a retry after it was
    /// sent sends it again instead of a rebuilt one. Boxed: it is rare, and
    /// an empty place of a request's size was copied whole into the tries.
    resend: Option<Box<Request<UpstreamBody>>>,
    queue_deadline: Option<Instant>,
    /// Retries stop here.
    deadline: Instant,
    /// The request's start is still now (see `RequestCtx::start_is_now`):
    /// until the first attempt, or a wait.
    start_is_now: bool,
}

/// Forwards the request in `pending` (see `request::prepare`); the attempt
/// that wins goes into `won` and its answer into `answer` (both empty)
/// rather than returned: the answer is large, and it was copied at each
/// layer it was returned through. The send that gets it writes it there.
pub(super) async fn forward(
    conn: &ConnCtx,
    rc: &mut RequestCtx,
    routed: &Routed<'_>,
    // Borrowed, not moved into this future: it is large.
    p: &mut Prepared,
    pending: &mut Option<Request<UpstreamBody>>,
    won: &mut Option<Won>,
    answer: &mut Option<Answered>,
) -> Result<(), Refusal> {
    debug_assert!(
        won.is_none() && answer.is_none(),
        "forward answers into empty places"
    );
    let pool = routed.pool;
    let mut st = Tries {
        tried: Tried::default(),
        attempts: 0,
        last_error: None,
        invalid_response: false,
        pending,
        resend: None,
        queue_deadline: None,
        deadline: rc.done.started + pool.retries.try_duration,
        start_is_now: std::mem::take(&mut rc.start_is_now),
    };
    pool.state.earn_hedge();
    // Only requests without a body, of a method that may be retried after it
    // was sent, are hedged.
    let hedge_after = if p.retry_after_send && p.body_is_empty {
        pool.hedge_delay()
    } else {
        None
    };
    let winner = loop {
        let Some((idx, slot)) = choose(pool, routed, p, &mut st).await? else {
            break None;
        };
        if !next_request(p, &mut st) {
            break None;
        }
        st.attempts += 1;
        if st.attempts > 1 {
            pool.state.retries.fetch_add(1, Relaxed);
        }
        // The request's start is the first attempt's when nothing waited in
        // between: one clock read less.
        let now_us = std::mem::take(&mut st.start_is_now)
            .then(|| crate::clock::us_of(rc.done.started.into()));
        let first = match st.pending.as_mut() {
            Some(request) => Attempt::start(pool, idx, request, p, slot, now_us),
            None => break None,
        };
        let winner = match hedge_after {
            None => {
                let nth = u64::from(st.attempts);
                let r = attempt::send(&first, st.pending, answer, p, nth, pool.timeouts).await;
                rc.done.attempts = st.attempts;
                // The answer is where it stays; the attempt goes beside it,
                // not through the loop's value first.
                let (e, fate) = match r {
                    Ok(()) => {
                        record_trace(rc, &first, None);
                        *won = Some(Won {
                            attempt: first,
                            client_upgrade: p.client_upgrade.take(),
                            client_version: p.client_version,
                        });
                        return Ok(());
                    }
                    Err(failed) => failed,
                };
                record_trace(rc, &first, Some(&e));
                // Out of `pending` until `failed` sorts out how it ended.
                let returned = client::give_back(fate, st.pending);
                failed(conn, pool, p, &mut st, &first, e, returned)?;
                None
            }
            Some(delay) => {
                let Some(request) = st.pending.take() else {
                    break None;
                };
                let race = hedge::Race {
                    pool,
                    balancer: routed.balancer,
                    prepared: p,
                    deadline: st.deadline,
                };
                let outcomes = race
                    .run((first, request), delay, &mut st.tried, &mut st.attempts)
                    .await;
                rc.done.attempts = st.attempts;
                let mut winner = None;
                for (attempt, r) in outcomes {
                    record_trace(rc, &attempt, r.as_ref().err().map(|(e, _)| e));
                    match r {
                        Ok((resp, lease)) => winner = Some((attempt, resp, lease)),
                        Err((e, returned)) => {
                            failed(conn, pool, p, &mut st, &attempt, e, returned)?
                        }
                    }
                }
                winner
            }
        };
        if let Some(w) = winner {
            break Some(w);
        }
        if !may_retry(pool, p, &st) {
            break None;
        }
    };
    rc.done.attempts = st.attempts;
    match winner {
        Some((attempt, response, lease)) => {
            *answer = Some((response, lease));
            *won = Some(Won {
                attempt,
                client_upgrade: p.client_upgrade.take(),
                client_version: p.client_version,
            });
            Ok(())
        }
        None => {
            let (status, detail) = st
                .last_error
                .unwrap_or((StatusCode::BAD_GATEWAY, "no backend could be tried".into()));
            tracing::debug!(request_id = ?rc.request_id, %status, %detail, "request failed");
            Err(Refusal::new(
                status,
                match status {
                    StatusCode::GATEWAY_TIMEOUT => "backend did not answer in time",
                    _ if st.invalid_response => "backend sent an invalid response",
                    _ => "backend unreachable",
                },
            ))
        }
    }
}

/// The member for the next attempt, with its reserved slot when it is capped;
/// `None` when no further attempt is possible.
async fn choose(
    pool: &Pool,
    routed: &Routed<'_>,
    p: &Prepared,
    st: &mut Tries<'_>,
) -> Result<Option<(usize, Option<InFlight>)>, Refusal> {
    let retry = &pool.retries;
    loop {
        match pool.pick(routed.balancer, &p.key, &st.tried) {
            Pick::Member(i) => {
                // A capped member is reserved before anything is committed to it;
                // if another request took its last slot since the pick, pick again
                // (which queues once every member is full).
                let cap = pool.members[i].max_requests;
                let slot = if cap > 0 {
                    let backend = pool.members[i].backend.clone();
                    match InFlight::reserve(backend, cap, pool.state.clone()) {
                        Some(s) => Some(s),
                        None => continue,
                    }
                } else {
                    None
                };
                st.tried.add(i);
                return Ok(Some((i, slot)));
            }
            Pick::Full => {
                st.start_is_now = false;
                pool.wait_for_room(routed.balancer, &p.key, &st.tried, &mut st.queue_deadline)
                    .await
                    .map_err(|why| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, why))?;
            }
            pick => {
                let can_wait = !retry.try_duration.is_zero()
                    && Instant::now() + retry.try_interval < st.deadline;
                if can_wait && (st.pending.is_some() || p.retry_after_send) {
                    st.start_is_now = false;
                    tokio::time::sleep(retry.try_interval).await;
                    st.tried.clear();
                    continue;
                }
                if st.attempts == 0
                    || matches!(pick, Pick::NoneAvailable) && st.last_error.is_none()
                {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no healthy backend",
                    ));
                }
                return Ok(None);
            }
        }
    }
}

/// Puts the request for the next attempt in `st.pending`: the pending one, or
/// a rebuilt one (only possible with an empty or replayable body); whether
/// there is one.
fn next_request(p: &Prepared, st: &mut Tries<'_>) -> bool {
    if st.pending.is_none() {
        *st.pending = st
            .resend
            .take()
            .map(|r| *r)
            .or_else(|| p.rebuild(u64::from(st.attempts) + 1));
    }
    st.pending.is_some()
}

/// Sorts out how a failed attempt ended: counted against its backend
/// (passive health) unless the client caused it or the backend merely closed
/// a pooled connection; its request, when it came back, kept for the next.
fn failed(
    conn: &ConnCtx,
    pool: &Pool,
    p: &Prepared,
    st: &mut Tries<'_>,
    attempt: &Attempt,
    err: SendError,
    returned: Returned,
) -> Result<(), Refusal> {
    if let Some(s) = &p.stats {
        if s.too_large.load(Relaxed) {
            return Err(Refusal::closing(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body larger than limits.max_body_bytes",
            ));
        }
        if s.stalled.load(Relaxed) {
            conn.proxy
                .telemetry
                .body_read_timeouts
                .fetch_add(1, Relaxed);
            return Err(Refusal::closing(
                StatusCode::REQUEST_TIMEOUT,
                "the request body stalled for limits.body_read_timeout",
            ));
        }
        if s.client_error.load(Relaxed) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "could not read the request body",
            ));
        }
    }
    let status = match err {
        SendError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    if !matches!(err, SendError::Closed(_)) && attempt.backend.record_failure(&pool.passive) {
        ejected(conn, pool, &attempt.backend, &err.to_string());
    }
    tracing::debug!(pool = %pool.name, backend = %attempt.backend.key(), attempt = st.attempts, error = %err, "upstream attempt failed");
    match returned {
        Returned::Unsent(r) => *st.pending = Some(r),
        Returned::Sent(r) if p.out.resend_allowed() => st.resend = Some(Box::new(r)),
        _ => {}
    }
    if matches!(&err, SendError::Exchange(e) if e.is_parse()) {
        st.invalid_response = true;
    }
    st.last_error = Some((status, err.to_string()));
    Ok(())
}

/// Whether one more attempt may follow a failed one.
fn may_retry(pool: &Pool, p: &Prepared, st: &Tries<'_>) -> bool {
    let nothing_sent = st.pending.is_some();
    !st.invalid_response
        && !pool.retries.try_duration.is_zero()
        && Instant::now() < st.deadline
        && (nothing_sent || (p.retry_after_send && p.body_replayable()))
}

/// `error`: how the attempt failed; `None` when it was answered.
fn record_trace(rc: &mut RequestCtx, attempt: &Attempt, error: Option<&SendError>) {
    let Some(t) = rc.done.trace.as_mut() else {
        return;
    };
    t.attempts.push(crate::otlp::Attempt {
        backend: attempt.backend.key().to_string(),
        start: crate::clock::instant_of_us(attempt.sent_us).into_std(),
        end: Instant::now(),
        outcome: match error {
            None => "ok".into(),
            Some(e) => e.to_string(),
        },
    });
}

/// A backend taken out by passive health: logged, an event, and its pool's
/// failover controller woken.
pub(super) fn ejected(conn: &ConnCtx, pool: &Pool, backend: &Backend, reason: &str) {
    tracing::warn!(pool = %pool.name, backend = %backend.key(), %reason, "backend taken out for passive_health.fail_duration");
    conn.proxy.events.record(
        EventKind::BackendEjected,
        Some(&pool.name),
        Some(backend.key()),
        format!(
            "{} failures within {:?}: {reason}",
            pool.passive.max_fails, pool.passive.fail_duration
        ),
    );
    pool.state.health_changed.notify_one();
}

/// Counts the answer of an attempt: latency estimates, passive health, and the
/// finish record (backend, in-flight slot, status).
pub(super) fn account(
    conn: &ConnCtx,
    rc: &mut RequestCtx,
    routed: &Routed<'_>,
    attempt: Attempt,
    status: StatusCode,
) {
    let pool = routed.pool;
    let backend = &attempt.backend;
    // The reading taken when the answer came, if the send kept it (a hedge's
    // does not).
    let answered_us = match attempt.answered_us.load(Relaxed) {
        0 => crate::clock::now_us(),
        us => us,
    };
    let upstream_us = answered_us.saturating_sub(attempt.sent_us);
    backend.observe_latency(upstream_us as f64);
    pool.state.observe_latency(upstream_us as f64);
    if pool.passive.unhealthy_status.matches(status.as_u16())
        && backend.record_failure(&pool.passive)
    {
        ejected(conn, pool, backend, &format!("status {}", status.as_u16()));
    }
    rc.done.backend = Some(attempt.backend);
    rc.done.in_flight = Some(attempt.guard);
    rc.done.upstream_us = Some(upstream_us);
    rc.done.status = status.as_u16();
}
