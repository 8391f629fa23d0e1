//! End-to-end tests of what protects the backends: a slow client is never
//! blamed on a backend, a stalled body gets 408, buffered bodies reach the
//! backend whole, rate limits, and the per-client connection cap. Raw sockets
//! on loopback against the real binary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use testkit::backend::TestBackend;
use testkit::client;
use testkit::{DEADLINE, Fulcrum, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One listener, one pool `app` (with `pool_extra` lines) behind one route
/// (with `route_extra` lines), and the test admin API.
fn config(backends: &[SocketAddr], top: &str, pool_extra: &str, route_extra: &str) -> String {
    let backends: String = backends
        .iter()
        .map(|b| format!("      - address: \"{b}\"\n"))
        .collect();
    format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\n{top}pools:\n  - name: app\n    backends:\n{backends}{pool_extra}routes:\n  - name: main\n    path_prefix: /\n    pool: app\n{route_extra}"
    )
}

/// Reads one HTTP/1.1 response head (and whatever follows in the same reads)
/// until the end of the head, the connection's end, or DEADLINE.
async fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + DEADLINE;
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// A kept-alive request on `app`.
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n";

/// `n` connections, each served one request and then held open.
async fn hold_served(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(GET).await.expect("request");
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(s);
    }
    held
}

/// Sends `body` one byte at a time, `gap` apart; stops early if the proxy
/// closed the connection (the answer then tells why).
async fn trickle(s: &mut TcpStream, body: &[u8], gap: Duration) {
    for b in body {
        tokio::time::sleep(gap).await;
        if s.write_all(&[*b]).await.is_err() {
            return;
        }
    }
}

fn post_head(len: usize) -> String {
    format!("POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: {len}\r\n\r\n")
}

/// The pool's only backend as the admin API shows it.
async fn backend_state(f: &Fulcrum) -> serde_json::Value {
    let r = client::get(f.admin(), "/api/v1/pools/app").await;
    r.json()["backends"][0].clone()
}

async fn metric(f: &Fulcrum, name: &str) -> f64 {
    let text = client::get(f.admin(), "/metrics").await.text();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_the_backends_fault() {
    let backend = TestBackend::echo("b1").await;
    // response_header is far shorter than the upload: it must run from the
    // body's end, and nothing here may count against the backend.
    let f = Fulcrum::start(&config(
        &[backend.addr],
        "",
        "    timeouts: { response_header: 400ms }\n    passive_health: { max_fails: 1, fail_duration: 60s }\n    retries: { try_duration: 0s }\n",
        "",
    ));
    let addr = f.listener(0);
    let body = b"0123456789abcdef";
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(post_head(body.len()).as_bytes())
        .await
        .expect("head");
    trickle(&mut s, body, Duration::from_millis(200)).await;
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let b = backend_state(&f).await;
    assert_eq!(b["state"], "up", "{b}");
    assert_eq!(b["failures"], 0, "{b}");
    // The timeout still holds a backend that is slow itself to answer.
    drop(s);
    let slow = TestBackend::delayed("slow", Duration::from_secs(3)).await;
    let f2 = Fulcrum::start(&config(
        &[slow.addr],
        "",
        "    timeouts: { response_header: 300ms }\n    retries: { try_duration: 0s }\n",
        "",
    ));
    let mut s = TcpStream::connect(f2.listener(0)).await.expect("connect");
    s.write_all(format!("{}ab", post_head(2)).as_bytes())
        .await
        .expect("request");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_the_backend_is_not_blamed() {
    let backend = TestBackend::echo("b1").await;
    let f = Fulcrum::start(&config(
        &[backend.addr],
        "limits: { body_read_timeout: 300ms }\n",
        "    passive_health: { max_fails: 1, fail_duration: 60s }\n",
        "",
    ));
    let mut s = TcpStream::connect(f.listener(0)).await.expect("connect");
    // Two bytes of ten, then nothing.
    s.write_all(format!("{}ab", post_head(10)).as_bytes())
        .await
        .expect("request");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let b = backend_state(&f).await;
    assert_eq!(b["state"], "up", "{b}");
    assert_eq!(b["failures"], 0, "{b}");
    assert_eq!(metric(&f, "fulcrum_request_body_timeouts_total").await, 1.0);
    // Buffered bodies are held to the same clock, and never reach the backend.
    let before = backend.hits();
    let f = Fulcrum::start(&config(
        &[backend.addr],
        "limits: { body_read_timeout: 300ms }\n",
        "",
        "    buffer_request_body: 1MiB\n",
    ));
    let mut s = TcpStream::connect(f.listener(0)).await.expect("connect");
    s.write_all(format!("{}ab", post_head(10)).as_bytes())
        .await
        .expect("request");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(backend.hits(), before);
}

/// A backend on a raw socket: notes when the first byte of a request reached
/// it, reads the head and `Content-Length` bytes, answers 200 with the body's
/// length.
async fn first_byte_backend() -> (SocketAddr, tokio::sync::oneshot::Receiver<(Instant, usize)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut first = None;
        loop {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "proxy closed early");
            first.get_or_insert_with(Instant::now);
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().expect("length"))
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
                        len.to_string().len(),
                        len
                    );
                    s.write_all(reply.as_bytes()).await.expect("reply");
                    let _ = tx.send((first.expect("first byte"), len));
                    return;
                }
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_body_reaches_the_backend_only_when_whole() {
    let (backend, seen) = first_byte_backend().await;
    let f = Fulcrum::start(&config(
        &[backend],
        "",
        "",
        "    buffer_request_body: 64KiB\n",
    ));
    let body = b"slow-upload";
    let mut s = TcpStream::connect(f.listener(0)).await.expect("connect");
    s.write_all(post_head(body.len()).as_bytes())
        .await
        .expect("head");
    trickle(&mut s, body, Duration::from_millis(100)).await;
    let last_byte_sent = Instant::now();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (first_byte_at_backend, len) = seen.await.expect("backend saw the request");
    assert_eq!(len, body.len());
    // Streaming would have sent the head upstream a second before the last byte.
    assert!(
        first_byte_at_backend >= last_byte_sent - Duration::from_millis(50),
        "the backend saw the request {:?} before the client finished",
        last_byte_sent - first_byte_at_backend
    );
    // A body longer than the bound is held up to it, then streamed: it arrives whole.
    let echo = TestBackend::echo("b1").await;
    let f = Fulcrum::start(&config(
        &[echo.addr],
        "",
        "",
        "    buffer_request_body: 1KiB\n",
    ));
    let big = vec![b'x'; 100_000];
    let r = client::send(
        f.listener(0),
        http::Request::post("/big")
            .header("host", "app")
            .body(http_body_util::Full::new(bytes::Bytes::from(big.clone())))
            .expect("request"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 100_000);
    assert_eq!(r.json()["body_sum"], testkit::backend::checksum(&big));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after_per_key() {
    let backend = TestBackend::echo("b1").await;
    let f = Fulcrum::start(&config(
        &[backend.addr],
        "",
        "",
        "    rate_limit: { requests: 1, per: 1h, burst: 3, key: \"header:X-Key\" }\n",
    ));
    let addr = f.listener(0);
    let get = |key: &'static str| {
        client::send(
            addr,
            http::Request::get("/")
                .header("host", "app")
                .header("x-key", key)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
    };
    for _ in 0..3 {
        assert_eq!(get("alice").await.status, 200);
    }
    let r = get("alice").await;
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(get("bob").await.status, 200);
    assert_eq!(backend.hits(), 4);
    assert_eq!(
        metric(&f, "fulcrum_rate_limited_total{route=\"main\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_at_most_its_share_of_connections() {
    let backend = TestBackend::echo("b1").await;
    let f = Fulcrum::start(&config(
        &[backend.addr],
        "limits: { max_connections_per_client: 2 }\n",
        "",
        "",
    ));
    let addr = f.listener(0);
    let mut held = hold_served(addr, 2).await;
    // The third is closed without an answer.
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let _ = third.write_all(GET).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(DEADLINE, third.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(metric(&f, "fulcrum_connections_refused_total").await >= 1.0);
    // Once one leaves, there is room again.
    held.pop();
    eventually("a connection fits again", || async {
        let r = client::try_send(
            addr,
            http::Request::get("/")
                .header("host", "app")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .ok()?;
        (r.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait_for_room() {
    let backend = TestBackend::echo("b1").await;
    let f = Fulcrum::start(&config(
        &[backend.addr],
        "limits: { max_connections: 2 }\n",
        "",
        "",
    ));
    let addr = f.listener(0);
    let mut held = hold_served(addr, 2).await;
    // The third waits in the kernel's backlog: connected, but not served while
    // both kept-alive connections hold the listener's places (nor closed).
    let mut third = TcpStream::connect(addr).await.expect("connect");
    third.write_all(GET).await.expect("request");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "served or closed beyond max_connections: {early:?}"
    );
    // Once one leaves, the waiting connection is taken and answered.
    held.pop();
    let head = tokio::time::timeout(DEADLINE, read_head(&mut third))
        .await
        .expect("the waiting connection is served once there is room");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
