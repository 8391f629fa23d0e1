//! The response cache of a route (`routes[].cache`): the rules of a shared
//! HTTP cache as pure functions ([`policy`]), byte-bounded storage ([`store`]),
//! and what the request path shares per route: counters, the fills under way
//! (collapsed forwarding) and the admission of a body while it streams to its
//! first client ([`Admission`]). The request path's phase is
//! `proxy::pipeline::cache`.

pub(crate) mod policy;
pub(crate) mod store;

use crate::config::{CacheConfig, CacheKeyPart};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use store::{Store, Stored};
use tokio::sync::watch;

/// What `fulcrum_cache_requests_total{result}` counts.
#[derive(Default)]
pub(crate) struct Counters {
    pub hit: AtomicU64,
    pub miss: AtomicU64,
    pub stale: AtomicU64,
    pub revalidated: AtomicU64,
    pub bypass: AtomicU64,
    pub coalesced: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> [(&'static str, u64); 6] {
        [
            ("hit", self.hit.load(Relaxed)),
            ("miss", self.miss.load(Relaxed)),
            ("stale", self.stale.load(Relaxed)),
            ("revalidated", self.revalidated.load(Relaxed)),
            ("bypass", self.bypass.load(Relaxed)),
            ("coalesced", self.coalesced.load(Relaxed)),
        ]
    }
}

const FILL_SHARDS: usize = 16;

/// One route's cache: kept across reloads while its settings stay the same.
pub(crate) struct RouteCache {
    pub config: CacheConfig,
    pub store: Store,
    pub counters: Counters,
    /// Keys whose response is being fetched, by shard; waiters hold a receiver
    /// that wakes when the fill ends (stored or given up).
    fills: [Mutex<HashMap<Box<str>, watch::Receiver<()>>>; FILL_SHARDS],
}

/// The first miss for a key fetches it; the others wait for it.
pub(crate) enum Fill {
    Leader(FillGuard),
    Follower(watch::Receiver<()>),
}

/// Held by the request that fills a key; dropping it wakes the waiters.
pub(crate) struct FillGuard {
    cache: Arc<RouteCache>,
    key: Box<str>,
    _tx: watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let shard = &self.cache.fills[shard_of(&self.key)];
        shard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

fn shard_of(key: &str) -> usize {
    (crate::rand::stable_hash(key.as_bytes()) as usize) % FILL_SHARDS
}

impl RouteCache {
    pub(crate) fn new(config: CacheConfig) -> RouteCache {
        RouteCache {
            store: Store::new(config.max_size, config.max_object_size),
            config,
            counters: Counters::default(),
            fills: Default::default(),
        }
    }

    /// Joins the fill of `key`, or starts it.
    pub(crate) fn fill(self: &Arc<Self>, key: &str) -> Fill {
        let mut map = self.fills[shard_of(key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Fill::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        map.insert(key.into(), rx);
        Fill::Leader(FillGuard {
            cache: self.clone(),
            key: key.into(),
            _tx: tx,
        })
    }

    /// The key of a request: the URL as the route's `cache.key` reads it
    /// (`host` lowercase without port; header and cookie parts tell variants
    /// apart instead, see [`store`]).
    pub(crate) fn key(&self, host: &str, path: &str, query: Option<&str>) -> String {
        let mut k =
            String::with_capacity(host.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        if self.config.key.contains(&CacheKeyPart::Host) {
            k.push_str(host);
        }
        k.push_str(path);
        if let Some(q) = query
            && self.config.key.contains(&CacheKeyPart::Query)
        {
            k.push('?');
            k.push_str(q);
        }
        k
    }

    /// Removes what a purge names: a URL (`http://host/path?q` or `/path?q`),
    /// a URL prefix, or a tag. Returns how many keys went.
    pub(crate) fn purge(&self, what: &Purge) -> usize {
        match what {
            Purge::Url(u) => {
                let (host, path, query) = split_url(u);
                let key = self.key(&host, path, query);
                if host.is_empty() && self.config.key.contains(&CacheKeyPart::Host) {
                    // Without a host in the URL, that path on every host.
                    return self
                        .store
                        .remove_where(|k, _| k.find('/').is_some_and(|i| k[i..] == key));
                }
                usize::from(self.store.remove(&key))
            }
            Purge::Prefix(u) => {
                let (host, path, query) = split_url(u);
                let prefix = self.key(&host, path, query);
                let host_in_key = self.config.key.contains(&CacheKeyPart::Host);
                self.store.remove_where(|k, _| {
                    // Without a host in the URL, every host's keys match.
                    if host_in_key && host.is_empty() {
                        k.find('/').is_some_and(|i| k[i..].starts_with(&prefix))
                    } else {
                        k.starts_with(&prefix)
                    }
                })
            }
            Purge::Tag(t) => self
                .store
                .remove_where(|_, slot| slot.0.iter().any(|s| s.tags.iter().any(|x| x == t))),
        }
    }
}

/// What a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purge {
    Url(String),
    Prefix(String),
    Tag(String),
}

/// `http://Host:80/p?q` → ("host", "/p", Some("q")); `/p` → ("", "/p", None).
fn split_url(u: &str) -> (String, &str, Option<&str>) {
    let (host, rest) = match u.split_once("://") {
        Some((_, after)) => match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, "/"),
        },
        None => ("", u),
    };
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    (host.to_ascii_lowercase(), path, query)
}

/// A response body being stored while it streams to its first client. Past
/// `max_object_size` it gives up (the body keeps streaming); it is stored only
/// when the body ended cleanly.
pub(crate) struct Admission {
    cache: Arc<RouteCache>,
    key: Box<str>,
    /// The entry to store, without its body.
    entry: Stored,
    buf: Vec<u8>,
    limit: usize,
    /// The fill this request leads: released once stored (or given up).
    _fill: Option<FillGuard>,
}

impl Admission {
    pub(crate) fn new(
        cache: Arc<RouteCache>,
        key: Box<str>,
        entry: Stored,
        declared_len: Option<u64>,
        fill: Option<FillGuard>,
    ) -> Option<Admission> {
        let limit = cache.config.max_object_size as usize;
        if declared_len.is_some_and(|n| n > limit as u64) {
            return None;
        }
        Some(Admission {
            buf: Vec::with_capacity(declared_len.unwrap_or(0) as usize),
            cache,
            key,
            entry,
            limit,
            _fill: fill,
        })
    }

    /// Takes a piece of the body; `false` once the body is too large to keep.
    pub(crate) fn data(&mut self, d: &[u8]) -> bool {
        if self.buf.len() + d.len() > self.limit {
            return false;
        }
        self.buf.extend_from_slice(d);
        true
    }

    /// The body ended cleanly: store it.
    pub(crate) fn commit(self) {
        let Admission {
            cache,
            key,
            mut entry,
            mut buf,
            _fill,
            ..
        } = self;
        buf.shrink_to_fit();
        // The length is known now: hits carry it without computing it again.
        entry.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(buf.len()),
        );
        entry.body = Bytes::from(buf);
        cache.store.put(&key, Arc::new(entry));
        // `_fill` drops last: the waiters wake to a stored entry.
    }
}

/// An empty entry, for tests.
#[cfg(test)]
pub(crate) fn placeholder() -> Stored {
    Stored {
        status: http::StatusCode::OK,
        headers: Default::default(),
        body: Bytes::new(),
        received: std::time::Instant::now(),
        initial_age: 0,
        freshness: Default::default(),
        auth_ok: false,
        vary: Vec::new(),
        extra: Vec::new(),
        tags: Vec::new(),
        updating: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(key: &str) -> Arc<RouteCache> {
        let key = match key {
            "path" => vec![CacheKeyPart::Path],
            _ => vec![CacheKeyPart::Host, CacheKeyPart::Path, CacheKeyPart::Query],
        };
        Arc::new(RouteCache::new(CacheConfig {
            key,
            ..CacheConfig::default()
        }))
    }

    #[test]
    fn keys_follow_the_configured_parts() {
        assert_eq!(
            cache("all").key("a.test", "/p", Some("x=1")),
            "a.test/p?x=1"
        );
        assert_eq!(cache("path").key("a.test", "/p", Some("x=1")), "/p");
    }

    #[test]
    fn one_leader_per_key_and_followers_wake_when_it_ends() {
        let c = cache("all");
        let Fill::Leader(guard) = c.fill("k") else {
            panic!("first is the leader")
        };
        let Fill::Follower(mut rx) = c.fill("k") else {
            panic!("second follows")
        };
        assert!(matches!(c.fill("other"), Fill::Leader(_)));
        drop(guard);
        // The sender is gone: a waiter's `changed` returns at once.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(rt.block_on(rx.changed()).is_err());
        assert!(matches!(c.fill("k"), Fill::Leader(_)));
    }

    #[test]
    fn admission_gives_up_past_max_object_size() {
        let cfg = CacheConfig {
            max_object_size: 10,
            ..CacheConfig::default()
        };
        let c = Arc::new(RouteCache::new(cfg));
        assert!(Admission::new(c.clone(), "k".into(), placeholder(), Some(11), None).is_none());
        let mut a = Admission::new(c.clone(), "k".into(), placeholder(), None, None).unwrap();
        assert!(a.data(b"0123456789"));
        assert!(!a.data(b"x"));
        let mut a = Admission::new(c.clone(), "k".into(), placeholder(), None, None).unwrap();
        assert!(a.data(b"abc"));
        a.commit();
        assert_eq!(&c.store.get("k").unwrap().0[0].body[..], b"abc");
    }

    #[test]
    fn purges_by_url_prefix_and_tag() {
        let c = cache("all");
        let put = |k: &str, tag: &str| {
            let mut e = placeholder();
            e.tags = vec![tag.into()];
            c.store.put(k, Arc::new(e));
        };
        put("a.test/x?1", "t1");
        put("a.test/x/y", "t2");
        put("b.test/x/z", "t2");
        put("a.test/other", "t3");
        assert_eq!(c.purge(&Purge::Url("http://A.test:8080/x?1".into())), 1);
        put("a.test/x?1", "t1");
        put("b.test/x?1", "t1");
        assert_eq!(c.purge(&Purge::Url("/x?1".into())), 2);
        assert_eq!(c.purge(&Purge::Prefix("/x/".into())), 2);
        assert_eq!(c.purge(&Purge::Tag("t3".into())), 1);
        assert_eq!(c.store.entries(), 0);
    }
}
