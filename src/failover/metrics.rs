//! Failover metrics, per pool with backups.

use crate::snapshot::Snapshot;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::atomic::Ordering::Relaxed;

pub(crate) fn encode(rt: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let pools: Vec<_> = rt.pools.iter().filter(|p| p.levels.len() > 1).collect();
    let now = crate::clock::now_ms();
    let label = |name: &str| vec![("pool".to_string(), name.to_string())];
    {
        let mut fam = enc.encode_descriptor(
            "fulcrum_failover_active",
            "1 while traffic is served by a backup level",
            None,
            MetricType::Gauge,
        )?;
        for p in &pools {
            let primary = p.levels[0];
            let level = p
                .state
                .failover
                .serving()
                .unwrap_or_else(|| p.healthy_level(now).unwrap_or(primary));
            ConstGauge::new(i64::from(level != primary))
                .encode(fam.encode_family(&label(&p.name))?)?;
        }
    }
    {
        let mut fam = enc.encode_descriptor(
            "fulcrum_failover_events",
            "Failover activations and recoveries",
            None,
            MetricType::Counter,
        )?;
        for p in &pools {
            ConstCounter::new(p.state.failover.events_total.load(Relaxed))
                .encode(fam.encode_family(&label(&p.name))?)?;
        }
    }
    {
        let mut fam = enc.encode_descriptor(
            "fulcrum_failover_last_activation_timestamp_seconds",
            "Unix time of the last failover activation (0 if none)",
            None,
            MetricType::Gauge,
        )?;
        for p in &pools {
            ConstGauge::new(p.state.failover.last_activation_unix.load(Relaxed) as i64)
                .encode(fam.encode_family(&label(&p.name))?)?;
        }
    }
    {
        let mut fam = enc.encode_descriptor(
            "fulcrum_failover_duration_seconds",
            "How long the current failover has lasted, or the last one if none is active",
            None,
            MetricType::Gauge,
        )?;
        for p in &pools {
            let f = &p.state.failover;
            let since = f.since_ms.load(Relaxed);
            let ms = if since > 0 {
                now.saturating_sub(since)
            } else {
                f.last_duration_ms.load(Relaxed)
            };
            ConstGauge::new(ms as f64 / 1000.0).encode(fam.encode_family(&label(&p.name))?)?;
        }
    }
    Ok(())
}
