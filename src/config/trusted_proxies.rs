//! `trusted_proxies:` — peers whose `X-Forwarded-For` is believed.

use super::decode::Decoder;
use super::tree::Node;
use ipnet::IpNet;
use serde_json::Value;
use std::net::IpAddr;

/// `trusted_proxies:` — IPs or CIDRs (absent: none).
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>) -> Vec<IpNet> {
    let Some(n) = n else {
        return Vec::new();
    };
    d.string_list(n, "trusted_proxies")
        .into_iter()
        .filter_map(|(s, loc)| match parse_cidr(&s) {
            Ok(net) => Some(net),
            Err(e) => {
                d.error(loc, e);
                None
            }
        })
        .collect()
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("invalid trusted proxy `{s}` (expected an IP or CIDR like 10.0.0.0/8)")
    })
}

pub(crate) fn serialize(nets: &[IpNet]) -> Value {
    Value::Array(nets.iter().map(|n| Value::String(n.to_string())).collect())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use serde_json::json;

    #[test]
    fn decodes_and_round_trips() {
        let c = load("trusted_proxies: [\"10.1.2.3/8\", \"192.168.1.1\", \"::1\"]\n");
        let json = round_trip(&c);
        assert_eq!(
            json["trusted_proxies"],
            json!(["10.0.0.0/8", "192.168.1.1/32", "::1/128"])
        );
    }

    #[test]
    fn rejects_a_bad_prefix() {
        assert_eq!(
            errors("trusted_proxies: [\"10.0.0.0/99\"]\n"),
            [
                "CFG:1:19: invalid trusted proxy `10.0.0.0/99` (expected an IP or CIDR like 10.0.0.0/8)"
            ]
        );
    }
}
