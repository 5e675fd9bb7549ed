//! The single writer: group-commits appends, snapshots and checkpoints.
//!
//! Every write goes through one tokio task. It takes the first queued operation, gathers whatever
//! else is queued (up to a bound in events, waiting at most `max_linger` for more), and commits the
//! lot in one `Durability::Immediate` redb transaction on the blocking pool. Callers are answered
//! only after that commit returns, so an acknowledged write is on disk. While one batch commits,
//! the next one queues up: under load, batches grow by themselves and the fsync cost is shared.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableTable, Table};
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use super::tables::{
    CHECKPOINTS, LOG, LogRecord, PROCESSED_COMMANDS, ProcessedCommand, SNAPSHOTS, STREAM_INDEX,
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
}

impl WriteOp {
    fn weight(&self) -> usize {
        match self {
            WriteOp::Append { request, .. } => request.events.len().max(1),
            _ => 1,
        }
    }
}

/// The result of one operation inside a batch, before the batch is known to be durable.
enum OpResult {
    Append(Result<AppendOutcome, StoreError>),
    Unit(Result<(), StoreError>),
}

/// Runs until every [`super::EventStore`] handle is dropped, then returns after the last batch.
pub(crate) async fn run(
    db: Arc<Database>,
    mut queue: mpsc::Receiver<WriteOp>,
    options: GroupCommitOptions,
    mut next_position: u64,
) {
    while let Some(first) = queue.recv().await {
        let batch = gather_batch(first, &mut queue, &options).await;
        let db = db.clone();
        let committed = tokio::task::spawn_blocking(move || commit(&db, batch, next_position));
        match committed.await {
            Ok(next) => next_position = next,
            // The batch's reply senders were dropped with the panic: its callers see WriterStopped.
            Err(panic) => tracing::error!(error = %panic, "store commit panicked; batch dropped"),
        }
    }
    tracing::debug!("store writer stopped: all handles dropped");
}

async fn gather_batch(
    first: WriteOp,
    queue: &mut mpsc::Receiver<WriteOp>,
    options: &GroupCommitOptions,
) -> Vec<WriteOp> {
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
        // An operation that would overflow the batch still joins it: deferring it would need a
        // second queue, and the bound is about amortising, not a hard cap.
        weight += next.weight();
        batch.push(next);
    }
    batch
}

/// Writes and commits one batch, answers its callers, and returns the next free log position.
fn commit(db: &Database, batch: Vec<WriteOp>, next_position: u64) -> u64 {
    let started = Instant::now();
    let events: usize = batch
        .iter()
        .map(|op| match op {
            WriteOp::Append { request, .. } => request.events.len(),
            _ => 0,
        })
        .sum();
    match write_batch(db, &batch, next_position) {
        Ok((results, next)) => {
            metrics::record_commit(batch.len(), events, started.elapsed());
            for (op, result) in batch.into_iter().zip(results) {
                answer(op, result);
            }
            next
        }
        Err(error) => {
            tracing::error!(%error, ops = batch.len(), "store batch failed; nothing in it was committed");
            for op in batch {
                answer_all_failed(op, error.clone());
            }
            // Positions handed out inside the failed transaction were rolled back with it.
            next_position
        }
    }
}

fn answer(op: WriteOp, result: OpResult) {
    // A caller that stopped waiting (timeout, cancelled request) is not an error for the writer.
    match (op, result) {
        (WriteOp::Append { reply, .. }, OpResult::Append(r)) => {
            let _ = reply.send(r);
        }
        (WriteOp::SaveSnapshot { reply, .. }, OpResult::Unit(r))
        | (WriteOp::SaveCheckpoint { reply, .. }, OpResult::Unit(r)) => {
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
        WriteOp::SaveSnapshot { reply, .. } | WriteOp::SaveCheckpoint { reply, .. } => {
            let _ = reply.send(Err(error));
        }
    }
}

/// The tables one batch writes to, opened once per transaction.
struct BatchTables<'txn> {
    log: Table<'txn, u64, &'static [u8]>,
    index: Table<'txn, (&'static str, u64), u64>,
    commands: Table<'txn, &'static str, &'static [u8]>,
}

fn write_batch(
    db: &Database,
    batch: &[WriteOp],
    mut next_position: u64,
) -> Result<(Vec<OpResult>, u64), StoreError> {
    let mut txn = db.begin_write().map_err(StoreError::storage)?;
    txn.set_durability(Durability::Immediate)
        .map_err(StoreError::storage)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut tables = BatchTables {
            log: txn.open_table(LOG).map_err(StoreError::storage)?,
            index: txn.open_table(STREAM_INDEX).map_err(StoreError::storage)?,
            commands: txn
                .open_table(PROCESSED_COMMANDS)
                .map_err(StoreError::storage)?,
        };
        let mut snapshots = txn.open_table(SNAPSHOTS).map_err(StoreError::storage)?;
        let mut checkpoints = txn.open_table(CHECKPOINTS).map_err(StoreError::storage)?;
        let now = now_micros();
        for op in batch {
            let result = match op {
                WriteOp::Append { request, .. } => {
                    OpResult::Append(append(&mut tables, request, &mut next_position, now)?)
                }
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
            };
            results.push(result);
        }
    }
    txn.commit().map_err(StoreError::storage)?;
    Ok((results, next_position))
}

/// Appends one request inside the batch transaction.
///
/// The outer `Result` is a storage failure that dooms the whole batch; the inner one is this
/// request's own answer (a conflict leaves the rest of the batch untouched). Everything that can
/// reject the request is checked before the first insert, so a rejected request writes nothing.
fn append(
    tables: &mut BatchTables<'_>,
    request: &AppendRequest,
    next_position: &mut u64,
    now_micros: i64,
) -> Result<Result<AppendOutcome, StoreError>, StoreError> {
    let stream = request.stream.as_str();
    if request.events.is_empty() {
        return Ok(Err(StoreError::EmptyAppend {
            stream: stream.to_owned(),
        }));
    }
    if let Some(command_id) = &request.command_id
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
        return Ok(if previous.stream == stream {
            Ok(AppendOutcome::from_processed(&previous, true))
        } else {
            Err(StoreError::CommandIdReused {
                command_id: command_id.clone(),
                first_stream: previous.stream,
                stream: stream.to_owned(),
            })
        });
    }
    let actual = stream_head(&tables.index, stream)?;
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
            recorded_at_micros: now_micros,
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
        tables
            .index
            .insert((stream, *version), position)
            .map_err(StoreError::storage)?;
    }
    let processed = ProcessedCommand {
        stream: stream.to_owned(),
        first_version: actual + 1,
        last_version: actual + request.events.len() as u64,
        first_position,
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
    }
    Ok(Ok(AppendOutcome::from_processed(&processed, false)))
}

/// The version of the last event of `stream`, 0 when it has none.
pub(crate) fn stream_head(
    index: &impl ReadableTable<(&'static str, u64), u64>,
    stream: &str,
) -> Result<u64, StoreError> {
    let last = index
        .range((stream, 0)..=(stream, u64::MAX))
        .map_err(StoreError::storage)?
        .next_back()
        .transpose()
        .map_err(StoreError::storage)?;
    Ok(last.map_or(0, |(key, _)| key.value().1))
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
