//! Cluster test support on loopback: several real `fulcrum` processes, each
//! with its own state directory and peer port, restartable with the same state.

use crate::{Fulcrum, TempDir, client};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;

pub struct NodeSpec {
    pub name: String,
    pub port: u16,
    pub witness: bool,
    /// Extra keys under `cluster:` (indented by the caller as `  key: value`).
    pub extra: String,
    /// The `listeners:` value (YAML); empty = one plain listener on an ephemeral port.
    pub listeners: String,
}

/// One node of a loopback cluster: config and state survive restarts.
pub struct Node {
    pub name: String,
    witness: bool,
    pub dir: TempDir,
    pub config: PathBuf,
    pub proc: Option<Fulcrum>,
}

/// Writes every node's config. `body` is the shared part (pools, routes...).
pub fn configure(specs: &[NodeSpec], body: &str, timing: &str) -> Vec<Node> {
    specs
        .iter()
        .map(|s| {
            let dir = TempDir::new(&format!("cluster-{}", s.name));
            let peers: String = specs
                .iter()
                .filter(|p| p.name != s.name)
                .map(|p| {
                    format!(
                        "    - {{ id: {}, address: \"127.0.0.1:{}\", witness: {} }}\n",
                        p.name, p.port, p.witness
                    )
                })
                .collect();
            let listeners = if s.listeners.is_empty() {
                "[\"127.0.0.1:0\"]".to_string()
            } else {
                s.listeners.clone()
            };
            let text = format!(
                "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners: {listeners}\naccess_log: {{ enabled: false }}\n{body}\ncluster:\n  node_id: {}\n  bind: \"127.0.0.1:{}\"\n  state_dir: {}\n{timing}{}  peers:\n{peers}",
                s.name,
                s.port,
                dir.path("state").display(),
                s.extra,
            );
            let config = dir.write("fulcrum.yaml", &text);
            Node {
                name: s.name.clone(),
                witness: s.witness,
                dir,
                config,
                proc: None,
            }
        })
        .collect()
}

impl Node {
    pub fn start(&mut self) {
        let cfg = self.config.to_str().expect("utf-8 path").to_string();
        let cmd = if self.witness { "witness" } else { "run" };
        let args = ["--log-format", "json", cmd, "-c", cfg.as_str()];
        let f = if self.witness {
            Fulcrum::spawn_until(
                TempDir::new("witness"),
                self.config.clone(),
                &args,
                "witness started",
            )
        } else {
            Fulcrum::spawn(TempDir::new("node"), self.config.clone(), &args)
        };
        self.proc = Some(f);
    }

    pub fn proc(&self) -> &Fulcrum {
        self.proc.as_ref().expect("node is running")
    }

    pub fn admin(&self) -> SocketAddr {
        self.proc().admin()
    }

    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    /// `GET /api/v1/cluster`, or None if the node does not answer.
    pub async fn status(&self) -> Option<Value> {
        let p = self.proc.as_ref()?;
        if self.witness {
            return None;
        }
        let addr = p.admin();
        let req = Request::get("/api/v1/cluster")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .ok()?;
        let r = client::try_send(addr, req).await.ok()?;
        r.status.is_success().then(|| r.json())
    }

    pub async fn role(&self) -> Option<String> {
        self.status()
            .await
            .and_then(|s| s["role"].as_str().map(str::to_string))
    }

    /// Role transitions this node logged, in order (`to` of each).
    pub fn roles_logged(&self) -> Vec<String> {
        self.proc
            .as_ref()
            .map(|p| {
                p.stderr
                    .all()
                    .iter()
                    .filter(|l| l.contains("\"message\":\"cluster role\""))
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter_map(|v| v["to"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The single node every running node agrees is primary, if there is one.
pub async fn agreed_primary(nodes: &[Node]) -> Option<String> {
    let mut primaries = Vec::new();
    let mut leaders = Vec::new();
    for n in nodes.iter().filter(|n| n.running() && !n.witness) {
        let s = n.status().await?;
        if s["role"] == "primary" {
            primaries.push(n.name.clone());
        }
        leaders.push(s["leader"].as_str()?.to_string());
    }
    if primaries.len() != 1 || leaders.iter().any(|l| *l != primaries[0]) {
        return None;
    }
    primaries.pop()
}

/// A notify hook that appends `ROLE TERM NODE_ID` to `NODE_ID.hooks` in its own
/// directory, and reads those lines back.
pub struct HookLog {
    dir: TempDir,
    pub script: PathBuf,
}

impl HookLog {
    /// Writes the hook script into a directory of its own.
    pub fn create() -> HookLog {
        let dir = TempDir::new("hooks");
        let script = dir.write(
            "hook.sh",
            &format!(
                "#!/bin/sh\necho \"$1 $2 $3\" >> {}/\"$3\".hooks\n",
                dir.0.display()
            ),
        );
        std::process::Command::new("chmod")
            .args(["+x", script.to_str().expect("utf-8 path")])
            .status()
            .expect("chmod");
        HookLog { dir, script }
    }

    /// `(role, term)` of each run of the hook on `node`, in order.
    pub fn lines(&self, node: &str) -> Vec<(String, u64)> {
        std::fs::read_to_string(self.dir.path(&format!("{node}.hooks")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split(' ');
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect()
    }
}

/// A TCP relay on 127.0.0.1 in front of `target`: it forwards both ways and
/// keeps a copy of every byte, as a capture on the wire would.
pub struct Relay {
    pub port: u16,
    captured: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Relay {
    pub async fn start(target: u16) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let port = l.local_addr().expect("relay addr").port();
        let captured = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let cap = captured.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = l.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                for (mut r, mut w) in [
                    (
                        Box::new(ri) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(ro) as _, Box::new(wi) as _),
                ] {
                    let cap = cap.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = r.read(&mut buf).await {
                            if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            cap.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    });
                }
            }
        });
        Relay { port, captured }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }
}
