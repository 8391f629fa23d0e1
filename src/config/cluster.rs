//! `cluster:` — high availability of the proxy itself: this node, its peers,
//! election timings, the virtual IP and the role-change hooks. Node-local: never
//! replicated.

use super::decode::{Decoder, MapView};
use super::serialize::{duration, secret};
use super::tree::{Loc, Node};
use ipnet::IpNet;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    pub address: IpAddr,
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

const KEYS: &[&str] = &[
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

/// `cluster:` (absent: a single node). `base_dir` resolves `state_dir` and the
/// notify script.
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>, base_dir: &Path) -> Option<ClusterConfig> {
    let m = d.map(n?, "cluster", KEYS)?;
    let node_id = node_id(d, &m);
    let bind = bind(d, &m);
    let peers = peers(d, &m, &node_id, bind);
    let state_dir = match m.get("state_dir").and_then(|v| d.string(v, "state_dir")) {
        Some(t) => base_dir.join(t),
        None => PathBuf::from("/var/lib/fulcrum"),
    };
    let (heartbeat_interval, election_timeout, preempt_delay) = timings(d, &m);
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
        .map(|v| hooks(d, v, base_dir))
        .unwrap_or_default();
    let secret = cluster_secret(d, &m);
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

fn node_id(d: &mut Decoder, m: &MapView) -> String {
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
    node_id
}

fn bind(d: &mut Decoder, m: &MapView) -> Option<SocketAddr> {
    match m.get("bind") {
        Some(v) => d
            .scalar_string(v, "bind")
            .and_then(|t| match t.parse::<SocketAddr>() {
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
    }
}

/// The other voters; no id twice (this node's included), none at this node's address.
fn peers(d: &mut Decoder, m: &MapView, node_id: &str, bind: Option<SocketAddr>) -> Vec<PeerConfig> {
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
    seen.insert(node_id, m.loc);
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
    peers
}

/// Default `heartbeat_interval`, in milliseconds.
pub(crate) const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// Default `election_timeout`, in milliseconds.
pub(crate) const DEFAULT_ELECTION_MS: u64 = 350;

/// `(heartbeat_interval, election_timeout, preempt_delay)`.
fn timings(d: &mut Decoder, m: &MapView) -> (Duration, Duration, Duration) {
    let dur = |d: &mut Decoder, key: &str, default: u64| {
        m.get(key)
            .and_then(|v| d.duration(v, key))
            .unwrap_or(Duration::from_millis(default))
    };
    // LAN timings (a VIP lives on one LAN segment): the fastest pair the HA
    // benchmark holds with no false takeover under 30% packet loss.
    let heartbeat_interval = dur(d, "heartbeat_interval", DEFAULT_HEARTBEAT_MS);
    let election_timeout = dur(d, "election_timeout", DEFAULT_ELECTION_MS);
    let preempt_delay = dur(d, "preempt_delay", 300_000);
    if heartbeat_interval.is_zero() || election_timeout < heartbeat_interval * 3 {
        d.error(
            m.get("election_timeout").map(|v| v.loc).unwrap_or(m.loc),
            format!(
                "election_timeout ({}) must be at least 3 × heartbeat_interval ({}), or lost heartbeats cause needless elections",
                super::units::format_duration(election_timeout),
                super::units::format_duration(heartbeat_interval)
            ),
        );
    }
    (heartbeat_interval, election_timeout, preempt_delay)
}

fn cluster_secret(d: &mut Decoder, m: &MapView) -> Option<String> {
    let v = m.get("secret")?;
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
}

/// 1 to 64 letters, digits, `-`, `_` or `.`.
pub(crate) fn valid_node_id(id: &str) -> bool {
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

fn hooks(d: &mut Decoder, n: &Node, base_dir: &Path) -> ClusterHooks {
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

/// With `redact`, the hook webhook and the secret are replaced by `<redacted>`.
pub(crate) fn serialize(c: &ClusterConfig, redact: bool) -> Value {
    // As the other sections write durations (`1500ms`, `5m`), so that the
    // dump reads back.
    let ms = duration;
    json!({
        "node_id": c.node_id,
        "bind": c.bind.to_string(),
        "peers": c.peers.iter().map(|p| json!({"id": p.id, "address": p.address, "witness": p.witness})).collect::<Vec<_>>(),
        "state_dir": c.state_dir.display().to_string(),
        "heartbeat_interval": ms(c.heartbeat_interval),
        "election_timeout": ms(c.election_timeout),
        "priority": c.priority,
        "preempt": c.preempt,
        "preempt_delay": ms(c.preempt_delay),
        "vip": c.vip.as_ref().map(|v| json!({
            "address": format!("{}/{}", v.address, v.prefix_len),
            "interface": v.interface,
            "garp_count": v.garp_count,
        })),
        "hooks": {
            "notify": c.hooks.notify.as_ref().map(|p| p.display().to_string()),
            "notify_timeout": ms(c.hooks.notify_timeout),
            "webhook": c.hooks.webhook.as_ref().map(|w| secret(w, redact)),
        },
        "secret": c.secret.as_ref().map(|s| secret(s, redact)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "cluster:
  node_id: n1
  bind: \"10.0.0.11:7946\"
  peers:
    - { id: n2, address: \"10.0.0.12:7946\" }
    - { id: w, address: \"witness.internal:7946\", witness: true }
  heartbeat_interval: 200ms
  election_timeout: 1s
  priority: 150
  vip: { address: \"10.0.0.10/24\", interface: eth0 }
  hooks: { notify: Cargo.toml, webhook: \"https://hooks.example/t0ken\" }
  secret: \"0123456789abcdef0123\"
",
        );
        let cl = c.cluster.as_ref().expect("cluster");
        assert_eq!(cl.peers.len(), 2);
        assert!(cl.peers[1].witness);
        assert_eq!(cl.vip.as_ref().map(|v| v.prefix_len), Some(24));
        assert_eq!(cl.hooks.notify_timeout, Duration::from_secs(10));
        let json = round_trip(&c);
        assert_eq!(json["cluster"]["vip"]["address"], "10.0.0.10/24");
        assert_eq!(json["cluster"]["election_timeout"], "1s");
        assert_eq!(json["cluster"]["secret"], "0123456789abcdef0123");
        let redacted = serialize(cl, true);
        assert_eq!(redacted["secret"], "<redacted>");
        assert_eq!(redacted["hooks"]["webhook"], "<redacted>");
    }

    #[test]
    fn defaults_are_lan_timings_and_durations_read_back() {
        let c = load("cluster:\n  node_id: a\n  bind: \"10.0.0.1:7946\"\n  peers: []\n");
        let cl = c.cluster.as_ref().expect("cluster");
        assert_eq!(cl.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(cl.election_timeout, Duration::from_millis(350));
        let json = round_trip(&c);
        assert_eq!(json["cluster"]["heartbeat_interval"], "100ms");
        assert_eq!(json["cluster"]["election_timeout"], "350ms");
        assert_eq!(json["cluster"]["preempt_delay"], "5m");
        // A value that is not a whole unit must not come back as `1s 500ms`,
        // which the decoder would refuse.
        let c = load(
            "cluster:\n  node_id: a\n  bind: \"10.0.0.1:7946\"\n  peers: []\n  heartbeat_interval: 250ms\n  election_timeout: 1500ms\n  preempt_delay: 90s\n  hooks: { notify_timeout: 2500ms }\n",
        );
        let json = round_trip(&c);
        assert_eq!(json["cluster"]["election_timeout"], "1500ms");
        assert_eq!(json["cluster"]["preempt_delay"], "90s");
        assert_eq!(json["cluster"]["hooks"]["notify_timeout"], "2500ms");
    }

    #[test]
    fn rejects_a_peer_with_this_nodes_address() {
        assert_eq!(
            errors(
                "cluster:\n  node_id: a\n  bind: \"10.0.0.1:7946\"\n  peers:\n    - { id: b, address: \"10.0.0.1:7946\" }\n"
            ),
            ["CFG:5:7: peer `b` has this node's own bind address"]
        );
    }
}
