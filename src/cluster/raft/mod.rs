//! [`Consensus`] on openraft 0.9: log store, state machine and network.
//!
//! Node ids are a stable 64-bit hash of the node names, so every node derives
//! the same ids without coordination. A new cluster is formed by every voting
//! node (not a witness) proposing the same initial membership (itself and its
//! `peers`), which openraft writes at the same log position everywhere. After
//! that the membership lives in the log: each member carries its name, peer
//! address and whether it is a witness, and nodes are added (as a learner that
//! catches up, then a voter) or removed at run time. A new node whose peers
//! already hold a cluster does not propose anything: it waits to be added.

mod log_store;
mod network;
mod state_machine;

use super::consensus::{BoxFut, Consensus, ConsensusView, MemberView, ProposeError};
use super::transport::{Peers, Request, Response};
use crate::command::{Command, CommandSink, Outcome};
use crate::config::ClusterConfig;
use openraft::error::{ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{ChangeMembers, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, RwLock};
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
        Node = Member,
);

type NodeId = u64;

/// A member of the cluster as the log records it. (Entries written before
/// names were recorded carry only `addr`; their names come from the config.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The peer address, `host:port`.
    pub addr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub witness: bool,
}

/// Whether `state_dir` holds cluster state from an earlier run.
pub fn has_state(dir: &Path) -> bool {
    let nonempty = |f: &str| std::fs::metadata(dir.join(f)).is_ok_and(|m| m.len() > 0);
    nonempty("raft-state.json") || nonempty("raft-log.jsonl") || nonempty("raft-snapshot.json")
}

/// A snapshot is taken after this many new log entries...
const SNAPSHOT_EVERY: u64 = 256;
/// ...and the log is compacted up to this many entries behind it (a node that
/// lags by more gets the snapshot).
const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 64;

/// The id openraft knows a node by: FNV-1a of its name.
pub fn node_id(name: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Id ↔ name, for every configured node and every member the log names.
#[derive(Debug, Default)]
pub struct Names {
    by_id: RwLock<HashMap<NodeId, String>>,
}

impl Names {
    pub fn name(&self, id: NodeId) -> Option<String> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Records `name`; the name already known for its id, if another.
    fn insert(&self, name: &str) -> Option<String> {
        let mut m = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        match m.insert(node_id(name), name.to_string()) {
            Some(other) if other != name => Some(other),
            _ => None,
        }
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

/// Asks the configured peers whether one of them holds a cluster already.
async fn cluster_exists(cfg: &ClusterConfig, peers: &Peers) -> bool {
    let asks = cfg.peers.iter().map(|p| {
        let peer = peers.ensure(&p.id, &p.address);
        async move {
            matches!(
                peer.call(Request::Probe, Duration::from_secs(2)).await,
                Ok(Response::Probe { initialized: true })
            )
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .any(|b| b)
}

impl RaftConsensus {
    /// Opens the log under `state_dir`, starts Raft and, on a new voting node,
    /// proposes the initial membership.
    pub async fn start(
        cfg: &ClusterConfig,
        witness: bool,
        applier: Arc<dyn CommandSink>,
        peers: Arc<Peers>,
    ) -> Result<Arc<dyn Consensus>, String> {
        let names = Arc::new(Names::default());
        let mut members = BTreeMap::new();
        let me_member = (&cfg.node_id, cfg.bind.to_string(), witness);
        for (name, addr, w) in std::iter::once(me_member).chain(
            cfg.peers
                .iter()
                .map(|p| (&p.id, p.address.clone(), p.witness)),
        ) {
            if let Some(other) = names.insert(name) {
                return Err(format!(
                    "node names `{other}` and `{name}` hash to the same id: rename one"
                ));
            }
            members.insert(
                node_id(name),
                Member {
                    addr,
                    name: name.clone(),
                    witness: w,
                },
            );
        }
        let hb = cfg.heartbeat_interval.as_millis().max(1) as u64;
        let et = cfg.election_timeout.as_millis().max(1) as u64;
        let config = openraft::Config {
            cluster_name: "fulcrum".into(),
            heartbeat_interval: hb,
            election_timeout_min: et,
            election_timeout_max: et * 2,
            enable_elect: !witness,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
            max_in_snapshot_log_to_keep: LOG_KEPT_BEHIND_SNAPSHOT,
            // Installing replays the snapshot's commands: give it time.
            install_snapshot_timeout: 60_000,
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("cluster timing: {e}"))?;
        let store = log_store::LogStore::open(&cfg.state_dir)?;
        let pristine = store.is_pristine();
        let saved_term = store.saved_term();
        let net = network::Factory::new(peers.clone(), names.clone());
        let sm = state_machine::StateMachine::open(&cfg.state_dir, applier).await?;
        let me = node_id(&cfg.node_id);
        let raft = Raft::new(me, Arc::new(config), net, store, sm)
            .await
            .map_err(|e| format!("cannot start Raft: {e}"))?;
        if pristine && !witness {
            if cluster_exists(cfg, &peers).await {
                tracing::info!(
                    "new node: a peer already holds a cluster; waiting to be added (`fulcrum ctl cluster add {} {}` on any member)",
                    cfg.node_id,
                    cfg.bind
                );
            } else {
                tracing::info!(
                    nodes = members.len(),
                    "new cluster state: proposing the initial membership"
                );
                if let Err(e) = raft.initialize(members).await {
                    // Another node's membership may already have reached us.
                    tracing::debug!(error = %e, "initialize");
                }
            }
        }
        let (tx, rx) = watch::channel(ConsensusView {
            term: saved_term,
            ..ConsensusView::initial()
        });
        tokio::spawn(watch_metrics(
            raft.metrics(),
            tx,
            names.clone(),
            me,
            saved_term,
        ));
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

impl RaftConsensus {
    fn write_error(&self, e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> ProposeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ProposeError::NotLeader(f.leader_id.and_then(|id| self.names.name(id)))
            }
            e => ProposeError::Failed(e.to_string()),
        }
    }
}

/// The members the log names, voters first; learns their names.
fn members(m: &openraft::StoredMembership<NodeId, Member>, names: &Names) -> Vec<MemberView> {
    let voters: BTreeSet<NodeId> = m.membership().voter_ids().collect();
    let mut out: Vec<MemberView> = m
        .membership()
        .nodes()
        .filter_map(|(id, node)| {
            if !node.name.is_empty() {
                names.insert(&node.name);
            }
            Some(MemberView {
                name: names.name(*id)?,
                address: node.addr.clone(),
                witness: node.witness,
                voter: voters.contains(id),
            })
        })
        .collect();
    out.sort_by(|a, b| b.voter.cmp(&a.voter).then(a.name.cmp(&b.name)));
    out
}

/// Turns openraft's metrics into [`ConsensusView`]s.
async fn watch_metrics(
    mut rx: watch::Receiver<openraft::RaftMetrics<NodeId, Member>>,
    tx: watch::Sender<ConsensusView>,
    names: Arc<Names>,
    me: NodeId,
    saved_term: u64,
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
                // openraft reports term 0 until its core has loaded the vote.
                term: m.current_term.max(saved_term),
                members: members(&m.membership_config, &names),
                leader: m.current_leader.and_then(|id| names.name(id)),
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
                            .filter_map(|(id, l)| names.name(*id).map(|n| (n, l.map(|l| l.index))))
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
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(
                    ProposeError::NotLeader(f.leader_id.and_then(|id| self.names.name(id))),
                ),
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

    fn add_member(
        &self,
        name: String,
        address: String,
        witness: bool,
    ) -> BoxFut<'_, Result<(), ProposeError>> {
        Box::pin(async move {
            if let Some(other) = self.names.name(node_id(&name)).filter(|o| *o != name) {
                return Err(ProposeError::Failed(format!(
                    "`{name}` hashes to the same id as member `{other}`: choose another name"
                )));
            }
            let id = node_id(&name);
            let member = Member {
                addr: address,
                name: name.clone(),
                witness,
            };
            // A learner first: it receives the log (or a snapshot) until it has
            // caught up, without counting toward any majority...
            tracing::info!(node = %name, addr = %member.addr, "adding a learner");
            self.raft
                .add_learner(id, member, true)
                .await
                .map_err(|e| self.write_error(e))?;
            // ...then a voter (a joint change, committed by old and new majorities).
            tracing::info!(node = %name, "learner caught up: making it a voter");
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.write_error(e))?;
            Ok(())
        })
    }

    fn remove_member(&self, name: String) -> BoxFut<'_, Result<(), ProposeError>> {
        Box::pin(async move {
            let id = node_id(&name);
            let m = self.raft.metrics().borrow().membership_config.clone();
            let change = if m.membership().voter_ids().any(|v| v == id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else if m.membership().get_node(&id).is_some() {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            } else {
                return Err(ProposeError::Failed(format!("`{name}` is not a member")));
            };
            tracing::info!(node = %name, "removing a member");
            self.raft
                .change_membership(change, false)
                .await
                .map_err(|e| self.write_error(e))?;
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.raft.shutdown().await {
                tracing::warn!(error = %e, "Raft did not stop cleanly");
            }
        })
    }
}
