//! `pools:` — groups of backends and how requests are spread over them. Each
//! sub-block of a pool has its own file here; this one holds the pool itself,
//! hooks the sub-blocks in, and checks the pools as a whole.

mod algorithm;
pub(crate) mod backend;
mod health;
mod queue;
mod retries;
mod timeouts;
mod upstream_tls;

pub use algorithm::{Algorithm, HashKey};
pub use backend::{BackendAddress, BackendConfig, Scheme};
pub use health::{HealthCheckConfig, HealthCheckOverride, PassiveHealthConfig, StatusMatcher};
pub use queue::QueueConfig;
pub use retries::{HedgeDelay, RetryConfig};
pub use timeouts::Timeouts;
pub use upstream_tls::UpstreamTls;

use super::decode::{Decoder, MapView};
use super::failover::{self, FailoverOverride};
use super::serialize::{duration, put};
use super::tree::{Loc, Node};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub upstream_tls: UpstreamTls,
    pub algorithm: Algorithm,
    pub hash_key: Option<HashKey>,
    pub backends: Vec<BackendConfig>,
    pub health_check: Option<HealthCheckOverride>,
    pub passive_health: PassiveHealthConfig,
    pub retries: RetryConfig,
    pub timeouts: Timeouts,
    pub failover: FailoverOverride,
    pub fail_open: bool,
    pub slow_start: Duration,
    /// Cap on requests in flight per backend (0: none); beyond it requests wait
    /// in the pool's queue, as with HAProxy's `maxconn` on a server.
    pub max_requests: u32,
    pub queue: QueueConfig,
    pub loc: Loc,
}

impl PoolConfig {
    pub fn new(name: &str) -> Self {
        PoolConfig {
            name: name.to_string(),
            upstream_tls: UpstreamTls::default(),
            algorithm: Algorithm::RoundRobin,
            hash_key: None,
            backends: Vec::new(),
            health_check: None,
            passive_health: PassiveHealthConfig::default(),
            retries: RetryConfig::default(),
            timeouts: Timeouts::default(),
            failover: FailoverOverride::default(),
            fail_open: false,
            slow_start: Duration::ZERO,
            max_requests: 0,
            queue: QueueConfig::default(),
            loc: Loc::default(),
        }
    }

    /// The cap on requests in flight for one backend (0: none).
    pub fn max_requests_for(&self, b: &BackendConfig) -> u32 {
        b.max_requests.unwrap_or(self.max_requests)
    }

    /// The effective health check of one backend, if any applies.
    pub fn health_check_for(&self, b: &BackendConfig) -> Option<HealthCheckConfig> {
        let base = self
            .health_check
            .as_ref()
            .map(|h| h.apply_to(&HealthCheckConfig::default()));
        match (&b.health_check, base) {
            (Some(own), Some(base)) => Some(own.apply_to(&base)),
            (Some(own), None) => Some(own.apply_to(&HealthCheckConfig::default())),
            (None, base) => base,
        }
    }
}

const KEYS: &[&str] = &[
    "name",
    "tls",
    "algorithm",
    "hash_key",
    "backends",
    "health_check",
    "passive_health",
    "retries",
    "timeouts",
    "failover",
    "fail_open",
    "slow_start",
    "max_requests",
    "queue",
];

/// `pools:` (absent: none). `base_dir` resolves a pool's `tls.ca`.
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>, base_dir: &Path) -> Vec<PoolConfig> {
    let Some(n) = n else {
        return Vec::new();
    };
    d.seq(n, "pools")
        .iter()
        .filter_map(|p| pool(d, p, base_dir))
        .collect()
}

fn pool(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<PoolConfig> {
    let m = d.map(n, "a pool", KEYS)?;
    let name = match m.get("name") {
        Some(v) => d.scalar_string(v, "pool name")?,
        None => {
            d.error(m.loc, "a pool needs a `name`");
            return None;
        }
    };
    let mut p = PoolConfig::new(&name);
    p.loc = m.get("name").map(|n| n.loc).unwrap_or(m.loc);
    if let Some(v) = m.get("backends") {
        p.backends = d
            .seq(v, "backends")
            .iter()
            .filter_map(|b| backend::decode(d, b))
            .collect();
    }
    settings(d, &m, &mut p, base_dir);
    Some(p)
}

/// The settings every discovered pool starts from (`discovery.docker.pool_defaults`):
/// any pool key but `name` and `backends`.
pub(crate) fn decode_defaults(d: &mut Decoder, n: &Node, base_dir: &Path) -> PoolConfig {
    let mut p = PoolConfig::new("");
    let keys: Vec<&str> = KEYS
        .iter()
        .copied()
        .filter(|k| *k != "name" && *k != "backends")
        .collect();
    if let Some(m) = d.map(n, "pool_defaults", &keys) {
        p.loc = m.loc;
        settings(d, &m, &mut p, base_dir);
        if p.algorithm == Algorithm::Hash && p.hash_key.is_none() {
            d.error(m.loc, "pool_defaults uses algorithm hash: set `hash_key`");
        }
    }
    p
}

/// Every pool key but `name` and `backends`.
fn settings(d: &mut Decoder, m: &MapView, p: &mut PoolConfig, base_dir: &Path) {
    if let Some(v) = m
        .get("algorithm")
        .and_then(|v| d.choice(v, "algorithm", &Algorithm::NAMES))
    {
        p.algorithm = v;
    }
    if let Some(v) = m.get("hash_key") {
        p.hash_key = algorithm::decode_hash_key(d, v);
    }
    if let Some(v) = m.get("health_check") {
        p.health_check = health::decode_check(d, v);
    }
    if let Some(v) = m.get("passive_health") {
        p.passive_health = health::decode_passive(d, v);
    }
    if let Some(v) = m.get("retries") {
        p.retries = retries::decode(d, v);
    }
    if let Some(v) = m.get("timeouts") {
        p.timeouts = timeouts::decode(d, v);
    }
    if let Some(v) = m.get("failover") {
        p.failover = failover::decode_override(d, v, "pool failover");
    }
    if let Some(v) = m.get("tls") {
        p.upstream_tls = upstream_tls::decode(d, v, base_dir);
    }
    scalars(d, m, p);
    // After the caps (pool and backends), which the queue needs.
    if let Some(v) = m.get("queue") {
        p.queue = queue::decode(d, v, m.key_loc("queue").unwrap_or(m.loc), p);
    }
}

/// `fail_open`, `slow_start`, `max_requests`.
fn scalars(d: &mut Decoder, m: &MapView, p: &mut PoolConfig) {
    if let Some(v) = m.get("fail_open").and_then(|v| d.boolean(v, "fail_open")) {
        p.fail_open = v;
    }
    if let Some(v) = m
        .get("slow_start")
        .and_then(|v| d.duration(v, "slow_start"))
    {
        p.slow_start = v;
    }
    if let Some(v) = m
        .get("max_requests")
        .and_then(|v| d.int(v, "max_requests", 0, 1_000_000))
    {
        p.max_requests = v as u32;
    }
}

/// No pool name twice, no backend twice in a pool, `hash_key` exactly with
/// `algorithm: hash`. Returns the pools by name, for the checks against other
/// sections.
pub(crate) fn validate<'c>(
    d: &mut Decoder,
    pools: &'c [PoolConfig],
) -> HashMap<&'c str, &'c PoolConfig> {
    let mut by_name: HashMap<&str, &PoolConfig> = HashMap::new();
    for p in pools {
        if let Some(prev) = by_name.insert(p.name.as_str(), p) {
            d.error(
                p.loc,
                format!(
                    "duplicate pool name `{}` (first at line {})",
                    p.name, prev.loc.line
                ),
            );
        }
        let mut backends: HashMap<&str, Loc> = HashMap::new();
        let mut names: HashMap<&str, Loc> = HashMap::new();
        for b in &p.backends {
            if let Some(prev) = backends.insert(b.address.key.as_str(), b.loc) {
                d.error(
                    b.loc,
                    format!(
                        "duplicate backend {} in pool `{}` (first at line {})",
                        b.address.key, p.name, prev.line
                    ),
                );
            }
            if let Some(n) = &b.name
                && let Some(prev) = names.insert(n.as_str(), b.loc)
            {
                d.error(
                    b.loc,
                    format!(
                        "duplicate backend name `{n}` in pool `{}` (first at line {})",
                        p.name, prev.line
                    ),
                );
            }
        }
        match (p.algorithm, &p.hash_key) {
            (Algorithm::Hash, None) => d.error(
                p.loc,
                format!("pool `{}` uses algorithm hash: set `hash_key`", p.name),
            ),
            (a, Some(_)) if a != Algorithm::Hash => d.error(
                p.loc,
                format!("pool `{}`: hash_key only applies to algorithm hash", p.name),
            ),
            _ => {}
        }
    }
    by_name
}

pub(crate) fn serialize(pools: &[PoolConfig]) -> Value {
    Value::Array(pools.iter().map(pool_json).collect())
}

fn pool_json(p: &PoolConfig) -> Value {
    let mut m = Map::new();
    put(&mut m, "name", Value::String(p.name.clone()));
    let backends = p.backends.iter().map(backend::serialize).collect();
    put(&mut m, "backends", Value::Array(backends));
    settings_json(p, &mut m);
    Value::Object(m)
}

/// `pool_defaults` as written: the pool's settings without a name or backends.
pub(crate) fn serialize_defaults(p: &PoolConfig) -> Value {
    let mut m = Map::new();
    settings_json(p, &mut m);
    Value::Object(m)
}

fn settings_json(p: &PoolConfig, m: &mut Map<String, Value>) {
    put(m, "algorithm", Value::String(p.algorithm.name().into()));
    put(
        m,
        "hash_key",
        p.hash_key
            .as_ref()
            .map(|k| Value::String(algorithm::hash_key_text(k))),
    );
    put(
        m,
        "health_check",
        p.health_check.as_ref().map(health::serialize_check),
    );
    put(m, "tls", upstream_tls::serialize(&p.upstream_tls));
    put(
        m,
        "passive_health",
        health::serialize_passive(&p.passive_health),
    );
    put(m, "retries", retries::serialize(&p.retries));
    put(m, "timeouts", timeouts::serialize(&p.timeouts));
    if p.failover != FailoverOverride::default() {
        put(m, "failover", failover::serialize_override(&p.failover));
    }
    put(m, "fail_open", Value::Bool(p.fail_open));
    put(m, "slow_start", duration(p.slow_start));
    if p.max_requests > 0 || p.backends.iter().any(|b| b.max_requests.is_some()) {
        put(m, "max_requests", Value::from(p.max_requests));
        put(m, "queue", queue::serialize(&p.queue));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "pools:
  - name: app
    algorithm: hash
    hash_key: \"header:X-User\"
    backends: [\"127.0.0.1:1\", \"127.0.0.1:2\"]
    fail_open: true
    slow_start: 30s
",
        );
        let p = &c.pools[0];
        assert_eq!(p.algorithm, Algorithm::Hash);
        assert!(matches!(&p.hash_key, Some(HashKey::Header(h)) if h == "x-user"));
        assert!(p.fail_open);
        let json = round_trip(&c);
        let p = &json["pools"][0];
        assert_eq!(p["hash_key"], "header:x-user");
        assert_eq!(p["slow_start"], "30s");
        assert_eq!(p["backends"][1]["address"], "127.0.0.1:2");
        assert!(p.get("queue").is_none());
    }

    #[test]
    fn rejects_duplicates_and_a_missing_hash_key() {
        assert_eq!(
            errors(
                "pools:\n  - { name: a, algorithm: hash, backends: [\"1.1.1.1:1\", \"1.1.1.1:1\"] }\n  - { name: a }\n"
            ),
            [
                "CFG:2:13: pool `a` uses algorithm hash: set `hash_key`",
                "CFG:2:57: duplicate backend 1.1.1.1:1 in pool `a` (first at line 2)",
                "CFG:3:13: duplicate pool name `a` (first at line 2)",
            ]
        );
    }
}
