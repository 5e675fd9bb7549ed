//! The store's one error type: what callers can act on (conflicts, reused ids) kept apart from
//! what they can only report (corruption, storage failures).

use std::sync::Arc;

use crate::codec::CodecError;

/// Everything an event-store call can fail with.
///
/// `Clone` because one failed group commit answers every caller in the batch with the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency: the stream moved since the caller read it. Nothing was written.
    #[error(
        "version conflict on stream {stream}: expected version {expected}, stream is at {actual}"
    )]
    Conflict {
        stream: String,
        expected: u64,
        actual: u64,
    },
    /// A command id already recorded was sent again with a different command (another stream,
    /// or other content). Nothing was written.
    #[error(
        "command id {command_id} was already used for a different command (first on stream {first_stream}, now on {stream})"
    )]
    CommandIdReused {
        command_id: String,
        first_stream: String,
        stream: String,
    },
    /// The volume holding the store has less free space than the reserve
    /// (`store.min_free_mib`): the write was refused before anything was written.
    #[error(
        "the disk holding {} has {} MiB free, under the reserve store.min_free_mib = {} MiB: \
         writes stop until space is freed (reads go on)",
        dir.display(),
        free_bytes / (1024 * 1024),
        min_free_bytes / (1024 * 1024)
    )]
    DiskFull {
        dir: std::path::PathBuf,
        free_bytes: u64,
        min_free_bytes: u64,
    },
    /// An append must carry at least one event.
    #[error("append to stream {stream} carries no events")]
    EmptyAppend { stream: String },
    /// A stored event (or snapshot) cannot be decoded: the data is damaged or from a newer build.
    #[error("stored record of stream {stream} at version {version} cannot be decoded: {source}")]
    Corrupt {
        stream: String,
        version: u64,
        #[source]
        source: CodecError,
    },
    /// A stored event cannot be read as its aggregate's event: damaged, of a newer build, or
    /// of a shape no upcaster reads.
    #[error(
        "stored event {event_type} (schema version {schema_version}) of stream {stream} at version {version} cannot be read: {source}"
    )]
    CorruptEvent {
        stream: String,
        version: u64,
        event_type: String,
        schema_version: u16,
        #[source]
        source: crate::codec::EventReadError,
    },
    /// A record of the global log cannot be decoded.
    #[error("global log record at position {position} cannot be decoded: {source}")]
    CorruptLog {
        position: u64,
        #[source]
        source: CodecError,
    },
    /// A record of a partition's Raft log (an entry, its vote, its snapshot) cannot be decoded.
    #[error(
        "the Raft log of partition {partition} holds a {what} that cannot be decoded: {source}"
    )]
    CorruptRaftLog {
        partition: u32,
        what: &'static str,
        #[source]
        source: CodecError,
    },
    /// A processed-command record cannot be decoded.
    #[error("processed-command record {command_id} cannot be decoded: {source}")]
    CorruptCommand {
        command_id: String,
        #[source]
        source: CodecError,
    },
    /// A value handed to the store cannot be encoded.
    #[error("cannot encode a record for stream {stream}: {source}")]
    Encode {
        stream: String,
        #[source]
        source: CodecError,
    },
    /// redb failed (I/O error, full disk, damaged file). The batch it happened in was not committed.
    #[error("storage failure: {0}")]
    Storage(Arc<redb::Error>),
    /// The store was written by a later build, in a data format this build does not know.
    #[error(
        "store {path} has data format {found}, newer than format {known} that this build reads: \
         a later build wrote it, and downgrading is not supported; run that build or a later one"
    )]
    NewerFormat {
        path: std::path::PathBuf,
        found: u64,
        known: u64,
    },
    /// The store was written by a build too old to upgrade from.
    #[error(
        "store {path} has data format {found}; this build upgrades formats {oldest} and later \
         only: open it with an intermediate build first, or start from an empty data directory"
    )]
    UnsupportedFormat {
        path: std::path::PathBuf,
        found: u64,
        oldest: u64,
    },
    /// The log ends before what its index covers: events were lost from the log file.
    #[error(
        "the event log ends at position {log_end}, but its index covers positions up to \
         {indexed_up_to}: the log lost events (its file was emptied, replaced, or restored alone \
         from an older backup). Restore the whole data directory from one backup; to keep this \
         log as it is, delete events.index.redb (it is rebuilt from the log)"
    )]
    LogBehindIndex { indexed_up_to: u64, log_end: u64 },
    /// An upgrade of the data format found data it cannot carry over; nothing was changed.
    #[error("the data format cannot be upgraded from {from}: {reason}; the store is unchanged")]
    Upgrade { from: u64, reason: String },
    /// A blocking store task (opening the files, a long read) panicked or was cancelled.
    #[error("the store task that was {what} panicked or was cancelled")]
    TaskFailed { what: &'static str },
    /// A replicated partition's write was refused before it was proposed: this node's replica
    /// does not lead the partition (or its lease ran out). Nothing was written anywhere.
    #[error("partition {partition} is not led here{}: nothing was written; retry shortly", leader.as_ref().map(|l| format!(" (its leader is {l})")).unwrap_or_default())]
    NotLeader {
        partition: u32,
        leader: Option<String>,
    },
    /// A replicated partition's write was proposed, and then its fate was lost (the leader
    /// changed, the group stopped): it may be applied or not. Retry with the same command id.
    #[error("the write to partition {partition} may or may not have been applied: {reason}")]
    OutcomeUnknown { partition: u32, reason: String },
    /// The writer task is gone (the store was shut down, or the writer panicked).
    #[error("the store writer has stopped; the write may or may not have been committed")]
    WriterStopped,
}

impl StoreError {
    /// Wraps any redb error (they all convert into `redb::Error`).
    pub(crate) fn storage(error: impl Into<redb::Error>) -> Self {
        Self::Storage(Arc::new(error.into()))
    }
}
