//! The compiled, immutable snapshot the request path reads: routes, pools and limits
//! built from one effective config. A change compiles a new one and swaps it in
//! atomically; in-flight requests keep the one they started with.
//!
//! Compiling is pure: config + the previous snapshot in, a new snapshot out. It
//! writes nothing shared, so a rejected config changes nothing. What carries over
//! from the previous snapshot is taken by reference: each backend (its health,
//! counters and idle connections) while its address and TLS settings stay the
//! same, each pool's state (failover decision, latency estimate), and whole
//! compiled pools whose settings did not change.

pub(crate) mod router;

use crate::cache::RouteCache;
use crate::config::{Algorithm, Config, HeaderRules, Limits, PoolConfig, RouteTarget};
use crate::ratelimit::RateLimiter;
use crate::upstream::backend::Backend;
use crate::upstream::balance::Balancer;
use crate::upstream::io::TlsClient;
use crate::upstream::member::Member;
use crate::upstream::pool::{Pool, PoolState};
use arc_swap::ArcSwap;
use ipnet::IpNet;
use router::Router;
use std::collections::HashMap;
use std::sync::Arc;

/// The handle every reader holds: the current snapshot, swapped whole.
pub(crate) type Current = Arc<ArcSwap<Snapshot>>;

pub(crate) struct Variant {
    pub(crate) pool: Arc<Pool>,
    pub(crate) weight: u32,
    /// The route's balancing override for this pool, if any.
    pub(crate) balancer: Option<Balancer>,
    pub(crate) requests: std::sync::atomic::AtomicU64,
}

pub(crate) enum Target {
    Pool {
        pool: Arc<Pool>,
        balancer: Option<Balancer>,
    },
    Split {
        variants: Vec<Variant>,
        total_weight: u32,
        sticky: bool,
        cookie: String,
    },
}

pub(crate) struct Route {
    /// The name, shared with the request counters.
    pub(crate) name: Arc<str>,
    pub(crate) path_prefix: String,
    pub(crate) target: Target,
    pub(crate) headers: HeaderRules,
    /// `rate_limit`; its buckets carry over a reload that keeps the route's
    /// name and limit.
    pub(crate) rate_limit: Option<Arc<RateLimiter>>,
    /// `buffer_request_body` (0: streamed).
    pub(crate) buffer_request_body: u64,
    /// The route's response cache, carried over while its settings stay the same.
    pub(crate) cache: Option<Arc<RouteCache>>,
    /// Nothing of the route reads a backend's answer fields as a map (no
    /// cache, no response edits): they may stay raw (see
    /// `request::wants_raw_answer`). Decided here, not per request.
    pub(crate) raw_answer: bool,
    /// The backend's path differs from the client's: `strip_prefix` with a
    /// prefix other than `/`.
    pub(crate) strips_path: bool,
}

pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) config: Arc<Config>,
    pub(crate) router: Router,
    pub(crate) routes: Vec<Route>,
    pub(crate) pools: Vec<Arc<Pool>>,
    pool_index: HashMap<String, usize>,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) limits: Limits,
}

impl Snapshot {
    pub(crate) fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pool_index.get(name).map(|&i| &self.pools[i])
    }

    pub(crate) fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// Every backend of every pool.
    pub(crate) fn backends(&self) -> impl Iterator<Item = (&Arc<Pool>, &Member)> {
        self.pools
            .iter()
            .flat_map(|p| p.members.iter().map(move |m| (p, m)))
    }

    /// One backend by pool name and `host:port`.
    pub(crate) fn member(&self, pool: &str, key: &str) -> Option<(&Arc<Pool>, &Member)> {
        let p = self.pool(pool)?;
        p.members
            .iter()
            .find(|m| m.backend.key() == key)
            .map(|m| (p, m))
    }

    /// Builds a snapshot from `config`, keeping the live state of every backend
    /// and pool that `prev` already had. Fails only when a pool's TLS settings
    /// cannot be loaded (a CA file).
    pub(crate) fn compile(
        config: Arc<Config>,
        generation: u64,
        prev: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let mut pools = Vec::with_capacity(config.pools.len());
        let mut pool_index = HashMap::new();
        for pc in &config.pools {
            let pool = match prev.and_then(|p| p.pool(&pc.name)) {
                Some(old) if same_settings(&old.config, pc) => Arc::clone(old),
                old => Arc::new(compile_pool(pc, old.map(|p| &**p))?),
            };
            pool_index.insert(pc.name.clone(), pools.len());
            pools.push(pool);
        }
        let mut router = Router::default();
        let mut routes = Vec::with_capacity(config.routes.len());
        for rc in &config.routes {
            let pool_named = |name: &str| pool_index.get(name).map(|&i| Arc::clone(&pools[i]));
            let Some(target) = compile_target(&rc.target, rc.load_balancing, &pool_named, rc)
            else {
                continue;
            };
            router.add(rc.host.as_ref(), &rc.path_prefix, routes.len());
            routes.push(Route {
                raw_answer: rc.cache.is_none() && rc.headers.response.is_empty(),
                strips_path: rc.strip_prefix && rc.path_prefix != "/",
                name: Arc::from(rc.name.as_str()),
                path_prefix: rc.path_prefix.clone(),
                target,
                headers: rc.headers.clone(),
                rate_limit: rate_limiter(rc, prev),
                buffer_request_body: rc.buffer_request_body,
                cache: rc.cache.as_ref().map(|cc| {
                    let old = prev
                        .and_then(|p| p.routes.iter().find(|r| *r.name == *rc.name))
                        .and_then(|r| r.cache.as_ref())
                        .filter(|c| c.config.same_settings(cc));
                    match old {
                        Some(c) => Arc::clone(c),
                        None => Arc::new(RouteCache::new(cc.clone())),
                    }
                }),
            });
        }
        Ok(Snapshot {
            generation,
            trusted_proxies: config.trusted_proxies.clone(),
            limits: config.limits.clone(),
            config,
            router,
            routes,
            pools,
            pool_index,
        })
    }
}

/// The route's limiter: the previous snapshot's for the same route and limit
/// (its buckets keep counting), else a new one.
fn rate_limiter(
    rc: &crate::config::RouteConfig,
    prev: Option<&Snapshot>,
) -> Option<Arc<RateLimiter>> {
    let config = rc.rate_limit.as_ref()?;
    let old = prev.and_then(|p| {
        p.routes
            .iter()
            .find(|r| *r.name == *rc.name)
            .and_then(|r| r.rate_limit.as_ref())
            .filter(|l| l.config == *config)
    });
    Some(
        old.cloned()
            .unwrap_or_else(|| Arc::new(RateLimiter::new(config))),
    )
}

/// Whether two pool configs ask for the same thing (where they were written
/// does not matter).
fn same_settings(a: &PoolConfig, b: &PoolConfig) -> bool {
    fn unplaced(p: &PoolConfig) -> PoolConfig {
        let mut p = p.clone();
        p.loc = Default::default();
        for b in &mut p.backends {
            b.loc = Default::default();
        }
        p
    }
    unplaced(a) == unplaced(b)
}

/// Compiles one pool; `old` is the pool of the same name in the previous
/// snapshot, whose state and backends carry over.
fn compile_pool(pc: &PoolConfig, old: Option<&Pool>) -> Result<Pool, String> {
    let tls_unchanged = old.is_some_and(|o| o.config.upstream_tls == pc.upstream_tls);
    let tls = upstream_tls(pc)?;
    let backends: Vec<Arc<Backend>> = pc
        .backends
        .iter()
        .map(|b| {
            let old_backend = old
                .filter(|_| tls_unchanged)
                .and_then(|o| o.members.iter().find(|m| m.backend.key() == b.address.key))
                .map(|m| &m.backend);
            match old_backend {
                // Same key but another scheme (http -> h2c): a new connection pool.
                Some(old) if old.address == b.address => Arc::clone(old),
                _ => Arc::new(Backend::new(&pc.name, b.address.clone(), tls.clone())),
            }
        })
        .collect();
    let state: Arc<PoolState> = old.map(|o| Arc::clone(&o.state)).unwrap_or_default();
    Ok(Pool::new(pc, backends, state))
}

/// How a pool speaks TLS to its `https://` backends, if it has any.
fn upstream_tls(pc: &PoolConfig) -> Result<Option<Arc<TlsClient>>, String> {
    if !pc
        .backends
        .iter()
        .any(|b| b.address.scheme == crate::config::Scheme::Https)
    {
        return Ok(None);
    }
    if pc.upstream_tls.insecure_skip_verify {
        tracing::warn!(pool = %pc.name, "TLS VERIFICATION IS OFF for this pool's https backends (tls.insecure_skip_verify): anyone on the path can impersonate them");
    }
    let cfg = crate::tls::upstream_client_config(&pc.upstream_tls)
        .map_err(|e| format!("pool `{}`: {e}", pc.name))?;
    let config_h2 = pc.upstream_tls.http2.then(|| {
        let mut c = (*cfg).clone();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    });
    Ok(Some(Arc::new(TlsClient {
        config: cfg,
        config_h2,
        server_name: pc.upstream_tls.server_name.clone(),
    })))
}

/// A route's target: its pool, or its split variants. None when the pool is
/// unknown (validation prevents it; a route without a pool is skipped).
fn compile_target(
    target: &RouteTarget,
    algorithm: Option<Algorithm>,
    pool_named: &dyn Fn(&str) -> Option<Arc<Pool>>,
    rc: &crate::config::RouteConfig,
) -> Option<Target> {
    let override_for = |p: &Pool| {
        algorithm
            .filter(|a| *a != p.balancer.algorithm)
            .map(|a| Balancer::new(a, &p.members))
    };
    Some(match target {
        RouteTarget::Pool { name, .. } => {
            let pool = pool_named(name)?;
            Target::Pool {
                balancer: override_for(&pool),
                pool,
            }
        }
        RouteTarget::Split(vs) => {
            let variants: Vec<Variant> = vs
                .iter()
                .filter_map(|v| {
                    let pool = pool_named(&v.pool)?;
                    Some(Variant {
                        balancer: override_for(&pool),
                        pool,
                        weight: v.weight,
                        requests: Default::default(),
                    })
                })
                .collect();
            let total_weight = variants.iter().map(|v| v.weight).sum();
            Target::Split {
                variants,
                total_weight,
                sticky: rc.sticky,
                cookie: split_cookie_name(&rc.name),
            }
        }
    })
}

/// Cookie that keeps a client on its split variant: one per route.
fn split_cookie_name(route: &str) -> String {
    format!(
        "fulcrum_split_{:08x}",
        crate::rand::stable_hash(route.as_bytes()) as u32
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn compile(text: &str, prev: Option<&Snapshot>) -> Result<Snapshot, String> {
        let c = load_str(text, "test", std::path::Path::new(".")).expect("valid config");
        Snapshot::compile(Arc::new(c), prev.map_or(1, |p| p.generation + 1), prev)
    }

    #[test]
    fn a_route_cache_survives_a_reload_that_keeps_its_settings() {
        let text = |size: &str| {
            format!(
                "pools: [{{ name: a }}]\nroutes:\n  - {{ pool: a, cache: {{ max_size: {size} }} }}\n"
            )
        };
        let first = compile(&text("1MiB"), None).unwrap();
        let same = compile(&format!("# moved\n{}", text("1MiB")), Some(&first)).unwrap();
        let (a, b) = (&first.routes[0].cache, &same.routes[0].cache);
        assert!(Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap()));
        let changed = compile(&text("2MiB"), Some(&same)).unwrap();
        let c = changed.routes[0].cache.as_ref().unwrap();
        assert!(!Arc::ptr_eq(b.as_ref().unwrap(), c));
        assert_eq!(c.store.capacity(), 2 << 20);
    }

    #[test]
    fn a_routes_facts_follow_its_settings() {
        let text = "pools: [{ name: a }]\nroutes:\n  - { pool: a }\n  - { path_prefix: /c, pool: a, cache: { max_size: 1MiB } }\n  - { path_prefix: /e, pool: a, headers: { response: { remove: [Server] } } }\n  - { path_prefix: /q, pool: a, headers: { request: { remove: [X-A] } } }\n  - { path_prefix: /s, pool: a, strip_prefix: true }\n  - { path_prefix: /, host: h.test, pool: a, strip_prefix: true }\n";
        let s = compile(text, None).unwrap();
        let facts: Vec<(bool, bool)> = s
            .routes
            .iter()
            .map(|r| (r.raw_answer, r.strips_path))
            .collect();
        assert_eq!(
            facts,
            [
                (true, false),
                (false, false),
                (false, false),
                (true, false),
                (true, true),
                (true, false)
            ]
        );
        // Each against the rule it stands for, per request before.
        for (r, rc) in s.routes.iter().zip(&s.config.routes) {
            let raw = r.cache.is_none() && r.headers.response.is_empty();
            assert_eq!(r.raw_answer, raw, "{}", r.name);
            let strips = rc.strip_prefix && rc.path_prefix != "/";
            assert_eq!(r.strips_path, strips, "{}", r.name);
        }
    }

    const TWO_POOLS: &str = "
pools:
  - { name: a, backends: [\"10.0.0.1:80\", \"10.0.0.2:80\"] }
  - { name: b, backends: [\"10.0.1.1:80\"] }
routes:
  - { host: a.example, pool: a }
  - { path_prefix: /b, pool: b }
";

    #[test]
    fn routes_resolve_to_their_pools() {
        let s = compile(TWO_POOLS, None).unwrap();
        let r = s.router.find("a.example", "/x").unwrap();
        assert!(matches!(&s.routes[r].target, Target::Pool { pool, .. } if pool.name == "a"));
        let r = s.router.find("other", "/b/1").unwrap();
        assert!(matches!(&s.routes[r].target, Target::Pool { pool, .. } if pool.name == "b"));
        assert!(s.router.find("other", "/").is_none());
    }

    #[test]
    fn a_change_recompiles_only_what_it_touches() {
        let first = compile(TWO_POOLS, None).unwrap();
        let moved = TWO_POOLS.replace(
            "\"10.0.0.2:80\"] }",
            "{ address: \"10.0.0.2:80\", weight: 5 }] }",
        );
        let second = compile(&moved, Some(&first)).unwrap();
        let (a1, a2) = (first.pool("a").unwrap(), second.pool("a").unwrap());
        let (b1, b2) = (first.pool("b").unwrap(), second.pool("b").unwrap());
        assert!(Arc::ptr_eq(b1, b2), "an untouched pool is reused whole");
        assert!(!Arc::ptr_eq(a1, a2), "a changed pool is compiled again");
        assert_eq!(a2.members[1].weight, 5);
        // ...keeping its state and its backends' live state.
        assert!(Arc::ptr_eq(&a1.state, &a2.state));
        for i in 0..2 {
            assert!(Arc::ptr_eq(&a1.members[i].backend, &a2.members[i].backend));
        }
    }

    #[test]
    fn an_unchanged_pool_written_elsewhere_is_still_unchanged() {
        let first = compile(TWO_POOLS, None).unwrap();
        let shifted = format!("\n\n# moved down\n{TWO_POOLS}");
        let second = compile(&shifted, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(
            first.pool("a").unwrap(),
            second.pool("a").unwrap()
        ));
    }

    #[test]
    fn a_new_scheme_or_tls_setting_makes_a_new_backend() {
        let first = compile(TWO_POOLS, None).unwrap();
        let h2c = TWO_POOLS.replace("\"10.0.1.1:80\"", "\"h2c://10.0.1.1:80\"");
        let second = compile(&h2c, Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(
            &first.pool("b").unwrap().members[0].backend,
            &second.pool("b").unwrap().members[0].backend
        ));
        let tls = "pools: [{name: s, backends: [\"https://10.0.2.1:443\"]}]\nroutes: [{pool: s}]";
        let third = compile(tls, Some(&second)).unwrap();
        let b = &third.pool("s").unwrap().members[0].backend;
        assert!(b.tls.is_some(), "an https backend speaks TLS");
        let sni = tls.replace("]}]", "], tls: {server_name: other.example}}]");
        let fourth = compile(&sni, Some(&third)).unwrap();
        assert!(!Arc::ptr_eq(
            b,
            &fourth.pool("s").unwrap().members[0].backend
        ));
    }

    #[test]
    fn a_rejected_compile_leaves_the_previous_snapshot_alone() {
        let first = compile(TWO_POOLS, None).unwrap();
        // A CA file that exists but holds no certificate: the config loads, the
        // compile (which reads it) fails.
        let ca = std::env::temp_dir().join(format!("fulcrum-bad-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not a certificate").unwrap();
        let bad = format!(
            "pools: [{{name: a, backends: [\"https://10.0.0.1:443\"], tls: {{ca: \"{}\"}}}}]\nroutes: [{{pool: a}}]",
            ca.display()
        );
        let c = load_str(&bad, "test", std::path::Path::new(".")).expect("the path exists");
        let result = Snapshot::compile(Arc::new(c), 2, Some(&first));
        let _ = std::fs::remove_file(&ca);
        assert!(result.is_err());
        let a = first.pool("a").unwrap();
        assert!(a.members.iter().all(|m| m.backend.tls.is_none()));
        assert_eq!(a.members.len(), 2);
    }
}
