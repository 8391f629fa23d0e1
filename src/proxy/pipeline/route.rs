//! Phase 2: which route serves the request, and which pool of it (a split picks
//! a variant, sticky by cookie when asked).

use super::{ConnCtx, Refusal, RequestCtx};
use crate::proxy::headers as hdr;
use crate::snapshot::router::normalize_host;
use crate::snapshot::{Route, Snapshot, Target};
use crate::upstream::balance::Balancer;
use crate::upstream::pool::Pool;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Where a request goes.
pub(super) struct Routed<'s> {
    pub(super) route: &'s Route,
    pub(super) pool: &'s Arc<Pool>,
    /// The route's balancing override, else the pool's own.
    pub(super) balancer: &'s Balancer,
    /// A cookie to set (a sticky split's new variant).
    pub(super) set_cookie: Option<HeaderValue>,
}

pub(super) fn route<'s>(
    conn: &ConnCtx,
    rc: &mut RequestCtx,
    parts: &Parts,
    snapshot: &'s Snapshot,
) -> Result<Routed<'s>, Refusal> {
    // Without host routes the path alone decides: the host is not read.
    let host = match snapshot.router.has_hosts() {
        true => normalize_host(rc.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("")),
        false => Cow::Borrowed(""),
    };
    let Some(route_idx) = snapshot.router.find(&host, parts.uri.path()) else {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "no route"));
    };
    let route = &snapshot.routes[route_idx];
    rc.done.route = Some(route_idx);
    let Some((pool, balancer, variant, set_cookie)) = choose_pool(route, &parts.headers) else {
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "no pool"));
    };
    rc.done.variant = variant;
    // With trace export on, this request gets a span continuing the client's
    // traceparent, and the backend is told that span is its parent.
    if let Some(otlp) = conn.proxy.otlp.load().as_ref() {
        let (trace, header) = otlp.start_request(
            format!("{} {}", parts.method, route.name),
            rc.present
                .added
                .then(|| parts.headers.get(&hdr::TRACEPARENT))
                .flatten(),
        );
        rc.done.trace = Some(Box::new(trace));
        rc.traceparent = header;
    }
    Ok(Routed {
        route,
        pool,
        balancer: balancer.unwrap_or(&pool.balancer),
        set_cookie,
    })
}

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
