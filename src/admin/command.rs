//! Admin writes as values. The API turns a request into an [`AdminCommand`]; a
//! standalone node executes it at once, a cluster node replicates it through Raft
//! and every node executes it when it is committed, in the same order.

use crate::app::{ApiError, App};
use crate::config::BackendAddress;
use crate::config::BackendConfig;
use crate::upstream::backend::AdminState;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminCommand {
    /// `PUT /api/v1/config`: the shared part of the config (node-local keys are
    /// kept from each node's own file).
    PutConfig {
        text: String,
    },
    AddBackend {
        pool: String,
        address: String,
        weight: u32,
        failover_level: u32,
        region: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    RemoveBackend {
        pool: String,
        address: String,
    },
    /// `drain`, `disable` or `enable`.
    BackendState {
        pool: String,
        address: String,
        action: String,
    },
    /// `activate` or `deactivate` (manual failover).
    Failover {
        pool: String,
        action: String,
    },
    /// An ACME challenge answer published by the primary (`value: None`
    /// withdraws it): `kind` is `http-01` (name = token, value = key
    /// authorization) or `tls-alpn-01` (name = domain, value = digest in hex).
    AcmeChallenge {
        directory: String,
        kind: String,
        name: String,
        value: Option<String>,
    },
    /// A certificate the primary obtained, for every node to store and serve.
    AcmeCertificate {
        directory: String,
        domain: String,
        chain_pem: String,
        key_pem: String,
    },
}

impl AdminCommand {
    /// A short description for logs and events.
    pub fn describe(&self) -> String {
        match self {
            AdminCommand::PutConfig { text } => format!("config ({} bytes)", text.len()),
            AdminCommand::AddBackend { pool, address, .. } => format!("add {address} to {pool}"),
            AdminCommand::RemoveBackend { pool, address } => {
                format!("remove {address} from {pool}")
            }
            AdminCommand::BackendState {
                pool,
                address,
                action,
            } => format!("{action} {address} in {pool}"),
            AdminCommand::Failover { pool, action } => format!("failover {action} {pool}"),
            AdminCommand::AcmeChallenge {
                kind, name, value, ..
            } => format!(
                "{} {kind} challenge {name}",
                if value.is_some() {
                    "publish"
                } else {
                    "withdraw"
                }
            ),
            AdminCommand::AcmeCertificate { domain, .. } => format!("certificate for {domain}"),
        }
    }
}

/// The HTTP answer an executed command produced: status and JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Outcome {
    pub status: u16,
    pub body: Value,
}

impl Outcome {
    pub fn new(status: StatusCode, body: Value) -> Self {
        Outcome {
            status: status.as_u16(),
            body,
        }
    }

    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Outcome::new(status, json!({ "error": message.into() }))
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ApiError> for Outcome {
    fn from(e: ApiError) -> Self {
        let mut v = json!({ "error": e.message });
        if !e.errors.is_empty() {
            v["errors"] = Value::from(e.errors);
        }
        Outcome::new(e.status, v)
    }
}

/// Executes a command on this node only.
pub async fn execute_local(app: &Arc<App>, cmd: &AdminCommand) -> Outcome {
    match cmd {
        AdminCommand::PutConfig { text } => match app.put_config(text, false).await {
            Ok(generation) => Outcome::new(
                StatusCode::OK,
                json!({ "generation": generation, "persisted": false }),
            ),
            Err(e) => e.into(),
        },
        AdminCommand::AddBackend {
            pool,
            address,
            weight,
            failover_level,
            region,
            name,
        } => {
            let parsed = match BackendAddress::parse(address) {
                Ok(a) => a,
                Err(e) => return Outcome::error(StatusCode::BAD_REQUEST, e),
            };
            let key = parsed.key.clone();
            let backend = BackendConfig {
                weight: *weight,
                failover_level: *failover_level,
                region: region.clone(),
                name: name.clone(),
                ..BackendConfig::new(parsed)
            };
            match app.add_backend(pool, backend).await {
                Ok(()) => Outcome::new(StatusCode::CREATED, member_body(app, pool, &key)),
                Err(e) => e.into(),
            }
        }
        AdminCommand::RemoveBackend { pool, address } => {
            match app.remove_backend(pool, address).await {
                Ok(()) => Outcome::new(StatusCode::OK, json!({ "removed": address, "pool": pool })),
                Err(e) => e.into(),
            }
        }
        AdminCommand::BackendState {
            pool,
            address,
            action,
        } => {
            let Some(state) = backend_action(action) else {
                return Outcome::error(
                    StatusCode::NOT_FOUND,
                    format!("unknown action `{action}` (drain, disable, enable)"),
                );
            };
            match app.set_backend_state(pool, address, state).await {
                Ok(()) => Outcome::new(StatusCode::OK, member_body(app, pool, address)),
                Err(e) => e.into(),
            }
        }
        AdminCommand::Failover { pool, action } => crate::failover::api::manual(app, pool, action),
        AdminCommand::AcmeChallenge {
            directory,
            kind,
            name,
            value,
        } => acme_each(app, directory, None, |st| {
            st.set_challenge(kind, name, value.as_deref())
        }),
        AdminCommand::AcmeCertificate {
            directory,
            domain,
            chain_pem,
            key_pem,
        } => acme_each(app, directory, Some(domain), |st| {
            st.install(domain, chain_pem, key_pem)
        }),
    }
}

/// Applies `f` to every ACME manager of this node for `directory` (and that
/// covers `domain`, when given). A node without one has nothing to do.
fn acme_each(
    app: &App,
    directory: &str,
    domain: Option<&str>,
    f: impl Fn(&crate::tls::acme::AcmeState) -> Result<(), String>,
) -> Outcome {
    let mut done = 0;
    for st in app.acme.load().iter() {
        if st.config.directory != directory
            || domain.is_some_and(|d| !st.domains.iter().any(|x| x == d))
        {
            continue;
        }
        if let Err(e) = f(st) {
            return Outcome::error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        done += 1;
    }
    Outcome::new(StatusCode::OK, json!({ "acme_managers": done }))
}

pub fn backend_action(action: &str) -> Option<AdminState> {
    match action {
        "drain" => Some(AdminState::Draining),
        "disable" => Some(AdminState::Disabled),
        "enable" => Some(AdminState::Enabling),
        _ => None,
    }
}

fn member_body(app: &App, pool: &str, key: &str) -> Value {
    let rt = app.runtime.load();
    rt.pool(pool)
        .and_then(|p| {
            p.members
                .iter()
                .find(|m| m.backend.key() == key)
                .map(|m| super::api::member_json(p, m))
        })
        .unwrap_or(Value::Null)
}
