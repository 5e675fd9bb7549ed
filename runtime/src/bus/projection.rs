//! [`Projection`]: a read model fed by the global log, and what it writes with.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::Aggregate;
use crate::codec;
use crate::store::{ReadModelSnapshot, RecordedEvent, StoreError, TableChange};

/// A read model: it sees every event of the global log in log order, at least once, and keeps
/// its own tables. Its changes for a batch of events commit together with its checkpoint, so
/// that a crash re-delivers the whole batch and nothing is counted twice.
pub trait Projection: Send + Sync + 'static {
    /// Its name: the checkpoint's key, the metric label, and what `rebuild` takes.
    fn name(&self) -> &'static str;
    /// The tables it writes, and only it writes; a rebuild empties them.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event. Events it has no use for are passed over by returning `Ok`.
    fn apply(&self, event: &RecordedEvent, tables: &mut Tables<'_>) -> Result<(), ProjectionError>;

    /// The stream whose events keep the row under `key` of `table` up to date, for a row that
    /// changes after it is written (`None`: it never does, or no one stream keeps it). With
    /// replicated partitions a member lists such a row only while it votes in that stream's
    /// partition: a member the partition moved off keeps the rows it had, which its log no
    /// longer updates.
    fn stream_of(&self, _table: &str, _key: &[u8]) -> Option<String> {
        None
    }
}

/// Checks that `projections` can run side by side on one store: distinct names, and tables
/// that are each written by one projection only and not the runtime's own (the saga tables,
/// `sagas*`, which a rebuild must never empty).
pub fn check_projections(projections: &[std::sync::Arc<dyn Projection>]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for projection in projections {
        let name = projection.name();
        if !names.insert(name) {
            return Err(format!(
                "two projections are named `{name}`; names must be unique"
            ));
        }
        for &table in projection.tables() {
            if table.starts_with("sagas") {
                return Err(format!(
                    "projection `{name}` claims table `{table}`: names starting with `sagas` are the saga engine's"
                ));
            }
            if let Some(first) = owners.insert(table, name) {
                return Err(format!(
                    "projections `{first}` and `{name}` both claim table `{table}`; a table has one writer"
                ));
            }
        }
    }
    Ok(())
}

/// A projection could not apply an event: its runner fails, is restarted by its supervisor,
/// and retries from its checkpoint (nothing is skipped).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    #[error(
        "event {position} ({event_type} schema version {schema_version}, {stream}) cannot be read: {source}"
    )]
    Decode {
        position: u64,
        stream: String,
        event_type: String,
        schema_version: u16,
        #[source]
        source: crate::aggregate::upcast::ReadError,
    },
    #[error("read-model value in {table} cannot be decoded: {source}")]
    Value {
        table: String,
        #[source]
        source: codec::CodecError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

/// An event of aggregate kind `A`, decoded, with where it is in the log.
#[derive(Debug)]
pub struct Delivered<A: Aggregate> {
    pub position: u64,
    /// The aggregate's id (the stream name without its kind).
    pub id: String,
    pub version: u64,
    pub recorded_at_micros: i64,
    pub event: A::Event,
}

/// Decodes `event` when it belongs to an aggregate of kind `A`; `None` for other kinds.
pub fn decode<A: Aggregate>(
    event: &RecordedEvent,
) -> Result<Option<Delivered<A>>, ProjectionError> {
    let Some(id) = event
        .stream
        .strip_prefix(A::KIND)
        .and_then(|rest| rest.strip_prefix('-'))
    else {
        return Ok(None);
    };
    let decoded = crate::aggregate::upcast::read::<A>(
        &event.event_type,
        event.schema_version,
        &event.payload,
    )
    .map_err(|source| ProjectionError::Decode {
        position: event.position,
        stream: event.stream.clone(),
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        source,
    })?;
    Ok(Some(Delivered {
        position: event.position,
        id: id.to_owned(),
        version: event.version,
        recorded_at_micros: event.recorded_at_micros,
        event: decoded,
    }))
}

/// A projection's view of its tables while it applies a batch: what is committed, with the
/// batch's own changes so far on top, so that a later event of the batch reads an earlier
/// one's write.
pub struct Tables<'a> {
    committed: &'a ReadModelSnapshot,
    pending: HashMap<(&'static str, Vec<u8>), Option<Vec<u8>>>,
    changes: Vec<TableChange>,
}

impl std::fmt::Debug for Tables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("changes", &self.changes.len())
            .finish()
    }
}

impl<'a> Tables<'a> {
    pub(crate) fn new(committed: &'a ReadModelSnapshot) -> Self {
        Self {
            committed,
            pending: HashMap::new(),
            changes: Vec::new(),
        }
    }

    /// The value under `key` in `table`, with this batch's changes applied.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, ProjectionError> {
        let bytes = match self.pending.get(&(table, key.to_vec())) {
            Some(pending) => pending.clone(),
            None => self.committed.get(table, key)?,
        };
        bytes
            .map(|bytes| {
                codec::decode(&bytes).map_err(|source| ProjectionError::Value {
                    table: table.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    pub fn put<T: Serialize>(
        &mut self,
        table: &'static str,
        key: Vec<u8>,
        value: &T,
    ) -> Result<(), ProjectionError> {
        let value = codec::encode(value).map_err(|source| ProjectionError::Value {
            table: table.to_owned(),
            source,
        })?;
        self.pending
            .insert((table, key.clone()), Some(value.clone()));
        self.changes.push(TableChange::Put {
            table: table.into(),
            key,
            value,
        });
        Ok(())
    }

    pub fn delete(&mut self, table: &'static str, key: Vec<u8>) {
        self.pending.insert((table, key.clone()), None);
        self.changes.push(TableChange::Delete {
            table: table.into(),
            key,
        });
    }

    pub(crate) fn into_changes(self) -> Vec<TableChange> {
        self.changes
    }
}

/// A read-model key made of parts, each followed by a `/`: `key(&[customer, order])` sorts by
/// customer, then order, and `key(&[customer])` is the prefix of all of one customer's keys.
/// Parts must not contain `/` (ids and zero-padded numbers do not).
pub fn key(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        key.extend_from_slice(part.as_bytes());
        key.push(b'/');
    }
    key
}

/// One page of a read-model table: the items after `cursor` under `prefix`, and the cursor of
/// the next page when there is one. Cursors are the part of an item's key after `prefix` (see
/// [`key`]), so they are plain text.
pub fn read_page<T: DeserializeOwned>(
    snapshot: &ReadModelSnapshot,
    table: &'static str,
    prefix: &[u8],
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<T>, Option<String>), ProjectionError> {
    let mut entries = scan_page(snapshot, table, prefix, cursor, limit + 1)?;
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next = match entries.last() {
        Some((last, _)) if more => Some(last.clone()),
        _ => None,
    };
    let items = decode_entries(table, &entries)?;
    Ok((items, next))
}

/// Up to `limit` raw entries of a read-model table after `cursor` under `prefix`: each item's
/// cursor (its key after `prefix`) and its encoded value. What a cluster member answers for
/// its part of a list, merged by cursor with the other members' parts.
pub fn scan_page(
    snapshot: &ReadModelSnapshot,
    table: &str,
    prefix: &[u8],
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, ProjectionError> {
    scan_page_where(snapshot, table, prefix, cursor, limit, |_| true)
}

/// [`scan_page`] of the entries whose full key `listed` keeps: it reads on past the entries
/// left out, so that a page is short only at the table's end.
pub fn scan_page_where(
    snapshot: &ReadModelSnapshot,
    table: &str,
    prefix: &[u8],
    cursor: Option<&str>,
    limit: usize,
    listed: impl Fn(&[u8]) -> bool,
) -> Result<Vec<(String, Vec<u8>)>, ProjectionError> {
    let mut after = cursor.map(|cursor| {
        let mut after = prefix.to_vec();
        after.extend_from_slice(&key(&[cursor]));
        after
    });
    let mut page = Vec::new();
    while page.len() < limit {
        let wanted = limit - page.len();
        let entries = snapshot.scan(table, prefix, after.as_deref(), wanted)?;
        let read_all = entries.len() < wanted;
        after = entries.last().map(|(key, _)| key.clone());
        page.extend(
            entries
                .into_iter()
                .filter(|(key, _)| listed(key))
                .map(|(key, value)| {
                    let cursor = String::from_utf8_lossy(&key[prefix.len()..])
                        .trim_end_matches('/')
                        .to_owned();
                    (cursor, value)
                }),
        );
        if read_all {
            break;
        }
    }
    Ok(page)
}

/// Decodes the values of entries [`scan_page`] read from `table`.
pub fn decode_entries<T: DeserializeOwned>(
    table: &str,
    entries: &[(String, Vec<u8>)],
) -> Result<Vec<T>, ProjectionError> {
    entries
        .iter()
        .map(|(_, value)| {
            codec::decode(value).map_err(|source| ProjectionError::Value {
                table: table.to_owned(),
                source,
            })
        })
        .collect()
}
