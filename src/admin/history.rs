//! The last 15 minutes of traffic, for the dashboard's graphs and timeline:
//! every [`INTERVAL`], a task turns the request counters into rates per pool
//! and per backend (requests/s, 5xx responses/s, mean time to response
//! headers) and notes each backend's state. `GET /api/v1/history` returns it.
//!
//! One sampler per process, started with the admin API; it reads the same
//! counters as `/metrics`, so the request path does no extra work.

use super::AdminContext;
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub(crate) const INTERVAL: Duration = Duration::from_secs(2);
const KEEP: usize = 15 * 60 / 2;

/// Rates over one interval.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Rates {
    rps: f64,
    eps: f64,
    /// Mean time to response headers over the interval; `None` without traffic.
    latency_ms: Option<f64>,
}

struct Sample {
    ts: f64,
    pools: HashMap<String, (Rates, Option<u32>)>,
    /// By `pool/address`: rates and state word.
    backends: HashMap<String, (Rates, &'static str)>,
}

/// Cumulative counters at the previous look.
#[derive(Default, Clone, Copy)]
struct Totals {
    requests: u64,
    errors: u64,
    latency_sum: f64,
    latency_count: u64,
}

#[derive(Default)]
pub struct History {
    running: AtomicBool,
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Starts the sampler unless it runs already.
    pub(crate) fn ensure_running(ctx: &Arc<AdminContext>) {
        if ctx.history.running.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(sample_loop(Arc::downgrade(ctx), ctx.history.clone()));
    }

    /// The kept samples as columns: `t` and, per pool and per backend, the
    /// series `rps`, `eps`, `latency_ms` (null without traffic) and `state`
    /// (backends) or `level` (pools: the failover level serving).
    pub(crate) fn json(&self) -> Value {
        let Ok(samples) = self.samples.lock() else {
            return Value::Null;
        };
        let t: Vec<f64> = samples.iter().map(|s| s.ts).collect();
        let mut pools: serde_json::Map<String, Value> = Default::default();
        let mut backends: serde_json::Map<String, Value> = Default::default();
        let n = samples.len();
        for (i, s) in samples.iter().enumerate() {
            for (name, (r, level)) in &s.pools {
                let e = pools.entry(name.clone()).or_insert_with(|| series(n, true));
                put(e, i, r);
                e["level"][i] = json!(level);
            }
            for (key, (r, state)) in &s.backends {
                let e = backends
                    .entry(key.clone())
                    .or_insert_with(|| series(n, false));
                put(e, i, r);
                e["state"][i] = json!(state);
            }
        }
        json!({
            "interval_seconds": INTERVAL.as_secs_f64(),
            "t": t,
            "pools": pools,
            "backends": backends,
        })
    }
}

fn series(n: usize, pool: bool) -> Value {
    let empty = Value::Array(vec![Value::Null; n]);
    let mut v = json!({ "rps": empty, "eps": empty, "latency_ms": empty });
    v[if pool { "level" } else { "state" }] = empty;
    v
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn put(e: &mut Value, i: usize, r: &Rates) {
    e["rps"][i] = json!(round(r.rps));
    e["eps"][i] = json!(round(r.eps));
    e["latency_ms"][i] = json!(r.latency_ms.map(round));
}

async fn sample_loop(ctx: Weak<AdminContext>, history: Arc<History>) {
    let mut prev: HashMap<(String, String), Totals> = HashMap::new();
    let mut prev_at = std::time::Instant::now();
    loop {
        let Some(a) = ctx.upgrade() else { return };
        let stop = a.shutdown.clone();
        let now = std::time::Instant::now();
        let rt = a.proxy.snapshot.load_full();
        let totals = totals(&rt, &a.proxy.telemetry);
        let dt = now.duration_since(prev_at).as_secs_f64();
        if !prev.is_empty() && dt > 0.0 {
            let s = sample(&rt, &totals, &prev, dt);
            if let Ok(mut samples) = history.samples.lock() {
                if samples.len() == KEEP {
                    samples.pop_front();
                }
                samples.push_back(s);
            }
        }
        prev = totals;
        prev_at = now;
        drop((a, rt));
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Cumulative counters by (pool, backend address); requests that reached no
/// backend (a local 502/503) are under an empty address.
fn totals(rt: &Snapshot, telemetry: &Telemetry) -> HashMap<(String, String), Totals> {
    let live: std::collections::HashSet<(String, String)> = rt
        .backends()
        .map(|(p, m)| (p.name.clone(), m.backend.key().to_string()))
        .collect();
    let keep = |p: &str, b: &str| live.contains(&(p.to_string(), b.to_string()));
    let mut out: HashMap<(String, String), Totals> = HashMap::new();
    // Keep the baseline of a backend that has not been asked anything yet.
    for k in &live {
        out.entry(k.clone()).or_default();
    }
    for ((_, pool, backend, code), n) in telemetry.request_counts(&keep) {
        if pool.is_empty() {
            continue;
        }
        let t = out.entry((pool, backend)).or_default();
        t.requests += n;
        if code >= 500 {
            t.errors += n;
        }
    }
    for ((pool, backend), h) in telemetry.backend_latency(&keep) {
        let t = out.entry((pool, backend)).or_default();
        t.latency_sum += h.sum;
        t.latency_count += h.count;
    }
    out
}

fn sample(
    rt: &Snapshot,
    now: &HashMap<(String, String), Totals>,
    prev: &HashMap<(String, String), Totals>,
    dt: f64,
) -> Sample {
    let clock = crate::clock::now_ms();
    let mut pools: HashMap<String, (Totals, Totals)> = HashMap::new();
    let mut out = Sample {
        ts: (crate::clock::unix_secs_f64() * 10.0).round() / 10.0,
        pools: HashMap::new(),
        backends: HashMap::new(),
    };
    for ((pool, backend), t) in now {
        let p = prev
            .get(&(pool.clone(), backend.clone()))
            .copied()
            .unwrap_or(*t);
        // A counter that went backwards (a backend removed and added again)
        // starts over.
        let p = if t.requests < p.requests {
            Totals::default()
        } else {
            p
        };
        let e = pools.entry(pool.clone()).or_default();
        e.0.requests += t.requests;
        e.0.errors += t.errors;
        e.0.latency_sum += t.latency_sum;
        e.0.latency_count += t.latency_count;
        e.1.requests += p.requests;
        e.1.errors += p.errors;
        e.1.latency_sum += p.latency_sum;
        e.1.latency_count += p.latency_count;
        if !backend.is_empty() {
            out.backends
                .insert(format!("{pool}/{backend}"), (rates(t, &p, dt), "up"));
        }
    }
    for (pool, m) in rt.backends() {
        if let Some(b) = out
            .backends
            .get_mut(&format!("{}/{}", pool.name, m.backend.key()))
        {
            b.1 = super::api::state_word(m, clock);
        }
    }
    for p in rt.pools.iter() {
        let level = (p.levels.len() > 1).then(|| {
            p.state
                .failover
                .serving()
                .or_else(|| p.healthy_level(clock))
                .unwrap_or(p.levels[0])
        });
        let (t, pr) = pools.remove(&p.name).unwrap_or_default();
        out.pools
            .insert(p.name.clone(), (rates(&t, &pr, dt), level));
    }
    out
}

fn rates(now: &Totals, prev: &Totals, dt: f64) -> Rates {
    let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
    let count = now.latency_count.saturating_sub(prev.latency_count);
    Rates {
        rps: d(now.requests, prev.requests) / dt,
        eps: d(now.errors, prev.errors) / dt,
        latency_ms: (count > 0)
            .then(|| (now.latency_sum - prev.latency_sum).max(0.0) / count as f64 * 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_an_interval() {
        let prev = Totals {
            requests: 10,
            errors: 1,
            latency_sum: 0.5,
            latency_count: 10,
        };
        let now = Totals {
            requests: 30,
            errors: 5,
            latency_sum: 1.5,
            latency_count: 30,
        };
        let r = rates(&now, &prev, 2.0);
        assert_eq!(r.rps, 10.0);
        assert_eq!(r.eps, 2.0);
        assert!((r.latency_ms.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(rates(&now, &now, 2.0).latency_ms, None);
    }
}
