//! Byte-bounded storage of one route's responses. A key (the URL as the route's
//! `cache.key` reads it) holds up to [`VARIANT_CAP`] variants, told apart by
//! the request headers the response varies on and the key's header/cookie parts.
//!
//! The memory bound is enforced on insert by a sharded, scan-resistant cache
//! (CLOCK-Pro): a lookup takes one shard's read lock, never a global one. Each
//! shard holds a share of `max_size`, so the shard count is chosen to leave every
//! shard room for several of the largest objects.

use super::policy::{Freshness, VARIANT_CAP};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// One stored response.
#[derive(Debug)]
pub struct Stored {
    pub status: StatusCode,
    /// Without hop-by-hop fields, `Set-Cookie` or `private="F"` fields.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it was received (monotonic: the resident time of §4.2.3).
    pub received: Instant,
    /// `corrected_initial_age`, seconds.
    pub initial_age: u64,
    pub freshness: Freshness,
    /// May answer a request carrying `Authorization` (§3.5).
    pub auth_ok: bool,
    /// The request's values of the headers the response varies on.
    pub vary: Vec<(HeaderName, Option<Vec<u8>>)>,
    /// The request's values of the key's header/cookie parts.
    pub extra: Vec<Option<Vec<u8>>>,
    pub tags: Vec<String>,
    /// A background refresh is under way (stale-while-revalidate).
    pub updating: AtomicBool,
}

impl Stored {
    /// Current age in seconds.
    pub fn age(&self, now: Instant) -> u64 {
        self.initial_age
            .saturating_add(now.saturating_duration_since(self.received).as_secs())
    }

    /// Bytes this entry counts against `max_size`.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|(k, v)| k.as_str().len() + v.as_ref().map_or(0, Vec::len) + 32)
            .sum();
        let extra: usize = self
            .extra
            .iter()
            .map(|v| v.as_ref().map_or(0, Vec::len) + 24)
            .sum();
        let tags: usize = self.tags.iter().map(|t| t.len() + 24).sum();
        (self.body.len() + headers + vary + extra + tags + 256) as u64
    }

    /// Whether this variant answers a request with these headers and key parts.
    pub fn matches(&self, req: &HeaderMap, extra: &[Option<Vec<u8>>]) -> bool {
        self.extra == extra
            && self
                .vary
                .iter()
                .all(|(name, v)| super::policy::vary_value(req, name) == *v)
    }

    fn same_variant(&self, other: &Stored) -> bool {
        self.extra == other.extra && self.vary == other.vary
    }
}

/// The variants stored under one key, oldest first.
#[derive(Clone)]
pub struct Slot(pub Arc<[Arc<Stored>]>);

impl Slot {
    /// The newest variant that answers this request.
    pub fn select(&self, req: &HeaderMap, extra: &[Option<Vec<u8>>]) -> Option<&Arc<Stored>> {
        self.0.iter().rev().find(|s| s.matches(req, extra))
    }
}

#[derive(Clone)]
struct ByteWeigher;

impl Weighter<Box<str>, Slot> for ByteWeigher {
    fn weight(&self, key: &Box<str>, slot: &Slot) -> u64 {
        key.len() as u64 + slot.0.iter().map(|s| s.weight()).sum::<u64>()
    }
}

/// Counts evictions.
#[derive(Clone, Default)]
struct Evictions(Arc<AtomicU64>);

impl Lifecycle<Box<str>, Slot> for Evictions {
    /// Evicted slots are dropped after the shard's lock is released.
    type RequestState = Vec<Slot>;

    fn on_evict(&self, state: &mut Vec<Slot>, _key: Box<str>, val: Slot) {
        self.0.fetch_add(1, Relaxed);
        state.push(val);
    }
}

pub struct Store {
    cache: Cache<Box<str>, Slot, ByteWeigher, DefaultHashBuilder, Evictions>,
    /// No slot may weigh more than one shard holds.
    shard_cap: u64,
    evictions: Arc<AtomicU64>,
}

/// Typical stored object, for sizing the item tables.
const TYPICAL_OBJECT: u64 = 16 << 10;

impl Store {
    pub fn new(max_size: u64, max_object_size: u64) -> Store {
        // Shards as a power of two, each with room for ~4 of the largest objects.
        let by_size = (max_size / max_object_size.max(1) / 4).max(1);
        let shards = (1u64 << (63 - by_size.leading_zeros())).min(64) as usize;
        let evictions = Evictions::default();
        let items = (max_size / TYPICAL_OBJECT).clamp(64, 1 << 20) as usize;
        let options = quick_cache::OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(items)
            .weight_capacity(max_size)
            .build()
            .expect("cache options");
        let cache = Cache::with_options(
            options,
            ByteWeigher,
            DefaultHashBuilder::default(),
            evictions.clone(),
        );
        let shard_cap = cache.shard_capacity();
        Store {
            cache,
            shard_cap,
            evictions: evictions.0,
        }
    }

    pub fn get(&self, key: &str) -> Option<Slot> {
        self.cache.get(key)
    }

    /// Stores a variant, replacing the one for the same request values; the
    /// oldest variants go when there are too many or they outgrow a shard.
    pub fn put(&self, key: &str, entry: Arc<Stored>) {
        let mut variants: Vec<Arc<Stored>> = match self.cache.peek(key) {
            Some(old) => old
                .0
                .iter()
                .filter(|o| !o.same_variant(&entry))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        variants.push(entry);
        let room = self.shard_cap.saturating_sub(key.len() as u64);
        while variants.len() > VARIANT_CAP
            || variants.iter().map(|v| v.weight()).sum::<u64>() > room
        {
            variants.remove(0);
            if variants.is_empty() {
                return;
            }
        }
        self.cache.insert(key.into(), Slot(variants.into()));
    }

    /// Removes a key with all its variants.
    pub fn remove(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Removes the keys for which `purge` says so; how many went.
    pub fn remove_where(&self, purge: impl Fn(&str, &Slot) -> bool) -> usize {
        let gone = AtomicU64::new(0);
        self.cache.retain(|k, v| {
            let p = purge(k, v);
            if p {
                gone.fetch_add(1, Relaxed);
            }
            !p
        });
        gone.into_inner() as usize
    }

    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    pub fn entries(&self) -> usize {
        self.cache.len()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }

    pub fn capacity(&self) -> u64 {
        self.cache.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn entry(body: usize, vary: Option<&str>) -> Arc<Stored> {
        Arc::new(Stored {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            received: Instant::now(),
            initial_age: 0,
            freshness: Freshness::default(),
            auth_ok: false,
            vary: vary
                .map(|v| vec![(http::header::ACCEPT_LANGUAGE, Some(v.as_bytes().to_vec()))])
                .unwrap_or_default(),
            extra: Vec::new(),
            tags: Vec::new(),
            updating: AtomicBool::new(false),
        })
    }

    #[test]
    fn byte_bound_holds_under_a_flood_of_keys() {
        let s = Store::new(1 << 20, 64 << 10);
        for i in 0..2000 {
            s.put(&format!("/k{i}"), entry(4096, None));
            assert!(s.bytes() <= 1 << 20, "{} > bound", s.bytes());
        }
        assert!(s.entries() > 50);
        assert!(s.evictions() > 0);
    }

    #[test]
    fn a_large_object_fits_its_shard() {
        let s = Store::new(8 << 20, 1 << 20);
        s.put("/big", entry(1 << 20, None));
        assert!(s.get("/big").is_some());
    }

    #[test]
    fn variants_replace_their_own_and_are_capped() {
        let s = Store::new(1 << 20, 64 << 10);
        s.put("/v", entry(10, Some("en")));
        s.put("/v", entry(11, Some("fr")));
        s.put("/v", entry(12, Some("en")));
        let slot = s.get("/v").unwrap();
        assert_eq!(slot.0.len(), 2);
        let mut req = HeaderMap::new();
        req.insert(
            http::header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("en"),
        );
        assert_eq!(slot.select(&req, &[]).unwrap().body.len(), 12);
        req.insert(
            http::header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("de"),
        );
        assert!(slot.select(&req, &[]).is_none());
        for i in 0..40 {
            s.put("/v", entry(10, Some(&format!("l{i}"))));
        }
        assert_eq!(s.get("/v").unwrap().0.len(), VARIANT_CAP);
    }

    #[test]
    fn removes_by_key_and_predicate() {
        let s = Store::new(1 << 20, 64 << 10);
        for k in ["/a/1", "/a/2", "/b/1"] {
            s.put(k, entry(10, None));
        }
        assert!(s.remove("/b/1"));
        assert_eq!(s.remove_where(|k, _| k.starts_with("/a/")), 2);
        assert_eq!(s.entries(), 0);
    }
}
