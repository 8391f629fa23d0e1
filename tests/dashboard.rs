//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver). It shows the pools and reflects a backend going down without a
//! page reload, at a phone's width; a screenshot lands in target/tmp/.

mod common;

use bytes::Bytes;
use common::backend::{TestBackend, full};
use common::{DEADLINE, Fulcrum, client};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Driver {
    child: std::process::Child,
    addr: SocketAddr,
    /// Browser sessions to end before chromedriver goes: killing chromedriver
    /// alone leaves its Chromium running.
    sessions: std::sync::Mutex<Vec<String>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let sessions =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        for id in sessions {
            // Synchronous (this is Drop): chromedriver closes the browser, then answers.
            if let Ok(mut s) = std::net::TcpStream::connect(self.addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.addr
                );
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        common::eventually("chromedriver to listen", || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        Driver {
            child,
            addr,
            sessions: std::sync::Mutex::new(Vec::new()),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let r = client::send(self.addr, req).await;
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|_| panic!("webdriver answered {}: {}", r.status, r.text()))
    }
}

fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let Some(v) = val(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_pools_and_follows_a_backend_going_down() {
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let a = TestBackend::start(
        "a",
        Arc::new(move |req: Request<Incoming>| {
            let h = h.clone();
            Box::pin(async move {
                let status = if req.uri().path() == "/health" && !h.load(Ordering::SeqCst) {
                    503
                } else {
                    200
                };
                Response::builder().status(status).body(full("a")).unwrap()
            })
        }),
    )
    .await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&format!(
        "listeners: [\"127.0.0.1:0\"]\naccess_log: {{ enabled: false }}\npools:\n  - name: app\n    backends: [\"{}\", \"{}\"]\n    max_requests: 50\n    queue: {{ size: 99 }}\n    health_check: {{ path: /health, interval: 200ms, timeout: 150ms, unhealthy_threshold: 1 }}\nroutes:\n  - {{ pool: app }}\n",
        a.addr, b.addr
    ));
    for _ in 0..10 {
        client::get(f.listener(0), "/").await;
    }
    let driver = Driver::start().await;
    let id = open(&driver, &format!("http://{}/", f.admin()), "390,844").await;
    let row_state = format!(
        "const el = document.querySelector('[data-backend=\"app/{}\"] .state'); return el ? el.textContent : null;",
        a.addr
    );
    let state = || async {
        driver
            .call(
                "POST",
                &format!("/session/{id}/execute/sync"),
                Some(json!({ "script": row_state, "args": [] })),
            )
            .await["value"]
            .clone()
    };
    let wait_state = |want: &'static str| {
        let state = &state;
        async move {
            let deadline = Instant::now() + DEADLINE;
            loop {
                let s = state().await;
                if s == want {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the dashboard never showed `{want}` (last: {s})"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_state("up").await;
    let text = driver
        .call(
            "POST",
            &format!("/session/{id}/execute/sync"),
            Some(json!({"script": "return document.body.innerText", "args": []})),
        )
        .await["value"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.contains("app") && text.contains(&b.addr.to_string()),
        "{text}"
    );
    assert!(text.contains("queue 0/99 (0 refused)"), "{text}");
    let marker = driver
        .call(
            "POST",
            &format!("/session/{id}/execute/sync"),
            Some(json!({"script": "window.__noReload = 42; return 1", "args": []})),
        )
        .await;
    assert_eq!(marker["value"], 1);

    healthy.store(false, Ordering::SeqCst);
    wait_state("down").await;
    // Same page: the marker set before is still there.
    let still = driver
        .call(
            "POST",
            &format!("/session/{id}/execute/sync"),
            Some(json!({"script": "return window.__noReload", "args": []})),
        )
        .await;
    assert_eq!(still["value"], 42, "the page was reloaded");
    let events = driver
        .call(
            "POST",
            &format!("/session/{id}/execute/sync"),
            Some(
                json!({"script": "return document.getElementById('events').innerText", "args": []}),
            ),
        )
        .await;
    assert!(
        events["value"]
            .as_str()
            .unwrap_or_default()
            .contains("backend.down"),
        "{events}"
    );
    // Usable at a phone's width: nothing overflows the viewport sideways.
    let overflow = driver
        .call(
            "POST",
            &format!("/session/{id}/execute/sync"),
            Some(json!({"script": "return document.documentElement.scrollWidth - window.innerWidth", "args": []})),
        )
        .await;
    assert!(
        overflow["value"].as_i64().unwrap_or(999) <= 1,
        "the page is wider than the phone: {overflow}"
    );

    let shot = driver
        .call("GET", &format!("/session/{id}/screenshot"), None)
        .await;
    let png = b64decode(shot["value"].as_str().unwrap_or_default());
    assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-phone.png");
    std::fs::write(&out, &png).unwrap();
    println!("screenshot: {}", out.display());
    driver.call("DELETE", &format!("/session/{id}"), None).await;
}

/// A headless browser session on `url`; returns the session id.
/// `size` is the window, e.g. "390,844" (a phone).
async fn open(driver: &Driver, url: &str, size: &str) -> String {
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", format!("--window-size={size}")]
        }
    }}});
    let session = driver.call("POST", "/session", Some(caps)).await;
    let id = session["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"))
        .to_string();
    driver
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(id.clone());
    driver
        .call(
            "POST",
            &format!("/session/{id}/url"),
            Some(json!({ "url": url })),
        )
        .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_cluster_section_on_a_cluster_node() {
    let b = TestBackend::echo("b").await;
    let dir = common::TempDir::new("dash-cluster");
    let port = common::cluster::free_port();
    let f = Fulcrum::start(&format!(
        "listeners: [\"127.0.0.1:0\"]\naccess_log: {{ enabled: false }}\npools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: app }}\ncluster:\n  node_id: solo\n  bind: \"127.0.0.1:{port}\"\n  peers: []\n  state_dir: {}\n  heartbeat_interval: 50ms\n  election_timeout: 300ms\n",
        b.addr,
        dir.path("state").display()
    ));
    let driver = Driver::start().await;
    let id = open(&driver, &format!("http://{}/", f.admin()), "1200,900").await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = driver
            .call(
                "POST",
                &format!("/session/{id}/execute/sync"),
                Some(json!({"script": "const c = document.getElementById('cluster-card'); return c && c.style.display !== 'none' ? c.innerText : ''", "args": []})),
            )
            .await["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if text.contains("solo (this node)")
            && text.contains("primary")
            && text.contains("leader solo")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster section never showed this node as primary: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
