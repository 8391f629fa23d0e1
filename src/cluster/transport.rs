//! The TCP transport between cluster nodes: frames of a big-endian u32 length,
//! a u64 request id, then JSON. Each node keeps one persistent connection per
//! peer and multiplexes requests over it: answers come back by id, in any order
//! (the receiver serves each request in its own task, so a slow forwarded write
//! never holds up a heartbeat). A request that times out is forgotten but its
//! connection stays: on a lossy link TCP recovers the lost segment in
//! milliseconds, where a new connection would wait a second for a lost SYN.
//! Raft messages travel over two such connections at once (`call_twice`).
//!
//! Every connection is TLS 1.3 (`secure`); with `cluster.secret` it then passes
//! the handshake of `auth`, bound to that session. Every frame names its sender,
//! which must be a configured node; the transport records when each node was
//! last heard from, for `last_contact_ms`.

use super::auth::{self, Secret};
use super::secure::{self, PeerStream, PeerTls};
use crate::command::{Command, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How long a connection may take for TLS and the proof of the cluster secret.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

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
    Forward(Command),
    /// "I am stepping down: campaign once my lease has run out."
    TakeOver,
    /// A returning higher-priority node asks the primary to hand over.
    Yield { priority: u32 },
    /// A new node asks whether a cluster exists here (answered to any node that
    /// passed the handshake, member or not).
    Probe,
    /// "You were removed from the membership": stop campaigning.
    Removed,
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
    /// The answer to `Probe`: whether this node holds cluster state.
    Probe {
        initialized: bool,
    },
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

/// The nodes this one talks to, and when each was last heard from (ms since
/// `epoch`; 0 = never). Members added at run time join the set.
pub struct Contacts {
    epoch: Instant,
    last: std::sync::RwLock<HashMap<String, AtomicU64>>,
}

impl Contacts {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Contacts {
            epoch: Instant::now(),
            last: std::sync::RwLock::new(
                names.into_iter().map(|n| (n, AtomicU64::new(0))).collect(),
            ),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, AtomicU64>> {
        self.last.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A node that became a member.
    pub fn add(&self, name: &str) {
        if !self.knows(name) {
            self.last
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.to_string())
                .or_insert_with(|| AtomicU64::new(0));
        }
    }

    pub fn touch(&self, name: &str) {
        if let Some(a) = self.read().get(name) {
            a.store(self.epoch.elapsed().as_millis() as u64 + 1, Relaxed);
        }
    }

    /// Milliseconds since `name` was last heard from, if ever.
    pub fn since(&self, name: &str) -> Option<u64> {
        let t = self.read().get(name)?.load(Relaxed);
        (t != 0).then(|| (self.epoch.elapsed().as_millis() as u64 + 1).saturating_sub(t))
    }

    pub fn knows(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }
}

/// The client side of every peer, by name; a member added at run time gets its
/// own on first use.
pub struct Peers {
    me: String,
    contacts: Arc<Contacts>,
    tls: Arc<PeerTls>,
    secret: Option<Arc<Secret>>,
    map: Mutex<HashMap<String, Arc<Peer>>>,
}

impl Peers {
    pub fn new(
        me: &str,
        contacts: Arc<Contacts>,
        tls: Arc<PeerTls>,
        secret: Option<Arc<Secret>>,
    ) -> Peers {
        Peers {
            me: me.to_string(),
            contacts,
            tls,
            secret,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Peer>> {
        lock(&self.map).get(name).cloned()
    }

    /// The peer `name` at `address` (a new one if the address changed).
    pub fn ensure(&self, name: &str, address: &str) -> Arc<Peer> {
        let mut map = lock(&self.map);
        if let Some(p) = map.get(name)
            && p.address == address
        {
            return p.clone();
        }
        self.contacts.add(name);
        let p = Arc::new(Peer::new(
            &self.me,
            name,
            address,
            self.contacts.clone(),
            self.tls.clone(),
            self.secret.clone(),
        ));
        map.insert(name.to_string(), p.clone());
        p
    }
}

async fn write_frame<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    id: u64,
    json: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(json.len() + 8)
        .map_err(|_| std::io::Error::other("frame too large"))?
        .to_be_bytes();
    let mut buf = Vec::with_capacity(12 + json.len());
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(json);
    w.write_all(&buf).await
}

async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<(u64, Vec<u8>)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let Some(body_len) = frame_body_len(len) else {
        return Err(std::io::Error::other(format!(
            "bad frame length {}",
            u32::from_be_bytes(len)
        )));
    };
    let mut id = [0u8; 8];
    r.read_exact(&mut id).await?;
    let mut buf = vec![0u8; body_len];
    r.read_exact(&mut buf).await?;
    Ok((u64::from_be_bytes(id), buf))
}

type Waiters = Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>;

/// One open connection to a peer: a writer, and a reader task that hands each
/// answer to whoever waits for its id.
struct Conn {
    writer: tokio::sync::Mutex<WriteHalf<PeerStream>>,
    waiting: Arc<Waiters>,
    closed: Arc<AtomicBool>,
    /// When a frame last arrived (ms since `opened`).
    opened: Instant,
    last_read: Arc<AtomicU64>,
}

/// A connection that has had requests outstanding and no answer for this long
/// is presumed dead (a peer that vanished without a reset) and replaced.
const SILENT_LIMIT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    async fn open(
        address: &str,
        tls: &PeerTls,
        secret: Option<&Secret>,
    ) -> Result<Arc<Conn>, CallError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| CallError::Unreachable(format!("{address}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let shake = async {
            let mut s = tls.connect(tcp).await?;
            if let Some(secret) = secret {
                let binding = secure::binding(&s)?;
                auth::client(&mut s, secret, &binding).await?;
            }
            Ok::<_, std::io::Error>(s)
        };
        let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, shake)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
            .map_err(|e| CallError::Network(format!("{address}: handshake: {e}")))?;
        let (mut rd, wr) = tokio::io::split(s);
        let waiting: Arc<Waiters> = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let opened = Instant::now();
        let last_read = Arc::new(AtomicU64::new(0));
        let (w, c, lr) = (waiting.clone(), closed.clone(), last_read.clone());
        tokio::spawn(async move {
            while let Ok((id, body)) = read_frame(&mut rd).await {
                lr.store(opened.elapsed().as_millis() as u64, Relaxed);
                if let Some(tx) = lock(&w).remove(&id) {
                    let _ = tx.send(body);
                }
            }
            c.store(true, Relaxed);
            // Dropping the senders fails every call still waiting.
            lock(&w).clear();
        });
        Ok(Arc::new(Conn {
            writer: tokio::sync::Mutex::new(wr),
            waiting,
            closed,
            opened,
            last_read,
        }))
    }

    fn usable(&self) -> bool {
        if self.closed.load(Relaxed) {
            return false;
        }
        let silent = self
            .opened
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_read.load(Relaxed)));
        silent < SILENT_LIMIT || lock(&self.waiting).is_empty()
    }
}

/// The client side for one peer.
pub struct Peer {
    pub name: String,
    pub address: String,
    me: String,
    /// Two independent connections: Raft messages go over both (see `call_twice`).
    conns: [tokio::sync::Mutex<Option<Arc<Conn>>>; 2],
    next_id: AtomicU64,
    contacts: Arc<Contacts>,
    /// Last outcome, to log a change of reachability once rather than per call.
    reachable: AtomicBool,
    tls: Arc<PeerTls>,
    secret: Option<Arc<Secret>>,
}

impl Peer {
    pub fn new(
        me: &str,
        name: &str,
        address: &str,
        contacts: Arc<Contacts>,
        tls: Arc<PeerTls>,
        secret: Option<Arc<Secret>>,
    ) -> Self {
        Peer {
            tls,
            secret,
            name: name.to_string(),
            address: address.to_string(),
            me: me.to_string(),
            conns: [tokio::sync::Mutex::new(None), tokio::sync::Mutex::new(None)],
            next_id: AtomicU64::new(1),
            contacts,
            reachable: AtomicBool::new(true),
        }
    }

    /// One request, one answer, within `timeout` (connecting included).
    pub async fn call(&self, body: Request, timeout: Duration) -> Result<Response, CallError> {
        let frame = self.frame(body)?;
        let result = match tokio::time::timeout(timeout, self.exchange(0, &frame)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        self.note(&result);
        result
    }

    /// The same request over both connections; the first answer wins. Only for
    /// messages that are safe to receive twice (Raft's are). On a lossy link a
    /// lost segment stalls its TCP connection until it is retransmitted, longer
    /// than a heartbeat's timeout; the two connections rarely stall together,
    /// so the leader keeps hearing from the majority and does not lose its lease.
    pub async fn call_twice(
        &self,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let frame = self.frame(body)?;
        let both = async {
            let a = std::pin::pin!(self.exchange(0, &frame));
            let b = std::pin::pin!(self.exchange(1, &frame));
            match futures_util::future::select(a, b).await {
                futures_util::future::Either::Left((Ok(r), _))
                | futures_util::future::Either::Right((Ok(r), _)) => Ok(r),
                futures_util::future::Either::Left((Err(_), other))
                | futures_util::future::Either::Right((Err(_), other)) => other.await,
            }
        };
        let result = match tokio::time::timeout(timeout, both).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        self.note(&result);
        result
    }

    fn frame(&self, body: Request) -> Result<Vec<u8>, CallError> {
        serde_json::to_vec(&Envelope {
            from: self.me.clone(),
            body,
        })
        .map_err(|e| CallError::Network(e.to_string()))
    }

    fn note(&self, result: &Result<Response, CallError>) {
        match result {
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
    }

    /// Connection `n`, opened if needed.
    async fn connection(&self, n: usize) -> Result<Arc<Conn>, CallError> {
        let mut slot = self.conns[n].lock().await;
        if let Some(c) = slot.as_ref()
            && c.usable()
        {
            return Ok(c.clone());
        }
        let c = Conn::open(&self.address, &self.tls, self.secret.as_deref()).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn exchange(&self, n: usize, frame: &[u8]) -> Result<Response, CallError> {
        let conn = self.connection(n).await?;
        let id = self.next_id.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&conn.waiting).insert(id, tx);
        // Forget the id however this ends (answered, failed or timed out).
        struct Forget<'a>(&'a Waiters, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                lock(self.0).remove(&self.1);
            }
        }
        let _forget = Forget(&conn.waiting, id);
        let written = write_frame(&mut *conn.writer.lock().await, id, frame).await;
        if let Err(e) = written {
            conn.closed.store(true, Relaxed);
            return Err(CallError::Network(e.to_string()));
        }
        let bytes = rx
            .await
            .map_err(|_| CallError::Network("connection closed".into()))?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::Network(format!("bad answer: {e}")))
    }
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
    tls: Arc<PeerTls>,
    secret: Option<Arc<Secret>>,
    stop: CancellationToken,
) {
    // Failed handshakes are logged at most every 10 s: a scan must not flood the log.
    let last_warned = Arc::new(Mutex::new(None::<Instant>));
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
            let secret = secret.clone();
            let tls = tls.clone();
            let last_warned = last_warned.clone();
            tokio::spawn(async move {
                let shake = async {
                    let mut s = tls.accept(stream).await?;
                    if let Some(secret) = secret {
                        let binding = secure::binding(&s)?;
                        auth::server(&mut s, &secret, &binding).await?;
                    }
                    Ok::<_, std::io::Error>(s)
                };
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, shake)
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("handshake timed out")))
                {
                    Ok(s) => s,
                    Err(e) => {
                        let mut last = lock(&last_warned);
                        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            *last = Some(Instant::now());
                            tracing::warn!(%peer, error = %e, "refused a cluster connection");
                        }
                        return;
                    }
                };
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

/// A peer's request frame body (network input: decoded, never trusted).
pub(crate) fn decode_request(bytes: &[u8]) -> Result<Envelope<Request>, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The length field of a frame, checked: `None` for a length this transport
/// refuses.
pub(crate) fn frame_body_len(prefix: [u8; 4]) -> Option<usize> {
    let len = u32::from_be_bytes(prefix) as usize;
    (8..=MAX_FRAME).contains(&len).then(|| len - 8)
}

async fn connection<H: Handler>(
    stream: PeerStream,
    handler: Arc<H>,
    contacts: Arc<Contacts>,
) -> std::io::Result<()> {
    let (mut rd, wr) = tokio::io::split(stream);
    let writer = Arc::new(tokio::sync::Mutex::new(wr));
    loop {
        let (id, bytes) = match read_frame(&mut rd).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let env = match decode_request(&bytes) {
            Ok(e) => e,
            Err(e) => {
                let answer = serde_json::to_vec(&Response::Error(format!("bad request: {e}")))?;
                write_frame(&mut *writer.lock().await, id, &answer).await?;
                return Ok(());
            }
        };
        if !contacts.knows(&env.from) && !matches!(env.body, Request::Probe) {
            let answer = serde_json::to_vec(&Response::Error(format!(
                "`{}` is not a member of this cluster",
                env.from
            )))?;
            write_frame(&mut *writer.lock().await, id, &answer).await?;
            return Ok(());
        }
        contacts.touch(&env.from);
        // Each request in its own task: answers go back as they are ready.
        let (handler, writer) = (handler.clone(), writer.clone());
        tokio::spawn(async move {
            let answer = handler.handle(env.from, env.body).await;
            if let Ok(bytes) = serde_json::to_vec(&answer) {
                let _ = write_frame(&mut *writer.lock().await, id, &bytes).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_are_checked_before_use() {
        // Found by the peer_frame fuzz target: a length under 8 (no room for
        // the id) must be refused, not subtracted from.
        for bad in [0u32, 1, 7, MAX_FRAME as u32 + 1, u32::MAX] {
            assert_eq!(frame_body_len(bad.to_be_bytes()), None, "{bad}");
        }
        assert_eq!(frame_body_len(8u32.to_be_bytes()), Some(0));
        assert_eq!(frame_body_len(20u32.to_be_bytes()), Some(12));
    }
}
