//! `/api/v1/...`: status, config, reload, pools and backends, events, cluster.

use super::{AdminBody, AdminContext, error, json, outcome, read_body};
use crate::command::{BackendAction, Command, PurgeKind};
use crate::config::BackendAddress;
use crate::proxy::headers as hdr;
use crate::upstream::backend::AdminState;
use crate::upstream::member::Member;
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

/// A query parameter, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    hdr::query_param(query?, name).map(hdr::percent_decode)
}

pub(super) async fn route(
    ctx: &Arc<AdminContext>,
    req: Request<Incoming>,
    rest: String,
) -> Response<AdminBody> {
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(hdr::percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.as_str();
    match segs.as_slice() {
        ["status"] if m == "GET" => json(StatusCode::OK, &status(ctx)),
        ["config"] if m == "GET" => json(StatusCode::OK, &config_json(ctx)),
        ["config"] if m == "PUT" => put_config(ctx, req, query.as_deref()).await,
        ["reload"] if m == "POST" => outcome(
            ctx.commands
                .submit(Command::ReloadFile { force: true })
                .await,
            StatusCode::OK,
        ),
        ["pools"] if m == "GET" => {
            let rt = ctx.proxy.snapshot.load();
            let found = ctx.discovery.status.load();
            json(
                StatusCode::OK,
                &Value::Array(
                    rt.pools
                        .iter()
                        .map(|p| pool_json(p, found.as_deref()))
                        .collect(),
                ),
            )
        }
        ["pools", name] if m == "GET" => match ctx.proxy.snapshot.load().pool(name) {
            Some(p) => json(
                StatusCode::OK,
                &pool_json(p, ctx.discovery.status.load().as_deref()),
            ),
            None => error(StatusCode::NOT_FOUND, format!("no pool named `{name}`")),
        },
        ["pools", name, "backends"] if m == "POST" => add_backend(ctx, name, req).await,
        ["pools", name, "backends", addr] if m == "GET" => {
            match ctx.proxy.snapshot.load().pool(name) {
                Some(p) => match p
                    .members
                    .iter()
                    .find(|mb| mb.backend.key() == backend_key(ctx, name, addr))
                {
                    Some(mb) => {
                        let mut v = member_json(mb);
                        discovered(&mut v, name, ctx.discovery.status.load().as_deref());
                        json(StatusCode::OK, &v)
                    }
                    None => error(
                        StatusCode::NOT_FOUND,
                        format!("pool `{name}` has no backend {addr}"),
                    ),
                },
                None => error(StatusCode::NOT_FOUND, format!("no pool named `{name}`")),
            }
        }
        ["pools", name, "backends", addr] if m == "DELETE" => outcome(
            ctx.commands
                .submit(Command::RemoveBackend {
                    pool: name.to_string(),
                    address: backend_key(ctx, name, addr),
                })
                .await,
            StatusCode::OK,
        ),
        ["pools", name, "backends", addr, action] if m == "POST" => {
            backend_action(ctx, name, addr, action).await
        }
        ["events"] if m == "GET" => {
            let limit = query_param(query.as_deref(), "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            json(StatusCode::OK, &json!(ctx.proxy.events.recent(limit)))
        }
        ["events", "stream"] if m == "GET" => event_stream(ctx),
        ["history"] if m == "GET" => json(StatusCode::OK, &ctx.history.json()),
        ["discovery"] if m == "GET" => match ctx.discovery.status.load().as_deref() {
            Some(s) => json(StatusCode::OK, &s.json()),
            None => error(
                StatusCode::NOT_FOUND,
                "discovery is not configured (discovery.docker)",
            ),
        },
        ["cluster"] if m == "GET" => match ctx.cluster.get() {
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
        ["cache"] if m == "GET" => json(StatusCode::OK, &cache_json(ctx)),
        ["cache", "purge"] if m == "POST" => purge_cache(ctx, req).await,
        ["cluster", "nodes"] if m == "POST" => add_node(ctx, req).await,
        ["cluster", "nodes", id] if m == "DELETE" => outcome(
            ctx.commands
                .submit(Command::RemoveNode { id: id.to_string() })
                .await,
            StatusCode::OK,
        ),
        ["failover", action] => {
            super::failover::handle(ctx, &method, action, query.as_deref()).await
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
        | ["discovery"]
        | ["cache"]
        | ["cache", "purge"]
        | ["cluster"]
        | ["cluster", "nodes"]
        | ["cluster", "nodes", _] => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: /api/v1{rest}"),
        ),
    }
}

fn status(ctx: &AdminContext) -> Value {
    let rt = ctx.proxy.snapshot.load();
    let node = ctx.status.load();
    let listeners: Vec<Value> = node
        .listeners
        .iter()
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
        "uptime_seconds": ctx.started.elapsed().as_secs_f64().floor(),
        "generation": rt.generation,
        "config_path": node.config_path.as_ref().map(|p| p.display().to_string()),
        "listeners": listeners,
        "admin": node.admin.map(|a| a.to_string()),
        "cluster_role": ctx.cluster.get().map(|c| c.role().word()).unwrap_or("standalone"),
        "requests_total": ctx.proxy.telemetry.requests.load(Relaxed),
        "pools": rt.pools.len(),
        "routes": rt.routes.len(),
        "backends": { "total": total, "available": up },
        "config_reload": ctx.proxy.telemetry.reload.json(),
        "certificates": certificates_json(ctx),
    })
}

/// Every certificate served, for the status page.
fn certificates_json(ctx: &AdminContext) -> Value {
    let rt = ctx.proxy.snapshot.load();
    let certs = crate::tls::certificates(&rt.config, &ctx.proxy.acme.load());
    Value::Array(
        certs
            .into_iter()
            .map(|c| {
                json!({
                    "names": c.names,
                    "issuer": c.issuer,
                    "not_after": crate::clock::rfc3339(c.not_after as f64),
                    "source": c.source,
                })
            })
            .collect(),
    )
}

/// `GET /api/v1/config`: the running config (secrets redacted) and the changes
/// made on top of the file.
fn config_json(ctx: &AdminContext) -> Value {
    let rt = ctx.proxy.snapshot.load();
    let node = ctx.status.load();
    let mut states = Vec::new();
    for (p, m) in rt.backends() {
        let s = m.backend.admin_state();
        if s != AdminState::Active {
            states.push(json!({"pool": p.name, "address": m.backend.key(), "state": format!("{s:?}").to_lowercase()}));
        }
    }
    let mut changes = node.layers.clone();
    changes["backend_states"] = Value::Array(states);
    json!({
        "generation": rt.generation,
        "source": node.config_path.as_ref().map(|p| p.display().to_string()),
        "config": crate::config::serialize::config(&rt.config, true),
        "runtime_changes": changes,
    })
}

/// What the API calls a backend's state.
pub(super) fn state_word(m: &Member, now: u64) -> &'static str {
    match m.backend.admin_state() {
        AdminState::Draining => "draining",
        AdminState::Disabled => "disabled",
        AdminState::Enabling => "down",
        AdminState::Active if m.backend.healthy(now) => "up",
        AdminState::Active => "down",
    }
}

pub(crate) fn member_json(m: &Member) -> Value {
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
    v
}

/// Marks a backend that discovery found: `source` and its container.
fn discovered(v: &mut Value, pool: &str, found: Option<&crate::discovery::Status>) {
    let key = v["address"].as_str().unwrap_or_default().to_string();
    if let Some((id, name)) = found.and_then(|s| s.container_of(pool, &key)) {
        v["source"] = Value::String("docker".into());
        v["container"] = json!({"id": id, "name": name});
    }
}

fn pool_json(p: &Pool, found: Option<&crate::discovery::Status>) -> Value {
    let backends: Vec<Value> = p
        .members
        .iter()
        .map(|m| {
            let mut v = member_json(m);
            discovered(&mut v, &p.name, found);
            v
        })
        .collect();
    let source = match found {
        Some(s) if s.pools.contains(&p.name) => "docker",
        _ => "config",
    };
    json!({
        "name": p.name,
        "source": source,
        "algorithm": p.balancer.algorithm.name(),
        "backends": backends,
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
    ctx: &AdminContext,
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
    let text = text.to_string();
    let cmd = if persist {
        Command::PersistConfig { text }
    } else {
        Command::ReplaceConfig { text }
    };
    outcome(ctx.commands.submit(cmd).await, StatusCode::OK)
}

/// `GET /api/v1/cache`: per caching route, what it holds and how it answers.
fn cache_json(ctx: &AdminContext) -> Value {
    let rt = ctx.proxy.snapshot.load();
    let routes: Vec<Value> = rt
        .routes
        .iter()
        .filter_map(|r| r.cache.as_ref().map(|c| (r, c)))
        .map(|(r, c)| {
            let counts = c.counters.snapshot();
            let get = |k: &str| counts.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
            let served = get("hit") + get("stale") + get("revalidated") + get("coalesced");
            let total = served + get("miss");
            let requests: serde_json::Map<String, Value> = counts
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            json!({
                "route": &*r.name,
                "entries": c.store.entries(),
                "bytes": c.store.bytes(),
                "max_size": c.store.capacity(),
                "evictions": c.store.evictions(),
                "requests": requests,
                "hit_ratio": if total == 0 { 0.0 } else { served as f64 / total as f64 },
            })
        })
        .collect();
    json!({ "routes": routes })
}

/// `POST /api/v1/cache/purge` with `{"url"|"prefix"|"tag": "..."}`.
async fn purge_cache(ctx: &AdminContext, req: Request<Incoming>) -> Response<AdminBody> {
    let body = match read_body(req, BODY_LIMIT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let given: Vec<(PurgeKind, &str)> = [
        (PurgeKind::Url, "url"),
        (PurgeKind::Prefix, "prefix"),
        (PurgeKind::Tag, "tag"),
    ]
    .into_iter()
    .filter_map(|(k, name)| v.get(name).and_then(Value::as_str).map(|s| (k, s)))
    .collect();
    let [(kind, value)] = given.as_slice() else {
        return error(
            StatusCode::BAD_REQUEST,
            "give exactly one of `url`, `prefix` or `tag` (a string)",
        );
    };
    if value.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the purge value is empty");
    }
    let cmd = Command::PurgeCache {
        kind: *kind,
        value: value.to_string(),
    };
    outcome(ctx.commands.submit(cmd).await, StatusCode::OK)
}

async fn add_backend(
    ctx: &AdminContext,
    pool: &str,
    req: Request<Incoming>,
) -> Response<AdminBody> {
    let body = match read_body(req, BODY_LIMIT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let cmd = match add_backend_command(pool, &v) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    outcome(ctx.commands.submit(cmd).await, StatusCode::CREATED)
}

/// The command a `POST .../backends` body asks for.
pub(crate) fn add_backend_command(pool: &str, v: &Value) -> Result<Command, String> {
    let Some(address) = v.get("address").and_then(Value::as_str) else {
        return Err("`address` (host:port) is required".into());
    };
    let address = BackendAddress::parse(address)?;
    let weight = match v.get("weight") {
        None | Some(Value::Null) => 1,
        Some(w) => match w.as_u64().filter(|w| (1..=1_000_000).contains(w)) {
            Some(w) => w as u32,
            None => return Err("`weight` must be an integer from 1 to 1000000".into()),
        },
    };
    let level = match v.get("failover_level") {
        None | Some(Value::Null) => 0,
        Some(l) => match l.as_u64().filter(|l| *l <= 100) {
            Some(l) => l as u32,
            None => return Err("`failover_level` must be an integer from 0 to 100".into()),
        },
    };
    if let Some(o) = v.as_object() {
        for key in o.keys() {
            if !["address", "weight", "failover_level", "region", "name"].contains(&key.as_str()) {
                return Err(format!("unknown field `{key}`"));
            }
        }
    }
    Ok(Command::AddBackend {
        pool: pool.to_string(),
        address: address.key.clone(),
        weight,
        failover_level: level,
        region: v.get("region").and_then(Value::as_str).map(str::to_string),
        name: v.get("name").and_then(Value::as_str).map(str::to_string),
    })
}

async fn backend_action(
    ctx: &AdminContext,
    pool: &str,
    addr: &str,
    action: &str,
) -> Response<AdminBody> {
    let Some(action) = BackendAction::parse(action) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown action `{action}` (drain, disable, enable)"),
        );
    };
    outcome(
        ctx.commands
            .submit(Command::Backend {
                pool: pool.to_string(),
                address: backend_key(ctx, pool, addr),
                action,
            })
            .await,
        StatusCode::OK,
    )
}

/// The key (`host:port`) of the backend a path names: its key as listed, its
/// `name`, or an address written as `POST .../backends` takes it (`host`
/// alone means port 80, `http://host:port`...), so that what `add` stored is
/// what `remove`, `drain`... find.
fn backend_key(ctx: &AdminContext, pool: &str, given: &str) -> String {
    let rt = ctx.proxy.snapshot.load();
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
fn event_stream(ctx: &AdminContext) -> Response<AdminBody> {
    let mut rx = ctx.proxy.events.subscribe();
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let shutdown = ctx.shutdown.clone();
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

/// `POST /api/v1/cluster/nodes` `{"id", "address", "witness"}`.
async fn add_node(ctx: &AdminContext, req: Request<Incoming>) -> Response<AdminBody> {
    let body = match read_body(req, BODY_LIMIT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let (Some(id), Some(address)) = (v["id"].as_str(), v["address"].as_str()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"id\": NODE_ID, \"address\": \"host:port\", \"witness\": false}",
        );
    };
    let cmd = Command::AddNode {
        id: id.to_string(),
        address: address.to_string(),
        witness: v["witness"].as_bool().unwrap_or(false),
    };
    outcome(ctx.commands.submit(cmd).await, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_backend_bodies_are_checked() {
        let ok = add_backend_command("web", &json!({"address": "10.0.0.1:80", "weight": 3}));
        assert!(matches!(ok, Ok(Command::AddBackend { weight: 3, .. })));
        assert!(add_backend_command("web", &json!({})).is_err());
        assert!(
            add_backend_command("web", &json!({"address": "10.0.0.1:80", "weight": 0})).is_err()
        );
        assert!(add_backend_command("web", &json!({"address": "10.0.0.1:80", "x": 1})).is_err());
    }
}
