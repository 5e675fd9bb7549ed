//! How many sagas of each kind are running, stuck, completed and compensated on this node, and
//! the latest stuck ones: what the operations page shows, read without going through every
//! saga. Finished sagas are counters (written with the event that finishes each); open ones
//! are few, and read one by one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::log::{SAGA_COUNTS_TABLE, SAGAS_OPEN_TABLE, SAGAS_TABLE};
use super::record::SagaSummary;
use crate::bus::key;
use crate::codec;
use crate::store::{EventStore, StoreError, TableChange, decode_counter};

/// The checkpoint that marks a store's finished-saga counters as filled from its saga table.
const COUNTS_FILLED: &str = "saga-counts-filled";

/// Open sagas read at most, so that a pile-up of stuck sagas keeps the page cheap.
const MAX_OPEN_READ: usize = 10_000;
/// Stuck sagas listed.
const LATEST_STUCK: usize = 5;

/// One kind's sagas by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SagaKindCounts {
    pub kind: String,
    pub running: u64,
    pub compensating: u64,
    pub stuck: u64,
    pub completed: u64,
    pub compensated: u64,
}

/// This node's sagas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaCounts {
    pub kinds: Vec<SagaKindCounts>,
    /// The most recently stuck sagas, newest first, with their step and last error.
    pub latest_stuck: Vec<SagaSummary>,
    /// More sagas are open than were read: the open counts are lower bounds.
    pub open_truncated: bool,
}

/// Splits a `kind/rest/` key into its first part and the rest (without the final `/`).
fn split_key(key: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(key);
    let text = text.strip_suffix('/').unwrap_or(&text);
    match text.split_once('/') {
        Some((kind, rest)) => (kind.to_owned(), rest.to_owned()),
        None => (text.to_owned(), String::new()),
    }
}

/// Fills the finished-saga counters from the saga table, once per store: a store written
/// before the counters existed holds sagas that finished without being counted. Run when the
/// node starts, before any saga runs (a saga finishing during the count would be missed).
/// Answers how many finished sagas it counted, or `None` when the store was filled before.
pub async fn fill_saga_counts(store: &EventStore) -> Result<Option<u64>, StoreError> {
    if store.checkpoint(COUNTS_FILLED)?.is_some() {
        return Ok(None);
    }
    let snapshot = store.read_models()?;
    let mut finished: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = snapshot.scan(SAGAS_TABLE, b"", after.as_deref(), 1024)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, value) in &page {
            let summary: SagaSummary =
                codec::decode(value).map_err(|source| StoreError::Corrupt {
                    stream: split_key(key).1,
                    version: 0,
                    source,
                })?;
            if matches!(summary.status.as_str(), "completed" | "compensated") {
                *finished.entry((summary.kind, summary.status)).or_default() += 1;
            }
        }
    }
    let total = finished.values().sum::<i64>().max(0) as u64;
    let changes = finished
        .into_iter()
        .map(|((kind, status), count)| TableChange::Put {
            table: SAGA_COUNTS_TABLE.into(),
            key: key(&[&kind, &status]),
            value: count.to_le_bytes().to_vec(),
        })
        .collect();
    store
        .commit_projection(COUNTS_FILLED, store.log_end(), changes)
        .await?;
    Ok(Some(total))
}

/// Reads the counts from `store`'s saga tables.
pub fn saga_counts(store: &EventStore) -> Result<SagaCounts, StoreError> {
    let snapshot = store.read_models()?;
    let mut kinds: BTreeMap<String, SagaKindCounts> = BTreeMap::new();
    fn of_kind<'a>(
        kinds: &'a mut BTreeMap<String, SagaKindCounts>,
        kind: &str,
    ) -> &'a mut SagaKindCounts {
        kinds
            .entry(kind.to_owned())
            .or_insert_with(|| SagaKindCounts {
                kind: kind.to_owned(),
                ..SagaKindCounts::default()
            })
    }
    // Two statuses per kind: a page holds every finished count there is.
    for (key, value) in snapshot.scan(SAGA_COUNTS_TABLE, b"", None, 1024)? {
        let (kind, status) = split_key(&key);
        let count = decode_counter(&value).unwrap_or(0).max(0) as u64;
        let counts = of_kind(&mut kinds, &kind);
        match status.as_str() {
            "completed" => counts.completed = count,
            "compensated" => counts.compensated = count,
            _ => {}
        }
    }
    let mut stuck = Vec::new();
    let (mut read, mut after) = (0, None::<Vec<u8>>);
    let mut open_truncated = false;
    'open: loop {
        let page = snapshot.scan(SAGAS_OPEN_TABLE, b"", after.as_deref(), 512)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, _) in &page {
            if read == MAX_OPEN_READ {
                open_truncated = true;
                break 'open;
            }
            read += 1;
            let Some(value) = snapshot.get(SAGAS_TABLE, key)? else {
                continue;
            };
            let summary: SagaSummary =
                codec::decode(&value).map_err(|source| StoreError::Corrupt {
                    stream: split_key(key).1,
                    version: 0,
                    source,
                })?;
            let counts = of_kind(&mut kinds, &summary.kind);
            match summary.status.as_str() {
                "running" => counts.running += 1,
                "compensating" => counts.compensating += 1,
                "stuck" => {
                    counts.stuck += 1;
                    stuck.push(summary);
                }
                _ => {}
            }
        }
    }
    // RFC 3339 times in UTC sort as text.
    stuck.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    stuck.truncate(LATEST_STUCK);
    Ok(SagaCounts {
        kinds: kinds.into_values().collect(),
        latest_stuck: stuck,
        open_truncated,
    })
}
