//! The request path: route, choose a backend, forward, retry, answer.

use super::body::{ProxyBody, UpstreamStream};
use super::completion::Completion;
use super::guard::GuardState;
use super::headers::{self as hdr, PeerInfo, X_FORWARDED_FOR, X_REQUEST_ID};
use super::respond;
use crate::app::App;
use crate::config::{HashKey, Scheme};
use crate::runtime::{Route, Runtime, Target};
use crate::upstream::backend::{Awaiting, Backend, InFlight};
use crate::upstream::balance::{Balancer, PickKey};
use crate::upstream::body::{BodyStats, ClientBody, Replay, UpstreamBody};
use crate::upstream::client::{self, SendError};
use crate::upstream::pool::{Pick, Pool, Tried};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Per client connection: who is on the other end and how they reached us.
pub struct ConnCtx {
    pub app: Arc<App>,
    pub peer: PeerInfo,
    /// `http` or `https`, for X-Forwarded-Proto.
    pub scheme: &'static str,
    pub guard: Option<Arc<GuardState>>,
    /// Requests seen on this connection (matches the smuggling guard's count).
    pub served: AtomicU64,
}

/// Everything needed to (re)build the upstream request for one more attempt.
struct Outgoing {
    method: Method,
    /// Present only when the request may be rebuilt after it was sent.
    headers: Option<HeaderMap>,
    path: PathAndQuery,
    /// The Host the client asked for: the backend sees it as Host / :authority.
    host: Option<HeaderValue>,
}

impl Outgoing {
    fn build(&self, body: UpstreamBody) -> Option<Request<UpstreamBody>> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = self.headers.clone()?;
        Some(req)
    }
}

/// Makes `req` fit the protocol of the backend it is about to go to.
fn address_for(
    req: &mut Request<UpstreamBody>,
    out: &Outgoing,
    scheme: Scheme,
    backend_authority: &str,
) {
    match scheme {
        Scheme::H2c => {
            *req.version_mut() = Version::HTTP_2;
            let authority = out
                .host
                .as_ref()
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .or_else(|| Authority::try_from(backend_authority).ok());
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = authority;
            parts.path_and_query = Some(out.path.clone());
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
            req.headers_mut().remove(header::HOST);
        }
        Scheme::Http | Scheme::Https => {
            *req.version_mut() = Version::HTTP_11;
            *req.uri_mut() = Uri::from(out.path.clone());
            if !req.headers().contains_key(header::HOST) {
                let host = out
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

fn via_for(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "2 fulcrum",
        Version::HTTP_10 => "1.0 fulcrum",
        _ => "1.1 fulcrum",
    }
}

/// The client as the access log and `ip_hash` see it: behind trusted proxies, the
/// right-most X-Forwarded-For entry that is not itself a trusted proxy.
fn client_ip(rt: &Runtime, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if rt.trusted_proxies.is_empty() || !rt.is_trusted(peer) {
        return peer;
    }
    let mut ip = peer;
    for v in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(a) => {
                    ip = a;
                    if !rt.is_trusted(a) {
                        return a;
                    }
                }
                Err(_) => return ip,
            }
        }
    }
    ip
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
    if !route.strip_prefix || route.path_prefix == "/" {
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

/// Picks the pool for a request: the route's pool, or a split variant (sticky by
/// cookie when asked). Returns the pool, the balancer to use, the variant index and
/// a cookie to set.
/// The pool a request goes to, the balancer to use, the split variant, and a
/// cookie to set.
type Chosen<'r> = (
    &'r Arc<Pool>,
    Option<&'r Balancer>,
    Option<usize>,
    Option<HeaderValue>,
);

fn choose_pool<'r>(route: &'r Route, headers: &HeaderMap) -> Option<Chosen<'r>> {
    match &route.target {
        Target::Pool { pool, balancer } => Some((pool, balancer.as_ref(), None, None)),
        Target::Split {
            variants,
            total_weight,
            sticky,
            cookie,
        } => {
            if variants.is_empty() || *total_weight == 0 {
                return None;
            }
            if *sticky
                && let Some(name) = hdr::cookie(headers, cookie)
                && let Some(i) = variants
                    .iter()
                    .position(|v| v.pool.name == name && v.weight > 0)
            {
                let v = &variants[i];
                v.requests.fetch_add(1, Relaxed);
                return Some((&v.pool, v.balancer.as_ref(), Some(i), None));
            }
            let mut r = crate::rand::below(*total_weight as u64) as u32;
            let i = variants
                .iter()
                .position(|v| {
                    if r < v.weight {
                        true
                    } else {
                        r -= v.weight;
                        false
                    }
                })
                .unwrap_or(0);
            let v = &variants[i];
            v.requests.fetch_add(1, Relaxed);
            let set_cookie = if *sticky {
                HeaderValue::from_str(&format!(
                    "{cookie}={}; Path=/; HttpOnly; SameSite=Lax",
                    v.pool.name
                ))
                .ok()
            } else {
                None
            };
            Some((&v.pool, v.balancer.as_ref(), Some(i), set_cookie))
        }
    }
}

fn local(mut done: Completion, status: StatusCode, detail: &str) -> Response<ProxyBody> {
    let resp = respond::error(status, &done.request_id, detail);
    done.status = status.as_u16();
    done.bytes_out = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
    resp
}

const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The answer to an ACME http-01 validation request, if an order waits on it.
fn acme_http01(app: &App, path: &str) -> Option<Response<ProxyBody>> {
    let token = path.strip_prefix(ACME_CHALLENGE_PREFIX)?;
    let states = app.acme.load();
    let answer = states.iter().find_map(|s| s.http01_answer(token))?;
    let mut resp = Response::new(ProxyBody::text(answer));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

/// `redirect_http_from`: 308 to the same URL over HTTPS, except ACME http-01
/// validation requests, which are answered here.
pub fn redirect(app: &App, req: Request<Incoming>, https_port: u16) -> Response<ProxyBody> {
    if let Some(r) = acme_http01(app, req.uri().path()) {
        return r;
    }
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| super::super::runtime::router::normalize_host(h).into_owned())
        })
        .unwrap_or_default();
    let id = hdr::generate_request_id();
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return respond::error(StatusCode::BAD_REQUEST, &id, "missing or invalid Host");
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{target}");
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

pub async fn handle(ctx: &ConnCtx, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let index = ctx.served.fetch_add(1, Relaxed);
    let app = &ctx.app;
    if req.uri().path().starts_with(ACME_CHALLENGE_PREFIX)
        && let Some(r) = acme_http01(app, req.uri().path())
    {
        return r;
    }
    let rt = app.runtime.load_full();
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if hdr::acceptable_request_id(v) => v.clone(),
        _ => hdr::generate_request_id(),
    };
    let logging = app.access_log.load().is_some();
    let client = client_ip(&rt, ctx.peer.ip, req.headers());
    let mut done = Completion::new(
        app.clone(),
        rt.clone(),
        started,
        req.method().clone(),
        request_id.clone(),
        client,
    );
    // 499 (nginx's "client closed request") unless a response is produced.
    done.status = 499;

    // The Host the client asked for: the authority of an absolute URI (HTTP/2, or an
    // absolute-form HTTP/1.1 target), else the Host header.
    let host_value: Option<HeaderValue> = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    if logging {
        done.host = host_value
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        done.path = Some(
            req.uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
        );
        done.details = Some(Box::new(super::access_log::RequestDetails::capture(
            &req, &ctx.peer,
        )));
    }
    if let Some(g) = &ctx.guard
        && g.is_bad(index)
    {
        let mut resp = local(
            done,
            StatusCode::BAD_REQUEST,
            "conflicting Content-Length and Transfer-Encoding",
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    if host_value.is_none() && req.version() == Version::HTTP_11 {
        return local(done, StatusCode::BAD_REQUEST, "missing Host header");
    }
    let host_text = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host = super::super::runtime::router::normalize_host(host_text);
    let Some(route_idx) = rt.router.find(&host, req.uri().path()) else {
        return local(done, StatusCode::NOT_FOUND, "no route");
    };
    let route = &rt.routes[route_idx];
    done.route = Some(route_idx);
    let Some((pool, route_balancer, variant, set_cookie)) = choose_pool(route, req.headers())
    else {
        return local(done, StatusCode::SERVICE_UNAVAILABLE, "no pool");
    };
    done.pool = Some(pool.index);
    done.variant = variant;
    // With trace export on, this request gets a span continuing the client's
    // traceparent, and the backend is told that span is its parent.
    let upstream_traceparent = match app.otlp.load().as_ref() {
        Some(otlp) => {
            let (trace, header) = otlp.start_request(
                format!("{} {}", req.method(), route.name),
                req.headers().get(&hdr::TRACEPARENT),
            );
            done.trace = Some(Box::new(trace));
            header
        }
        None => None,
    };
    let balancer = route_balancer.unwrap_or(&pool.balancer);

    // Body limit, checked up front when the length is declared.
    let max_body = rt.limits.max_body_bytes;
    if let Some(max) = max_body {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            let mut resp = local(
                done,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body larger than limits.max_body_bytes",
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    }

    let upgrade = req.version() == Version::HTTP_11 && hdr::wants_upgrade(req.headers());
    let client_upgrade = if upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let client_version = req.version();
    let key = PickKey {
        client_ip: client,
        hash: pool
            .hash_key
            .as_ref()
            .and_then(|k| hash_of(k, req.headers(), req.uri())),
        _marker: std::marker::PhantomData,
    };
    let path = upstream_path(route, req.uri());
    let (parts, body) = req.into_parts();
    let method = parts.method;
    let mut headers = parts.headers;
    hdr::remove_hop_by_hop(&mut headers, upgrade);
    let trusted = !rt.trusted_proxies.is_empty() && rt.is_trusted(ctx.peer.ip);
    hdr::add_forwarding(
        &mut headers,
        &ctx.peer,
        trusted,
        ctx.scheme,
        host_value.as_ref(),
        via_for(client_version),
    );
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if let Some(tp) = upstream_traceparent {
        headers.insert(hdr::TRACEPARENT.clone(), tp);
    }
    hdr::apply_ops(&mut headers, &route.headers.request);

    let retry = &pool.retries;
    // A request can go to another backend after it was sent only for listed methods,
    // and only if its body can be sent again.
    let retry_after_send =
        !retry.try_duration.is_zero() && !upgrade && retry.methods.contains(&method);
    let stats = (logging || max_body.is_some()).then(|| Arc::new(BodyStats::default()));
    done.bytes_in = stats.clone();
    let mut replay: Option<Replay> = None;
    let first_body = if body.is_end_stream() {
        UpstreamBody::Empty
    } else {
        let b = ClientBody::new(body, max_body, stats.clone());
        if retry_after_send {
            let r = Replay::new(b);
            let reader = r.reader(1);
            replay = Some(r);
            UpstreamBody::Replay(reader)
        } else {
            UpstreamBody::Client(b)
        }
    };
    let body_is_empty = matches!(first_body, UpstreamBody::Empty);
    // A copy of the headers is kept only when the request may have to be rebuilt for
    // another backend after being sent; "nothing was sent" retries get the request
    // back whole from the client layer.
    let out = Outgoing {
        method: method.clone(),
        headers: retry_after_send.then(|| headers.clone()),
        path,
        host: host_value,
    };
    let mut first = Request::new(first_body);
    *first.method_mut() = method;
    *first.headers_mut() = headers;
    let mut pending = Some(first);

    let deadline = started + retry.try_duration;
    let mut tried = Tried::default();
    let mut attempts: u32 = 0;
    let mut last_error: Option<(StatusCode, String)> = None;
    pool.state.earn_hedge();
    // Only requests without a body, of a method that may be retried after it was
    // sent, are hedged.
    let hedge = if retry_after_send && body_is_empty {
        pool.hedge_delay()
    } else {
        None
    };
    let mut queue_deadline: Option<Instant> = None;
    let won = loop {
        let Some(member_idx) = (match pool.pick(balancer, &key, &tried) {
            Pick::Member(i) => Some(i),
            Pick::Full => {
                match wait_in_queue(pool, balancer, &key, &tried, &mut queue_deadline).await {
                    Ok(()) => continue,
                    Err(why) => return local(done, StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }
            pick => {
                let can_wait =
                    !retry.try_duration.is_zero() && Instant::now() + retry.try_interval < deadline;
                if can_wait && (pending.is_some() || retry_after_send) {
                    tokio::time::sleep(retry.try_interval).await;
                    tried.clear();
                    continue;
                }
                if attempts == 0 || matches!(pick, Pick::NoneAvailable) && last_error.is_none() {
                    return local(done, StatusCode::SERVICE_UNAVAILABLE, "no healthy backend");
                }
                None
            }
        }) else {
            break None;
        };
        // A capped member is reserved before anything is committed to it; if
        // another request took its last slot since the pick, pick again (which
        // queues once every member is full).
        let cap = pool.members[member_idx].max_requests;
        let slot = if cap > 0 {
            let backend = pool.members[member_idx].backend.clone();
            match InFlight::reserve(backend, cap, pool.state.clone()) {
                Some(s) => Some(s),
                None => continue,
            }
        } else {
            None
        };
        tried.add(member_idx);
        let request = match pending.take() {
            Some(r) => Some(r),
            // Rebuild for another attempt: only possible with an empty or
            // replayable body.
            None if body_is_empty => out.build(UpstreamBody::Empty),
            None => match &replay {
                Some(r) if r.replayable() => {
                    out.build(UpstreamBody::Replay(r.reader(attempts as u64 + 1)))
                }
                _ => None,
            },
        };
        let Some(request) = request else { break None };
        attempts += 1;
        if attempts > 1 {
            pool.state.retries.fetch_add(1, Relaxed);
        }
        let (first, first_req) = Attempt::start(pool, member_idx, request, &out, slot);
        let mut outcomes: Vec<(Attempt, client::SendResult)> = Vec::with_capacity(2);
        match hedge {
            None => {
                let r = send_tracked(first.backend.clone(), first_req, pool.timeouts).await;
                outcomes.push((first, r));
            }
            Some(delay) => {
                let mut first_fut = send_owned(first.backend.clone(), first_req, pool.timeouts);
                // Wait for the first answer; every hedge delay without one, try to
                // send the same request to another backend (one that keeps
                // answering, budget permitting). The first answer wins.
                let mut early = None;
                let mut second = None;
                loop {
                    tokio::select! {
                        biased;
                        r = first_fut.as_mut() => { early = Some(r); break; }
                        _ = tokio::time::sleep(delay) => {}
                    }
                    if let Some(i) = pool.pick_for_hedge(balancer, &key, &tried)
                        && pool.state.spend_hedge()
                    {
                        second = out
                            .build(UpstreamBody::Empty)
                            .map(|req| Attempt::start(pool, i, req, &out, None));
                        break;
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                match (early, second) {
                    (Some(r), _) => outcomes.push((first, r)),
                    (None, None) => outcomes.push((first, first_fut.await)),
                    (None, Some((second, second_req))) => {
                        tried.add(second.idx);
                        attempts += 1;
                        pool.state.hedges.fetch_add(1, Relaxed);
                        let second_fut =
                            send_owned(second.backend.clone(), second_req, pool.timeouts);
                        let mut slots = [Some((first, first_fut)), Some((second, second_fut))];
                        // Until one answers; a failed one leaves the other running.
                        while slots.iter().any(Option::is_some) {
                            let (i, r) = {
                                let [a, b] = &mut slots;
                                tokio::select! {
                                    r = async { a.as_mut().expect("pending").1.as_mut().await }, if a.is_some() => (0, r),
                                    r = async { b.as_mut().expect("pending").1.as_mut().await }, if b.is_some() => (1, r),
                                }
                            };
                            let ok = r.is_ok();
                            if let Some((attempt, _)) = slots[i].take() {
                                outcomes.push((attempt, r));
                            }
                            if ok {
                                break;
                            }
                        }
                        // The slower one keeps running on its own until it answers
                        // or times out: its real latency (or failure) is what tells
                        // latency-aware balancing and passive health to avoid it.
                        for (attempt, fut) in slots.into_iter().flatten() {
                            let passive = pool.passive.clone();
                            tokio::spawn(async move {
                                // Taken apart inside the task so that the in-flight
                                // guard lives until the attempt really ends: the
                                // balancers must go on seeing it on that backend.
                                let Attempt {
                                    backend,
                                    guard,
                                    sent_at,
                                    ..
                                } = attempt;
                                let result = fut.await;
                                let waited = sent_at.elapsed().as_micros() as f64;
                                backend.observe_latency(waited);
                                if result.is_err() {
                                    backend.record_failure(&passive);
                                }
                                drop(guard);
                            });
                        }
                    }
                }
            }
        }
        if let Some(t) = done.trace.as_mut() {
            let end = Instant::now();
            for (attempt, result) in &outcomes {
                t.attempts.push(crate::otlp::Attempt {
                    backend: attempt.backend.key().to_string(),
                    start: attempt.sent_at,
                    end,
                    outcome: match result {
                        Ok(_) => "ok".into(),
                        Err((e, _)) => e.to_string(),
                    },
                });
            }
        }
        let mut winner = None;
        for (attempt, result) in outcomes {
            match result {
                Ok((resp, lease)) => winner = Some((attempt, resp, lease)),
                Err((err, returned)) => {
                    if let Some(s) = &stats {
                        if s.too_large.load(Relaxed) {
                            done.attempts = attempts;
                            let mut resp = local(
                                done,
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "body larger than limits.max_body_bytes",
                            );
                            resp.headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                            return resp;
                        }
                        if s.client_error.load(Relaxed) {
                            done.attempts = attempts;
                            return local(
                                done,
                                StatusCode::BAD_REQUEST,
                                "could not read the request body",
                            );
                        }
                    }
                    let status = match err {
                        SendError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                        _ => StatusCode::BAD_GATEWAY,
                    };
                    if attempt.backend.record_failure(&pool.passive) {
                        ejected(app, pool, &attempt.backend, &err.to_string());
                    }
                    tracing::debug!(pool = %pool.name, backend = %attempt.backend.key(), attempt = attempts, error = %err, "upstream attempt failed");
                    if returned.is_some() {
                        pending = returned;
                    }
                    last_error = Some((status, err.to_string()));
                }
            }
        }
        if let Some(w) = winner {
            break Some(w);
        }
        let nothing_sent = pending.is_some();
        let retryable = !retry.try_duration.is_zero()
            && Instant::now() < deadline
            && (nothing_sent
                || (retry_after_send
                    && (body_is_empty || replay.as_ref().is_some_and(|r| r.replayable()))));
        if !retryable {
            break None;
        }
    };
    done.attempts = attempts;
    let Some((attempt, mut resp, lease)) = won else {
        let (status, detail) =
            last_error.unwrap_or((StatusCode::BAD_GATEWAY, "no backend could be tried".into()));
        tracing::debug!(request_id = ?done.request_id, %status, %detail, "request failed");
        let detail = match status {
            StatusCode::GATEWAY_TIMEOUT => "backend did not answer in time",
            _ => "backend unreachable",
        };
        return local(done, status, detail);
    };
    let backend = &attempt.backend;
    let upstream_us = attempt.sent_at.elapsed().as_micros() as u64;
    backend.observe_latency(upstream_us as f64);
    pool.state.observe_latency(upstream_us as f64);
    let status = resp.status();
    if pool.passive.unhealthy_status.matches(status.as_u16())
        && backend.record_failure(&pool.passive)
    {
        ejected(app, pool, backend, &format!("status {}", status.as_u16()));
    }
    done.backend = Some(backend.clone());
    done.in_flight = Some(attempt.guard);
    done.upstream_us = Some(upstream_us);
    done.status = status.as_u16();
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_up) = client_upgrade
    {
        let upstream_up = hyper::upgrade::on(&mut resp);
        return tunnel(app, resp, client_up, upstream_up, done, &request_id, route);
    }
    let (mut rparts, rbody) = resp.into_parts();
    hdr::remove_hop_by_hop(&mut rparts.headers, false);
    hdr::apply_ops(&mut rparts.headers, &route.headers.response);
    rparts.headers.insert(X_REQUEST_ID.clone(), request_id);
    if let Some(c) = set_cookie {
        rparts.headers.append(header::SET_COOKIE, c);
    }
    rparts.version = client_version;
    let stream = UpstreamStream::new(rbody, lease, done, pool.timeouts.idle);
    Response::from_parts(rparts, ProxyBody::Upstream(Box::new(stream)))
}

/// Waits, in the pool's queue, until a member below its `max_requests` may take
/// the request. The wait is bounded by the queue's timeout, counted from the first
/// time this request queued; a full queue refuses at once.
async fn wait_in_queue(
    pool: &Pool,
    balancer: &Balancer,
    key: &PickKey<'_>,
    tried: &Tried,
    deadline: &mut Option<Instant>,
) -> Result<(), &'static str> {
    let Some(queue) = pool.queue else {
        return Ok(());
    };
    let state = &pool.state;
    let deadline = *deadline.get_or_insert_with(|| Instant::now() + queue.timeout);
    if state.queued.fetch_add(1, Relaxed) >= queue.size {
        state.queued.fetch_sub(1, Relaxed);
        state.queue_rejected.fetch_add(1, Relaxed);
        return Err("every backend is at its max_requests and the queue is full");
    }
    let _queued = QueuedGuard(&state.queued);
    let freed = state.slot_freed.notified();
    tokio::pin!(freed);
    // Registered before looking again, so that a slot freed in between is not
    // missed.
    freed.as_mut().enable();
    if !matches!(pool.pick(balancer, key, tried), Pick::Full) {
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

/// Counts a request as waiting in a pool's queue while it exists.
struct QueuedGuard<'a>(&'a std::sync::atomic::AtomicU32);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

type SendFuture = std::pin::Pin<Box<dyn std::future::Future<Output = client::SendResult> + Send>>;

/// A send that owns what it needs, so that a hedged loser can finish on its own.
fn send_owned(
    backend: Arc<Backend>,
    request: Request<UpstreamBody>,
    timeouts: crate::config::Timeouts,
) -> SendFuture {
    Box::pin(send_tracked(backend, request, timeouts))
}

/// Sends, keeping the request counted as waiting for an answer until it has one.
async fn send_tracked(
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

/// One try of a request on one backend.
struct Attempt {
    idx: usize,
    backend: Arc<Backend>,
    guard: InFlight,
    sent_at: Instant,
}

impl Attempt {
    /// Counts the request in flight on the member and shapes it for its protocol.
    /// `slot`: the in-flight count already reserved on a capped member (hedges
    /// have none: they may pass a cap).
    fn start(
        pool: &Pool,
        idx: usize,
        mut request: Request<UpstreamBody>,
        out: &Outgoing,
        slot: Option<InFlight>,
    ) -> (Attempt, Request<UpstreamBody>) {
        let backend = pool.members[idx].backend.clone();
        address_for(
            &mut request,
            out,
            backend.address.scheme,
            &backend.address.key,
        );
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

fn ejected(app: &App, pool: &Pool, backend: &Backend, reason: &str) {
    tracing::warn!(pool = %pool.name, backend = %backend.key(), %reason, "backend taken out for passive_health.fail_duration");
    app.events.record(
        "backend.ejected",
        Some(&pool.name),
        Some(backend.key()),
        format!(
            "{} failures within {:?}: {reason}",
            pool.passive.max_fails, pool.passive.fail_duration
        ),
    );
}

/// Answers 101 to the client and joins the two upgraded connections. The request
/// stays in flight (and counted on its backend) until the tunnel closes.
fn tunnel(
    app: &Arc<App>,
    resp: Response<Incoming>,
    client_up: hyper::upgrade::OnUpgrade,
    upstream_up: hyper::upgrade::OnUpgrade,
    done: Completion,
    request_id: &HeaderValue,
    route: &Route,
) -> Response<ProxyBody> {
    let (mut rparts, _) = resp.into_parts();
    hdr::remove_hop_by_hop(&mut rparts.headers, true);
    hdr::apply_ops(&mut rparts.headers, &route.headers.response);
    rparts
        .headers
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    app.tunnels.spawn(async move {
        let mut done = done;
        let (c, u) = match tokio::try_join!(client_up, upstream_up) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                done.aborted = true;
                return;
            }
        };
        let mut c = hyper_util::rt::TokioIo::new(c);
        let mut u = hyper_util::rt::TokioIo::new(u);
        match tokio::io::copy_bidirectional(&mut c, &mut u).await {
            Ok((to_up, to_client)) => {
                done.bytes_out = to_client;
                if let Some(s) = &done.bytes_in {
                    s.bytes.fetch_add(to_up, Relaxed);
                }
            }
            Err(_) => done.aborted = true,
        }
    });
    Response::from_parts(rparts, ProxyBody::empty())
}
