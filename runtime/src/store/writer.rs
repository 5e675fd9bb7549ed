//! The single writer: group-commits appends, snapshots and checkpoints.
//!
//! Every write goes through one tokio task. It takes the first queued operation, gathers whatever
//! else is queued (up to a bound in events, waiting at most `max_linger` for more), and commits the
//! lot in one `Durability::Immediate` redb transaction on the blocking pool. Callers are answered
//! only after that commit returns, so an acknowledged write is on disk. While one batch commits,
//! the next one queues up: under load, batches grow by themselves and the fsync cost is shared.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table};
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use super::index::{IndexEntry, StreamIndex};
use super::read_model::{self, TableChange};
use super::tables::{
    CHECKPOINTS, COMMANDS_BY_TIME, LOG, LogRecord, PROCESSED_COMMANDS, ProcessedCommand, SNAPSHOTS,
    SnapshotRecord,
};
use super::{AppendOutcome, AppendRequest};
use crate::codec;
use crate::metrics;

/// How the writer forms batches.
#[derive(Debug, Clone)]
pub struct GroupCommitOptions {
    /// Most events one transaction carries. A single append larger than this still commits, alone.
    /// `1` turns group commit off (one transaction per append): the benchmark's naive baseline.
    pub max_batch_events: usize,
    /// How long the writer waits for more work after the first operation of a batch.
    /// Zero means "take what is queued now": batches then grow only while a commit is under way.
    pub max_linger: Duration,
    /// Operations that may wait in the queue before senders are slowed down.
    pub queue_capacity: usize,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        Self {
            max_batch_events: 4096,
            max_linger: Duration::ZERO,
            queue_capacity: 16 * 1024,
        }
    }
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One queued write and the caller waiting for it.
pub(crate) enum WriteOp {
    Append {
        request: AppendRequest,
        reply: Reply<AppendOutcome>,
        /// Whether it must be on disk before its answer. An append a replicated log can
        /// re-apply is not: it rides with the next durable commit (see `Durable`).
        durable: bool,
    },
    SaveSnapshot {
        stream: String,
        snapshot: SnapshotRecord,
        reply: Reply<()>,
    },
    SaveCheckpoint {
        subscriber: String,
        position: u64,
        reply: Reply<()>,
    },
    /// A projection's read-model changes and its new checkpoint.
    Project {
        subscriber: String,
        position: u64,
        changes: Vec<TableChange>,
        reply: Reply<()>,
    },
    /// Changes to read-model tables, with no checkpoint.
    Tables {
        changes: Vec<TableChange>,
        reply: Reply<()>,
    },
    /// Empty a projection's tables and forget its checkpoint.
    ResetProjection {
        subscriber: String,
        tables: Vec<&'static str>,
        reply: Reply<()>,
    },
    /// Settle command id `command_id`: answer what it produced if it was processed, or record
    /// that it never will be (see [`super::EventStore::fence_command`]).
    Fence {
        stream: String,
        command_id: String,
        reply: Reply<Option<ProcessedCommand>>,
    },
    /// Forget these processed commands (see [`super::EventStore::forget_commands`]).
    Forget {
        command_ids: Vec<String>,
        /// Written in the same transaction (a replica's applied entry: a crash keeps both
        /// or neither).
        changes: Vec<TableChange>,
        reply: Reply<()>,
    },
    /// Make everything committed so far durable (nothing else to write).
    Sync { reply: Reply<()> },
    /// Commit what was queued before, make the index durable, stop; answered once stopped.
    Close { reply: Reply<()> },
}

impl WriteOp {
    /// Whether this operation's batch must reach the disk before anyone is answered: an
    /// append (unless a replicated log holds it), a fence, a sync, a reset. What is derived
    /// from the log and made again from it after a crash (a projection's changes and
    /// checkpoint, an aggregate's snapshot, a subscriber's checkpoint) is not: it rides with
    /// the next durable commit, or the idle sync within `DURABLE_INTERVAL`. Commits reach the
    /// disk in order, so a crash keeps a prefix of them: a checkpoint never survives the
    /// events it covers.
    fn needs_durability(&self) -> bool {
        match self {
            WriteOp::Append { durable, .. } => *durable,
            WriteOp::Project { .. }
            | WriteOp::Tables { .. }
            | WriteOp::SaveSnapshot { .. }
            | WriteOp::SaveCheckpoint { .. }
            // Lost in a crash, a forget is made again: by the replicated log that holds it,
            // or by the next cut.
            | WriteOp::Forget { .. } => false,
            WriteOp::Fence { .. }
            | WriteOp::ResetProjection { .. }
            | WriteOp::Sync { .. }
            | WriteOp::Close { .. } => true,
        }
    }

    fn weight(&self) -> usize {
        match self {
            WriteOp::Append { request, .. } => request.events.len().max(1),
            WriteOp::Project { changes, .. } | WriteOp::Tables { changes, .. } => {
                changes.len().max(1)
            }
            _ => 1,
        }
    }
}

/// The result of one operation inside a batch, before the batch is known to be durable.
enum OpResult {
    Append(Result<AppendOutcome, StoreError>),
    Fence(Result<Option<ProcessedCommand>, StoreError>),
    Unit(Result<(), StoreError>),
}

/// What the writer owns between batches. Moved into the blocking pool for each commit and back.
#[derive(Debug)]
pub(crate) struct WriterState {
    next_position: u64,
    heads: StreamHeads,
    index: StreamIndex,
    /// Entries of durable batches whose index update failed; retried with the next batch.
    unindexed: Vec<IndexEntry>,
}

impl WriterState {
    pub(crate) fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Builds the writer's state from the files: the log's end, and an index caught up to it.
    pub(crate) fn recover(log: &Database, index: Arc<Database>) -> Result<Self, StoreError> {
        let next_position = {
            let txn = log.begin_read().map_err(StoreError::storage)?;
            let table = txn.open_table(LOG).map_err(StoreError::storage)?;
            super::next_position_of(&table)?
        };
        Ok(Self {
            next_position,
            heads: StreamHeads::default(),
            index: StreamIndex::new(index, log)?,
            unindexed: Vec::new(),
        })
    }
}

/// Runs until every [`super::EventStore`] handle is dropped, then makes the index durable.
pub(crate) async fn run(
    db: Arc<Database>,
    index_db: Arc<Database>,
    mut state: WriterState,
    mut queue: mpsc::Receiver<WriteOp>,
    options: GroupCommitOptions,
    log_end: tokio::sync::watch::Sender<u64>,
    disk: super::Disk,
) {
    let mut close_reply = None;
    // Whether something was committed that is not durable yet: then the writer makes it so
    // once it has been idle for the index's interval, so unsynced appends never linger.
    let mut unsynced = false;
    loop {
        let first = if unsynced {
            match tokio::time::timeout(super::index::DURABLE_INTERVAL, queue.recv()).await {
                Ok(first) => first,
                Err(_idle) => Some(WriteOp::Sync {
                    reply: oneshot::channel().0,
                }),
            }
        } else {
            queue.recv().await
        };
        let Some(first) = first else { break };
        let (batch, close) = gather_batch(first, &mut queue, &options).await;
        if batch.is_empty() {
            close_reply = close;
            break;
        }
        let (db_for_batch, log_end_for_batch) = (db.clone(), log_end.clone());
        let committed = disk.run(move || {
            let durable = commit(&db_for_batch, batch, &mut state, &log_end_for_batch);
            (state, durable)
        });
        state = match committed.await {
            Ok((state, durable)) => {
                unsynced = !durable;
                state
            }
            Err(panic) => {
                // The batch's reply senders were dropped with the panic: its callers see
                // WriterStopped. What the writer knew is rebuilt from the files.
                tracing::error!(error = %panic, "store commit panicked; batch dropped");
                let (db, index_db) = (db.clone(), index_db.clone());
                match disk.run(move || WriterState::recover(&db, index_db)).await {
                    Ok(Ok(state)) => state,
                    Ok(Err(error)) => {
                        tracing::error!(%error, "store writer cannot recover; stopping it");
                        return;
                    }
                    Err(_) => return,
                }
            }
        };
        if close.is_some() {
            close_reply = close;
            break;
        }
    }
    // Later writes find the queue closed and get WriterStopped.
    queue.close();
    let finished = disk.run(move || {
        // The log first: the index must never be durable ahead of it.
        if unsynced {
            let mut txn = db.begin_write().map_err(StoreError::storage)?;
            txn.set_durability(Durability::Immediate)
                .map_err(StoreError::storage)?;
            txn.commit().map_err(StoreError::storage)?;
        }
        let end = state.next_position;
        state.index.apply(&state.unindexed, end, true)
    });
    let result = match finished.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::warn!(%error, "final index sync failed; the index is rebuilt from the log on open");
            Err(error)
        }
        Err(_) => Err(StoreError::WriterStopped),
    };
    tracing::debug!("store writer stopped");
    if let Some(reply) = close_reply {
        let _ = reply.send(result);
    }
}

/// Gathers a batch starting with `first`. A close request ends the batch and is returned apart.
async fn gather_batch(
    first: WriteOp,
    queue: &mut mpsc::Receiver<WriteOp>,
    options: &GroupCommitOptions,
) -> (Vec<WriteOp>, Option<Reply<()>>) {
    if let WriteOp::Close { reply } = first {
        return (Vec::new(), Some(reply));
    }
    let mut weight = first.weight();
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + options.max_linger;
    while weight < options.max_batch_events {
        let next = match queue.try_recv() {
            Ok(op) => op,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) if options.max_linger.is_zero() => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, queue.recv()).await {
                    Ok(Some(op)) => op,
                    Ok(None) | Err(_) => break,
                }
            }
        };
        if let WriteOp::Close { reply } = next {
            return (batch, Some(reply));
        }
        // An operation that would overflow the batch still joins it: deferring it would need a
        // second queue, and the bound is about amortising, not a hard cap.
        weight += next.weight();
        batch.push(next);
    }
    (batch, None)
}

/// The writer's memory of stream heads (the version of each stream's last event).
///
/// The writer is the store's only writer, so what it committed is the truth: a cached head
/// saves the index lookup that otherwise starts every append. Heads written by a batch are
/// staged and become cached only once that batch is durable. Bounded: when full, it is emptied
/// and refills from the index.
#[derive(Debug, Default)]
struct StreamHeads {
    committed: HashMap<String, u64>,
    staged: HashMap<String, u64>,
}

impl StreamHeads {
    const MAX_CACHED: usize = 256 * 1024;

    fn get(&self, stream: &str) -> Option<u64> {
        self.staged
            .get(stream)
            .or_else(|| self.committed.get(stream))
            .copied()
    }

    fn stage(&mut self, stream: &str, head: u64) {
        self.staged.insert(stream.to_owned(), head);
    }

    /// Makes the staged heads the known ones. `may_evict` says whether the index holds every
    /// durable head: only then may the cache be emptied, since a miss falls back to the index.
    fn commit(&mut self, may_evict: bool) {
        if may_evict && self.committed.len() + self.staged.len() > Self::MAX_CACHED {
            self.committed.clear();
        }
        self.committed.extend(self.staged.drain());
    }

    fn discard(&mut self) {
        self.staged.clear();
    }
}

/// Writes and commits one batch, updates the index, then answers the batch's callers. Returns
/// whether the batch was durable.
///
/// A batch is durable when one of its operations needs it, or when the index is due to be
/// made durable (at most every `DURABLE_INTERVAL`): the index is made durable only with a
/// durable log commit, never ahead of one, so a crash can never leave the index covering
/// positions the log lost.
fn commit(
    db: &Database,
    batch: Vec<WriteOp>,
    state: &mut WriterState,
    log_end: &tokio::sync::watch::Sender<u64>,
) -> bool {
    let index_due = state.index.durable_due();
    let durable = batch.iter().any(WriteOp::needs_durability) || index_due;
    let started = Instant::now();
    let events: usize = batch
        .iter()
        .map(|op| match op {
            WriteOp::Append { request, .. } => request.events.len(),
            _ => 0,
        })
        .sum();
    match write_batch(db, &batch, state, durable) {
        Ok((results, next_position, entries)) => {
            state.next_position = next_position;
            state.unindexed.extend(entries);
            // The batch is committed whatever happens to the index, which is derived from the
            // log. Updating it before answering gives callers read-your-writes.
            // The index is synced at most every interval (it is rebuilt from the log's tail
            // on open), and only with a durable log commit.
            match state
                .index
                .apply(&state.unindexed, next_position, durable && index_due)
            {
                Ok(()) => state.unindexed.clear(),
                Err(error) => tracing::error!(%error, pending = state.unindexed.len(),
                    "stream index update failed; reads miss these events until a later batch indexes them"),
            }
            state.heads.commit(state.unindexed.is_empty());
            metrics::record_commit(batch.len(), events, started.elapsed());
            // Before any caller is answered: a client acting on its answer (a read with
            // `min_position` = its command's position) must find the log's end past it.
            // Subscribers wait on this too, to learn of new events without polling the log.
            log_end.send_if_modified(|end| {
                let moved = *end != next_position;
                *end = next_position;
                moved
            });
            for (op, result) in batch.into_iter().zip(results) {
                answer(op, result);
            }
            durable
        }
        Err(error) => {
            state.heads.discard();
            tracing::error!(%error, ops = batch.len(), "store batch failed; nothing in it was committed");
            for op in batch {
                answer_all_failed(op, error.clone());
            }
            false
        }
    }
}

fn answer(op: WriteOp, result: OpResult) {
    // A caller that stopped waiting (timeout, cancelled request) is not an error for the writer.
    match (op, result) {
        (WriteOp::Append { reply, .. }, OpResult::Append(r)) => {
            let _ = reply.send(r);
        }
        (WriteOp::Fence { reply, .. }, OpResult::Fence(r)) => {
            let _ = reply.send(r);
        }
        (WriteOp::SaveSnapshot { reply, .. }, OpResult::Unit(r))
        | (WriteOp::Sync { reply }, OpResult::Unit(r))
        | (WriteOp::SaveCheckpoint { reply, .. }, OpResult::Unit(r))
        | (WriteOp::Project { reply, .. }, OpResult::Unit(r))
        | (WriteOp::Tables { reply, .. }, OpResult::Unit(r))
        | (WriteOp::ResetProjection { reply, .. }, OpResult::Unit(r))
        | (WriteOp::Forget { reply, .. }, OpResult::Unit(r))
        | (WriteOp::Close { reply }, OpResult::Unit(r)) => {
            let _ = reply.send(r);
        }
        _ => unreachable!("write_batch returns one result of the matching kind per operation"),
    }
}

fn answer_all_failed(op: WriteOp, error: StoreError) {
    match op {
        WriteOp::Append { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        WriteOp::Fence { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        WriteOp::SaveSnapshot { reply, .. }
        | WriteOp::Sync { reply }
        | WriteOp::SaveCheckpoint { reply, .. }
        | WriteOp::Project { reply, .. }
        | WriteOp::Tables { reply, .. }
        | WriteOp::ResetProjection { reply, .. }
        | WriteOp::Forget { reply, .. }
        | WriteOp::Close { reply } => {
            let _ = reply.send(Err(error));
        }
    }
}

/// What one batch writes to: its log tables, and the index entries it produces.
struct BatchTables<'txn> {
    log: Table<'txn, u64, &'static [u8]>,
    commands: Table<'txn, &'static str, &'static [u8]>,
    commands_by_time: Table<'txn, (i64, &'static str), ()>,
    entries: Vec<IndexEntry>,
    /// Read-model changes of the batch's accepted appends, written before it commits.
    table_changes: Vec<TableChange>,
}

/// Writes the batch in one durable transaction. Returns each operation's own result, the next
/// free position and the index entries to add.
fn write_batch(
    db: &Database,
    batch: &[WriteOp],
    state: &mut WriterState,
    durable: bool,
) -> Result<(Vec<OpResult>, u64, Vec<IndexEntry>), StoreError> {
    let mut next_position = state.next_position;
    let mut txn = db.begin_write().map_err(StoreError::storage)?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(StoreError::storage)?;
    let mut results = Vec::with_capacity(batch.len());
    let entries = {
        let mut tables = BatchTables {
            log: txn.open_table(LOG).map_err(StoreError::storage)?,
            commands: txn
                .open_table(PROCESSED_COMMANDS)
                .map_err(StoreError::storage)?,
            commands_by_time: txn
                .open_table(COMMANDS_BY_TIME)
                .map_err(StoreError::storage)?,
            entries: Vec::new(),
            table_changes: Vec::new(),
        };
        let mut snapshots = txn.open_table(SNAPSHOTS).map_err(StoreError::storage)?;
        let mut checkpoints = txn.open_table(CHECKPOINTS).map_err(StoreError::storage)?;
        let now = now_micros();
        for op in batch {
            let result = match op {
                WriteOp::Append { request, .. } => OpResult::Append(append(
                    &mut tables,
                    state,
                    request,
                    &mut next_position,
                    now,
                )?),
                WriteOp::Fence {
                    stream, command_id, ..
                } => OpResult::Fence(fence(&mut tables.commands, stream, command_id)?),
                WriteOp::SaveSnapshot {
                    stream, snapshot, ..
                } => OpResult::Unit(match codec::encode(snapshot) {
                    Ok(bytes) => {
                        snapshots
                            .insert(stream.as_str(), bytes.as_slice())
                            .map_err(StoreError::storage)?;
                        Ok(())
                    }
                    Err(source) => Err(StoreError::Encode {
                        stream: stream.clone(),
                        source,
                    }),
                }),
                WriteOp::SaveCheckpoint {
                    subscriber,
                    position,
                    ..
                } => {
                    checkpoints
                        .insert(subscriber.as_str(), *position)
                        .map_err(StoreError::storage)?;
                    OpResult::Unit(Ok(()))
                }
                WriteOp::Project {
                    subscriber,
                    position,
                    changes,
                    ..
                } => {
                    apply_changes(&txn, changes)?;
                    checkpoints
                        .insert(subscriber.as_str(), *position)
                        .map_err(StoreError::storage)?;
                    OpResult::Unit(Ok(()))
                }
                WriteOp::Tables { changes, .. } => {
                    apply_changes(&txn, changes)?;
                    OpResult::Unit(Ok(()))
                }
                WriteOp::ResetProjection {
                    subscriber, tables, ..
                } => {
                    for table in tables {
                        let name = read_model::table_name(table);
                        txn.delete_table(read_model::definition(&name))
                            .map_err(StoreError::storage)?;
                    }
                    checkpoints
                        .remove(subscriber.as_str())
                        .map_err(StoreError::storage)?;
                    OpResult::Unit(Ok(()))
                }
                WriteOp::Forget {
                    command_ids,
                    changes,
                    ..
                } => {
                    let forgotten = forget(&mut tables, command_ids)?;
                    if forgotten.is_ok() {
                        tables.table_changes.extend(changes.iter().cloned());
                    }
                    OpResult::Unit(forgotten)
                }
                // A sync writes nothing: its batch is durable. (gather_batch keeps close
                // requests out of batches.)
                WriteOp::Sync { .. } | WriteOp::Close { .. } => OpResult::Unit(Ok(())),
            };
            results.push(result);
        }
        let BatchTables {
            log,
            commands,
            commands_by_time,
            entries,
            table_changes,
        } = tables;
        // The log's and commands' tables close before the read-model tables open.
        drop((log, commands, commands_by_time));
        apply_changes(&txn, &table_changes)?;
        entries
    };
    txn.commit().map_err(StoreError::storage)?;
    Ok((results, next_position, entries))
}

/// Writes a projection's changes into its read-model tables.
fn apply_changes(txn: &redb::WriteTransaction, changes: &[TableChange]) -> Result<(), StoreError> {
    // Each table opened once per batch of changes, however many changes it takes.
    let mut open: HashMap<&str, Table<'_, &'static [u8], &'static [u8]>> = HashMap::new();
    for change in changes {
        let table = change.table();
        if !open.contains_key(table) {
            let name = read_model::table_name(table);
            let opened = txn
                .open_table(read_model::definition(&name))
                .map_err(StoreError::storage)?;
            open.insert(table, opened);
        }
        let opened = open.get_mut(&table).expect("opened above");
        match change {
            TableChange::Put { key, value, .. } => {
                opened
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(StoreError::storage)?;
            }
            TableChange::Delete { key, .. } => {
                opened.remove(key.as_slice()).map_err(StoreError::storage)?;
            }
            TableChange::Add { key, delta, .. } => {
                let current = opened
                    .get(key.as_slice())
                    .map_err(StoreError::storage)?
                    .and_then(|value| read_model::decode_counter(value.value()))
                    .unwrap_or(0);
                let sum = current.saturating_add(*delta).to_le_bytes();
                opened
                    .insert(key.as_slice(), sum.as_slice())
                    .map_err(StoreError::storage)?;
            }
        }
    }
    Ok(())
}

/// Appends one request inside the batch transaction.
///
/// The outer `Result` is a storage failure that dooms the whole batch; the inner one is this
/// request's own answer (a conflict leaves the rest of the batch untouched). Everything that can
/// reject the request is checked before the first insert, so a rejected request writes nothing.
fn append(
    tables: &mut BatchTables<'_>,
    state: &mut WriterState,
    request: &AppendRequest,
    next_position: &mut u64,
    now_micros: i64,
) -> Result<Result<AppendOutcome, StoreError>, StoreError> {
    let stream = request.stream.as_str();
    if request.events.is_empty() && request.command_id.is_none() {
        return Ok(Err(StoreError::EmptyAppend {
            stream: stream.to_owned(),
        }));
    }
    if let Some(command_id) = &request.command_id
        && !super::FORGETS_COMMAND_IDS
        && !crate::planted::is_planted(crate::planted::Bug::DedupOnlyAtDecide)
        && let Some(previous) = tables
            .commands
            .get(command_id.as_str())
            .map_err(StoreError::storage)?
    {
        let previous: ProcessedCommand = match codec::decode(previous.value()) {
            Ok(previous) => previous,
            Err(source) => {
                return Ok(Err(StoreError::CorruptCommand {
                    command_id: command_id.clone(),
                    source,
                }));
            }
        };
        return Ok(
            if previous.stream == stream && previous.fingerprint == request.fingerprint {
                Ok(AppendOutcome::from_processed(&previous, true))
            } else {
                Err(StoreError::CommandIdReused {
                    command_id: command_id.clone(),
                    first_stream: previous.stream,
                    stream: stream.to_owned(),
                })
            },
        );
    }
    let actual = match state.heads.get(stream) {
        Some(head) => head,
        None => state.index.head(stream)?,
    };
    if actual != request.expected_version {
        return Ok(Err(StoreError::Conflict {
            stream: stream.to_owned(),
            expected: request.expected_version,
            actual,
        }));
    }
    let mut encoded = Vec::with_capacity(request.events.len());
    for (offset, event) in request.events.iter().enumerate() {
        let record = LogRecord {
            stream: stream.to_owned(),
            version: actual + 1 + offset as u64,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at_micros: request.metadata.recorded_at_micros.unwrap_or(now_micros),
            correlation_id: request.metadata.correlation_id.clone(),
            causation_id: request.metadata.causation_id.clone(),
            payload: event.payload.clone(),
        };
        match codec::encode(&record) {
            Ok(bytes) => encoded.push((record.version, bytes)),
            Err(source) => {
                return Ok(Err(StoreError::Encode {
                    stream: stream.to_owned(),
                    source,
                }));
            }
        }
    }
    let first_position = *next_position;
    for (version, bytes) in &encoded {
        let position = *next_position;
        *next_position += 1;
        tables
            .log
            .insert(position, bytes.as_slice())
            .map_err(StoreError::storage)?;
        tables.entries.push(IndexEntry {
            stream: stream.to_owned(),
            version: *version,
            position,
        });
    }
    state
        .heads
        .stage(stream, actual + request.events.len() as u64);
    let processed = ProcessedCommand {
        stream: stream.to_owned(),
        fingerprint: request.fingerprint,
        first_version: actual + 1,
        last_version: actual + request.events.len() as u64,
        first_position,
        rejection: request.rejection.clone(),
    };
    if let Some(command_id) = &request.command_id {
        let bytes = codec::encode(&processed).map_err(|source| StoreError::Encode {
            stream: stream.to_owned(),
            source,
        })?;
        tables
            .commands
            .insert(command_id.as_str(), bytes.as_slice())
            .map_err(StoreError::storage)?;
        // Its time, for retention cuts: its events' (a refusal has none, and is kept).
        if !request.events.is_empty() {
            let at = request.metadata.recorded_at_micros.unwrap_or(now_micros);
            tables
                .commands_by_time
                .insert((at, command_id.as_str()), ())
                .map_err(StoreError::storage)?;
        }
    }
    tables
        .table_changes
        .extend(request.table_changes.iter().cloned());
    Ok(Ok(AppendOutcome::from_processed(&processed, false)))
}

/// Removes each of `command_ids` (those recorded) from the processed commands and from their
/// times, inside the batch transaction.
fn forget(
    tables: &mut BatchTables<'_>,
    command_ids: &[String],
) -> Result<Result<(), StoreError>, StoreError> {
    for id in command_ids {
        let Some(bytes) = tables
            .commands
            .remove(id.as_str())
            .map_err(StoreError::storage)?
        else {
            continue;
        };
        let command = match ProcessedCommand::decode(id, bytes.value()) {
            Ok(command) => command,
            Err(corrupt) => return Ok(Err(corrupt)),
        };
        drop(bytes);
        if let Some(at) = super::retention::time_of(&tables.log, &command)? {
            tables
                .commands_by_time
                .remove((at, id.as_str()))
                .map_err(StoreError::storage)?;
        }
    }
    Ok(Ok(()))
}

/// Settles `command_id` inside the batch transaction: what it produced if it was processed
/// (by an append earlier in this batch too), else a fence record, so that the command, if it
/// arrives later, is refused as [`StoreError::CommandIdReused`] instead of applied.
fn fence(
    commands: &mut Table<'_, &'static str, &'static [u8]>,
    stream: &str,
    command_id: &str,
) -> Result<Result<Option<ProcessedCommand>, StoreError>, StoreError> {
    if let Some(previous) = commands.get(command_id).map_err(StoreError::storage)? {
        return Ok(match codec::decode::<ProcessedCommand>(previous.value()) {
            Ok(previous) if previous.is_fence() => Ok(None),
            Ok(previous) => Ok(Some(previous)),
            Err(source) => Err(StoreError::CorruptCommand {
                command_id: command_id.to_owned(),
                source,
            }),
        });
    }
    let bytes = match codec::encode(&ProcessedCommand::fence(stream)) {
        Ok(bytes) => bytes,
        Err(source) => {
            return Ok(Err(StoreError::Encode {
                stream: stream.to_owned(),
                source,
            }));
        }
    };
    commands
        .insert(command_id, bytes.as_slice())
        .map_err(StoreError::storage)?;
    Ok(Ok(None))
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
