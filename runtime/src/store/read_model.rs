//! Read-model tables: what projections write, in the store's file, next to the log.
//!
//! Each read-model table is a redb table of bytes to bytes named `rm_<table>`, written only
//! through the writer (a projection's changes and its checkpoint commit in one transaction, so
//! a crash never leaves one without the other) and read through a [`ReadModelSnapshot`]: one
//! consistent view of every table.

use std::borrow::Cow;

use redb::{ReadTransaction, ReadableDatabase, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use super::EventStore;
use super::error::StoreError;

/// One change to a read-model table. The table's name is borrowed when it is a constant of
/// this build and owned when it was decoded (a replicated append's changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableChange {
    Put {
        table: Cow<'static, str>,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Cow<'static, str>,
        key: Vec<u8>,
    },
    /// Adds `delta` to the counter under `key`: an `i64`, little-endian (absent reads as 0).
    /// Applied by the writer inside the transaction, so concurrent additions never race.
    Add {
        table: Cow<'static, str>,
        key: Vec<u8>,
        delta: i64,
    },
}

impl TableChange {
    pub fn table(&self) -> &str {
        match self {
            TableChange::Put { table, .. }
            | TableChange::Delete { table, .. }
            | TableChange::Add { table, .. } => table.as_ref(),
        }
    }
}

/// A counter's value as [`TableChange::Add`] stores it; `None` for bytes that are not one.
pub fn decode_counter(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.try_into().ok()?))
}

pub(crate) fn table_name(table: &str) -> String {
    format!("rm_{table}")
}

pub(crate) fn definition(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// A read-model entry: its key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A consistent view of every read-model table (a redb read transaction).
pub struct ReadModelSnapshot {
    txn: ReadTransaction,
}

impl std::fmt::Debug for ReadModelSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadModelSnapshot")
    }
}

impl ReadModelSnapshot {
    /// The value under `key` in `table`; a table never written is empty.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let name = table_name(table);
        let opened = match self.txn.open_table(definition(&name)) {
            Ok(opened) => opened,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(StoreError::storage(error)),
        };
        Ok(opened
            .get(key)
            .map_err(StoreError::storage)?
            .map(|value| value.value().to_vec()))
    }

    /// Up to `limit` entries of `table` whose key starts with `prefix`, in key order, after
    /// `after` (exclusive) when given.
    pub fn scan(
        &self,
        table: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let name = table_name(table);
        let opened = match self.txn.open_table(definition(&name)) {
            Ok(opened) => opened,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(StoreError::storage(error)),
        };
        let start = match after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let mut entries = Vec::new();
        for entry in opened.range(start..).map_err(StoreError::storage)? {
            let (key, value) = entry.map_err(StoreError::storage)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            if after == Some(key) {
                continue;
            }
            entries.push((key.to_vec(), value.value().to_vec()));
            if entries.len() >= limit {
                break;
            }
        }
        Ok(entries)
    }
}

impl EventStore {
    /// A consistent view of the read-model tables as last committed.
    pub fn read_models(&self) -> Result<ReadModelSnapshot, StoreError> {
        Ok(ReadModelSnapshot {
            txn: self.db.begin_read().map_err(StoreError::storage)?,
        })
    }

    /// Applies a projection's `changes` and records `position` as its checkpoint, in one
    /// transaction (group-committed with other writes). Answered once committed; durable with
    /// the next durable commit, and never ahead of the events it covers (commits reach the
    /// disk in order): a crash may make the projection apply some events again, at least
    /// once as always.
    pub async fn commit_projection(
        &self,
        subscriber: &str,
        position: u64,
        changes: Vec<TableChange>,
    ) -> Result<(), StoreError> {
        let subscriber = subscriber.to_owned();
        self.submit(|reply| super::writer::WriteOp::Project {
            subscriber,
            position,
            changes,
            reply,
        })
        .await
    }

    /// Applies `changes` to read-model tables alone (no checkpoint), in one transaction;
    /// durable with the next durable commit, like a projection's.
    pub async fn write_tables(&self, changes: Vec<TableChange>) -> Result<(), StoreError> {
        self.submit(|reply| super::writer::WriteOp::Tables { changes, reply })
            .await
    }

    /// Empties `tables` and forgets `subscriber`'s checkpoint, in one durable transaction: the
    /// projection starts again from the beginning of the log.
    pub async fn reset_projection(
        &self,
        subscriber: &str,
        tables: &[&'static str],
    ) -> Result<(), StoreError> {
        let subscriber = subscriber.to_owned();
        let tables = tables.to_vec();
        self.submit(|reply| super::writer::WriteOp::ResetProjection {
            subscriber,
            tables,
            reply,
        })
        .await
    }
}
