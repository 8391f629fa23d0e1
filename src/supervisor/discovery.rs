//! Container discovery wiring: the watcher runs while `discovery.docker` is
//! configured (restarted when its settings change); each layer it publishes is
//! composed in by the applier task, which recompiles the snapshot like any other
//! change. The request path only ever sees the new snapshot.

use super::{ReloadState, Supervisor};
use crate::config::Config;
use crate::discovery::Watcher;
use std::sync::Arc;

impl Supervisor {
    /// Starts, restarts or stops the watcher to match `config`.
    pub(super) fn reconcile_discovery(&self, state: &mut ReloadState, config: &Config) {
        let wanted = config.discovery.docker.as_ref();
        if state.discovery.as_ref().map(|w| &w.config) == wanted {
            return;
        }
        state.discovery = None;
        match wanted {
            Some(cfg) => {
                // A fresh start publishes its first layer whatever it holds.
                self.discovered.send_if_modified(|l| {
                    *l = Default::default();
                    false
                });
                state.discovery = Some(Watcher::start(
                    cfg.clone(),
                    self.admin.discovery.clone(),
                    self.discovered.clone(),
                    self.shutdown.child_token(),
                ));
            }
            None => self.admin.discovery.status.store(None),
        }
    }

    /// Applies a layer discovery published, unless it is already in force or
    /// discovery was turned off meanwhile.
    async fn apply_discovered(self: &Arc<Self>, layer: crate::config::layers::Layer) {
        let mut state = self.state.lock().await;
        if state.base.discovery.docker.is_none() || state.discovery_layer == layer {
            return;
        }
        let previous = std::mem::replace(&mut state.discovery_layer, layer);
        let base = state.base.clone();
        let admin_layer = state.admin_layer.clone();
        if let Err(e) = self.apply_locked(&mut state, base, admin_layer).await {
            tracing::error!(error = %e.message, details = ?e.details, "discovery: the discovered routes could not be applied; the previous ones keep serving");
            state.discovery_layer = previous;
        }
    }
}

/// Follows the discovered layer and applies each new one (intermediate ones
/// that were superseded before their turn are skipped).
pub(super) fn spawn_applier(sup: &Arc<Supervisor>) {
    let mut rx = sup.discovered.subscribe();
    let weak = Arc::downgrade(sup);
    let stop = sup.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
            let layer = rx.borrow_and_update().clone();
            let Some(sup) = weak.upgrade() else { return };
            sup.apply_discovered(layer).await;
        }
    });
}
