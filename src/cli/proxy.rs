//! `fulcrum proxy`: a reverse proxy from the command line, no config file.

use crate::config::tree::Loc;
use crate::config::{
    AccessLogConfig, AdminConfig, Algorithm, BackendAddress, BackendConfig, Config,
    HealthCheckOverride, Loaded, PoolConfig, RouteConfig, RouteTarget, parse_listen_address,
};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ProxyArgs {
    /// Address to listen on (e.g. :8080, 127.0.0.1:8080)
    #[arg(long)]
    from: String,
    /// Backend URL or host:port (repeat for several)
    #[arg(long, required = true)]
    to: Vec<String>,
    /// Balancing algorithm
    #[arg(long, default_value = "round_robin")]
    lb: String,
    /// Check this path on every backend every 5s and route around failing ones
    #[arg(long)]
    health_path: Option<String>,
    /// Write an access log line per request to stderr
    #[arg(long)]
    access_log: bool,
    /// Serve the admin API, /metrics and the dashboard on this address (e.g. 127.0.0.1:9000)
    #[arg(long)]
    admin: Option<String>,
    /// Bearer token for the admin API (required when --admin is not a loopback address)
    #[arg(long, env = "FULCRUM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Worker threads [default: the CPUs this process may use]
    #[arg(long, env = "FULCRUM_WORKERS")]
    workers: Option<usize>,
}

/// `--admin` (and its token), checked as the config file's `admin` section is.
fn admin(args: &ProxyArgs) -> Result<Option<AdminConfig>, String> {
    let Some(text) = &args.admin else {
        return Ok(None);
    };
    let address = parse_listen_address(text).map_err(|e| format!("--admin: {e}"))?;
    let token = args.admin_token.clone().filter(|t| !t.is_empty());
    if !address.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "--admin {address} is not a loopback address: set --admin-token (or FULCRUM_ADMIN_TOKEN)"
        ));
    }
    if !address.ip().is_loopback() {
        return Err(format!(
            "--admin {address} is not a loopback address: beyond loopback the admin API needs TLS, which a config file sets (`admin.tls`); keep --admin on 127.0.0.1 here"
        ));
    }
    Ok(Some(AdminConfig {
        address,
        token,
        ..Default::default()
    }))
}

pub fn build_config(args: &ProxyArgs) -> Result<Config, String> {
    let address = parse_listen_address(&args.from)?;
    let algorithm = Algorithm::NAMES
        .iter()
        .find(|(n, _)| *n == args.lb)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            format!(
                "unknown --lb `{}` (one of: {})",
                args.lb,
                Algorithm::NAMES.map(|(n, _)| n).join(", ")
            )
        })?;
    if algorithm == Algorithm::Hash {
        return Err("--lb hash needs a hash_key; use a config file".into());
    }
    let mut pool = PoolConfig::new("default");
    pool.algorithm = algorithm;
    for to in &args.to {
        pool.backends
            .push(BackendConfig::new(BackendAddress::parse(to)?));
    }
    if let Some(path) = &args.health_path {
        if !path.starts_with('/') {
            return Err("--health-path must start with /".into());
        }
        pool.health_check = Some(HealthCheckOverride {
            path: Some(path.clone()),
            ..Default::default()
        });
    }
    Ok(Config {
        listeners: vec![crate::config::ListenerConfig::plain(address)],
        admin: admin(args)?,
        access_log: AccessLogConfig {
            enabled: args.access_log,
            ..Default::default()
        },
        pools: vec![pool],
        routes: vec![RouteConfig {
            name: "default".into(),
            host: None,
            path_prefix: "/".into(),
            target: RouteTarget::Pool {
                name: "default".into(),
                loc: Loc::default(),
            },
            sticky: false,
            load_balancing: None,
            strip_prefix: false,
            headers: Default::default(),
            rate_limit: None,
            buffer_request_body: 0,
            cache: None,
            loc: Loc::default(),
        }],
        ..Config::default()
    })
}

pub fn run(args: ProxyArgs) -> ExitCode {
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fulcrum proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = Loaded {
        config,
        path: None,
        text: String::new(),
    };
    super::run::serve(loaded, args.workers, false)
}
