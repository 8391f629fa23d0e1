//! The replicated state machine: committed admin commands, handed in log order
//! to the applier (the running proxy, or nothing on a witness).
//!
//! The replicated state is what the commands built on top of the file config
//! (the admin layer, backend and failover actions, ACME challenges and
//! certificates), so a snapshot is the list of commands that rebuilds it, each
//! with its log index, compacted: of the ACME commands only the last one per
//! challenge or per certificate is kept (each replaces the one before), which
//! keeps renewals from growing it for ever. The latest snapshot is written to
//! `state_dir` before openraft purges the log it covers; at start it is applied
//! again, then the log after it.
//!
//! Installing a snapshot on a node that lags replays only the commands after
//! what the node has applied already (its applied entries are a prefix of every
//! later log), so nothing is applied twice.

use super::Applied;
use super::Member;
use super::TypeConfig;
use crate::command::{Command, CommandSink};
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

type NodeId = u64;

const SNAPSHOT_FILE: &str = "raft-snapshot.json";

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    /// `(log index, command)`, in log order.
    history: Vec<(u64, Command)>,
}

/// What `raft-snapshot.json` holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta<NodeId, Member>,
    /// The snapshot's bytes (a `SnapshotBody`), as sent to other nodes.
    body: String,
}

pub struct StateMachine {
    applier: Arc<dyn CommandSink>,
    dir: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    /// Every command applied, with its log index, in order (what a snapshot carries).
    history: Vec<(u64, Command)>,
    /// The latest snapshot, built here or installed; shared with builders.
    current: Current,
    snapshots_built: u64,
}

type Current = Arc<Mutex<Option<(SnapshotMeta<NodeId, Member>, Vec<u8>)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops the ACME commands a later one for the same challenge or certificate
/// replaces, and cache purges (an action on what a node holds at that moment,
/// not state a snapshot rebuilds); keeps everything else, in order.
pub(super) fn compact(history: &mut Vec<(u64, Command)>) {
    let mut seen = HashSet::new();
    let mut keep = vec![true; history.len()];
    for (i, (_, cmd)) in history.iter().enumerate().rev() {
        let key = match cmd {
            Command::AcmeChallenge {
                directory,
                kind,
                name,
                ..
            } => format!("challenge\0{directory}\0{}\0{name}", kind.word()),
            Command::AcmeCertificate {
                directory, domain, ..
            } => format!("certificate\0{directory}\0{domain}"),
            Command::PurgeCache { .. } => {
                keep[i] = false;
                continue;
            }
            _ => continue,
        };
        keep[i] = seen.insert(key);
    }
    let mut k = keep.into_iter();
    history.retain(|_| k.next().unwrap_or(true));
}

/// Writes the snapshot so that a crash leaves the old or the new file.
fn save(dir: &Path, meta: &SnapshotMeta<NodeId, Member>, body: &[u8]) -> std::io::Result<()> {
    let stored = Stored {
        meta: meta.clone(),
        body: String::from_utf8(body.to_vec()).map_err(std::io::Error::other)?,
    };
    let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
    super::log_store::replace_file(dir, SNAPSHOT_FILE, &bytes)
}

impl StateMachine {
    /// An empty state machine (the file config only), or the snapshot saved in
    /// `dir` applied again.
    pub async fn open(dir: &Path, applier: Arc<dyn CommandSink>) -> Result<Self, String> {
        let mut sm = StateMachine {
            applier,
            dir: dir.to_path_buf(),
            last_applied: None,
            membership: StoredMembership::default(),
            history: Vec::new(),
            current: Arc::new(Mutex::new(None)),
            snapshots_built: 0,
        };
        let path = dir.join(SNAPSHOT_FILE);
        let stored: Stored = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{} is damaged: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(sm),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let body: SnapshotBody = serde_json::from_str(&stored.body)
            .map_err(|e| format!("{} is damaged: {e}", path.display()))?;
        tracing::info!(
            commands = body.history.len(),
            up_to = stored.meta.last_log_id.map(|l| l.index).unwrap_or(0),
            "applying the saved snapshot"
        );
        sm.replay(&body.history).await;
        sm.history = body.history;
        sm.last_applied = stored.meta.last_log_id;
        sm.membership = stored.meta.last_membership.clone();
        *lock(&sm.current) = Some((stored.meta, stored.body.into_bytes()));
        Ok(sm)
    }

    /// Applies the commands of `history` that come after what is applied here.
    async fn replay(&self, history: &[(u64, Command)]) {
        let after = self.last_applied.map(|l| l.index);
        for (index, cmd) in history {
            if after.is_some_and(|a| *index <= a) {
                continue;
            }
            if let Err(e) = self.applier.submit(cmd.clone()).await {
                tracing::warn!(index, error = %e, "a replicated change failed here");
            }
        }
    }

    #[cfg(test)]
    pub fn new(applier: Arc<dyn CommandSink>, dir: &Path) -> Self {
        StateMachine {
            applier,
            dir: dir.to_path_buf(),
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
    dir: PathBuf,
}

struct StateMachineCopy {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    history: Vec<(u64, Command)>,
    n: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let body = serde_json::to_vec(&SnapshotBody {
            history: std::mem::take(&mut self.sm.history),
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
        // On disk before openraft purges the log entries it covers.
        let (dir, m, b) = (self.dir.clone(), meta.clone(), body.clone());
        tokio::task::spawn_blocking(move || save(&dir, &m, &b))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(
            up_to = meta.last_log_id.map(|l| l.index).unwrap_or(0),
            bytes = body.len(),
            "snapshot taken; the log before it can be compacted"
        );
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
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError<NodeId>>
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
                    self.history.push((e.log_id.index, cmd));
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
        compact(&mut self.history);
        Builder {
            dir: self.dir.clone(),
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
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(
            commands = body.history.len(),
            up_to = meta.last_log_id.map(|l| l.index).unwrap_or(0),
            applied_here = self.last_applied.map(|l| l.index).unwrap_or(0),
            "installing a snapshot from the primary"
        );
        let (dir, m, b) = (self.dir.clone(), meta.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || save(&dir, &m, &b))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.replay(&body.history).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ChallengeKind;

    fn challenge(name: &str, value: Option<&str>) -> Command {
        Command::AcmeChallenge {
            directory: "d".into(),
            kind: ChallengeKind::Http01,
            name: name.into(),
            value: value.map(str::to_string),
        }
    }

    fn cert(domain: &str, n: u32) -> Command {
        Command::AcmeCertificate {
            directory: "d".into(),
            domain: domain.into(),
            chain_pem: format!("chain {n}"),
            key_pem: format!("key {n}"),
        }
    }

    #[test]
    fn compaction_keeps_the_last_acme_command_of_each_kind_and_every_other() {
        let drain = Command::Backend {
            pool: "p".into(),
            address: "a:1".into(),
            action: crate::command::BackendAction::Drain,
        };
        let mut h: Vec<(u64, Command)> = vec![
            (1, challenge("t1", Some("v"))),
            (2, cert("a.example", 1)),
            (3, drain.clone()),
            (4, challenge("t1", None)),
            (5, cert("a.example", 2)),
            (6, cert("b.example", 1)),
            (7, drain.clone()),
            (
                8,
                Command::PurgeCache {
                    kind: crate::command::PurgeKind::Prefix,
                    value: "/".into(),
                },
            ),
        ];
        compact(&mut h);
        let idx: Vec<u64> = h.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [3, 4, 5, 6, 7], "purges are not state");
        assert_eq!(h[2].1, cert("a.example", 2));
    }
}
