//! Reload and shutdown of the real binary: SIGHUP, file watch, invalid configs,
//! SIGTERM with requests in flight.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use testkit::backend::{TestBackend, full};
use testkit::client;
use testkit::{Fulcrum, ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(pools: &str, routes: &str) -> String {
    format!("listeners:\n  - address: \"127.0.0.1:0\"\npools:\n{pools}routes:\n{routes}")
}

fn pool(name: &str, b: &TestBackend) -> String {
    format!("  - name: {name}\n    backends: [\"{}\"]\n", b.addr)
}

/// Sends GETs on a few keep-alive connections until stopped; counts failures.
fn background_load(
    addr: std::net::SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let mut ok = 0;
        let mut failed = 0;
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        // Bounded in count and time.
        for _ in 0..20_000 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            // hyper's client refuses a request sent before it has taken in the
            // end of the previous answer: wait for the connection, which fails
            // only if the proxy closed it.
            if sender.ready().await.is_err() {
                failed += 1;
                break;
            }
            let req = Request::get("/")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap();
            match sender.send_request(req).await {
                Ok(r) if r.status() == StatusCode::OK => {
                    let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                    ok += 1
                }
                _ => failed += 1,
            }
        }
        (ok, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_route_without_dropping_anything() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let w = TestBackend::start(Arc::new(|req| Box::pin(ws::echo_upgrade(req)))).await;
    let routes = "  - { path_prefix: /, pool: a }\n  - { path_prefix: /ws, pool: ws }\n";
    let pools = format!("{}{}", pool("a", &a), pool("ws", &w));
    let f = Fulcrum::start(&config(&pools, routes));
    let addr = f.listener(0);
    let pid = f.pid();
    assert_eq!(
        client::get(addr, "/new")
            .await
            .header("x-backend")
            .as_deref(),
        Some("a")
    );

    let mut socket = ws::WsClient::connect(addr, "/ws").await;
    assert_eq!(socket.echo("before").await, "before");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = background_load(addr, stop.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let pools2 = format!("{pools}{}", pool("b", &b));
    f.rewrite_config(&config(
        &pools2,
        &format!("{routes}  - {{ path_prefix: /new, pool: b }}\n"),
    ));
    f.signal(libc::SIGHUP);
    f.stderr.wait_for("reload", |l| {
        l.contains("configuration applied") && l.contains("\"generation\":2")
    });
    testkit::eventually("the new route", || async {
        (client::get(addr, "/new")
            .await
            .header("x-backend")
            .as_deref()
            == Some("b"))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 0);
    assert_eq!(failed, 0, "requests failed during the reload");
    assert_eq!(f.pid(), pid);
    assert_eq!(
        socket.echo("after").await,
        "after",
        "the WebSocket did not survive the reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_keeps_the_old_config_serving() {
    let a = TestBackend::echo("a").await;
    let f = Fulcrum::start(&config(&pool("a", &a), "  - { path_prefix: /, pool: a }\n"));
    let addr = f.listener(0);
    f.rewrite_config("listeners: [\"127.0.0.1:0\"]\npools:\n  - name: a\n    backends: [\"nope:xx\"]\nroutes:\n  - { path_prefix: /, pool: missing }\n");
    f.signal(libc::SIGHUP);
    let line = f
        .stderr
        .wait_for("rejection", |l| l.contains("reload rejected"));
    assert!(
        line.contains("fulcrum.yaml:5:"),
        "error lacks file:line:col: {line}"
    );
    f.stderr.wait_for("second error", |l| {
        l.contains("reload rejected") && l.contains("unknown pool")
    });
    let r = client::get(addr, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-backend").as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_is_picked_up_without_a_signal() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&config(&pool("p", &a), "  - { path_prefix: /, pool: p }\n"));
    let addr = f.listener(0);
    f.rewrite_config(&config(&pool("p", &b), "  - { path_prefix: /, pool: p }\n"));
    f.stderr.wait_for("the watched file to be applied", |l| {
        l.contains("configuration applied")
    });
    assert_eq!(
        client::get(addr, "/").await.header("x-backend").as_deref(),
        Some("b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_and_exits_zero() {
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let slow = TestBackend::start(Arc::new(move |_req| {
        let s = s2.clone();
        Box::pin(async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Response::new(full("finished"))
        })
    }))
    .await;
    let mut f = Fulcrum::start(&format!(
        "shutdown_timeout: 20s\n{}",
        config(&pool("s", &slow), "  - { path_prefix: /, pool: s }\n")
    ));
    let addr = f.listener(0);
    let req = tokio::spawn(async move { client::get(addr, "/").await });
    testkit::eventually("the backend to get the request", || async {
        (started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    f.signal(libc::SIGTERM);
    // New connections are refused once it stops accepting.
    testkit::eventually("the listener to close", || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let r = req.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "finished");
    assert_eq!(f.wait_exit(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_listener_on_reload_and_a_removed_one() {
    let a = TestBackend::echo("a").await;
    let routes = "  - { path_prefix: /, pool: a }\n";
    // Longer than the wait below: an idle connection is closed by the stop.
    let limits = "limits: { header_read_timeout: 120s }\n";
    let f = Fulcrum::start(&format!("{limits}{}", config(&pool("a", &a), routes)));
    let first = f.listener(0);
    // Add a second listener (a fixed free port so both configs name it).
    let second = testkit::free_addr();
    let two = format!(
        "{limits}listeners:\n  - address: \"127.0.0.1:0\"\n  - address: \"{second}\"\npools:\n{}routes:\n{routes}",
        pool("a", &a)
    );
    f.rewrite_config(&two);
    f.signal(libc::SIGHUP);
    f.stderr.wait_for("second listener", |l| {
        l.contains("listening") && l.contains(&second.to_string())
    });
    assert_eq!(client::get(second, "/").await.status, StatusCode::OK);
    assert_eq!(
        client::get(first, "/").await.status,
        StatusCode::OK,
        "the unchanged listener was disturbed"
    );
    // A keep-alive connection served once, idle when its listener goes.
    let mut idle = tokio::net::TcpStream::connect(second).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = idle.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    // And remove it again.
    f.rewrite_config(&format!("{limits}{}", config(&pool("a", &a), routes)));
    f.signal(libc::SIGHUP);
    f.stderr
        .wait_for("removal", |l| l.contains("listener removed"));
    // The idle connection is closed by the stop (what is left of the answer's
    // body first), not left to its idle timeout.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = [0u8; 1024];
        while idle.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the idle connection outlived its listener");
    testkit::eventually("the removed listener to close", || async {
        tokio::net::TcpStream::connect(second)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert_eq!(client::get(first, "/").await.status, StatusCode::OK);
}

/// `--workers 2`: two worker threads, each accepting on its own socket of the
/// listener, and both serve connections (the kernel spreads new connections
/// over the sockets). What a thread does is read from outside, in
/// /proc/PID/task/TID/status: an idle worker sleeps in the kernel until it has
/// work, so its count of voluntary context switches moves only when it serves.
/// `--workers 1` starts no worker thread: its one runtime runs everything.
#[tokio::test]
async fn two_workers_both_serve_connections_one_worker_starts_none() {
    let a = TestBackend::echo("a").await;
    let routes = "  - { path_prefix: /, pool: a }\n";
    let run = |workers: &str| {
        let dir = testkit::TempDir::new("workers");
        let path = dir.write("fulcrum.yaml", &config(&pool("a", &a), routes));
        let p = path.to_str().expect("utf-8 path").to_string();
        let args = [
            "--log-format",
            "json",
            "run",
            "-c",
            &p,
            "--workers",
            workers,
        ];
        Fulcrum::spawn(dir, path.clone(), &args)
    };
    let one = run("1");
    assert_eq!(
        client::get(one.listener(0), "/").await.status,
        StatusCode::OK
    );
    assert_eq!(worker_threads(one.pid()), Vec::<String>::new());
    drop(one);

    let two = run("2");
    let addr = two.listener(0);
    // The second thread may still be starting when the first one's listener
    // reports for both.
    let workers = testkit::eventually("two worker threads", || async {
        let found = worker_threads(two.pid());
        assert!(found.len() <= 2, "worker threads: {found:?}");
        (found.len() == 2).then_some(found)
    })
    .await;
    let before: Vec<u64> = workers.iter().map(|t| sleeps(t)).collect();
    let made = AtomicUsize::new(0);
    testkit::eventually("both workers to serve connections", || async {
        // A new connection each time: the kernel picks its socket by its addresses.
        assert_eq!(client::get(addr, "/").await.status, StatusCode::OK);
        made.fetch_add(1, Ordering::SeqCst);
        let grown = workers.iter().zip(&before).filter(|(t, b)| sleeps(t) > **b);
        (grown.count() == workers.len()).then_some(())
    })
    .await;
    // Each worker counts its connections apart; /metrics reports their sum.
    let made = made.load(Ordering::SeqCst);
    let metrics = client::get_host(two.admin(), "admin", "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let line = format!("fulcrum_connections_total{{listener=\"{addr}\"}} {made}\n");
    let body = metrics.text();
    assert!(body.contains(&line), "{line}in:\n{body}");
}

/// The /proc/PID/task/TID directories of the process's worker threads.
fn worker_threads(pid: i32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc");
    let mut found: Vec<String> = tasks
        .filter_map(|t| t.ok())
        .map(|t| t.path().to_string_lossy().into_owned())
        .filter(|t| {
            std::fs::read_to_string(format!("{t}/comm"))
                .is_ok_and(|name| name.starts_with("fulcrum-core-"))
        })
        .collect();
    found.sort();
    found
}

/// How many times a thread went to sleep on its own.
fn sleeps(task: &str) -> u64 {
    let status = std::fs::read_to_string(format!("{task}/status")).expect("task status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}
