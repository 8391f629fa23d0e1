//! End-to-end tests of the response cache (`routes[].cache`): the real binary
//! between real clients and real backends on loopback.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::Fulcrum;
use testkit::backend::{Body, TestBackend, full};
use testkit::client::{self, Resp};

fn config(backend: SocketAddr, cache: &str) -> String {
    format!(
        "listeners: [\"127.0.0.1:0\"]
access_log: {{ enabled: false }}
pools:
  - name: app
    backends: [\"{backend}\"]
routes:
  - path_prefix: /cached
    pool: app
    cache:
{cache}
  - path_prefix: /
    pool: app
"
    )
}

/// A backend for `/cached/...`: `max-age=1` with an ETag (answering 304 to a
/// matching If-None-Match); its body counts the full answers it gave.
async fn origin() -> (TestBackend, Arc<AtomicUsize>) {
    let full_answers = Arc::new(AtomicUsize::new(0));
    let n = full_answers.clone();
    let b = TestBackend::start(Arc::new(move |req| {
        let n = n.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            if path.starts_with("/cached/nostore") {
                return Response::builder()
                    .header("cache-control", "no-store")
                    .body(full("private"))
                    .unwrap();
            }
            if !path.starts_with("/cached") {
                return Response::new(full("uncached"));
            }
            if req
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == "\"e1\"")
            {
                return Response::builder()
                    .status(304)
                    .header("etag", "\"e1\"")
                    .header("cache-control", "max-age=1")
                    .body(full(""))
                    .unwrap();
            }
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            let max_age = if path == "/cached/long" { 3600 } else { 1 };
            let mut r = Response::builder();
            if req.method() == http::Method::POST {
                r = r.header("location", "/cached/loc");
            }
            r.header("etag", "\"e1\"")
                .header("cache-control", format!("max-age={max_age}"))
                .header("cache-tag", "page")
                .body(full(format!("v{i}")))
                .unwrap()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
    }))
    .await;
    (b, full_answers)
}

async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    client::send(addr, r.body(Full::new(Bytes::new())).unwrap()).await
}

/// `n` concurrent `GET path`, each on its own connection; their answers.
async fn burst(addr: SocketAddr, path: &'static str, n: usize) -> Vec<Resp> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(async move { request(addr, "GET", path, &[]).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

fn cache_status(r: &Resp) -> String {
    r.header("cache-status").unwrap_or_default()
}

/// Polls `GET path` until its Cache-Status contains `want` (the entry went
/// stale with time); returns that response.
async fn until_status(addr: SocketAddr, path: &str, want: &str) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(addr, "GET", path, &[]).await;
        if cache_status(&r).contains(want) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "Cache-Status never had `{want}`: last {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn admin_json(f: &Fulcrum, method: &str, path: &str, body: &str) -> serde_json::Value {
    let r = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client::send(f.admin(), r).await;
    assert!(resp.status.is_success(), "{path}: {resp:?}");
    resp.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_revalidation_conditionals_and_stale_when_every_backend_is_gone() {
    let (mut b, answers) = origin().await;
    let f = Fulcrum::start(&config(b.addr, "      stale_if_error: 1h\n"));
    let addr = f.listener(0);

    let first = request(addr, "GET", "/cached/long", &[]).await;
    assert_eq!(first.text(), "v1");
    let cs = cache_status(&first);
    assert!(cs.contains("fwd=miss") && cs.contains("stored"), "{cs}");

    // A hit: same body, Age present, the backend not asked.
    let hit = request(addr, "GET", "/cached/long", &[]).await;
    assert_eq!((hit.status, hit.text()), (StatusCode::OK, "v1".into()));
    assert!(cache_status(&hit).starts_with("fulcrum; hit"), "{hit:?}");
    assert!(hit.header("age").is_some());

    // HEAD from the stored GET.
    let head = request(addr, "HEAD", "/cached/long", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length").as_deref(), Some("2"));
    assert!(head.body.is_empty());
    // A conditional request answered from the cache.
    let cond = request(addr, "GET", "/cached/long", &[("if-none-match", "\"e1\"")]).await;
    assert_eq!(cond.status, StatusCode::NOT_MODIFIED);
    assert!(cache_status(&cond).contains("hit"), "{cond:?}");
    assert_eq!(b.hits(), 1);

    // /cached/a is fresh for 1 s.
    assert_eq!(request(addr, "GET", "/cached/a", &[]).await.text(), "v2");

    // Uncacheable responses pass through, each time.
    for _ in 0..2 {
        let r = request(addr, "GET", "/cached/nostore", &[]).await;
        assert!(cache_status(&r).contains("fwd=miss"), "{r:?}");
    }

    // Once stale (max-age=1), the stored ETag revalidates it: the backend
    // answers 304 and the client gets the stored body.
    let reval = until_status(addr, "/cached/a", "fwd-status=304").await;
    assert_eq!((reval.status, reval.text()), (StatusCode::OK, "v2".into()));
    assert_eq!(answers.load(Ordering::SeqCst), 2);
    let seen = b.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"e1\"")),
        "revalidation sent the stored validator"
    );

    // Every backend gone: the caching route keeps answering 200 from the
    // stale entry; a route without a cache cannot.
    b.stop();
    let stale = until_status(addr, "/cached/a", "stale-if-error").await;
    assert_eq!((stale.status, stale.text()), (StatusCode::OK, "v2".into()));
    assert!(cache_status(&stale).contains("fwd=stale"), "{stale:?}");
    let uncached = request(addr, "GET", "/other", &[]).await;
    assert!(uncached.status.is_server_error(), "{uncached:?}");
    let never_stored = request(addr, "GET", "/cached/never", &[]).await;
    assert!(never_stored.status.is_server_error(), "{never_stored:?}");
    assert_eq!(cache_status(&never_stored), "fulcrum; fwd=miss");

    let v = admin_json(&f, "GET", "/api/v1/cache", "").await;
    let route = &v["routes"][0];
    assert_eq!(route["route"], "*/cached");
    assert!(route["requests"]["hit"].as_u64().unwrap() >= 2, "{v}");
    assert!(route["requests"]["stale"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        route["requests"]["revalidated"].as_u64().unwrap() >= 1,
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_invalidation_and_metrics() {
    let (b, _) = origin().await;
    let f = Fulcrum::start(&config(b.addr, "      default_ttl: 1h\n"));
    let addr = f.listener(0);
    let get = |p: &'static str| async move { request(addr, "GET", p, &[]).await.text() };
    assert_eq!(get("/cached/p1").await, "v1");
    assert_eq!(get("/cached/p1").await, "v1");
    // Purge by URL: the next request goes to the backend.
    let v = admin_json(
        &f,
        "POST",
        "/api/v1/cache/purge",
        r#"{"url": "/cached/p1"}"#,
    )
    .await;
    assert_eq!(v["purged"], 1);
    assert_eq!(get("/cached/p1").await, "v2");
    // By tag (Cache-Tag: page).
    let v = admin_json(&f, "POST", "/api/v1/cache/purge", r#"{"tag": "page"}"#).await;
    assert_eq!(v["purged"], 1);
    assert_eq!(get("/cached/p1").await, "v3");
    // By prefix.
    let v = admin_json(
        &f,
        "POST",
        "/api/v1/cache/purge",
        r#"{"prefix": "http://localhost/cached/"}"#,
    )
    .await;
    assert_eq!(v["purged"], 1);
    assert_eq!(get("/cached/p1").await, "v4");
    // An unsafe method invalidates the URL it succeeded on, and its Location.
    assert_eq!(get("/cached/loc").await, "v5");
    let post = request(addr, "POST", "/cached/p1", &[]).await;
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(get("/cached/p1").await, "v7");
    let loc = request(addr, "GET", "/cached/loc", &[]).await;
    assert_eq!(loc.text(), "v8");
    assert!(cache_status(&loc).contains("fwd=miss"), "{loc:?}");

    // The same through `fulcrum ctl`.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(testkit::bin())
            .args(["ctl", "--admin", &f.admin().to_string(), "cache"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let status = ctl(&["status"]);
    assert!(
        status.contains("*/cached") && status.contains("HIT RATIO"),
        "{status}"
    );
    assert_eq!(
        ctl(&["purge", "--url", "/cached/p1"]).trim(),
        "purged 1 keys"
    );
    assert_eq!(get("/cached/p1").await, "v9");

    let metrics = client::get(f.admin(), "/metrics").await.text();
    for line in [
        "fulcrum_cache_requests_total{route=\"*/cached\",result=\"hit\"}",
        "fulcrum_cache_bytes{route=\"*/cached\"}",
        "fulcrum_cache_entries{route=\"*/cached\"}",
        "fulcrum_cache_evictions_total{route=\"*/cached\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_make_one_backend_request() {
    let b = TestBackend::start(Arc::new(|_req| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Response::builder()
                .header("cache-control", "max-age=60")
                .body(full("same"))
                .unwrap()
        })
    }))
    .await;
    let f = Fulcrum::start(&config(b.addr, "      lock_timeout: 30s\n"));
    let addr = f.listener(0);
    let answers = burst(addr, "/cached/one", 1000).await;
    assert_eq!(answers.len(), 1000);
    for r in &answers {
        assert_eq!((r.status, r.text()), (StatusCode::OK, "same".into()));
    }
    assert_eq!(
        b.saw("/cached/one"),
        1,
        "1,000 concurrent misses, one backend request"
    );
    let coalesced = answers
        .iter()
        .filter(|r| cache_status(r).contains("collapsed"))
        .count();
    assert!(coalesced > 0, "some waited for the one fill");
}

/// Resident memory of a process, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_bound_holds_and_a_large_download_streams_without_being_stored() {
    const BIG: u64 = 1 << 30;
    const CHUNK: usize = 256 << 10;
    let b = TestBackend::start(Arc::new(|req| {
        Box::pin(async move {
            if req.uri().path().starts_with("/cached/big") {
                let chunk = Bytes::from(vec![7u8; CHUNK]);
                let frames = futures_util::stream::iter((0..BIG / CHUNK as u64).map(move |_| {
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk.clone()))
                }));
                return Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(BodyExt::boxed(StreamBody::new(frames)))
                    .unwrap();
            }
            Response::builder()
                .header("cache-control", "max-age=60")
                .body(full(vec![b'x'; 32 << 10]))
                .unwrap()
        })
    }))
    .await;
    let f = Fulcrum::start(&config(
        b.addr,
        "      max_size: 4MiB\n      max_object_size: 1MiB\n",
    ));
    let addr = f.listener(0);
    // A flood of distinct keys: the byte bound holds.
    for i in 0..600 {
        let r = request(addr, "GET", &format!("/cached/k{i}"), &[]).await;
        assert_eq!(r.body.len(), 32 << 10);
    }
    let v = admin_json(&f, "GET", "/api/v1/cache", "").await;
    let route = &v["routes"][0];
    assert!(route["bytes"].as_u64().unwrap() <= 4 << 20, "{v}");
    assert!(route["evictions"].as_u64().unwrap() > 0, "{v}");

    // A body far past max_object_size streams through in bounded memory and
    // is not stored.
    let rss_before = rss(f.pid());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("/cached/big")
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let cs = resp
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(cs.contains("fwd=miss") && !cs.contains("stored"), "{cs}");
    let mut body = resp.into_body();
    let (mut got, mut peak) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            got += d.len() as u64;
            if got % (32 << 20) < d.len() as u64 {
                peak = peak.max(rss(f.pid()));
            }
        }
    }
    assert_eq!(got, BIG);
    assert!(
        peak < rss_before + (96 << 20),
        "memory grew with the body: {rss_before} -> {peak}"
    );
    let again = request(addr, "HEAD", "/cached/big", &[]).await;
    assert!(!cache_status(&again).contains("hit"), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_background_refresh_variants_and_authorization() {
    let swr_answers = Arc::new(AtomicUsize::new(0));
    let n = swr_answers.clone();
    let b = TestBackend::start(Arc::new(move |req| {
        let n = n.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let r = Response::builder();
            match path.as_str() {
                "/cached/swr" => {
                    // The first answer goes stale at once; the refreshed one
                    // stays fresh, so exactly one refresh is expected.
                    let i = n.fetch_add(1, Ordering::SeqCst) + 1;
                    let cc = if i == 1 {
                        "max-age=1, stale-while-revalidate=60"
                    } else {
                        "max-age=3600"
                    };
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    r.header("cache-control", cc).body(full(format!("v{i}")))
                }
                "/cached/vary" => {
                    let lang = req
                        .headers()
                        .get("accept-language")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    r.header("cache-control", "max-age=60")
                        .header("vary", "Accept-Language")
                        .body(full(lang))
                }
                // First a good answer, then only errors.
                "/cached/flaky" | "/cached/strict" => {
                    let cc = if path == "/cached/flaky" {
                        "max-age=1, stale-if-error=60"
                    } else {
                        "max-age=1, must-revalidate, stale-if-error=60"
                    };
                    if req.headers().contains_key("x-fail") {
                        r.status(500).body(full("broken"))
                    } else {
                        r.header("cache-control", cc).body(full("good"))
                    }
                }
                _ => r.header("cache-control", "max-age=60").body(full("secret")),
            }
            .unwrap()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
    }))
    .await;
    let f = Fulcrum::start(&config(b.addr, "      stale_if_error: 0s\n"));
    let addr = f.listener(0);

    assert_eq!(request(addr, "GET", "/cached/swr", &[]).await.text(), "v1");
    let stale = until_status(addr, "/cached/swr", "stale-while-revalidate").await;
    assert_eq!(stale.text(), "v1");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        set.spawn(async move { request(addr, "GET", "/cached/swr", &[]).await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().status, StatusCode::OK);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(addr, "GET", "/cached/swr", &[]).await.text() != "v2" {
        assert!(
            Instant::now() < deadline,
            "the background refresh never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        swr_answers.load(Ordering::SeqCst),
        2,
        "one refresh for 51 stale hits"
    );

    // A 500 is an error: the response's own stale-if-error serves the stale
    // entry (the route's floor is 0 here), except under must-revalidate.
    for path in ["/cached/flaky", "/cached/strict"] {
        assert_eq!(request(addr, "GET", path, &[]).await.text(), "good");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(addr, "GET", "/cached/flaky", &[("x-fail", "1")]).await;
        let cs = cache_status(&r);
        if cs.contains("fwd=stale") {
            assert_eq!((r.status, r.text()), (StatusCode::OK, "good".into()));
            assert!(
                cs.contains("fwd-status=500") && cs.contains("stale-if-error"),
                "{cs}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never stale: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once /cached/strict is stale, the error reaches the client.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(addr, "GET", "/cached/strict", &[("x-fail", "1")]).await;
        if !cache_status(&r).contains("hit") {
            assert_eq!(
                (r.status, r.text()),
                (StatusCode::INTERNAL_SERVER_ERROR, "broken".into())
            );
            break;
        }
        assert!(Instant::now() < deadline, "never stale: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Vary: one stored variant per Accept-Language.
    for (lang, want) in [
        ("en", "fwd=miss"),
        ("fr", "fwd=vary-miss"),
        ("en", "hit"),
        ("fr", "hit"),
    ] {
        let r = request(addr, "GET", "/cached/vary", &[("accept-language", lang)]).await;
        assert_eq!(r.text(), lang);
        assert!(cache_status(&r).contains(want), "{lang}: {r:?}");
    }
    assert_eq!(b.saw("/cached/vary"), 2);

    // A response to a request with Authorization is not stored without
    // public / must-revalidate / s-maxage.
    for _ in 0..2 {
        request(
            addr,
            "GET",
            "/cached/auth",
            &[("authorization", "Bearer x")],
        )
        .await;
    }
    request(addr, "GET", "/cached/auth", &[]).await;
    assert_eq!(b.saw("/cached/auth"), 3);
}

/// Polls `GET path` until the answer is no longer a fresh hit (the entry went
/// stale with time and the cache had to ask a backend); returns that answer.
async fn first_non_hit(addr: SocketAddr, path: &str) -> Resp {
    let deadline = Instant::now() + testkit::DEADLINE;
    loop {
        let r = request(addr, "GET", path, &[]).await;
        if !cache_status(&r).starts_with("fulcrum; hit") {
            return r;
        }
        assert!(Instant::now() < deadline, "{path} never went stale: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stored responses whose directives forbid serving them stale, even with
/// the response's own `stale-if-error` and the route's floor of an hour.
const NEVER_STALE: [(&str, &str); 4] = [
    (
        "must-revalidate",
        "max-age=1, must-revalidate, stale-if-error=3600",
    ),
    (
        "proxy-revalidate",
        "max-age=1, proxy-revalidate, stale-if-error=3600",
    ),
    ("s-maxage", "s-maxage=1, stale-if-error=3600"),
    ("no-cache", "no-cache, max-age=3600, stale-if-error=3600"),
];

/// With no backend answering (`error` is what Fulcrum answers then): the entry
/// `/cached/{kind}` answers stale, the entries that must never be served stale
/// and an uncached route get `error`.
async fn stale_only_where_allowed(addr: SocketAddr, kind: &str, error: StatusCode) {
    let r = request(addr, "GET", &format!("/cached/{kind}"), &[]).await;
    assert_eq!(
        (r.status, r.text()),
        (StatusCode::OK, format!("good {kind}"))
    );
    let cs = cache_status(&r);
    let fwd = format!("fwd=stale; fwd-status={}", error.as_u16());
    assert!(
        cs.contains(&fwd) && cs.contains("detail=stale-if-error"),
        "{cs}"
    );
    for (kind, _) in NEVER_STALE {
        let r = request(addr, "GET", &format!("/cached/{kind}"), &[]).await;
        assert_eq!(r.status, error, "{kind}: {r:?}");
    }
    let uncached = request(addr, "GET", "/other", &[]).await;
    assert_eq!(uncached.status, error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_on_timeouts_5xx_refused_connections_and_no_available_backend() {
    // On /cached/: good answers (fresh for a second) until `failing`; then
    // /cached/timeout answers after the pool's response_header timeout,
    // /cached/NNN answers NNN, and the others 503. Elsewhere: always 200.
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let mut b = TestBackend::start(Arc::new(move |req| {
        let failing = fail.load(Ordering::SeqCst);
        Box::pin(async move {
            let Some(kind) = req.uri().path().strip_prefix("/cached/") else {
                return Response::new(full("uncached"));
            };
            let kind = kind.to_string();
            if !failing {
                let cc = NEVER_STALE
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map_or("max-age=1", |(_, cc)| cc);
                return Response::builder()
                    .header("cache-control", cc)
                    .body(full(format!("good {kind}")))
                    .unwrap();
            }
            if kind == "timeout" {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            let status = kind.parse().unwrap_or(503);
            Response::builder()
                .status(status)
                .body(full("broken"))
                .unwrap()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
    }))
    .await;
    // No retries and no passive ejection: each request makes one attempt, and
    // its failure is the one the test causes.
    let f = Fulcrum::start(&format!(
        "listeners: [\"127.0.0.1:0\"]
access_log: {{ enabled: false }}
pools:
  - name: app
    backends: [\"{}\"]
    passive_health: {{ max_fails: 0 }}
    retries: {{ try_duration: 0s }}
    timeouts: {{ response_header: 300ms }}
routes:
  - path_prefix: /cached
    pool: app
    cache:
      stale_if_error: 1h
  - path_prefix: /
    pool: app
",
        b.addr
    ));
    let addr = f.listener(0);
    let stale_ok = ["timeout", "500", "502", "503", "504"];
    for kind in stale_ok.iter().chain(NEVER_STALE.iter().map(|(k, _)| k)) {
        let r = request(addr, "GET", &format!("/cached/{kind}"), &[]).await;
        assert_eq!(r.text(), format!("good {kind}"));
        assert!(cache_status(&r).contains("stored"), "{kind}: {r:?}");
    }
    failing.store(true, Ordering::SeqCst);

    // A backend that answers 500, 502, 503 or 504, or not before the
    // response_header timeout (504): the stale entry answers.
    for (kind, fwd_status) in [
        ("500", 500),
        ("502", 502),
        ("503", 503),
        ("504", 504),
        ("timeout", 504),
    ] {
        let r = first_non_hit(addr, &format!("/cached/{kind}")).await;
        assert_eq!(
            (r.status, r.text()),
            (StatusCode::OK, format!("good {kind}")),
            "{kind}: {r:?}"
        );
        let cs = cache_status(&r);
        assert!(
            cs.starts_with("fulcrum; fwd=stale")
                && cs.contains(&format!("fwd-status={fwd_status}"))
                && cs.contains("detail=stale-if-error"),
            "{kind}: {cs}"
        );
    }
    // Never stale under must-revalidate, proxy-revalidate, s-maxage or
    // no-cache: the backend's error reaches the client.
    for (kind, _) in NEVER_STALE {
        let r = first_non_hit(addr, &format!("/cached/{kind}")).await;
        assert_eq!(
            (r.status, r.text()),
            (StatusCode::SERVICE_UNAVAILABLE, "broken".into()),
            "{kind}: {r:?}"
        );
    }

    // No available backend (the only one disabled): 503 without trying.
    let backend_addr = b.addr;
    let backend_action = |action: &'static str| {
        let path = format!("/api/v1/pools/app/backends/{backend_addr}/{action}");
        let f = &f;
        async move { admin_json(f, "POST", &path, "").await }
    };
    backend_action("disable").await;
    let backend_requests = b.hits();
    stale_only_where_allowed(addr, "500", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(b.hits(), backend_requests, "no backend was tried");

    // Enabled again, it takes requests once it is found reachable.
    backend_action("enable").await;
    testkit::eventually("the backend enabled again", || async move {
        let r = request(addr, "GET", "/other", &[]).await;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;

    // The backend gone (connections refused): 502, and the stale entry.
    b.stop();
    stale_only_where_allowed(addr, "502", StatusCode::BAD_GATEWAY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collapsed_followers_are_released_by_an_uncacheable_answer_or_lock_timeout() {
    // The first request for /bounded/stuck is answered only once the test
    // opens the gate (or after a minute, should the test fail first).
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let cookies = Arc::new(AtomicUsize::new(0));
    let stuck = Arc::new(AtomicUsize::new(0));
    let b = TestBackend::start(Arc::new(move |req| {
        let (cookies, stuck, mut gate) = (cookies.clone(), stuck.clone(), gate_rx.clone());
        Box::pin(async move {
            let r = Response::builder().header("cache-control", "max-age=60");
            if req.uri().path() == "/cached/cookie" {
                // Each answer sets its own cookie: never stored, never shared.
                let n = cookies.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                return r
                    .header("set-cookie", format!("id={n}"))
                    .body(full(n.to_string()))
                    .unwrap();
            }
            if stuck.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = tokio::time::timeout(Duration::from_secs(60), gate.wait_for(|open| *open))
                    .await;
                return r.body(full("leader")).unwrap();
            }
            r.body(full("follower")).unwrap()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
    }))
    .await;
    // Followers on /cached would wait ten minutes if nothing released them.
    let f = Fulcrum::start(&format!(
        "listeners: [\"127.0.0.1:0\"]
access_log: {{ enabled: false }}
pools:
  - name: app
    backends: [\"{}\"]
routes:
  - path_prefix: /cached
    pool: app
    cache:
      lock_timeout: 10m
  - path_prefix: /bounded
    pool: app
    cache:
      lock_timeout: 300ms
",
        b.addr
    ));
    let addr = f.listener(0);

    // The leader's answer carries Set-Cookie, so it is not stored: the
    // followers are released at once to go upstream themselves, and each
    // client gets the cookie of its own backend answer, none the leader's.
    let answers = tokio::time::timeout(testkit::DEADLINE, burst(addr, "/cached/cookie", 20))
        .await
        .expect("the followers were not released when the answer could not be stored");
    let mut seen_cookies = std::collections::HashSet::new();
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let cookie = r.header("set-cookie").expect("its own cookie");
        assert_eq!(cookie, format!("id={}", r.text()), "{r:?}");
        seen_cookies.insert(cookie);
    }
    assert_eq!(seen_cookies.len(), 20, "one cookie per backend answer");
    assert_eq!(b.saw("/cached/cookie"), 20);
    assert!(
        answers
            .iter()
            .any(|r| cache_status(r).contains("collapsed")),
        "some requests waited for the first one"
    );

    // A leader whose backend does not answer holds its followers back for
    // lock_timeout only; then they go upstream themselves.
    let leader = tokio::spawn(async move { request(addr, "GET", "/bounded/stuck", &[]).await });
    let backend = &b;
    testkit::eventually("the leader reached the backend", move || async move {
        (backend.saw("/bounded/stuck") == 1).then_some(())
    })
    .await;
    let followers = tokio::time::timeout(testkit::DEADLINE, burst(addr, "/bounded/stuck", 3))
        .await
        .expect("the followers waited for the leader past lock_timeout");
    for r in &followers {
        assert_eq!((r.status, r.text()), (StatusCode::OK, "follower".into()));
        assert!(cache_status(r).contains("collapsed"), "{r:?}");
    }
    assert!(!leader.is_finished(), "the leader is still waiting");
    gate.send(true).unwrap();
    let leader = tokio::time::timeout(testkit::DEADLINE, leader)
        .await
        .expect("the leader's answer")
        .unwrap();
    assert_eq!(leader.text(), "leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_refresh_lets_a_later_stale_hit_refresh_again() {
    // The first answer goes stale at once (with a minute of
    // stale-while-revalidate); the first refresh fails with a 503, the next
    // one brings a fresh answer.
    let answers = Arc::new(AtomicUsize::new(0));
    let n = answers.clone();
    let b = TestBackend::start(Arc::new(move |_req| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            let r = Response::builder();
            match i {
                1 => r
                    .header("cache-control", "max-age=1, stale-while-revalidate=60")
                    .body(full("v1")),
                2 => r.status(503).body(full("broken")),
                _ => r
                    .header("cache-control", "max-age=3600")
                    .body(full(format!("v{i}"))),
            }
            .unwrap()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
    }))
    .await;
    let f = Fulcrum::start(&config(b.addr, "      stale_if_error: 1h\n"));
    let addr = f.listener(0);
    assert_eq!(request(addr, "GET", "/cached/swr", &[]).await.text(), "v1");
    // The first stale hit starts the refresh that fails.
    let stale = until_status(addr, "/cached/swr", "stale-while-revalidate").await;
    assert_eq!(stale.text(), "v1");
    let backend = &b;
    testkit::eventually("the failed refresh", move || async move {
        (backend.hits() >= 2).then_some(())
    })
    .await;
    // Its end cleared the entry's "updating" mark: a later stale hit starts
    // another refresh, whose answer replaces the entry.
    let deadline = Instant::now() + testkit::DEADLINE;
    loop {
        let r = request(addr, "GET", "/cached/swr", &[]).await;
        if r.text() == "v3" {
            assert!(cache_status(&r).starts_with("fulcrum; hit"), "{r:?}");
            break;
        }
        assert_eq!(r.text(), "v1", "{r:?}");
        assert!(
            Instant::now() < deadline,
            "no refresh after the failed one: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answers.load(Ordering::SeqCst), 3);
}
