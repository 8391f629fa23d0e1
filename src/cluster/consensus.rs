//! The seam between the cluster logic and the consensus library. The role logic,
//! the VIP and the admin API only see [`Consensus`]; `raft/` implements it on
//! openraft, so a change of library (or of its major version) stays in there.

pub(crate) use crate::command::BoxFut;
use crate::command::{Command, Outcome};
use std::time::Instant;
use tokio::sync::watch;

/// What the consensus layer reports, as of `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsensusView {
    pub term: u64,
    /// The leader this node knows of, by node name.
    pub leader: Option<String>,
    pub is_leader: bool,
    /// When a majority last acknowledged this node as leader: its lease counts
    /// from there.
    pub quorum_acked_at: Option<Instant>,
    pub last_log: Option<u64>,
    pub last_applied: Option<u64>,
    /// On the leader: the last log index known to be on each follower.
    pub matched: Vec<(String, Option<u64>)>,
    /// The membership, as the log has it (empty until this node knows one).
    pub members: Vec<MemberView>,
    pub at: Instant,
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberView {
    pub name: String,
    pub address: String,
    pub witness: bool,
    /// A voter (else a learner still catching up).
    pub voter: bool,
}

impl ConsensusView {
    pub fn initial() -> Self {
        ConsensusView {
            term: 0,
            leader: None,
            is_leader: false,
            quorum_acked_at: None,
            last_log: None,
            last_applied: None,
            matched: Vec::new(),
            members: Vec::new(),
            at: Instant::now(),
        }
    }
}

#[derive(Debug)]
pub enum ProposeError {
    /// This node is not the leader; the leader it knows of, if any.
    NotLeader(Option<String>),
    Failed(String),
}

pub trait Consensus: Send + Sync + 'static {
    /// Updated whenever the consensus state changes.
    fn view(&self) -> watch::Receiver<ConsensusView>;
    /// Replicates a command; returns what applying it produced here and its
    /// log index.
    fn propose(&self, cmd: Command) -> BoxFut<'_, Result<(Outcome, u64), ProposeError>>;
    /// Serves a consensus message from a peer (opaque JSON to the transport).
    fn handle_rpc(&self, msg: serde_json::Value) -> BoxFut<'_, serde_json::Value>;
    /// Starts an election now (the target of a hand-over).
    fn campaign(&self) -> BoxFut<'_, ()>;
    /// Turns heartbeats and elections on or off (a leader handing over stops both).
    fn set_active(&self, heartbeat: bool, elect: bool);
    /// On the leader: adds a node as a learner, waits until it has caught up,
    /// then makes it a voter.
    fn add_member(
        &self,
        name: String,
        address: String,
        witness: bool,
    ) -> BoxFut<'_, Result<(), ProposeError>>;
    /// On the leader: removes a node from the membership.
    fn remove_member(&self, name: String) -> BoxFut<'_, Result<(), ProposeError>>;
    fn shutdown(&self) -> BoxFut<'_, ()>;
}
