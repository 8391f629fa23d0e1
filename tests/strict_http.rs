//! Strict HTTP framing end to end (RFC 9110/9112/9113): Host rules, absolute
//! targets, HTTP/2 authority, transfer codings, request-target size, backend
//! responses framed by Transfer-Encoding, h2c upgrades, proxy-only headers, and
//! requests on pooled connections the backend had just closed.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use testkit::backend::{RawBackend, RawReply, TestBackend};
use testkit::{Fulcrum, TempDir, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two routes by host, `a.example` and `b.example`, each to its own pool.
fn by_host(a: SocketAddr, b: SocketAddr) -> String {
    format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\npools:\n  - name: a\n    backends: [\"{a}\"]\n  - name: b\n    backends: [\"{b}\"]\nroutes:\n  - {{ host: a.example, pool: a }}\n  - {{ host: b.example, pool: b }}\n"
    )
}

/// Sends raw bytes (the request should ask for `Connection: close`); returns
/// what came back.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    client::raw(addr, bytes, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_and_absolute_targets() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&by_host(a.addr, b.addr));
    let addr = f.listener(0);
    let refused: &[&[u8]] = &[
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: 127.0.0.1/evil@x\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a.example:80x\r\nConnection: close\r\n\r\n",
        b"GET http://user@b.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ];
    for (i, req) in refused.iter().enumerate() {
        let out = raw(addr, req).await;
        assert!(out.starts_with("HTTP/1.1 400"), "request {i} got: {out}");
    }
    assert_eq!(
        a.hits() + b.hits(),
        0,
        "a refused request reached a backend"
    );

    // An absolute-form target routes AND names the Host the backend sees.
    let out = raw(
        addr,
        b"GET http://b.example/abs HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(a.hits(), 0);
    let seen = b.last();
    assert_eq!(seen.headers.get_all("host").iter().count(), 1);
    assert_eq!(seen.headers["host"], "b.example");
    assert_eq!(seen.headers["x-forwarded-host"], "b.example");
    assert!(seen.uri.ends_with("/abs"), "{}", seen.uri);

    // A higher minor version is served as HTTP/1.1 (RFC 9112 2.3).
    let out = raw(
        addr,
        b"GET /v HTTP/1.2\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(a.last().version, http::Version::HTTP_11);

    // h2c is never switched to through the proxy: the backend sees a plain request.
    let out = raw(
        addr,
        b"GET /up HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = a.last();
    assert!(seen.uri.ends_with("/up"));
    for h in ["upgrade", "http2-settings"] {
        assert!(!seen.headers.contains_key(h), "{h} reached the backend");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_limits_and_codings() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&by_host(a.addr, b.addr));
    let addr = f.listener(0);
    let cases: &[(&[u8], &str)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 501",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 501",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 400",
        ),
    ];
    for (req, want) in cases {
        let out = raw(addr, req).await;
        assert!(
            out.starts_with(want),
            "{}: {out}",
            String::from_utf8_lossy(req)
        );
    }
    assert_eq!(a.hits(), 0);
    // A request target of 100 KB: 414, not 431.
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    let out = raw(addr, long.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 414"), "{out}");
    // Over the configured head limit but under 64 KiB: the guard's 414.
    let f2 = Fulcrum::start(&format!(
        "limits: {{ max_header_bytes: 4KiB }}\n{}",
        by_host(a.addr, b.addr)
    ));
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        "a".repeat(6000)
    );
    let out = raw(f2.listener(0), long.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 414"), "{out}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a.example\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(6000)
    );
    let out = raw(f2.listener(0), big.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(a.hits(), 0);
}

/// One HTTP/2 (h2c prior knowledge) request.
async fn h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> client::Resp {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("h2 request");
    let (parts, body) = resp.into_parts();
    client::Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("h2 body").to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_wins_and_padded_values_are_refused() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&by_host(a.addr, b.addr));
    let addr = f.listener(0);
    let r = h2(
        addr,
        Request::get("http://a.example/h2")
            .header("host", "b.example")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(b.hits(), 0);
    assert_eq!(a.last().headers.get_all("host").iter().count(), 1);
    assert_eq!(a.last().headers["host"], "a.example");
    let r = h2(
        addr,
        Request::get("http://a.example/pad")
            .header("x-pad", http::HeaderValue::from_static(" leading"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Two host fields, or an invalid one, are refused over HTTP/2 as well.
    for hosts in [&["a.example", "b.example"][..], &["a b"][..]] {
        let mut req = Request::get("http://a.example/two");
        for h in hosts {
            req = req.header("host", *h);
        }
        let r = h2(addr, req.body(Full::new(Bytes::new())).unwrap()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{hosts:?}");
    }
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_responses_framed_by_transfer_encoding() {
    let be = RawBackend::start(|head, _| {
        if head.starts_with("GET /both ") {
            RawReply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nProxy-Authenticate: Basic realm=\"inner\"\r\nProxy-Authentication-Info: x\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec())
        } else if head.starts_with("GET /bad ") {
            RawReply::Send(b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok".to_vec())
        } else {
            RawReply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
        }
    })
    .await;
    let f = Fulcrum::start(&format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\npools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: app }}\n",
        be.addr
    ));
    let addr = f.listener(0);
    for _ in 0..2 {
        let r = client::get(addr, "/both").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "hello");
        assert_ne!(r.header("content-length").as_deref(), Some("2"));
        assert!(r.header("proxy-authenticate").is_none());
        assert!(r.header("proxy-authentication-info").is_none());
    }
    let r = h2(
        addr,
        Request::get("http://app.example/both")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "hello");
    // A response that is not HTTP: 502 at once, not one try after another.
    let before = be.requests.load(SeqCst);
    let r = client::get(addr, "/bad").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.text().contains("invalid response"), "{}", r.text());
    assert_eq!(
        be.requests.load(SeqCst) - before,
        1,
        "the request was retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_not_forwarded_over_tls() {
    let be = TestBackend::echo("a").await;
    let dir = TempDir::new("strict-tls");
    let (crt, key) = testkit::tls::self_signed(&dir, &["a.example"]);
    let f = Fulcrum::start(&format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\n    tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}\npools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: app }}\n",
        crt.display(),
        key.display(),
        be.addr
    ));
    let mut s = testkit::tls::connect(f.listener(0), "a.example", &[b"http/1.1"]).await;
    s.write_all(b"GET /up HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = be.last();
    for h in ["upgrade", "http2-settings"] {
        assert!(!seen.headers.contains_key(h), "{h} reached the backend");
    }
}

/// Eight GETs through a backend that closes its kept-alive connections: every
/// one answered, and some went out on a reused (then closed) connection.
async fn gets_survive_closed_pooled_connections(addr: SocketAddr, be: &RawBackend, prefix: &str) {
    for i in 0..8 {
        let r = client::get(addr, &format!("{prefix}{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "GET #{i}: {}", r.text());
        assert_eq!(r.text(), "ok");
    }
    assert!(
        be.requests.load(SeqCst) > be.conns.load(SeqCst),
        "no request went out on a reused connection"
    );
}

/// A POST whose body is not kept for retries (read whole by the fast path
/// or streamed, the rule is the same), sent on a pooled connection the backend
/// then closes (`closed_posts` counts those), cannot be sent twice: 502.
async fn streamed_post_on_a_closed_pooled_connection_gets_502(
    addr: SocketAddr,
    closed_posts: &AtomicUsize,
) {
    for _ in 0..8 {
        assert_eq!(client::get(addr, "/prime").await.status, StatusCode::OK);
        let before = closed_posts.load(SeqCst);
        let r = client::send(
            addr,
            Request::post("/p")
                .header("host", "app.example")
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap(),
        )
        .await;
        if closed_posts.load(SeqCst) > before {
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
            return;
        }
    }
    panic!("no POST went out on a reused connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_on_a_closed_pooled_connection_is_sent_again() {
    // The backend answers the first request of each connection and closes the
    // connection when a second one arrives on it: what a backend whose
    // keep-alive ran out just as the proxy reused the connection looks like.
    // A request for /partial gets half a status line before the close instead.
    let closed_posts = Arc::new(AtomicUsize::new(0));
    let partials = Arc::new(AtomicUsize::new(0));
    let (cp, pa) = (closed_posts.clone(), partials.clone());
    let be = RawBackend::start(move |head, nth| {
        if nth == 0 {
            return RawReply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec());
        }
        if head.starts_with("POST ") {
            cp.fetch_add(1, SeqCst);
        }
        if head.starts_with("GET /partial ") {
            pa.fetch_add(1, SeqCst);
            return RawReply::SendAndClose(b"HTTP/1.1 200 O".to_vec());
        }
        RawReply::Close
    })
    .await;
    let f = Fulcrum::start(&format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\npools:\n  - name: app\n    backends: [\"{}\"]\n    retries: {{ try_duration: 0s }}\nroutes:\n  - {{ pool: app }}\n",
        be.addr
    ));
    let addr = f.listener(0);
    gets_survive_closed_pooled_connections(addr, &be, "/").await;
    // A POST whose body is not kept for retries cannot be sent twice: 502.
    streamed_post_on_a_closed_pooled_connection_gets_502(addr, &closed_posts).await;
    // Once the backend has begun to answer, nothing is sent again: 502.
    let mut checked = false;
    for _ in 0..8 {
        assert_eq!(client::get(addr, "/prime").await.status, StatusCode::OK);
        let before = partials.load(SeqCst);
        let r = client::get(addr, "/partial").await;
        if partials.load(SeqCst) > before {
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
            checked = true;
            break;
        }
    }
    assert!(checked, "no partial answer on a reused connection");

    // A POST whose body is held for retries is sent again too, without the
    // backend being blamed: one failure would take it out here.
    let f = Fulcrum::start(&format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\npools:\n  - name: app\n    backends: [\"{}\"]\n    retries: {{ try_duration: 5s, methods: [GET, POST] }}\n    passive_health: {{ max_fails: 1, fail_duration: 60s }}\nroutes:\n  - {{ pool: app }}\n",
        be.addr
    ));
    let addr = f.listener(0);
    let before = closed_posts.load(SeqCst);
    for i in 0..6 {
        let r = client::send(
            addr,
            Request::post(format!("/held{i}"))
                .header("host", "app.example")
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "POST #{i}: {}", r.text());
    }
    assert!(
        closed_posts.load(SeqCst) > before,
        "no held POST went out on a reused connection"
    );
    assert_eq!(
        f.stderr.count(|l| l.contains("backend taken out")),
        0,
        "the backend was blamed for closing an idle connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_after_each_answer_loses_no_request() {
    // A backend that closes every connection right after its answer: whether
    // the proxy sees the close before reusing the connection or only after
    // sending on it, every request gets its answer.
    let quick = RawBackend::start(|_, _| {
        RawReply::SendAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
    })
    .await;
    let f = Fulcrum::start(&format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\npools:\n  - name: app\n    backends: [\"{}\"]\n    retries: {{ try_duration: 0s }}\nroutes:\n  - {{ pool: app }}\n",
        quick.addr
    ));
    let addr = f.listener(0);
    for i in 0..30 {
        let r = client::get(addr, &format!("/q{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "GET #{i}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedged_pool_sends_a_lost_request_again_without_a_retry() {
    // The backend closes each connection when a second request arrives on it. In
    // a pool that hedges (after a delay no request here reaches) and retries, a
    // request lost on a reused connection goes out once more on a new one: not a
    // retry, not a hedge, and the backend is not blamed (one failure would take
    // it out here).
    let closed_posts = Arc::new(AtomicUsize::new(0));
    let cp = closed_posts.clone();
    let be = RawBackend::start(move |head, nth| {
        if nth == 0 {
            return RawReply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec());
        }
        if head.starts_with("POST ") {
            cp.fetch_add(1, SeqCst);
        }
        RawReply::Close
    })
    .await;
    let f = Fulcrum::start(&format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\npools:\n  - name: app\n    backends: [\"{}\"]\n    retries: {{ hedge_after: 30s }}\n    passive_health: {{ max_fails: 1, fail_duration: 60s }}\nroutes:\n  - {{ pool: app }}\n",
        be.addr
    ));
    let addr = f.listener(0);
    gets_survive_closed_pooled_connections(addr, &be, "/h").await;
    // A POST (not in the retried methods) streams its body and cannot be sent
    // twice: 502, and still no blame, so the next request is served.
    streamed_post_on_a_closed_pooled_connection_gets_502(addr, &closed_posts).await;
    assert_eq!(client::get(addr, "/after").await.status, StatusCode::OK);
    let metrics = client::get(f.admin(), "/metrics").await.text();
    for counted in [
        "fulcrum_retries_total{pool=\"app\"} 0",
        "fulcrum_hedges_total{pool=\"app\"} 0",
    ] {
        assert!(metrics.contains(counted), "{counted} in\n{metrics}");
    }
    assert_eq!(
        f.stderr.count(|l| l.contains("backend taken out")),
        0,
        "the backend was blamed for closing an idle connection"
    );
}

/// Answers to bodyless requests, framed every way HTTP/1.1 allows, reach the
/// client whole; the backend's connection is kept only when the framing says
/// where the answer ended, and answers with broken framing are 502s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answers_framed_every_way() {
    let be = RawBackend::start(|head, _| {
        let answer: &[u8] = if head.starts_with("GET /interim ") {
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        } else if head.starts_with("GET /chunked ") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: 1\r\n\r\n"
        } else if head.starts_with("GET /close ") {
            return RawReply::SendAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec());
        } else if head.starts_with("HEAD ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        } else if head.starts_with("GET /conflict ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"
        } else if head.starts_with("GET /fold ") {
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok"
        } else {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        };
        RawReply::Send(answer.to_vec())
    })
    .await;
    // One worker: every request finds the connection the last one left (each
    // worker keeps idle backend connections of its own).
    let f = Fulcrum::start_workers(
        &format!(
            "listeners:\n  - address: \"127.0.0.1:0\"\npools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: app }}\n",
            be.addr
        ),
        1,
    );
    let addr = f.listener(0);
    for (path, status, body) in [
        ("/interim", StatusCode::OK, "ok"),
        ("/chunked", StatusCode::OK, "hello!"),
        ("/none", StatusCode::NO_CONTENT, ""),
        ("/interim", StatusCode::OK, "ok"),
    ] {
        let r = client::get(addr, path).await;
        assert_eq!((r.status, r.text().as_str()), (status, body), "{path}");
    }
    let head = client::send(
        addr,
        Request::head("/h")
            .header("host", "app.example")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length").as_deref(), Some("5"));
    assert_eq!(be.conns.load(SeqCst), 1, "the connection was not reused");
    let r = client::get(addr, "/close").await;
    assert_eq!(r.text(), "until close");
    assert_eq!(
        client::get(addr, "/none").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        be.conns.load(SeqCst),
        2,
        "a close-delimited answer's connection was reused"
    );
    for path in ["/conflict", "/fold"] {
        let r = client::get(addr, path).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}");
        assert!(
            r.text().contains("invalid response"),
            "{path}: {}",
            r.text()
        );
    }
}

/// A head the fast path reads but cannot turn into a request (a target
/// httparse takes and the URI parser refuses) goes to hyper after a request
/// served on the same connection, its bytes replayed: hyper answers 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_does_not_convert_is_handed_over() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&by_host(a.addr, b.addr));
    let out = raw(
        f.listener(0),
        b"GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\n\
          GET /a<b HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    let (first, second) = out.split_once("\r\n\r\n").expect("two answers");
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("\"/1\""), "{out}");
    assert!(second.contains("HTTP/1.1 400 "), "{out}");
    assert_eq!(a.hits(), 1);
}

/// Plain bodiless requests are served by Fulcrum's own HTTP/1.1 loop; the
/// first request that is not (a body, a smuggling attempt) hands the rest of
/// the connection to the guarded path, which must see it as if it had served
/// the connection from that request on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_across_the_hand_over() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&by_host(a.addr, b.addr));
    let addr = f.listener(0);
    // Four requests in one write: two plain, one with a body (handed over),
    // one plain again (now on the guarded path).
    let out = raw(
        addr,
        b"GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\n\
          HEAD /2 HTTP/1.1\r\nHost: a.example\r\n\r\n\
          POST /3 HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\nabc\
          GET /4 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{out}");
    let uris: Vec<usize> = ["\"/1\"", "\"/3\"", "\"/4\""]
        .iter()
        .map(|u| out.find(u).unwrap_or_else(|| panic!("{u} missing: {out}")))
        .collect();
    assert!(uris.windows(2).all(|w| w[0] < w[1]), "out of order: {out}");
    assert!(out.contains("\"body_len\":3"), "{out}");
    assert_eq!(a.hits(), 4);

    // A smuggling attempt after a plain request is refused: the guard counts
    // requests from the hand-over.
    let out = raw(
        addr,
        b"GET /ok HTTP/1.1\r\nHost: a.example\r\n\r\n\
          POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    let (first, second) = out.split_once("\r\n\r\n").expect("two answers");
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(second.contains("HTTP/1.1 400 "), "{out}");
    assert_eq!(a.hits(), 5, "the smuggling attempt reached the backend");

    // A head split across writes, then the connection kept for a second one.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /sp").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"lit HTTP/1.1\r\nHost: b.example\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"/split\"") {
        let n = tokio::time::timeout(testkit::DEADLINE, s.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"GET /again HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(testkit::DEADLINE, s.read_to_end(&mut rest))
        .await
        .expect("not closed after Connection: close")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("connection: close\r\n") && rest.contains("\"/again\""),
        "{rest}"
    );
    assert_eq!(b.hits(), 2);
}

/// Reads one answer framed by `Content-Length` from `s` (after `got`, bytes
/// already read), returning its head and body and leaving what follows in `got`.
async fn read_answer(s: &mut tokio::net::TcpStream, got: &mut Vec<u8>) -> (String, String) {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("length"));
            if got.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string();
                got.drain(..end + 4 + len);
                return (head, body);
            }
        }
        let n = tokio::time::timeout(testkit::DEADLINE, s.read(&mut buf))
            .await
            .expect("no answer")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(got));
        got.extend_from_slice(&buf[..n]);
    }
}

/// What the echo backend said it received: body length and checksum.
fn echoed_body(answer: &str) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(answer).expect("echo JSON");
    (
        v["body_len"].as_u64().expect("body_len"),
        v["body_sum"].as_u64().expect("body_sum"),
    )
}

/// Small `Content-Length` bodies that come with their head are taken by the
/// HTTP/1.1 fast path and sent on with it; one that comes in pieces is
/// streamed through hyper. Either way the backend gets the exact bytes and
/// the connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bodies_on_one_kept_alive_connection() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&by_host(a.addr, b.addr));
    let addr = f.listener(0);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut got = Vec::new();
    let json = br#"{"name":"fulcrum","tags":["a","b"]}"#;
    let post = format!(
        "POST /api HTTP/1.1\r\nHost: a.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    );
    s.write_all(&[post.as_bytes(), json].concat())
        .await
        .unwrap();
    let (head, body) = read_answer(&mut s, &mut got).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        echoed_body(&body),
        (json.len() as u64, testkit::backend::checksum(json))
    );
    let seen = a.last();
    assert_eq!(seen.headers["content-length"], json.len().to_string());
    assert!(!seen.headers.contains_key("transfer-encoding"));
    // GETs after it on the same connection.
    for i in 0..2 {
        s.write_all(format!("GET /after{i} HTTP/1.1\r\nHost: a.example\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, body) = read_answer(&mut s, &mut got).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(body.contains(&format!("\"/after{i}\"")), "{body}");
    }
    // A body in three pieces, the head in two, then a PUT and a GET
    // pipelined behind a second body in one write.
    let form = b"first=one&second=two&third=three";
    let head = format!(
        "POST /form HTTP/1.1\r\nHost: b.example\r\nContent-Length: {}\r\n\r\n",
        form.len()
    );
    let (h1, h2) = head.as_bytes().split_at(10);
    for piece in [h1, h2, &form[..5], &form[5..20], &form[20..]] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (head, body) = read_answer(&mut s, &mut got).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        echoed_body(&body),
        (form.len() as u64, testkit::backend::checksum(form))
    );
    s.write_all(
        b"PUT /p HTTP/1.1\r\nHost: b.example\r\nContent-Length: 4\r\n\r\nabcd\
          GET /last HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let (_, body) = read_answer(&mut s, &mut got).await;
    assert_eq!(echoed_body(&body), (4, testkit::backend::checksum(b"abcd")));
    let (head, body) = read_answer(&mut s, &mut got).await;
    assert!(head.contains("connection: close"), "{head}");
    assert!(body.contains("\"/last\""), "{body}");
    assert_eq!((a.hits(), b.hits()), (3, 3));
}

/// A body that has not all come with its head is streamed, as every body is
/// (the connection goes on through hyper): a client that announces more than
/// it sends and stalls gets 408 and a closed connection, one that closes
/// half-way 400; lengths the fast path does not take are answered as before;
/// a body over its bound streams through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_the_fast_path_does_not_finish_or_take() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&format!(
        "limits: {{ body_read_timeout: 500ms }}\n{}",
        by_host(a.addr, b.addr)
    ));
    let addr = f.listener(0);
    // Three bytes of ten, after a request served on the same connection.
    let out = raw(
        addr,
        b"GET /first HTTP/1.1\r\nHost: a.example\r\n\r\n\
          POST /short HTTP/1.1\r\nHost: a.example\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    let (first, rest) = out.split_once("\r\n\r\n").expect("two answers");
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{out}");
    let rest = rest.split_once("HTTP/1.1 ").map_or("", |r| r.1);
    assert!(rest.starts_with("408 "), "{out}");
    assert!(rest.contains("connection: close\r\n"), "{out}");
    // The connection ends half-way through the body: nothing is forwarded.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /gone HTTP/1.1\r\nHost: a.example\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(testkit::DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("not closed")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
    // Both streamed to backend a as far as they came (whether the second
    // reached it before its client left is a race). The refused requests
    // below go to b, which has seen nothing yet.

    // Conflicting lengths, a length with a sign, and both framings: refused
    // exactly as before, by hyper and the guard.
    for req in [
        &b"POST / HTTP/1.1\r\nHost: b.example\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
        b"POST / HTTP/1.1\r\nHost: b.example\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: b.example\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: b.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    ] {
        let out = raw(addr, req).await;
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{}: {out}",
            String::from_utf8_lossy(req)
        );
    }
    assert_eq!(b.hits(), 0, "a refused request reached the backend");

    // Just under the bound and larger than it (neither comes whole with its
    // head; both stream through hyper): both arrive whole.
    for len in [60 * 1024, 200 * 1024] {
        let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let r = client::send(
            addr,
            Request::post("/big")
                .header("host", "b.example")
                .body(Full::new(Bytes::from(big.clone())))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(
            echoed_body(&r.text()),
            (big.len() as u64, testkit::backend::checksum(&big))
        );
    }
    // Over limits.max_body_bytes: 413 unread, as before.
    let f = Fulcrum::start(&format!(
        "limits: {{ max_body_bytes: 8 }}\n{}",
        by_host(a.addr, b.addr)
    ));
    let served = b.hits();
    let out = raw(
        f.listener(0),
        b"POST / HTTP/1.1\r\nHost: b.example\r\nContent-Length: 9\r\n\r\n123456789",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(
        b.hits(),
        served,
        "a body over the limit reached the backend"
    );
}

/// A backend's answer head written by the client side's own HTTP/1.1 path
/// from the backend's bytes (a route with nothing that needs a map) and from
/// a map (a route whose response rule edits nothing in this answer): the same
/// bytes, with the hop-by-hop fields, the proxy authentication fields and
/// the backend's request ID gone, repeated fields kept in order, and names
/// lowercased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_heads_spliced_from_the_backends_bytes_match_the_map() {
    let be = RawBackend::start(|_, _| {
        RawReply::Send(b"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nServer: raw\r\nX-Hop: 1\r\nSet-Cookie: a=1\r\nX-Request-Id: theirs\r\nKeep-Alive: timeout=5\r\nX-Dup: 1\r\nProxy-Authenticate: Basic\r\nx-dup: 2\r\nContent-Length: 2\r\n\r\nok".to_vec())
    })
    .await;
    let f = Fulcrum::start(&format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\npools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - path_prefix: /mapped\n    pool: app\n    headers:\n      response: {{ remove: [X-Absent] }}\n  - {{ pool: app }}\n",
        be.addr
    ));
    let addr = f.listener(0);
    // The request ID and the date differ from one answer to the next.
    let head_of = |out: &str| -> Vec<String> {
        let head = out.split("\r\n\r\n").next().unwrap_or_default();
        head.split("\r\n")
            .map(|l| match l.split_once(": ") {
                Some(("x-request-id", v)) if v != "theirs" => "x-request-id: ours".to_string(),
                Some(("date", _)) => "date: now".to_string(),
                _ => l.to_string(),
            })
            .collect()
    };
    let mut heads = Vec::new();
    for path in ["/spliced", "/mapped"] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n");
        let out = raw(addr, request.as_bytes()).await;
        assert!(out.ends_with("\r\n\r\nok"), "{out}");
        heads.push(head_of(&out));
    }
    assert_eq!(heads[0], heads[1]);
    // Each removal moved the last name into its place, as a map does.
    assert_eq!(
        heads[0],
        [
            "HTTP/1.1 200 OK",
            "x-dup: 1",
            "x-dup: 2",
            "server: raw",
            "content-length: 2",
            "set-cookie: a=1",
            "x-request-id: ours",
            "connection: close",
            "date: now",
        ]
    );
}
