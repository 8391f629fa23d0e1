//! Membership changes at run time (`fulcrum ctl cluster add|remove`): made by
//! the primary as openraft membership changes, forwarded there from any node.

use super::Cluster;
use super::consensus::{Consensus, ConsensusView, ProposeError};
use super::transport::{Request, Response};
use crate::command::{Command, CommandError, Outcome};
use crate::events::EventKind;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How long a membership change may take (a new node catching up included).
const MEMBER_TIMEOUT: Duration = Duration::from_secs(90);

impl Cluster {
    /// This node is no longer a member: it stops campaigning (once).
    pub(super) fn note_removed(&self, consensus: &Arc<dyn Consensus>) {
        if !self.removed.swap(true, Relaxed) {
            tracing::warn!(
                "this node was removed from the cluster: it no longer votes or campaigns; stop it (and clear its state_dir before it joins again)"
            );
            consensus.set_active(false, false);
        }
    }

    /// `fulcrum ctl cluster add|remove`: a membership change, made by the
    /// primary (forwarded there from any other node, once). Removing the
    /// primary hands its role over first; the new primary removes it.
    pub(crate) async fn change_members(&self, cmd: Command, forwarded: bool) -> Outcome {
        if self.witness {
            return Err(CommandError::conflict("a witness takes no admin changes"));
        }
        let Some(consensus) = self.consensus().cloned() else {
            return Err(CommandError::unavailable("the cluster is starting"));
        };
        check_member_change(&cmd)?;
        let view = self.view();
        if !view.is_leader || self.handing_over.load(Relaxed) {
            return self.forward_member_change(cmd, &view, forwarded).await;
        }
        let me = self.config.node_id.clone();
        let result = match &cmd {
            Command::AddNode {
                id,
                address,
                witness,
            } => {
                if *id == me || view.members.iter().any(|m| m.name == *id && m.voter) {
                    return Err(CommandError::conflict(format!(
                        "`{id}` is already a member"
                    )));
                }
                tokio::time::timeout(
                    MEMBER_TIMEOUT - Duration::from_secs(5),
                    consensus.add_member(id.clone(), address.clone(), *witness),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(ProposeError::Failed(format!(
                        "`{id}` was added as a learner but has not caught up: is it running and reachable at {address}? (`fulcrum ctl cluster remove {id}` takes it out)"
                    )))
                })
            }
            Command::RemoveNode { id } if *id == me => {
                if forwarded {
                    return Err(CommandError::unavailable(
                        "the primary is handing over; retry",
                    ));
                }
                let handed = self.hand_over(None).await;
                consensus.set_active(true, true);
                self.handing_over.store(false, Relaxed);
                if !handed {
                    return Err(CommandError::unavailable(
                        "the primary role could not be handed over first; retry",
                    ));
                }
                let view = self.view();
                return self.forward_member_change(cmd, &view, false).await;
            }
            Command::RemoveNode { id } => {
                let r = consensus.remove_member(id.clone()).await;
                if r.is_ok()
                    && let Some(peer) = self.peer_for(id)
                {
                    // Best effort: tell it to stop campaigning.
                    tokio::spawn(async move {
                        let _ = peer.call(Request::Removed, Duration::from_secs(2)).await;
                    });
                }
                r
            }
            _ => return Err(CommandError::invalid("not a membership change")),
        };
        match result {
            Ok(()) => {
                tracing::info!(change = %cmd, "membership changed");
                self.events
                    .record(EventKind::ClusterRole, None, None, cmd.to_string());
                Ok(self.members_json(&cmd).await)
            }
            Err(ProposeError::NotLeader(_)) => Err(CommandError::unavailable(
                "the primary changed during the change; retry",
            )),
            Err(ProposeError::Failed(e)) => Err(CommandError::failed(e)),
        }
    }

    async fn forward_member_change(
        &self,
        cmd: Command,
        view: &ConsensusView,
        forwarded: bool,
    ) -> Outcome {
        let leader = view.leader.clone().filter(|l| *l != self.config.node_id);
        let (Some(leader), false) = (leader, forwarded) else {
            return Err(CommandError::unavailable(
                "no primary is elected right now; retry in a moment",
            ));
        };
        let Some(peer) = self.peer_for(&leader) else {
            return Err(CommandError::unavailable(format!(
                "the primary `{leader}` is not a known member"
            )));
        };
        match peer.call(Request::Forward(cmd), MEMBER_TIMEOUT).await {
            Ok(Response::Applied { outcome, .. }) => outcome,
            Ok(Response::Refused(why)) | Ok(Response::Error(why)) => {
                Err(CommandError::unavailable(why))
            }
            Ok(other) => Err(CommandError::failed(format!(
                "unexpected answer from the primary: {other:?}"
            ))),
            Err(e) => Err(CommandError::unavailable(format!(
                "the primary `{leader}` cannot be reached: {e}"
            ))),
        }
    }

    /// The membership once the change shows in this node's view (or after 2 s).
    async fn members_json(&self, cmd: &Command) -> Value {
        let done = |v: &ConsensusView| match cmd {
            Command::AddNode { id, .. } => v.members.iter().any(|m| m.name == *id && m.voter),
            Command::RemoveNode { id } => !v.members.iter().any(|m| m.name == *id),
            _ => true,
        };
        if let Some(c) = self.consensus() {
            let mut rx = c.view();
            let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(done)).await;
        }
        let view = self.view();
        json!({
            "members": view.members.iter().map(|m| json!({
                "id": m.name,
                "address": m.address,
                "witness": m.witness,
                "voter": m.voter,
            })).collect::<Vec<_>>(),
        })
    }
}

/// A well-formed membership change: a valid node id, an address with a port.
fn check_member_change(cmd: &Command) -> Result<(), CommandError> {
    let (id, address) = match cmd {
        Command::AddNode { id, address, .. } => (id, Some(address)),
        Command::RemoveNode { id } => (id, None),
        _ => return Err(CommandError::invalid("not a membership change")),
    };
    if !crate::config::valid_node_id(id) {
        return Err(CommandError::invalid(format!(
            "node id `{id}`: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )));
    }
    if let Some(a) = address {
        let ok = a
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !ok {
            return Err(CommandError::invalid(format!(
                "address `{a}`: expected host:port (the node's `cluster.bind`)"
            )));
        }
    }
    Ok(())
}
