//! A container as discovery sees it: read from the engine's inspect answer.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Container {
    pub(crate) id: String,
    /// Without the leading `/`.
    pub(crate) name: String,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) labels: BTreeMap<String, String>,
    /// Exposed TCP ports, ascending.
    pub(crate) exposed: Vec<u16>,
    pub(crate) running: bool,
    pub(crate) paused: bool,
    /// Docker health: `starting`, `healthy`, `unhealthy`; `None` without a HEALTHCHECK.
    pub(crate) health: Option<String>,
    /// When the current run started: a restart changes it.
    pub(crate) started_at: String,
    /// Address on each network, by network name.
    pub(crate) networks: BTreeMap<String, Option<IpAddr>>,
}

impl Container {
    /// Reads an inspect answer; `None` when it has no ID.
    pub(crate) fn from_inspect(v: &Value) -> Option<Container> {
        let id = v["Id"].as_str()?.to_string();
        let name = v["Name"]
            .as_str()
            .unwrap_or(&id)
            .trim_start_matches('/')
            .to_string();
        let config = &v["Config"];
        let env = config["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let labels = config["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let mut exposed: Vec<u16> = config["ExposedPorts"]
            .as_object()
            .map(|m| {
                m.keys()
                    .filter_map(|k| {
                        let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
                        (proto == "tcp").then(|| port.parse().ok()).flatten()
                    })
                    .collect()
            })
            .unwrap_or_default();
        exposed.sort_unstable();
        exposed.dedup();
        let state = &v["State"];
        let networks = v["NetworkSettings"]["Networks"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, n)| {
                        let ip = n["IPAddress"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .or_else(|| n["GlobalIPv6Address"].as_str().filter(|s| !s.is_empty()))
                            .and_then(|s| s.parse().ok());
                        (name.clone(), ip)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Container {
            id,
            name,
            env,
            labels,
            exposed,
            running: state["Running"].as_bool().unwrap_or(false),
            paused: state["Paused"].as_bool().unwrap_or(false),
            health: state["Health"]["Status"]
                .as_str()
                .filter(|s| !s.is_empty() && *s != "none")
                .map(str::to_string),
            started_at: state["StartedAt"].as_str().unwrap_or("").to_string(),
            networks,
        })
    }
}

#[cfg(test)]
pub(crate) fn sample(name: &str, env: &[&str], labels: &[(&str, &str)]) -> Container {
    let v = serde_json::json!({
        "Id": format!("{name}-0123456789abcdef"),
        "Name": format!("/{name}"),
        "Config": {
            "Env": env,
            "Labels": labels.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect::<serde_json::Map<_, _>>(),
            "ExposedPorts": {"8080/tcp": {}},
        },
        "State": {"Running": true, "Paused": false, "StartedAt": "2026-01-01T00:00:00Z"},
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}, "front": {"IPAddress": "172.20.0.2"}}},
    });
    Container::from_inspect(&v).expect("sample")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_inspect_answer() {
        let c = sample("web-1", &["VIRTUAL_HOST=a.local", "EMPTY="], &[("x", "y")]);
        assert_eq!(c.name, "web-1");
        assert_eq!(c.env["VIRTUAL_HOST"], "a.local");
        assert_eq!(c.env["EMPTY"], "");
        assert_eq!(c.exposed, [8080]);
        assert!(c.running && !c.paused && c.health.is_none());
        assert_eq!(c.networks["front"], Some("172.20.0.2".parse().unwrap()));
    }
}
