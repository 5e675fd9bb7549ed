//! Each partition group's Raft log, as openraft's `RaftLogStorage`: a key range of the node's
//! one Raft log file (`raft.redb`), written through its shared group-committing writer.
//!
//! A write returns once it is durable; entries are then readable. The group keeps its vote and
//! its log's ends in memory (read back from the file when the group opens), so a reader never
//! waits for the file for them.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, SnapshotOf, VoteOf};
use redb::{Database, ReadableDatabase};

use super::log_writer::{
    COMMITTED, ENTRIES, GROUP_RECORDS, INCARNATION, LAST_PURGED, LogChange, LogWriter,
    NODE_RECORDS, SNAPSHOT, VOTE,
};
use super::rollback::Held;
use super::state_machine::PartitionSnapshot;
use super::types::{PartitionId, RaftTypes, ReplicaId};
use crate::codec;
use crate::planted::{self, Bug};
use crate::store::{Disk, StoreError};

type Entry = EntryOf<RaftTypes>;

/// redb page cache of the Raft log file.
const RAFT_LOG_CACHE_BYTES: usize = 8 * 1024 * 1024;
type LogId = LogIdOf<RaftTypes>;
type Vote = VoteOf<RaftTypes>;

/// A node's replica id in every group, and whether this start drew it (the Raft log file was
/// new or emptied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incarnation {
    pub id: ReplicaId,
    pub drawn_now: bool,
}

/// A new replica id: random, never 0 (so that no id looks like a default).
fn random_replica_id() -> ReplicaId {
    (uuid::Uuid::new_v4().as_u128() as u64).max(1)
}

/// The Raft log file of a node: every partition group's log in it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RaftLogs {
    db: Arc<Database>,
    writer: LogWriter,
    disk: Disk,
    path: Arc<Path>,
}

impl RaftLogs {
    /// Opens (or creates) the Raft log file at `path` and starts its writer.
    pub async fn open(path: impl AsRef<Path>, disk: Disk) -> Result<Self, StoreError> {
        let path: Arc<Path> = path.as_ref().into();
        let opening = disk.clone();
        let kept = path.clone();
        let db = disk
            .run(move || {
                let mut builder = Database::builder();
                // Entries are read back soon after they are written (replication, apply) or
                // not at all: a small cache serves that, where redb's default grows to 1 GiB.
                builder.set_cache_size(RAFT_LOG_CACHE_BYTES);
                let db = opening
                    .create(&builder, &kept)
                    .map_err(StoreError::storage)?;
                let txn = db.begin_write().map_err(StoreError::storage)?;
                {
                    // Created now so that readers never meet a missing table.
                    txn.open_table(ENTRIES).map_err(StoreError::storage)?;
                    txn.open_table(GROUP_RECORDS).map_err(StoreError::storage)?;
                }
                txn.commit().map_err(StoreError::storage)?;
                Ok::<_, StoreError>(db)
            })
            .await
            .map_err(|_| StoreError::TaskFailed {
                what: "opening the Raft log",
            })??;
        let db = Arc::new(db);
        let writer = LogWriter::start(db.clone(), disk.clone());
        Ok(Self {
            db,
            writer,
            disk,
            path,
        })
    }

    /// This node's incarnation: its replica id in every group, made (at random) and kept the
    /// first time the file is used. A node whose Raft log file is lost thus comes back under
    /// a new id, and never votes as the replica that promised what it forgot.
    pub async fn incarnation(&self) -> Result<Incarnation, StoreError> {
        let db = self.db.clone();
        let found = self
            .disk
            .run(move || -> Result<Option<Vec<u8>>, StoreError> {
                let txn = db.begin_read().map_err(StoreError::storage)?;
                let records = txn.open_table(GROUP_RECORDS).map_err(StoreError::storage)?;
                Ok(records
                    .get((NODE_RECORDS, INCARNATION))
                    .map_err(StoreError::storage)?
                    .map(|value| value.value().to_vec()))
            })
            .await
            .map_err(|_| StoreError::TaskFailed {
                what: "reading the node's incarnation",
            })??;
        if let Some(id) = decode_record(NODE_RECORDS, "incarnation", found)? {
            return Ok(Incarnation {
                id,
                drawn_now: false,
            });
        }
        let id = if planted::is_planted(Bug::WipedNodeKeepsItsId) {
            // The planted bug: the same id for every file at this path, wiped or not.
            crate::store::fingerprint(self.path.as_os_str().as_encoded_bytes()).max(1)
        } else {
            random_replica_id()
        };
        self.keep_incarnation(id).await?;
        Ok(Incarnation {
            id,
            drawn_now: true,
        })
    }

    /// Draws a new incarnation and keeps it in place of the one the file held: for a file
    /// that was rolled back (see `rollback`). The entries and votes stay: the new replica
    /// starts from them, never votes with them (it is no voter until a leader makes it one).
    pub async fn replace_incarnation(&self) -> Result<ReplicaId, StoreError> {
        let id = random_replica_id();
        self.keep_incarnation(id).await?;
        Ok(id)
    }

    async fn keep_incarnation(&self, id: ReplicaId) -> Result<(), StoreError> {
        let value = codec::encode(&id).map_err(|source| StoreError::Encode {
            stream: "raft incarnation".to_owned(),
            source,
        })?;
        self.writer
            .write(
                NODE_RECORDS,
                LogChange::Record {
                    which: INCARNATION,
                    value,
                },
            )
            .await
            .map_err(|error| StoreError::storage(redb::StorageError::Io(error)))
    }

    /// What the file holds of each partition's group (its vote's term and its last entry's
    /// id), for the partitions in `partitions` it holds anything of.
    pub(crate) async fn held(
        &self,
        partitions: Vec<PartitionId>,
    ) -> Result<std::collections::BTreeMap<PartitionId, Held>, StoreError> {
        let db = self.db.clone();
        self.disk
            .run(move || {
                let mut held = std::collections::BTreeMap::new();
                for partition in partitions {
                    let state = GroupState::read(&db, partition)?;
                    let last = state.last_entry.or(state.last_purged);
                    held.insert(
                        partition,
                        Held {
                            vote_term: state.vote.map_or(0, |vote| vote.leader_id().term),
                            last_log: last.map(|log_id| (log_id.leader_id.term, log_id.index)),
                        },
                    );
                }
                Ok(held)
            })
            .await
            .map_err(|_| StoreError::TaskFailed {
                what: "reading what the Raft log holds",
            })?
    }

    /// Commits nothing more from now on: what a crash does to writes not yet made.
    pub fn stop_writing(&self) {
        self.writer.stop_writing();
    }

    /// Waits for every write queued before this call and stops the writer; later writes
    /// fail. The file closes once the last group handle is dropped.
    pub async fn close(&self) {
        self.writer.close().await;
    }

    /// The log of `partition`'s group, its state read back from the file.
    pub async fn group(&self, partition: PartitionId) -> Result<GroupLog, StoreError> {
        let db = self.db.clone();
        let state = self
            .disk
            .run(move || GroupState::read(&db, partition))
            .await
            .map_err(|_| StoreError::TaskFailed {
                what: "reading a Raft group's log state",
            })??;
        Ok(GroupLog {
            partition,
            db: self.db.clone(),
            writer: self.writer.clone(),
            state: Arc::new(Mutex::new(state)),
        })
    }
}

/// What a group keeps of its log in memory: its vote and its log's ends.
#[derive(Debug, Clone, Default)]
struct GroupState {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// The last entry's id; `None` when the log holds no entry (then the purged one counts).
    last_entry: Option<LogId>,
}

impl GroupState {
    fn read(db: &Database, partition: PartitionId) -> Result<Self, StoreError> {
        let txn = db.begin_read().map_err(StoreError::storage)?;
        let records = txn.open_table(GROUP_RECORDS).map_err(StoreError::storage)?;
        let record = |which: u8| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(records
                .get((partition, which))
                .map_err(StoreError::storage)?
                .map(|value| value.value().to_vec()))
        };
        let vote = decode_record(partition, "vote", record(VOTE)?)?;
        let committed: Option<Option<LogId>> =
            decode_record(partition, "committed log id", record(COMMITTED)?)?;
        let last_purged = decode_record(partition, "purged log id", record(LAST_PURGED)?)?;
        let entries = txn.open_table(ENTRIES).map_err(StoreError::storage)?;
        let last_entry = entries
            .range((partition, 0)..=(partition, u64::MAX))
            .map_err(StoreError::storage)?
            .next_back()
            .transpose()
            .map_err(StoreError::storage)?
            .map(|(_, bytes)| {
                codec::decode::<Entry>(bytes.value())
                    .map(|entry| entry.log_id())
                    .map_err(|source| StoreError::CorruptRaftLog {
                        partition,
                        what: "last entry",
                        source,
                    })
            })
            .transpose()?;
        Ok(Self {
            vote,
            committed: committed.flatten(),
            last_purged,
            last_entry,
        })
    }
}

fn decode_record<T: serde::de::DeserializeOwned>(
    partition: PartitionId,
    what: &'static str,
    bytes: Option<Vec<u8>>,
) -> Result<Option<T>, StoreError> {
    bytes
        .map(|bytes| {
            codec::decode(&bytes).map_err(|source| StoreError::CorruptRaftLog {
                partition,
                what,
                source,
            })
        })
        .transpose()
}

/// One partition group's Raft log (openraft's log storage).
#[derive(Debug, Clone)]
pub struct GroupLog {
    partition: PartitionId,
    db: Arc<Database>,
    writer: LogWriter,
    state: Arc<Mutex<GroupState>>,
}

impl GroupLog {
    fn state(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state
            .lock()
            .expect("a group's log state lock is never poisoned")
    }

    /// Keeps `snapshot` as the group's latest (durable on return).
    pub(crate) async fn save_snapshot(
        &self,
        snapshot: &SnapshotOf<RaftTypes, PartitionSnapshot>,
    ) -> Result<(), io::Error> {
        self.record(SNAPSHOT, &(&snapshot.meta, &snapshot.snapshot))
            .await
    }

    /// The group's latest snapshot, if it has one.
    pub(crate) async fn load_snapshot(
        &self,
    ) -> Result<Option<SnapshotOf<RaftTypes, PartitionSnapshot>>, io::Error> {
        let txn = self.db.begin_read().map_err(io::Error::other)?;
        let records = txn.open_table(GROUP_RECORDS).map_err(io::Error::other)?;
        let Some(bytes) = records
            .get((self.partition, SNAPSHOT))
            .map_err(io::Error::other)?
        else {
            return Ok(None);
        };
        let (meta, snapshot) = codec::decode(bytes.value()).map_err(io::Error::other)?;
        Ok(Some(SnapshotOf::<RaftTypes, PartitionSnapshot> {
            meta,
            snapshot,
        }))
    }

    /// The index of the last entry the log holds (or the last it dropped behind a snapshot).
    pub(crate) fn last_index(&self) -> Option<u64> {
        let state = self.state();
        state
            .last_entry
            .or(state.last_purged)
            .map(|log_id| log_id.index)
    }

    /// Makes `membership` the group's configuration from the next index, under a term past
    /// every term this replica has seen, and votes for `me` in that term: the worst day's
    /// recovery (`recovery`), done while the group is stopped. A running group never writes
    /// its log this way. Durable on return; answers the entry's id.
    ///
    /// The vote is written first: a crash between the two writes leaves a higher term and
    /// nothing else, where the other order would leave an entry of a term the replica never
    /// voted in.
    pub(crate) async fn force_configuration(
        &self,
        me: ReplicaId,
        membership: openraft::Membership<ReplicaId, super::types::Replica>,
    ) -> Result<LogId, io::Error> {
        let (vote_term, last) = {
            let state = self.state();
            (
                state.vote.map_or(0, |vote| vote.leader_id().term),
                state.last_entry.or(state.last_purged),
            )
        };
        let last_term = last.map_or(0, |log_id| log_id.leader_id.term);
        let term = vote_term.max(last_term) + 1;
        let index = last.map_or(0, |log_id| log_id.index + 1);
        let vote = Vote::new(term, me);
        self.record(VOTE, &vote).await?;
        self.state().vote = Some(vote);
        let log_id = LogId::new_term_index(term, index);
        let entry = Entry::new_membership(log_id, membership);
        let bytes = codec::encode(&entry).map_err(io::Error::other)?;
        self.writer
            .write(self.partition, LogChange::Append(vec![(index, bytes)]))
            .await?;
        self.state().last_entry = Some(log_id);
        Ok(log_id)
    }

    async fn record(&self, which: u8, value: &impl serde::Serialize) -> Result<(), io::Error> {
        let value = codec::encode(value).map_err(io::Error::other)?;
        self.writer
            .write(self.partition, LogChange::Record { which, value })
            .await
    }
}

fn bound(bound: Bound<&u64>, past: bool) -> u64 {
    match bound {
        Bound::Included(&index) => index,
        Bound::Excluded(&index) if past => index.saturating_sub(1),
        Bound::Excluded(&index) => index.saturating_add(1),
        Bound::Unbounded if past => u64::MAX,
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<RaftTypes> for GroupLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (from, to) = (
            bound(range.start_bound(), false),
            bound(range.end_bound(), true),
        );
        if matches!(range.end_bound(), Bound::Excluded(0)) || from > to {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(io::Error::other)?;
        let entries = txn.open_table(ENTRIES).map_err(io::Error::other)?;
        entries
            .range((self.partition, from)..=(self.partition, to))
            .map_err(io::Error::other)?
            .map(|item| {
                let (_, bytes) = item.map_err(io::Error::other)?;
                codec::decode::<Entry>(bytes.value()).map_err(io::Error::other)
            })
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.state().vote)
    }
}

impl RaftLogStorage<RaftTypes> for GroupLog {
    type LogReader = GroupLog;

    async fn get_log_state(&mut self) -> Result<LogState<RaftTypes>, io::Error> {
        let state = self.state();
        Ok(LogState {
            last_purged_log_id: state.last_purged,
            last_log_id: state.last_entry.or(state.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.record(VOTE, vote).await?;
        self.state().vote = Some(*vote);
        Ok(())
    }

    /// Kept without waiting for the disk: it only saves re-applying after a restart. A
    /// commit point lost in a crash is found again (openraft recovers it from the group), and
    /// nothing waits on this write but the next one of the group.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let value = codec::encode(&committed).map_err(io::Error::other)?;
        self.writer
            .queue(
                self.partition,
                LogChange::Record {
                    which: COMMITTED,
                    value,
                },
            )
            .await?;
        self.state().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.state().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<RaftTypes>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut last = None;
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(io::Error::other)?;
            encoded.push((entry.index(), bytes));
            last = Some(entry.log_id());
        }
        let Some(last) = last else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let written = self
            .writer
            .write(self.partition, LogChange::Append(encoded))
            .await;
        if written.is_ok() {
            self.state().last_entry = Some(last);
        }
        let answer = written
            .as_ref()
            .map(|_| ())
            .map_err(|error| io::Error::other(error.to_string()));
        callback.io_completed(answer);
        written
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let after = last_log_id.as_ref().map(|id| id.index());
        self.writer
            .write(self.partition, LogChange::TruncateAfter(after))
            .await?;
        let mut state = self.state();
        // Truncating after the end keeps the end.
        let beyond = |last: &LogId| {
            last_log_id
                .as_ref()
                .is_none_or(|kept| last.index() > kept.index())
        };
        if state.last_entry.as_ref().is_some_and(beyond) {
            state.last_entry = last_log_id;
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let encoded = codec::encode(&log_id).map_err(io::Error::other)?;
        self.writer
            .write(
                self.partition,
                LogChange::Purge {
                    upto: log_id.index(),
                    log_id: encoded,
                },
            )
            .await?;
        let mut state = self.state();
        if state
            .last_entry
            .as_ref()
            .is_some_and(|last| last.index() <= log_id.index())
        {
            state.last_entry = None;
        }
        state.last_purged = Some(log_id);
        Ok(())
    }
}
