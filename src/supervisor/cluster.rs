//! Wiring to the cluster: committed commands execute here, role changes say
//! whether this node may order certificates, and a returning node checks itself
//! before it may take the primary role back.

use super::Supervisor;
use crate::cluster::role::Role;
use crate::cluster::{Checks, Cluster};
use crate::config::ClusterConfig;
use std::sync::Arc;

pub(super) async fn start(
    sup: &Arc<Supervisor>,
    config: ClusterConfig,
) -> Result<Arc<Cluster>, String> {
    let cluster = Cluster::start(
        config,
        false,
        super::local_sink(sup),
        sup.proxy.events.clone(),
        preempt_checks(sup),
    )
    .await?;
    // Only the primary orders ACME certificates.
    let mut roles = cluster.watch_role();
    let may_order = sup.may_order.clone();
    let stop = sup.shutdown.clone();
    tokio::spawn(async move {
        loop {
            may_order.send_replace(*roles.borrow_and_update() == Role::Primary);
            tokio::select! {
                r = roles.changed() => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
    });
    Ok(cluster)
}

/// What a returning node must pass before it may take the primary role back:
/// its listeners are up (they are, or it would not have started) and every pool
/// has an available backend.
fn preempt_checks(sup: &Arc<Supervisor>) -> Checks {
    let weak = Arc::downgrade(sup);
    Arc::new(move || {
        let sup = weak.upgrade().ok_or("shutting down")?;
        if sup.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        let rt = sup.proxy.snapshot.load();
        let now = crate::clock::now_ms();
        for p in rt.pools.iter() {
            if !p.members.is_empty() && !p.members.iter().any(|m| m.backend.available(now)) {
                return Err(format!("pool `{}` has no available backend", p.name));
            }
        }
        Ok(())
    })
}
