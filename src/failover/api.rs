//! `/api/v1/failover/{activate,deactivate,status,test}?pool=P`.

use super::controller::{self, settings_for};
use super::{FailoverEvent, rfc3339, status_json};
use crate::admin::command::{AdminCommand, Outcome};
use crate::admin::{AdminBody, error, json};
use crate::app::App;
use crate::upstream::pool::Pool;
use http::{Method, Response, StatusCode};
use serde_json::json;
use std::sync::Arc;

fn pool_param(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == "pool").then(|| v.to_string())
    })
}

pub async fn handle(
    app: &Arc<App>,
    method: &Method,
    action: &str,
    query: Option<&str>,
) -> Response<AdminBody> {
    let rt = app.runtime.load_full();
    let pool_name = pool_param(query);
    let find = |name: &Option<String>| -> Result<&Arc<Pool>, Box<Response<AdminBody>>> {
        match name {
            None => Err(Box::new(error(StatusCode::BAD_REQUEST, "add ?pool=NAME"))),
            Some(n) => rt.pool(n).ok_or_else(|| {
                Box::new(error(StatusCode::NOT_FOUND, format!("no pool named `{n}`")))
            }),
        }
    };
    match (method.as_str(), action) {
        ("GET", "status") => match &pool_name {
            Some(_) => match find(&pool_name) {
                Ok(p) => json(StatusCode::OK, &status_json(p)),
                Err(r) => *r,
            },
            None => json(
                StatusCode::OK,
                &serde_json::Value::Array(
                    rt.pools
                        .iter()
                        .filter(|p| p.levels.len() > 1)
                        .map(|p| status_json(p))
                        .collect(),
                ),
            ),
        },
        ("POST", "activate" | "deactivate") => {
            if let Err(r) = find(&pool_name) {
                return *r;
            }
            let pool = pool_name.unwrap_or_default();
            let o = app
                .execute(AdminCommand::Failover {
                    pool,
                    action: action.to_string(),
                })
                .await;
            json(o.status_code(), &o.body)
        }
        ("POST", "test") => {
            let p = match find(&pool_name) {
                Ok(p) => p,
                Err(r) => return *r,
            };
            test(app, p).await
        }
        (_, "status" | "activate" | "deactivate" | "test") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("unknown failover action `{action}`"),
        ),
    }
}

/// Manual activate/deactivate on this node (see [`AdminCommand::Failover`]).
pub fn manual(app: &Arc<App>, pool: &str, action: &str) -> Outcome {
    let rt = app.runtime.load_full();
    let Some(p) = rt.pool(pool) else {
        return Outcome::error(StatusCode::NOT_FOUND, format!("no pool named `{pool}`"));
    };
    let settings = settings_for(&rt.config, p);
    match action {
        "activate" => match controller::manual_activate(app, p, &settings) {
            Ok(_) => Outcome::new(StatusCode::OK, status_json(p)),
            Err(e) => Outcome::error(StatusCode::CONFLICT, e),
        },
        "deactivate" => {
            controller::manual_deactivate(app, p, &settings);
            Outcome::new(StatusCode::OK, status_json(p))
        }
        other => Outcome::error(
            StatusCode::NOT_FOUND,
            format!("unknown failover action `{other}`"),
        ),
    }
}

/// Dry run: probes every backup backend now, sends a test notification on every
/// channel, moves no traffic.
async fn test(app: &Arc<App>, p: &Arc<Pool>) -> Response<AdminBody> {
    let primary = p.levels.first().copied().unwrap_or(0);
    let Some(&first_backup) = p.levels.iter().find(|&&l| l > primary) else {
        return error(
            StatusCode::CONFLICT,
            format!("pool `{}` has no backup level", p.name),
        );
    };
    let mut report = Vec::new();
    let mut healthy = 0;
    let mut total = 0;
    for m in p.members.iter().filter(|m| m.level > primary) {
        total += 1;
        let check = m.health_check.clone().unwrap_or_default();
        let (ok, why) = match crate::health::probe(&m.backend, &check).await {
            crate::health::Probe::Pass => (true, None),
            crate::health::Probe::Fail(reason) => (false, Some(reason)),
        };
        if ok {
            healthy += 1;
        }
        report.push(json!({
            "address": m.backend.key(),
            "level": m.level,
            "region": m.region,
            "healthy": ok,
            "error": why,
            "checked": check.path,
        }));
    }
    let event = FailoverEvent {
        event: "failover.test".into(),
        pool: p.name.clone(),
        from_level: primary,
        to_level: first_backup,
        reason: format!("test: {healthy} of {total} backup backends healthy"),
        mode: "manual".into(),
        ts: rfc3339(crate::clock::unix_secs_f64()),
        duration_seconds: 0.0,
    };
    p.state.failover.record(&event);
    app.events
        .record(&event.event, Some(&p.name), None, event.reason.clone());
    app.notifier.send(event.clone());
    json(
        StatusCode::OK,
        &json!({
            "pool": p.name,
            "ready": healthy > 0,
            "backups": report,
            "event": event,
            "traffic_moved": false,
        }),
    )
}
