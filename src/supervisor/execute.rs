//! What each command does on this node, and the sinks that route commands:
//!
//! - [`Submitter`] (the admin API's sink): replicated commands go through the
//!   cluster when there is one; node-local ones, and everything on a standalone
//!   node, execute here at once.
//! - [`Executor`]: executes here (what the cluster applies committed entries
//!   with).
//! - [`Replicator`]: publishes to the other nodes of a cluster (ACME state the
//!   primary already holds); does nothing standalone.

use super::{Supervisor, gone};
use crate::cache::Purge;
use crate::command::{
    BackendAction, BoxFut, Command, CommandError, CommandSink, FailoverAction, Outcome, PurgeKind,
};
use crate::config::{BackendAddress, BackendConfig};
use crate::events::EventKind;
use crate::failover::{controller, manual, status_json};
use crate::upstream::backend::AdminState;
use serde_json::{Value, json};
use std::sync::{Arc, Weak};

pub(super) struct Submitter(pub(super) Weak<Supervisor>);
pub(super) struct Executor(pub(super) Weak<Supervisor>);
pub(super) struct Replicator(pub(super) Weak<Supervisor>);

impl CommandSink for Submitter {
    fn submit(&self, cmd: Command) -> BoxFut<'static, Outcome> {
        let sup = self.0.upgrade();
        Box::pin(async move {
            let sup = sup.ok_or_else(gone)?;
            match sup.cluster.get() {
                Some(cluster) if cmd.is_replicated() => {
                    // An invalid config is refused before it is proposed.
                    if let Command::ReplaceConfig { text } = &cmd {
                        let checked = crate::config::load_str(text, "api", &sup.base_dir())
                            .map_err(super::reload::invalid);
                        if checked.is_err() {
                            sup.record_reload("PUT /api/v1/config", &checked);
                        }
                        checked?;
                    }
                    cluster.submit(cmd).await
                }
                _ => sup.execute(cmd).await,
            }
        })
    }
}

impl CommandSink for Executor {
    fn submit(&self, cmd: Command) -> BoxFut<'static, Outcome> {
        let sup = self.0.upgrade();
        Box::pin(async move { sup.ok_or_else(gone)?.execute(cmd).await })
    }
}

impl CommandSink for Replicator {
    fn submit(&self, cmd: Command) -> BoxFut<'static, Outcome> {
        let cluster = self.0.upgrade().and_then(|s| s.cluster.get().cloned());
        Box::pin(async move {
            match cluster {
                Some(c) => c.submit(cmd).await,
                None => Ok(Value::Null),
            }
        })
    }
}

impl Supervisor {
    /// Executes a command on this node only.
    pub(crate) async fn execute(self: &Arc<Self>, cmd: Command) -> Outcome {
        match cmd {
            Command::ReplaceConfig { text } => {
                let g = self.put_config(&text, false).await?;
                Ok(json!({ "generation": g, "persisted": false }))
            }
            Command::PersistConfig { text } => {
                if self.cluster.get().is_some() {
                    return Err(CommandError::conflict(
                        "in a cluster the replicated log under state_dir keeps the config; ?persist is for standalone nodes",
                    ));
                }
                let g = self.put_config(&text, true).await?;
                Ok(json!({ "generation": g, "persisted": true }))
            }
            Command::ReloadFile { force } => {
                let outcome = self.reload_from_file(force).await?;
                Ok(json!({ "generation": outcome.generation() }))
            }
            Command::AddBackend {
                pool,
                address,
                weight,
                failover_level,
                region,
                name,
            } => {
                let backend = BackendConfig {
                    weight,
                    failover_level,
                    region,
                    name,
                    ..BackendConfig::new(
                        BackendAddress::parse(&address).map_err(CommandError::invalid)?,
                    )
                };
                let key = backend.address.key.clone();
                self.add_backend(&pool, backend).await?;
                Ok(self.member_json(&pool, &key))
            }
            Command::RemoveBackend { pool, address } => {
                self.remove_backend(&pool, &address).await?;
                Ok(json!({ "removed": address, "pool": pool }))
            }
            Command::Backend {
                pool,
                address,
                action,
            } => {
                self.set_backend_state(&pool, &address, action)?;
                Ok(self.member_json(&pool, &address))
            }
            Command::Failover { pool, action } => self.failover(&pool, action),
            Command::AddNode { .. } | Command::RemoveNode { .. } => match self.cluster.get() {
                Some(c) => c.change_members(cmd, false).await,
                None => Err(CommandError::conflict(
                    "this node runs standalone: there is no cluster to change",
                )),
            },
            Command::AcmeChallenge {
                directory,
                kind,
                name,
                value,
            } => self.acme_each(&directory, None, |st| {
                st.set_challenge(kind, &name, value.as_deref())
            }),
            Command::AcmeCertificate {
                directory,
                domain,
                chain_pem,
                key_pem,
            } => self.acme_each(&directory, Some(&domain), |st| {
                st.install(&domain, &chain_pem, &key_pem)
            }),
            Command::PurgeCache { kind, value } => Ok(self.purge_cache(kind, value)),
        }
    }

    /// Purges every caching route of this node.
    fn purge_cache(&self, kind: PurgeKind, value: String) -> Value {
        let what = match kind {
            PurgeKind::Url => Purge::Url(value),
            PurgeKind::Prefix => Purge::Prefix(value),
            PurgeKind::Tag => Purge::Tag(value),
        };
        let rt = self.proxy.snapshot.load_full();
        let purged: usize = rt
            .routes
            .iter()
            .filter_map(|r| r.cache.as_ref())
            .map(|c| c.purge(&what))
            .sum();
        json!({ "purged": purged })
    }

    async fn add_backend(self: &Arc<Self>, pool: &str, backend: BackendConfig) -> Outcome {
        let current = self.proxy.snapshot.load_full();
        let Some(p) = current.pool(pool) else {
            return Err(CommandError::not_found(format!("no pool named `{pool}`")));
        };
        let key = backend.address.key.clone();
        if p.members.iter().any(|m| m.backend.key() == key) {
            return Err(CommandError::conflict(format!(
                "pool `{pool}` already has backend {key}"
            )));
        }
        let mut layer = self.state.lock().await.admin_layer.clone();
        layer.add_backend(pool, backend);
        self.apply_layer(layer).await?;
        self.proxy.events.record(
            EventKind::BackendAdded,
            Some(pool),
            Some(&key),
            "added through the admin API",
        );
        Ok(Value::Null)
    }

    async fn remove_backend(self: &Arc<Self>, pool: &str, key: &str) -> Outcome {
        let current = self.proxy.snapshot.load_full();
        if current.member(pool, key).is_none() {
            return Err(match current.pool(pool) {
                None => CommandError::not_found(format!("no pool named `{pool}`")),
                Some(_) => CommandError::not_found(format!("pool `{pool}` has no backend {key}")),
            });
        }
        let mut layer = self.state.lock().await.admin_layer.clone();
        layer.remove_backend(pool, key);
        self.apply_layer(layer).await?;
        self.proxy.events.record(
            EventKind::BackendRemoved,
            Some(pool),
            Some(key),
            "removed through the admin API",
        );
        Ok(Value::Null)
    }

    /// Drain, disable or enable. Enabling waits for a passing health check (or a
    /// successful connection when the backend has no check) before traffic
    /// returns.
    fn set_backend_state(&self, pool: &str, key: &str, action: BackendAction) -> Outcome {
        let rt = self.proxy.snapshot.load_full();
        let Some((p, m)) = rt.member(pool, key) else {
            return Err(match rt.pool(pool) {
                None => CommandError::not_found(format!("no pool named `{pool}`")),
                Some(_) => CommandError::not_found(format!("pool `{pool}` has no backend {key}")),
            });
        };
        let backend = m.backend.clone();
        let (state, kind, msg) = match action {
            BackendAction::Drain => (
                AdminState::Draining,
                EventKind::BackendDraining,
                "draining: no new requests, in-flight ones finish",
            ),
            BackendAction::Disable => (
                AdminState::Disabled,
                EventKind::BackendDisabled,
                "disabled by the operator",
            ),
            BackendAction::Enable => (
                AdminState::Enabling,
                EventKind::BackendEnabling,
                "enabled: waiting for a passing health check",
            ),
        };
        if state == AdminState::Enabling && backend.admin_state() == AdminState::Active {
            return Ok(Value::Null);
        }
        backend.set_admin_state(state);
        self.proxy.events.record(kind, Some(pool), Some(key), msg);
        p.state.health_changed.notify_one();
        if state == AdminState::Enabling && m.health_check.is_none() {
            tokio::spawn(crate::health::confirm_reachable(
                self.proxy.events.clone(),
                p.state.clone(),
                backend,
                p.timeouts.connect,
            ));
        }
        Ok(Value::Null)
    }

    fn failover(&self, pool: &str, action: FailoverAction) -> Outcome {
        let rt = self.proxy.snapshot.load_full();
        let Some(p) = rt.pool(pool) else {
            return Err(CommandError::not_found(format!("no pool named `{pool}`")));
        };
        let settings = controller::settings_for(&rt.config, p);
        let h = controller::Handles {
            snapshot: self.proxy.snapshot.clone(),
            events: self.proxy.events.clone(),
            notifier: self.notifier.clone(),
        };
        match action {
            FailoverAction::Activate => {
                manual::activate(&h, p, &settings).map_err(CommandError::conflict)?;
            }
            FailoverAction::Deactivate => {
                manual::deactivate(&h, p, &settings);
            }
        }
        Ok(status_json(p))
    }

    /// Applies `f` to every ACME manager of this node for `directory` (and that
    /// covers `domain`, when given). A node without one has nothing to do.
    fn acme_each(
        &self,
        directory: &str,
        domain: Option<&str>,
        f: impl Fn(&crate::tls::acme_state::AcmeState) -> Result<(), String>,
    ) -> Outcome {
        let mut done = 0;
        for st in self.proxy.acme.load().iter() {
            if st.config.directory != directory
                || domain.is_some_and(|d| !st.domains.iter().any(|x| x == d))
            {
                continue;
            }
            f(st).map_err(CommandError::failed)?;
            done += 1;
        }
        Ok(json!({ "acme_managers": done }))
    }

    /// One backend as the API shows it (after a change).
    fn member_json(&self, pool: &str, key: &str) -> Value {
        let rt = self.proxy.snapshot.load();
        rt.member(pool, key)
            .map(|(_, m)| crate::admin::member_json(m))
            .unwrap_or(Value::Null)
    }
}
