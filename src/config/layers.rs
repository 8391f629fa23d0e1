//! Layers of configuration. The effective config is the base (the file, or the
//! last `PUT /api/v1/config`) with layers on top, in order: the admin layer
//! (changes made through the API; replicated in a cluster) and node-local layers
//! (discovery). Each layer can add, change or remove pools, routes and backends.
//!
//! Composing is pure and cheap; the snapshot compile that follows reuses every
//! pool whose settings the change did not touch.

use super::{BackendConfig, Config, HostMatch, PoolConfig, RouteConfig};
use serde_json::{Value, json};

/// How a layer meets the base where both define the same pool or route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Precedence {
    /// The layer's definition replaces the base's (an operator's change).
    #[default]
    Overrides,
    /// The base's definition stays and the layer's is skipped with a warning
    /// (discovered routes never shadow the file's).
    Yields,
}

/// One source of changes on top of the base config.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Layer {
    /// Who made these changes, for warnings and the API (`api`, `docker`).
    pub(crate) source: &'static str,
    pub(crate) precedence: Precedence,
    /// Pools added or replaced whole (by name).
    pub(crate) pools: Vec<PoolConfig>,
    pub(crate) removed_pools: Vec<String>,
    /// Routes added or replaced (by host and path prefix).
    pub(crate) routes: Vec<RouteConfig>,
    pub(crate) removed_routes: Vec<(Option<HostMatch>, String)>,
    /// Backends added to or removed from a pool (by `host:port`).
    pub(crate) added_backends: Vec<(String, BackendConfig)>,
    pub(crate) removed_backends: Vec<(String, String)>,
    /// Names that join the ACME domains of every listener with `acme`.
    pub(crate) acme_domains: Vec<String>,
}

/// The effective config and what composing it had to skip.
pub(crate) struct Composed {
    pub(crate) config: Config,
    pub(crate) warnings: Vec<String>,
}

fn same_route(a: &RouteConfig, host: &Option<HostMatch>, path: &str) -> bool {
    a.host == *host && a.path_prefix == path
}

fn describe_route(host: &Option<HostMatch>, path: &str) -> String {
    match host {
        Some(HostMatch::Exact(h)) => format!("{h}{path}"),
        Some(HostMatch::Wildcard(s)) => format!("*.{s}{path}"),
        None => format!("(any host){path}"),
    }
}

/// Applies `layers` to `base`, in order.
pub(crate) fn compose(base: &Config, layers: &[&Layer]) -> Composed {
    let mut config = base.clone();
    let mut warnings = Vec::new();
    for layer in layers {
        layer.apply_to(&mut config, base, &mut warnings);
    }
    Composed { config, warnings }
}

impl Layer {
    pub(crate) fn new(source: &'static str, precedence: Precedence) -> Self {
        Layer {
            source,
            precedence,
            ..Layer::default()
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.pools.is_empty()
            && self.removed_pools.is_empty()
            && self.routes.is_empty()
            && self.removed_routes.is_empty()
            && self.added_backends.is_empty()
            && self.removed_backends.is_empty()
            && self.acme_domains.is_empty()
    }

    fn apply_to(&self, c: &mut Config, base: &Config, warnings: &mut Vec<String>) {
        let yields = self.precedence == Precedence::Yields;
        c.pools.retain(|p| !self.removed_pools.contains(&p.name));
        for pool in &self.pools {
            match c.pools.iter_mut().find(|p| p.name == pool.name) {
                Some(_) if yields && base.pools.iter().any(|p| p.name == pool.name) => {
                    warnings.push(format!(
                        "{}: pool `{}` is also defined in the config file, which wins",
                        self.source, pool.name
                    ));
                }
                Some(existing) => *existing = pool.clone(),
                None => c.pools.push(pool.clone()),
            }
        }
        c.routes
            .retain(|r| !self.removed_routes.iter().any(|(h, p)| same_route(r, h, p)));
        for route in &self.routes {
            let (host, path) = (&route.host, route.path_prefix.as_str());
            match c.routes.iter_mut().find(|r| same_route(r, host, path)) {
                Some(existing)
                    if yields && base.routes.iter().any(|r| same_route(r, host, path)) =>
                {
                    warnings.push(format!(
                        "{}: route {} (`{}`) is also defined in the config file (`{}`), which wins",
                        self.source,
                        describe_route(host, path),
                        route.name,
                        existing.name
                    ));
                }
                Some(existing) => *existing = route.clone(),
                None => c.routes.push(route.clone()),
            }
        }
        self.add_acme_domains(c);
        for p in c.pools.iter_mut() {
            p.backends.retain(|b| {
                !self
                    .removed_backends
                    .iter()
                    .any(|(pool, key)| *pool == p.name && *key == b.address.key)
            });
            for (pool, b) in &self.added_backends {
                if *pool == p.name && !p.backends.iter().any(|x| x.address.key == b.address.key) {
                    p.backends.push(b.clone());
                }
            }
        }
    }

    /// Adds `acme_domains` to each ACME listener's domains. A listener without
    /// listed `domains` covers every exact route host; it then gets those too.
    fn add_acme_domains(&self, c: &mut Config) {
        if self.acme_domains.is_empty() {
            return;
        }
        let route_hosts: Vec<String> = c
            .routes
            .iter()
            .filter_map(|r| match &r.host {
                Some(HostMatch::Exact(h)) if h.parse::<std::net::IpAddr>().is_err() => {
                    Some(h.clone())
                }
                _ => None,
            })
            .collect();
        for l in c.listeners.iter_mut() {
            let Some(acme) = l.tls.as_mut().and_then(|t| t.acme.as_mut()) else {
                continue;
            };
            if acme.domains.is_empty() {
                acme.domains = route_hosts.clone();
            }
            for d in &self.acme_domains {
                if !acme.domains.contains(d) {
                    acme.domains.push(d.clone());
                }
            }
        }
    }

    /// Adds a backend to a pool (undoing an earlier removal of it).
    pub(crate) fn add_backend(&mut self, pool: &str, backend: BackendConfig) {
        let key = backend.address.key.clone();
        self.removed_backends
            .retain(|(p, k)| !(p == pool && *k == key));
        self.added_backends
            .retain(|(p, b)| !(p == pool && b.address.key == key));
        self.added_backends.push((pool.to_string(), backend));
    }

    /// Removes a backend from a pool: forgets it if this layer added it, else
    /// records the removal.
    pub(crate) fn remove_backend(&mut self, pool: &str, key: &str) {
        let before = self.added_backends.len();
        self.added_backends
            .retain(|(p, b)| !(p == pool && b.address.key == key));
        if self.added_backends.len() == before {
            self.removed_backends
                .push((pool.to_string(), key.to_string()));
        }
    }

    /// Drops backend changes a new base already contains, or that no longer
    /// apply (their pool is gone).
    pub(crate) fn absorb(&mut self, base: &Config) {
        let has = |pool: &str, key: &str| {
            base.pools
                .iter()
                .find(|p| p.name == pool)
                .map(|p| p.backends.iter().any(|b| b.address.key == key))
        };
        self.added_backends
            .retain(|(pool, b)| has(pool, &b.address.key) == Some(false));
        self.removed_backends
            .retain(|(pool, key)| has(pool, key) == Some(true));
    }

    /// The layer as the API shows it.
    pub(crate) fn json(&self) -> Value {
        json!({
            "added_backends": self.added_backends.iter().map(|(p, b)| json!({"pool": p, "backend": super::serialize::backend(b)})).collect::<Vec<_>>(),
            "removed_backends": self.removed_backends.iter().map(|(p, k)| json!({"pool": p, "address": k})).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Config {
        super::super::load_str(text, "test", Path::new(".")).expect("valid config")
    }

    fn backend(addr: &str) -> BackendConfig {
        let c = load(&format!(
            "pools: [{{name: x, backends: [\"{addr}\"]}}]\nroutes: [{{pool: x}}]"
        ));
        c.pools[0].backends[0].clone()
    }

    const BASE: &str = "
pools:
  - { name: web, backends: [\"10.0.0.1:80\", \"10.0.0.2:80\"] }
routes:
  - { host: a.example, pool: web }
";

    fn keys(c: &Config, pool: &str) -> Vec<String> {
        c.pools
            .iter()
            .find(|p| p.name == pool)
            .map(|p| p.backends.iter().map(|b| b.address.key.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn backend_changes_apply_and_undo_each_other() {
        let base = load(BASE);
        let mut admin = Layer::new("api", Precedence::Overrides);
        admin.add_backend("web", backend("10.0.0.3:80"));
        admin.remove_backend("web", "10.0.0.1:80");
        let c = compose(&base, &[&admin]).config;
        assert_eq!(keys(&c, "web"), ["10.0.0.2:80", "10.0.0.3:80"]);
        // Removing what the layer added forgets the addition.
        admin.remove_backend("web", "10.0.0.3:80");
        assert!(admin.added_backends.is_empty());
        // Adding back what it removed forgets the removal.
        admin.add_backend("web", backend("10.0.0.1:80"));
        assert!(admin.removed_backends.is_empty());
    }

    #[test]
    fn a_new_base_absorbs_what_it_already_says() {
        let mut admin = Layer::new("api", Precedence::Overrides);
        admin.add_backend("web", backend("10.0.0.3:80"));
        admin.remove_backend("web", "10.0.0.1:80");
        admin.add_backend("gone", backend("10.0.0.9:80"));
        let new_base = load(
            "pools: [{name: web, backends: [\"10.0.0.2:80\", \"10.0.0.3:80\"]}]\nroutes: [{pool: web}]",
        );
        admin.absorb(&new_base);
        assert!(admin.is_empty(), "{admin:?}");
    }

    #[test]
    fn a_yielding_layer_never_shadows_the_file() {
        let base = load(BASE);
        let found = load(
            "
pools:
  - { name: web, backends: [\"10.9.9.9:80\"] }
  - { name: docker-b, backends: [\"172.17.0.2:80\"] }
routes:
  - { host: a.example, pool: docker-b }
  - { host: b.example, pool: docker-b }
",
        );
        let layer = Layer {
            source: "docker",
            precedence: Precedence::Yields,
            pools: found.pools.clone(),
            routes: found.routes.clone(),
            ..Layer::default()
        };
        let out = compose(&base, &[&layer]);
        assert_eq!(keys(&out.config, "web"), ["10.0.0.1:80", "10.0.0.2:80"]);
        assert_eq!(keys(&out.config, "docker-b"), ["172.17.0.2:80"]);
        assert_eq!(out.config.routes.len(), 2);
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings[1].contains("a.example/"), "{:?}", out.warnings);
    }

    #[test]
    fn an_overriding_layer_replaces_and_removes() {
        let base = load(BASE);
        let other =
            load("pools: [{name: web, backends: [\"10.0.0.7:80\"]}]\nroutes: [{pool: web}]");
        let layer = Layer {
            source: "api",
            pools: other.pools.clone(),
            removed_routes: vec![(Some(HostMatch::Exact("a.example".into())), "/".into())],
            ..Layer::default()
        };
        let out = compose(&base, &[&layer]);
        assert_eq!(keys(&out.config, "web"), ["10.0.0.7:80"]);
        assert!(out.config.routes.is_empty());
        assert!(out.warnings.is_empty());
    }
}
