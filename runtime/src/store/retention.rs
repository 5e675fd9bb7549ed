//! How long processed command ids are kept (`store.command_retention_seconds`): a command
//! sent again with the same id within that time is answered as the first was; later, it is
//! applied as new. The store forgets them in cuts (`EventStore::forget_commands_before`): on
//! a node writing its store directly, a cut every [`cut_every`] by its own clock; with
//! replicated partitions, each partition's leader proposes the cut (`replication::retention`)
//! so that every replica forgets the same ids.

use std::time::Duration;

use redb::ReadableTable;

use super::tables::{LogRecord, ProcessedCommand};
use super::{EventStore, StoreError};

/// How often a cut is made for `retention`: a tenth of it, between a second and ten minutes,
/// so an id is kept at most a tenth longer than asked.
pub fn cut_every(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// The cut's bound now: ids whose events were recorded before it are forgotten.
pub fn cut_before(retention: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.saturating_sub(retention).as_micros()).unwrap_or(i64::MAX)
}

/// Runs for the node's life (a node whose journal is its store): forgets the processed
/// commands older than `retention`, every [`cut_every`].
pub async fn keep_commands_for(store: EventStore, retention: Duration) {
    loop {
        tokio::time::sleep(cut_every(retention)).await;
        match store
            .forget_commands_before(cut_before(retention), |_| true, Vec::new())
            .await
        {
            Ok(0) => {}
            Ok(forgotten) => {
                tracing::debug!(forgotten, "processed commands forgotten (retention)")
            }
            Err(error) => tracing::warn!(%error, "forgetting old processed commands failed"),
        }
    }
}

/// A processed command's time: its first event's recorded time (stamped by the partition's
/// leader, so the same on every replica); `None` for a command that wrote no events (a
/// refusal, a fence), which cuts never forget.
pub(crate) fn time_of(
    log: &impl ReadableTable<u64, &'static [u8]>,
    command: &ProcessedCommand,
) -> Result<Option<i64>, StoreError> {
    if command.is_fence() || command.last_version < command.first_version {
        return Ok(None);
    }
    let Some(bytes) = log
        .get(command.first_position)
        .map_err(StoreError::storage)?
    else {
        return Ok(None);
    };
    let record: LogRecord =
        crate::codec::decode(bytes.value()).map_err(|source| StoreError::CorruptLog {
            position: command.first_position,
            source,
        })?;
    Ok(Some(record.recorded_at_micros))
}
