//! From the containers known to be running to the node-local config layer, and
//! the status the API shows: pure, so it is tested without an engine.
//!
//! Every running container that declares a route keeps that route and its pool
//! alive; only eligible containers (running, not paused, not draining, healthy
//! or without a HEALTHCHECK) are backends. A declared route with no eligible
//! container therefore answers 503, and disappears (404) once none runs.

use super::container::Container;
use super::labels::{self, Declared, Reading};
use crate::config::layers::{Layer, Precedence};
use crate::config::{
    BackendAddress, BackendConfig, DockerConfig, HostMatch, PoolConfig, RouteConfig, RouteTarget,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// A running container and what discovery knows beyond its inspect answer.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub(crate) container: Container,
    /// Set by a stop signal: the `started_at` of the run that received it (a
    /// restart clears it).
    pub(crate) stopping: Option<String>,
}

impl Tracked {
    fn draining(&self) -> bool {
        self.stopping.as_deref() == Some(self.container.started_at.as_str())
    }
}

/// One container in `GET /api/v1/discovery`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ContainerStatus {
    pub(crate) id: String,
    pub(crate) name: String,
    /// `routed` or `skipped`.
    pub(crate) verdict: &'static str,
    pub(crate) reason: Option<String>,
    /// `eligible`, `starting`, `unhealthy`, `paused`, `draining`, or `skipped`.
    pub(crate) state: &'static str,
    pub(crate) routes: Vec<String>,
    pub(crate) warnings: Vec<String>,
    pub(crate) address: Option<String>,
}

impl ContainerStatus {
    pub(crate) fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "verdict": self.verdict,
            "reason": self.reason,
            "state": self.state,
            "address": self.address,
            "routes": self.routes,
            "warnings": self.warnings,
        })
    }
}

/// What one pass over the containers produced.
#[derive(Clone, Debug, Default)]
pub(crate) struct Built {
    pub(crate) layer: Layer,
    pub(crate) containers: Vec<ContainerStatus>,
    /// Discovered backends: (pool, `host:port`) → (container id, name).
    pub(crate) backends: HashMap<(String, String), (String, String)>,
}

/// Builds the layer from every tracked container. `own_networks`: the networks
/// of Fulcrum's own container, when it runs in one.
pub(crate) fn build(
    cfg: &DockerConfig,
    tracked: &BTreeMap<String, Tracked>,
    own_networks: &[String],
) -> Built {
    let mut out = Built {
        layer: Layer::new("docker", Precedence::Yields),
        ..Built::default()
    };
    let mut sorted: Vec<&Tracked> = tracked.values().filter(|t| t.container.running).collect();
    sorted.sort_by(|a, b| a.container.name.cmp(&b.container.name));
    let mut gathered = Gathered::default();
    for t in sorted {
        let c = &t.container;
        let mut st = ContainerStatus {
            id: c.id.clone(),
            name: c.name.clone(),
            verdict: "skipped",
            reason: None,
            state: "skipped",
            routes: Vec::new(),
            warnings: Vec::new(),
            address: None,
        };
        let d = match labels::read(c, cfg) {
            Reading::Skip(why) => {
                st.reason = Some(why);
                out.containers.push(st);
                continue;
            }
            Reading::Routes(d) => d,
        };
        st.warnings = d.warnings.clone();
        let ip = match address(c, &d, cfg, own_networks) {
            Ok(ip) => ip,
            Err(why) => {
                st.reason = Some(why);
                out.containers.push(st);
                continue;
            }
        };
        st.verdict = "routed";
        st.state = state(t, cfg);
        add_container(&mut gathered, &mut st, c, &d, ip, cfg);
        out.layer.acme_domains.extend(d.acme_hosts.iter().cloned());
        out.containers.push(st);
    }
    out.layer.acme_domains.sort();
    out.layer.acme_domains.dedup();
    out.layer.pools = gathered.pools.into_values().collect();
    out.layer.routes = gathered.routes.into_values().map(|(r, _)| r).collect();
    out.backends = gathered.backends;
    out
}

/// Pools, routes and backends of one pass, keyed so that containers sharing a
/// pool or declaring the same route meet in one entry.
#[derive(Default)]
struct Gathered {
    pools: BTreeMap<String, PoolConfig>,
    /// (host, path) → (route, the container that declared it first).
    routes: BTreeMap<(String, String), (RouteConfig, String)>,
    /// (pool, `host:port`) → (container id, name).
    backends: HashMap<(String, String), (String, String)>,
}

/// Adds one routed container's pools, routes and (when eligible) backends.
fn add_container(
    gathered: &mut Gathered,
    st: &mut ContainerStatus,
    c: &Container,
    d: &Declared,
    ip: IpAddr,
    cfg: &DockerConfig,
) {
    for s in &d.services {
        let pool = gathered.pools.entry(s.pool.clone()).or_insert_with(|| {
            let mut p = cfg.pool_defaults.clone();
            p.name = s.pool.clone();
            p.health_check = s.health_check.clone().or(p.health_check);
            p
        });
        let key = if ip.is_ipv6() {
            format!("[{ip}]:{}", s.port)
        } else {
            format!("{ip}:{}", s.port)
        };
        st.address.get_or_insert_with(|| key.clone());
        if st.state != "eligible" || pool.backends.iter().any(|b| b.address.key == key) {
            continue;
        }
        let mut b = BackendConfig::new(BackendAddress {
            scheme: s.scheme,
            host: ip.to_string(),
            port: s.port,
            key: key.clone(),
        });
        b.weight = d.weight;
        b.failover_level = d.level;
        b.region = d.region.clone();
        b.name = Some(c.name.clone());
        gathered
            .backends
            .insert((s.pool.clone(), key), (c.id.clone(), c.name.clone()));
        pool.backends.push(b);
    }
    for r in &d.routes {
        let pool = &d.services[r.service].pool;
        let host = match &r.host {
            Some(HostMatch::Exact(h)) => h.clone(),
            Some(HostMatch::Wildcard(s)) => format!("*.{s}"),
            None => String::new(),
        };
        let text = format!("{}{}", if host.is_empty() { "*" } else { &host }, r.path);
        match gathered.routes.get(&(host.clone(), r.path.clone())) {
            Some((existing, by)) => {
                if let RouteTarget::Pool { name, .. } = &existing.target
                    && name != pool
                {
                    st.warnings.push(format!(
                        "route {text} already goes to pool `{name}` (declared by {by}); this container's claim is skipped"
                    ));
                    continue;
                }
            }
            None => {
                let route = RouteConfig {
                    name: format!("docker:{text}"),
                    host: r.host.clone(),
                    path_prefix: r.path.clone(),
                    target: RouteTarget::Pool {
                        name: pool.clone(),
                        loc: Default::default(),
                    },
                    sticky: false,
                    load_balancing: None,
                    strip_prefix: r.strip_prefix,
                    headers: Default::default(),
                    // Discovered routes take no rate limit, held body or cache
                    // from labels yet: a file route for the same host sets them.
                    rate_limit: None,
                    buffer_request_body: 0,
                    cache: None,
                    loc: Default::default(),
                };
                gathered
                    .routes
                    .insert((host, r.path.clone()), (route, c.name.clone()));
            }
        }
        st.routes.push(text);
    }
}

/// Whether a routed container gets traffic, in one word.
fn state(t: &Tracked, cfg: &DockerConfig) -> &'static str {
    let c = &t.container;
    if t.draining() {
        "draining"
    } else if c.paused {
        "paused"
    } else if cfg.respect_healthcheck && c.health.as_deref() == Some("starting") {
        "starting"
    } else if cfg.respect_healthcheck && c.health.as_deref() == Some("unhealthy") {
        "unhealthy"
    } else {
        "eligible"
    }
}

/// The container's address: on its labelled network, else the configured one,
/// else the first (by name) it shares with Fulcrum's own container, else its
/// first by name.
fn address(
    c: &Container,
    d: &Declared,
    cfg: &DockerConfig,
    own_networks: &[String],
) -> Result<IpAddr, String> {
    let wanted = d.network.as_ref().or(cfg.network.as_ref());
    let name = match wanted {
        Some(n) => {
            if !c.networks.contains_key(n) {
                return Err(format!("not attached to network `{n}`"));
            }
            n.clone()
        }
        None => {
            let shared = c
                .networks
                .keys()
                .find(|n| own_networks.contains(n))
                .or_else(|| c.networks.keys().next());
            match shared {
                Some(n) => n.clone(),
                None => return Err("attached to no network".into()),
            }
        }
    };
    match c.networks.get(&name) {
        Some(Some(ip)) => Ok(*ip),
        _ => Err(format!("no IP address on network `{name}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::container::sample;
    use super::*;

    fn tracked(cs: Vec<Container>) -> BTreeMap<String, Tracked> {
        cs.into_iter()
            .map(|c| {
                (
                    c.id.clone(),
                    Tracked {
                        container: c,
                        stopping: None,
                    },
                )
            })
            .collect()
    }

    fn backends(b: &Built, pool: &str) -> Vec<String> {
        b.layer
            .pools
            .iter()
            .find(|p| p.name == pool)
            .map(|p| p.backends.iter().map(|x| x.address.key.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn replicas_share_a_pool_and_only_eligible_ones_are_backends() {
        let cfg = DockerConfig::default();
        let mut a = sample("a", &["VIRTUAL_HOST=x.local"], &[]);
        a.networks = [("bridge".to_string(), Some("172.17.0.2".parse().unwrap()))].into();
        let mut b = a.clone();
        b.id = "b-id".into();
        b.name = "b".into();
        b.networks = [("bridge".to_string(), Some("172.17.0.3".parse().unwrap()))].into();
        b.health = Some("starting".into());
        let mut c = a.clone();
        c.id = "c-id".into();
        c.name = "c".into();
        c.networks = [("bridge".to_string(), Some("172.17.0.4".parse().unwrap()))].into();
        let mut t = tracked(vec![a, b, c.clone()]);
        t.get_mut("c-id").unwrap().stopping = Some(c.started_at.clone());
        let built = build(&cfg, &t, &[]);
        assert_eq!(backends(&built, "docker-x.local"), ["172.17.0.2:8080"]);
        assert_eq!(built.layer.routes.len(), 1);
        let states: Vec<_> = built.containers.iter().map(|s| s.state).collect();
        assert_eq!(states, ["eligible", "starting", "draining"]);
        assert_eq!(
            built.backends[&("docker-x.local".to_string(), "172.17.0.2:8080".to_string())].1,
            "a"
        );
        // None eligible: the route and its (empty) pool stay, so it answers 503.
        let only_b: BTreeMap<_, _> = t.into_iter().filter(|(k, _)| k == "b-id").collect();
        let built = build(&cfg, &only_b, &[]);
        assert_eq!(built.layer.routes.len(), 1);
        assert!(backends(&built, "docker-x.local").is_empty());
        // A restart (new start time) ends draining.
        let mut again = tracked(vec![c.clone()]);
        again.get_mut("c-id").unwrap().stopping = Some("earlier".into());
        assert_eq!(build(&cfg, &again, &[]).containers[0].state, "eligible");
    }

    #[test]
    fn networks_are_chosen_in_order() {
        let c = sample("a", &["VIRTUAL_HOST=x.local"], &[]);
        let cfg = DockerConfig::default();
        let addr = |c: &Container, cfg: &DockerConfig, own: &[String]| {
            let t = tracked(vec![c.clone()]);
            build(cfg, &t, own).containers[0].clone()
        };
        assert_eq!(
            addr(&c, &cfg, &[]).address.as_deref(),
            Some("172.17.0.2:8080")
        );
        assert_eq!(
            addr(&c, &cfg, &["front".into()]).address.as_deref(),
            Some("172.20.0.2:8080")
        );
        let front = DockerConfig {
            network: Some("front".into()),
            ..DockerConfig::default()
        };
        assert_eq!(
            addr(&c, &front, &[]).address.as_deref(),
            Some("172.20.0.2:8080")
        );
        let mut labelled = c.clone();
        labelled
            .labels
            .insert("fulcrum.network".into(), "bridge".into());
        assert_eq!(
            addr(&labelled, &front, &[]).address.as_deref(),
            Some("172.17.0.2:8080")
        );
        let missing = DockerConfig {
            network: Some("back".into()),
            ..DockerConfig::default()
        };
        let st = addr(&c, &missing, &[]);
        assert_eq!(st.verdict, "skipped");
        assert_eq!(st.reason.as_deref(), Some("not attached to network `back`"));
    }

    #[test]
    fn a_second_pool_for_one_route_is_refused_with_a_warning() {
        let cfg = DockerConfig::default();
        let a = sample(
            "a",
            &[],
            &[("fulcrum.host", "x.local"), ("fulcrum.pool", "one")],
        );
        let b = sample(
            "b",
            &[],
            &[("fulcrum.host", "x.local"), ("fulcrum.pool", "two")],
        );
        let built = build(&cfg, &tracked(vec![a, b]), &[]);
        assert_eq!(built.layer.routes.len(), 1);
        assert!(built.containers[1].warnings[0].contains("already goes to pool `one`"));
    }
}
