//! `/api/v1/failover/{activate,deactivate,status,test}?pool=P`.

use super::{AdminBody, AdminContext, error, json, outcome};
use crate::command::{Command, FailoverAction};
use crate::failover::{controller, manual, status_json};
use crate::proxy::headers::{percent_decode, query_param};
use crate::upstream::pool::Pool;
use http::{Method, Response, StatusCode};
use std::sync::Arc;

pub(super) async fn handle(
    ctx: &AdminContext,
    method: &Method,
    action: &str,
    query: Option<&str>,
) -> Response<AdminBody> {
    let rt = ctx.proxy.snapshot.load_full();
    let pool_name = query
        .and_then(|q| query_param(q, "pool"))
        .map(percent_decode);
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
            let Some(action) = FailoverAction::parse(action) else {
                return error(StatusCode::NOT_FOUND, "unknown failover action");
            };
            let cmd = Command::Failover {
                pool: pool_name.unwrap_or_default(),
                action,
            };
            outcome(ctx.commands.submit(cmd).await, StatusCode::OK)
        }
        ("POST", "test") => {
            let p = match find(&pool_name) {
                Ok(p) => p,
                Err(r) => return *r,
            };
            let h = controller::Handles {
                snapshot: ctx.proxy.snapshot.clone(),
                events: ctx.proxy.events.clone(),
                notifier: ctx.notifier.clone(),
            };
            match manual::rehearse(&h, p).await {
                Ok(report) => json(StatusCode::OK, &report),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
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
