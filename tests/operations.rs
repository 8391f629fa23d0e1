//! What an operator reads: /metrics checked with the reference Python parsers
//! (prometheus_client, both the classic text and the OpenMetrics parser), every
//! request counted (no route, guard refusals), reload status, access-log fields,
//! audit lines for admin writes, the end of a passive ejection logged, and
//! colour in logs only on a terminal.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::backend::TestBackend;
use testkit::client::{self, Resp};
use testkit::{Fulcrum, TempDir, eventually};

async fn admin_get(admin: SocketAddr, path: &str, accept: Option<&str>) -> Resp {
    let mut req = Request::get(path).header("host", "admin");
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    client::send(admin, req.body(Full::new(Bytes::new())).unwrap()).await
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as classic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = openmetrics if sys.argv[1] == "openmetrics" else classic
out = []
for fam in parse(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// Every sample of an exposition as a reference parser read it; panics with
/// the parser's error if it refuses the text.
fn parse_with_python(format: &str, text: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", PARSE, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (`pip install prometheus_client`; .ci/run does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {format} parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_in_both_formats_and_count_every_request() {
    let a = TestBackend::echo("a").await;
    let f = Fulcrum::start(&format!(
        "listeners: [\"127.0.0.1:0\"]\nlimits: {{ max_header_bytes: 4KiB, max_body_bytes: 100 }}\npools:\n  - name: web\n    backends:\n      - {{ address: \"{}\", name: web-1, region: eu }}\nroutes:\n  - {{ name: site, host: app.test, pool: web }}\n",
        a.addr
    ));
    let (admin, addr) = (f.admin(), f.listener(0));
    for _ in 0..3 {
        let r = client::get_host(addr, "app.test", "/").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = client::get_host(addr, "elsewhere.test", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let smuggle = client::raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(smuggle.starts_with("HTTP/1.1 400"), "{smuggle}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "x".repeat(8 * 1024)
    );
    let too_big = client::raw(addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big}");
    let r = client::send(
        addr,
        Request::post("/")
            .header("host", "app.test")
            .body(Full::new(Bytes::from(vec![b'x'; 1000])))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Counted once the responses are over: poll.
    let classic = eventually("all 7 requests counted", || async {
        let r = admin_get(admin, "/metrics", None).await;
        let samples = parse_with_python("classic", &r.text());
        let total: f64 = samples
            .iter()
            .filter(|s| s["name"] == "fulcrum_requests_total")
            .filter_map(|s| s["value"].as_f64())
            .sum();
        (total == 7.0).then_some((r, samples))
    })
    .await;
    let (resp, samples) = classic;
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let req = |labels: &[(&str, &str)]| sample(&samples, "fulcrum_requests_total", labels);
    let backend = a.addr.to_string();
    assert_eq!(
        req(&[("route", "site"), ("backend", &backend), ("code", "200")]),
        Some(3.0)
    );
    assert_eq!(req(&[("route", ""), ("code", "404")]), Some(1.0));
    assert_eq!(req(&[("route", ""), ("code", "400")]), Some(1.0));
    assert_eq!(req(&[("route", ""), ("code", "431")]), Some(1.0));
    assert_eq!(req(&[("route", "site"), ("code", "413")]), Some(1.0));
    // No family lost its type (the classic parser reads a mislabelled one as
    // `unknown`).
    for s in &samples {
        assert_ne!(s["type"], "unknown", "{s}");
    }
    assert_eq!(
        sample(
            &samples,
            "fulcrum_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&samples, name, &[]).is_some(), "no {name}");
    }
    let listener = addr.to_string();
    assert!(
        sample(
            &samples,
            "fulcrum_received_bytes_total",
            &[("listener", &listener)]
        )
        .is_some_and(|b| b > 1000.0)
    );
    assert!(
        sample(
            &samples,
            "fulcrum_sent_bytes_total",
            &[("listener", &listener)]
        )
        .is_some_and(|b| b > 0.0)
    );
    assert_eq!(
        sample(
            &samples,
            "fulcrum_connections_total",
            &[("listener", &listener)]
        ),
        Some(7.0)
    );
    assert!(
        sample(
            &samples,
            "fulcrum_connections_open",
            &[("listener", &listener)]
        )
        .is_some()
    );
    assert_eq!(
        sample(
            &samples,
            "fulcrum_backend_response_duration_seconds_count",
            &[("pool", "web"), ("backend", &backend)]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &samples,
            "fulcrum_backend_up",
            &[("backend", &backend), ("region", "eu"), ("name", "web-1")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "fulcrum_config_last_reload_successful", &[]),
        Some(1.0)
    );

    // The same numbers in OpenMetrics when Prometheus asks for it.
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let r = admin_get(admin, "/metrics", Some(prometheus_accept)).await;
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let open = parse_with_python("openmetrics", &r.text());
    assert_eq!(
        sample(
            &open,
            "fulcrum_requests_total",
            &[("route", ""), ("code", "431")]
        ),
        Some(1.0)
    );

    // A rejected reload: the gauge drops, an event and the status say why.
    // (The file watcher picks the change up.)
    f.rewrite_config("pools: []\nroutes:\n  - { pool: missing }\n");
    let events = eventually("a config.rejected event", || async {
        let v = admin_get(admin, "/api/v1/events", None).await.json();
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "config.rejected")
            .then_some(v)
    })
    .await;
    let rejected = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "config.rejected")
        .unwrap();
    assert!(
        rejected["message"].as_str().unwrap().contains("missing"),
        "{rejected}"
    );
    let samples = parse_with_python("classic", &admin_get(admin, "/metrics", None).await.text());
    assert_eq!(
        sample(&samples, "fulcrum_config_last_reload_successful", &[]),
        Some(0.0)
    );
    let status = admin_get(admin, "/api/v1/status", None).await.json();
    assert_eq!(
        status["config_reload"]["last_successful"], false,
        "{status}"
    );
    // One log line per rejection (this config has one error): the two counts
    // meet (duplicate lines would keep them apart).
    eventually("one log line per rejection", || async {
        let events = admin_get(admin, "/api/v1/events", None).await.json();
        let rejections = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "config.rejected")
            .count();
        (f.stderr.count(|l| l.contains("reload rejected")) == rejections).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_fields_and_admin_audit_lines() {
    let a = TestBackend::echo("a").await;
    let dead = testkit::free_addr();
    let f = Fulcrum::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\", token: s3cret-token }}\nlisteners: [\"127.0.0.1:0\"]\npools:\n  - name: web\n    backends: [\"{}\", \"{dead}\"]\n    passive_health: {{ max_fails: 1, fail_duration: 1s }}\nroutes:\n  - {{ pool: web }}\n",
        a.addr
    ));
    let (admin, addr) = (f.admin(), f.listener(0));
    let r = client::send(
        addr,
        Request::get("/page")
            .header("host", "localhost")
            .header("user-agent", "ops-test/1.0")
            .header("referer", "http://example.test/from")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let line = eventually("the access log line", || async {
        f.access_lines().into_iter().find(|l| l["path"] == "/page")
    })
    .await;
    assert_eq!(line["user_agent"], "ops-test/1.0", "{line}");
    assert_eq!(line["referer"], "http://example.test/from", "{line}");
    assert_eq!(line["protocol"], "HTTP/1.1", "{line}");
    assert!(line.get("tls_version").is_none(), "plain HTTP: {line}");

    // The dead backend gets ejected by the first request sent to it (the
    // request itself is retried on `a`); its return is logged once.
    for _ in 0..4 {
        assert_eq!(client::get(addr, "/").await.status, StatusCode::OK);
    }
    f.stderr.wait_for("the ejection", |l| {
        l.contains("backend taken out") && l.contains(&dead.to_string())
    });
    f.stderr.wait_for("the return", |l| {
        l.contains("passive ejection over") && l.contains(&dead.to_string())
    });

    // Audit: a write with the token, one without, and a read (not audited).
    let post = |token: Option<&'static str>| {
        let mut req = Request::post(format!("/api/v1/pools/web/backends/{}/drain", a.addr))
            .header("host", "admin")
            .header("user-agent", "audit-test");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        client::send(admin, req.body(Full::new(Bytes::new())).unwrap())
    };
    assert_eq!(post(Some("s3cret-token")).await.status, StatusCode::OK);
    assert_eq!(post(None).await.status, StatusCode::UNAUTHORIZED);
    let audit = |status: &'static str| {
        f.stderr.wait_for("an audit line", move |l| {
            l.contains("\"message\":\"admin write\"") && l.contains(&format!("\"status\":{status}"))
        })
    };
    let ok: Value = serde_json::from_str(&audit("200")).unwrap();
    assert_eq!(ok["result"], "ok");
    assert_eq!(ok["user_agent"], "audit-test");
    assert!(ok["action"].as_str().unwrap().ends_with("/drain"), "{ok}");
    assert!(
        ok["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{ok}"
    );
    let token = ok["token"].as_str().unwrap();
    assert!(
        token.starts_with("sha256:") && !token.contains("s3cret"),
        "{ok}"
    );
    let refused: Value = serde_json::from_str(&audit("401")).unwrap();
    assert_eq!(refused["result"], "refused");
    assert_eq!(refused["token"], "none");
    assert!(
        refused["error"].as_str().unwrap().contains("token"),
        "{refused}"
    );
    assert_eq!(
        f.stderr
            .count(|l| l.contains("\"message\":\"admin write\"")),
        2,
        "reads are not audited"
    );
}

/// The first log line `fulcrum run` writes before failing on a busy port, run
/// with stderr on a terminal (`script` gives it one) or on a pipe.
fn first_log_line(on_terminal: bool, no_color: Option<&str>) -> String {
    let dir = TempDir::new("colour");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = dir.write(
        "fulcrum.yaml",
        &format!(
            "admin: null\nlisteners: [\"{}\"]\npools: []\nroutes: []\n",
            busy.local_addr().unwrap()
        ),
    );
    let args = ["--log-format", "text", "run", "-c", cfg.to_str().unwrap()];
    let mut cmd = if on_terminal {
        let mut c = Command::new("script");
        let line = std::iter::once(testkit::bin())
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        c.args(["-qefc", &line, "/dev/null"]);
        c
    } else {
        let mut c = Command::new(testkit::bin());
        c.args(args);
        c
    };
    cmd.env_remove("NO_COLOR").stdin(Stdio::null());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().expect("run fulcrum");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("cannot listen"), "{text}");
    text
}

#[test]
fn log_colour_only_on_a_terminal_and_never_with_no_color() {
    assert!(
        !first_log_line(false, None).contains('\x1b'),
        "colour codes on a pipe"
    );
    assert!(
        first_log_line(true, None).contains('\x1b'),
        "no colour on a terminal"
    );
    assert!(
        !first_log_line(true, Some("1")).contains('\x1b'),
        "colour despite NO_COLOR"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_log_with_chosen_fields_in_order() {
    let a = TestBackend::echo("a").await;
    let f = Fulcrum::start(&format!(
        "listeners: [\"127.0.0.1:0\"]\naccess_log: {{ format: text, fields: [status, path, user_agent, protocol] }}\npools:\n  - name: web\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: web }}\n",
        a.addr
    ));
    let r = client::send(
        f.listener(0),
        Request::get("/x?y=1")
            .header("host", "localhost")
            .header("user-agent", "a \"quoted\" agent")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    f.stderr.wait_for("the text access-log line", |l| {
        l == r#"status=200 path="/x?y=1" user_agent="a \"quoted\" agent" protocol=HTTP/1.1"#
    });
}
