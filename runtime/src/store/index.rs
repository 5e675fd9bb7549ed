//! The per-stream index, (stream, version) -> log position, kept in its own redb file.
//!
//! Why a separate file: appends to 256 different streams touch ~256 random leaves of this tree,
//! and fsyncing those pages on every group commit cost 5x the log's own write (measured by
//! `cargo bench --bench store`). The log is the durable truth; this index is derived from it.
//! Each batch updates it in a commit without fsync (cheap: page cache only), and it is made
//! durable at most every [`DURABLE_INTERVAL`]. It records the log position it covers, so after
//! a crash [`StreamIndex::open`] re-indexes the log's tail, and a missing or broken index file
//! is rebuilt from the whole log.
//!
//! Readers open the index's read transaction before the log's: the writer commits the log
//! before the index, so every position a reader finds in the index is in its log snapshot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::error::StoreError;
use super::tables::{LOG, LogRecord};
use crate::codec;

pub(crate) const STREAM_INDEX: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("stream_index");
const INDEX_META: TableDefinition<&str, u64> = TableDefinition::new("index_meta");
/// First log position not yet in the index.
const INDEXED_UP_TO: &str = "indexed_up_to";

/// Longest time index updates stay without an fsync: bounds the log tail to re-index on open.
pub(crate) const DURABLE_INTERVAL: Duration = Duration::from_secs(1);

/// One index entry: event `version` of `stream` is at log `position`.
#[derive(Debug, Clone)]
pub(crate) struct IndexEntry {
    pub stream: String,
    pub version: u64,
    pub position: u64,
}

/// The writer's side of the index: the only code that writes it.
#[derive(Debug)]
pub(crate) struct StreamIndex {
    db: Arc<Database>,
    last_durable: Instant,
}

/// The index file beside the log file `events.redb` is `events.index.redb`.
pub(crate) fn index_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("index.redb")
}

impl StreamIndex {
    /// Opens (or creates) the index file. Derived data: a damaged file is replaced by an empty
    /// one, which [`StreamIndex::new`] then fills from the log.
    pub(crate) fn open_file(
        disk: &super::Disk,
        path: &Path,
        cache_size: Option<usize>,
    ) -> Result<Arc<Database>, StoreError> {
        match Self::create(disk, path, cache_size) {
            Ok(db) => Ok(Arc::new(db)),
            Err(StoreError::Storage(error)) if disk.exists(path) => {
                tracing::warn!(path = %path.display(), %error, "stream index unusable; rebuilding it from the log");
                disk.remove(path)
                    .map_err(|e| StoreError::storage(redb::StorageError::from(e)))?;
                Ok(Arc::new(Self::create(disk, path, cache_size)?))
            }
            Err(other) => Err(other),
        }
    }

    /// Takes over writing the index in `db`, first bringing it up to the end of `log`.
    pub(crate) fn new(db: Arc<Database>, log: &Database) -> Result<Self, StoreError> {
        let mut index = Self {
            db,
            last_durable: Instant::now(),
        };
        index.catch_up(log)?;
        Ok(index)
    }

    fn create(
        disk: &super::Disk,
        path: &Path,
        cache_size: Option<usize>,
    ) -> Result<Database, StoreError> {
        let mut builder = Database::builder();
        if let Some(bytes) = cache_size {
            builder.set_cache_size(bytes);
        }
        let db = disk.create(&builder, path).map_err(StoreError::storage)?;
        let txn = db.begin_write().map_err(StoreError::storage)?;
        txn.open_table(STREAM_INDEX).map_err(StoreError::storage)?;
        txn.open_table(INDEX_META).map_err(StoreError::storage)?;
        txn.commit().map_err(StoreError::storage)?;
        Ok(db)
    }

    /// Indexes every log record past the index's recorded end, then makes that durable.
    fn catch_up(&mut self, log: &Database) -> Result<(), StoreError> {
        let txn = log.begin_read().map_err(StoreError::storage)?;
        let table = txn.open_table(LOG).map_err(StoreError::storage)?;
        let log_end = super::next_position_of(&table)?;
        let from = self.indexed_up_to()?;
        if from > log_end {
            // The log is committed (durably) before the index, so an index that covers
            // positions the log does not have means the log lost them: emptied, replaced, or
            // restored alone from an older backup. Rebuilding the index would erase the last
            // sign of it; refuse, and say so.
            return Err(StoreError::LogBehindIndex {
                indexed_up_to: from,
                log_end,
            });
        }
        let mut entries = Vec::new();
        let mut end = from;
        for row in table.range(from..).map_err(StoreError::storage)? {
            let (key, bytes) = row.map_err(StoreError::storage)?;
            let position = key.value();
            let record: LogRecord = codec::decode(bytes.value())
                .map_err(|source| StoreError::CorruptLog { position, source })?;
            entries.push(IndexEntry {
                stream: record.stream,
                version: record.version,
                position,
            });
            end = position + 1;
        }
        if !entries.is_empty() {
            tracing::info!(from, to = end, "re-indexing the log tail");
        }
        self.apply(&entries, end, true)
    }

    fn indexed_up_to(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let meta = txn.open_table(INDEX_META).map_err(StoreError::storage)?;
        Ok(meta
            .get(INDEXED_UP_TO)
            .map_err(StoreError::storage)?
            .map_or(0, |v| v.value()))
    }

    /// Whether the index's last durable commit is older than [`DURABLE_INTERVAL`]: the writer
    /// then makes its next batch durable, log and index together.
    pub(crate) fn durable_due(&self) -> bool {
        self.last_durable.elapsed() >= DURABLE_INTERVAL
    }

    /// Adds entries and records that the index now covers the log up to `indexed_up_to`;
    /// durable when `durable` (only ever after a durable commit of the log up to there: an
    /// index must never be on disk ahead of its log).
    pub(crate) fn apply(
        &mut self,
        entries: &[IndexEntry],
        indexed_up_to: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(StoreError::storage)?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(StoreError::storage)?;
        {
            let mut index = txn.open_table(STREAM_INDEX).map_err(StoreError::storage)?;
            for entry in entries {
                index
                    .insert((entry.stream.as_str(), entry.version), entry.position)
                    .map_err(StoreError::storage)?;
            }
            let mut meta = txn.open_table(INDEX_META).map_err(StoreError::storage)?;
            meta.insert(INDEXED_UP_TO, indexed_up_to)
                .map_err(StoreError::storage)?;
        }
        txn.commit().map_err(StoreError::storage)?;
        if durable {
            self.last_durable = Instant::now();
        }
        Ok(())
    }

    /// The version of the last event of `stream` the index knows, 0 when it has none.
    pub(crate) fn head(&self, stream: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let index = txn.open_table(STREAM_INDEX).map_err(StoreError::storage)?;
        stream_head(&index, stream)
    }
}

/// The version of the last indexed event of `stream`, 0 when it has none.
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
