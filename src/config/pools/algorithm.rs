//! A pool's `algorithm` (also a route's `load_balancing.method`) and the
//! `hash_key` that the `hash` algorithm hashes.

use super::super::decode::Decoder;
use super::super::tree::Node;
use http::HeaderName;

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

/// `hash_key: header:NAME | cookie:NAME | path | query:NAME`.
pub(crate) fn decode_hash_key(d: &mut Decoder, n: &Node) -> Option<HashKey> {
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

/// The `hash_key` as written.
pub(crate) fn hash_key_text(k: &HashKey) -> String {
    match k {
        HashKey::Header(h) => format!("header:{h}"),
        HashKey::Cookie(c) => format!("cookie:{c}"),
        HashKey::Path => "path".into(),
        HashKey::Query(q) => format!("query:{q}"),
    }
}
