//! Decoding the tree into the typed model, then cross-checking it. Every problem found
//! is collected; nothing stops at the first one.

use super::decode::Decoder;
use super::tree::{Loc, Node};
use super::{Algorithm, Config, RouteTarget};
use std::path::Path;

const TOP_KEYS: &[&str] = &[
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

/// Decodes a whole document. `base_dir` resolves relative file paths.
pub fn decode_config(d: &mut Decoder, root: &Node, base_dir: &Path) -> Config {
    let mut cfg = Config::default();
    let Some(m) = d.map(root, "the config", TOP_KEYS) else {
        return cfg;
    };
    cfg.listeners = super::listeners::decode(d, m.get("listeners"), base_dir);
    cfg.admin = super::admin::decode(d, m.get_raw("admin"));
    cfg.access_log = super::access_log::decode(d, m.get("access_log"), base_dir);
    cfg.limits = super::limits::decode(d, m.get("limits"));
    cfg.trusted_proxies = super::trusted_proxies::decode(d, m.get("trusted_proxies"));
    if let Some(n) = m.get("shutdown_timeout")
        && let Some(v) = d.duration(n, "shutdown_timeout")
    {
        cfg.shutdown_timeout = v;
    }
    cfg.pools = super::pools::decode(d, m.get("pools"), base_dir);
    cfg.routes = super::routes::decode(d, m.get("routes"));
    cfg.failover = super::failover::decode(d, m.get("failover"));

    cfg.tracing = super::tracing::decode(d, m.get("tracing"));
    cfg.cluster = super::cluster::decode(d, m.get("cluster"), base_dir);
    d.unbuilt(&m, "discovery", "Docker discovery");
    validate(d, &cfg);
    cfg
}

/// Checks that need the whole model: names, references, combinations.
fn validate(d: &mut Decoder, cfg: &Config) {
    let seen_listeners = super::listeners::validate(d, &cfg.listeners);
    if let Some(a) = &cfg.admin
        && let Some(prev) = seen_listeners.get(&a.address)
        && a.address.port() != 0
    {
        d.error(
            *prev,
            format!("listener address {} is also the admin address", a.address),
        );
    }
    let pools = super::pools::validate(d, &cfg.pools);
    super::routes::validate(d, &cfg.routes);
    for r in &cfg.routes {
        let check_pool = |d: &mut Decoder, name: &str, loc: Loc| {
            if !pools.contains_key(name) {
                let names: Vec<&str> = pools.keys().copied().collect();
                let hint = super::decode::suggest(name, &names)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                d.error(loc, format!("route refers to unknown pool `{name}`{hint}"));
            }
        };
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
