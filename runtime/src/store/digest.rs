//! A store's replicated contents, summed up so that two replicas can be compared without
//! shipping them: each stream's events, the processed-command table and each read-model
//! table, as a row count and a hash.
//!
//! What is the node's own is left out: events' and commands' positions in this node's log
//! (replicas number their logs alike only by chance), and what is derived from the log here
//! (the stream index, aggregate snapshots, subscribers' checkpoints). Two replicas that have
//! applied the same entries have equal digests.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableHandle};
use serde::Serialize;

use super::error::StoreError;
use super::tables::{LOG, LogRecord, PROCESSED_COMMANDS, ProcessedCommand};
use super::{EventStore, fingerprint_of};
use crate::codec;

/// Rows and a hash of them, in key order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summed {
    pub rows: u64,
    pub hash: u64,
}

impl Summed {
    fn add(&mut self, row: &[u8]) {
        self.rows += 1;
        self.hash = fingerprint_of([self.hash.to_le_bytes().as_slice(), row]);
    }
}

/// A store's replicated contents, summed up (see the module).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreDigest {
    /// Each stream's events in version order.
    pub streams: BTreeMap<String, Summed>,
    /// Processed command ids and what each did.
    pub processed_commands: Summed,
    /// Each read-model table (`rm_` left off), sagas' tables included.
    pub read_models: BTreeMap<String, Summed>,
}

impl StoreDigest {
    /// Where `self` and `other` differ, said for a person (at most `limit` lines).
    pub fn differences(&self, other: &StoreDigest, limit: usize) -> Vec<String> {
        let mut found = Vec::new();
        compare("stream", &self.streams, &other.streams, &mut found);
        if self.processed_commands != other.processed_commands {
            found.push(format!(
                "processed commands: {:?} here, {:?} there",
                self.processed_commands, other.processed_commands
            ));
        }
        compare(
            "read-model table",
            &self.read_models,
            &other.read_models,
            &mut found,
        );
        found.truncate(limit);
        found
    }

    /// Events in all streams.
    pub fn events(&self) -> u64 {
        self.streams.values().map(|s| s.rows).sum()
    }
}

fn compare(
    what: &str,
    here: &BTreeMap<String, Summed>,
    there: &BTreeMap<String, Summed>,
    found: &mut Vec<String>,
) {
    for (name, summed) in here {
        match there.get(name) {
            Some(theirs) if theirs == summed => {}
            Some(theirs) => found.push(format!(
                "{what} {name}: {} rows here, {} there, or the same count with other contents",
                summed.rows, theirs.rows
            )),
            None => found.push(format!("{what} {name} is missing there")),
        }
    }
    for name in there.keys().filter(|name| !here.contains_key(*name)) {
        found.push(format!("{what} {name} is missing here"));
    }
}

impl EventStore {
    /// Sums up the store's replicated contents (see [`StoreDigest`]), from one consistent
    /// view. Reads everything: for comparing replicas, not for a hot path.
    pub fn digest(&self) -> Result<StoreDigest, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::storage)?;
        let mut digest = StoreDigest::default();
        let log = txn.open_table(LOG).map_err(StoreError::storage)?;
        for entry in log.iter().map_err(StoreError::storage)? {
            let (key, bytes) = entry.map_err(StoreError::storage)?;
            let position = key.value();
            let record: LogRecord = codec::decode(bytes.value())
                .map_err(|source| StoreError::CorruptLog { position, source })?;
            // The record as written, without its position in this node's log (the key).
            digest
                .streams
                .entry(record.stream.clone())
                .or_default()
                .add(bytes.value());
        }
        let commands = txn
            .open_table(PROCESSED_COMMANDS)
            .map_err(StoreError::storage)?;
        for entry in commands.iter().map_err(StoreError::storage)? {
            let (id, bytes) = entry.map_err(StoreError::storage)?;
            let mut command: ProcessedCommand =
                ProcessedCommand::decode(id.value(), bytes.value())?;
            command.first_position = 0;
            let row =
                codec::encode(&(id.value(), &command)).map_err(|source| StoreError::Encode {
                    stream: command.stream.clone(),
                    source,
                })?;
            digest.processed_commands.add(&row);
        }
        for table in txn.list_tables().map_err(StoreError::storage)? {
            let Some(name) = table.name().strip_prefix("rm_") else {
                continue;
            };
            let opened = txn
                .open_table(super::read_model::definition(table.name()))
                .map_err(StoreError::storage)?;
            let summed = digest.read_models.entry(name.to_owned()).or_default();
            for entry in opened.iter().map_err(StoreError::storage)? {
                let (key, value) = entry.map_err(StoreError::storage)?;
                summed.add(
                    &codec::encode(&(key.value(), value.value())).map_err(|source| {
                        StoreError::Encode {
                            stream: name.to_owned(),
                            source,
                        }
                    })?,
                );
            }
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{append_request, temp_store};
    use super::super::{AppendRequest, EventMetadata, TableChange};

    /// An append stamped at a fixed time, with a command id and a read-model change, as a
    /// replicated entry arrives on every replica.
    fn stamped(stream: &str, expected: u64, name: &str) -> AppendRequest {
        let mut request = append_request(stream, expected, &[name]);
        request.command_id = Some(format!("{stream}-{expected}"));
        request.metadata = EventMetadata {
            recorded_at_micros: Some(1_700_000_000_000_000 + expected as i64),
            ..EventMetadata::default()
        };
        request.table_changes = vec![TableChange::Put {
            table: "latest".into(),
            key: stream.as_bytes().to_vec(),
            value: name.as_bytes().to_vec(),
        }];
        request
    }

    #[tokio::test]
    async fn replicas_that_applied_the_same_appends_in_another_order_across_streams_agree() {
        let (_a, one) = temp_store().await;
        let (_b, other) = temp_store().await;
        for request in [
            stamped("a", 0, "x"),
            stamped("b", 0, "y"),
            stamped("a", 1, "z"),
        ] {
            one.append(request).await.unwrap();
        }
        // The same per stream, another order overall: every position differs.
        for request in [
            stamped("b", 0, "y"),
            stamped("a", 0, "x"),
            stamped("a", 1, "z"),
        ] {
            other.append(request).await.unwrap();
        }
        let (mine, theirs) = (one.digest().unwrap(), other.digest().unwrap());
        assert_eq!(mine, theirs);
        assert_eq!(mine.events(), 3);
        assert_eq!(mine.processed_commands.rows, 3);
        assert_eq!(mine.read_models["latest"].rows, 2);

        other.append(stamped("b", 1, "w")).await.unwrap();
        let differences = one
            .digest()
            .unwrap()
            .differences(&other.digest().unwrap(), 10);
        assert_eq!(differences.len(), 3, "{differences:?}");
        assert_eq!(
            differences[0],
            "stream b: 1 rows here, 2 there, or the same count with other contents"
        );
        assert!(differences[1].starts_with("processed commands: Summed { rows: 3,"));
        assert!(differences[2].starts_with("read-model table latest: 2 rows here, 2 there"));
    }
}
