//! The Raft log and vote, on disk under `state_dir`.
//!
//! `raft-log.jsonl` holds one JSON entry per line, appended and fsynced before
//! openraft is told the entries are durable (Raft may only acknowledge what
//! survives a crash). `raft-state.json` holds the vote, the committed and purged
//! log ids; it is replaced atomically (write, fsync, rename, fsync the directory).
//! The whole log is also kept in memory; it is compacted (purged) behind each
//! snapshot (see `state_machine`), so it holds at most a few hundred entries. A
//! torn last line (a crash mid-append, never acknowledged) is dropped
//! at start; damage anywhere else stops the node with the file's name.

use super::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

type NodeId = u64;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
struct Persisted {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

struct Data {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    state: Persisted,
}

struct Files {
    dir: PathBuf,
    log: Mutex<File>,
}

/// Cheap to clone: the reader openraft asks for shares the same data.
#[derive(Clone)]
pub struct LogStore {
    data: Arc<Mutex<Data>>,
    files: Arc<Files>,
}

const LOG_FILE: &str = "raft-log.jsonl";
const STATE_FILE: &str = "raft-state.json";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens a file only the owner may read: the log carries certificate keys.
fn private_file(path: &Path, truncate: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.mode(0o600).create(true);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    o.open(path)
}

/// Writes `bytes` to `dir/name` so that a crash leaves the old or the new file.
pub(super) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = private_file(&tmp, true)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

impl LogStore {
    /// Opens (or creates) the log under `dir`.
    pub fn open(dir: &Path) -> Result<LogStore, String> {
        std::fs::create_dir_all(dir)
            .and_then(|_| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("cannot create state_dir {}: {e}", dir.display()))?;
        let state_path = dir.join(STATE_FILE);
        let state = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{} is damaged: {e}", state_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", state_path.display())),
        };
        let log_path = dir.join(LOG_FILE);
        let mut entries = BTreeMap::new();
        let text = match std::fs::read(&log_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", log_path.display())),
        };
        let mut good = 0usize;
        let mut torn = false;
        let mut pos = 0usize;
        while pos < text.len() {
            let end = text[pos..].iter().position(|&b| b == b'\n');
            let (line, next, complete) = match end {
                Some(i) => (&text[pos..pos + i], pos + i + 1, true),
                None => (&text[pos..], text.len(), false),
            };
            match (serde_json::from_slice::<Entry<TypeConfig>>(line), complete) {
                (Ok(e), true) => {
                    entries.insert(e.log_id.index, e);
                    good = next;
                }
                _ if next == text.len() => torn = true,
                (r, _) => {
                    return Err(format!(
                        "{} is damaged at byte {pos}: {}",
                        log_path.display(),
                        r.err().map(|e| e.to_string()).unwrap_or_default()
                    ));
                }
            }
            pos = next;
        }
        if torn {
            tracing::warn!(file = %log_path.display(), "dropping a torn last log entry (crash during append)");
        }
        let log = private_file(&log_path, false)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        if torn {
            log.set_len(good as u64)
                .and_then(|_| log.sync_all())
                .map_err(|e| format!("cannot repair {}: {e}", log_path.display()))?;
        }
        // Entries at or below the purge point may linger after a crash between
        // writing the state and rewriting the log.
        if let Some(p) = &state.purged {
            entries.retain(|i, _| *i > p.index);
        }
        Ok(LogStore {
            data: Arc::new(Mutex::new(Data { entries, state })),
            files: Arc::new(Files {
                dir: dir.to_path_buf(),
                log: Mutex::new(log),
            }),
        })
    }

    /// True when nothing was ever stored here (a new node).
    pub fn is_pristine(&self) -> bool {
        let d = lock(&self.data);
        d.entries.is_empty() && d.state.vote.is_none() && d.state.purged.is_none()
    }

    /// The term of the vote saved here (0 on a new node): a restarted node's
    /// term never starts below what it had reached.
    pub fn saved_term(&self) -> u64 {
        lock(&self.data)
            .state
            .vote
            .map(|v| v.leader_id().term)
            .unwrap_or(0)
    }

    fn save_state(&self, state: Persisted) -> impl Future<Output = std::io::Result<()>> + use<> {
        let files = self.files.clone();
        async move {
            let bytes = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
            tokio::task::spawn_blocking(move || replace_file(&files.dir, STATE_FILE, &bytes))
                .await
                .map_err(std::io::Error::other)?
        }
    }

    /// Rewrites the log file from memory (after a truncation or a purge).
    async fn rewrite_log(&self) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for e in lock(&self.data).entries.values() {
            serde_json::to_writer(&mut bytes, e).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
        }
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = lock(&files.log);
            replace_file(&files.dir, LOG_FILE, &bytes)?;
            *log = OpenOptions::new()
                .append(true)
                .open(files.dir.join(LOG_FILE))?;
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let d = lock(&self.data);
        Ok(d.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let d = lock(&self.data);
        let last = d
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(d.state.purged);
        Ok(LogState {
            last_purged_log_id: d.state.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let state = {
            let mut d = lock(&self.data);
            d.state.vote = Some(*vote);
            d.state.clone()
        };
        self.save_state(state)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(lock(&self.data).state.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let state = {
            let mut d = lock(&self.data);
            if d.state.committed == committed {
                return Ok(());
            }
            d.state.committed = committed;
            d.state.clone()
        };
        self.save_state(state)
            .await
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(lock(&self.data).state.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut bytes = Vec::new();
        {
            let mut d = lock(&self.data);
            for e in entries {
                serde_json::to_writer(&mut bytes, &e)
                    .map_err(|err| StorageIOError::write_logs(&err))?;
                bytes.push(b'\n');
                d.entries.insert(e.log_id.index, e);
            }
        }
        let files = self.files.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut log = lock(&files.log);
            log.write_all(&bytes)?;
            log.sync_data()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        lock(&self.data).entries.retain(|i, _| *i < log_id.index);
        self.rewrite_log()
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let state = {
            let mut d = lock(&self.data);
            d.state.purged = Some(log_id);
            d.entries.retain(|i, _| *i > log_id.index);
            d.state.clone()
        };
        self.save_state(state)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.rewrite_log()
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::raft::state_machine::StateMachine;
    use crate::command::{BoxFut, Command, CommandSink, Outcome};
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload};

    struct Nothing;
    impl CommandSink for Nothing {
        fn submit(&self, _: Command) -> BoxFut<'static, Outcome> {
            Box::pin(async { Ok(serde_json::Value::Null) })
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d =
            std::env::temp_dir().join(format!("fulcrum-logstore-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Removes the directory when the suite is done with a store.
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Builder;
    impl StoreBuilder<TypeConfig, LogStore, StateMachine, Cleanup> for Builder {
        async fn build(&self) -> Result<(Cleanup, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = temp_dir("suite");
            let store = LogStore::open(&dir)
                .map_err(|e| StorageIOError::read_logs(&std::io::Error::other(e)))?;
            let sm = StateMachine::new(Arc::new(Nothing), &dir);
            Ok((Cleanup(dir), store, sm))
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[test]
    fn passes_the_openraft_storage_suite() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            // The suite drives its own runtime calls from inside; run it on a
            // blocking thread.
            tokio::task::spawn_blocking(|| Suite::test_all(Builder).map_err(|e| e.to_string()))
                .await
                .expect("suite thread")
                .expect("storage suite");
        });
    }

    fn entry(term: u64, index: u64, pool: &str) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Command::RemoveBackend {
                pool: pool.into(),
                address: format!("10.0.0.{index}:80"),
            }),
        }
    }

    #[tokio::test]
    async fn log_vote_and_truncation_survive_a_restart() {
        let dir = temp_dir("restart");
        let _cleanup = Cleanup(dir.clone());
        {
            let mut s = LogStore::open(&dir).expect("open");
            assert!(s.is_pristine());
            s.blocking_append((1..=5).map(|i| entry(1, i, "a")))
                .await
                .expect("append");
            s.save_vote(&Vote::new(2, 7)).await.expect("vote");
            s.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
                .await
                .expect("truncate");
            s.blocking_append([entry(2, 4, "b")]).await.expect("append");
            s.purge(LogId::new(CommittedLeaderId::new(1, 1), 1))
                .await
                .expect("purge");
        }
        let mut s = LogStore::open(&dir).expect("reopen");
        assert!(!s.is_pristine());
        assert_eq!(s.read_vote().await.expect("vote"), Some(Vote::new(2, 7)));
        let got = s.try_get_log_entries(0..100).await.expect("read");
        let idx: Vec<(u64, u64)> = got
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect();
        assert_eq!(idx, vec![(1, 2), (1, 3), (2, 4)]);
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(1));
        assert_eq!(st.last_log_id.map(|l| l.index), Some(4));
    }

    #[tokio::test]
    async fn a_torn_last_line_is_dropped_and_damage_elsewhere_is_refused() {
        let dir = temp_dir("torn");
        let _cleanup = Cleanup(dir.clone());
        {
            let mut s = LogStore::open(&dir).expect("open");
            s.blocking_append((1..=2).map(|i| entry(1, i, "a")))
                .await
                .expect("append");
        }
        let log = dir.join(LOG_FILE);
        let mut f = OpenOptions::new().append(true).open(&log).expect("log");
        f.write_all(b"{\"log_id\":{\"leader_id\"")
            .expect("torn write");
        drop(f);
        let mut s = LogStore::open(&dir).expect("reopen after a torn append");
        assert_eq!(s.try_get_log_entries(0..10).await.expect("read").len(), 2);
        s.blocking_append([entry(1, 3, "a")]).await.expect("append");
        drop(s);
        assert_eq!(
            LogStore::open(&dir)
                .expect("reopen")
                .try_get_log_entries(0..10)
                .await
                .expect("read")
                .len(),
            3
        );
        // A damaged line in the middle is not silently skipped.
        let text = std::fs::read_to_string(&log).expect("read log");
        let damaged = text.replacen("\"term\"", "\"tXrm\"", 1);
        std::fs::write(&log, damaged).expect("write");
        let err = LogStore::open(&dir).err().expect("damage must be refused");
        assert!(err.contains("damaged"), "{err}");
    }
}
