//! Phase 3: the request rules. Limits known from the head, hop-by-hop removal,
//! the forwarding headers and request ID, the route's header edits, and the body:
//! streamed to the backend, or held (up to a bound) when it may have to be sent
//! again to another backend.

use super::route::Routed;
use super::{ConnCtx, Refusal, RequestCtx};
use crate::config::{HashKey, Scheme};
use crate::proxy::headers::{self as hdr, X_REQUEST_ID};
use crate::snapshot::{Route, Snapshot};
use crate::upstream::balance::PickKey;
use crate::upstream::body::{BodyStats, ClientBody, Inbound, Replay, UpstreamBody};
use crate::upstream::client::{EncodedHead, states_length};
use crate::upstream::h1::conn::encode_head;
use bytes::Bytes;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version, header};
use http_body::Body as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

/// Where [`prepare`] puts what it makes, in the caller's future: both are
/// large, and each move of them was a copy.
#[derive(Default)]
pub(super) struct Places {
    pub(super) prepared: Option<Prepared>,
    /// The request as first sent, lent to the sends from here (see
    /// `forward`); a retry after it was sent rebuilds it from the prepared
    /// `out` (and `replay`).
    pub(super) first: Option<Request<UpstreamBody>>,
}

/// What a retry needs to send the request again, and how it was shaped for
/// the backends.
pub(super) struct Prepared {
    pub(super) out: Outgoing,
    pub(super) replay: Option<Replay>,
    /// A body read whole before the request went on, kept to send again
    /// exactly when a streamed one would be held for replay.
    pub(super) whole: Option<Bytes>,
    pub(super) body_is_empty: bool,
    /// The request may go to another backend after it was sent.
    pub(super) retry_after_send: bool,
    pub(super) key: PickKey<'static>,
    /// Set when the body is counted (access log) or bounded (max_body_bytes).
    pub(super) stats: Option<Arc<BodyStats>>,
    /// The client's side of a protocol switch (WebSocket), when it asked for one.
    pub(super) client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    pub(super) client_version: Version,
    /// The head as every backend of ours gets it, when it is encoded once
    /// here (bodiless requests, and whole bodies of stated length; see
    /// `EncodedHead`).
    pub(super) encoded: EncodedHead,
}

impl Prepared {
    /// The request built again from its first byte, for the `nth` send of its
    /// body: possible with an empty body or one still held whole, when the
    /// headers were kept.
    pub(super) fn rebuild(&self, nth: u64) -> Option<Request<UpstreamBody>> {
        if self.body_is_empty {
            return self.out.build(UpstreamBody::Empty);
        }
        if let Some(b) = &self.whole {
            return self.out.build(UpstreamBody::Full(b.clone()));
        }
        match &self.replay {
            Some(r) if r.replayable() => self.out.build(UpstreamBody::Replay(r.reader(nth))),
            _ => None,
        }
    }

    /// Whether sending the request twice is harmless, so that one a backend's
    /// pooled connection lost unanswered may go out again: an idempotent method
    /// without a body, or a body held for retries (its method is in the pool's
    /// `retries.methods`).
    pub(super) fn resendable(&self) -> bool {
        (self.body_is_empty && self.out.method.is_idempotent())
            || self.replay.is_some()
            || self.whole.is_some()
    }

    /// Whether the whole body can still be sent again: none, one read whole,
    /// or one held for replay that fit its bound.
    pub(super) fn body_replayable(&self) -> bool {
        self.body_is_empty
            || self.whole.is_some()
            || self.replay.as_ref().is_some_and(Replay::replayable)
    }
}

/// Everything needed to (re)build the upstream request for one more attempt.
pub(super) struct Outgoing {
    pub(super) method: Method,
    /// The request may be rebuilt after it was sent (a retry, or a send again
    /// after a pooled connection lost it).
    rebuildable: bool,
    /// The headers as prepared, kept for rebuilding only when a send may
    /// consume the request: a bodiless request on a connection of our own
    /// comes back whole from a failed send, so it needs no copy (see
    /// [`Outgoing::keep_copy`]).
    headers: OnceLock<HeaderMap>,
    path: PathAndQuery,
    /// The Host the client asked for: the backend sees it as Host / :authority.
    host: Option<HeaderValue>,
}

impl Outgoing {
    pub(super) fn build(&self, body: UpstreamBody) -> Option<Request<UpstreamBody>> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = self.headers.get()?.clone();
        Some(req)
    }

    /// Keeps a copy of `req`'s headers (not yet addressed to a backend) for
    /// rebuilding, unless one is kept already or none is needed.
    pub(super) fn keep_copy(&self, req: &Request<UpstreamBody>) {
        if self.rebuildable && self.headers.get().is_none() {
            let _ = self.headers.set(req.headers().clone());
        }
    }

    /// Whether a sent request that came back may be sent again in place of a
    /// rebuilt one.
    pub(super) fn resend_allowed(&self) -> bool {
        self.rebuildable
    }

    /// Whether [`Outgoing::keep_copy`] would copy.
    pub(super) fn wants_copy(&self) -> bool {
        self.rebuildable && self.headers.get().is_none()
    }

    /// Makes `req` fit the protocol of the backend it is about to go to.
    pub(super) fn address(
        &self,
        req: &mut Request<UpstreamBody>,
        scheme: Scheme,
        backend_authority: &str,
    ) {
        match scheme {
            Scheme::H2c => {
                *req.version_mut() = Version::HTTP_2;
                let authority = self
                    .host
                    .as_ref()
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                    .or_else(|| Authority::try_from(backend_authority).ok());
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(http::uri::Scheme::HTTP);
                parts.authority = authority;
                parts.path_and_query = Some(self.path.clone());
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
                req.headers_mut().remove(header::HOST);
            }
            Scheme::Http | Scheme::Https => {
                *req.version_mut() = Version::HTTP_11;
                *req.uri_mut() = Uri::from(self.path.clone());
                if !req.headers().contains_key(header::HOST) {
                    let host = self
                        .host
                        .clone()
                        .or_else(|| HeaderValue::from_str(backend_authority).ok());
                    if let Some(h) = host {
                        req.headers_mut().insert(header::HOST, h);
                    }
                }
            }
        }
    }
}

/// The prepared request and the first one to send, from [`prepare`].
pub(super) type Placed<'p> = (&'p mut Prepared, &'p mut Option<Request<UpstreamBody>>);

/// Applies the request rules and shapes the request for the backends, into
/// `places` (empty) rather than returned: it is large, and the `Result` it
/// came in was copied into the caller's future and out of it again.
pub(super) fn prepare<'p>(
    conn: &ConnCtx,
    rc: &mut RequestCtx,
    routed: &Routed,
    snapshot: &Snapshot,
    // Borrowed: moved, it was copied into the caller's block and this call.
    parts: &mut Parts,
    body: Inbound,
    places: &'p mut Places,
) -> Result<Placed<'p>, Refusal> {
    let max_body = snapshot.limits.max_body_bytes;
    // Body limit, checked up front when the length is declared.
    if let Some(max) = max_body {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(Refusal::closing(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body larger than limits.max_body_bytes",
            ));
        }
    }
    // h2c is never switched to through the proxy: its Upgrade is dropped like any
    // hop-by-hop header and the request goes on as plain HTTP/1.1.
    let upgrade = parts.version == Version::HTTP_11
        && rc.present.hop_by_hop
        && hdr::wants_upgrade(&parts.headers)
        && !hdr::upgrade_is_h2c(&parts.headers);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let pool = routed.pool;
    let key = PickKey {
        client_ip: rc.client,
        hash: pool
            .hash_key
            .as_ref()
            .and_then(|k| hash_of(k, &parts.headers, &parts.uri)),
        _marker: std::marker::PhantomData,
    };
    let client_version = parts.version;
    // Without a hop-by-hop field (an upgrade needs two) there is nothing to remove.
    if rc.present.hop_by_hop {
        hdr::remove_hop_by_hop(&mut parts.headers, upgrade);
    }
    // The target's authority wins over a Host field: the backend sees the host
    // the request was routed by (RFC 9112 3.2.2, RFC 9113 8.3.1).
    if parts.uri.authority().is_some()
        && let Some(h) = &rc.host
    {
        parts.headers.insert(header::HOST, h.clone());
    }
    let path = upstream_path(routed.route, &parts.uri);
    // A body still to be read from the client (looked at once: it was twice).
    let streamed = match &body {
        Inbound::Full(_) => false,
        b => !b.is_end_stream(),
    };
    let plain = !upgrade && is_plain(&body, streamed, &parts.headers);
    let mut encoded = header_rules(conn, rc, routed, snapshot, parts, &path, plain);
    encoded.raw_answer = wants_raw_answer(conn, routed, upgrade);

    // A request can go to another backend after it was sent only for listed
    // methods (none when the pool never retries), and only if its body can
    // be sent again.
    let retry_after_send = !upgrade && pool.retry_methods.contains(&parts.method);
    let stats = body_stats(rc, &body, streamed, upgrade, max_body);
    rc.done.bytes_in = stats.clone();
    let mut replay: Option<Replay> = None;
    let mut whole: Option<Bytes> = None;
    let first_body = match body {
        Inbound::Full(b) => {
            if let Some(s) = &stats {
                s.bytes.store(b.len() as u64, Relaxed);
            }
            // Kept for a send again under the same rule as a streamed body.
            if retry_after_send {
                whole = Some(b.clone());
            }
            UpstreamBody::Full(b)
        }
        body => match &stats {
            Some(stats) if streamed => {
                let b = ClientBody::new(
                    body,
                    max_body,
                    stats.clone(),
                    snapshot.limits.body_read_timeout,
                );
                if retry_after_send {
                    let r = Replay::new(b);
                    let reader = r.reader(1);
                    replay = Some(r);
                    UpstreamBody::Replay(reader)
                } else {
                    UpstreamBody::Client(b)
                }
            }
            _ => UpstreamBody::Empty,
        },
    };
    let body_is_empty = matches!(first_body, UpstreamBody::Empty);
    // A copy of the headers is kept only when the request may have to be rebuilt
    // after being sent: for another backend, or for a new connection when a
    // pooled one was closed under it (a bodyless idempotent request). "Nothing
    // was sent" retries get the request back whole from the client layer.
    let rebuildable = retry_after_send || (body_is_empty && parts.method.is_idempotent());
    // The copy is made now unless a failed send will give the request back
    // (bodiless, see `Outgoing::keep_copy`): a hedge sends a second copy while
    // the first is out, and without a Host the request is addressed per backend.
    let copy_now =
        rebuildable && (!body_is_empty || rc.host.is_none() || pool.retries.hedge_after.is_some());
    let out = Outgoing {
        method: parts.method.clone(),
        rebuildable,
        headers: match copy_now {
            true => OnceLock::from(parts.headers.clone()),
            false => OnceLock::new(),
        },
        path,
        // Taken: no phase after this one reads it.
        host: rc.host.take(),
    };
    // Built where they stay (empty places: nothing is dropped first).
    let first = places.first.get_or_insert_with(|| Request::new(first_body));
    *first.method_mut() = std::mem::take(&mut parts.method);
    // Swapped: assigned, the empty map `Request::new` made was dropped here.
    std::mem::swap(first.headers_mut(), &mut parts.headers);
    let prepared = places.prepared.get_or_insert_with(|| Prepared {
        out,
        replay,
        whole,
        body_is_empty,
        retry_after_send,
        key,
        stats,
        client_upgrade,
        client_version,
        encoded,
    });
    Ok((prepared, &mut places.first))
}

/// The body's stats, where something reads them. A streamed body always has
/// them: they keep the clock that tells a slow client from a slow backend. A
/// body already whole only needs them counted (access log, body limit); none,
/// only when an upgrade's tunnel counts what it carries (else the log's count
/// is 0 with or without them).
fn body_stats(
    rc: &RequestCtx,
    body: &Inbound,
    streamed: bool,
    upgrade: bool,
    max_body: Option<u64>,
) -> Option<Arc<BodyStats>> {
    // Set by `accept` exactly when the access log is on: no second look at
    // the log's configuration. (Its details are not: they are left out when
    // the head has none of them.)
    let logging = rc.done.path.is_some();
    let counted = streamed || upgrade || matches!(body, Inbound::Full(_));
    (counted && (logging || max_body.is_some() || streamed)).then(|| Arc::new(BodyStats::default()))
}

/// A request whose head is the same for every send: bodiless, or with a
/// body already whole whose length the head states once (what a send on a
/// connection of our own checks).
fn is_plain(body: &Inbound, streamed: bool, headers: &HeaderMap) -> bool {
    match body {
        Inbound::Full(b) => states_length(headers, b.len()),
        _ => !streamed,
    }
}

/// Whether the answer's fields may stay in their raw form: only when every
/// reader of them between the backend and the client understands it. The
/// client side's own HTTP/1.1 writer does (hyper's and h2's do not); the
/// response rules do, but a route's response header edits and a cache's
/// admission read the map; an upgrade's 101 goes to hyper's tunnel.
/// Forwarding, retries and hedging read only the status.
fn wants_raw_answer(conn: &ConnCtx, routed: &Routed, upgrade: bool) -> bool {
    conn.raw_answers && !upgrade && routed.route.raw_answer
}

/// The forwarding fields, the request ID, the traceparent and the route's
/// edits; for a `plain` request (no upgrade; bodiless, or with a body whole
/// and its length stated) that holds its Host,
/// when that writes the same (see `hdr::can_append`), its head encoded once
/// with the proxy's fields written last instead.
fn header_rules(
    conn: &ConnCtx,
    rc: &mut RequestCtx,
    routed: &Routed,
    snapshot: &Snapshot,
    parts: &mut Parts,
    path: &PathAndQuery,
    plain: bool,
) -> EncodedHead {
    let client_version = parts.version;
    let headers = &mut parts.headers;
    let trusted = conn.peer_trusted(snapshot);
    let ops = &routed.route.headers.request;
    // A plain request that holds its Host goes to every backend of ours
    // with the same head: it is encoded here once, and the proxy's fields are
    // written last instead of inserted, where that writes the same.
    // With a host, the request holds a Host field unless a hop-by-hop rule
    // removed it: the host is the first Host field, or the target's authority
    // that `prepare` wrote into one.
    let encode_now = plain
        && rc.host.is_some()
        && (!rc.present.hop_by_hop || headers.contains_key(header::HOST))
        && hdr::can_append(headers, trusted, ops, rc.present.added);
    if !encode_now {
        // Room for the fields inserted here, made at once: the fast path
        // makes a bodiless request's map for its own fields only.
        let _ = headers.try_reserve(7);
        hdr::add_forwarding(
            headers,
            &conn.peer,
            trusted,
            conn.scheme,
            rc.host.as_ref(),
            via_for(client_version),
            rc.present.added,
        );
        headers.insert(X_REQUEST_ID.clone(), rc.request_id.clone());
        if let Some(tp) = rc.traceparent.take() {
            headers.insert(hdr::TRACEPARENT.clone(), tp);
        }
    }
    // A call for no edits, the common case, cost more than the look.
    if !ops.is_empty() {
        hdr::apply_ops(headers, ops);
    }
    if encode_now {
        let host = rc.host.as_ref();
        let traceparent = rc.traceparent.take();
        let (bytes, appended) = hdr::append_forwarding(
            &conn.peer,
            conn.scheme,
            host,
            via_for(client_version),
            &rc.request_id,
            traceparent.as_ref(),
            |fields| {
                encode_head(&parts.method, path.as_str(), headers, fields.len(), |out| {
                    fields.write(out)
                })
            },
        );
        EncodedHead::new(bytes, appended)
    } else {
        EncodedHead::default()
    }
}

fn via_for(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "2 fulcrum",
        Version::HTTP_10 => "1.0 fulcrum",
        _ => "1.1 fulcrum",
    }
}

fn hash_of(key: &HashKey, headers: &HeaderMap, uri: &Uri) -> Option<u64> {
    let bytes: Option<&[u8]> = match key {
        HashKey::Header(name) => headers.get(name).map(|v| v.as_bytes()),
        HashKey::Cookie(name) => hdr::cookie(headers, name).map(|s| s.as_bytes()),
        HashKey::Path => Some(uri.path().as_bytes()),
        HashKey::Query(name) => uri
            .query()
            .and_then(|q| hdr::query_param(q, name))
            .map(|s| s.as_bytes()),
    };
    bytes.map(crate::rand::stable_hash)
}

/// The path the backend sees: the route's prefix removed when `strip_prefix` is on.
fn upstream_path(route: &Route, uri: &Uri) -> PathAndQuery {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !route.strips_path {
        return original;
    }
    let rest = uri
        .path()
        .strip_prefix(route.path_prefix.as_str())
        .unwrap_or(uri.path());
    let mut s = String::with_capacity(rest.len() + 1 + uri.query().map_or(0, |q| q.len() + 1));
    if !rest.starts_with('/') {
        s.push('/');
    }
    s.push_str(rest);
    if let Some(q) = uri.query() {
        s.push('?');
        s.push_str(q);
    }
    PathAndQuery::try_from(s).unwrap_or(original)
}
