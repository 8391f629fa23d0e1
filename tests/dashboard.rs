//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver). It shows the pools and reflects a backend going down without a
//! page reload; at 1280 px it draws the traffic graphs and the availability
//! timeline, asks before disabling, and turns unmistakably red when the admin
//! server goes away; at 1280 px and at a phone's width every action is in view.
//! Screenshots land in target/tmp/ and are decoded and checked.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::backend::{TestBackend, full};
use testkit::{DEADLINE, Fulcrum, client};

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
        let port = testkit::free_port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        testkit::eventually("chromedriver to listen", || async {
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

/// A decoded screenshot (RGB).
struct Shot {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

impl Shot {
    fn decode(png_bytes: &[u8]) -> Shot {
        assert!(png_bytes.starts_with(b"\x89PNG"), "not a PNG screenshot");
        let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
            .read_info()
            .expect("a readable PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
        let info = reader.next_frame(&mut buf).expect("PNG frame");
        let step = info.color_type.samples();
        assert!(
            step >= 3,
            "unexpected PNG colour type {:?}",
            info.color_type
        );
        let rgb = buf[..info.buffer_size()]
            .chunks(step)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        Shot {
            width: info.width,
            height: info.height,
            rgb,
        }
    }

    /// Pixels within a small distance of colour `hex` (0xRRGGBB).
    fn count_near(&self, hex: u32) -> usize {
        let want = [
            (hex >> 16) as i32,
            (hex >> 8 & 0xff) as i32,
            (hex & 0xff) as i32,
        ];
        self.rgb
            .iter()
            .filter(|p| (0..3).all(|i| (p[i] as i32 - want[i]).abs() <= 12))
            .count()
    }

    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        self.rgb[(y * self.width + x) as usize]
    }
}

/// Takes a screenshot of the viewport, keeps it under target/tmp/ and decodes it.
async fn screenshot(driver: &Driver, id: &str, name: &str) -> Shot {
    let shot = driver
        .call("GET", &format!("/session/{id}/screenshot"), None)
        .await;
    let png = b64decode(shot["value"].as_str().unwrap_or_default());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&out, &png).unwrap();
    println!("screenshot: {}", out.display());
    Shot::decode(&png)
}

async fn js(driver: &Driver, id: &str, script: &str) -> Value {
    driver
        .call(
            "POST",
            &format!("/session/{id}/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
        .await["value"]
        .clone()
}

/// Polls `script` until it returns something truthy (not null, false, 0 or "").
async fn wait_js(driver: &Driver, id: &str, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let v = js(driver, id, script).await;
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard never showed {what} (last: {v})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every backend action button is inside the viewport and its card, and is the
/// element a click at its centre would hit (nothing covers or clips it); the
/// page is no wider than the window.
async fn assert_actions_in_view(driver: &Driver, id: &str) {
    let report = js(
        driver,
        id,
        r#"const bad = [];
        const buttons = [...document.querySelectorAll('#pools button[data-act]')];
        for (const b of buttons) {
          b.scrollIntoView({block: 'center', inline: 'nearest'});
          const r = b.getBoundingClientRect(), card = b.closest('section.card').getBoundingClientRect();
          const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
          if (r.width < 10 || r.height < 10 || r.left < 0 || r.right > window.innerWidth + 0.5
              || r.right > card.right + 0.5 || r.left < card.left - 0.5 || hit !== b)
            bad.push(`${b.closest('tr').dataset.backend} ${b.dataset.act}: ${JSON.stringify(r)} card ${card.right} hit ${hit && hit.outerHTML.slice(0, 60)}`);
        }
        window.scrollTo(0, 0);
        return {buttons: buttons.length, bad, overflow: document.documentElement.scrollWidth - window.innerWidth};"#,
    )
    .await;
    assert!(report["buttons"].as_u64().unwrap_or(0) >= 2, "{report}");
    assert_eq!(report["bad"], json!([]), "actions out of view: {report}");
    assert!(
        report["overflow"].as_i64().unwrap_or(99) <= 1,
        "page wider than the window: {report}"
    );
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
    let a = TestBackend::start(Arc::new(move |req: Request<Incoming>| {
        let h = h.clone();
        Box::pin(async move {
            let status = if req.uri().path() == "/health" && !h.load(Ordering::SeqCst) {
                503
            } else {
                200
            };
            Response::builder().status(status).body(full("a")).unwrap()
        })
    }))
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

    assert_actions_in_view(&driver, &id).await;
    let shot = screenshot(&driver, &id, "dashboard-phone.png").await;
    assert!(
        (380..=400).contains(&shot.width),
        "phone screenshot {} px wide",
        shot.width
    );
    // The down backend's red badge is on screen.
    assert!(
        shot.count_near(0xf85149) > 20,
        "no red state badge in the screenshot"
    );
    driver.call("DELETE", &format!("/session/{id}"), None).await;
}

/// A headless browser session on `url`; returns the session id.
/// `size` is the window, e.g. "390,844" (a phone).
async fn open(driver: &Driver, url: &str, size: &str) -> String {
    let mut caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", format!("--window-size={size}")]
        }
    }}});
    // Headless windows are at least 500 px wide: a phone's viewport is emulated.
    let (w, h) = size.split_once(',').unwrap();
    let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
    if w < 500 {
        caps["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["mobileEmulation"] =
            json!({"deviceMetrics": {"width": w, "height": h, "pixelRatio": 1.0}});
    }
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
    let dir = testkit::TempDir::new("dash-cluster");
    let port = testkit::free_port();
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

/// Graphs, timeline, badges, the disable confirmation and the disconnected
/// state at 1280 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_graphs_timeline_confirmation_and_disconnection() {
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let a = TestBackend::start(Arc::new(move |req: Request<Incoming>| {
        let h = h.clone();
        Box::pin(async move {
            let status = if req.uri().path() == "/health" && !h.load(Ordering::SeqCst) {
                503
            } else {
                200
            };
            Response::builder().status(status).body(full("a")).unwrap()
        })
    }))
    .await;
    let b = TestBackend::echo("b").await;
    let mut f = Fulcrum::start(&format!(
        "listeners: [\"127.0.0.1:0\"]\naccess_log: {{ enabled: false }}\npools:\n  - name: app\n    backends:\n      - {{ address: \"{}\", name: main-server-with-a-long-name }}\n      - {{ address: \"{}\", name: spare, failover_level: 1 }}\n    health_check: {{ path: /health, interval: 200ms, timeout: 150ms, unhealthy_threshold: 1 }}\nroutes:\n  - {{ pool: app }}\nfailover: {{ strategy: immediate, check_interval: 200ms, recovery_interval: 1s }}\n",
        a.addr, b.addr
    ));
    let proxy = f.listener(0);
    // Steady traffic for the graphs, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let traffic = tokio::spawn(async move {
        for _ in 0..1200 {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            let _ = client::try_send(
                proxy,
                Request::get("/")
                    .header("host", "localhost")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let driver = Driver::start().await;
    let id = open(&driver, &format!("http://{}/", f.admin()), "1280,900").await;
    assert_eq!(js(&driver, &id, "return window.innerWidth").await, 1280);

    // Request-rate graph: the pool's line and the primary's, with traffic in them.
    wait_js(
        &driver,
        &id,
        "the request-rate graph",
        "const s = document.querySelector('svg.chart-svg[data-pool=\"app\"][data-metric=\"rps\"]');
         const total = s && s.querySelector('polyline[data-series=\"total\"]');
         return s && total && +total.dataset.points >= 2 && +s.dataset.max > 0;",
    )
    .await;
    for metric in ["eps", "latency_ms"] {
        let present = js(
            &driver,
            &id,
            &format!("return !!document.querySelector('svg.chart-svg[data-pool=\"app\"][data-metric=\"{metric}\"]')"),
        )
        .await;
        assert_eq!(present, true, "no {metric} graph");
    }
    let latency_line = wait_js(
        &driver,
        &id,
        "a latency line for the primary",
        &format!("const p = document.querySelector('svg.chart-svg[data-metric=\"latency_ms\"] polyline[data-series=\"{}\"]'); return p ? +p.dataset.points : 0;", a.addr),
    )
    .await;
    assert!(latency_line.as_f64().unwrap_or(0.0) >= 1.0);
    // Name and backup badge.
    let row_b = js(
        &driver,
        &id,
        &format!(
            "return document.querySelector('tr[data-backend=\"app/{}\"]').innerText",
            b.addr
        ),
    )
    .await;
    let row_b = row_b.as_str().unwrap_or_default();
    assert!(
        row_b.contains("spare") && row_b.contains("backup 1"),
        "{row_b}"
    );
    assert_actions_in_view(&driver, &id).await;
    let shot = screenshot(&driver, &id, "dashboard-1280.png").await;
    assert_eq!(shot.width, 1280);
    assert!(
        shot.count_near(0x58a6ff) > 30,
        "no graph line (#58a6ff) in the screenshot"
    );
    assert!(
        shot.count_near(0x3fb950) > 30,
        "no green (up) in the screenshot"
    );

    // The primary fails: its timeline row turns red with an event mark, and the
    // pool's row shows the backup level serving with the failover mark.
    healthy.store(false, Ordering::SeqCst);
    wait_js(
        &driver,
        &id,
        "the primary down in the timeline",
        &format!("const r = document.querySelector('#timeline .tl-row[data-backend=\"app/{}\"]'); return r && r.querySelector('rect[data-state=\"down\"]') && r.querySelector('.tl-mark[data-kind=\"backend.down\"]');", a.addr),
    )
    .await;
    wait_js(
        &driver,
        &id,
        "the failover in the timeline",
        "const r = document.querySelector('#timeline .tl-row[data-pool=\"app\"]'); return r && r.querySelector('rect[data-state=\"level 1\"]') && r.querySelector('.tl-mark[data-kind=\"failover.activated\"]');",
    )
    .await;
    // A long health-check error is cut short in the table, whole on hover.
    let err = js(
        &driver,
        &id,
        &format!("const e = document.querySelector('tr[data-backend=\"app/{}\"] .err'); return e ? e.title : null;", a.addr),
    )
    .await;
    assert!(err.as_str().is_some_and(|t| !t.is_empty()), "{err}");
    assert_actions_in_view(&driver, &id).await;

    // Disable asks first; cancel changes nothing, confirm disables.
    let disable = format!(
        "tr[data-backend=\"app/{}\"] button[data-act=\"disable\"]",
        b.addr
    );
    click(&driver, &id, &disable).await;
    let text = wait_js(
        &driver,
        &id,
        "the confirmation",
        "const c = document.getElementById('confirm'); return c.classList.contains('show') && c.innerText;",
    )
    .await;
    assert!(
        text.as_str().unwrap_or_default().contains("Disable"),
        "{text}"
    );
    click(&driver, &id, "#confirm-no").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let state = format!(
        "return document.querySelector('tr[data-backend=\"app/{}\"] .state').textContent",
        b.addr
    );
    assert_eq!(
        js(&driver, &id, &state).await,
        "up",
        "cancel disabled anyway"
    );
    click(&driver, &id, &disable).await;
    wait_js(
        &driver,
        &id,
        "the confirmation",
        "return document.getElementById('confirm').classList.contains('show')",
    )
    .await;
    click(&driver, &id, "#confirm-yes").await;
    wait_js(
        &driver,
        &id,
        "the backup disabled",
        &format!("{state} === 'disabled'"),
    )
    .await;

    // The admin server goes away: a red banner over a greyed page.
    stop.store(true, Ordering::SeqCst);
    let _ = traffic.await;
    f.child.kill().unwrap();
    let _ = f.child.wait();
    let banner = wait_js(
        &driver,
        &id,
        "the disconnected state",
        "const b = document.getElementById('offline'); return document.body.classList.contains('offline') && b.offsetHeight > 0 && b.innerText;",
    )
    .await;
    assert!(
        banner.as_str().unwrap_or_default().contains("Disconnected"),
        "{banner}"
    );
    let shot = screenshot(&driver, &id, "dashboard-disconnected.png").await;
    let top = shot.pixel(5, 5);
    assert!(
        top[0] > 200 && top[1] < 120 && top[2] < 120,
        "the top of the page is not red when disconnected: {top:?}"
    );
    assert!(shot.height > 100);
    // Green badges are gone (greyed out with the rest of the page).
    assert!(
        shot.count_near(0x3fb950) < 10,
        "still green while disconnected"
    );
}

/// A real WebDriver click (it fails if something covers the element).
async fn click(driver: &Driver, id: &str, css: &str) {
    // The dashboard redraws its tables on every refresh: an element found just
    // before a redraw is gone when clicked ("stale element reference"), so find
    // it again and retry, within a generous deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = driver
            .call(
                "POST",
                &format!("/session/{id}/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let el = found["value"]["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string();
        let r = driver
            .call(
                "POST",
                &format!("/session/{id}/element/{el}/click"),
                Some(json!({})),
            )
            .await;
        if r["value"].is_null() {
            return;
        }
        let stale = r["value"]["error"] == "stale element reference";
        assert!(
            stale && std::time::Instant::now() < deadline,
            "click on {css} failed: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
