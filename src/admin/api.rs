//! `/api/v1/...`: status, config, reload, pools and backends, events.

use super::command::{self, AdminCommand, Outcome};
use super::{AdminBody, error, json, read_body};
use crate::app::{ApiError, App};
use crate::config::BackendAddress;
use crate::upstream::backend::AdminState;
use crate::upstream::pool::Pool;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Largest config or backend document accepted.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn api_error(e: ApiError) -> Response<AdminBody> {
    let mut v = json!({ "error": e.message });
    if !e.errors.is_empty() {
        v["errors"] = Value::from(e.errors);
    }
    json(e.status, &v)
}

pub async fn route(app: &Arc<App>, req: Request<Incoming>, rest: String) -> Response<AdminBody> {
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.as_str();
    match segs.as_slice() {
        ["status"] if m == "GET" => json(StatusCode::OK, &status(app).await),
        ["config"] if m == "GET" => json(StatusCode::OK, &app.config_json().await),
        ["config"] if m == "PUT" => put_config(app, req, query.as_deref()).await,
        ["reload"] if m == "POST" => match app.reload_from_file(true).await {
            Ok(outcome) => {
                app.telemetry.reload.succeeded();
                json(
                    StatusCode::OK,
                    &json!({ "generation": outcome.generation() }),
                )
            }
            Err(e) => {
                let e = ApiError::from(e);
                reload_rejected(app, "POST /api/v1/reload", &e.message, &e.errors);
                api_error(e)
            }
        },
        ["pools"] if m == "GET" => {
            let rt = app.runtime.load();
            json(
                StatusCode::OK,
                &Value::Array(rt.pools.iter().map(|p| pool_json(p)).collect()),
            )
        }
        ["pools", name] if m == "GET" => match app.runtime.load().pool(name) {
            Some(p) => json(StatusCode::OK, &pool_json(p)),
            None => error(StatusCode::NOT_FOUND, format!("no pool named `{name}`")),
        },
        ["pools", name, "backends"] if m == "POST" => add_backend(app, name, req).await,
        ["pools", name, "backends", addr] if m == "GET" => match app.runtime.load().pool(name) {
            Some(p) => match p
                .members
                .iter()
                .find(|mb| mb.backend.key() == backend_key(app, name, addr))
            {
                Some(mb) => json(StatusCode::OK, &member_json(p, mb)),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("pool `{name}` has no backend {addr}"),
                ),
            },
            None => error(StatusCode::NOT_FOUND, format!("no pool named `{name}`")),
        },
        ["pools", name, "backends", addr] if m == "DELETE" => outcome(
            app.execute(AdminCommand::RemoveBackend {
                pool: name.to_string(),
                address: backend_key(app, name, addr),
            })
            .await,
        ),
        ["pools", name, "backends", addr, action] if m == "POST" => {
            backend_action(app, name, addr, action).await
        }
        ["events"] if m == "GET" => {
            let limit = query_param(query.as_deref(), "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            json(StatusCode::OK, &json!(app.events.recent(limit)))
        }
        ["events", "stream"] if m == "GET" => event_stream(app),
        ["history"] if m == "GET" => json(StatusCode::OK, &app.telemetry.history.json()),
        ["cluster"] if m == "GET" => match app.cluster() {
            Some(c) => json(StatusCode::OK, &c.status_json()),
            None => json(
                StatusCode::OK,
                &json!({
                    "node_id": null,
                    "role": "standalone",
                    "term": 0,
                    "leader": null,
                    "vip_holder": null,
                    "nodes": [],
                }),
            ),
        },
        ["failover", action] => {
            crate::failover::api::handle(app, &method, action, query.as_deref()).await
        }
        ["status"]
        | ["config"]
        | ["reload"]
        | ["pools"]
        | ["pools", _]
        | ["pools", _, "backends"]
        | ["pools", _, "backends", _]
        | ["pools", _, "backends", _, _]
        | ["events"]
        | ["events", "stream"]
        | ["history"]
        | ["cluster"] => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: /api/v1{rest}"),
        ),
    }
}

async fn status(app: &Arc<App>) -> Value {
    let rt = app.runtime.load();
    let listeners: Vec<Value> = app
        .listener_addresses()
        .await
        .into_iter()
        .map(|(configured, bound)| json!({"configured": configured.to_string(), "address": bound.to_string()}))
        .collect();
    let (mut total, mut up) = (0, 0);
    let now = crate::clock::now_ms();
    for (_, m) in rt.backends() {
        total += 1;
        if m.backend.available(now) {
            up += 1;
        }
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs_f64().floor(),
        "generation": rt.generation,
        "config_path": app.config_path.as_ref().map(|p| p.display().to_string()),
        "listeners": listeners,
        "admin": app.admin_address().await.map(|a| a.to_string()),
        "cluster_role": app.cluster().map(|c| c.role().word()).unwrap_or("standalone"),
        "requests_total": app.telemetry.requests.load(Relaxed),
        "pools": rt.pools.len(),
        "routes": rt.routes.len(),
        "backends": { "total": total, "available": up },
        "config_reload": app.telemetry.reload.json(),
        "certificates": app.certificates_json(),
    })
}

/// What the API calls a backend's state.
pub fn state_word(m: &crate::upstream::pool::Member, now: u64) -> &'static str {
    match m.backend.admin_state() {
        AdminState::Draining => "draining",
        AdminState::Disabled => "disabled",
        AdminState::Enabling => "down",
        AdminState::Active if m.backend.healthy(now) => "up",
        AdminState::Active => "down",
    }
}

pub fn member_json(p: &Pool, m: &crate::upstream::pool::Member) -> Value {
    let now = crate::clock::now_ms();
    let b = &m.backend;
    let mut v = json!({
        "address": b.key(),
        "state": state_word(m, now),
        "healthy": b.healthy(now),
        "failover_level": m.level,
        "weight": m.weight,
        "in_flight": b.in_flight.load(Relaxed),
        "requests": b.requests.load(Relaxed),
        "failures": b.failures.load(Relaxed),
        "latency_ms": (b.latency_ewma_us() / 10.0).round() / 100.0,
        "health_check": m.health_check.as_ref().map(|h| json!({
            "path": h.path,
            "passing": b.active_up(),
            "consecutive_failures": b.consecutive_fail.load(Relaxed),
            "last_error": b.last_check_error.load().as_deref().cloned(),
        })),
        "passive_ejected": b.passively_ejected(now),
    });
    if let Some(r) = &m.region {
        v["region"] = Value::String(r.clone());
    }
    if let Some(n) = &m.name {
        v["name"] = Value::String(n.clone());
    }
    if b.admin_state() == AdminState::Enabling {
        v["admin_state"] = Value::String("enabling".into());
    }
    if m.max_requests > 0 {
        v["max_requests"] = Value::from(m.max_requests);
    }
    let _ = p;
    v
}

pub fn pool_json(p: &Pool) -> Value {
    json!({
        "name": p.name,
        "algorithm": p.balancer.algorithm.name(),
        "backends": p.members.iter().map(|m| member_json(p, m)).collect::<Vec<_>>(),
        "retries": p.state.retries.load(Relaxed),
        "hedges": p.state.hedges.load(Relaxed),
        "queue": p.queue.map(|q| json!({
            "waiting": p.state.queued.load(Relaxed),
            "size": q.size,
            "rejected": p.state.queue_rejected.load(Relaxed),
        })),
        "failover": crate::failover::status_json(p),
    })
}

async fn put_config(
    app: &Arc<App>,
    req: Request<Incoming>,
    query: Option<&str>,
) -> Response<AdminBody> {
    let persist = query_param(query, "persist").is_some_and(|v| v == "true" || v == "1");
    let body = match read_body(req, BODY_LIMIT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the config must be UTF-8 text (YAML or JSON)",
        );
    };
    if persist {
        if app.cluster().is_some() {
            return error(
                StatusCode::CONFLICT,
                "in a cluster the replicated log under state_dir keeps the config; ?persist is for standalone nodes",
            );
        }
        return match app.put_config(text, true).await {
            Ok(generation) => {
                app.telemetry.reload.succeeded();
                json(
                    StatusCode::OK,
                    &json!({ "generation": generation, "persisted": true }),
                )
            }
            Err(e) => {
                reload_rejected(app, "PUT /api/v1/config", &e.message, &e.errors);
                api_error(e)
            }
        };
    }
    let o = app
        .execute(AdminCommand::PutConfig {
            text: text.to_string(),
        })
        .await;
    if o.is_success() {
        app.telemetry.reload.succeeded();
    } else {
        let errors: Vec<String> = o.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let message = o.body["error"].as_str().unwrap_or("refused");
        reload_rejected(app, "PUT /api/v1/config", message, &errors);
    }
    outcome(o)
}

/// A config sent or reloaded through the API was refused: one log line, the
/// reload metrics and a `config.rejected` event.
fn reload_rejected(app: &App, source: &str, message: &str, errors: &[String]) {
    let detail = if errors.is_empty() {
        vec![message.to_string()]
    } else {
        errors.to_vec()
    };
    tracing::error!(source, error = %detail.join("; "), "reload rejected; the previous configuration keeps serving");
    app.telemetry.reload.rejected(&app.events, source, &detail);
}

fn outcome(o: Outcome) -> Response<AdminBody> {
    json(o.status_code(), &o.body)
}

async fn add_backend(app: &Arc<App>, pool: &str, req: Request<Incoming>) -> Response<AdminBody> {
    let body = match read_body(req, BODY_LIMIT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let Some(address) = v.get("address").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "`address` (host:port) is required");
    };
    let address = match BackendAddress::parse(address) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let weight = match v.get("weight") {
        None | Some(Value::Null) => 1,
        Some(w) => match w.as_u64().filter(|w| (1..=1_000_000).contains(w)) {
            Some(w) => w as u32,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "`weight` must be an integer from 1 to 1000000",
                );
            }
        },
    };
    let level = match v.get("failover_level") {
        None | Some(Value::Null) => 0,
        Some(l) => match l.as_u64().filter(|l| *l <= 100) {
            Some(l) => l as u32,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "`failover_level` must be an integer from 0 to 100",
                );
            }
        },
    };
    for key in v
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if !["address", "weight", "failover_level", "region", "name"].contains(&key.as_str()) {
            return error(StatusCode::BAD_REQUEST, format!("unknown field `{key}`"));
        }
    }
    outcome(
        app.execute(AdminCommand::AddBackend {
            pool: pool.to_string(),
            address: address.key.clone(),
            weight,
            failover_level: level,
            region: v.get("region").and_then(Value::as_str).map(str::to_string),
            name: v.get("name").and_then(Value::as_str).map(str::to_string),
        })
        .await,
    )
}

async fn backend_action(
    app: &Arc<App>,
    pool: &str,
    addr: &str,
    action: &str,
) -> Response<AdminBody> {
    if command::backend_action(action).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown action `{action}` (drain, disable, enable)"),
        );
    }
    outcome(
        app.execute(AdminCommand::BackendState {
            pool: pool.to_string(),
            address: backend_key(app, pool, addr),
            action: action.to_string(),
        })
        .await,
    )
}

/// The key (`host:port`) of the backend a path names: its key as listed, its
/// `name`, or an address written as `POST .../backends` takes it (`host`
/// alone means port 80, `http://host:port`...), so that what `add` stored is
/// what `remove`, `drain`... find.
fn backend_key(app: &App, pool: &str, given: &str) -> String {
    let rt = app.runtime.load();
    if let Some(p) = rt.pool(pool) {
        if p.members.iter().any(|m| m.backend.key() == given) {
            return given.to_string();
        }
        if let Some(m) = p.members.iter().find(|m| m.name.as_deref() == Some(given)) {
            return m.backend.key().to_string();
        }
    }
    BackendAddress::parse(given).map_or_else(|_| given.to_string(), |a| a.key)
}

/// Server-sent events: every event as it happens, plus a comment every 15 s to
/// keep proxies from closing an idle stream.
fn event_stream(app: &Arc<App>) -> Response<AdminBody> {
    let mut rx = app.events.subscribe();
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b": connected\n\n")).await;
        loop {
            let msg = tokio::select! {
                e = rx.recv() => match e {
                    Ok(e) => Bytes::from(format!("event: {}\ndata: {}\n\n", e.kind, serde_json::to_string(&e).unwrap_or_default())),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                _ = tokio::time::sleep(std::time::Duration::from_secs(15)) => Bytes::from_static(b": keep-alive\n\n"),
                _ = shutdown.cancelled() => return,
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    let body = ChannelBody(body_rx).boxed();
    let mut r = Response::new(body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("%5B%3A%3A1%5D%3A80"), "[::1]:80");
        assert_eq!(percent_decode("10.0.0.1:80"), "10.0.0.1:80");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%4"), "end%4");
        assert_eq!(percent_decode("%é1"), "%é1");
    }
}
