//! OTLP trace export to a real HTTP receiver: a span per request carrying the
//! request ID, continuing the client's W3C traceparent, with a child span per
//! upstream attempt; the backend sees Fulcrum's span as its parent.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use testkit::backend::{TestBackend, full};
use testkit::{Fulcrum, client, eventually};

fn spans(exports: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for e in exports {
        for rs in e["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_the_collector() {
    let got = Arc::new(Mutex::new(Vec::<Value>::new()));
    let g = got.clone();
    let collector = TestBackend::start(Arc::new(move |req: Request<Incoming>| {
        let g = g.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if path == "/v1/traces"
                && let Ok(v) = serde_json::from_slice::<Value>(&body)
            {
                g.lock().unwrap().push(v);
            }
            Response::builder()
                .header("content-type", "application/json")
                .body(full("{}"))
                .unwrap()
        })
    }))
    .await;
    let be = TestBackend::echo("be").await;
    let f = Fulcrum::start(&format!(
        "listeners: [\"127.0.0.1:0\"]\ntracing: {{ otlp_endpoint: \"http://{}\", protocol: http/json, service_name: fulcrum-test }}\npools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ name: main, pool: app }}\n",
        collector.addr, be.addr
    ));
    let parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let r = client::send(
        f.listener(0),
        Request::get("/x")
            .header("host", "t")
            .header("x-request-id", "trace-me-1")
            .header("traceparent", format!("00-{parent_trace}-{parent_span}-01"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // The backend got a traceparent in the same trace, whose parent is Fulcrum's span.
    let tp = be.last().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts[1], parent_trace);
    assert_ne!(parts[2], parent_span);
    let fulcrum_span = parts[2].to_string();

    let all = eventually("spans at the collector", || async {
        let s = spans(&got.lock().unwrap());
        (s.len() >= 2).then_some(s)
    })
    .await;
    let server = all
        .iter()
        .find(|s| {
            attr(s, "fulcrum.request_id").and_then(|v| v["stringValue"].as_str())
                == Some("trace-me-1")
        })
        .unwrap_or_else(|| panic!("no span with the request id: {all:?}"));
    assert_eq!(
        server["traceId"].as_str().unwrap().to_lowercase(),
        parent_trace
    );
    assert_eq!(
        server["parentSpanId"].as_str().unwrap().to_lowercase(),
        parent_span
    );
    assert_eq!(
        server["spanId"].as_str().unwrap().to_lowercase(),
        fulcrum_span
    );
    assert_eq!(
        attr(server, "fulcrum.route").unwrap()["stringValue"],
        "main"
    );
    let child = all
        .iter()
        .find(|s| s["parentSpanId"].as_str().map(str::to_lowercase) == Some(fulcrum_span.clone()))
        .unwrap_or_else(|| panic!("no attempt span: {all:?}"));
    assert_eq!(
        attr(child, "server.address").unwrap()["stringValue"],
        be.addr.to_string()
    );
}
