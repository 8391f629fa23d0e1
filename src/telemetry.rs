//! Request counters and latency histograms, updated when each request completes.
//!
//! Counting must not add a shared lock to the request path, so every worker thread
//! counts into its own shard (a mutex only its thread takes, except during a
//! scrape); `/metrics` sums the shards. Keys are the addresses of the shared name
//! strings (no string hashing per request); each entry keeps those strings alive,
//! so an address cannot be reused for another name while it is counted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Upper bounds of the latency histogram buckets, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// (route, pool, backend) name pointers and the status code.
type CountKey = (usize, usize, usize, u16);

pub struct CountEntry {
    pub route: Arc<str>,
    pub pool: Arc<str>,
    pub backend: Arc<str>,
    pub code: u16,
    pub count: u64,
}

/// Per-bucket (not cumulative) counts; the last slot counts what exceeds every
/// bound.
#[derive(Clone)]
pub struct Histogram {
    pub buckets: [u64; BUCKETS.len() + 1],
    pub count: u64,
    pub sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; BUCKETS.len() + 1],
            count: 0,
            sum: 0.0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += secs;
    }

    pub fn add(&mut self, other: &Histogram) {
        for i in 0..self.buckets.len() {
            self.buckets[i] += other.buckets[i];
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// (upper bound, count in that bucket) pairs, ending with +Inf.
    pub fn pairs(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().copied())
            .collect()
    }
}

#[derive(Default)]
struct ShardData {
    counts: HashMap<CountKey, CountEntry>,
    /// Per route name pointer: the route's name and its latency histogram.
    latency: HashMap<usize, (Arc<str>, Histogram)>,
}

#[derive(Default)]
struct Shard {
    data: Mutex<ShardData>,
}

thread_local! {
    static LOCAL: RefCell<Option<(usize, Arc<Shard>)>> = const { RefCell::new(None) };
}

static NEXT_TELEMETRY_ID: AtomicU64 = AtomicU64::new(1);

pub struct Telemetry {
    id: usize,
    shards: Mutex<Vec<Arc<Shard>>>,
    pub requests: AtomicU64,
    /// Responses by class: index 1..=5 for 1xx..5xx, 0 for "no response".
    pub by_class: [AtomicU64; 6],
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            id: NEXT_TELEMETRY_ID.fetch_add(1, Relaxed) as usize,
            shards: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            by_class: Default::default(),
        }
    }
}

impl Telemetry {
    fn with_shard<R>(&self, f: impl FnOnce(&mut ShardData) -> R) -> Option<R> {
        LOCAL.with(|cell| {
            let mut slot = cell.borrow_mut();
            let fresh = match &*slot {
                Some((id, _)) => *id != self.id,
                None => true,
            };
            if fresh {
                let shard = Arc::new(Shard::default());
                if let Ok(mut all) = self.shards.lock() {
                    all.push(shard.clone());
                }
                *slot = Some((self.id, shard));
            }
            let (_, shard) = slot.as_ref()?;
            let mut data = shard.data.lock().ok()?;
            Some(f(&mut data))
        })
    }

    /// Counts one finished request: by status class always; by route, pool,
    /// backend and code, with its latency, when it matched a route.
    pub(crate) fn record(
        &self,
        status: u16,
        route: Option<&Arc<str>>,
        pool: Option<&Arc<str>>,
        backend: Option<&Arc<str>>,
        secs: f64,
    ) {
        self.requests.fetch_add(1, Relaxed);
        let class = (status / 100).min(5) as usize;
        self.by_class[class].fetch_add(1, Relaxed);
        let Some(route) = route else {
            return;
        };
        let ptr = |a: Option<&Arc<str>>| a.map_or(0, |a| Arc::as_ptr(a) as *const u8 as usize);
        self.with_shard(|d| {
            let key = (ptr(Some(route)), ptr(pool), ptr(backend), status);
            d.counts
                .entry(key)
                .or_insert_with(|| CountEntry {
                    route: route.clone(),
                    pool: pool.cloned().unwrap_or_else(|| Arc::from("")),
                    backend: backend.cloned().unwrap_or_else(|| Arc::from("")),
                    code: status,
                    count: 0,
                })
                .count += 1;
            d.latency
                .entry(key.0)
                .or_insert_with(|| (route.clone(), Histogram::default()))
                .1
                .observe(secs);
        });
    }

    /// Request counts summed over all threads, by (route, pool, backend, code).
    /// Entries for backends no longer present are dropped (their label sets
    /// disappear from /metrics).
    pub fn request_counts(
        &self,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Vec<((String, String, String, u16), u64)> {
        let mut sum: HashMap<(String, String, String, u16), u64> = HashMap::new();
        if let Ok(shards) = self.shards.lock() {
            for shard in shards.iter() {
                let Ok(mut d) = shard.data.lock() else {
                    continue;
                };
                d.counts
                    .retain(|_, e| e.backend.is_empty() || keep(&e.pool, &e.backend));
                for e in d.counts.values() {
                    *sum.entry((
                        e.route.to_string(),
                        e.pool.to_string(),
                        e.backend.to_string(),
                        e.code,
                    ))
                    .or_insert(0) += e.count;
                }
            }
        }
        let mut v: Vec<_> = sum.into_iter().collect();
        v.sort();
        v
    }

    /// Latency histograms summed over all threads, by route.
    pub fn latency(&self) -> Vec<(String, Histogram)> {
        let mut sum: HashMap<String, Histogram> = HashMap::new();
        if let Ok(shards) = self.shards.lock() {
            for shard in shards.iter() {
                let Ok(d) = shard.data.lock() else { continue };
                for (name, h) in d.latency.values() {
                    sum.entry(name.to_string()).or_default().add(h);
                }
            }
        }
        let mut v: Vec<_> = sum.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
