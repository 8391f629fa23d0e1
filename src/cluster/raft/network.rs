//! openraft's network over the cluster transport. A peer that cannot be reached
//! is reported `Unreachable` (openraft backs off); a connection that breaks or
//! an answer that is late is a `Network` error (retried at the next heartbeat).

use super::{Member, Names, NodeId, RaftRpc, TypeConfig};
use crate::cluster::transport::{CallError, Peer, Peers, Request, Response};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use std::sync::Arc;

pub struct Factory {
    peers: Arc<Peers>,
    names: Arc<Names>,
}

impl Factory {
    pub fn new(peers: Arc<Peers>, names: Arc<Names>) -> Self {
        Factory { peers, names }
    }
}

pub struct Client {
    target: NodeId,
    peer: Option<Arc<Peer>>,
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Client;

    /// The peer by name; a member added at run time at the address the
    /// membership gives.
    async fn new_client(&mut self, target: NodeId, node: &Member) -> Client {
        let name = if node.name.is_empty() {
            self.names.name(target)
        } else {
            Some(node.name.clone())
        };
        Client {
            target,
            // A node in `peers` keeps the address configured there.
            peer: name.map(|n| {
                self.peers
                    .get(&n)
                    .unwrap_or_else(|| self.peers.ensure(&n, &node.addr))
            }),
        }
    }
}

#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl Client {
    async fn call<T, E>(
        &self,
        rpc: RaftRpc,
        option: &RPCOption,
    ) -> Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(peer) = &self.peer else {
            return Err(RPCError::Unreachable(Unreachable::new(&Message(format!(
                "node {} is not configured",
                self.target
            )))));
        };
        let body =
            serde_json::to_value(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = match peer
            .call_twice(Request::Raft(body), option.hard_ttl())
            .await
        {
            Ok(Response::Raft(v)) => v,
            Ok(other) => {
                return Err(RPCError::Network(NetworkError::new(&Message(format!(
                    "unexpected answer: {other:?}"
                )))));
            }
            Err(e @ CallError::Unreachable(_)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        let result: Result<T, RaftError<NodeId, E>> =
            serde_json::from_value(answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(RaftRpc::Append(rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RaftRpc::Snapshot(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(RaftRpc::Vote(rpc), &option).await
    }
}
