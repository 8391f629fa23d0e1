//! `GET /metrics`: OpenMetrics 1.0 text (via prometheus-client) to a scraper that
//! asks for it in `Accept`, the classic Prometheus text format 0.0.4 otherwise
//! (rewritten from the same output: counter families take their `_total` name,
//! no `# EOF`).
//!
//! Everything is read at scrape time from the live state (request counters from
//! the per-thread shards, backend and pool atomics, failover state), so label sets
//! of backends that were removed disappear with them.

use super::AdminContext;
use crate::snapshot::Snapshot;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Debug)]
struct Collector {
    ctx: std::sync::Weak<AdminContext>,
}

/// Writes one metric family whose samples are (labels, value).
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut fam = enc.encode_descriptor(name, help, None, kind)?;
    for (l, m) in samples {
        m.encode(fam.encode_family(&l)?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(app) = self.ctx.upgrade() else {
            return Ok(());
        };
        let rt = app.proxy.snapshot.load_full();
        let live: HashSet<(String, String)> = rt
            .backends()
            .map(|(p, m)| (p.name.clone(), m.backend.key().to_string()))
            .collect();
        encode_requests(&app, &live, &mut enc)?;
        encode_backends(&rt, &mut enc)?;
        encode_pools(&rt, &mut enc)?;
        encode_cache(&rt, &mut enc)?;
        encode_backend_latency(&app, &live, &mut enc)?;
        crate::failover::metrics::encode(&rt, &mut enc)?;
        encode_certificates(&app, &mut enc)?;
        encode_state(&app, &rt, &mut enc)?;
        encode_listeners(&app, &mut enc)?;
        encode_protection(&app, &rt, &mut enc)?;
        encode_process(&mut enc)?;
        encode_discovery(&app, &mut enc)?;
        encode_cluster(&app, &mut enc)
    }
}

fn encode_requests(
    app: &AdminContext,
    live: &HashSet<(String, String)>,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let counts = app
        .proxy
        .telemetry
        .request_counts(&|pool, backend| live.contains(&(pool.to_string(), backend.to_string())));
    family(
        enc,
        "fulcrum_requests",
        "Requests answered, by route, pool, backend and status code",
        MetricType::Counter,
        counts
            .into_iter()
            .map(|((route, pool, backend, code), n)| {
                (
                    labels(&[
                        ("route", &route),
                        ("pool", &pool),
                        ("backend", &backend),
                        ("code", &code.to_string()),
                    ]),
                    ConstCounter::new(n),
                )
            })
            .collect(),
    )?;

    {
        let mut fam = enc.encode_descriptor(
            "fulcrum_request_duration_seconds",
            "Time from request head to the end of the response, by route",
            None,
            MetricType::Histogram,
        )?;
        for (route, h) in app.proxy.telemetry.latency() {
            let l = labels(&[("route", &route)]);
            let mut m = fam.encode_family(&l)?;
            m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum,
                h.count,
                &h.pairs(),
                None,
            )?;
        }
    }
    Ok(())
}

fn encode_backends(rt: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let now = crate::clock::now_ms();
    let mut up = Vec::new();
    let mut in_flight = Vec::new();
    let mut check_failures = Vec::new();
    let mut failures = Vec::new();
    for (p, m) in rt.backends() {
        let l = backend_labels(&p.name, m);
        up.push((
            l.clone(),
            ConstGauge::new(i64::from(m.backend.healthy(now))),
        ));
        in_flight.push((
            l.clone(),
            ConstGauge::new(m.backend.in_flight.load(Relaxed) as i64),
        ));
        check_failures.push((
            l.clone(),
            ConstCounter::new(m.backend.check_failures.load(Relaxed)),
        ));
        failures.push((l, ConstCounter::new(m.backend.failures.load(Relaxed))));
    }
    family(
        enc,
        "fulcrum_backend_up",
        "1 when the backend passes its health checks",
        MetricType::Gauge,
        up,
    )?;
    family(
        enc,
        "fulcrum_backend_in_flight",
        "Requests in flight on the backend",
        MetricType::Gauge,
        in_flight,
    )?;
    family(
        enc,
        "fulcrum_health_check_failures",
        "Failed active health checks",
        MetricType::Counter,
        check_failures,
    )?;
    family(
        enc,
        "fulcrum_backend_failures",
        "Failed attempts on the backend (connect errors, timeouts, unhealthy statuses)",
        MetricType::Counter,
        failures,
    )?;
    Ok(())
}

fn encode_pools(rt: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let per_pool =
        |f: &dyn Fn(&crate::upstream::pool::Pool) -> u64| -> Vec<(Labels, ConstCounter)> {
            rt.pools
                .iter()
                .map(|p| (labels(&[("pool", &p.name)]), ConstCounter::new(f(p))))
                .collect()
        };
    family(
        enc,
        "fulcrum_retries",
        "Attempts beyond the first, by pool",
        MetricType::Counter,
        per_pool(&|p| p.state.retries.load(Relaxed)),
    )?;
    family(
        enc,
        "fulcrum_hedges",
        "Hedged requests (sent to a second backend), by pool",
        MetricType::Counter,
        per_pool(&|p| p.state.hedges.load(Relaxed)),
    )?;
    family(
        enc,
        "fulcrum_queue_rejected",
        "Requests refused with a 503 because every backend was at its max_requests and the queue was full or its timeout passed, by pool",
        MetricType::Counter,
        per_pool(&|p| p.state.queue_rejected.load(Relaxed)),
    )?;
    let queued: Vec<(Labels, ConstGauge)> = rt
        .pools
        .iter()
        .map(|p| {
            (
                labels(&[("pool", &p.name)]),
                ConstGauge::new(i64::from(p.state.queued.load(Relaxed))),
            )
        })
        .collect();
    family(
        enc,
        "fulcrum_queue_waiting",
        "Requests waiting for a backend below its max_requests, by pool",
        MetricType::Gauge,
        queued,
    )?;
    let mut split = Vec::new();
    for r in &rt.routes {
        if let crate::snapshot::Target::Split { variants, .. } = &r.target {
            for v in variants {
                split.push((
                    labels(&[("route", &r.name), ("pool", &v.pool.name)]),
                    ConstCounter::new(v.requests.load(Relaxed)),
                ));
            }
        }
    }
    family(
        enc,
        "fulcrum_split_requests",
        "Requests sent to each variant of a split route",
        MetricType::Counter,
        split,
    )?;
    Ok(())
}

/// The response caches of the routes that have one.
fn encode_cache(rt: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let caches: Vec<_> = rt
        .routes
        .iter()
        .filter_map(|r| r.cache.as_ref().map(|c| (&*r.name, c)))
        .collect();
    if caches.is_empty() {
        return Ok(());
    }
    let mut requests = Vec::new();
    for (route, c) in &caches {
        for (result, n) in c.counters.snapshot() {
            requests.push((
                labels(&[("route", route), ("result", result)]),
                ConstCounter::new(n),
            ));
        }
    }
    family(
        enc,
        "fulcrum_cache_requests",
        "Requests on caching routes, by route and result (hit, miss, stale, revalidated, bypass, coalesced)",
        MetricType::Counter,
        requests,
    )?;
    let gauge = |f: &dyn Fn(&crate::cache::RouteCache) -> i64| -> Vec<(Labels, ConstGauge)> {
        caches
            .iter()
            .map(|(route, c)| (labels(&[("route", route)]), ConstGauge::new(f(c))))
            .collect()
    };
    family(
        enc,
        "fulcrum_cache_bytes",
        "Bytes held by the route's cache (bounded by its max_size)",
        MetricType::Gauge,
        gauge(&|c| c.store.bytes() as i64),
    )?;
    family(
        enc,
        "fulcrum_cache_entries",
        "Keys held by the route's cache",
        MetricType::Gauge,
        gauge(&|c| c.store.entries() as i64),
    )?;
    let evictions = caches
        .iter()
        .map(|(route, c)| {
            (
                labels(&[("route", route)]),
                ConstCounter::new(c.store.evictions()),
            )
        })
        .collect();
    family(
        enc,
        "fulcrum_cache_evictions",
        "Entries the route's cache evicted to stay within max_size",
        MetricType::Counter,
        evictions,
    )
}

fn encode_certificates(
    app: &AdminContext,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let rt = app.proxy.snapshot.load();
    let certs: Vec<(Labels, ConstGauge)> =
        crate::tls::certificates(&rt.config, &app.proxy.acme.load())
            .into_iter()
            .flat_map(|c| {
                let t = c.not_after;
                let source = c.source.clone();
                c.names.into_iter().map(move |n| {
                    (
                        labels(&[("name", &n), ("source", &source)]),
                        ConstGauge::new(t),
                    )
                })
            })
            .collect();
    family(
        enc,
        "fulcrum_certificate_expiry_timestamp_seconds",
        "When each served certificate expires (Unix time)",
        MetricType::Gauge,
        certs,
    )?;
    Ok(())
}

fn encode_state(
    app: &AdminContext,
    rt: &Snapshot,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let gauge = |v: i64| vec![(Labels::new(), ConstGauge::new(v))];
    family(
        enc,
        "fulcrum_config_generation",
        "Generation of the running config",
        MetricType::Gauge,
        gauge(rt.generation as i64),
    )?;
    let reload = &app.proxy.telemetry.reload;
    family(
        enc,
        "fulcrum_config_last_reload_successful",
        "1 when the last reload (file, SIGHUP or API) was applied, 0 when it was rejected",
        MetricType::Gauge,
        gauge(i64::from(reload.successful.load(Relaxed))),
    )?;
    family(
        enc,
        "fulcrum_config_last_reload_success_timestamp_seconds",
        "Unix time of the last config successfully loaded (start or reload)",
        MetricType::Gauge,
        vec![(
            Labels::new(),
            ConstGauge::new(reload.last_success_ms.load(Relaxed) as f64 / 1000.0),
        )],
    )?;
    family(
        enc,
        "fulcrum_build_info",
        "Always 1; the labels say which build is running",
        MetricType::Gauge,
        vec![(
            labels(&[
                ("version", env!("CARGO_PKG_VERSION")),
                (
                    "profile",
                    if cfg!(debug_assertions) {
                        "debug"
                    } else {
                        "release"
                    },
                ),
            ]),
            ConstGauge::new(1),
        )],
    )?;
    family(
        enc,
        "fulcrum_uptime_seconds",
        "Seconds since the process started",
        MetricType::Gauge,
        gauge(app.started.elapsed().as_secs() as i64),
    )?;
    let dropped = app
        .proxy
        .access_log
        .load()
        .as_ref()
        .map_or(0, |l| l.dropped.load(Relaxed));
    family(
        enc,
        "fulcrum_access_log_dropped",
        "Access log lines dropped because the writer fell behind",
        MetricType::Counter,
        vec![(Labels::new(), ConstCounter::new(dropped))],
    )?;
    Ok(())
}

/// Container discovery, while it is configured.
fn encode_discovery(
    app: &AdminContext,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let Some(status) = app.discovery.status.load_full() else {
        return Ok(());
    };
    family(
        enc,
        "fulcrum_discovery_connected",
        "1 while the container engine's event stream is connected, else 0",
        MetricType::Gauge,
        vec![(Labels::new(), ConstGauge::new(i64::from(status.connected)))],
    )?;
    family(
        enc,
        "fulcrum_discovery_containers",
        "Running containers seen by discovery, by state (eligible, starting, unhealthy, paused, draining, skipped)",
        MetricType::Gauge,
        status
            .counts()
            .into_iter()
            .map(|(state, n)| (labels(&[("state", state)]), ConstGauge::new(n as i64)))
            .collect(),
    )?;
    family(
        enc,
        "fulcrum_discovery_events",
        "Events received from the container engine",
        MetricType::Counter,
        vec![(
            Labels::new(),
            ConstCounter::new(app.discovery.events_total.load(Relaxed)),
        )],
    )
}

fn encode_cluster(app: &AdminContext, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    if let Some(c) = app.cluster.get() {
        let primary = i64::from(c.role() == crate::cluster::role::Role::Primary);
        family(
            enc,
            "fulcrum_cluster_role",
            "1 while this node is the primary (holds the VIP), else 0",
            MetricType::Gauge,
            vec![(labels(&[("node", c.node_id())]), ConstGauge::new(primary))],
        )?;
        family(
            enc,
            "fulcrum_cluster_term",
            "Current Raft term",
            MetricType::Gauge,
            vec![(
                labels(&[("node", c.node_id())]),
                ConstGauge::new(c.term() as i64),
            )],
        )?;
        family(
            enc,
            "fulcrum_cluster_transitions",
            "Role changes of this node since it started",
            MetricType::Counter,
            vec![(
                labels(&[("node", c.node_id())]),
                ConstCounter::new(c.transitions()),
            )],
        )?;
    }
    Ok(())
}

/// The two text formats `/metrics` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Classic,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// OpenMetrics when the `Accept` header prefers it (Prometheus sends
    /// `application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,...`),
    /// the classic format otherwise (no header, `*/*`, `text/plain`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Classic;
        };
        let (mut open, mut classic) = (0.0f32, 0.0f32);
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut version_ok = true;
            for p in parts {
                if let Some(v) = p.strip_prefix("q=") {
                    q = v.parse().unwrap_or(0.0);
                } else if let Some(v) = p.strip_prefix("version=") {
                    version_ok = matches!(v, "1.0.0" | "0.0.1");
                }
            }
            match media.as_str() {
                "application/openmetrics-text" if version_ok => open = open.max(q),
                "text/plain" | "text/*" | "*/*" => classic = classic.max(q),
                _ => {}
            }
        }
        if open > 0.0 && open >= classic {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }
}

pub(super) fn render(app: &Arc<AdminContext>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collector {
        ctx: Arc::downgrade(app),
    }));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    match format {
        Format::OpenMetrics => out,
        Format::Classic => to_classic(&out),
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: a counter family is
/// named with its `_total` suffix (as its samples are), `info` becomes a gauge
/// named `_info`, `unknown` becomes `untyped`; `# UNIT`, `_created` samples and
/// `# EOF` go. Label and HELP escaping is the same in both formats for what
/// this exporter writes (HELP texts hold no backslash or quote).
fn to_classic(open: &str) -> String {
    let mut out = String::with_capacity(open.len());
    let mut help: Option<&str> = None;
    let mut counters: HashSet<&str> = HashSet::new();
    for line in open.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => {
                    counters.insert(name);
                    (format!("{name}_total"), "counter")
                }
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let sample = line.split(['{', ' ']).next().unwrap_or("");
        if let Some(base) = sample.strip_suffix("_created")
            && counters.contains(base)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `pool` and `backend`, plus the backend's `region` and `name` when it has them.
fn backend_labels(pool: &str, m: &crate::upstream::member::Member) -> Labels {
    let mut l = labels(&[("pool", pool), ("backend", m.backend.key())]);
    if let Some(r) = &m.region {
        l.push(("region".into(), r.clone()));
    }
    if let Some(n) = &m.name {
        l.push(("name".into(), n.clone()));
    }
    l
}

fn encode_backend_latency(
    app: &AdminContext,
    live: &HashSet<(String, String)>,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut fam = enc.encode_descriptor(
        "fulcrum_backend_response_duration_seconds",
        "Time from sending a request to the backend to its response headers, by pool and backend",
        None,
        MetricType::Histogram,
    )?;
    let keep = |pool: &str, backend: &str| live.contains(&(pool.to_string(), backend.to_string()));
    for ((pool, backend), h) in app.proxy.telemetry.backend_latency(&keep) {
        let l = labels(&[("pool", &pool), ("backend", &backend)]);
        fam.encode_family(&l)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum,
                h.count,
                &h.pairs(),
                None,
            )?;
    }
    Ok(())
}

fn encode_listeners(
    app: &AdminContext,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let listeners = app.proxy.telemetry.listeners();
    let each =
        |f: &dyn Fn(&crate::telemetry::ListenerStats) -> u64| -> Vec<(Labels, ConstCounter)> {
            listeners
                .iter()
                .map(|l| (labels(&[("listener", &l.address)]), ConstCounter::new(f(l))))
                .collect()
        };
    family(
        enc,
        "fulcrum_connections_open",
        "Client connections open, by listener",
        MetricType::Gauge,
        listeners
            .iter()
            .map(|l| {
                (
                    labels(&[("listener", &l.address)]),
                    ConstGauge::new(l.open() as i64),
                )
            })
            .collect(),
    )?;
    family(
        enc,
        "fulcrum_connections",
        "Client connections accepted, by listener",
        MetricType::Counter,
        each(&|l| l.accepted()),
    )?;
    family(
        enc,
        "fulcrum_received_bytes",
        "Bytes received from clients (TLS included), by listener",
        MetricType::Counter,
        each(&|l| l.received_bytes()),
    )?;
    family(
        enc,
        "fulcrum_sent_bytes",
        "Bytes sent to clients (TLS included), by listener",
        MetricType::Counter,
        each(&|l| l.sent_bytes()),
    )
}

/// What the proxy refused to protect its backends: requests over a route's
/// rate limit, bodies that stalled, connections over the per-client cap.
fn encode_protection(
    app: &AdminContext,
    rt: &Snapshot,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "fulcrum_rate_limited",
        "Requests answered 429 by a route's rate_limit, by route",
        MetricType::Counter,
        rt.routes
            .iter()
            .filter_map(|r| {
                let l = r.rate_limit.as_ref()?;
                Some((
                    labels(&[("route", &r.name)]),
                    ConstCounter::new(l.refused.load(Relaxed)),
                ))
            })
            .collect(),
    )?;
    family(
        enc,
        "fulcrum_request_body_timeouts",
        "Requests answered 408 because their body stalled for limits.body_read_timeout",
        MetricType::Counter,
        vec![(
            Labels::new(),
            ConstCounter::new(app.proxy.telemetry.body_read_timeouts.load(Relaxed)),
        )],
    )?;
    family(
        enc,
        "fulcrum_connections_refused",
        "Client connections closed at accept by limits.max_connections_per_client, by listener",
        MetricType::Counter,
        app.proxy
            .telemetry
            .listeners()
            .iter()
            .map(|l| {
                (
                    labels(&[("listener", &l.address)]),
                    ConstCounter::new(l.refused_per_client.load(Relaxed)),
                )
            })
            .collect(),
    )
}

fn encode_process(enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let p = super::process::read();
    let one = |v: Option<f64>| -> Vec<(Labels, ConstGauge<f64>)> {
        v.map(|v| (Labels::new(), ConstGauge::new(v)))
            .into_iter()
            .collect()
    };
    family(
        enc,
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        MetricType::Counter,
        p.cpu_seconds
            .map(|v| (Labels::new(), ConstCounter::new(v)))
            .into_iter()
            .collect(),
    )?;
    family(
        enc,
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        MetricType::Gauge,
        one(p.resident_bytes.map(|v| v as f64)),
    )?;
    family(
        enc,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        MetricType::Gauge,
        one(p.virtual_bytes.map(|v| v as f64)),
    )?;
    family(
        enc,
        "process_open_fds",
        "Number of open file descriptors",
        MetricType::Gauge,
        one(p.open_fds.map(|v| v as f64)),
    )?;
    family(
        enc,
        "process_max_fds",
        "Maximum number of open file descriptors",
        MetricType::Gauge,
        one(p.max_fds.map(|v| v as f64)),
    )?;
    family(
        enc,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        MetricType::Gauge,
        one(p.start_time_seconds),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Classic
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0,text/plain")),
            Format::Classic
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=2.0.0")),
            Format::Classic
        );
    }

    #[test]
    fn classic_names_counters_with_total() {
        let open = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{code=\"200\"} 3\na_requests_created 1.5\n# HELP up Up.\n# TYPE up gauge\nup 1\n# EOF\n";
        assert_eq!(
            to_classic(open),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{code=\"200\"} 3\n# HELP up Up.\n# TYPE up gauge\nup 1\n"
        );
    }
}
