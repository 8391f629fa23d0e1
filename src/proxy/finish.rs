//! The last phase: when a request is over (its response body sent or
//! abandoned), the backend's in-flight count drops, and the metrics, the access
//! log and the trace get one record each.

use super::ProxyContext;
use crate::snapshot::{Snapshot, Target};
use crate::upstream::backend::Backend;
use crate::upstream::body::BodyStats;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Completion {
    proxy: Arc<ProxyContext>,
    snapshot: Arc<Snapshot>,
    pub route: Option<usize>,
    pub backend: Option<Arc<Backend>>,
    /// Keeps the backend's in-flight count until the request is over.
    pub in_flight: Option<crate::upstream::in_flight::InFlight>,
    pub started: Instant,
    /// From `started` to the end, read once by [`Completion::finish`] for the
    /// metrics and the access log.
    pub duration: Duration,
    /// Time until the chosen backend's response headers, in microseconds.
    pub upstream_us: Option<u64>,
    pub attempts: u32,
    pub status: u16,
    pub method: Method,
    pub request_id: HeaderValue,
    pub client_ip: IpAddr,
    /// Host and path, kept only when the access log is on (the request's own
    /// values: a reference is counted, nothing copied).
    pub host: Option<HeaderValue>,
    pub path: Option<PathAndQuery>,
    pub bytes_in: Option<Arc<BodyStats>>,
    pub bytes_out: u64,
    /// The response was cut short (client gone, backend error mid-body).
    pub aborted: bool,
    /// The split variant chosen, if the route splits traffic.
    pub variant: Option<usize>,
    /// Spans to export, when tracing is on.
    pub trace: Option<Box<crate::otlp::RequestTrace>>,
    /// The request's protocol, kept only when the access log is on (the
    /// line has `null` without it).
    pub protocol: Option<http::Version>,
    /// User agent, referer, TLS: kept only when the access log is on and the
    /// request has one of them (no allocation for a request with none).
    pub details: Option<Box<RequestDetails>>,
    done: bool,
}

impl Completion {
    pub(crate) fn new(
        proxy: Arc<ProxyContext>,
        snapshot: Arc<Snapshot>,
        started: Instant,
        method: Method,
        request_id: HeaderValue,
        client_ip: IpAddr,
    ) -> Self {
        Completion {
            proxy,
            snapshot,
            route: None,
            backend: None,
            in_flight: None,
            started,
            duration: Duration::ZERO,
            upstream_us: None,
            attempts: 0,
            status: 0,
            method,
            request_id,
            client_ip,
            host: None,
            path: None,
            bytes_in: None,
            bytes_out: 0,
            aborted: false,
            variant: None,
            trace: None,
            protocol: None,
            details: None,
            done: false,
        }
    }

    pub fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.in_flight = None;
        self.duration = self.started.elapsed();
        self.count();
        if let Some(t) = self.trace.take()
            && let Some(otlp) = self.proxy.otlp.load().as_ref()
        {
            use opentelemetry::KeyValue;
            let mut attrs = vec![
                KeyValue::new("http.request.method", self.method.to_string()),
                KeyValue::new("http.response.status_code", i64::from(self.status)),
                KeyValue::new(
                    "fulcrum.request_id",
                    self.request_id.to_str().unwrap_or("").to_string(),
                ),
                KeyValue::new("fulcrum.route", self.route_name().to_string()),
                KeyValue::new("fulcrum.pool", self.pool_name().to_string()),
                KeyValue::new("fulcrum.backend", self.backend_key().to_string()),
                KeyValue::new("fulcrum.attempts", i64::from(self.attempts)),
                KeyValue::new("client.address", self.client_ip.to_string()),
            ];
            if let Some(p) = &self.path {
                attrs.push(KeyValue::new("url.path", p.as_str().to_string()));
            }
            otlp.finish(*t, attrs, self.status);
        }
        if let Some(log) = self.proxy.access_log.load().as_ref() {
            log.write(self);
        }
    }

    fn count(&self) {
        let t = &self.proxy.telemetry;
        let route = self.route.map(|i| &self.snapshot.routes[i].name);
        t.record(
            self.status,
            route,
            self.pool_name_arc(),
            self.backend.as_ref().map(|b| &b.key_arc),
            self.duration.as_secs_f64(),
            self.upstream_us,
        );
    }

    pub fn route_name(&self) -> &str {
        self.route
            .map(|i| &*self.snapshot.routes[i].name)
            .unwrap_or("")
    }

    /// The pool of the route (the chosen variant of a split).
    fn pool_name_arc(&self) -> Option<&Arc<str>> {
        let route = &self.snapshot.routes[self.route?];
        match &route.target {
            Target::Pool { pool, .. } => Some(&pool.name_arc),
            Target::Split { variants, .. } => Some(&variants.get(self.variant?)?.pool.name_arc),
        }
    }

    pub fn pool_name(&self) -> &str {
        self.pool_name_arc().map(|p| &**p).unwrap_or("")
    }

    pub fn backend_key(&self) -> &str {
        self.backend.as_ref().map(|b| b.key()).unwrap_or("")
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What the access log wants from a request beyond what the handler keeps
/// anyway; captured only while the access log is on.
pub struct RequestDetails {
    pub user_agent: Option<http::HeaderValue>,
    pub referer: Option<http::HeaderValue>,
    pub tls: Option<super::headers::TlsInfo>,
}

impl RequestDetails {
    /// `present`: which fields the head holds; absent ones are not looked up.
    /// `None` when the request has none of them.
    pub fn capture(
        req: &http::request::Parts,
        peer: &super::headers::PeerInfo,
        present: super::headers::Present,
    ) -> Option<Box<Self>> {
        let get = |there: bool, name| there.then(|| req.headers.get(name).cloned()).flatten();
        let details = RequestDetails {
            user_agent: get(present.user_agent, http::header::USER_AGENT),
            referer: get(present.referer, http::header::REFERER),
            tls: peer.tls.clone(),
        };
        let any =
            details.user_agent.is_some() || details.referer.is_some() || details.tls.is_some();
        any.then(|| Box::new(details))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::{PeerInfo, Present, TlsInfo};

    #[test]
    fn details_are_kept_only_for_a_request_that_has_some() {
        let (parts, ()) = http::Request::builder()
            .header("user-agent", "ua/1")
            .header("referer", "http://r.test/")
            .body(())
            .unwrap()
            .into_parts();
        let mut peer = PeerInfo::new("127.0.0.1".parse().unwrap());
        let none = Present::default();
        assert!(RequestDetails::capture(&parts, &peer, none).is_none());
        let ua = Present {
            user_agent: true,
            ..none
        };
        let d = RequestDetails::capture(&parts, &peer, ua).unwrap();
        assert_eq!(d.user_agent.as_ref().unwrap(), "ua/1");
        assert!(d.referer.is_none() && d.tls.is_none());
        let referer = Present {
            referer: true,
            ..none
        };
        let d = RequestDetails::capture(&parts, &peer, referer).unwrap();
        assert_eq!(d.referer.as_ref().unwrap(), "http://r.test/");
        peer.tls = Some(TlsInfo {
            version: "TLSv1.3",
            sni: None,
        });
        let d = RequestDetails::capture(&parts, &peer, none).unwrap();
        assert_eq!(d.tls.as_ref().unwrap().version, "TLSv1.3");
    }
}
