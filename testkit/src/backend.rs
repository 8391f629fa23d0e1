//! Real HTTP backends in the test process, on 127.0.0.1 ephemeral ports.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

pub fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
}

impl Seen {
    /// Asserts that each named field came exactly once, with the value given
    /// (`what` says which request, in the message).
    #[track_caller]
    pub fn has_each_once(&self, fields: &[(&str, String)], what: &str) {
        for (name, want) in fields {
            let all: Vec<_> = self.headers.get_all(*name).iter().collect();
            assert_eq!(all, [want.as_str()], "{name} ({what}): {:?}", self.headers);
        }
    }
}

pub struct TestBackend {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    accept: Option<JoinSet<()>>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestBackend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests this backend saw for `path`.
    pub fn saw(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uri.ends_with(path))
            .count()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("backend saw no request")
    }

    /// Stops listening and drops every open connection (like a crashed server).
    pub fn stop(&mut self) {
        self.accept.take();
        self.conns.lock().unwrap().abort_all();
    }

    /// A backend that answers 200 with its name and echoes what it saw (JSON).
    pub async fn echo(name: &str) -> TestBackend {
        Self::echo_at(name, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn echo_at(name: &str, addr: SocketAddr) -> TestBackend {
        let n = name.to_string();
        Self::start_at(
            addr,
            Arc::new(move |req| Box::pin(echo_handler(n.clone(), req))),
        )
        .await
    }

    /// A backend the test can make fail: while the flag is false it answers 503,
    /// on `/health` only (`health_only`) or on every path.
    pub async fn switchable(
        name: &'static str,
        health_only: bool,
    ) -> (TestBackend, Arc<std::sync::atomic::AtomicBool>) {
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let u = up.clone();
        let be = Self::start(Arc::new(move |req: Request<Incoming>| {
            let u = u.clone();
            Box::pin(async move {
                let failing =
                    !u.load(Ordering::SeqCst) && (!health_only || req.uri().path() == "/health");
                Response::builder()
                    .status(if failing { 503 } else { 200 })
                    .header("x-backend", name)
                    .body(full(name))
                    .unwrap()
            })
        }))
        .await;
        (be, up)
    }

    /// A backend that answers every request after `delay`, with its name.
    pub async fn delayed(name: &str, delay: std::time::Duration) -> TestBackend {
        let n = name.to_string();
        Self::start(Arc::new(move |_req| {
            let n = n.clone();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Response::builder()
                    .header("x-backend", n.as_str())
                    .body(full(n))
                    .unwrap()
            })
        }))
        .await
    }

    pub async fn start(handler: Handler) -> TestBackend {
        Self::start_at("127.0.0.1:0".parse().unwrap(), handler).await
    }

    async fn start_at(addr: SocketAddr, handler: Handler) -> TestBackend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let mut accept = JoinSet::new();
        let (h, s, c) = (hits.clone(), seen.clone(), conns.clone());
        accept.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let (h, s) = (h.clone(), s.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    s.lock().unwrap().push(Seen {
                        uri: req.uri().to_string(),
                        version: req.version(),
                        headers: req.headers().clone(),
                    });
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                c.lock().unwrap().spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestBackend {
            addr,
            hits,
            seen,
            accept: Some(accept),
            conns,
        }
    }
}

async fn echo_handler(name: String, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::from(v.to_str().unwrap_or("")),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v = serde_json::json!({
        "backend": name,
        "method": method,
        "uri": uri,
        "headers": headers,
        "body_len": body.len(),
        "body_sum": checksum(&body),
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("x-backend", name)
        .header("content-type", "application/json")
        .body(full(v.to_string()))
        .unwrap()
}

/// FNV-1a over a byte stream, to compare large bodies end to end.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What a [`RawBackend`] does with one request.
pub enum RawReply {
    /// Writes these bytes as the whole answer and keeps the connection.
    Send(Vec<u8>),
    /// Writes these bytes, then closes the connection at once, though the
    /// answer did not say so (a keep-alive timeout that ran out right away).
    SendAndClose(Vec<u8>),
    /// Closes the connection without answering.
    Close,
}

/// A backend that writes responses byte for byte (for answers no HTTP library
/// would produce). It reads request heads, skips `Content-Length` bodies, and
/// asks `reply` with the head and the request's number on its connection (0 for
/// the first).
pub struct RawBackend {
    pub addr: SocketAddr,
    /// Requests read, on every connection.
    pub requests: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    _tasks: JoinSet<()>,
}

type RawFn = Arc<dyn Fn(&str, usize) -> RawReply + Send + Sync>;

impl RawBackend {
    pub async fn start(reply: impl Fn(&str, usize) -> RawReply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(AtomicUsize::new(0));
        let reply: RawFn = Arc::new(reply);
        let mut tasks = JoinSet::new();
        let (r, c) = (requests.clone(), conns.clone());
        tasks.spawn(async move {
            let mut per_conn = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                per_conn.spawn(raw_conn(stream, reply.clone(), r.clone()));
            }
        });
        RawBackend {
            addr,
            requests,
            conns,
            _tasks: tasks,
        }
    }
}

async fn raw_conn(mut s: tokio::net::TcpStream, reply: RawFn, requests: Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::new();
    let mut nth = 0;
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let body: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + body {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + body);
        requests.fetch_add(1, Ordering::SeqCst);
        match reply(&head, nth) {
            RawReply::Send(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            RawReply::SendAndClose(bytes) => {
                let _ = s.write_all(&bytes).await;
                return;
            }
            RawReply::Close => return,
        }
        nth += 1;
    }
}
