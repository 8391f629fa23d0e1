//! [`Consensus`] on openraft 0.9: log store, state machine and network.
//!
//! Node ids are a stable 64-bit hash of the configured names, so every node
//! derives the same ids without coordination. A new cluster is formed by every
//! voting node (not a witness) proposing the same initial membership, which
//! openraft writes at the same log position everywhere.

mod log_store;
mod network;
mod state_machine;

use super::consensus::{BoxFut, Consensus, ConsensusView, ProposeError};
use super::transport::Peer;
use crate::command::{Command, CommandSink, Outcome};
use crate::config::ClusterConfig;
use openraft::error::{ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What applying a log entry produced (entries that carry no command produce
/// nothing).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Applied(pub(crate) Option<Outcome>);

openraft::declare_raft_types!(
    pub(crate) TypeConfig:
        D = Command,
        R = Applied,
);

type NodeId = u64;

/// The id openraft knows a node by: FNV-1a of its name.
pub fn node_id(name: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Id ↔ name, for every configured node.
#[derive(Debug, Default)]
pub struct Names {
    by_id: HashMap<NodeId, String>,
}

impl Names {
    pub fn name(&self, id: NodeId) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }
}

/// A Raft RPC from a peer's frame (network input: decoded, never trusted).
pub(crate) fn decode_rpc(v: Value) -> Result<RaftRpc, serde_json::Error> {
    serde_json::from_value(v)
}

/// A Raft RPC as it crosses the transport.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RaftRpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

pub struct RaftConsensus {
    raft: Raft<TypeConfig>,
    view: watch::Receiver<ConsensusView>,
    names: Arc<Names>,
}

impl RaftConsensus {
    /// Opens the log under `state_dir`, starts Raft and, on a new voting node,
    /// proposes the initial membership.
    pub async fn start(
        cfg: &ClusterConfig,
        witness: bool,
        applier: Arc<dyn CommandSink>,
        peers: &HashMap<String, Arc<Peer>>,
    ) -> Result<Arc<dyn Consensus>, String> {
        let mut names = Names::default();
        let mut members = BTreeMap::new();
        for (name, addr) in std::iter::once((&cfg.node_id, cfg.bind.to_string()))
            .chain(cfg.peers.iter().map(|p| (&p.id, p.address.clone())))
        {
            let id = node_id(name);
            if let Some(other) = names.by_id.insert(id, name.clone()) {
                return Err(format!(
                    "node names `{other}` and `{name}` hash to the same id: rename one"
                ));
            }
            members.insert(id, BasicNode { addr });
        }
        let hb = cfg.heartbeat_interval.as_millis().max(1) as u64;
        let et = cfg.election_timeout.as_millis().max(1) as u64;
        let config = openraft::Config {
            cluster_name: "fulcrum".into(),
            heartbeat_interval: hb,
            election_timeout_min: et,
            election_timeout_max: et * 2,
            enable_elect: !witness,
            snapshot_policy: SnapshotPolicy::Never,
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("cluster timing: {e}"))?;
        let store = log_store::LogStore::open(&cfg.state_dir)?;
        let pristine = store.is_pristine();
        let net = network::Factory::new(
            peers
                .iter()
                .map(|(name, p)| (node_id(name), p.clone()))
                .collect(),
        );
        let sm = state_machine::StateMachine::new(applier);
        let me = node_id(&cfg.node_id);
        let raft = Raft::new(me, Arc::new(config), net, store, sm)
            .await
            .map_err(|e| format!("cannot start Raft: {e}"))?;
        if pristine && !witness {
            tracing::info!(
                nodes = members.len(),
                "new cluster state: proposing the initial membership"
            );
            if let Err(e) = raft.initialize(members).await {
                // Another node's membership may already have reached us.
                tracing::debug!(error = %e, "initialize");
            }
        }
        let names = Arc::new(names);
        let (tx, rx) = watch::channel(ConsensusView::initial());
        tokio::spawn(watch_metrics(raft.metrics(), tx, names.clone(), me));
        let consensus: Arc<dyn Consensus> = Arc::new(RaftConsensus {
            raft,
            view: rx,
            names,
        });
        Ok(consensus)
    }

    /// Serves a Raft RPC received from a peer; the answer is the JSON of the
    /// `Result` openraft produced.
    async fn handle(&self, v: Value) -> Value {
        let rpc = match decode_rpc(v) {
            Ok(r) => r,
            Err(e) => return serde_json::json!({ "decode_error": e.to_string() }),
        };
        let encoded = match rpc {
            RaftRpc::Append(r) => serde_json::to_value(self.raft.append_entries(r).await),
            RaftRpc::Vote(r) => serde_json::to_value(self.raft.vote(r).await),
            RaftRpc::Snapshot(r) => {
                let res: Result<_, RaftError<NodeId, InstallSnapshotError>> =
                    self.raft.install_snapshot(r).await;
                serde_json::to_value(res)
            }
        };
        encoded.unwrap_or_else(|e| serde_json::json!({ "decode_error": e.to_string() }))
    }
}

/// Turns openraft's metrics into [`ConsensusView`]s.
async fn watch_metrics(
    mut rx: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    tx: watch::Sender<ConsensusView>,
    names: Arc<Names>,
    me: NodeId,
) {
    loop {
        let view = {
            let m = rx.borrow_and_update();
            if let Err(e) = &m.running_state {
                tracing::error!(error = %e, "Raft stopped on a fatal error; this node can no longer take part");
            }
            let now = Instant::now();
            let is_leader = m.state == ServerState::Leader && m.current_leader == Some(me);
            ConsensusView {
                term: m.current_term,
                leader: m
                    .current_leader
                    .and_then(|id| names.name(id).map(str::to_string)),
                is_leader,
                quorum_acked_at: if is_leader {
                    m.millis_since_quorum_ack
                        .and_then(|ms| now.checked_sub(Duration::from_millis(ms)))
                } else {
                    None
                },
                last_log: m.last_log_index,
                last_applied: m.last_applied.map(|l| l.index),
                matched: m
                    .replication
                    .as_ref()
                    .map(|r| {
                        r.iter()
                            .filter(|(id, _)| **id != me)
                            .filter_map(|(id, l)| {
                                names.name(*id).map(|n| (n.to_string(), l.map(|l| l.index)))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                at: now,
            }
        };
        tx.send_replace(view);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Consensus for RaftConsensus {
    fn view(&self) -> watch::Receiver<ConsensusView> {
        self.view.clone()
    }

    fn propose(&self, cmd: Command) -> BoxFut<'_, Result<(Outcome, u64), ProposeError>> {
        Box::pin(async move {
            match self.raft.client_write(cmd).await {
                Ok(r) => Ok((r.data.0.unwrap_or(Ok(Value::Null)), r.log_id.index)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(ProposeError::NotLeader(
                        f.leader_id
                            .and_then(|id| self.names.name(id).map(str::to_string)),
                    ))
                }
                Err(e) => Err(ProposeError::Failed(e.to_string())),
            }
        })
    }

    fn handle_rpc(&self, msg: Value) -> BoxFut<'_, Value> {
        Box::pin(self.handle(msg))
    }

    fn campaign(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.raft.trigger().elect().await {
                tracing::warn!(error = %e, "cannot start an election");
            }
        })
    }

    fn set_active(&self, heartbeat: bool, elect: bool) {
        self.raft.runtime_config().heartbeat(heartbeat);
        self.raft.runtime_config().elect(elect);
    }

    fn shutdown(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.raft.shutdown().await {
                tracing::warn!(error = %e, "Raft did not stop cleanly");
            }
        })
    }
}
