//! Configuration: parse (YAML or JSON), validate, fill in defaults.
//!
//! Errors are reported all at once as `FILE:LINE:COL: message`.
//!
//! One file per section, each holding that section's types and defaults, its
//! decoding (with its own checks) and its JSON form for `GET /api/v1/config`
//! (secrets redacted), side by side, with unit tests:
//! `listeners` (+ TLS, ACME, redirect), `admin`, `access_log`, `limits`,
//! `trusted_proxies`, `pools/` (one file per pool sub-block), `routes`,
//! `failover` (+ notification channels), `cluster`, `tracing`, `discovery`.
//! `root` holds the whole [`Config`]: it hooks every section in (one line each
//! in its key list, `decode` and `serialize`) and runs the checks that span
//! sections (a route naming an unknown pool, the admin address on a listener).
//! Underneath: `tree` (the YAML tree with positions), `decode` (typed reads that
//! collect errors), `env` (`${VAR}`), `units` (durations and sizes).
//!
//! A new section: a file with `decode(d, m.get("key"), ...)` and `serialize`,
//! its field on `Config`, its key in `root::KEYS`, one line in `root::decode`
//! and one in `root::serialize`. A new key of a section: only that section's file.

mod access_log;
mod admin;
mod cache;
mod cluster;
mod decode;
mod discovery;
mod env;
mod failover;
pub(crate) mod layers;
mod limits;
mod listeners;
mod pools;
mod rate_limit;
mod root;
mod routes;
pub(crate) mod serialize;
#[cfg(test)]
mod testing;
mod tracing;
pub(crate) mod tree;
mod trusted_proxies;
pub(crate) mod units;

pub(crate) use access_log::{AccessField, AccessLogConfig, LogFormat, LogTarget};
pub(crate) use admin::{AdminConfig, AdminTls};
pub(crate) use cache::{CacheConfig, CacheKeyPart};
pub(crate) use cluster::{ClusterConfig, ClusterHooks, VipConfig, valid_node_id};
pub(crate) use decode::ConfigError;
pub(crate) use discovery::{DiscoveryConfig, DockerConfig};
pub(crate) use failover::{
    FailoverConfig, FailoverOverride, FailoverSettings, FailoverStrategy, LogLevel,
    NotificationChannel, NotificationConfig, WebhookFormat,
};
pub(crate) use limits::Limits;
pub(crate) use listeners::{AcmeChallenge, AcmeConfig, ListenerConfig, parse_listen_address};
pub(crate) use pools::{
    Algorithm, BackendAddress, BackendConfig, HashKey, HealthCheckConfig, HealthCheckOverride,
    HedgeDelay, PassiveHealthConfig, PoolConfig, QueueConfig, RetryConfig, Scheme, StatusMatcher,
    Timeouts, UpstreamTls,
};
pub(crate) use rate_limit::{RateKey, RateLimitConfig};
pub(crate) use root::Config;
pub(crate) use routes::{HeaderOps, HeaderRules, HostMatch, RouteConfig, RouteTarget};
pub(crate) use tracing::{OtlpProtocol, TracingConfig};
pub(crate) use units::check_email;

use std::fmt;
use std::path::{Path, PathBuf};

/// Every problem found in one config source.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    fn single(source_name: &str, message: String) -> Self {
        ConfigErrors {
            source_name: source_name.to_string(),
            errors: vec![ConfigError {
                loc: tree::Loc { line: 1, col: 1 },
                message,
            }],
        }
    }

    /// One `FILE:LINE:COL: message` line per error.
    pub fn lines(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|e| {
                format!(
                    "{}:{}:{}: {}",
                    self.source_name, e.loc.line, e.loc.col, e.message
                )
            })
            .collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// A successfully loaded config and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
    /// The source text, to detect a reload that changes nothing.
    pub text: String,
}

/// The default config path: `$FULCRUM_CONFIG`, then `./fulcrum.yaml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("FULCRUM_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fulcrum.yaml"))
}

pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(&name, format!("cannot read config: {e}")))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let config = load_str(&text, &name, base)?;
    Ok(Loaded {
        config,
        path: Some(path.to_path_buf()),
        text,
    })
}

/// Parses config text (YAML, or JSON which is YAML too). `base_dir` resolves
/// relative paths such as certificate files.
pub fn load_str(text: &str, source_name: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    load_str_with_env(text, source_name, base_dir, &|k| std::env::var(k).ok())
}

pub fn load_str_with_env(
    text: &str,
    source_name: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let root = match tree::parse(text) {
        Ok(root) => root,
        Err(e) => {
            return Err(ConfigErrors {
                source_name: source_name.to_string(),
                errors: vec![ConfigError {
                    loc: e.loc,
                    message: e.message,
                }],
            });
        }
    };
    let mut d = decode::Decoder::new(env);
    let config = root::decode(&mut d, &root, base_dir);
    if d.errors.is_empty() {
        Ok(config)
    } else {
        let mut errors = d.errors;
        errors.sort();
        errors.dedup();
        Err(ConfigErrors {
            source_name: source_name.to_string(),
            errors,
        })
    }
}
