//! End-to-end tests of the request path: the real binary between real clients and
//! real backends on loopback.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use std::sync::Arc;
use std::time::Duration;
use testkit::backend::{Body, TestBackend, checksum, full};
use testkit::client::{self, Resp};
use testkit::{Fulcrum, ws};

/// A config with one listener on an ephemeral port and no admin API.
fn config(body: &str) -> String {
    format!("listeners:\n  - address: \"127.0.0.1:0\"\n{body}")
}

fn one_pool(addrs: &[&TestBackend], extra_pool: &str, extra_route: &str) -> String {
    let backends: String = addrs
        .iter()
        .map(|b| format!("      - address: \"{}\"\n", b.addr))
        .collect();
    config(&format!(
        "pools:\n  - name: app\n    backends:\n{backends}{extra_pool}routes:\n  - path_prefix: /\n    pool: app\n{extra_route}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_precedence_ignores_file_order() {
    let names = [
        "any",
        "any-api",
        "wild",
        "exact",
        "exact-admin",
        "deep-wild",
    ];
    let mut backends = Vec::new();
    for n in names {
        backends.push(TestBackend::echo(n).await);
    }
    let pools: String = names
        .iter()
        .zip(&backends)
        .map(|(n, b)| format!("  - name: {n}\n    backends: [\"{}\"]\n", b.addr))
        .collect();
    // Generic routes first: file order must not matter.
    let routes = "routes:
  - { path_prefix: /, pool: any }
  - { path_prefix: /api, pool: any-api }
  - { host: \"*.example.com\", pool: wild }
  - { host: \"*.eu.example.com\", pool: deep-wild }
  - { host: app.example.com, pool: exact }
  - { host: app.example.com, path_prefix: /admin, pool: exact-admin }
";
    let f = Fulcrum::start(&config(&format!("pools:\n{pools}{routes}")));
    let addr = f.listener(0);
    let cases = [
        ("app.example.com", "/admin/users", "exact-admin"),
        ("APP.example.com:8080", "/admin", "exact-admin"),
        ("app.example.com", "/api/x", "exact"),
        ("www.example.com", "/api/x", "wild"),
        ("a.b.example.com", "/", "wild"),
        ("x.eu.example.com", "/", "deep-wild"),
        ("example.com", "/api/v1", "any-api"),
        ("other.org", "/apix", "any-api"),
        ("other.org", "/", "any"),
    ];
    for (host, path, want) in cases {
        let r = client::get_host(addr, host, path).await;
        assert_eq!(r.status, StatusCode::OK, "{host}{path}");
        assert_eq!(r.header("x-backend").as_deref(), Some(want), "{host}{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_strip_prefix() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&config(&format!(
        "pools:\n  - name: app\n    backends: [\"{}\", \"http://{}\"]\nroutes:\n  - path_prefix: /svc\n    strip_prefix: true\n    pool: app\n",
        a.addr, b.addr
    )));
    let addr = f.listener(0);
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = client::get(addr, "/svc/items?id=7").await;
        assert_eq!(r.json()["uri"], "/items?id=7");
        seen.push(r.header("x-backend").unwrap());
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "not alternating: {seen:?}"
    );
    assert_eq!(client::get(addr, "/svc").await.json()["uri"], "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_hop_by_hop_and_forwarding() {
    let be = TestBackend::start(Arc::new(|_req| {
        Box::pin(async {
            Response::builder()
                .header("x-backend", "hdr")
                .header("keep-alive", "timeout=5")
                .header("connection", "x-resp-hop")
                .header("x-resp-hop", "secret")
                .header("server", "leaky/1.0")
                .body(full("ok"))
                .unwrap()
        })
    }))
    .await;
    let f = Fulcrum::start(&one_pool(
        &[&be],
        "",
        "    headers:
      request: { set: { X-Added: one, X-Overwrite: two }, remove: [X-Remove-Me] }
      response: { set: { X-Frame-Options: DENY }, remove: [Server] }
",
    ));
    let addr = f.listener(0);
    let r = client::send(
        addr,
        Request::get("/p")
            .header("host", "shop.example")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("proxy-connection", "keep-alive")
            .header("x-remove-me", "1")
            .header("x-overwrite", "client")
            .header("x-forwarded-for", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = be.last();
    let h = &seen.headers;
    for gone in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-connection",
        "connection",
        "x-remove-me",
    ] {
        assert!(
            !h.contains_key(gone),
            "backend saw hop-by-hop/removed header {gone}: {h:?}"
        );
    }
    assert_eq!(h["x-added"], "one");
    assert_eq!(h["x-overwrite"], "two");
    // Not a trusted proxy: the client's forwarding headers are replaced.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http;host=shop.example");
    assert_eq!(h["via"], "1.1 fulcrum");
    assert_eq!(h["host"], "shop.example");
    assert_eq!(
        h["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    // Response side.
    for gone in ["keep-alive", "x-resp-hop", "server"] {
        assert!(
            !r.headers.contains_key(gone),
            "client saw {gone}: {:?}",
            r.headers
        );
    }
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
}

/// The phases skip their lookups when the head lacks a field: each rule still
/// applies when the field is there, on the HTTP/1.1 fast path. A `Connection`
/// naming `Host` removes it (the backend gets the host the request was routed
/// by again), a lone `Proxy-Authorization` goes, the client's `Via` is
/// extended, its request ID kept, and a request without any of them gets the
/// proxy's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_apply_when_the_field_is_there() {
    let be = TestBackend::echo("be").await;
    let f = Fulcrum::start(&one_pool(&[&be], "", ""));
    let addr = f.listener(0);
    let r = client::send(
        addr,
        Request::get("/facts")
            .header("host", "shop.example")
            .header("connection", "host, x-hop")
            .header("x-hop", "1")
            .header("proxy-authorization", "Basic eDp5")
            .header("via", "1.0 edge")
            .header("x-request-id", "client-id-1")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-request-id").as_deref(), Some("client-id-1"));
    let seen = be.last();
    let h = &seen.headers;
    for gone in ["connection", "x-hop", "proxy-authorization"] {
        assert!(!h.contains_key(gone), "backend saw {gone}: {h:?}");
    }
    assert_eq!(h.get_all("host").iter().count(), 1, "{h:?}");
    assert_eq!(h["host"], "shop.example");
    assert_eq!(h["via"], "1.0 edge, 1.1 fulcrum");
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(h["x-forwarded-host"], "shop.example");

    let r = client::send(
        addr,
        Request::get("/facts")
            .header("host", "shop.example")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.header("x-request-id").expect("a request ID");
    assert_eq!(id.len(), 32);
    let seen = be.last();
    assert_eq!(seen.headers["x-request-id"], id.as_str());
    assert_eq!(seen.headers["via"], "1.1 fulcrum");
    assert_eq!(seen.headers["host"], "shop.example");
}

/// A request that carries none of the fields the proxy adds, on a route
/// without header edits: each added field arrives once, with the same values
/// as when they are inserted among the request's own, to a backend of our
/// own (HTTP/1.1, where they are written into the head) and through hyper's
/// client (h2c, where they are inserted into the map).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_of_a_plain_request() {
    let be = TestBackend::echo("be").await;
    let f = Fulcrum::start(&config(&format!(
        "pools:\n  - name: h1\n    backends: [\"{0}\"]\n  - name: h2\n    backends: [\"h2c://{0}\"]\nroutes:\n  - {{ path_prefix: /, pool: h1 }}\n  - {{ path_prefix: /two, pool: h2 }}\n",
        be.addr
    )));
    let addr = f.listener(0);
    for (host, path) in [
        ("shop.example", "/plain?q=1"),
        ("shop.example:8080", "/plain?q=1"),
        ("shop.example", "/two/x"),
        ("shop.example:8080", "/two/x"),
    ] {
        let r = client::get_host(addr, host, path).await;
        assert_eq!(r.status, StatusCode::OK);
        let seen = be.last();
        let h = &seen.headers;
        assert!(seen.uri.ends_with(path), "{}", seen.uri);
        if seen.version == http::Version::HTTP_11 {
            assert_eq!(h.get_all("host").iter().collect::<Vec<_>>(), [host]);
        }
        let quoted = if host.contains(':') {
            format!("\"{host}\"")
        } else {
            host.to_string()
        };
        seen.has_each_once(
            &[
                ("x-forwarded-for", "127.0.0.1".to_string()),
                ("x-forwarded-proto", "http".to_string()),
                ("x-forwarded-host", host.to_string()),
                (
                    "forwarded",
                    format!("for=127.0.0.1;proto=http;host={quoted}"),
                ),
                ("via", "1.1 fulcrum".to_string()),
                ("x-request-id", r.header("x-request-id").expect("an ID")),
            ],
            path,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_of_a_small_post() {
    // A body the fast path reads whole, with its length stated: its head is
    // encoded once with the proxy's fields, as a bodiless request's is.
    let be = TestBackend::echo("be").await;
    let f = Fulcrum::start(&config(&format!(
        "pools:\n  - name: h1\n    backends: [\"{0}\"]\n  - name: h2\n    backends: [\"h2c://{0}\"]\nroutes:\n  - {{ path_prefix: /, pool: h1 }}\n  - {{ path_prefix: /two, pool: h2 }}\n",
        be.addr
    )));
    let data = Bytes::from_static(b"name=value&other=1");
    for (method, path) in [("POST", "/form"), ("PUT", "/two/form"), ("POST", "/form")] {
        let r = client::send(
            f.listener(0),
            Request::builder()
                .method(method)
                .uri(path)
                .header("host", "shop.example")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(data.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["body_len"], data.len());
        assert_eq!(r.json()["body_sum"], checksum(&data));
        let seen = be.last();
        seen.has_each_once(
            &[
                ("x-forwarded-for", "127.0.0.1".to_string()),
                ("x-forwarded-proto", "http".to_string()),
                ("x-forwarded-host", "shop.example".to_string()),
                (
                    "forwarded",
                    "for=127.0.0.1;proto=http;host=shop.example".to_string(),
                ),
                ("via", "1.1 fulcrum".to_string()),
                ("x-request-id", r.header("x-request-id").expect("an ID")),
                ("content-length", data.len().to_string()),
            ],
            path,
        );
    }
}

/// A body the fast path read whole is counted in the access log though the
/// head holds none of the log's details (no User-Agent or Referer, plain
/// HTTP): the log being on is what asks for the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_counts_a_small_body_without_details() {
    let be = TestBackend::echo("be").await;
    let f = Fulcrum::start(&one_pool(&[&be], "", ""));
    let data = Bytes::from_static(b"name=value&other=1");
    let r = client::send(
        f.listener(0),
        Request::post("/form")
            .header("host", "shop.example")
            .body(Full::new(data.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body_len"], data.len());
    assert!(r.json()["headers"].get("user-agent").is_none());
    let id = r.header("x-request-id").expect("an ID");
    let line = f.stderr.wait_for("access log line", |l| {
        l.contains(&format!("\"request_id\":\"{id}\""))
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["bytes_in"], data.len(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_keep_and_extend_forwarding() {
    let be = TestBackend::echo("t").await;
    let f = Fulcrum::start(&format!(
        "trusted_proxies: [\"127.0.0.0/8\"]\n{}",
        one_pool(&[&be], "", "")
    ));
    let r = client::send(
        f.listener(0),
        Request::get("/")
            .header("host", "a.example")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "public.example")
            .header("forwarded", "for=203.0.113.9;proto=https")
            .header("via", "1.1 edge")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "public.example");
    assert_eq!(
        h["forwarded"],
        "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=a.example"
    );
    assert_eq!(h["via"], "1.1 edge, 1.1 fulcrum");
    // The access log names the real client, not the proxy in front.
    let line = f
        .stderr
        .wait_for("access log", |l| l.contains("\"request_id\""));
    assert!(line.contains("\"client\":\"203.0.113.9\""), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_kept_or_generated_both_ways_and_logged() {
    let be = TestBackend::echo("id").await;
    let f = Fulcrum::start(&one_pool(&[&be], "", ""));
    let addr = f.listener(0);
    let r = client::send(
        addr,
        Request::get("/")
            .header("host", "x")
            .header("x-request-id", "client-chosen-42")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        r.header("x-request-id").as_deref(),
        Some("client-chosen-42")
    );
    assert_eq!(r.json()["headers"]["x-request-id"], "client-chosen-42");

    let r = client::get(addr, "/").await;
    let id = r.header("x-request-id").expect("generated id");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(r.json()["headers"]["x-request-id"], id.as_str());

    for wanted in ["client-chosen-42", id.as_str()] {
        let line = f.stderr.wait_for("access log line", |l| {
            l.contains(&format!("\"request_id\":\"{wanted}\""))
        });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["route"], "*/");
        assert_eq!(v["pool"], "app");
        assert_eq!(v["backend"], be.addr.to_string());
        assert_eq!(v["attempts"], 1);
        for k in [
            "time",
            "client",
            "method",
            "host",
            "path",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "upstream_ms",
        ] {
            assert!(v.get(k).is_some(), "access log lacks {k}: {line}");
        }
    }
}

/// The access log's times hold together: the time to the backend's answer
/// covers the backend's wait before answering, and the request's duration
/// covers that (the first attempt starts at the request's start, and the
/// answer's time is the one its backend is stamped with).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_times_cover_the_backends_wait() {
    let be = TestBackend::start(Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Response::new(full("late"))
        })
    }))
    .await;
    let f = Fulcrum::start(&one_pool(&[&be], "", ""));
    let r = client::get(f.listener(0), "/").await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.header("x-request-id").expect("request id");
    let line = f.stderr.wait_for("access log line", |l| {
        l.contains(&format!("\"request_id\":\"{id}\""))
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let upstream = v["upstream_ms"].as_f64().expect("upstream_ms");
    let duration = v["duration_ms"].as_f64().expect("duration_ms");
    assert!(
        upstream >= 150.0,
        "upstream_ms {upstream} < the backend's wait: {line}"
    );
    assert!(
        duration >= upstream,
        "duration_ms {duration} < upstream_ms: {line}"
    );
}

/// Streams its body: "first" at once, "second" only when the test says so.
fn gated_stream(gate: Arc<tokio::sync::Notify>) -> testkit::backend::Handler {
    Arc::new(move |_req| {
        let gate = gate.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
            >(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first")))).await;
                gate.notified().await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                    .await;
            });
            let body: Body = BodyExt::boxed(StreamBody::new(tokio_stream_from(rx)));
            Response::new(body)
        })
    })
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_streams_before_backend_finishes() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let be = TestBackend::start(gated_stream(gate.clone())).await;
    let f = Fulcrum::start(&one_pool(&[&be], "", ""));
    let stream = tokio::net::TcpStream::connect(f.listener(0)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("/")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    // The backend has not finished (it waits for the gate): the first chunk must
    // already be here, or the proxy is buffering.
    let first = tokio::time::timeout(testkit::DEADLINE, body.frame())
        .await
        .expect("first chunk never arrived")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_streams_to_backend() {
    // The backend reports its first chunk before the client sends the second.
    let (got_first_tx, got_first_rx) = tokio::sync::oneshot::channel::<Bytes>();
    let got_first_tx = Arc::new(std::sync::Mutex::new(Some(got_first_tx)));
    let be = TestBackend::start(Arc::new(move |req: Request<Incoming>| {
        let tx = got_first_tx.clone();
        Box::pin(async move {
            let mut body = req.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(first.clone());
            }
            let rest = body.collect().await.unwrap().to_bytes();
            Response::new(full(format!("{}+{}", first.len(), rest.len())))
        })
    }))
    .await;
    let f = Fulcrum::start(&one_pool(&[&be], "", ""));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(2);
    let stream = tokio::net::TcpStream::connect(f.listener(0)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/up")
        .header("host", "x")
        .body(StreamBody::new(tokio_stream_from(rx)))
        .unwrap();
    let resp = tokio::spawn(async move { sender.send_request(req).await.unwrap() });
    tx.send(Ok(Frame::data(Bytes::from(vec![b'a'; 1000]))))
        .await
        .unwrap();
    let first = tokio::time::timeout(testkit::DEADLINE, got_first_rx)
        .await
        .expect("backend never saw the first chunk")
        .unwrap();
    assert!(!first.is_empty());
    tx.send(Ok(Frame::data(Bytes::from(vec![b'b'; 500]))))
        .await
        .unwrap();
    drop(tx);
    let resp = resp.await.unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let (a, b) = text.split_once('+').unwrap();
    assert_eq!(
        a.parse::<usize>().unwrap() + b.parse::<usize>().unwrap(),
        1500
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabyte_upload_arrives_intact() {
    let be = TestBackend::echo("big").await;
    let f = Fulcrum::start(&one_pool(&[&be], "", ""));
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let sum = checksum(&data);
    // With Content-Length...
    let r = client::send(
        f.listener(0),
        Request::put("/blob")
            .header("host", "x")
            .body(Full::new(Bytes::from(data.clone())))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body_len"], 20 * 1024 * 1024);
    assert_eq!(r.json()["body_sum"], sum);
    // ...and chunked (streamed in 1 MiB pieces).
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = data
        .chunks(1 << 20)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let stream = tokio::net::TcpStream::connect(f.listener(0)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let resp = sender
        .send_request(
            Request::post("/blob")
                .header("host", "x")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["body_len"], 20 * 1024 * 1024);
    assert_eq!(v["body_sum"], sum);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo() {
    let be = TestBackend::start(Arc::new(|req| Box::pin(ws::echo_upgrade(req)))).await;
    let f = Fulcrum::start(&one_pool(&[&be], "", ""));
    let mut c = ws::WsClient::connect(f.listener(0), "/chat").await;
    assert!(
        c.response_head
            .to_ascii_lowercase()
            .contains("upgrade: websocket"),
        "{}",
        c.response_head
    );
    assert_eq!(c.echo("hello").await, "hello");
    assert_eq!(c.echo(&"x".repeat(300)).await, "x".repeat(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_are_rejected() {
    let be = TestBackend::echo("victim").await;
    let f = Fulcrum::start(&one_pool(&[&be], "", ""));
    let addr = f.listener(0);
    let attacks: &[&[u8]] = &[
        // CL.TE
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // TE.CL
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
        // Two different lengths
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // Obfuscated encodings
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        // TE on HTTP/1.0
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for (i, attack) in attacks.iter().enumerate() {
        let before = be.hits();
        let out = client::raw(addr, attack, Duration::from_secs(5)).await;
        assert!(
            out.starts_with("HTTP/1.1 400") || out.starts_with("HTTP/1.0 400"),
            "attack {i} got: {out}"
        );
        assert!(
            !out.contains("HTTP/1.1 200"),
            "attack {i} reached a backend: {out}"
        );
        assert_eq!(be.hits(), before, "attack {i}: the backend saw a request");
    }
    // A request smuggled after a valid pipelined one is not served either.
    let out = client::raw(
        addr,
        b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("HTTP/1.1 400"), "{out}");
    assert!(be.last().uri.ends_with("/ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_431_413_400() {
    let be = TestBackend::echo("limits").await;
    let f = Fulcrum::start(&format!(
        "limits: {{ max_header_bytes: 4KiB, max_body_bytes: 1KiB }}\n{}",
        one_pool(&[&be], "", "")
    ));
    let addr = f.listener(0);
    let big = "a".repeat(8000);
    let r = client::send(
        addr,
        Request::get("/")
            .header("host", "x")
            .header("x-big", big)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let r = client::send(
        addr,
        Request::post("/")
            .header("host", "x")
            .body(Full::new(Bytes::from(vec![0u8; 2000])))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("request-id:"), "{}", r.text());
    assert_eq!(be.hits(), 0);

    // Chunked: the limit is enforced while streaming.
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..8)
        .map(|_| Ok(Frame::data(Bytes::from(vec![1u8; 512]))))
        .collect();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::post("/")
                .header("host", "x")
                .body(StreamBody::new(futures_util::stream::iter(chunks)))
                .unwrap(),
        )
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => panic!("expected 413, got {e}"),
    }

    let out = client::raw(addr, b"THIS IS NOT HTTP\r\n\r\n", Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let r = client::get(addr, "/small").await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn expect_error(addr: std::net::SocketAddr, host: &str, status: StatusCode) -> Resp {
    let r = client::get_host(addr, host, "/").await;
    assert_eq!(r.status, status, "{}", r.text());
    let id = r
        .header("x-request-id")
        .expect("error carries a request id");
    assert!(
        r.text().contains(&id),
        "error body lacks the request id: {}",
        r.text()
    );
    assert!(r.body.len() < 200, "error body is not short");
    r
}

/// The wait for an answer's head on a pooled connection is bounded by a
/// timer the connection keeps across requests: one armed by an earlier,
/// fast exchange (fired while idle, or still pending) still ends a slow one
/// with a 504, and the fast ones around it are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_on_a_reused_connection() {
    let be = TestBackend::start(Arc::new(|req| {
        Box::pin(async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Response::new(full("ok"))
        })
    }))
    .await;
    let f = Fulcrum::start(&one_pool(
        &[&be],
        "    timeouts: { response_header: 300ms }\n    retries: { try_duration: 0s }\n",
        "",
    ));
    let addr = f.listener(0);
    assert_eq!(client::get(addr, "/fast").await.status, StatusCode::OK);
    // Past the first exchange's deadline: its timer fires while the
    // connection idles in the pool.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client::get(addr, "/fast").await.status, StatusCode::OK);
    let r = tokio::time::timeout(testkit::DEADLINE, client::get(addr, "/slow"))
        .await
        .expect("response_header not applied on a reused connection");
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert_eq!(client::get(addr, "/fast").await.status, StatusCode::OK);
    assert_eq!(be.saw("/fast"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_404_502_503_504() {
    let slow = TestBackend::start(Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Response::new(full("late"))
        })
    }))
    .await;
    let dead = testkit::free_addr();
    let f = Fulcrum::start(&config(&format!(
        "pools:
  - name: dead
    backends: [\"{dead}\"]
    retries: {{ try_duration: 0s }}
  - name: empty
    backends: []
    retries: {{ try_duration: 0s }}
  - name: slow
    backends: [\"{}\"]
    timeouts: {{ response_header: 200ms }}
    retries: {{ try_duration: 0s }}
routes:
  - {{ host: dead.test, pool: dead }}
  - {{ host: empty.test, pool: empty }}
  - {{ host: slow.test, pool: slow }}
",
        slow.addr
    )));
    let addr = f.listener(0);
    expect_error(addr, "nowhere.test", StatusCode::NOT_FOUND).await;
    expect_error(addr, "dead.test", StatusCode::BAD_GATEWAY).await;
    expect_error(addr, "empty.test", StatusCode::SERVICE_UNAVAILABLE).await;
    expect_error(addr, "slow.test", StatusCode::GATEWAY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_in_and_h2c_to_backend() {
    let be = TestBackend::echo("h2").await;
    let f = Fulcrum::start(&config(&format!(
        "pools:\n  - name: h1\n    backends: [\"{0}\"]\n  - name: h2\n    backends: [\"h2c://{0}\"]\nroutes:\n  - {{ path_prefix: /, pool: h1 }}\n  - {{ path_prefix: /two, pool: h2 }}\n",
        be.addr
    )));
    let addr = f.listener(0);
    // HTTP/2 client in, HTTP/1.1 backend out.
    let r = client::send_h2(
        addr,
        Request::get("http://h2.example/one")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(be.last().version, http::Version::HTTP_11);
    assert_eq!(be.last().headers["host"], "h2.example");
    assert_eq!(r.json()["headers"]["via"], "2 fulcrum");
    // HTTP/1.1 client in, HTTP/2 (h2c) backend out.
    for _ in 0..3 {
        let r = client::get_host(addr, "h1.example", "/two/x").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(be.last().version, http::Version::HTTP_2);
        assert!(be.last().uri.ends_with("/two/x"));
    }
}

/// Sequential requests share the backend connections: one per worker thread
/// (each keeps its own idle ones) and per kind of backend connection (requests
/// without a body or with a small one on ours, a body too large to read whole
/// on hyper's). Every request comes on a new client connection, which the
/// kernel hands to either worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let be = TestBackend::echo("ka").await;
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Count connections at the TCP level with a tiny forwarder in front of the backend.
    let counter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = counter.local_addr().unwrap();
    let (c2, target) = (conns.clone(), be.addr);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = counter.accept().await.unwrap();
            c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut t = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
            });
        }
    });
    let cfg = config(&format!(
        "pools:\n  - name: app\n    backends: [\"{front}\"]\nroutes:\n  - {{ path_prefix: /, pool: app }}\n"
    ));
    let opened = || conns.load(std::sync::atomic::Ordering::SeqCst);
    for workers in [1, 2] {
        let before = opened();
        let f = Fulcrum::start_workers(&cfg, workers);
        for _ in 0..20 {
            assert_eq!(client::get(f.listener(0), "/").await.status, StatusCode::OK);
        }
        let gets = opened() - before;
        assert!(
            (1..=workers).contains(&gets),
            "{workers} workers: {gets} backend connections for sequential GETs"
        );
        let post = |body: Bytes| {
            Request::post("/")
                .header("host", "localhost")
                .body(Full::new(body))
                .unwrap()
        };
        // A small body is read whole and goes on the same connections as GETs.
        for _ in 0..20 {
            let r = client::send(f.listener(0), post(Bytes::from_static(b"x"))).await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let ours = opened() - before;
        assert!(
            (1..=workers).contains(&ours),
            "{workers} workers: {ours} backend connections for sequential GETs and small POSTs"
        );
        // One too large to read whole is streamed through hyper's client.
        let large = Bytes::from(vec![b'y'; 100 * 1024]);
        for _ in 0..10 {
            let r = client::send(f.listener(0), post(large.clone())).await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let posts = opened() - before - ours;
        assert!(
            (1..=workers).contains(&posts),
            "{workers} workers: {posts} backend connections for sequential large POSTs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_header_and_idle_timeouts() {
    // connect: a listener whose accept queue is full drops new SYNs; without the
    // connect timeout the proxy would wait for the kernel's retries (minutes).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let full_addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(full_addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    // idle: headers and a first chunk, then silence.
    let stall = TestBackend::start(Arc::new(|_req| {
        Box::pin(async {
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
            >(1);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"partial"))))
                    .await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(tx);
            });
            Response::new(BodyExt::boxed(StreamBody::new(tokio_stream_from(rx))))
        })
    }))
    .await;
    let f = Fulcrum::start(&config(&format!(
        "limits: {{ header_read_timeout: 300ms }}
pools:
  - name: full
    backends: [\"{full_addr}\"]
    timeouts: {{ connect: 300ms }}
    retries: {{ try_duration: 0s }}
  - name: stall
    backends: [\"{}\"]
    timeouts: {{ idle: 300ms }}
routes:
  - {{ host: full.test, pool: full }}
  - {{ host: stall.test, pool: stall }}
",
        stall.addr
    )));
    let addr = f.listener(0);
    let r = tokio::time::timeout(testkit::DEADLINE, client::get_host(addr, "full.test", "/"))
        .await
        .expect("connect timeout not applied");
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);

    let res = tokio::time::timeout(
        testkit::DEADLINE,
        client::try_send(
            addr,
            Request::get("/")
                .header("host", "stall.test")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .expect("idle timeout not applied");
    assert!(
        res.is_err(),
        "a stalled body must end with an error, got {res:?}"
    );

    // header_read_timeout: a client that never finishes its headers is dropped.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(testkit::DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("slow client never dropped");
    assert!(n.is_ok());

    // The same limit closes a keep-alive connection that sends nothing more
    // after a request was answered.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: full.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(testkit::DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("idle keep-alive connection never closed");
    assert!(n.is_ok());
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");
    drop(fillers);
}
