//! Active health checks: one task per checked backend, reconciled on every
//! config change. They write the backend's health atomics (the request path only
//! reads them), report changes as events, and wake the pool's failover controller.
//! Passive health (failures seen in live traffic) lives in `upstream::backend`.

pub(crate) mod ejections;

use crate::config::HealthCheckConfig;
use crate::events::{EventKind, Events};
use crate::snapshot::Snapshot;
use crate::upstream::backend::{AdminState, Backend};
use crate::upstream::body::UpstreamBody;
use crate::upstream::client::{self, Conn};
use crate::upstream::pool::PoolState;
use http::{HeaderValue, Request, header};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The running checkers, keyed by backend identity.
pub(crate) struct HealthChecks {
    events: Arc<Events>,
    running: HashMap<usize, Checker>,
}

struct Checker {
    config: HealthCheckConfig,
    /// Keeps the backend alive: the map is keyed by its address.
    _backend: Arc<Backend>,
    task: JoinHandle<()>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HealthChecks {
    pub(crate) fn new(events: Arc<Events>) -> Self {
        HealthChecks {
            events,
            running: HashMap::new(),
        }
    }

    /// Starts checkers for backends that need one, restarts those whose check
    /// changed, and stops the rest.
    pub(crate) fn reconcile(&mut self, snapshot: &Snapshot) {
        type Wanted = (Arc<Backend>, HealthCheckConfig, Arc<PoolState>);
        let mut wanted: HashMap<usize, Wanted> = HashMap::new();
        for (p, m) in snapshot.backends() {
            if let Some(hc) = &m.health_check {
                wanted.insert(
                    Arc::as_ptr(&m.backend) as usize,
                    (m.backend.clone(), hc.clone(), p.state.clone()),
                );
            }
        }
        self.running
            .retain(|key, c| wanted.get(key).is_some_and(|(_, hc, _)| *hc == c.config));
        for (key, (backend, hc, pool)) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            backend.checked.store(true, Relaxed);
            let task = tokio::spawn(run(self.events.clone(), pool, backend.clone(), hc.clone()));
            self.running.insert(
                key,
                Checker {
                    config: hc,
                    _backend: backend,
                    task,
                },
            );
        }
        // Backends without a check any more count as up.
        for (_, m) in snapshot.backends() {
            if m.health_check.is_none() && m.backend.checked.swap(false, Relaxed) {
                m.backend.set_active_up(true);
            }
        }
    }
}

/// The verdict of one probe.
pub(crate) enum Probe {
    Pass,
    Fail(String),
}

/// The check's request; `None` when its path is not a valid request target.
fn probe_request(backend: &Backend, hc: &HealthCheckConfig) -> Option<Request<UpstreamBody>> {
    let mut req = Request::new(UpstreamBody::Empty);
    *req.uri_mut() = hc.path.parse().ok()?;
    if let Ok(h) = HeaderValue::from_str(&backend.address.key) {
        req.headers_mut().insert(header::HOST, h);
    }
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("fulcrum-health-check"),
    );
    if backend.address.scheme == crate::config::Scheme::H2c {
        *req.version_mut() = http::Version::HTTP_2;
        let uri = format!("http://{}{}", backend.address.key, hc.path);
        if let Ok(u) = uri.parse() {
            *req.uri_mut() = u;
        }
    }
    Some(req)
}

/// Sends one health-check request and judges the answer.
pub(crate) async fn probe(backend: &Arc<Backend>, hc: &HealthCheckConfig) -> Probe {
    let Some(req) = probe_request(backend, hc) else {
        return Probe::Fail(format!("invalid path {}", hc.path));
    };
    let timeouts = crate::config::Timeouts {
        connect: hc.timeout,
        response_header: hc.timeout,
        idle: Duration::from_secs(90),
    };
    let work = async {
        let mut sent =
            client::send(backend, req, &Default::default(), &timeouts, Conn::Pooled).await;
        // A pooled connection the backend closed while idle says nothing about
        // its health: the check goes out again on a new one.
        if let Err((client::SendError::Closed(_), _)) = sent
            && let Some(again) = probe_request(backend, hc)
        {
            sent = client::send(backend, again, &Default::default(), &timeouts, Conn::New).await;
        }
        match sent {
            Ok((resp, lease)) => {
                let status = resp.status().as_u16();
                // Read the (small) body so the connection can be reused.
                let mut body = resp.into_body();
                if http_body_util::BodyExt::collect(&mut body).await.is_ok() {
                    client::release(backend, lease, &mut body);
                }
                if hc.expected_status.matches(status) {
                    Probe::Pass
                } else {
                    Probe::Fail(format!("status {status}"))
                }
            }
            Err((e, _)) => Probe::Fail(e.to_string()),
        }
    };
    match tokio::time::timeout(hc.timeout, work).await {
        Ok(p) => p,
        Err(_) => Probe::Fail(format!("no answer within {:?}", hc.timeout)),
    }
}

/// A backend's checker: probes every `interval` (more often while the backend is
/// down, so that it rejoins quickly) and flips its health after the thresholds.
async fn run(
    events: Arc<Events>,
    pool: Arc<PoolState>,
    backend: Arc<Backend>,
    hc: HealthCheckConfig,
) {
    loop {
        let verdict = probe(&backend, &hc).await;
        if judge(&events, &backend, &hc, verdict) {
            pool.health_changed.notify_one();
        }
        let wait = if backend.active_up() {
            hc.interval
        } else {
            hc.down_interval()
        };
        tokio::time::sleep(wait).await;
    }
}

/// Applies one probe's verdict; true when the backend's availability changed.
fn judge(events: &Events, backend: &Backend, hc: &HealthCheckConfig, verdict: Probe) -> bool {
    match verdict {
        Probe::Pass => {
            backend.consecutive_fail.store(0, Relaxed);
            let ok = backend.consecutive_ok.fetch_add(1, Relaxed) + 1;
            backend.last_check_error.store(None);
            let mut changed = false;
            if !backend.active_up() && ok >= hc.healthy_threshold {
                backend.set_active_up(true);
                backend.clear_ejection();
                tracing::info!(pool = %backend.pool, backend = %backend.key(), "backend is up: health check passed");
                events.record(
                    EventKind::BackendUp,
                    Some(&backend.pool),
                    Some(backend.key()),
                    format!("health check {} passed {ok} time(s)", hc.path),
                );
                changed = true;
            }
            if backend.admin_state() == AdminState::Enabling {
                enabled(events, backend, "passed its health check: back in rotation");
                changed = true;
            }
            changed
        }
        Probe::Fail(reason) => {
            backend.consecutive_ok.store(0, Relaxed);
            backend.check_failures.fetch_add(1, Relaxed);
            let fails = backend.consecutive_fail.fetch_add(1, Relaxed) + 1;
            let mut changed = false;
            if backend.active_up() && fails >= hc.unhealthy_threshold {
                backend.set_active_up(false);
                tracing::warn!(pool = %backend.pool, backend = %backend.key(), %reason, "backend is down: health check failed");
                events.record(
                    EventKind::BackendDown,
                    Some(&backend.pool),
                    Some(backend.key()),
                    format!("health check {} failed {fails} time(s): {reason}", hc.path),
                );
                changed = true;
            }
            backend.last_check_error.store(Some(Arc::new(reason)));
            changed
        }
    }
}

/// An enabled backend takes traffic again.
fn enabled(events: &Events, backend: &Backend, why: &str) {
    backend.set_admin_state(AdminState::Active);
    backend.up_since_ms.store(crate::clock::now_ms(), Relaxed);
    events.record(
        EventKind::BackendEnabled,
        Some(&backend.pool),
        Some(backend.key()),
        why,
    );
}

/// Enabling a backend without a health check: traffic returns once it accepts a
/// connection.
pub(crate) async fn confirm_reachable(
    events: Arc<Events>,
    pool: Arc<PoolState>,
    backend: Arc<Backend>,
    timeout: Duration,
) {
    loop {
        if backend.admin_state() != AdminState::Enabling {
            return;
        }
        let ok = crate::upstream::io::connect(&backend.address, timeout)
            .await
            .is_ok();
        if ok {
            if backend.admin_state() == AdminState::Enabling {
                enabled(&events, &backend, "reachable again: back in rotation");
                pool.health_changed.notify_one();
            }
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendAddress;

    fn check(unhealthy: u32, healthy: u32) -> HealthCheckConfig {
        HealthCheckConfig {
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
            ..HealthCheckConfig::default()
        }
    }

    #[test]
    fn thresholds_decide_when_health_flips() {
        let events = Events::default();
        let b = Backend::new("p", BackendAddress::parse("10.0.0.1:80").unwrap(), None);
        let hc = check(2, 2);
        let fail = || Probe::Fail("status 500".into());
        assert!(
            !judge(&events, &b, &hc, fail()),
            "one failure is not enough"
        );
        assert!(b.active_up());
        assert!(judge(&events, &b, &hc, fail()));
        assert!(!b.active_up());
        assert!(!judge(&events, &b, &hc, Probe::Pass));
        assert!(judge(&events, &b, &hc, Probe::Pass));
        assert!(b.active_up());
        let kinds: Vec<_> = events.recent(10).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::BackendDown, EventKind::BackendUp]);
    }

    #[test]
    fn an_enabled_backend_returns_on_its_first_pass() {
        let events = Events::default();
        let b = Backend::new("p", BackendAddress::parse("10.0.0.1:80").unwrap(), None);
        b.set_admin_state(AdminState::Enabling);
        assert!(judge(&events, &b, &check(1, 1), Probe::Pass));
        assert_eq!(b.admin_state(), AdminState::Active);
        assert_eq!(events.recent(1)[0].kind, EventKind::BackendEnabled);
    }
}
