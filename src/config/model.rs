//! The typed configuration: what a user wrote, validated and with defaults filled in.
//! Nothing here is shared with the request path directly; `runtime` compiles it.

use super::tree::Loc;
use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Protobuf,
    Json,
}

/// OpenTelemetry trace export over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Collector base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` is added).
    pub otlp_endpoint: String,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    /// Share of new traces recorded (a client's sampled flag is always followed).
    pub sample_ratio: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::plain(
                "0.0.0.0:8080".parse().expect("static address"),
            )],
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

/// `cluster:` — high availability of the proxy itself. Node-local: never replicated.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub node_id: String,
    /// This node's peer address (TCP), as the other nodes reach it.
    pub bind: SocketAddr,
    pub peers: Vec<PeerConfig>,
    pub state_dir: PathBuf,
    pub heartbeat_interval: Duration,
    /// Randomised between this and twice this.
    pub election_timeout: Duration,
    pub priority: u32,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub vip: Option<VipConfig>,
    pub hooks: ClusterHooks,
    /// Shared by every node: each peer connection starts with a mutual proof of
    /// it, so that only cluster members can send Raft and admin messages.
    pub secret: Option<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    pub id: String,
    /// `host:port`, resolved at each connection attempt.
    pub address: String,
    /// Declared a witness (never primary); shown as such in the cluster API.
    pub witness: bool,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VipConfig {
    pub address: std::net::IpAddr,
    pub prefix_len: u8,
    pub interface: String,
    pub garp_count: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterHooks {
    pub notify: Option<PathBuf>,
    /// How long one run of the notify script may take before it is killed.
    pub notify_timeout: Duration,
    pub webhook: Option<String>,
}

impl Default for ClusterHooks {
    fn default() -> Self {
        ClusterHooks {
            notify: None,
            notify_timeout: Duration::from_secs(10),
            webhook: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub redirect_http_from: Option<SocketAddr>,
    pub http2: bool,
    pub loc: Loc,
}

impl ListenerConfig {
    pub fn plain(address: SocketAddr) -> Self {
        ListenerConfig {
            address,
            tls: None,
            redirect_http_from: None,
            http2: true,
            loc: Loc::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub certificates: Vec<CertificateFiles>,
    pub acme: Option<AcmeConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub loc: Loc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    Http01,
    TlsAlpn01,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    pub directory: String,
    pub email: Option<String>,
    pub domains: Vec<String>,
    pub storage: PathBuf,
    pub ca_bundle: Option<PathBuf>,
    pub challenge: AcmeChallenge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: "127.0.0.1:9000".parse().expect("static address"),
            token: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogTarget {
    Stderr,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub enabled: bool,
    pub format: LogFormat,
    pub path: LogTarget,
    /// The fields of a line, in order (extension; default: all).
    pub fields: Vec<super::access_log::AccessField>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: LogFormat::Json,
            path: LogTarget::Stderr,
            fields: super::access_log::AccessField::defaults(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: Option<u64>,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_body_bytes: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    Random,
    LeastConn,
    IpHash,
    Hash,
    P2cEwma,
    Failover,
}

impl Algorithm {
    pub const NAMES: [(&'static str, Algorithm); 8] = [
        ("round_robin", Algorithm::RoundRobin),
        ("weighted_round_robin", Algorithm::WeightedRoundRobin),
        ("random", Algorithm::Random),
        ("least_conn", Algorithm::LeastConn),
        ("ip_hash", Algorithm::IpHash),
        ("hash", Algorithm::Hash),
        ("p2c_ewma", Algorithm::P2cEwma),
        ("failover", Algorithm::Failover),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .unwrap_or("round_robin")
    }
}

/// What the `hash` algorithm hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(String),
    Path,
    Query(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

/// Where a backend lives. `key` (`host:port` as written) names it in the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddress {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub key: String,
}

impl BackendAddress {
    pub fn parse(text: &str) -> Result<BackendAddress, String> {
        let (scheme, rest) = if let Some(r) = text.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = text.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = text.strip_prefix("h2c://") {
            (Scheme::H2c, r)
        } else if text.contains("://") {
            return Err(format!(
                "unsupported scheme in backend address `{text}` (use http://, https:// or h2c://)"
            ));
        } else {
            (Scheme::Http, text)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') {
            return Err(format!("backend address `{text}` must not contain a path"));
        }
        let default_port = if scheme == Scheme::Https { 443 } else { 80 };
        let (host, port) =
            split_host_port(rest).map_err(|e| format!("invalid backend address `{text}`: {e}"))?;
        let port = port.unwrap_or(default_port);
        if host.is_empty() {
            return Err(format!("backend address `{text}` has no host"));
        }
        let hostname_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !hostname_ok && host.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "backend address `{text}`: `{host}` is neither an IP address nor a host name"
            ));
        }
        let key = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(BackendAddress {
            scheme,
            host: host.to_string(),
            port,
            key,
        })
    }
}

/// Splits `host:port`, `[v6]:port` or `host` (port optional).
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed `[`")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?),
            None if after.is_empty() => None,
            None => return Err("junk after `]`".into()),
        };
        return Ok((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?;
            if port == 0 {
                return Err("port 0".into());
            }
            Ok((h, Some(port)))
        }
        Some(_) => Err("IPv6 addresses must be written in brackets".into()),
        None => Ok((s, None)),
    }
}

/// Parses a listen address: `0.0.0.0:8080`, `[::]:8443`, `:8080` (all interfaces).
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let full;
    let t = if t.starts_with(':') {
        full = format!("0.0.0.0{t}");
        full.as_str()
    } else {
        t
    };
    t.parse::<SocketAddr>().map_err(|_| {
        format!("invalid listen address `{text}` (expected IP:PORT, e.g. 0.0.0.0:8080)")
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub address: BackendAddress,
    pub weight: u32,
    pub failover_level: u32,
    pub region: Option<String>,
    /// A name for people (extension): shown in the API, dashboard and metrics.
    pub name: Option<String>,
    pub health_check: Option<HealthCheckOverride>,
    /// This backend's own cap on requests in flight (overrides the pool's).
    pub max_requests: Option<u32>,
    pub loc: Loc,
}

impl BackendConfig {
    /// A backend with every setting at its default.
    pub fn new(address: BackendAddress) -> Self {
        BackendConfig {
            address,
            weight: 1,
            failover_level: 0,
            region: None,
            name: None,
            health_check: None,
            max_requests: None,
            loc: Loc::default(),
        }
    }
}

/// Which response codes count: a code, a class like `2xx`, or a list of those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatcher {
    /// Each entry is (low, high) inclusive.
    pub ranges: Vec<(u16, u16)>,
}

impl StatusMatcher {
    pub fn matches(&self, code: u16) -> bool {
        self.ranges.iter().any(|&(lo, hi)| code >= lo && code <= hi)
    }

    pub fn class(digit: u16) -> Self {
        StatusMatcher {
            ranges: vec![(digit * 100, digit * 100 + 99)],
        }
    }

    pub fn parse_one(text: &str) -> Result<(u16, u16), String> {
        let t = text.trim();
        if t.len() == 3
            && t.ends_with("xx")
            && let Some(d) = t[..1].parse::<u16>().ok().filter(|d| (1..=5).contains(d))
        {
            return Ok((d * 100, d * 100 + 99));
        }
        match t.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok((c, c)),
            _ => Err(format!(
                "invalid status `{text}` (expected a code like 200 or a class like 2xx)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    /// How often a backend that is down is probed (default: a quarter of
    /// `interval`, at least 100ms), so it rejoins soon after it recovers.
    pub down_interval: Option<Duration>,
    pub timeout: Duration,
    pub expected_status: StatusMatcher,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl HealthCheckConfig {
    pub fn down_interval(&self) -> Duration {
        self.down_interval.unwrap_or_else(|| {
            (self.interval / 4)
                .max(Duration::from_millis(100))
                .min(self.interval)
        })
    }
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/health".into(),
            interval: Duration::from_secs(5),
            down_interval: None,
            timeout: Duration::from_secs(2),
            expected_status: StatusMatcher::class(2),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        }
    }
}

/// A health_check block as written: every key optional, so a backend's block can
/// override the pool's key by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthCheckOverride {
    pub path: Option<String>,
    pub interval: Option<Duration>,
    pub down_interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub expected_status: Option<StatusMatcher>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
}

impl HealthCheckOverride {
    pub fn apply_to(&self, base: &HealthCheckConfig) -> HealthCheckConfig {
        HealthCheckConfig {
            path: self.path.clone().unwrap_or_else(|| base.path.clone()),
            interval: self.interval.unwrap_or(base.interval),
            down_interval: self.down_interval.or(base.down_interval),
            timeout: self.timeout.unwrap_or(base.timeout),
            expected_status: self
                .expected_status
                .clone()
                .unwrap_or_else(|| base.expected_status.clone()),
            unhealthy_threshold: self.unhealthy_threshold.unwrap_or(base.unhealthy_threshold),
            healthy_threshold: self.healthy_threshold.unwrap_or(base.healthy_threshold),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealthConfig {
    pub max_fails: u32,
    pub fail_duration: Duration,
    pub unhealthy_status: StatusMatcher,
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        PassiveHealthConfig {
            max_fails: 3,
            fail_duration: Duration::from_secs(10),
            unhealthy_status: StatusMatcher { ranges: Vec::new() },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub try_duration: Duration,
    pub try_interval: Duration,
    pub methods: Vec<Method>,
    /// Hedged requests: a bodyless request of a listed method whose backend has not
    /// answered within this delay is also sent to another backend; the first
    /// answer wins.
    pub hedge_after: Option<HedgeDelay>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// From the pool's recent latency: smoothed latency + 4 x its deviation.
    Auto,
    Fixed(Duration),
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            try_duration: Duration::from_secs(2),
            try_interval: Duration::from_millis(250),
            methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
            ],
            hedge_after: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub response_header: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    }
}

/// How `https://` backends are verified, and whether HTTP/2 is offered to them.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// Offer h2 (and http/1.1) by ALPN; the backend chooses.
    pub http2: bool,
    /// Trust this CA (PEM) instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Name to send as SNI and verify, instead of the backend's host.
    pub server_name: Option<String>,
    /// Accept any certificate. For tests only; logged loudly.
    pub insecure_skip_verify: bool,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            http2: true,
            ca: None,
            server_name: None,
            insecure_skip_verify: false,
        }
    }
}

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

/// Where requests wait while every backend is at its `max_requests`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    /// Requests allowed to wait at once; one more gets a 503.
    pub size: u32,
    /// How long a request may wait for a free backend before a 503.
    pub timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            size: 1024,
            timeout: Duration::from_secs(5),
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverStrategy {
    Immediate,
    Graceful,
    Delayed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailoverSettings {
    pub enabled: bool,
    pub strategy: FailoverStrategy,
    pub check_interval: Duration,
    pub recovery_interval: Duration,
    pub delay: Duration,
    pub ramp: Duration,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        FailoverSettings {
            enabled: true,
            strategy: FailoverStrategy::Immediate,
            check_interval: Duration::from_secs(5),
            recovery_interval: Duration::from_secs(10),
            delay: Duration::from_secs(10),
            ramp: Duration::from_secs(30),
        }
    }
}

/// A pool's `failover:` block: overrides the global one key by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailoverOverride {
    pub enabled: Option<bool>,
    pub strategy: Option<FailoverStrategy>,
    pub check_interval: Option<Duration>,
    pub recovery_interval: Option<Duration>,
    pub delay: Option<Duration>,
    pub ramp: Option<Duration>,
}

impl FailoverOverride {
    pub fn apply_to(&self, base: &FailoverSettings) -> FailoverSettings {
        FailoverSettings {
            enabled: self.enabled.unwrap_or(base.enabled),
            strategy: self.strategy.unwrap_or(base.strategy),
            check_interval: self.check_interval.unwrap_or(base.check_interval),
            recovery_interval: self.recovery_interval.unwrap_or(base.recovery_interval),
            delay: self.delay.unwrap_or(base.delay),
            ramp: self.ramp.unwrap_or(base.ramp),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Json,
    Slack,
    Discord,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NotificationChannel {
    Log {
        level: LogLevel,
    },
    Webhook {
        url: String,
        format: WebhookFormat,
    },
    Email {
        smtp_server: String,
        smtp_port: u16,
        smtp_user: Option<String>,
        smtp_password: Option<String>,
        from: Option<String>,
        recipients: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationConfig {
    pub enabled: bool,
    pub channels: Vec<NotificationChannel>,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        NotificationConfig {
            enabled: true,
            channels: vec![NotificationChannel::Log {
                level: LogLevel::Warning,
            }],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailoverConfig {
    pub settings: FailoverSettings,
    pub notification: NotificationConfig,
}
