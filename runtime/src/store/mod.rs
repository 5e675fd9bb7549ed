//! The event store on redb: streams with contiguous versions, a global log, snapshots, processed
//! command ids and subscriber checkpoints.
//!
//! Writes (appends, snapshots, checkpoints) go through one group-committing writer (see
//! [`writer`]); an `Ok` answer means the write is durable. Reads open their own redb read
//! transaction and never wait for the writer: they see the last committed state.

mod digest;
mod disk;
mod error;
mod format;
mod index;
mod read_model;
pub mod retention;
mod room;
mod tables;
mod view;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use digest::{StoreDigest, Summed};
pub use disk::{Disk, DiskImage, SimulatedDisk};
pub use error::StoreError;
pub use read_model::{ReadModelSnapshot, TableChange, decode_counter};
pub use room::SpareClaim;
pub use tables::ProcessedCommand;
pub use view::StoreView;
pub use writer::GroupCommitOptions;

use crate::codec;
use index::{STREAM_INDEX, StreamIndex};
use tables::{CHECKPOINTS, LOG, LogRecord, PROCESSED_COMMANDS, SNAPSHOTS, SnapshotRecord};
use writer::{WriteOp, WriterState};

/// An event to append: its type name, schema version and encoded payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u16,
    pub payload: Vec<u8>,
}

/// Correlation and causation ids stored with every event of one append, and its time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Ties together everything done for one outside request (an HTTP request id, a saga id).
    pub correlation_id: Option<String>,
    /// What directly caused these events (usually the command id).
    pub causation_id: Option<String>,
    /// The events' recorded time (microseconds since the Unix epoch) when the caller stamps
    /// it; `None` takes the writer's clock at commit. A replicated append carries its leader's
    /// stamp, so that every replica stores the same event.
    pub recorded_at_micros: Option<i64>,
}

/// One append: `events` go to `stream` only if the stream is at `expected_version` (0 = empty).
///
/// With a `command_id`, `events` may be empty: the command is then recorded as processed with
/// no events (a no-op, or a refusal carried in `rejection`), so that a retry gets the same answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendRequest {
    pub stream: String,
    pub expected_version: u64,
    pub events: Vec<NewEvent>,
    /// The encoded refusal of a refused command (with `events` empty).
    pub rejection: Option<Vec<u8>>,
    /// When set, a second append with the same id returns the first one's outcome and writes nothing.
    pub command_id: Option<String>,
    /// Identifies the command behind `command_id` (see [`fingerprint`]); the same id with another
    /// fingerprint is [`StoreError::CommandIdReused`]. 0 when the caller has none.
    pub fingerprint: u64,
    pub metadata: EventMetadata,
    /// Changes to read-model tables that commit in the same transaction as the events, or not
    /// at all (a saga's summary in the saga tables, kept in step with its stream).
    pub table_changes: Vec<TableChange>,
}

/// A stable 64-bit fingerprint (FNV-1a) of bytes, e.g. of an encoded command. Stable across
/// builds and platforms, unlike `std`'s hasher, because it is stored.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    fingerprint_of([bytes])
}

/// The [`fingerprint`] of `parts` laid end to end, without putting them together first.
pub fn fingerprint_of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    parts
        .into_iter()
        .flatten()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Where an append's events landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    pub first_version: u64,
    pub last_version: u64,
    pub first_position: u64,
    /// True when the command id had been processed before and nothing new was written.
    pub deduplicated: bool,
    /// The recorded refusal, when the command was refused.
    pub rejection: Option<Vec<u8>>,
    /// With replication: the partition and Raft index of the entry whose applying answered
    /// this (set by the journal; the store leaves it empty).
    #[serde(default)]
    pub replicated_at: Option<(u32, u64)>,
}

impl AppendOutcome {
    fn from_processed(processed: &ProcessedCommand, deduplicated: bool) -> Self {
        Self {
            first_version: processed.first_version,
            last_version: processed.last_version,
            first_position: processed.first_position,
            deduplicated,
            rejection: processed.rejection.clone(),
            replicated_at: None,
        }
    }
}

/// An event as read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub schema_version: u16,
    /// Commit time, microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub payload: Vec<u8>,
}

impl RecordedEvent {
    fn from_record(position: u64, record: LogRecord) -> Self {
        Self {
            position,
            stream: record.stream,
            version: record.version,
            event_type: record.event_type,
            schema_version: record.schema_version,
            recorded_at_micros: record.recorded_at_micros,
            correlation_id: record.correlation_id,
            causation_id: record.causation_id,
            payload: record.payload,
        }
    }
}

/// The latest saved state of a stream, taken at `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    pub schema_version: u16,
    pub state: Vec<u8>,
}

/// Whether this build forgets command ids (cargo feature `chaos-forget-command-ids`): a
/// retried command is applied again. It breaks the at-most-once guarantee on purpose, so that
/// the bank test's checker can be seen failing; never in a real build.
pub const FORGETS_COMMAND_IDS: bool = cfg!(feature = "chaos-forget-command-ids");

/// Options for [`EventStore::open`].
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub group_commit: GroupCommitOptions,
    /// redb page cache of the log file, in bytes (the index file gets a quarter of it);
    /// `None` keeps redb's default.
    pub cache_size_bytes: Option<usize>,
    /// Where the files live: the filesystem, or a simulated disk.
    pub disk: Disk,
    /// Free space to keep on the store's volume: below it, appends are refused
    /// ([`StoreError::DiskFull`]). 0 keeps none.
    pub min_free_bytes: u64,
}

/// A handle to the store. Cheap to clone; the writer stops when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct EventStore {
    /// The log file: events, processed commands, snapshots, checkpoints.
    db: Arc<Database>,
    /// The stream index file, derived from the log (see [`index`]).
    index: Arc<Database>,
    writes: mpsc::Sender<WriteOp>,
    /// The log's end (the next position), as of the last durable commit.
    log_end: tokio::sync::watch::Receiver<u64>,
    disk: Disk,
    room: Arc<room::Room>,
}

impl EventStore {
    /// Opens (or creates) the store at `path` (the log file; the index file goes beside it as
    /// `*.index.redb`) and starts its writer on the current runtime. After a crash this
    /// re-indexes the log's tail before it returns.
    pub async fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let room = Arc::new(room::Room::new(
            &path,
            options.disk.clone(),
            options.min_free_bytes,
        ));
        let cache = options.cache_size_bytes;
        let disk = options.disk.clone();
        let opening = disk.clone();
        let (db, index, state) = disk
            .run(move || {
                let db = Arc::new(open_database(&opening, &path, cache)?);
                // The index's entries are small: a quarter of the log's cache serves it.
                let index_cache = cache.map(|bytes| (bytes / 4).max(1024 * 1024));
                let index =
                    StreamIndex::open_file(&opening, &index::index_path(&path), index_cache)?;
                let state = WriterState::recover(&db, index.clone())?;
                Ok::<_, StoreError>((db, index, state))
            })
            .await
            .map_err(|_| StoreError::TaskFailed {
                what: "opening the store",
            })??;
        let (writes, queue) = mpsc::channel(options.group_commit.queue_capacity.max(1));
        let (log_end_sender, log_end) = tokio::sync::watch::channel(state.next_position());
        tokio::spawn(writer::run(
            db.clone(),
            index.clone(),
            state,
            queue,
            options.group_commit,
            log_end_sender,
            disk.clone(),
        ));
        Ok(Self {
            db,
            index,
            writes,
            log_end,
            disk,
            room,
        })
    }

    /// `Ok` while the store's volume has its reserve free (`StoreOptions::min_free_bytes`);
    /// [`StoreError::DiskFull`] once it has less. Checked before a write is made (a command's
    /// append, a proposal to a Raft group), never while applying one: every replica must apply
    /// what its group agreed.
    pub fn ensure_room(&self) -> Result<(), StoreError> {
        self.room.ensure()
    }

    /// Bytes free on the store's volume beyond its reserve (0 below it) and not claimed, as
    /// last read; `None` when the free space cannot be read.
    pub fn spare_bytes(&self) -> Option<u64> {
        self.room.spare_bytes()
    }

    /// Sets `bytes` aside beyond the reserve for a write no one asked for (a snapshot), until
    /// the claim is dropped; when they do not fit, the bytes spare.
    pub fn claim_spare(&self, bytes: u64) -> Result<SpareClaim, u64> {
        self.room.claim(bytes)
    }

    /// Appends events to a stream if it is at the expected version. Answers once durable.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.submit(|reply| WriteOp::Append {
            request,
            reply,
            durable: true,
        })
        .await
    }

    /// Like [`EventStore::append`], for an append the caller can make again after a crash (a
    /// replicated log's committed entry, re-applied on restart): answered once committed,
    /// without waiting for the disk. It becomes durable with the next durable commit: any
    /// other write, or within about a second of the writer going idle. Until then a crash
    /// may lose it, with everything committed after it, never part of it.
    pub async fn append_unsynced(
        &self,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        self.queue_unsynced(request)
            .await?
            .await
            .map_err(|_| StoreError::WriterStopped)?
    }

    /// Queues an unsynced append (see [`EventStore::append_unsynced`]) and returns at once
    /// with what will hear its answer: appends queued one after the other are written in that
    /// order, likely in one batch.
    pub async fn queue_unsynced(
        &self,
        request: AppendRequest,
    ) -> Result<oneshot::Receiver<Result<AppendOutcome, StoreError>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteOp::Append {
                request,
                reply,
                durable: false,
            })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(answer)
    }

    /// Makes everything committed so far durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.submit(|reply| WriteOp::Sync { reply }).await
    }

    /// Settles whether the command carrying `command_id` (meant for `stream`) was processed:
    /// `Some` with what it produced if it was; `None` if it was not, in which case it now never
    /// will be: the id is recorded as fenced, and the command, should it still arrive, is
    /// refused as [`StoreError::CommandIdReused`]. Atomic with appends (both go through the
    /// writer), so there is no moment at which the command could slip in between.
    ///
    /// This is how a saga decides a step whose outcome it never heard (every attempt timed
    /// out): it fences the step's command id before compensating, so the step cannot apply
    /// after the saga has moved on. Answers once durable.
    pub async fn fence_command(
        &self,
        stream: &str,
        command_id: &str,
    ) -> Result<Option<ProcessedCommand>, StoreError> {
        let (stream, command_id) = (stream.to_owned(), command_id.to_owned());
        self.submit(|reply| WriteOp::Fence {
            stream,
            command_id,
            reply,
        })
        .await
    }

    /// Forgets the processed commands that `holds` covers (by stream) and that wrote events
    /// recorded before `before_micros` ([`StoreView::commands_written_before`]); answers how
    /// many.
    pub async fn forget_commands_before(
        &self,
        before_micros: i64,
        holds: impl FnMut(&str) -> bool + Send + 'static,
        changes: Vec<TableChange>,
    ) -> Result<usize, StoreError> {
        let view = self.view()?;
        let ids = self
            .blocking("choosing the commands a retention cut forgets", move || {
                view.commands_written_before(before_micros, holds)
            })
            .await??;
        let forgotten = ids.len();
        self.forget_commands(ids, changes).await?;
        Ok(forgotten)
    }

    /// Forgets the processed commands `command_ids` (ids not recorded are skipped): a command
    /// sent again with one of them is applied as new. Chosen by
    /// [`StoreView::commands_written_before`]; a forget lost in a crash is made again by
    /// whoever asked for it (the replicated log, or the next cut).
    /// `changes` (read-model rows) are written in the same transaction.
    pub async fn forget_commands(
        &self,
        command_ids: Vec<String>,
        changes: Vec<TableChange>,
    ) -> Result<(), StoreError> {
        if command_ids.is_empty() && changes.is_empty() {
            return Ok(());
        }
        self.submit(|reply| WriteOp::Forget {
            command_ids,
            changes,
            reply,
        })
        .await
    }

    /// Replaces the stream's snapshot. Answered once committed; it becomes durable with the
    /// next durable commit (a snapshot lost in a crash is made again from the events).
    pub async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), StoreError> {
        let snapshot = SnapshotRecord {
            version: snapshot.version,
            schema_version: snapshot.schema_version,
            state: snapshot.state,
        };
        let stream = stream.to_owned();
        self.submit(|reply| WriteOp::SaveSnapshot {
            stream,
            snapshot,
            reply,
        })
        .await
    }

    /// Records that `subscriber` has processed the global log up to and including `position`
    /// (durable with the next durable commit; never ahead of the events it covers).
    pub async fn save_checkpoint(&self, subscriber: &str, position: u64) -> Result<(), StoreError> {
        let subscriber = subscriber.to_owned();
        self.submit(|reply| WriteOp::SaveCheckpoint {
            subscriber,
            position,
            reply,
        })
        .await
    }

    /// Commits every write queued before this call, makes the index durable and stops the
    /// writer: later writes fail with [`StoreError::WriterStopped`]; reads keep working.
    /// Call it on shutdown so the next start has no log tail to re-index.
    pub async fn close(&self) -> Result<(), StoreError> {
        match self.submit(|reply| WriteOp::Close { reply }).await {
            // Already closed by another handle.
            Err(StoreError::WriterStopped) => Ok(()),
            other => other,
        }
    }

    /// Runs `work` (reads of this store, or other IO of the node) off the async workers: on
    /// the blocking pool, or inline on a simulated disk. `what` names it in the error if it
    /// panics.
    pub async fn blocking<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.disk.run(work).await.map_err(|panic| {
            tracing::error!(what, panic, "store work panicked");
            StoreError::TaskFailed { what }
        })
    }

    async fn submit<T>(
        &self,
        op: impl FnOnce(writer::Reply<T>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(op(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// The whole stream, oldest first. An unknown stream is empty.
    pub fn read_stream(&self, stream: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream_range(stream, 1, u64::MAX)
    }

    /// The stream from `from_version` (inclusive) on.
    pub fn read_stream_from(
        &self,
        stream: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream_range(stream, from_version, u64::MAX)
    }

    /// The events of the stream with `min_version <= version <= max_version`.
    pub fn read_stream_range(
        &self,
        stream: &str,
        min_version: u64,
        max_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if min_version > max_version {
            return Ok(Vec::new());
        }
        // Index snapshot first: the writer commits the log before the index, so every
        // position this index snapshot holds is in the log snapshot opened after it.
        let index_txn = self.index.begin_read().map_err(StoreError::storage)?;
        let index = index_txn
            .open_table(STREAM_INDEX)
            .map_err(StoreError::storage)?;
        let log_txn = self.db.begin_read().map_err(StoreError::storage)?;
        let log = log_txn.open_table(LOG).map_err(StoreError::storage)?;
        events_in(&index, &log, stream, min_version, max_version)
    }

    /// The version of the stream's last event; 0 for a stream with no events.
    pub fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let txn = self.index.begin_read().map_err(StoreError::storage)?;
        let index = txn.open_table(STREAM_INDEX).map_err(StoreError::storage)?;
        index::stream_head(&index, stream)
    }

    /// Up to `limit` events of the global log from `position` (inclusive), in commit order.
    pub fn read_all_from(
        &self,
        position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let log = txn.open_table(LOG).map_err(StoreError::storage)?;
        let mut events = Vec::new();
        for entry in log
            .range(position..)
            .map_err(StoreError::storage)?
            .take(limit)
        {
            let (key, bytes) = entry.map_err(StoreError::storage)?;
            let position = key.value();
            let record: LogRecord = codec::decode(bytes.value())
                .map_err(|source| StoreError::CorruptLog { position, source })?;
            events.push(RecordedEvent::from_record(position, record));
        }
        Ok(events)
    }

    /// The next log position to be written: every position below it is durable.
    pub fn log_end(&self) -> u64 {
        *self.log_end.borrow()
    }

    /// The log's end (the position the next event will get), updated after every durable
    /// commit: wait on it to learn of new events.
    pub fn watch_log_end(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log_end.clone()
    }

    /// The position the next appended event will get (= number of events ever appended).
    pub fn next_position(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let log = txn.open_table(LOG).map_err(StoreError::storage)?;
        next_position_of(&log)
    }

    /// The stream's latest snapshot, if one was saved.
    pub fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let snapshots = txn.open_table(SNAPSHOTS).map_err(StoreError::storage)?;
        let Some(bytes) = snapshots.get(stream).map_err(StoreError::storage)? else {
            return Ok(None);
        };
        let record: SnapshotRecord =
            codec::decode(bytes.value()).map_err(|source| StoreError::Corrupt {
                stream: stream.to_owned(),
                version: 0,
                source,
            })?;
        Ok(Some(Snapshot {
            version: record.version,
            schema_version: record.schema_version,
            state: record.state,
        }))
    }

    /// What the append carrying `command_id` produced, if it was processed.
    pub fn processed_command(
        &self,
        command_id: &str,
    ) -> Result<Option<ProcessedCommand>, StoreError> {
        if FORGETS_COMMAND_IDS {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let commands = txn
            .open_table(PROCESSED_COMMANDS)
            .map_err(StoreError::storage)?;
        let Some(bytes) = commands.get(command_id).map_err(StoreError::storage)? else {
            return Ok(None);
        };
        codec::decode(bytes.value())
            .map(Some)
            .map_err(|source| StoreError::CorruptCommand {
                command_id: command_id.to_owned(),
                source,
            })
    }

    /// The last position `subscriber` recorded as processed.
    pub fn checkpoint(&self, subscriber: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let checkpoints = txn.open_table(CHECKPOINTS).map_err(StoreError::storage)?;
        Ok(checkpoints
            .get(subscriber)
            .map_err(StoreError::storage)?
            .map(|v| v.value()))
    }

    /// Sizes of the two event tables, for benchmarks choosing a layout.
    pub fn layout_stats(&self) -> Result<LayoutStats, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let log = txn
            .open_table(LOG)
            .map_err(StoreError::storage)?
            .stats()
            .map_err(StoreError::storage)?;
        let index_txn = self.index.begin_read().map_err(StoreError::storage)?;
        let index = index_txn
            .open_table(STREAM_INDEX)
            .map_err(StoreError::storage)?
            .stats()
            .map_err(StoreError::storage)?;
        Ok(LayoutStats {
            log_tree_height: log.tree_height(),
            log_leaf_pages: log.leaf_pages(),
            log_stored_bytes: log.stored_bytes(),
            index_tree_height: index.tree_height(),
            index_leaf_pages: index.leaf_pages(),
            index_stored_bytes: index.stored_bytes(),
        })
    }

    #[cfg(test)]
    pub(crate) fn databases(&self) -> (&Database, &Database) {
        (&self.db, &self.index)
    }
}

/// B-tree sizes of the log and the stream index.
#[derive(Debug, Clone, Copy)]
pub struct LayoutStats {
    pub log_tree_height: u32,
    pub log_leaf_pages: u64,
    pub log_stored_bytes: u64,
    pub index_tree_height: u32,
    pub index_leaf_pages: u64,
    pub index_stored_bytes: u64,
}

/// Opens the file, creates the tables on first use, checks the layout, finds the log's end.
fn open_database(
    disk: &Disk,
    path: &Path,
    cache_size: Option<usize>,
) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    if let Some(bytes) = cache_size {
        builder.set_cache_size(bytes);
    }
    let db = disk.create(&builder, path).map_err(StoreError::storage)?;
    format::bring_up_to_date(&db, path)?;
    let txn = db.begin_write().map_err(StoreError::storage)?;
    {
        // Create every table now so that readers never meet a missing one.
        txn.open_table(SNAPSHOTS).map_err(StoreError::storage)?;
        txn.open_table(PROCESSED_COMMANDS)
            .map_err(StoreError::storage)?;
        txn.open_table(CHECKPOINTS).map_err(StoreError::storage)?;
        txn.open_table(LOG).map_err(StoreError::storage)?;
    }
    txn.commit().map_err(StoreError::storage)?;
    Ok(db)
}

/// The events of `stream` with `min_version <= version <= max_version`, found through the
/// index and read from the log (both as of their read transactions).
pub(crate) fn events_in(
    index: &impl ReadableTable<(&'static str, u64), u64>,
    log: &impl ReadableTable<u64, &'static [u8]>,
    stream: &str,
    min_version: u64,
    max_version: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut events = Vec::new();
    for entry in index
        .range((stream, min_version)..=(stream, max_version))
        .map_err(StoreError::storage)?
    {
        let (key, position) = entry.map_err(StoreError::storage)?;
        let (version, position) = (key.value().1, position.value());
        let bytes = log
            .get(position)
            .map_err(StoreError::storage)?
            .ok_or_else(|| StoreError::Corrupt {
                stream: stream.to_owned(),
                version,
                source: codec::CodecError::Empty,
            })?;
        let record: LogRecord =
            codec::decode(bytes.value()).map_err(|source| StoreError::Corrupt {
                stream: stream.to_owned(),
                version,
                source,
            })?;
        events.push(RecordedEvent::from_record(position, record));
    }
    Ok(events)
}

pub(crate) fn next_position_of(
    log: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<u64, StoreError> {
    Ok(log
        .last()
        .map_err(StoreError::storage)?
        .map_or(0, |(key, _)| key.value() + 1))
}
