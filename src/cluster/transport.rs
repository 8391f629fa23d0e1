//! The TCP transport between cluster nodes: length-prefixed JSON frames (a
//! big-endian u32 length, then the JSON), one request and one answer at a time
//! per connection. Each node keeps one connection per peer and opens a spare
//! when that one is busy, so a slow log append never holds up a vote.
//!
//! Every frame names its sender, which must be a configured node; the transport
//! records when each node was last heard from, for `last_contact_ms`.

use crate::admin::command::{AdminCommand, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Larger frames are refused and the connection closed.
const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub from: String,
    pub body: T,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// A Raft RPC, encoded by the consensus layer.
    Raft(Value),
    /// An admin write sent to a secondary, for the primary to propose.
    Forward(AdminCommand),
    /// "I am stepping down: campaign once my lease has run out."
    TakeOver,
    /// A returning higher-priority node asks the primary to hand over.
    Yield { priority: u32 },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Raft(Value),
    /// A forwarded write was committed at `index` and produced `outcome`.
    Applied {
        outcome: Outcome,
        index: u64,
    },
    Ok,
    Refused(String),
    Error(String),
}

/// Why a call failed, so the consensus layer can tell "down" from "glitch".
#[derive(Debug)]
pub enum CallError {
    /// Could not connect: the peer is down or unreachable.
    Unreachable(String),
    /// Connected, then the exchange failed.
    Network(String),
    Timeout,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(e) => write!(f, "unreachable: {e}"),
            CallError::Network(e) => write!(f, "network error: {e}"),
            CallError::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for CallError {}

/// When each node was last heard from (ms since `epoch`; 0 = never).
pub struct Contacts {
    epoch: Instant,
    last: HashMap<String, AtomicU64>,
}

impl Contacts {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Contacts {
            epoch: Instant::now(),
            last: names.into_iter().map(|n| (n, AtomicU64::new(0))).collect(),
        }
    }

    pub fn touch(&self, name: &str) {
        if let Some(a) = self.last.get(name) {
            a.store(self.epoch.elapsed().as_millis() as u64 + 1, Relaxed);
        }
    }

    /// Milliseconds since `name` was last heard from, if ever.
    pub fn since(&self, name: &str) -> Option<u64> {
        let t = self.last.get(name)?.load(Relaxed);
        (t != 0).then(|| (self.epoch.elapsed().as_millis() as u64 + 1).saturating_sub(t))
    }

    pub fn knows(&self, name: &str) -> bool {
        self.last.contains_key(name)
    }
}

async fn write_frame(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("frame too large"))?
        .to_be_bytes();
    let mut buf = Vec::with_capacity(4 + bytes.len());
    buf.extend_from_slice(&len);
    buf.extend_from_slice(bytes);
    s.write_all(&buf).await
}

async fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is over the limit"
        )));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The client side for one peer.
pub struct Peer {
    pub name: String,
    pub address: String,
    me: String,
    cached: tokio::sync::Mutex<Option<TcpStream>>,
    contacts: Arc<Contacts>,
    /// Last outcome, to log a change of reachability once rather than per call.
    reachable: std::sync::atomic::AtomicBool,
}

impl Peer {
    pub fn new(me: &str, name: &str, address: &str, contacts: Arc<Contacts>) -> Self {
        Peer {
            name: name.to_string(),
            address: address.to_string(),
            me: me.to_string(),
            cached: tokio::sync::Mutex::new(None),
            contacts,
            reachable: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// One request, one answer, within `timeout` (connecting included).
    pub async fn call(&self, body: Request, timeout: Duration) -> Result<Response, CallError> {
        let frame = serde_json::to_vec(&Envelope {
            from: self.me.clone(),
            body,
        })
        .map_err(|e| CallError::Network(e.to_string()))?;
        let result = match tokio::time::timeout(timeout, self.exchange(&frame)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        match &result {
            Ok(_) => {
                self.contacts.touch(&self.name);
                if !self.reachable.swap(true, Relaxed) {
                    tracing::info!(peer = %self.name, "cluster peer reachable again");
                }
            }
            Err(e) => {
                if self.reachable.swap(false, Relaxed) {
                    tracing::warn!(peer = %self.name, error = %e, "cluster peer unreachable");
                }
            }
        }
        result
    }

    async fn exchange(&self, frame: &[u8]) -> Result<Response, CallError> {
        // The cached connection when free, else a one-off one.
        let mut guard = self.cached.try_lock().ok();
        let reuse = guard.as_mut().and_then(|g| g.take());
        let fresh = reuse.is_none();
        let mut stream = match reuse {
            Some(s) => s,
            None => connect(&self.address).await?,
        };
        let result = async {
            write_frame(&mut stream, frame).await?;
            read_frame(&mut stream).await
        }
        .await;
        let bytes = match result {
            Ok(b) => b,
            // A reused connection may have been closed by the peer while idle:
            // one retry on a new connection.
            Err(_) if !fresh => {
                stream = connect(&self.address).await?;
                write_frame(&mut stream, frame)
                    .await
                    .map_err(|e| CallError::Network(e.to_string()))?;
                read_frame(&mut stream)
                    .await
                    .map_err(|e| CallError::Network(e.to_string()))?
            }
            Err(e) => return Err(CallError::Network(e.to_string())),
        };
        if let Some(g) = guard.as_mut() {
            **g = Some(stream);
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Network(format!("bad answer: {e}")))
    }
}

async fn connect(address: &str) -> Result<TcpStream, CallError> {
    let s = TcpStream::connect(address)
        .await
        .map_err(|e| CallError::Unreachable(format!("{address}: {e}")))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// What serves the requests a node receives.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        from: String,
        req: Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;
}

/// Accepts peer connections until `stop` is cancelled.
pub fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    contacts: Arc<Contacts>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let contacts = contacts.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    r = connection(stream, handler, contacts) => if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "cluster connection closed");
                    },
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
}

async fn connection<H: Handler>(
    mut stream: TcpStream,
    handler: Arc<H>,
    contacts: Arc<Contacts>,
) -> std::io::Result<()> {
    loop {
        let bytes = match read_frame(&mut stream).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let env: Envelope<Request> = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                let answer = serde_json::to_vec(&Response::Error(format!("bad request: {e}")))?;
                write_frame(&mut stream, &answer).await?;
                return Ok(());
            }
        };
        if !contacts.knows(&env.from) {
            let answer = serde_json::to_vec(&Response::Error(format!(
                "`{}` is not a member of this cluster",
                env.from
            )))?;
            write_frame(&mut stream, &answer).await?;
            return Ok(());
        }
        contacts.touch(&env.from);
        let answer = handler.clone().handle(env.from, env.body).await;
        let bytes = serde_json::to_vec(&answer)?;
        write_frame(&mut stream, &bytes).await?;
    }
}
