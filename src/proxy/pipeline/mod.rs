//! The phases of one request, in order:
//!
//! 1. [`accept`]: request ID, the finish record, framing verdicts, ACME http-01.
//! 2. [`route`]: host and path → route → pool (or split variant); then
//!    [`admit`]: the route's rate limit; and [`hold`]: a body the route wants
//!    whole is read before any backend is involved.
//!    [`cache`] (routes with `cache:`): answer from the route's cache, or go on
//!    and, once the backend answered, store, revalidate or serve stale.
//! 3. [`request`]: request rules: limits, hop-by-hop and forwarding headers, the
//!    route's header edits, the body (streamed, or held for replay).
//! 4. [`forward`]: pick a backend, queue at caps, retry, hedge.
//! 5. [`response`]: response rules, upgrades, and the streamed body whose end
//!    finishes the request (access log, metrics, trace; see `finish`).
//!
//! Each phase is a plain function over the request's context; a phase that
//! cannot go on returns a [`Refusal`], answered with a short error carrying the
//! request ID. A new phase (a cache lookup between rules and forwarding, a cache
//! admission in the response) slots in here.

pub(crate) mod accept;
mod admit;
mod attempt;
mod cache;
mod forward;
mod hedge;
mod hold;
mod request;
mod response;
mod route;
mod tunnel;

use super::body::ProxyBody;
use super::finish::Completion;
use super::guard::GuardState;
use super::headers::{HeadFacts, PeerInfo, Present};
use super::{ProxyContext, respond};
use crate::upstream::body::Inbound;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode, header};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// Per client connection: who is on the other end and how they reached us.
pub(crate) struct ConnCtx {
    pub(crate) proxy: Arc<ProxyContext>,
    pub(crate) peer: PeerInfo,
    /// `http` or `https`, for X-Forwarded-Proto.
    pub(crate) scheme: &'static str,
    /// HTTP/1 framing verdicts from the connection's guard.
    pub(crate) guard: Option<Arc<GuardState>>,
    /// Requests seen on this connection (matches the guard's count).
    pub(crate) served: AtomicU64,
    /// Answers are written by the client side's own HTTP/1.1 path, which
    /// reads a backend's fields in their raw form (`RawHead`) too: the
    /// response rules may then leave them so (see `request::wants_raw_answer`).
    pub(crate) raw_answers: bool,
    /// Whether the peer is one of the snapshot's `trusted_proxies`: asked of
    /// every request from a trusted proxy, it is the same answer until a
    /// reload.
    pub(crate) trusted: PerSnapshot,
}

impl ConnCtx {
    /// Whether the peer is one of `snapshot`'s trusted proxies.
    #[inline]
    pub(crate) fn peer_trusted(&self, snapshot: &crate::snapshot::Snapshot) -> bool {
        !snapshot.trusted_proxies.is_empty()
            && self
                .trusted
                .get(snapshot.generation, || snapshot.is_trusted(self.peer.ip))
    }
}

/// A fact about one connection that follows from the configuration, decided
/// once per snapshot rather than per request. It is kept with the snapshot's
/// generation, which a proxy never gives two snapshots (each reload counts
/// one up), so a request under another snapshot decides it again.
#[derive(Debug, Default)]
pub(crate) struct PerSnapshot(AtomicU64);

impl PerSnapshot {
    /// The fact for the snapshot of `generation`: the one kept for it, else
    /// what `decide` says (then kept).
    pub(crate) fn get(&self, generation: u64, decide: impl FnOnce() -> bool) -> bool {
        // One word, `(generation + 1) << 1 | fact`, so that 0 is "none kept"
        // and a reader never sees one snapshot's key with another's fact.
        // Streams of one HTTP/2 connection under two snapshots may overwrite
        // each other's: the key tells, and the fact is decided again.
        let key = generation.wrapping_add(1) << 1;
        let kept = self.0.load(Relaxed);
        if kept & !1 == key {
            return kept & 1 == 1;
        }
        let fact = decide();
        self.0.store(key | u64::from(fact), Relaxed);
        fact
    }
}

/// One request's state across the phases.
pub(crate) struct RequestCtx {
    pub(crate) request_id: HeaderValue,
    /// The client as logs and `ip_hash` see it (behind trusted proxies: the
    /// address they forwarded).
    pub(crate) client: IpAddr,
    /// The Host the client asked for: the authority of an absolute URI, else the
    /// Host header.
    pub(crate) host: Option<HeaderValue>,
    /// The W3C traceparent to send upstream, when tracing is exported.
    pub(crate) traceparent: Option<HeaderValue>,
    /// Which looked-up fields the client's head holds.
    pub(crate) present: Present,
    /// What the access log, metrics and trace get when the request is over.
    pub(crate) done: Completion,
    /// Nothing has waited since the request started (`done.started`): that
    /// reading of the clock is still now, give or take the proxy's own work
    /// of a few microseconds, and the first attempt starts at it instead of
    /// reading the clock again. A phase that waits (for the body, the cache,
    /// the pool's queue, a retry's interval) before the first attempt
    /// clears it.
    pub(crate) start_is_now: bool,
}

/// Why the proxy answers a request itself instead of forwarding it.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) detail: &'static str,
    /// The connection cannot be trusted to frame another request.
    pub(crate) close: bool,
    /// Seconds for a `Retry-After` header (a 429).
    pub(crate) retry_after: Option<u64>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, detail: &'static str) -> Self {
        Refusal {
            status,
            detail,
            close: false,
            retry_after: None,
        }
    }

    pub(crate) fn closing(status: StatusCode, detail: &'static str) -> Self {
        Refusal {
            status,
            detail,
            close: true,
            retry_after: None,
        }
    }
}

impl RequestCtx {
    /// Answers a refusal: a short error with the request ID, counted and logged
    /// like any other response.
    fn refuse(&mut self, r: Refusal) -> Response<ProxyBody> {
        let mut resp = respond::error(r.status, &self.request_id, r.detail);
        self.done.status = r.status.as_u16();
        self.done.bytes_out = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
        if r.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = r.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// Runs one request through the phases; what its head holds is read from its
/// map first.
pub(crate) fn handle(
    conn: &ConnCtx,
    req: Request<Inbound>,
) -> impl Future<Output = Response<ProxyBody>> + '_ {
    let facts = HeadFacts::of(req.headers());
    // A plain function returning a block: an `async fn` would keep the
    // request it was given apart from the parts it is split into.
    let (mut parts, mut body) = req.into_parts();
    async move { handle_with(conn, &mut parts, &mut body, facts).await }
}

/// Runs one request, lent as its parts and body, through the phases (it
/// stays where its owner built it: moved in, it was copied on its way into
/// the future's box); `facts`: what its head holds, noted while the head
/// became the request (see `HeadFacts`). The body is taken.
pub(crate) async fn handle_with(
    conn: &ConnCtx,
    parts: &mut Parts,
    body: &mut Inbound,
    facts: HeadFacts,
) -> Response<ProxyBody> {
    let snapshot = conn.proxy.snapshot.load_full();
    // The context stays where `accept` built it until the answer takes it.
    let mut context = None;
    let rc = match accept::accept(conn, parts, facts, &snapshot, &mut context) {
        Ok(rc) => rc,
        Err(answered) => return *answered,
    };
    // Where `forward` puts the attempt that wins and where the send puts
    // its answer, until `respond` takes them.
    let (mut won, mut answer) = (None, None);
    let result = async {
        let routed = route::route(conn, rc, parts, &snapshot)?;
        admit::admit(rc, &routed, parts)?;
        let route = routed.route;
        let body = std::mem::replace(body, Inbound::Empty);
        let Some(cache) = &route.cache else {
            let body = if hold::wanted(&routed, &body) {
                rc.start_is_now = false;
                hold::hold(conn, &routed, &snapshot, parts, body).await?
            } else {
                body
            };
            let mut places = request::Places::default();
            let (p, first) =
                request::prepare(conn, rc, &routed, &snapshot, parts, body, &mut places)?;
            forward::forward(conn, rc, &routed, p, first, &mut won, &mut answer).await?;
            return Ok(Outcome::Forwarded(routed, None));
        };
        rc.start_is_now = false;
        let pending = match cache::lookup(conn, rc, &routed, cache, parts).await {
            cache::Lookup::Answered(resp) => return Ok(Outcome::Answered(resp)),
            cache::Lookup::Forward(p) => p,
        };
        // A body the route wants whole is read only once the cache could not answer.
        let mut places = request::Places::default();
        let forwarded = match hold::hold(conn, &routed, &snapshot, parts, body).await {
            Ok(body) => {
                let ps = &mut places;
                match request::prepare(conn, rc, &routed, &snapshot, parts, body, ps) {
                    Ok((p, first)) => {
                        let (w, a) = (&mut won, &mut answer);
                        forward::forward(conn, rc, &routed, p, first, w, a)
                            .await
                            .map(|()| match (w.take(), a.take()) {
                                (Some(w), Some(a)) => (w, a),
                                _ => unreachable!("forward answered into its places"),
                            })
                    }
                    Err(r) => Err(r),
                }
            }
            Err(r) => Err(r),
        };
        match cache::after(conn, rc, &routed, pending, forwarded)? {
            cache::After::Answered(resp) => Ok(Outcome::Answered(resp)),
            cache::After::Respond(w, a, admit) => {
                (won, answer) = (Some(w), Some(a));
                Ok(Outcome::Forwarded(routed, Some(admit)))
            }
        }
    }
    .await;
    match result {
        Ok(Outcome::Forwarded(routed, admit)) => {
            // All filled by the phases, the context by `accept`, the
            // attempt by `forward` and the answer by its send (or given
            // back by the cache's `after`); taken one at a time (a pair
            // of them was copied twice).
            let Some(rc) = context.take() else {
                unreachable!("accept made the context");
            };
            let Some(won) = won.take() else {
                unreachable!("a forwarded request has its attempt");
            };
            let Some(answer) = answer.take() else {
                unreachable!("a forwarded request has its answer");
            };
            response::respond(conn, rc, &routed, won, answer, admit)
        }
        Ok(Outcome::Answered(resp)) => resp,
        Err(r) => rc.refuse(r),
    }
}

/// How a request that was not refused ends.
enum Outcome<'s> {
    /// The answer that won is in `handle_with`'s place for it.
    Forwarded(route::Routed<'s>, Option<cache::Admit>),
    /// Answered without streaming a backend's body (from the cache).
    Answered(Response<ProxyBody>),
}

#[cfg(test)]
mod tests {
    use super::PerSnapshot;
    use std::cell::Cell;

    #[test]
    fn a_fact_is_decided_once_per_snapshot() {
        let fact = PerSnapshot::default();
        let asked = Cell::new(0);
        let ask = |answer: bool| {
            let asked = &asked;
            move || {
                asked.set(asked.get() + 1);
                answer
            }
        };
        assert!(fact.get(1, ask(true)));
        assert!(fact.get(1, ask(false)), "kept for the same snapshot");
        assert_eq!(asked.get(), 1);
        // A reload: the next snapshot's answer, not the kept one.
        assert!(!fact.get(2, ask(false)));
        assert!(!fact.get(2, ask(true)));
        assert_eq!(asked.get(), 2);
        // A request still under the older snapshot decides it again.
        assert!(fact.get(1, ask(true)));
        assert_eq!(asked.get(), 3);
        // Generation 0 is a snapshot like any other, not "none kept".
        let zero = PerSnapshot::default();
        assert!(!zero.get(0, ask(false)));
        assert!(!zero.get(0, ask(true)));
        assert_eq!(asked.get(), 4);
    }
}
