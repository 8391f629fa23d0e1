//! The typed configuration: what a user wrote, validated and with defaults filled in.
//! Nothing here is shared with the request path directly; `runtime` compiles it.

use super::{
    AccessLogConfig, AdminConfig, ClusterConfig, FailoverConfig, Limits, ListenerConfig,
    PoolConfig, RouteConfig, TracingConfig,
};
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
