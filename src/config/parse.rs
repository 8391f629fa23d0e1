//! Decoding the tree into the typed model, then cross-checking it. Every problem found
//! is collected; nothing stops at the first one.

use super::decode::{Decoder, MapView};
use super::model::*;
use super::tree::{Loc, Node, Value};
use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

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
    if let Some(n) = m.get("listeners") {
        let items = d.seq(n, "listeners");
        cfg.listeners = items
            .iter()
            .filter_map(|item| listener(d, item, base_dir))
            .collect();
        if items.is_empty() {
            d.error(
                n.loc,
                "listeners must not be empty (omit the key for the default 0.0.0.0:8080)",
            );
        }
    }
    match m.get_raw("admin") {
        Some(n) if n.is_null() => cfg.admin = None,
        Some(n) => cfg.admin = admin(d, n),
        None => {}
    }
    if let Some(n) = m.get("access_log") {
        cfg.access_log = access_log(d, n, base_dir);
    }
    if let Some(n) = m.get("limits") {
        cfg.limits = limits(d, n);
    }
    if let Some(n) = m.get("trusted_proxies") {
        cfg.trusted_proxies = d
            .string_list(n, "trusted_proxies")
            .into_iter()
            .filter_map(|(s, loc)| match parse_cidr(&s) {
                Ok(net) => Some(net),
                Err(e) => {
                    d.error(loc, e);
                    None
                }
            })
            .collect();
    }
    if let Some(n) = m.get("shutdown_timeout")
        && let Some(v) = d.duration(n, "shutdown_timeout")
    {
        cfg.shutdown_timeout = v;
    }
    if let Some(n) = m.get("pools") {
        cfg.pools = d
            .seq(n, "pools")
            .iter()
            .filter_map(|p| pool(d, p, base_dir))
            .collect();
    }
    if let Some(n) = m.get("routes") {
        cfg.routes = d
            .seq(n, "routes")
            .iter()
            .filter_map(|r| route(d, r))
            .collect();
    }
    if let Some(n) = m.get("failover") {
        cfg.failover = failover(d, n);
    }

    if let Some(n) = m.get("tracing") {
        cfg.tracing = tracing(d, n);
    }
    if let Some(n) = m.get("cluster") {
        cfg.cluster = cluster(d, n, base_dir);
    }
    d.unbuilt(&m, "discovery", "Docker discovery");
    validate(d, &cfg);
    cfg
}

fn listener(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<ListenerConfig> {
    // A bare string is shorthand for `{address: ...}`.
    if let Value::Str(_) = n.value {
        let text = d.string(n, "listener address")?;
        return match parse_listen_address(&text) {
            Ok(a) => Some(ListenerConfig {
                loc: n.loc,
                ..ListenerConfig::plain(a)
            }),
            Err(e) => {
                d.error(n.loc, e);
                None
            }
        };
    }
    let m = d.map(
        n,
        "a listener",
        &["address", "tls", "redirect_http_from", "http2"],
    )?;
    let address = match m.get("address") {
        Some(a) => {
            let text = d.scalar_string(a, "address")?;
            match parse_listen_address(&text) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    d.error(a.loc, e);
                    None
                }
            }
        }
        None => {
            d.error(m.loc, "a listener needs an `address`");
            None
        }
    };
    let mut l = ListenerConfig::plain(address.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()));
    l.loc = m.loc;
    if let Some(t) = m.get("tls") {
        l.tls = tls(d, t, base_dir);
    }

    if let Some(r) = m.get("redirect_http_from") {
        if let Some(text) = d.scalar_string(r, "redirect_http_from") {
            match parse_listen_address(&text) {
                Ok(a) => l.redirect_http_from = Some(a),
                Err(e) => d.error(r.loc, e),
            }
        }
        if m.get("tls").is_none() {
            d.error(
                r.loc,
                "redirect_http_from only makes sense on a listener with `tls`",
            );
        }
    }
    if let Some(h) = m.get("http2")
        && let Some(v) = d.boolean(h, "http2")
    {
        l.http2 = v;
    }
    address.map(|_| l)
}

fn tls(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<TlsConfig> {
    let m = d.map(n, "tls", &["certificates", "acme"])?;
    let mut out = TlsConfig {
        certificates: Vec::new(),
        acme: None,
    };
    if let Some(c) = m.get("certificates") {
        for item in d.seq(c, "certificates") {
            let Some(cm) = d.map(item, "a certificate", &["cert", "key"]) else {
                continue;
            };
            let cert = file_path(d, &cm, "cert", base_dir);
            let key = file_path(d, &cm, "key", base_dir);
            if let (Some(cert), Some(key)) = (cert, key) {
                out.certificates.push(CertificateFiles {
                    cert,
                    key,
                    loc: item.loc,
                });
            }
        }
    }
    if let Some(a) = m.get("acme") {
        out.acme = acme(d, a, base_dir);
    }
    if m.get("certificates").is_none() && m.get("acme").is_none() {
        d.error(n.loc, "tls needs `certificates` or `acme`");
    }
    Some(out)
}

/// A path that must name an existing file.
fn file_path(d: &mut Decoder, m: &MapView, key: &str, base_dir: &Path) -> Option<PathBuf> {
    let Some(n) = m.get(key) else {
        d.error(m.loc, format!("missing `{key}`"));
        return None;
    };
    let text = d.string(n, key)?;
    let p = base_dir.join(&text);
    if !p.is_file() {
        d.error(
            n.loc,
            format!("{key} file `{}` does not exist", p.display()),
        );
        return None;
    }
    Some(p)
}

fn acme(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<AcmeConfig> {
    let m = d.map(
        n,
        "acme",
        &[
            "directory",
            "email",
            "domains",
            "storage",
            "ca_bundle",
            "challenge",
        ],
    )?;
    let directory = match m.get("directory") {
        Some(v) => d.string(v, "directory")?,
        None => "https://acme-v02.api.letsencrypt.org/directory".into(),
    };
    if !directory.starts_with("https://") && !directory.starts_with("http://") {
        d.error(
            m.get("directory").map(|n| n.loc).unwrap_or(m.loc),
            "acme directory must be a URL",
        );
    }
    let email = m.get("email").and_then(|v| d.string(v, "email"));
    let domains = m
        .get("domains")
        .map(|v| {
            d.string_list(v, "domains")
                .into_iter()
                .map(|(s, _)| s.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let storage = m
        .get("storage")
        .and_then(|v| d.string(v, "storage"))
        .map(|s| base_dir.join(s))
        .unwrap_or_else(|| base_dir.join("acme"));
    let ca_bundle = match m.get("ca_bundle") {
        Some(_) => file_path(d, &m, "ca_bundle", base_dir),
        None => None,
    };
    let challenge = m
        .get("challenge")
        .and_then(|v| {
            d.choice(
                v,
                "challenge",
                &[
                    ("http-01", AcmeChallenge::Http01),
                    ("tls-alpn-01", AcmeChallenge::TlsAlpn01),
                ],
            )
        })
        .unwrap_or(AcmeChallenge::Http01);
    Some(AcmeConfig {
        directory,
        email,
        domains,
        storage,
        ca_bundle,
        challenge,
    })
}

const CLUSTER_KEYS: &[&str] = &[
    "node_id",
    "bind",
    "peers",
    "state_dir",
    "heartbeat_interval",
    "election_timeout",
    "priority",
    "preempt",
    "preempt_delay",
    "vip",
    "hooks",
    "secret",
];

fn cluster(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<ClusterConfig> {
    let m = d.map(n, "cluster", CLUSTER_KEYS)?;
    let node_id = match m.get("node_id") {
        Some(v) => d.string(v, "node_id").unwrap_or_default(),
        None => {
            d.error(
                m.loc,
                "cluster: missing `node_id` (unique and stable per node)",
            );
            String::new()
        }
    };
    if m.get("node_id").is_some() && !valid_node_id(&node_id) {
        d.error(
            m.get("node_id").map(|v| v.loc).unwrap_or(m.loc),
            format!("node_id `{node_id}`: use 1 to 64 letters, digits, `-`, `_` or `.`"),
        );
    }
    let bind = match m.get("bind") {
        Some(v) => d
            .scalar_string(v, "bind")
            .and_then(|t| match t.parse::<std::net::SocketAddr>() {
                Ok(a) if a.port() != 0 && !a.ip().is_unspecified() => Some(a),
                Ok(_) => {
                    d.error(
                        v.loc,
                        format!("cluster bind `{t}`: give the address the other nodes reach, with a port"),
                    );
                    None
                }
                Err(_) => {
                    d.error(v.loc, format!("invalid cluster bind address `{t}` (expected IP:PORT)"));
                    None
                }
            }),
        None => {
            d.error(m.loc, "cluster: missing `bind` (this node's peer address, IP:PORT)");
            None
        }
    };
    let mut peers = Vec::new();
    match m.get("peers") {
        Some(list) => {
            for item in d.seq(list, "peers") {
                if let Some(p) = peer(d, item) {
                    peers.push(p);
                }
            }
        }
        None => d.error(m.loc, "cluster: missing `peers` (every other voter)"),
    }
    let mut seen: HashMap<&str, Loc> = HashMap::new();
    seen.insert(node_id.as_str(), m.loc);
    for p in &peers {
        if let Some(prev) = seen.insert(p.id.as_str(), p.loc) {
            d.error(
                p.loc,
                format!(
                    "node id `{}` is used twice (also at line {})",
                    p.id, prev.line
                ),
            );
        }
        if bind.is_some_and(|b| p.address == b.to_string()) {
            d.error(
                p.loc,
                format!("peer `{}` has this node's own bind address", p.id),
            );
        }
    }
    let state_dir = match m.get("state_dir").and_then(|v| d.string(v, "state_dir")) {
        Some(t) => base_dir.join(t),
        None => PathBuf::from("/var/lib/fulcrum"),
    };
    let dur = |d: &mut Decoder, key: &str, default: u64| {
        m.get(key)
            .and_then(|v| d.duration(v, key))
            .unwrap_or(std::time::Duration::from_millis(default))
    };
    let heartbeat_interval = dur(d, "heartbeat_interval", 300);
    let election_timeout = dur(d, "election_timeout", 1500);
    let preempt_delay = dur(d, "preempt_delay", 300_000);
    if heartbeat_interval.is_zero() || election_timeout < heartbeat_interval * 3 {
        d.error(
            m.get("election_timeout").map(|v| v.loc).unwrap_or(m.loc),
            format!(
                "election_timeout ({}) must be at least 3 × heartbeat_interval ({}), or lost heartbeats cause needless elections",
                humantime::format_duration(election_timeout),
                humantime::format_duration(heartbeat_interval)
            ),
        );
    }
    let priority = m
        .get("priority")
        .and_then(|v| d.int(v, "priority", 0, 1_000_000))
        .unwrap_or(100) as u32;
    let preempt = m
        .get("preempt")
        .and_then(|v| d.boolean(v, "preempt"))
        .unwrap_or(false);
    let vip = m.get("vip").and_then(|v| vip(d, v));
    let hooks = m
        .get("hooks")
        .map(|v| cluster_hooks(d, v, base_dir))
        .unwrap_or_default();
    let secret = m.get("secret").and_then(|v| {
        let text = d.scalar_string(v, "secret")?;
        // Short secrets can be guessed offline from one recorded handshake.
        if text.len() < 16 {
            d.error(
                v.loc,
                "cluster secret: use at least 16 characters (e.g. `openssl rand -base64 32`)",
            );
            return None;
        }
        Some(text)
    });
    Some(ClusterConfig {
        node_id,
        bind: bind?,
        peers,
        state_dir,
        heartbeat_interval,
        election_timeout,
        priority,
        preempt,
        preempt_delay,
        vip,
        hooks,
        secret,
        loc: m.loc,
    })
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn peer(d: &mut Decoder, n: &Node) -> Option<PeerConfig> {
    let m = d.map(n, "peer", &["id", "address", "witness"])?;
    let Some(id) = m.get("id").and_then(|v| d.string(v, "id")) else {
        d.error(m.loc, "a peer needs an `id`");
        return None;
    };
    if !valid_node_id(&id) {
        d.error(
            m.get("id").map(|v| v.loc).unwrap_or(m.loc),
            format!("peer id `{id}`: use 1 to 64 letters, digits, `-`, `_` or `.`"),
        );
    }
    let Some(address) = m.get("address").and_then(|v| d.scalar_string(v, "address")) else {
        d.error(m.loc, format!("peer `{id}` needs an `address` (host:port)"));
        return None;
    };
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if !port_ok {
        d.error(
            m.get("address").map(|v| v.loc).unwrap_or(m.loc),
            format!("peer address `{address}`: expected host:port"),
        );
    }
    let witness = m
        .get("witness")
        .and_then(|v| d.boolean(v, "witness"))
        .unwrap_or(false);
    Some(PeerConfig {
        id,
        address,
        witness,
        loc: m.loc,
    })
}

fn vip(d: &mut Decoder, n: &Node) -> Option<VipConfig> {
    let m = d.map(n, "vip", &["address", "interface", "garp_count"])?;
    let address = match m
        .get("address")
        .and_then(|v| d.scalar_string(v, "vip address").map(|t| (t, v.loc)))
    {
        Some((t, loc)) => match t.parse::<IpNet>() {
            Ok(net) => Some((net.addr(), net.prefix_len())),
            Err(_) => match t.parse::<IpAddr>() {
                Ok(ip) => Some((ip, if ip.is_ipv4() { 32 } else { 128 })),
                Err(_) => {
                    d.error(
                        loc,
                        format!("invalid vip address `{t}` (expected e.g. 10.0.0.10/24)"),
                    );
                    None
                }
            },
        },
        None => {
            d.error(m.loc, "vip: missing `address` (e.g. 10.0.0.10/24)");
            None
        }
    };
    let interface = match m.get("interface").and_then(|v| d.string(v, "interface")) {
        Some(i) if !i.is_empty() && i.len() < 16 => Some(i),
        Some(i) => {
            d.error(m.loc, format!("invalid interface name `{i}`"));
            None
        }
        None => {
            d.error(m.loc, "vip: missing `interface` (e.g. eth0)");
            None
        }
    };
    let garp_count = m
        .get("garp_count")
        .and_then(|v| d.int(v, "garp_count", 0, 100))
        .unwrap_or(3) as u32;
    let (address, prefix_len) = address?;
    Some(VipConfig {
        address,
        prefix_len,
        interface: interface?,
        garp_count,
    })
}

fn cluster_hooks(d: &mut Decoder, n: &Node, base_dir: &Path) -> ClusterHooks {
    let mut h = ClusterHooks::default();
    let Some(m) = d.map(n, "hooks", &["notify", "notify_timeout", "webhook"]) else {
        return h;
    };
    if let Some(v) = m.get("notify")
        && let Some(t) = d.string(v, "notify")
    {
        let p = base_dir.join(t);
        if !p.is_file() {
            d.error(
                v.loc,
                format!("notify script `{}` does not exist", p.display()),
            );
        }
        h.notify = Some(p);
    }
    if let Some(v) = m.get("notify_timeout")
        && let Some(t) = d.duration(v, "notify_timeout")
    {
        h.notify_timeout = t;
    }
    if let Some(v) = m.get("webhook")
        && let Some(url) = d.string(v, "webhook")
    {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            d.error(
                v.loc,
                format!("webhook `{url}` must start with http:// or https://"),
            );
        }
        h.webhook = Some(url);
    }
    h
}

fn admin(d: &mut Decoder, n: &Node) -> Option<AdminConfig> {
    let m = d.map(n, "admin", &["address", "token", "enabled"])?;
    if let Some(e) = m.get("enabled")
        && d.boolean(e, "enabled") == Some(false)
    {
        return None;
    }
    let mut a = AdminConfig::default();
    if let Some(v) = m.get("address")
        && let Some(text) = d.scalar_string(v, "admin address")
    {
        match parse_listen_address(&text) {
            Ok(addr) => a.address = addr,
            Err(e) => d.error(v.loc, e),
        }
    }
    if let Some(v) = m.get("token") {
        a.token = d.string(v, "token").filter(|t| !t.is_empty());
    }
    if !a.address.ip().is_loopback() && a.token.is_none() {
        d.error(
            m.get("address").map(|n| n.loc).unwrap_or(m.loc),
            format!(
                "the admin address {} is not loopback: set `admin.token` so the API is not open to the network",
                a.address
            ),
        );
    }
    Some(a)
}

fn access_log(d: &mut Decoder, n: &Node, base_dir: &Path) -> AccessLogConfig {
    let mut a = AccessLogConfig::default();
    let Some(m) = d.map(n, "access_log", &["enabled", "format", "path", "fields"]) else {
        return a;
    };
    if let Some(v) = m
        .get("fields")
        .and_then(|v| super::access_log::decode_fields(d, v))
    {
        a.fields = v;
    }
    if let Some(v) = m.get("enabled").and_then(|v| d.boolean(v, "enabled")) {
        a.enabled = v;
    }
    if let Some(v) = m.get("format")
        && let Some(f) = d.choice(
            v,
            "format",
            &[("json", LogFormat::Json), ("text", LogFormat::Text)],
        )
    {
        a.format = f;
    }
    if let Some(v) = m.get("path").and_then(|v| d.string(v, "path")) {
        a.path = match v.as_str() {
            "stderr" => LogTarget::Stderr,
            "stdout" => LogTarget::Stdout,
            p => LogTarget::File(base_dir.join(p)),
        };
    }
    a
}

fn limits(d: &mut Decoder, n: &Node) -> Limits {
    let mut l = Limits::default();
    let Some(m) = d.map(
        n,
        "limits",
        &[
            "max_header_bytes",
            "max_body_bytes",
            "header_read_timeout",
            "max_connections",
        ],
    ) else {
        return l;
    };
    if let Some(v) = m
        .get("max_header_bytes")
        .and_then(|v| d.size(v, "max_header_bytes"))
    {
        if !(1024..=16 * 1024 * 1024).contains(&v) {
            d.error(
                m.get("max_header_bytes").map(|n| n.loc).unwrap_or(m.loc),
                "max_header_bytes must be between 1KiB and 16MiB",
            );
        } else {
            l.max_header_bytes = v as usize;
        }
    }
    if let Some(v) = m.get("max_body_bytes") {
        l.max_body_bytes = d.size(v, "max_body_bytes");
    }
    if let Some(v) = m
        .get("header_read_timeout")
        .and_then(|v| d.duration(v, "header_read_timeout"))
    {
        l.header_read_timeout = v;
    }
    if let Some(v) = m
        .get("max_connections")
        .and_then(|v| d.int(v, "max_connections", 1, 10_000_000))
    {
        l.max_connections = v as usize;
    }
    l
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("invalid trusted proxy `{s}` (expected an IP or CIDR like 10.0.0.0/8)")
    })
}

const POOL_KEYS: &[&str] = &[
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

fn pool(d: &mut Decoder, n: &Node, base_dir: &Path) -> Option<PoolConfig> {
    let m = d.map(n, "a pool", POOL_KEYS)?;
    let name = match m.get("name") {
        Some(v) => d.scalar_string(v, "pool name")?,
        None => {
            d.error(m.loc, "a pool needs a `name`");
            return None;
        }
    };
    let mut p = PoolConfig::new(&name);
    p.loc = m.get("name").map(|n| n.loc).unwrap_or(m.loc);
    if let Some(v) = m
        .get("algorithm")
        .and_then(|v| d.choice(v, "algorithm", &Algorithm::NAMES))
    {
        p.algorithm = v;
    }
    if let Some(v) = m.get("hash_key") {
        p.hash_key = hash_key(d, v);
    }
    if let Some(v) = m.get("backends") {
        p.backends = d
            .seq(v, "backends")
            .iter()
            .filter_map(|b| backend(d, b))
            .collect();
    }
    if let Some(v) = m.get("health_check") {
        p.health_check = health_check(d, v);
    }
    if let Some(v) = m.get("passive_health") {
        p.passive_health = passive_health(d, v);
    }
    if let Some(v) = m.get("retries") {
        p.retries = retries(d, v);
    }
    if let Some(v) = m.get("timeouts") {
        p.timeouts = timeouts(d, v);
    }
    if let Some(v) = m.get("failover") {
        p.failover = failover_override(d, v, "pool failover");
    }

    if let Some(v) = m.get("tls")
        && let Some(t) = d.map(
            v,
            "pool tls",
            &["ca", "server_name", "insecure_skip_verify", "http2"],
        )
    {
        if let Some(v) = t.get("http2").and_then(|v| d.boolean(v, "http2")) {
            p.upstream_tls.http2 = v;
        }
        if t.get("ca").is_some() {
            p.upstream_tls.ca = file_path(d, &t, "ca", base_dir);
        }
        p.upstream_tls.server_name = t
            .get("server_name")
            .and_then(|v| d.string(v, "server_name"));
        p.upstream_tls.insecure_skip_verify = t
            .get("insecure_skip_verify")
            .and_then(|v| d.boolean(v, "insecure_skip_verify"))
            .unwrap_or(false);
    }
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
    if let Some(v) = m.get("queue") {
        if let Some(q) = d.map(v, "queue", &["size", "timeout"]) {
            if let Some(v) = q
                .get("size")
                .and_then(|v| d.int(v, "queue size", 0, 1_000_000))
            {
                p.queue.size = v as u32;
            }
            if let Some(v) = q
                .get("timeout")
                .and_then(|v| d.duration(v, "queue timeout"))
            {
                p.queue.timeout = v;
            }
        }
        // A queue only fills when backends have a cap: without one the key would
        // do nothing, which is worse than saying so.
        let capped =
            p.max_requests > 0 || p.backends.iter().any(|b| b.max_requests.unwrap_or(0) > 0);
        if !capped {
            d.error(
                m.key_loc("queue").unwrap_or(m.loc),
                "`queue` needs `max_requests` on the pool or on a backend (nothing waits otherwise)",
            );
        }
    }
    Some(p)
}

fn hash_key(d: &mut Decoder, n: &Node) -> Option<HashKey> {
    let text = d.string(n, "hash_key")?;
    let key = match text.split_once(':') {
        Some(("header", name)) => match HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(h) => Some(HashKey::Header(h)),
            Err(_) => None,
        },
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Some(HashKey::Cookie(name.trim().into()))
        }
        Some(("query", name)) if !name.trim().is_empty() => {
            Some(HashKey::Query(name.trim().into()))
        }
        None if text == "path" => Some(HashKey::Path),
        _ => None,
    };
    if key.is_none() {
        d.error(
            n.loc,
            format!(
                "invalid hash_key `{text}` (expected header:NAME, cookie:NAME, path or query:NAME)"
            ),
        );
    }
    key
}

fn backend(d: &mut Decoder, n: &Node) -> Option<BackendConfig> {
    let (address_node, m) = match &n.value {
        Value::Str(_) => (n, None),
        _ => {
            let m = d.map(
                n,
                "a backend",
                &[
                    "address",
                    "weight",
                    "failover",
                    "failover_level",
                    "region",
                    "name",
                    "health_check",
                    "max_requests",
                ],
            )?;
            match m.get("address") {
                Some(a) => (a, Some(m)),
                None => {
                    d.error(m.loc, "a backend needs an `address`");
                    return None;
                }
            }
        }
    };
    let text = d.scalar_string(address_node, "backend address")?;
    let address = match BackendAddress::parse(&text) {
        Ok(a) => a,
        Err(e) => {
            d.error(address_node.loc, e);
            return None;
        }
    };
    let mut b = BackendConfig {
        loc: address_node.loc,
        ..BackendConfig::new(address)
    };
    let Some(m) = m else { return Some(b) };
    if let Some(v) = m
        .get("weight")
        .and_then(|v| d.int(v, "weight", 1, 1_000_000))
    {
        b.weight = v as u32;
    }
    let shorthand = m.get("failover").and_then(|v| d.boolean(v, "failover"));
    let level = m
        .get("failover_level")
        .and_then(|v| d.int(v, "failover_level", 0, 100));
    match (shorthand, level) {
        (Some(true), Some(0)) => d.error(
            m.key_loc("failover").unwrap_or(m.loc),
            "`failover: true` contradicts `failover_level: 0`",
        ),
        (_, Some(l)) => b.failover_level = l as u32,
        (Some(true), None) => b.failover_level = 1,
        _ => {}
    }
    if let Some(v) = m.get("region") {
        b.region = d.scalar_string(v, "region");
    }
    if let Some(v) = m.get("name") {
        b.name = d.scalar_string(v, "name").filter(|n| {
            let ok = !n.trim().is_empty() && n.len() <= 100;
            if !ok {
                d.error(v.loc, "a backend name must be 1 to 100 characters");
            }
            ok
        });
    }
    if let Some(v) = m
        .get("max_requests")
        .and_then(|v| d.int(v, "max_requests", 0, 1_000_000))
    {
        b.max_requests = Some(v as u32);
    }
    if let Some(v) = m.get("health_check") {
        b.health_check = health_check(d, v);
    }
    Some(b)
}

fn status_matcher(d: &mut Decoder, n: &Node, what: &str) -> Option<StatusMatcher> {
    let items: Vec<(String, Loc)> = match &n.value {
        Value::Int(i) => vec![(i.to_string(), n.loc)],
        _ => d.string_list(n, what),
    };
    let mut ranges = Vec::new();
    for (s, loc) in items {
        match StatusMatcher::parse_one(&s) {
            Ok(r) => ranges.push(r),
            Err(e) => d.error(loc, format!("{what}: {e}")),
        }
    }
    Some(StatusMatcher { ranges })
}

fn health_check(d: &mut Decoder, n: &Node) -> Option<HealthCheckOverride> {
    let m = d.map(
        n,
        "health_check",
        &[
            "path",
            "interval",
            "down_interval",
            "timeout",
            "expected_status",
            "unhealthy_threshold",
            "healthy_threshold",
        ],
    )?;
    let mut h = HealthCheckOverride::default();
    if let Some(v) = m.get("path").and_then(|v| d.string(v, "path")) {
        if !v.starts_with('/') {
            d.error(
                m.get("path").map(|n| n.loc).unwrap_or(m.loc),
                "health_check path must start with `/`",
            );
        }
        h.path = Some(v);
    }
    h.interval = m.get("interval").and_then(|v| d.duration(v, "interval"));
    if h.interval == Some(std::time::Duration::ZERO) {
        d.error(
            m.get("interval").map(|n| n.loc).unwrap_or(m.loc),
            "interval must be more than 0",
        );
    }
    h.down_interval = m
        .get("down_interval")
        .and_then(|v| d.duration(v, "down_interval"));
    if h.down_interval == Some(std::time::Duration::ZERO) {
        d.error(
            m.get("down_interval").map(|n| n.loc).unwrap_or(m.loc),
            "down_interval must be more than 0",
        );
    }
    h.timeout = m.get("timeout").and_then(|v| d.duration(v, "timeout"));
    h.expected_status = m
        .get("expected_status")
        .and_then(|v| status_matcher(d, v, "expected_status"));
    h.unhealthy_threshold = m
        .get("unhealthy_threshold")
        .and_then(|v| d.int(v, "unhealthy_threshold", 1, 1000))
        .map(|v| v as u32);
    h.healthy_threshold = m
        .get("healthy_threshold")
        .and_then(|v| d.int(v, "healthy_threshold", 1, 1000))
        .map(|v| v as u32);
    Some(h)
}

fn passive_health(d: &mut Decoder, n: &Node) -> PassiveHealthConfig {
    let mut p = PassiveHealthConfig::default();
    let Some(m) = d.map(
        n,
        "passive_health",
        &["max_fails", "fail_duration", "unhealthy_status"],
    ) else {
        return p;
    };
    if let Some(v) = m
        .get("max_fails")
        .and_then(|v| d.int(v, "max_fails", 0, 1_000_000))
    {
        p.max_fails = v as u32;
    }
    if let Some(v) = m
        .get("fail_duration")
        .and_then(|v| d.duration(v, "fail_duration"))
    {
        p.fail_duration = v;
    }
    if let Some(v) = m
        .get("unhealthy_status")
        .and_then(|v| status_matcher(d, v, "unhealthy_status"))
    {
        p.unhealthy_status = v;
    }
    p
}

fn retries(d: &mut Decoder, n: &Node) -> RetryConfig {
    let mut r = RetryConfig::default();
    let Some(m) = d.map(
        n,
        "retries",
        &["try_duration", "try_interval", "methods", "hedge_after"],
    ) else {
        return r;
    };
    if let Some(v) = m.get_raw("hedge_after") {
        r.hedge_after = match &v.value {
            Value::Null | Value::Bool(false) => None,
            Value::Str(s) if s == "off" => None,
            Value::Str(s) if s == "auto" => Some(HedgeDelay::Auto),
            _ => d
                .duration(v, "hedge_after")
                .filter(|d| !d.is_zero())
                .map(HedgeDelay::Fixed),
        };
    }
    if let Some(v) = m
        .get("try_duration")
        .and_then(|v| d.duration(v, "try_duration"))
    {
        r.try_duration = v;
    }
    if let Some(v) = m
        .get("try_interval")
        .and_then(|v| d.duration(v, "try_interval"))
    {
        r.try_interval = v;
    }
    if let Some(v) = m.get("methods") {
        r.methods = d
            .string_list(v, "methods")
            .into_iter()
            .filter_map(
                |(s, loc)| match Method::from_bytes(s.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => Some(m),
                    Err(_) => {
                        d.error(loc, format!("invalid HTTP method `{s}`"));
                        None
                    }
                },
            )
            .collect();
    }
    r
}

fn timeouts(d: &mut Decoder, n: &Node) -> Timeouts {
    let mut t = Timeouts::default();
    let Some(m) = d.map(n, "timeouts", &["connect", "response_header", "idle"]) else {
        return t;
    };
    for (key, slot) in [
        ("connect", &mut t.connect),
        ("response_header", &mut t.response_header),
        ("idle", &mut t.idle),
    ] {
        if let Some(v) = m.get(key).and_then(|v| d.duration(v, key)) {
            if v.is_zero() {
                d.error(
                    m.get(key).map(|n| n.loc).unwrap_or(m.loc),
                    format!("timeouts.{key} must be more than 0"),
                );
            } else {
                *slot = v;
            }
        }
    }
    t
}

const ROUTE_KEYS: &[&str] = &[
    "name",
    "host",
    "path_prefix",
    "pool",
    "load_balancing",
    "strip_prefix",
    "split",
    "sticky",
    "headers",
    "cache",
];

fn route(d: &mut Decoder, n: &Node) -> Option<RouteConfig> {
    let m = d.map(n, "a route", ROUTE_KEYS)?;
    let host = match m.get("host") {
        Some(v) => {
            let text = d
                .string(v, "host")?
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if let Some(suffix) = text.strip_prefix("*.") {
                if suffix.is_empty() || suffix.contains('*') {
                    d.error(v.loc, format!("invalid wildcard host `{text}`"));
                }
                Some(HostMatch::Wildcard(suffix.to_string()))
            } else if text.is_empty()
                || text.contains('*')
                || text.contains('/')
                || text.contains(' ')
            {
                d.error(v.loc, format!("invalid host `{text}` (expected a name like app.example.com or *.example.com)"));
                None
            } else {
                // The port of a Host header is ignored when routing, so drop one here too.
                let name = match text.rsplit_once(':') {
                    Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => {
                        h.to_string()
                    }
                    _ => text,
                };
                Some(HostMatch::Exact(name))
            }
        }
        None => None,
    };
    let path_prefix = match m.get("path_prefix") {
        Some(v) => {
            let p = d.string(v, "path_prefix").unwrap_or_else(|| "/".into());
            if !p.starts_with('/') {
                d.error(v.loc, format!("path_prefix `{p}` must start with `/`"));
            }
            p
        }
        None => "/".into(),
    };
    let pool = m.get("pool").and_then(|v| {
        d.scalar_string(v, "pool")
            .map(|name| RouteTarget::Pool { name, loc: v.loc })
    });
    let split = m.get("split").map(|v| split(d, v));
    let target = match (pool, split) {
        (Some(_), Some(_)) => {
            d.error(
                m.key_loc("split").unwrap_or(m.loc),
                "a route has either `pool` or `split`, not both",
            );
            return None;
        }
        (Some(p), None) => p,
        (None, Some(s)) => RouteTarget::Split(s),
        (None, None) => {
            if m.get("pool").is_none() {
                d.error(m.loc, "a route needs a `pool` (or a `split`)");
            }
            return None;
        }
    };
    let sticky = m
        .get("sticky")
        .and_then(|v| d.boolean(v, "sticky"))
        .unwrap_or(false);
    if sticky && !matches!(target, RouteTarget::Split(_)) {
        d.error(
            m.key_loc("sticky").unwrap_or(m.loc),
            "`sticky` only applies to a route with `split`",
        );
    }
    let load_balancing = m.get("load_balancing").and_then(|v| {
        let lb = d.map(v, "load_balancing", &["method"])?;
        let method = lb.get("method")?;
        d.choice(method, "load_balancing.method", &Algorithm::NAMES)
    });
    let strip_prefix = m
        .get("strip_prefix")
        .and_then(|v| d.boolean(v, "strip_prefix"))
        .unwrap_or(false);
    let headers = m
        .get("headers")
        .map(|v| header_rules(d, v))
        .unwrap_or_default();
    d.unbuilt(&m, "cache", "response caching");
    let name = match m.get("name") {
        Some(v) => d.scalar_string(v, "route name").unwrap_or_default(),
        None => {
            let h = match &host {
                Some(HostMatch::Exact(h)) => h.clone(),
                Some(HostMatch::Wildcard(s)) => format!("*.{s}"),
                None => "*".into(),
            };
            format!("{h}{path_prefix}")
        }
    };
    Some(RouteConfig {
        name,
        host,
        path_prefix,
        target,
        sticky,
        load_balancing,
        strip_prefix,
        headers,
        loc: m.loc,
    })
}

fn split(d: &mut Decoder, n: &Node) -> Vec<SplitVariant> {
    let mut out = Vec::new();
    for item in d.seq(n, "split") {
        let Some(m) = d.map(item, "a split variant", &["pool", "weight"]) else {
            continue;
        };
        let Some(pool_node) = m.get("pool") else {
            d.error(m.loc, "a split variant needs a `pool`");
            continue;
        };
        let Some(pool) = d.scalar_string(pool_node, "pool") else {
            continue;
        };
        let weight = m
            .get("weight")
            .and_then(|v| d.int(v, "weight", 0, 1_000_000))
            .unwrap_or(1) as u32;
        out.push(SplitVariant {
            pool,
            weight,
            loc: pool_node.loc,
        });
    }
    if out.is_empty() {
        d.error(n.loc, "split needs at least one variant");
    } else if out.iter().all(|v| v.weight == 0) {
        d.error(n.loc, "split weights must not all be 0");
    }
    out
}

fn header_rules(d: &mut Decoder, n: &Node) -> HeaderRules {
    let mut r = HeaderRules::default();
    let Some(m) = d.map(n, "headers", &["request", "response"]) else {
        return r;
    };
    if let Some(v) = m.get("request") {
        r.request = header_ops(d, v, "headers.request");
    }
    if let Some(v) = m.get("response") {
        r.response = header_ops(d, v, "headers.response");
    }
    r
}

fn header_ops(d: &mut Decoder, n: &Node, what: &str) -> HeaderOps {
    let mut ops = HeaderOps::default();
    let Some(m) = d.map(n, what, &["set", "remove"]) else {
        return ops;
    };
    if let Some(set) = m.get("set") {
        if let Value::Map(entries) = &set.value {
            for (k, v) in entries {
                let Some(name) = k.scalar_text() else {
                    continue;
                };
                let name = match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(h) => h,
                    Err(_) => {
                        d.error(k.loc, format!("invalid header name `{name}`"));
                        continue;
                    }
                };
                // `X-Version: 2` or `X-Debug: true` mean the text, as a person expects.
                let value = match &v.value {
                    Value::Bool(_) | Value::Float(_) => v.scalar_text(),
                    _ => d.scalar_string(v, "header value"),
                };
                let Some(value) = value else {
                    continue;
                };
                match HeaderValue::from_str(&value) {
                    Ok(hv) => ops.set.push((name, hv)),
                    Err(_) => d.error(v.loc, format!("invalid value for header `{name}`")),
                }
            }
        } else {
            d.error(
                set.loc,
                format!("{what}.set must be a mapping of header names to values"),
            );
        }
    }
    if let Some(remove) = m.get("remove") {
        for (name, loc) in d.string_list(remove, "remove") {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => ops.remove.push(h),
                Err(_) => d.error(loc, format!("invalid header name `{name}`")),
            }
        }
    }
    ops
}

const FAILOVER_SETTING_KEYS: &[&str] = &[
    "enabled",
    "strategy",
    "check_interval",
    "recovery_interval",
    "delay",
    "ramp",
];

fn failover_settings_from(d: &mut Decoder, m: &MapView) -> FailoverOverride {
    let mut o = FailoverOverride {
        enabled: m.get("enabled").and_then(|v| d.boolean(v, "enabled")),
        strategy: m.get("strategy").and_then(|v| {
            d.choice(
                v,
                "strategy",
                &[
                    ("immediate", FailoverStrategy::Immediate),
                    ("graceful", FailoverStrategy::Graceful),
                    ("delayed", FailoverStrategy::Delayed),
                ],
            )
        }),
        ..Default::default()
    };
    for (key, slot) in [
        ("check_interval", &mut o.check_interval),
        ("recovery_interval", &mut o.recovery_interval),
        ("delay", &mut o.delay),
        ("ramp", &mut o.ramp),
    ] {
        *slot = m.get(key).and_then(|v| d.duration(v, key));
    }
    if o.check_interval == Some(std::time::Duration::ZERO) {
        d.error(
            m.get("check_interval").map(|n| n.loc).unwrap_or(m.loc),
            "check_interval must be more than 0",
        );
    }
    o
}

fn failover_override(d: &mut Decoder, n: &Node, what: &str) -> FailoverOverride {
    match d.map(n, what, FAILOVER_SETTING_KEYS) {
        Some(m) => failover_settings_from(d, &m),
        None => FailoverOverride::default(),
    }
}

fn failover(d: &mut Decoder, n: &Node) -> FailoverConfig {
    let mut keys = FAILOVER_SETTING_KEYS.to_vec();
    keys.push("notification");
    let mut f = FailoverConfig::default();
    let Some(m) = d.map(n, "failover", &keys) else {
        return f;
    };
    f.settings = failover_settings_from(d, &m).apply_to(&f.settings);
    if let Some(v) = m.get("notification") {
        f.notification = notification(d, v);
    }
    f
}

fn notification(d: &mut Decoder, n: &Node) -> NotificationConfig {
    let mut out = NotificationConfig::default();
    let Some(m) = d.map(n, "notification", &["enabled", "channels"]) else {
        return out;
    };
    if let Some(v) = m.get("enabled").and_then(|v| d.boolean(v, "enabled")) {
        out.enabled = v;
    }
    if let Some(v) = m.get("channels") {
        out.channels = d
            .seq(v, "channels")
            .iter()
            .filter_map(|c| channel(d, c))
            .collect();
    }
    out
}

fn channel(d: &mut Decoder, n: &Node) -> Option<NotificationChannel> {
    let m = d.map(
        n,
        "a notification channel",
        &[
            "type",
            "level",
            "url",
            "format",
            "smtp_server",
            "smtp_port",
            "smtp_user",
            "smtp_password",
            "from",
            "recipients",
        ],
    )?;
    let Some(t) = m.get("type") else {
        d.error(
            m.loc,
            "a notification channel needs a `type` (log, webhook or email)",
        );
        return None;
    };
    #[derive(Clone, Copy)]
    enum Kind {
        Log,
        Webhook,
        Email,
    }
    let kind = d.choice(
        t,
        "type",
        &[
            ("log", Kind::Log),
            ("webhook", Kind::Webhook),
            ("email", Kind::Email),
        ],
    )?;
    let allowed: &[&str] = match kind {
        Kind::Log => &["type", "level"],
        Kind::Webhook => &["type", "url", "format"],
        Kind::Email => &[
            "type",
            "smtp_server",
            "smtp_port",
            "smtp_user",
            "smtp_password",
            "from",
            "recipients",
        ],
    };
    for key in [
        "level",
        "url",
        "format",
        "smtp_server",
        "smtp_port",
        "smtp_user",
        "smtp_password",
        "from",
        "recipients",
    ] {
        if m.get_raw(key).is_some() && !allowed.contains(&key) {
            d.error(
                m.key_loc(key).unwrap_or(m.loc),
                format!("`{key}` does not apply to this channel type"),
            );
        }
    }
    match kind {
        Kind::Log => {
            let level = m
                .get("level")
                .and_then(|v| {
                    d.choice(
                        v,
                        "level",
                        &[
                            ("error", LogLevel::Error),
                            ("warning", LogLevel::Warning),
                            ("warn", LogLevel::Warning),
                            ("info", LogLevel::Info),
                            ("debug", LogLevel::Debug),
                        ],
                    )
                })
                .unwrap_or(LogLevel::Warning);
            Some(NotificationChannel::Log { level })
        }
        Kind::Webhook => {
            let Some(u) = m.get("url") else {
                d.error(m.loc, "a webhook channel needs a `url`");
                return None;
            };
            let url = d.string(u, "url")?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                d.error(
                    u.loc,
                    format!("webhook url `{url}` must start with http:// or https://"),
                );
            }
            let format = m
                .get("format")
                .and_then(|v| {
                    d.choice(
                        v,
                        "format",
                        &[
                            ("json", WebhookFormat::Json),
                            ("slack", WebhookFormat::Slack),
                            ("discord", WebhookFormat::Discord),
                        ],
                    )
                })
                .unwrap_or(WebhookFormat::Json);
            Some(NotificationChannel::Webhook { url, format })
        }
        Kind::Email => {
            let Some(server) = m.get("smtp_server") else {
                d.error(m.loc, "an email channel needs `smtp_server`");
                return None;
            };
            let smtp_server = d.string(server, "smtp_server")?;
            let smtp_port = m
                .get("smtp_port")
                .and_then(|v| d.int(v, "smtp_port", 1, 65535))
                .unwrap_or(587) as u16;
            let smtp_user = m
                .get("smtp_user")
                .and_then(|v| d.string(v, "smtp_user"))
                .filter(|s| !s.is_empty());
            let smtp_password = m
                .get("smtp_password")
                .and_then(|v| d.scalar_string(v, "smtp_password"))
                .filter(|s| !s.is_empty());
            let from = m.get("from").and_then(|v| d.string(v, "from"));
            let recipients: Vec<String> = m
                .get("recipients")
                .map(|v| {
                    d.string_list(v, "recipients")
                        .into_iter()
                        .map(|(s, _)| s)
                        .collect()
                })
                .unwrap_or_default();
            if recipients.is_empty() {
                d.error(m.loc, "an email channel needs at least one of `recipients`");
            }
            Some(NotificationChannel::Email {
                smtp_server,
                smtp_port,
                smtp_user,
                smtp_password,
                from,
                recipients,
            })
        }
    }
}

/// Checks that need the whole model: names, references, combinations.
fn validate(d: &mut Decoder, cfg: &Config) {
    let mut seen_listeners: HashMap<std::net::SocketAddr, Loc> = HashMap::new();
    for l in &cfg.listeners {
        if let Some(prev) = seen_listeners.insert(l.address, l.loc) {
            d.error(
                l.loc,
                format!(
                    "duplicate listener address {} (first at line {})",
                    l.address, prev.line
                ),
            );
        }
        if let Some(r) = l.redirect_http_from
            && let Some(prev) = seen_listeners.insert(r, l.loc)
        {
            d.error(
                l.loc,
                format!(
                    "redirect_http_from {r} is already used at line {}",
                    prev.line
                ),
            );
        }
    }
    if let Some(a) = &cfg.admin
        && let Some(prev) = seen_listeners.get(&a.address)
        && a.address.port() != 0
    {
        d.error(
            *prev,
            format!("listener address {} is also the admin address", a.address),
        );
    }
    let mut pools: HashMap<&str, &PoolConfig> = HashMap::new();
    for p in &cfg.pools {
        if let Some(prev) = pools.insert(p.name.as_str(), p) {
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
    let mut seen_routes: HashMap<(Option<HostMatch>, &str), Loc> = HashMap::new();
    for r in &cfg.routes {
        let key = (r.host.clone(), r.path_prefix.as_str());
        if let Some(prev) = seen_routes.insert(key, r.loc) {
            d.error(
                r.loc,
                format!(
                    "duplicate route for the same host and path_prefix `{}` (first at line {})",
                    r.path_prefix, prev.line
                ),
            );
        }
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

fn tracing(d: &mut Decoder, n: &Node) -> Option<TracingConfig> {
    let m = d.map(
        n,
        "tracing",
        &[
            "otlp_endpoint",
            "protocol",
            "service_name",
            "sample_ratio",
            "enabled",
        ],
    )?;
    if m.get("enabled").and_then(|v| d.boolean(v, "enabled")) == Some(false) {
        return None;
    }
    let Some(e) = m.get("otlp_endpoint") else {
        d.error(
            m.loc,
            "tracing needs `otlp_endpoint` (e.g. http://127.0.0.1:4318)",
        );
        return None;
    };
    let endpoint = d.string(e, "otlp_endpoint")?;
    if !endpoint.starts_with("http://") {
        d.error(
            e.loc,
            "otlp_endpoint must be an http:// URL (OTLP/HTTP without TLS)",
        );
    }
    let protocol = m
        .get("protocol")
        .and_then(|v| {
            d.choice(
                v,
                "protocol",
                &[
                    ("http/protobuf", OtlpProtocol::Protobuf),
                    ("http/json", OtlpProtocol::Json),
                ],
            )
        })
        .unwrap_or(OtlpProtocol::Protobuf);
    let service_name = m
        .get("service_name")
        .and_then(|v| d.string(v, "service_name"))
        .unwrap_or_else(|| "fulcrum".into());
    let sample_ratio = match m.get("sample_ratio") {
        Some(v) => match &v.value {
            Value::Float(f) if (0.0..=1.0).contains(f) => *f,
            Value::Int(i) if (0..=1).contains(i) => *i as f64,
            _ => {
                d.error(v.loc, "sample_ratio must be a number from 0 to 1");
                1.0
            }
        },
        None => 1.0,
    };
    Some(TracingConfig {
        otlp_endpoint: endpoint,
        protocol,
        service_name,
        sample_ratio,
    })
}
