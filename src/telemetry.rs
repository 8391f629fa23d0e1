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

fn ptr(s: &Arc<str>) -> usize {
    Arc::as_ptr(s) as *const u8 as usize
}

/// Connections and bytes of one listener. Each read and write adds to these
/// (one relaxed atomic add per system call, no lock), into the block of the
/// worker thread that accepted the connection: with per-core runtimes every
/// worker has a socket of its own on the listener, and one block shared by all
/// would move its cache line between cores at every read and write. Readers sum
/// the blocks.
#[derive(Debug)]
pub struct ListenerStats {
    /// The bound address, the `listener` label.
    pub address: String,
    /// One block per worker (socket) of the listener, by its index.
    workers: Box<[WorkerCounters]>,
    /// Connections closed at accept: `limits.max_connections_per_client`.
    pub refused_per_client: AtomicU64,
}

/// One worker's connections and bytes on one listener, alone on its cache
/// lines (128 bytes: the line and the neighbour that x86 and some ARM cores
/// fetch with it), so that workers counting at once do not share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerCounters {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub received_bytes: AtomicU64,
    pub sent_bytes: AtomicU64,
}

impl ListenerStats {
    /// Counters for a listener with `workers` sockets (at least one block).
    pub fn new(address: String, workers: usize) -> Self {
        ListenerStats {
            address,
            workers: (0..workers.max(1))
                .map(|_| WorkerCounters::default())
                .collect(),
            refused_per_client: AtomicU64::new(0),
        }
    }

    /// The block of worker `i` (its socket's index; `i < workers`).
    pub fn worker(&self, i: usize) -> &WorkerCounters {
        &self.workers[i]
    }

    fn sum(&self, f: impl Fn(&WorkerCounters) -> &AtomicU64) -> u64 {
        self.workers
            .iter()
            .fold(0u64, |n, w| n.wrapping_add(f(w).load(Relaxed)))
    }

    /// Connections open now, over every worker.
    pub fn open(&self) -> u64 {
        self.sum(|w| &w.open)
    }

    /// Connections accepted, over every worker.
    pub fn accepted(&self) -> u64 {
        self.sum(|w| &w.accepted)
    }

    /// Bytes received from clients, over every worker.
    pub fn received_bytes(&self) -> u64 {
        self.sum(|w| &w.received_bytes)
    }

    /// Bytes sent to clients, over every worker.
    pub fn sent_bytes(&self) -> u64 {
        self.sum(|w| &w.sent_bytes)
    }
}

/// The outcome of the last reload, for `fulcrum_config_last_reload_*`.
pub struct ReloadStatus {
    pub successful: std::sync::atomic::AtomicBool,
    /// Unix time in milliseconds of the last config successfully loaded
    /// (the start counts as one).
    pub last_success_ms: AtomicU64,
    pub last_error: arc_swap::ArcSwapOption<String>,
}

impl ReloadStatus {
    /// A config was loaded and applied (or found valid and unchanged).
    pub fn succeeded(&self) {
        self.successful.store(true, Relaxed);
        self.last_success_ms
            .store((crate::clock::unix_secs_f64() * 1000.0) as u64, Relaxed);
        self.last_error.store(None);
    }

    /// A reload was refused: the gauge drops to 0 and a `config.rejected`
    /// event says why (the previous config keeps serving). `source` says where
    /// the new config came from (the file, the API).
    pub fn rejected(&self, events: &crate::events::Events, source: &str, errors: &[String]) {
        self.successful.store(false, Relaxed);
        let first = errors
            .first()
            .map(String::as_str)
            .unwrap_or("unknown error");
        let message = match errors.len() {
            0 | 1 => format!("{source}: {first}; the previous configuration keeps serving"),
            n => format!(
                "{source}: {first} (and {} more); the previous configuration keeps serving",
                n - 1
            ),
        };
        self.last_error.store(Some(Arc::new(message.clone())));
        events.record(
            crate::events::EventKind::ConfigRejected,
            None,
            None,
            message,
        );
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "last_successful": self.successful.load(Relaxed),
            "last_success": self.last_success_ms.load(Relaxed) as f64 / 1000.0,
            "last_error": self.last_error.load().as_deref().cloned(),
        })
    }
}

impl Default for ReloadStatus {
    fn default() -> Self {
        ReloadStatus {
            successful: std::sync::atomic::AtomicBool::new(true),
            last_success_ms: AtomicU64::new((crate::clock::unix_secs_f64() * 1000.0) as u64),
            last_error: arc_swap::ArcSwapOption::empty(),
        }
    }
}

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

/// The shard maps are keyed by addresses and status codes, nothing a client
/// chooses: a multiply-and-rotate hash does (std's SipHash cost ~1,000
/// instructions per request over the three lookups).
#[derive(Default, Clone, Copy)]
struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type AddrMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<AddrHasher>>;

#[derive(Default)]
struct ShardData {
    counts: AddrMap<CountKey, CountEntry>,
    /// Per route name pointer: the route's name and its latency histogram.
    latency: AddrMap<usize, (Arc<str>, Histogram)>,
    /// Per backend key pointer: pool, backend and the time to response headers.
    backend_latency: AddrMap<usize, BackendLatency>,
}

struct BackendLatency {
    pool: Arc<str>,
    backend: Arc<str>,
    histogram: Histogram,
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
    /// The label of requests that matched no route (and of refused ones).
    none: Arc<str>,
    /// Connection and byte counters of every running listener.
    listeners: Mutex<Vec<std::sync::Weak<ListenerStats>>>,
    /// Outcome of the last config reload (file, SIGHUP or API).
    pub reload: ReloadStatus,
    pub requests: AtomicU64,
    /// Responses by class: index 1..=5 for 1xx..5xx, 0 for "no response".
    pub by_class: [AtomicU64; 6],
    /// Requests answered 408 because their body stalled (`limits.body_read_timeout`).
    pub body_read_timeouts: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            id: NEXT_TELEMETRY_ID.fetch_add(1, Relaxed) as usize,
            shards: Mutex::new(Vec::new()),
            none: Arc::from(""),
            listeners: Mutex::new(Vec::new()),
            reload: ReloadStatus::default(),
            requests: AtomicU64::new(0),
            by_class: Default::default(),
            body_read_timeouts: AtomicU64::new(0),
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

    /// Counts one finished request by route, pool, backend and code (a request
    /// that matched no route under `route=""`), with its latency, and the
    /// backend's time to response headers (`upstream_us`).
    pub(crate) fn record(
        &self,
        status: u16,
        route: Option<&Arc<str>>,
        pool: Option<&Arc<str>>,
        backend: Option<&Arc<str>>,
        secs: f64,
        upstream_us: Option<u64>,
    ) {
        self.requests.fetch_add(1, Relaxed);
        let class = (status / 100).min(5) as usize;
        self.by_class[class].fetch_add(1, Relaxed);
        let route = route.unwrap_or(&self.none);
        self.with_shard(|d| {
            let key = (
                ptr(route),
                pool.map_or(0, ptr),
                backend.map_or(0, ptr),
                status,
            );
            d.counts
                .entry(key)
                .or_insert_with(|| CountEntry {
                    route: route.clone(),
                    pool: pool.unwrap_or(&self.none).clone(),
                    backend: backend.unwrap_or(&self.none).clone(),
                    code: status,
                    count: 0,
                })
                .count += 1;
            d.latency
                .entry(key.0)
                .or_insert_with(|| (route.clone(), Histogram::default()))
                .1
                .observe(secs);
            if let (Some(pool), Some(backend), Some(us)) = (pool, backend, upstream_us) {
                d.backend_latency
                    .entry(key.2)
                    .or_insert_with(|| BackendLatency {
                        pool: pool.clone(),
                        backend: backend.clone(),
                        histogram: Histogram::default(),
                    })
                    .histogram
                    .observe(us as f64 / 1e6);
            }
        });
    }

    /// A request refused before it reached the handler (hyper answered it
    /// itself: a malformed head, or one larger than `limits.max_header_bytes`).
    pub fn request_refused(&self, status: u16) {
        self.requests.fetch_add(1, Relaxed);
        self.by_class[(status / 100).min(5) as usize].fetch_add(1, Relaxed);
        self.with_shard(|d| {
            d.counts
                .entry((ptr(&self.none), 0, 0, status))
                .or_insert_with(|| CountEntry {
                    route: self.none.clone(),
                    pool: self.none.clone(),
                    backend: self.none.clone(),
                    code: status,
                    count: 0,
                })
                .count += 1;
        });
    }

    /// Registers a listener's counters; they are reported while it lives.
    pub fn add_listener(&self, stats: &Arc<ListenerStats>) {
        if let Ok(mut all) = self.listeners.lock() {
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(stats));
        }
    }

    /// The counters of every running listener, by address.
    pub fn listeners(&self) -> Vec<Arc<ListenerStats>> {
        let mut v: Vec<_> = match self.listeners.lock() {
            Ok(all) => all.iter().filter_map(std::sync::Weak::upgrade).collect(),
            Err(_) => Vec::new(),
        };
        v.sort_by(|a, b| a.address.cmp(&b.address));
        v
    }

    /// Time-to-response-headers histograms summed over all threads, by (pool,
    /// backend); backends no longer present are dropped.
    pub fn backend_latency(
        &self,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Vec<((String, String), Histogram)> {
        let mut sum: HashMap<(String, String), Histogram> = HashMap::new();
        if let Ok(shards) = self.shards.lock() {
            for shard in shards.iter() {
                let Ok(mut d) = shard.data.lock() else {
                    continue;
                };
                d.backend_latency.retain(|_, e| keep(&e.pool, &e.backend));
                for e in d.backend_latency.values() {
                    sum.entry((e.pool.to_string(), e.backend.to_string()))
                        .or_default()
                        .add(&e.histogram);
                }
            }
        }
        let mut v: Vec<_> = sum.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each worker counts into its own block, on its own cache lines, and the
    /// readers see the sum of them all.
    #[test]
    fn listener_counters_are_per_worker_and_read_as_their_sum() {
        let stats = Arc::new(ListenerStats::new("test".into(), 4));
        let a = stats.worker(0) as *const WorkerCounters as usize;
        let b = stats.worker(1) as *const WorkerCounters as usize;
        assert_eq!(a % 128, 0);
        assert!(b - a >= 128, "{} bytes apart", b - a);
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    let w = stats.worker(i);
                    for _ in 0..1000 {
                        w.accepted.fetch_add(1, Relaxed);
                        w.open.fetch_add(1, Relaxed);
                        w.received_bytes.fetch_add(i as u64 + 1, Relaxed);
                        w.sent_bytes.fetch_add(2 * (i as u64 + 1), Relaxed);
                    }
                    // Half of them closed again.
                    for _ in 0..500 {
                        w.open.fetch_sub(1, Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a counting thread");
        }
        assert_eq!(stats.accepted(), 4000);
        assert_eq!(stats.open(), 2000);
        assert_eq!(stats.received_bytes(), 1000 * (1 + 2 + 3 + 4));
        assert_eq!(stats.sent_bytes(), 2000 * (1 + 2 + 3 + 4));
        assert_eq!(stats.worker(2).accepted.load(Relaxed), 1000);
        assert_eq!(stats.worker(3).received_bytes.load(Relaxed), 4000);
        // No worker threads: one block.
        let one = ListenerStats::new("one".into(), 0);
        one.worker(0).sent_bytes.fetch_add(7, Relaxed);
        assert_eq!(one.sent_bytes(), 7);
    }
}
