//! ACME managers: one per storage directory of the running config, started,
//! kept or stopped on every change.

use super::{ReloadState, Supervisor};
use crate::config::{self, Config};
use crate::tls::acme_state::{AcmeState, AcmeStates};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(super) struct Manager {
    state: Arc<AcmeState>,
    stop: CancellationToken,
}

/// ACME configs by storage directory, with the domains each should cover: its
/// `domains`, or every exact host of the routes.
fn wanted(config: &Config) -> Vec<(config::AcmeConfig, Vec<String>)> {
    let mut out: Vec<(config::AcmeConfig, Vec<String>)> = Vec::new();
    for l in &config.listeners {
        let Some(a) = l.tls.as_ref().and_then(|t| t.acme.as_ref()) else {
            continue;
        };
        if out.iter().any(|(c, _)| c.storage == a.storage) {
            continue;
        }
        let mut domains = if a.domains.is_empty() {
            config
                .routes
                .iter()
                .filter_map(|r| match &r.host {
                    Some(config::HostMatch::Exact(h)) if h.parse::<std::net::IpAddr>().is_err() => {
                        Some(h.clone())
                    }
                    _ => None,
                })
                .collect()
        } else {
            a.domains.clone()
        };
        domains.sort();
        domains.dedup();
        out.push((a.clone(), domains));
    }
    out
}

impl Supervisor {
    /// The ACME states a config would use: running managers whose settings did
    /// not change, fresh ones otherwise (not started yet).
    pub(super) fn acme_states_for(&self, state: &ReloadState, config: &Config) -> AcmeStates {
        wanted(config)
            .into_iter()
            .map(|(cfg, domains)| match state.acme.get(&cfg.storage) {
                Some(m) if m.state.config == cfg && m.state.domains == domains => m.state.clone(),
                _ => Arc::new(AcmeState::new(cfg, domains)),
            })
            .collect()
    }

    /// Starts, keeps or stops ACME managers to match the config.
    pub(super) fn reconcile_acme(&self, state: &mut ReloadState, config: &Config) {
        let wanted = wanted(config);
        let keys: Vec<PathBuf> = wanted.iter().map(|(c, _)| c.storage.clone()).collect();
        state.acme.retain(|k, m| {
            let keep = keys.contains(k);
            if !keep {
                m.stop.cancel();
            }
            keep
        });
        for (cfg, domains) in wanted {
            let same = state
                .acme
                .get(&cfg.storage)
                .is_some_and(|m| m.state.config == cfg && m.state.domains == domains);
            if same {
                continue;
            }
            if let Some(old) = state.acme.remove(&cfg.storage) {
                old.stop.cancel();
            }
            if domains.is_empty() {
                tracing::warn!(storage = %cfg.storage.display(), "ACME is configured but there is no domain to order (no `domains`, no exact route host)");
            }
            let st = Arc::new(AcmeState::new(cfg.clone(), domains));
            let stop = self.shutdown.child_token();
            let handles = crate::acme::Handles {
                may_order: self.may_order.subscribe(),
                replicate: Arc::new(super::execute::Replicator(self.me.clone())),
                events: self.proxy.events.clone(),
            };
            tokio::spawn(crate::acme::run(st.clone(), handles, stop.clone()));
            state
                .acme
                .insert(cfg.storage.clone(), Manager { state: st, stop });
        }
        self.proxy.acme.store(Arc::new(
            state.acme.values().map(|m| m.state.clone()).collect(),
        ));
    }
}
