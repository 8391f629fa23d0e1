//! A small client for the Docker Engine API (also Podman's Docker-compatible
//! socket): over a Unix socket or plain TCP, HTTP/1.1, JSON. Only what discovery
//! needs: the version, the running containers, one container, the event stream.
//!
//! The API version is negotiated: the unversioned `/version` first, then every
//! path is prefixed with the engine's own version (capped at the newest this
//! client was written against), so old engines (API 1.41) and current ones
//! (which refuse old versions) both answer.

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// The newest API version this client knows; a newer engine is spoken to in it.
const NEWEST: (u32, u32) = (1, 47);
/// The oldest version that has everything used here (health status, networks).
const OLDEST: (u32, u32) = (1, 24);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the engine listens.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Endpoint {
    Unix(String),
    Tcp(String),
}

impl Endpoint {
    /// The configured endpoint, else `$DOCKER_HOST`, else the default socket.
    pub(crate) fn resolve(configured: Option<&str>) -> Result<Endpoint, String> {
        let text = configured
            .map(str::to_string)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        if let Some(p) = text.strip_prefix("unix://") {
            Ok(Endpoint::Unix(p.to_string()))
        } else if let Some(a) = text.strip_prefix("tcp://") {
            Ok(Endpoint::Tcp(a.trim_end_matches('/').to_string()))
        } else {
            Err(format!(
                "engine endpoint `{text}`: only unix:// and tcp:// are supported"
            ))
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{p}"),
            Endpoint::Tcp(a) => format!("tcp://{a}"),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connected, version-negotiated engine.
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    endpoint: Endpoint,
    /// `1.41`: the version used in every path.
    pub(crate) version: String,
}

impl Engine {
    /// Asks the engine its API version and settles on the one to speak.
    pub(crate) async fn negotiate(endpoint: Endpoint) -> Result<Engine, String> {
        let mut engine = Engine {
            endpoint,
            version: String::new(),
        };
        let v = engine.get_json("/version").await?;
        engine.version = negotiated_version(&v)?;
        Ok(engine)
    }

    /// The IDs of the running (and paused) containers.
    pub(crate) async fn list(&self) -> Result<Vec<String>, String> {
        let v = self
            .get_json(&format!("/v{}/containers/json", self.version))
            .await?;
        container_ids(&v)
    }

    /// One container's full description; `None` once it is gone.
    pub(crate) async fn inspect(&self, id: &str) -> Result<Option<Value>, String> {
        let path = format!("/v{}/containers/{id}/json", self.version);
        let (status, body) = self.get(&path).await?;
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| format!("inspect {id}: {e}")),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(format!("inspect {id}: {s}: {}", short(&body))),
        }
    }

    /// The event stream (container and network events), one JSON object a line.
    pub(crate) async fn events(&self) -> Result<Events, String> {
        // {"type":["container","network"]}, percent-encoded.
        let filters = "%7B%22type%22%3A%5B%22container%22%2C%22network%22%5D%7D";
        let path = format!("/v{}/events?filters={filters}", self.version);
        let resp = self.send(&path).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(format!("events: {status}: {}", short(&body)));
        }
        Ok(Events {
            body: resp.into_body(),
            buf: BytesMut::new(),
        })
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self.get(path).await?;
        if status != StatusCode::OK {
            return Err(format!("GET {path}: {status}: {}", short(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let work = async {
            let resp = self.send(path).await?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("GET {path}: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| format!("GET {path}: no answer within {TIMEOUT:?}"))?
    }

    /// One request over a new connection (the engine is local; requests are few).
    async fn send(&self, path: &str) -> Result<http::Response<Incoming>, String> {
        let io: Box<dyn Io> = match &self.endpoint {
            Endpoint::Unix(p) => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| format!("cannot connect to {p}: {e}"))?,
            ),
            Endpoint::Tcp(a) => Box::new(
                tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(|e| format!("cannot connect to {a}: {e}"))?,
            ),
        };
        let connect = hyper::client::conn::http1::handshake(TokioIo::new(io));
        let (mut sender, conn) = tokio::time::timeout(TIMEOUT, connect)
            .await
            .map_err(|_| "the engine did not answer the handshake".to_string())?
            .map_err(|e| format!("engine handshake: {e}"))?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(http::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| format!("GET {path}: no answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("GET {path}: {e}"))
    }
}

/// The engine's events, as they come.
pub(crate) struct Events {
    body: Incoming,
    buf: BytesMut,
}

impl Events {
    /// The next event; `Ok(None)` when the engine closed the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Value>, String> {
        loop {
            if let Some(event) = take_event(&mut self.buf) {
                return event.map(Some);
            }
            if self.buf.len() > 1 << 20 {
                return Err("an event longer than 1 MiB".into());
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("event stream: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// The API version to speak, from the engine's `/version` answer.
pub(crate) fn negotiated_version(v: &Value) -> Result<String, String> {
    let theirs = v["ApiVersion"]
        .as_str()
        .ok_or("the engine's /version has no ApiVersion")?;
    let parsed = parse_version(theirs)
        .ok_or_else(|| format!("the engine's API version `{theirs}` is not understood"))?;
    if parsed < OLDEST {
        return Err(format!(
            "the engine's API version {theirs} is older than 1.24"
        ));
    }
    let (major, minor) = parsed.min(NEWEST);
    Ok(format!("{major}.{minor}"))
}

/// The IDs in the engine's container list answer.
pub(crate) fn container_ids(v: &Value) -> Result<Vec<String>, String> {
    let items = v.as_array().ok_or("the container list is not a list")?;
    Ok(items
        .iter()
        .filter_map(|c| c["Id"].as_str().map(str::to_string))
        .collect())
}

/// Takes the next complete line of the event stream out of `buf` and decodes
/// it; `None` until a line is complete (blank lines are skipped).
pub(crate) fn take_event(buf: &mut BytesMut) -> Option<Result<Value, String>> {
    loop {
        let pos = buf.iter().position(|&b| b == b'\n')?;
        let line = buf.split_to(pos + 1);
        let line = &line[..pos];
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return Some(
            serde_json::from_slice(line).map_err(|e| format!("an event that is not JSON: {e}")),
        );
    }
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn short(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(body);
    let t = t.trim();
    t.chars().take(200).collect()
}

/// What an event says, without reading its action beyond `kill`: the container
/// it concerns, and whether it is a stop signal (SIGTERM, SIGINT, SIGQUIT,
/// SIGKILL) sent to it.
pub(crate) fn event_target(e: &Value) -> Option<(String, bool)> {
    let actor = &e["Actor"];
    let kind = e["Type"].as_str().unwrap_or("container");
    let id = if kind == "network" {
        actor["Attributes"]["container"].as_str()
    } else {
        actor["ID"].as_str().or_else(|| e["id"].as_str())
    }?;
    let action = e["Action"].as_str().or_else(|| e["status"].as_str());
    let stopping = kind == "container"
        && action == Some("kill")
        && actor["Attributes"]["signal"]
            .as_str()
            .is_some_and(is_stop_signal);
    Some((id.to_string(), stopping))
}

fn is_stop_signal(s: &str) -> bool {
    let s = s.trim().to_ascii_uppercase();
    let s = s.strip_prefix("SIG").unwrap_or(&s);
    matches!(s, "15" | "2" | "3" | "9" | "TERM" | "INT" | "QUIT" | "KILL")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_name_their_container_and_stop_signals() {
        let kill = json!({"Type": "container", "Action": "kill", "Actor": {"ID": "abc", "Attributes": {"signal": "15"}}});
        assert_eq!(event_target(&kill), Some(("abc".into(), true)));
        let hup = json!({"Type": "container", "Action": "kill", "Actor": {"ID": "abc", "Attributes": {"signal": "1"}}});
        assert_eq!(event_target(&hup), Some(("abc".into(), false)));
        let health = json!({"Type": "container", "Action": "health_status: healthy", "Actor": {"ID": "abc"}});
        assert_eq!(event_target(&health), Some(("abc".into(), false)));
        let net = json!({"Type": "network", "Action": "connect", "Actor": {"ID": "net1", "Attributes": {"container": "abc"}}});
        assert_eq!(event_target(&net), Some(("abc".into(), false)));
        let podman =
            json!({"status": "kill", "id": "abc", "Actor": {"Attributes": {"signal": "SIGTERM"}}});
        assert_eq!(event_target(&podman), Some(("abc".into(), true)));
    }

    #[test]
    fn event_lines_are_taken_whole_and_blank_ones_skipped() {
        let mut buf = BytesMut::from(&b"{\"id\":\"a\"}\n \r\n\n{\"id\":"[..]);
        assert_eq!(take_event(&mut buf), Some(Ok(json!({"id": "a"}))));
        assert_eq!(take_event(&mut buf), None);
        buf.extend_from_slice(b"\"b\"}\nnot json\n");
        assert_eq!(take_event(&mut buf), Some(Ok(json!({"id": "b"}))));
        assert!(matches!(take_event(&mut buf), Some(Err(e)) if e.contains("not JSON")));
        assert!(buf.is_empty());
    }

    #[test]
    fn version_and_list_answers() {
        assert_eq!(
            negotiated_version(&json!({"ApiVersion": "1.41"})),
            Ok("1.41".into())
        );
        assert_eq!(
            negotiated_version(&json!({"ApiVersion": "1.99"})),
            Ok("1.47".into())
        );
        assert!(negotiated_version(&json!({"ApiVersion": "1.23"})).is_err());
        assert!(negotiated_version(&json!({"ApiVersion": 1.41})).is_err());
        assert!(negotiated_version(&json!([])).is_err());
        assert_eq!(
            container_ids(&json!([{"Id": "a"}, {"Names": ["/b"]}, {"Id": "c"}])),
            Ok(vec!["a".into(), "c".into()])
        );
        assert!(container_ids(&json!({"Id": "a"})).is_err());
    }

    #[test]
    fn endpoints_and_versions() {
        assert_eq!(
            Endpoint::resolve(Some("unix:///run/x.sock")),
            Ok(Endpoint::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            Endpoint::resolve(Some("tcp://127.0.0.1:2375")),
            Ok(Endpoint::Tcp("127.0.0.1:2375".into()))
        );
        assert!(Endpoint::resolve(Some("ssh://x")).is_err());
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert!(parse_version("1.53").unwrap().min(NEWEST) == NEWEST);
    }
}
