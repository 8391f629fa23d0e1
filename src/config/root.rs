//! The whole config: every section hooked in (one line each in `KEYS`, `decode`
//! and `serialize`), and the checks that span sections.

use super::decode::{Decoder, suggest};
use super::serialize::{duration, put};
use super::tree::{Loc, Node};
use super::{
    AccessLogConfig, AdminConfig, Algorithm, ClusterConfig, DiscoveryConfig, FailoverConfig,
    Limits, ListenerConfig, PoolConfig, RouteConfig, RouteTarget, TracingConfig,
};
use super::{access_log, admin, cluster, discovery, failover, limits, listeners};
use super::{pools, routes, tracing, trusted_proxies};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub admin: Option<AdminConfig>,
    pub access_log: AccessLogConfig,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_timeout: Duration,
    pub pools: Vec<PoolConfig>,
    pub routes: Vec<RouteConfig>,
    pub failover: FailoverConfig,
    pub tracing: Option<TracingConfig>,
    pub cluster: Option<ClusterConfig>,
    /// Node-local: each node watches its own container engine.
    pub discovery: DiscoveryConfig,
}

/// How long SIGTERM waits for requests in flight.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: listeners::default_listeners(),
            admin: Some(AdminConfig::default()),
            access_log: AccessLogConfig::default(),
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            pools: Vec::new(),
            routes: Vec::new(),
            failover: FailoverConfig::default(),
            tracing: None,
            cluster: None,
            discovery: DiscoveryConfig::default(),
        }
    }
}

/// The top-level keys.
const KEYS: &[&str] = &[
    "listeners",
    "admin",
    "access_log",
    "limits",
    "trusted_proxies",
    "shutdown_timeout",
    "pools",
    "routes",
    "failover",
    "cluster",
    "discovery",
    "tracing",
];

/// Decodes a whole document, then runs the checks that span sections. Every
/// problem is collected in `d`. `base_dir` resolves relative file paths.
pub(crate) fn decode(d: &mut Decoder, root: &Node, base_dir: &Path) -> Config {
    let Some(m) = d.map(root, "the config", KEYS) else {
        return Config::default();
    };
    // One line per section; each decoder picks the default when its key is absent.
    let cfg = Config {
        listeners: listeners::decode(d, m.get("listeners"), base_dir),
        admin: admin::decode(d, m.get_raw("admin")),
        access_log: access_log::decode(d, m.get("access_log"), base_dir),
        limits: limits::decode(d, m.get("limits")),
        trusted_proxies: trusted_proxies::decode(d, m.get("trusted_proxies")),
        shutdown_timeout: shutdown_timeout(d, m.get("shutdown_timeout")),
        pools: pools::decode(d, m.get("pools"), base_dir),
        routes: routes::decode(d, m.get("routes")),
        failover: failover::decode(d, m.get("failover")),
        tracing: tracing::decode(d, m.get("tracing")),
        cluster: cluster::decode(d, m.get("cluster"), base_dir),
        discovery: discovery::decode(d, m.get("discovery"), base_dir),
    };
    validate(d, &cfg);
    cfg
}

fn shutdown_timeout(d: &mut Decoder, n: Option<&Node>) -> Duration {
    n.and_then(|n| d.duration(n, "shutdown_timeout"))
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT)
}

/// Each section's own checks, then those between sections: the admin address is
/// not a listener's, routes name pools that exist (and that can hash when asked to).
fn validate(d: &mut Decoder, cfg: &Config) {
    let listened = listeners::validate(d, &cfg.listeners);
    if let Some(a) = &cfg.admin
        && let Some(prev) = listened.get(&a.address)
        && a.address.port() != 0
    {
        d.error(
            *prev,
            format!("listener address {} is also the admin address", a.address),
        );
    }
    let pools = pools::validate(d, &cfg.pools);
    routes::validate(d, &cfg.routes);
    // In file order, so that the suggestion for a misspelt pool is stable.
    let names: Vec<&str> = cfg.pools.iter().map(|p| p.name.as_str()).collect();
    let check_pool = |d: &mut Decoder, name: &str, loc: Loc| {
        if !pools.contains_key(name) {
            let hint = suggest(name, &names)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            d.error(loc, format!("route refers to unknown pool `{name}`{hint}"));
        }
    };
    for r in &cfg.routes {
        match &r.target {
            RouteTarget::Pool { name, loc } => check_pool(d, name, *loc),
            RouteTarget::Split(vs) => {
                for v in vs {
                    check_pool(d, &v.pool, v.loc);
                }
            }
        }
        if r.load_balancing == Some(Algorithm::Hash)
            && let RouteTarget::Pool { name, loc } = &r.target
            && pools
                .get(name.as_str())
                .is_some_and(|p| p.hash_key.is_none())
        {
            d.error(
                *loc,
                format!("load_balancing hash needs `hash_key` on pool `{name}`"),
            );
        }
    }
}

/// The whole config as JSON, in the shape it is written. With `redact`, secrets
/// (admin token, SMTP password, webhook URLs, cluster secret) are replaced by
/// `<redacted>`.
// A table, kept one line per section like `decode`.
#[rustfmt::skip]
pub(crate) fn serialize(c: &Config, redact: bool) -> Value {
    let mut m = Map::new();
    // `None` leaves the key out.
    put(&mut m, "listeners", listeners::serialize(&c.listeners));
    put(&mut m, "admin", admin::serialize(c.admin.as_ref(), redact));
    put(&mut m, "access_log", access_log::serialize(&c.access_log));
    put(&mut m, "limits", limits::serialize(&c.limits));
    put(&mut m, "trusted_proxies", trusted_proxies::serialize(&c.trusted_proxies));
    put(&mut m, "shutdown_timeout", duration(c.shutdown_timeout));
    put(&mut m, "pools", pools::serialize(&c.pools));
    put(&mut m, "routes", routes::serialize(&c.routes));
    put(&mut m, "failover", failover::serialize(&c.failover, redact));
    put(&mut m, "tracing", c.tracing.as_ref().map(tracing::serialize));
    put(&mut m, "cluster", c.cluster.as_ref().map(|cl| cluster::serialize(cl, redact)));
    put(&mut m, "discovery", discovery::serialize(&c.discovery));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn the_empty_config_is_the_default_and_round_trips() {
        let c = load("{}\n");
        let json = round_trip(&c);
        assert_eq!(json, serialize(&Config::default(), false));
        assert_eq!(json["shutdown_timeout"], "30s");
        assert!(json.get("tracing").is_none() && json.get("cluster").is_none());
        let c = load("shutdown_timeout: 45s\n");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(45));
        assert_eq!(round_trip(&c)["shutdown_timeout"], "45s");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert_eq!(
            errors("limit: {}\ndiscovery: { docker: true }\n"),
            [
                "CFG:1:1: unknown key `limit` in the config (did you mean `limits`?)",
                "CFG:2:22: discovery.docker must be a mapping, found a boolean",
            ]
        );
    }

    #[test]
    fn cross_section_checks() {
        assert_eq!(
            errors(
                "listeners: [\"127.0.0.1:9000\"]
admin: { address: \"127.0.0.1:9000\" }
pools:
  - { name: aa, backends: [\"127.0.0.1:1\"] }
  - { name: ab, backends: [\"127.0.0.1:2\"] }
routes:
  - { pool: ac }
  - { pool: aa, path_prefix: /x, load_balancing: { method: hash } }
"
            ),
            [
                "CFG:1:13: listener address 127.0.0.1:9000 is also the admin address",
                "CFG:7:13: route refers to unknown pool `ac` (did you mean `aa`?)",
                "CFG:8:13: load_balancing hash needs `hash_key` on pool `aa`",
            ]
        );
    }
}
