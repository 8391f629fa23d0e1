//! The typed configuration: what a user wrote, validated and with defaults filled in.
//! Nothing here is shared with the request path directly; `runtime` compiles it.

use super::tree::Loc;
use super::{
    AccessLogConfig, AdminConfig, Algorithm, ClusterConfig, FailoverConfig, Limits, ListenerConfig,
    PoolConfig, TracingConfig,
};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: super::listeners::default_listeners(),
            admin: Some(AdminConfig::default()),
            access_log: AccessLogConfig::default(),
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            pools: Vec::new(),
            routes: Vec::new(),
            failover: FailoverConfig::default(),
            tracing: None,
            cluster: None,
        }
    }
}

/// Host part of a route: exact name, or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Exact(String),
    /// Stored without the leading `*.`; matches any name ending in `.suffix`.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SplitVariant {
    pub pool: String,
    pub weight: u32,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteTarget {
    Pool { name: String, loc: Loc },
    Split(Vec<SplitVariant>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderRules {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path_prefix: String,
    pub target: RouteTarget,
    pub sticky: bool,
    pub load_balancing: Option<Algorithm>,
    pub strip_prefix: bool,
    pub headers: HeaderRules,
    pub loc: Loc,
}
