//! The replicated state machine: committed admin commands, handed in log order
//! to the [`Applier`] (the running proxy, or nothing on a witness).
//!
//! It lives in memory: at start every committed entry of the log is applied again
//! on top of the file config, which rebuilds the same state. Snapshots are off
//! (the log only grows with admin changes); should one ever be installed, its
//! command history is replayed the same way.

use super::Applied;
use super::TypeConfig;
use crate::command::{Command, CommandSink};
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, Mutex};

type NodeId = u64;

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    history: Vec<Command>,
}

pub struct StateMachine {
    applier: Arc<dyn CommandSink>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Every command applied, in order (what a snapshot carries).
    history: Vec<Command>,
    /// The latest snapshot, built here or installed; shared with builders.
    current: Current,
    snapshots_built: u64,
}

type Current = Arc<Mutex<Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StateMachine {
    pub fn new(applier: Arc<dyn CommandSink>) -> Self {
        StateMachine {
            applier,
            last_applied: None,
            membership: StoredMembership::default(),
            history: Vec::new(),
            current: Arc::new(Mutex::new(None)),
            snapshots_built: 0,
        }
    }
}

/// Builds a snapshot from a copy taken when openraft asks for a builder.
pub struct Builder {
    sm: StateMachineCopy,
    current: Current,
}

struct StateMachineCopy {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    history: Vec<Command>,
    n: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let body = serde_json::to_vec(&SnapshotBody {
            history: self.sm.history.clone(),
        })
        .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let meta = SnapshotMeta {
            last_log_id: self.sm.last_applied,
            last_membership: self.sm.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.sm.last_applied.map(|l| l.index).unwrap_or(0),
                self.sm.n
            ),
        };
        *lock(&self.current) = Some((meta.clone(), body.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(body)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for e in entries {
            self.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Applied::default()),
                EntryPayload::Normal(cmd) => {
                    tracing::info!(index = e.log_id.index, change = %cmd, "applying a replicated change");
                    let outcome = self.applier.submit(cmd.clone()).await;
                    if let Err(err) = &outcome {
                        tracing::warn!(index = e.log_id.index, error = %err, "a replicated change failed here");
                    }
                    self.history.push(cmd);
                    out.push(Applied(Some(outcome)));
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Applied::default());
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        Builder {
            sm: StateMachineCopy {
                last_applied: self.last_applied,
                membership: self.membership.clone(),
                history: self.history.clone(),
                n: self.snapshots_built,
            },
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(
            commands = body.history.len(),
            "installing a snapshot from the primary"
        );
        for cmd in &body.history {
            let _ = self.applier.submit(cmd.clone()).await;
        }
        self.history = body.history;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *lock(&self.current) = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        match &*lock(&self.current) {
            Some((meta, bytes)) => Ok(Some(Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(bytes.clone())),
            })),
            None => Ok(None),
        }
    }
}
