//! The compiled, immutable snapshot the request path reads: routes, pools and limits
//! built from one config generation. A reload compiles a new one and swaps it in
//! atomically; backend and pool state carry over from the previous snapshot.

pub mod router;

use crate::config::{Algorithm, Config, HeaderRules, Limits, RouteTarget};
use crate::upstream::backend::Backend;
use crate::upstream::balance::Balancer;
use crate::upstream::pool::{Pool, PoolState};
use ipnet::IpNet;
use router::Router;
use std::collections::HashMap;
use std::sync::Arc;

pub struct Variant {
    pub pool: Arc<Pool>,
    pub weight: u32,
    /// The route's balancing override for this pool, if any.
    pub balancer: Option<Balancer>,
    pub requests: std::sync::atomic::AtomicU64,
}

pub enum Target {
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

pub struct Route {
    pub name: String,
    /// The name, shared with the request counters.
    pub name_arc: Arc<str>,
    pub path_prefix: String,
    pub strip_prefix: bool,
    pub target: Target,
    pub headers: HeaderRules,
}

pub struct Runtime {
    pub generation: u64,
    pub config: Arc<Config>,
    pub router: Router,
    pub routes: Vec<Route>,
    pub pools: Vec<Arc<Pool>>,
    pub pool_index: HashMap<String, usize>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
}

impl Runtime {
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pool_index.get(name).map(|&i| &self.pools[i])
    }

    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// Every backend of every pool.
    pub fn backends(&self) -> impl Iterator<Item = (&Arc<Pool>, &crate::upstream::pool::Member)> {
        self.pools
            .iter()
            .flat_map(|p| p.members.iter().map(move |m| (p, m)))
    }

    /// Builds a snapshot from `config`, keeping the live state (health, counters,
    /// idle connections) of every backend and pool that `prev` already had.
    /// Fails only when a pool's TLS settings cannot be loaded (a CA file).
    pub fn compile(
        config: Arc<Config>,
        generation: u64,
        prev: Option<&Runtime>,
    ) -> Result<Runtime, String> {
        let mut old_backends: HashMap<(&str, &str), &Arc<Backend>> = HashMap::new();
        let mut old_states: HashMap<&str, &Arc<PoolState>> = HashMap::new();
        if let Some(prev) = prev {
            for p in &prev.pools {
                old_states.insert(p.name.as_str(), &p.state);
                for m in &p.members {
                    old_backends.insert((p.name.as_str(), m.backend.key()), &m.backend);
                }
            }
        }
        let mut pools = Vec::with_capacity(config.pools.len());
        let mut pool_index = HashMap::new();
        for pc in &config.pools {
            let tls = if pc
                .backends
                .iter()
                .any(|b| b.address.scheme == crate::config::Scheme::Https)
            {
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
                Some(Arc::new(crate::upstream::io::TlsClient {
                    config: cfg,
                    config_h2,
                    server_name: pc.upstream_tls.server_name.clone(),
                }))
            } else {
                None
            };
            let backends: Vec<Arc<Backend>> = pc
                .backends
                .iter()
                .map(
                    |b| match old_backends.get(&(pc.name.as_str(), b.address.key.as_str())) {
                        // Same key but another scheme (http -> h2c): a new connection pool.
                        Some(old) if old.address == b.address => Arc::clone(old),
                        _ => Arc::new(Backend::new(&pc.name, b.address.clone())),
                    },
                )
                .collect();
            for b in &backends {
                b.tls.store(tls.clone());
            }
            let state = old_states
                .get(pc.name.as_str())
                .map(|s| Arc::clone(s))
                .unwrap_or_default();
            pool_index.insert(pc.name.clone(), pools.len());
            pools.push(Arc::new(Pool::new(pools.len(), pc, backends, state)));
        }
        let mut router = Router::default();
        let mut routes = Vec::with_capacity(config.routes.len());
        for rc in &config.routes {
            let override_for = |p: &Pool, algo: Option<Algorithm>| {
                algo.filter(|a| *a != p.balancer.algorithm)
                    .map(|a| Balancer::new(a, &p.members))
            };
            let target = match &rc.target {
                RouteTarget::Pool { name, .. } => {
                    let Some(pool) = pool_index.get(name).map(|&i| Arc::clone(&pools[i])) else {
                        continue;
                    };
                    Target::Pool {
                        balancer: override_for(&pool, rc.load_balancing),
                        pool,
                    }
                }
                RouteTarget::Split(vs) => {
                    let variants: Vec<Variant> = vs
                        .iter()
                        .filter_map(|v| {
                            let pool = Arc::clone(&pools[*pool_index.get(&v.pool)?]);
                            Some(Variant {
                                balancer: override_for(&pool, rc.load_balancing),
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
            };
            router.add(rc.host.as_ref(), &rc.path_prefix, routes.len());
            routes.push(Route {
                name_arc: Arc::from(rc.name.as_str()),
                name: rc.name.clone(),
                path_prefix: rc.path_prefix.clone(),
                strip_prefix: rc.strip_prefix,
                target,
                headers: rc.headers.clone(),
            });
        }
        Ok(Runtime {
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

/// Cookie that keeps a client on its split variant: one per route.
fn split_cookie_name(route: &str) -> String {
    format!(
        "fulcrum_split_{:08x}",
        crate::rand::stable_hash(route.as_bytes()) as u32
    )
}
