//! `GET /metrics`: Prometheus text exposition (via prometheus-client).
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
        let Some(ctx) = self.ctx.upgrade() else {
            return Ok(());
        };
        let rt = ctx.proxy.snapshot.load_full();
        requests(&mut enc, &ctx.proxy, &rt)?;
        backends(&mut enc, &rt)?;
        pools(&mut enc, &rt)?;
        crate::failover::metrics::encode(&rt, &mut enc)?;
        node(&mut enc, &ctx, &rt)?;
        cluster(&mut enc, &ctx)
    }
}

type Enc<'a, 'b> = &'a mut DescriptorEncoder<'b>;

/// Request counts and latency, from the per-thread shards.
fn requests(
    enc: Enc,
    proxy: &crate::proxy::ProxyContext,
    rt: &Snapshot,
) -> Result<(), std::fmt::Error> {
    let live: HashSet<(String, String)> = rt
        .backends()
        .map(|(p, m)| (p.name.clone(), m.backend.key().to_string()))
        .collect();

    let counts = proxy
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
        for (route, h) in proxy.telemetry.latency() {
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

/// Health, load and failures of every backend.
fn backends(enc: Enc, rt: &Snapshot) -> Result<(), std::fmt::Error> {
    let now = crate::clock::now_ms();
    let mut up = Vec::new();
    let mut in_flight = Vec::new();
    let mut check_failures = Vec::new();
    let mut failures = Vec::new();
    for (p, m) in rt.backends() {
        let l = labels(&[("pool", &p.name), ("backend", m.backend.key())]);
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

/// Retries, hedges, queues and split shares, by pool.
fn pools(enc: Enc, rt: &Snapshot) -> Result<(), std::fmt::Error> {
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
                    labels(&[("route", &*r.name), ("pool", &v.pool.name)]),
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

/// Certificates, config generation, uptime, access log drops.
fn node(enc: Enc, ctx: &AdminContext, rt: &Snapshot) -> Result<(), std::fmt::Error> {
    let proxy = &ctx.proxy;
    let certs: Vec<(Labels, ConstGauge)> = crate::tls::certificates(&rt.config, &proxy.acme.load())
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
    let gauge = |v: i64| vec![(Labels::new(), ConstGauge::new(v))];
    family(
        enc,
        "fulcrum_config_generation",
        "Generation of the running config",
        MetricType::Gauge,
        gauge(rt.generation as i64),
    )?;
    family(
        enc,
        "fulcrum_uptime_seconds",
        "Seconds since the process started",
        MetricType::Gauge,
        gauge(ctx.started.elapsed().as_secs() as i64),
    )?;
    let dropped = proxy
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

/// This node's cluster role, term and transitions.
fn cluster(enc: Enc, ctx: &AdminContext) -> Result<(), std::fmt::Error> {
    if let Some(c) = ctx.cluster.get() {
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

pub(super) fn render(ctx: &Arc<AdminContext>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collector {
        ctx: Arc::downgrade(ctx),
    }));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}
