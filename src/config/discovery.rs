//! `discovery:` — routes, pools and backends found by watching a container
//! engine (`docker`). Node-local: never replicated in a cluster.

use super::decode::Decoder;
use super::pools::{self, PoolConfig};
use super::serialize::{duration, put};
use super::tree::Node;
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// Which labelling conventions are read from each container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conventions {
    pub nginx_proxy: bool,
    pub traefik: bool,
    pub fulcrum: bool,
}

impl Default for Conventions {
    fn default() -> Self {
        Conventions {
            nginx_proxy: true,
            traefik: true,
            fulcrum: true,
        }
    }
}

/// `discovery.docker`.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`; `None`: `$DOCKER_HOST`, then the
    /// default socket (resolved when the watcher starts).
    pub endpoint: Option<String>,
    pub exposed_by_default: bool,
    pub network: Option<String>,
    pub respect_healthcheck: bool,
    pub resync_interval: Duration,
    pub read: Conventions,
    /// Settings of every discovered pool (its name and backends are unused).
    pub pool_defaults: PoolConfig,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            endpoint: None,
            exposed_by_default: true,
            network: None,
            respect_healthcheck: true,
            resync_interval: Duration::from_secs(30),
            read: Conventions::default(),
            pool_defaults: PoolConfig::new(""),
        }
    }
}

/// The `discovery:` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoveryConfig {
    pub docker: Option<DockerConfig>,
}

const KEYS: &[&str] = &[
    "endpoint",
    "exposed_by_default",
    "network",
    "respect_healthcheck",
    "resync_interval",
    "read",
    "pool_defaults",
    "enabled",
];

/// `discovery:` (absent: no discovery).
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>, base_dir: &Path) -> DiscoveryConfig {
    let Some(m) = n.and_then(|n| d.map(n, "discovery", &["docker"])) else {
        return DiscoveryConfig::default();
    };
    DiscoveryConfig {
        docker: m.get_raw("docker").and_then(|n| docker(d, n, base_dir)),
    }
}

fn docker(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<DockerConfig> {
    let m = d.map(n, "discovery.docker", KEYS)?;
    if m.get("enabled").and_then(|v| d.boolean(v, "enabled")) == Some(false) {
        return None;
    }
    let mut c = DockerConfig::default();
    if let Some(v) = m.get("endpoint").and_then(|v| {
        let e = d.string(v, "endpoint")?;
        if !(e.starts_with("unix://") || e.starts_with("tcp://")) {
            d.error(
                v.loc,
                format!("endpoint `{e}` must be unix:///path/to.sock or tcp://host:port"),
            );
            return None;
        }
        Some(e)
    }) {
        c.endpoint = Some(v);
    }
    if let Some(v) = m
        .get("exposed_by_default")
        .and_then(|v| d.boolean(v, "exposed_by_default"))
    {
        c.exposed_by_default = v;
    }
    c.network = m.get("network").and_then(|v| d.scalar_string(v, "network"));
    if let Some(v) = m
        .get("respect_healthcheck")
        .and_then(|v| d.boolean(v, "respect_healthcheck"))
    {
        c.respect_healthcheck = v;
    }
    if let Some(v) = m.get("resync_interval") {
        match d.duration(v, "resync_interval") {
            Some(t) if t < Duration::from_secs(1) => {
                d.error(v.loc, "resync_interval must be at least 1s")
            }
            Some(t) => c.resync_interval = t,
            None => {}
        }
    }
    if let Some(v) = m.get("read") {
        c.read = read(d, v);
    }
    if let Some(v) = m.get("pool_defaults") {
        c.pool_defaults = pools::decode_defaults(d, v, base_dir);
    }
    Some(c)
}

fn read(d: &mut Decoder, n: &Node) -> Conventions {
    let mut c = Conventions {
        nginx_proxy: false,
        traefik: false,
        fulcrum: false,
    };
    let names = ["nginx-proxy", "traefik", "fulcrum"];
    for (name, loc) in d.string_list(n, "read") {
        match name.as_str() {
            "nginx-proxy" => c.nginx_proxy = true,
            "traefik" => c.traefik = true,
            "fulcrum" => c.fulcrum = true,
            other => {
                let hint = super::decode::suggest(other, &names)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                d.error(
                    loc,
                    format!(
                        "read: unknown convention `{other}` (nginx-proxy | traefik | fulcrum){hint}"
                    ),
                );
            }
        }
    }
    c
}

pub(crate) fn serialize(c: &DiscoveryConfig) -> Option<Value> {
    let docker = c.docker.as_ref()?;
    let mut m = Map::new();
    put(
        &mut m,
        "endpoint",
        docker.endpoint.clone().map(Value::String),
    );
    put(
        &mut m,
        "exposed_by_default",
        Value::Bool(docker.exposed_by_default),
    );
    put(&mut m, "network", docker.network.clone().map(Value::String));
    put(
        &mut m,
        "respect_healthcheck",
        Value::Bool(docker.respect_healthcheck),
    );
    put(&mut m, "resync_interval", duration(docker.resync_interval));
    let read: Vec<Value> = [
        (docker.read.nginx_proxy, "nginx-proxy"),
        (docker.read.traefik, "traefik"),
        (docker.read.fulcrum, "fulcrum"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| Value::String((*n).into()))
    .collect();
    put(&mut m, "read", Value::Array(read));
    put(
        &mut m,
        "pool_defaults",
        pools::serialize_defaults(&docker.pool_defaults),
    );
    Some(serde_json::json!({ "docker": Value::Object(m) }))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_with_defaults_and_round_trips() {
        let c = load("discovery: { docker: {} }\n");
        let dc = c.discovery.docker.as_ref().expect("docker");
        assert!(dc.exposed_by_default && dc.respect_healthcheck);
        assert_eq!(dc.resync_interval, Duration::from_secs(30));
        assert_eq!(dc.read, Conventions::default());
        round_trip(&c);
        let c = load(
            "discovery:
  docker:
    endpoint: \"unix:///run/podman/podman.sock\"
    exposed_by_default: false
    network: front
    resync_interval: 10s
    read: [traefik]
    pool_defaults: { algorithm: least_conn, slow_start: 5s }
",
        );
        let dc = c.discovery.docker.as_ref().expect("docker");
        assert!(!dc.exposed_by_default);
        assert_eq!(dc.network.as_deref(), Some("front"));
        assert!(dc.read.traefik && !dc.read.nginx_proxy);
        assert_eq!(
            dc.pool_defaults.algorithm,
            super::super::Algorithm::LeastConn
        );
        let json = round_trip(&c);
        assert_eq!(json["discovery"]["docker"]["read"][0], "traefik");
        assert!(
            load("discovery: { docker: { enabled: false } }\n")
                .discovery
                .docker
                .is_none()
        );
    }

    #[test]
    fn rejects_bad_values_with_positions() {
        assert_eq!(
            errors(
                "discovery:
  docker:
    endpoint: \"/var/run/docker.sock\"
    read: [nginx_proxy]
    resync_interval: 100ms
    pool_defaults: { name: x, algorithm: hash }
    colour: blue
"
            ),
            [
                "CFG:3:15: endpoint `/var/run/docker.sock` must be unix:///path/to.sock or tcp://host:port",
                "CFG:4:12: read: unknown convention `nginx_proxy` (nginx-proxy | traefik | fulcrum) (did you mean `nginx-proxy`?)",
                "CFG:5:22: resync_interval must be at least 1s",
                "CFG:6:20: pool_defaults uses algorithm hash: set `hash_key`",
                "CFG:6:22: unknown key `name` in pool_defaults (known keys: tls, algorithm, hash_key, health_check, passive_health, retries, timeouts, failover, fail_open, slow_start, max_requests, queue)",
                "CFG:7:5: unknown key `colour` in discovery.docker (known keys: endpoint, exposed_by_default, network, respect_healthcheck, resync_interval, read, pool_defaults, enabled)",
            ]
        );
    }
}
