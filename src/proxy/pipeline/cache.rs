//! Phase 2b (routes with `cache:`): the response cache, between routing and the
//! request rules, and again when the backend's answer (or failure) is known.
//!
//! [`lookup`] answers from the cache what it may (fresh, allowed stale, stale
//! while one background refresh runs, 304 to a conditional request, HEAD from
//! a stored GET), joins or leads the one fetch of a missing key (collapsed
//! forwarding), and otherwise lets the request go on, with the stored
//! validators when it revalidates. [`after`] serves a stale entry when the
//! backends fail (stale-if-error), takes a 304 revalidation into the stored
//! entry, invalidates after unsafe methods, and hands the response phase an
//! [`Admit`] that stores the body while it streams to the client.

use super::forward::Won;
use super::route::Routed;
use super::{ConnCtx, Refusal, RequestCtx};
use crate::cache::policy::{self, Directives, Freshness, Reuse};
use crate::cache::store::Stored;
use crate::cache::{Admission, Fill, FillGuard, RouteCache};
use crate::config::CacheKeyPart;
use crate::proxy::body::ProxyBody;
use crate::proxy::headers::{self as hdr, X_REQUEST_ID};
use crate::proxy::respond;
use crate::snapshot::router::normalize_host;
use crate::upstream::body::Inbound;
use crate::upstream::client::{self, Answered};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime};

pub(super) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// What the lookup decided.
pub(super) enum Lookup {
    Answered(Response<ProxyBody>),
    Forward(Box<Pending>),
}

/// A request on its way to the backends, and what the cache does with the answer.
pub(super) struct Pending {
    cache: Arc<RouteCache>,
    key: String,
    /// The request's host (kept for unsafe methods: invalidation).
    host: String,
    method: Method,
    /// Cache-Status `fwd=` reason.
    fwd: &'static str,
    /// The client's headers as sent (vary values, its own conditionals).
    req_headers: HeaderMap,
    req: Directives,
    extra: Vec<Option<Vec<u8>>>,
    /// The stored entry this request revalidates, kept for stale-if-error.
    stored: Option<Arc<Stored>>,
    /// The stored validators were sent: a 304 is the cache's, not the client's.
    revalidating: bool,
    /// The answer may be stored.
    store: bool,
    fill: Option<FillGuard>,
    collapsed: bool,
    request_time: SystemTime,
}

/// The marker of a background refresh (stale-while-revalidate).
#[derive(Clone)]
struct Refresh(Arc<Stored>);

/// Clears an entry's "updating" flag when its refresh ends, however it ends.
struct Updating(Arc<Stored>);

impl Drop for Updating {
    fn drop(&mut self) {
        self.0.updating.store(false, Relaxed);
    }
}

pub(super) async fn lookup(
    conn: &ConnCtx,
    rc: &mut RequestCtx,
    routed: &Routed<'_>,
    cache: &Arc<RouteCache>,
    parts: &mut Parts,
) -> Lookup {
    let host_text = rc.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let host = normalize_host(host_text);
    let key = cache.key(&host, parts.uri.path(), parts.uri.query());
    let refresh = parts.extensions.remove::<Refresh>();
    let req = policy::request_directives(&parts.headers);
    let extra = extra_parts(cache, &parts.headers);
    let unsafe_method = parts.method != Method::GET && parts.method != Method::HEAD;
    let mut p = Pending {
        cache: cache.clone(),
        key,
        host: if unsafe_method {
            host.into_owned()
        } else {
            String::new()
        },
        method: parts.method.clone(),
        fwd: "miss",
        req_headers: HeaderMap::new(),
        req,
        extra,
        stored: None,
        revalidating: false,
        store: false,
        fill: None,
        collapsed: false,
        request_time: SystemTime::now(),
    };
    if unsafe_method {
        p.fwd = "method";
        cache.counters.bypass.fetch_add(1, Relaxed);
        return Lookup::Forward(Box::new(p));
    }
    if let Some(Refresh(stored)) = refresh {
        p.fwd = "stale";
        revalidate_with(&mut p, parts, stored);
        return Lookup::Forward(Box::new(p));
    }
    let auth = parts.headers.contains_key(header::AUTHORIZATION);
    let slot = cache.store.get(&p.key);
    let found = slot
        .as_ref()
        .and_then(|s| s.select(&parts.headers, &p.extra))
        .filter(|s| !auth || s.auth_ok)
        .cloned();
    if let Some(s) = found {
        return reuse_or_forward(conn, rc, routed, p, parts, s);
    }
    if slot.is_some() {
        p.fwd = "vary-miss";
    }
    if p.req.only_if_cached {
        return Lookup::Answered(not_cached(rc, cache));
    }
    let plain = parts.method == Method::GET && !policy::is_conditional(&parts.headers);
    p.store = plain && !p.req.no_store;
    p.req_headers = parts.headers.clone();
    if !p.store {
        return Lookup::Forward(Box::new(p));
    }
    match cache.fill(&p.key) {
        Fill::Leader(g) => p.fill = Some(g),
        Fill::Follower(mut rx) => {
            let wait = cache.config.lock_timeout;
            let _ = tokio::time::timeout(wait, rx.changed()).await;
            p.collapsed = true;
            let again = cache
                .store
                .get(&p.key)
                .and_then(|s| s.select(&parts.headers, &p.extra).cloned())
                .filter(|s| !auth || s.auth_ok);
            if let Some(s) = again {
                let age = s.age(Instant::now());
                if matches!(reuse_of(cache, age, &s.freshness, &p.req), Reuse::Fresh) {
                    cache.counters.coalesced.fetch_add(1, Relaxed);
                    let status = format!("fulcrum; hit; ttl={}; collapsed", ttl(&s, age));
                    return Lookup::Answered(serve(
                        rc,
                        routed,
                        cache,
                        &s,
                        (&parts.method, &parts.headers),
                        &status,
                    ));
                }
            }
        }
    }
    Lookup::Forward(Box::new(p))
}

fn reuse_of(cache: &RouteCache, age: u64, f: &Freshness, req: &Directives) -> Reuse {
    let c = &cache.config;
    policy::reuse(
        age,
        f,
        req,
        c.stale_while_revalidate.as_secs(),
        c.stale_if_error.as_secs(),
    )
}

/// A stored variant was found: serve it, or forward to revalidate it.
fn reuse_or_forward(
    conn: &ConnCtx,
    rc: &mut RequestCtx,
    routed: &Routed<'_>,
    mut p: Pending,
    parts: &mut Parts,
    s: Arc<Stored>,
) -> Lookup {
    let cache = p.cache.clone();
    let age = s.age(Instant::now());
    let served = |rc: &mut RequestCtx, detail: &str| {
        let status = format!("fulcrum; hit; ttl={}{detail}", ttl(&s, age));
        serve(
            rc,
            routed,
            &cache,
            &s,
            (&parts.method, &parts.headers),
            &status,
        )
    };
    match reuse_of(&cache, age, &s.freshness, &p.req) {
        Reuse::Fresh => {
            cache.counters.hit.fetch_add(1, Relaxed);
            Lookup::Answered(served(rc, ""))
        }
        Reuse::StaleAllowed => {
            cache.counters.stale.fetch_add(1, Relaxed);
            Lookup::Answered(served(rc, "; detail=max-stale"))
        }
        Reuse::StaleWhileRevalidate => {
            cache.counters.stale.fetch_add(1, Relaxed);
            if !s.updating.swap(true, Relaxed) {
                spawn_refresh(conn, parts, s.clone());
            }
            Lookup::Answered(served(rc, "; detail=stale-while-revalidate"))
        }
        Reuse::Revalidate => {
            if p.req.only_if_cached {
                return Lookup::Answered(not_cached(rc, &cache));
            }
            p.fwd = if p.req.no_cache || p.req.max_age.is_some() {
                "request"
            } else {
                "stale"
            };
            if parts.method == Method::GET {
                revalidate_with(&mut p, parts, s);
            } else {
                p.req_headers = parts.headers.clone();
                p.stored = Some(s);
            }
            Lookup::Forward(Box::new(p))
        }
    }
}

/// The request goes upstream with the stored validators instead of the
/// client's own (the answer is the cache's; the client's conditionals are
/// evaluated against the result).
fn revalidate_with(p: &mut Pending, parts: &mut Parts, s: Arc<Stored>) {
    p.req_headers = parts.headers.clone();
    parts.headers.remove(header::IF_NONE_MATCH);
    parts.headers.remove(header::IF_MODIFIED_SINCE);
    parts.headers.remove(header::IF_MATCH);
    parts.headers.remove(header::IF_UNMODIFIED_SINCE);
    parts.headers.remove(header::IF_RANGE);
    parts.headers.remove(header::RANGE);
    let v = policy::validators(&s.headers);
    p.revalidating = !v.is_empty();
    for (k, val) in v {
        parts.headers.insert(k, val);
    }
    p.store = !p.req.no_store;
    p.stored = Some(s);
}

/// Values of the key's header and cookie parts (empty for the usual key).
fn extra_parts(cache: &RouteCache, h: &HeaderMap) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    for part in &cache.config.key {
        match part {
            CacheKeyPart::Header(name) => out.push(policy::vary_value(h, name)),
            CacheKeyPart::Cookie(name) => {
                out.push(hdr::cookie(h, name).map(|v| v.as_bytes().to_vec()))
            }
            _ => {}
        }
    }
    out
}

fn ttl(s: &Stored, age: u64) -> i64 {
    s.freshness.lifetime as i64 - age as i64
}

/// `only-if-cached` without a usable entry (RFC 9111 §5.2.1.7).
fn not_cached(rc: &mut RequestCtx, cache: &RouteCache) -> Response<ProxyBody> {
    cache.counters.miss.fetch_add(1, Relaxed);
    let status = StatusCode::GATEWAY_TIMEOUT;
    let mut resp = respond::error(status, &rc.request_id, "not in cache (only-if-cached)");
    if cache.config.status_header {
        resp.headers_mut().insert(
            CACHE_STATUS.clone(),
            HeaderValue::from_static("fulcrum; fwd=miss; detail=only-if-cached"),
        );
    }
    rc.done.status = status.as_u16();
    rc.done.bytes_out = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
    resp
}

/// The answer from a stored entry: 304 when the client's conditionals match,
/// no body for HEAD, `Age`, the route's response rules, the request ID.
fn serve(
    rc: &mut RequestCtx,
    routed: &Routed<'_>,
    cache: &RouteCache,
    s: &Stored,
    (method, req_headers): (&Method, &HeaderMap),
    cache_status: &str,
) -> Response<ProxyBody> {
    let age = s.age(Instant::now());
    let not_modified =
        policy::is_conditional(req_headers) && policy::not_modified(req_headers, &s.headers);
    let mut resp = Response::new(ProxyBody::empty());
    if not_modified {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        let h = resp.headers_mut();
        for name in &policy::NOT_MODIFIED_KEEP {
            for v in s.headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
    } else {
        *resp.status_mut() = s.status;
        *resp.headers_mut() = s.headers.clone();
        if !s.headers.contains_key(header::CONTENT_LENGTH) {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(s.body.len()));
        }
        if method != Method::HEAD && !s.body.is_empty() {
            *resp.body_mut() = ProxyBody::Full(Some(s.body.clone()));
        }
    }
    let h = resp.headers_mut();
    h.insert(header::AGE, HeaderValue::from(age));
    hdr::apply_ops(h, &routed.route.headers.response);
    h.insert(X_REQUEST_ID.clone(), rc.request_id.clone());
    if let Some(c) = routed.set_cookie.clone() {
        h.append(header::SET_COOKIE, c);
    }
    if cache.config.status_header
        && let Ok(v) = HeaderValue::from_str(cache_status)
    {
        h.insert(CACHE_STATUS.clone(), v);
    }
    rc.done.status = resp.status().as_u16();
    rc.done.bytes_out = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
    resp
}

/// Refreshes an entry in the background: the same request, through the whole
/// pipeline, with the stored validators; its answer is stored as any other.
fn spawn_refresh(conn: &ConnCtx, parts: &Parts, stored: Arc<Stored>) {
    let mut req = Request::new(Inbound::Empty);
    *req.method_mut() = Method::GET;
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.headers_mut().remove(&X_REQUEST_ID);
    req.extensions_mut().insert(Refresh(stored.clone()));
    let proxy = conn.proxy.clone();
    let mut peer = hdr::PeerInfo::new(conn.peer.ip);
    peer.tls = conn.peer.tls.clone();
    let scheme = conn.scheme;
    tokio::spawn(async move {
        // Cleared when this task ends, whether the refresh worked, failed or
        // panicked.
        let _updating = Updating(stored);
        let conn = ConnCtx {
            proxy,
            peer,
            scheme,
            guard: None,
            served: AtomicU64::new(0),
            raw_answers: false,
            trusted: Default::default(),
        };
        let resp = super::handle(&conn, req).await;
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    });
}

/// What comes after forwarding for a caching route.
pub(super) enum After {
    /// Stream the backend's answer, storing it when it may be.
    Respond(Won, Answered, Admit),
    Answered(Response<ProxyBody>),
}

pub(super) fn after(
    conn: &ConnCtx,
    rc: &mut RequestCtx,
    routed: &Routed<'_>,
    p: Box<Pending>,
    result: Result<(Won, Answered), Refusal>,
) -> Result<After, Refusal> {
    let cache = p.cache.clone();
    let (won, answer) = match result {
        Ok(w) => w,
        Err(r) => {
            return match stale_on_error(rc, routed, &p, r.status) {
                Some(resp) => Ok(After::Answered(resp)),
                None => {
                    count_miss(&p);
                    let mut resp = rc.refuse(r);
                    if cache.config.status_header {
                        // No backend answered: no fwd-status.
                        let v = format!("fulcrum; fwd={}", p.fwd);
                        if let Ok(v) = HeaderValue::from_str(&v) {
                            resp.headers_mut().insert(CACHE_STATUS.clone(), v);
                        }
                    }
                    Ok(After::Answered(resp))
                }
            };
        }
    };
    let status = answer.0.status();
    if let Some(resp) = stale_on_error(rc, routed, &p, status) {
        settle(conn, rc, routed, won, answer);
        // `serve` set what the client gets.
        rc.done.status = resp.status().as_u16();
        return Ok(After::Answered(resp));
    }
    if status == StatusCode::NOT_MODIFIED
        && p.revalidating
        && let Some(old) = &p.stored
    {
        let fresh = revalidated(&p, old, answer.0.headers());
        settle(conn, rc, routed, won, answer);
        cache.store.put(&p.key, fresh.clone());
        cache.counters.revalidated.fetch_add(1, Relaxed);
        let age = fresh.age(Instant::now());
        let cs = format!(
            "fulcrum; fwd={}; fwd-status=304; ttl={}",
            p.fwd,
            ttl(&fresh, age)
        );
        return Ok(After::Answered(serve(
            rc,
            routed,
            &cache,
            &fresh,
            (&p.method, &p.req_headers),
            &cs,
        )));
    }
    if policy::invalidates(&p.method, status) {
        invalidate(&p, answer.0.headers());
    }
    if p.fwd != "method" {
        count_miss(&p);
    }
    Ok(After::Respond(won, answer, Admit { p }))
}

fn count_miss(p: &Pending) {
    if p.fwd != "method" {
        p.cache.counters.miss.fetch_add(1, Relaxed);
    }
}

/// Counts the attempt like any answer, then drops the answer: a body-less one
/// (a 304) gives its connection back to the pool.
fn settle(conn: &ConnCtx, rc: &mut RequestCtx, routed: &Routed<'_>, won: Won, answer: Answered) {
    let (mut response, lease) = answer;
    super::forward::account(conn, rc, routed, won.attempt, response.status());
    if http_body::Body::is_end_stream(response.body())
        && let Some(b) = &rc.done.backend
    {
        client::release(b, lease, response.body_mut());
    }
}

/// The stored entry brought up to date by a 304 (RFC 9111 §3.2, §4.3.4).
fn revalidated(p: &Pending, old: &Stored, fresh: &HeaderMap) -> Arc<Stored> {
    let now = SystemTime::now();
    let headers = detached(&policy::update_headers(&old.headers, fresh));
    let d = policy::response_directives(&headers);
    let lifetime =
        policy::freshness_lifetime(old.status, &headers, &d, now, p.cache.config.default_ttl);
    Arc::new(Stored {
        status: old.status,
        body: old.body.clone(),
        received: Instant::now(),
        initial_age: policy::initial_age(&headers, p.request_time, now),
        freshness: Freshness::of(&d, lifetime),
        auth_ok: old.auth_ok,
        vary: old.vary.clone(),
        extra: old.extra.clone(),
        tags: policy::tags(&headers),
        headers,
        updating: Default::default(),
    })
}

/// stale-if-error: the stored entry, when the backends failed and it may serve.
fn stale_on_error(
    rc: &mut RequestCtx,
    routed: &Routed<'_>,
    p: &Pending,
    failed: StatusCode,
) -> Option<Response<ProxyBody>> {
    // RFC 5861: errors are 500, 502, 503 and 504 (whether a backend said so or
    // none could answer); anything else is the answer.
    if !matches!(failed.as_u16(), 500 | 502 | 503 | 504) {
        return None;
    }
    let s = p.stored.as_ref()?;
    let age = s.age(Instant::now());
    if !policy::usable_on_error(age, &s.freshness, p.cache.config.stale_if_error.as_secs()) {
        return None;
    }
    p.cache.counters.stale.fetch_add(1, Relaxed);
    let cs = format!(
        "fulcrum; fwd=stale; fwd-status={}; ttl={}; detail=stale-if-error",
        failed.as_u16(),
        ttl(s, age)
    );
    Some(serve(
        rc,
        routed,
        &p.cache,
        s,
        (&p.method, &p.req_headers),
        &cs,
    ))
}

/// After a successful unsafe method: the target URI, and the `Location` and
/// `Content-Location` of the same host (RFC 9111 §4.4).
fn invalidate(p: &Pending, h: &HeaderMap) {
    let cache = &p.cache;
    cache.store.remove(&p.key);
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(v) = h.get(&name)
            && let Some(target) = policy::same_origin_target(v, Some(&p.host))
        {
            let (path, query) = match target.split_once('?') {
                Some((a, b)) => (a, Some(b)),
                None => (target.as_str(), None),
            };
            cache.store.remove(&cache.key(&p.host, path, query));
        }
    }
}

/// What the response phase does with a forwarded answer on a caching route.
pub(super) struct Admit {
    p: Box<Pending>,
}

impl Admit {
    /// Given the answer's status and headers (hop-by-hop removed, before the
    /// route's rules): the admission of its body, and the Cache-Status value.
    pub(super) fn begin(
        self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> (Option<Box<Admission>>, Option<HeaderValue>) {
        let Pending {
            cache,
            key,
            fwd,
            req_headers,
            req,
            extra,
            store,
            fill,
            collapsed,
            request_time,
            method,
            stored,
            ..
        } = *self.p;
        let d = policy::response_directives(headers);
        let cfg = &cache.config;
        let declared: Option<u64> = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let why_not = if !store {
            Some("not stored")
        } else {
            policy::not_storable(
                &method,
                status,
                &req_headers,
                &req,
                headers,
                &d,
                cfg.default_ttl,
            )
        };
        let admission = match why_not {
            Some(_) => {
                // A stored entry whose fresh answer may not be stored any more
                // (now no-store, private, ...) is not kept for later either.
                if store && stored.is_some() && !status.is_server_error() {
                    cache.store.remove(&key);
                }
                None
            }
            None => {
                let entry = entry_of(status, headers, &req_headers, &d, extra, request_time, cfg);
                Admission::new(cache.clone(), key.into_boxed_str(), entry, declared, fill)
                    .map(Box::new)
            }
        };
        let status_value = cfg.status_header.then(|| {
            let mut s = format!("fulcrum; fwd={fwd}; fwd-status={}", status.as_u16());
            // `stored` only when the whole body is known to fit; a body of
            // unknown length is stored only if it turns out to.
            if admission.is_some() && declared.is_some() {
                s.push_str("; stored");
            } else if let Some(w) = why_not.filter(|_| fwd != "method") {
                s.push_str("; detail=\"");
                s.push_str(w);
                s.push('"');
            }
            if collapsed {
                s.push_str("; collapsed");
            }
            HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("fulcrum"))
        });
        (admission, status_value)
    }
}

/// The fields with their values copied into one buffer of their own. A value
/// parsed from a connection is a slice of the buffer the head was read into;
/// an entry kept for hours must not keep that buffer alive, whose size is not
/// what the cache counts against `max_size`.
fn detached(h: &HeaderMap) -> HeaderMap {
    let total = h.iter().map(|(_, v)| v.len()).sum();
    let mut buf = bytes::BytesMut::with_capacity(total);
    for (_, v) in h {
        buf.extend_from_slice(v.as_bytes());
    }
    let all = buf.freeze();
    let mut out = HeaderMap::with_capacity(h.keys_len());
    let mut at = 0;
    for (name, v) in h {
        let end = at + v.len();
        // The same bytes as a valid value: cannot fail; the shared one is the fallback.
        let mut copy =
            HeaderValue::from_maybe_shared(all.slice(at..end)).unwrap_or_else(|_| v.clone());
        copy.set_sensitive(v.is_sensitive());
        out.append(name.clone(), copy);
        at = end;
    }
    out
}

/// The entry to store for an answer (its body comes as it streams).
fn entry_of(
    status: StatusCode,
    headers: &HeaderMap,
    req_headers: &HeaderMap,
    d: &Directives,
    extra: Vec<Option<Vec<u8>>>,
    request_time: SystemTime,
    cfg: &crate::config::CacheConfig,
) -> Stored {
    let now = SystemTime::now();
    let mut stored_headers = detached(headers);
    policy::strip_for_storage(&mut stored_headers, d);
    stored_headers.remove(header::AGE);
    let lifetime = policy::freshness_lifetime(status, headers, d, now, cfg.default_ttl);
    let vary = policy::vary_names(headers)
        .unwrap_or_default()
        .into_iter()
        .map(|n| {
            let v = policy::vary_value(req_headers, &n);
            (n, v)
        })
        .collect();
    Stored {
        status,
        initial_age: policy::initial_age(headers, request_time, now),
        freshness: Freshness::of(d, lifetime),
        auth_ok: d.public || d.must_revalidate || d.s_maxage.is_some(),
        vary,
        extra,
        tags: policy::tags(headers),
        headers: stored_headers,
        body: Default::default(),
        received: Instant::now(),
        updating: Default::default(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn detached_keeps_every_field_in_order_without_the_source_buffer() {
        let head = bytes::Bytes::from_static(b"aXbYYc");
        let mut h = HeaderMap::new();
        for (name, r) in [("x-a", 0..2), ("x-b", 2..5), ("x-a", 5..6)] {
            let v = HeaderValue::from_maybe_shared(head.slice(r)).unwrap();
            h.append(http::HeaderName::from_static(name), v);
        }
        let d = super::detached(&h);
        let all: Vec<_> = d.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        assert_eq!(all, [("x-a", &b"aX"[..]), ("x-a", b"c"), ("x-b", b"bYY")]);
        let src = head.as_ptr() as usize..head.as_ptr() as usize + head.len();
        assert!(
            d.iter()
                .all(|(_, v)| !src.contains(&(v.as_bytes().as_ptr() as usize)))
        );
    }
    use super::*;

    #[tokio::test]
    async fn the_updating_flag_clears_when_a_refresh_panics() {
        let s = Arc::new(crate::cache::placeholder());
        s.updating.store(true, Relaxed);
        let guard = Updating(s.clone());
        let task = tokio::spawn(async move {
            let _guard = guard;
            panic!("the refresh failed");
        });
        assert!(task.await.is_err());
        assert!(
            !s.updating.load(Relaxed),
            "a later request may refresh again"
        );
    }
}
