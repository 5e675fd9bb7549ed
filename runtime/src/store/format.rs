//! The data format of a store, and its upgrades: a store written by an older build is brought
//! to this build's format when it opens, one step per format, each in one transaction (a crash
//! mid-step leaves the older format whole, and the next start runs the step again). A store of
//! a newer format is refused: downgrading is not supported.

use std::path::Path;

use redb::{Database, ReadableTable, WriteTransaction};

use super::StoreError;
use super::tables::{
    COMMANDS_BY_TIME, LAYOUT_VERSION_KEY, LOG, LogRecord, META, PROCESSED_COMMANDS,
    ProcessedCommand,
};
use crate::codec;

/// The format this build writes (the build of the previous cluster format, cargo feature
/// `previous-format`, is also the one before this data format).
pub(crate) const FORMAT: u64 = if cfg!(feature = "previous-format") {
    5
} else {
    6
};

/// The oldest format this build upgrades (the first one that was released with data to keep).
pub(crate) const OLDEST_UPGRADABLE: u64 = 4;

/// One upgrade: from format `from` to `from + 1`.
struct Step {
    from: u64,
    what: &'static str,
    /// Runs inside the step's transaction; says what it did.
    run: fn(&WriteTransaction) -> Result<String, StoreError>,
}

const STEPS: &[Step] = &[
    Step {
        from: 4,
        what: "a stored event's schema version is its own type's (format 4 stored its \
               aggregate's, 1 for every aggregate)",
        run: schema_versions_are_per_type,
    },
    Step {
        from: 5,
        what: "processed commands are listed by time, for retention cuts \
               (store.command_retention_seconds)",
        run: processed_commands_by_time,
    },
];

/// Stamps a new store with [`FORMAT`], or upgrades an older one to it; refuses a newer one
/// and one older than [`OLDEST_UPGRADABLE`].
pub(crate) fn bring_up_to_date(db: &Database, path: &Path) -> Result<(), StoreError> {
    loop {
        let txn = db.begin_write().map_err(StoreError::storage)?;
        let found = {
            let meta = txn.open_table(META).map_err(StoreError::storage)?;
            meta.get(LAYOUT_VERSION_KEY)
                .map_err(StoreError::storage)?
                .map(|v| v.value())
        };
        let step = match found {
            Some(FORMAT) => return Ok(()),
            None => {
                stamp(&txn, FORMAT)?;
                return txn.commit().map_err(StoreError::storage);
            }
            Some(found) if found > FORMAT => {
                return Err(StoreError::NewerFormat {
                    path: path.to_owned(),
                    found,
                    known: FORMAT,
                });
            }
            Some(found) => STEPS
                .iter()
                .find(|step| step.from == found && found >= OLDEST_UPGRADABLE)
                .ok_or_else(|| StoreError::UnsupportedFormat {
                    path: path.to_owned(),
                    found,
                    oldest: OLDEST_UPGRADABLE,
                })?,
        };
        tracing::warn!(
            path = %path.display(),
            from = step.from,
            to = step.from + 1,
            step = step.what,
            "upgrading the data format; a build before this one cannot open it afterwards"
        );
        let done = (step.run)(&txn)?;
        stamp(&txn, step.from + 1)?;
        txn.commit().map_err(StoreError::storage)?;
        tracing::info!(path = %path.display(), format = step.from + 1, done, "data format upgraded");
    }
}

fn stamp(txn: &WriteTransaction, format: u64) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::storage)?;
    meta.insert(LAYOUT_VERSION_KEY, format)
        .map_err(StoreError::storage)?;
    Ok(())
}

/// 4 -> 5. Format 4 wrote every event with its aggregate's schema version, and every aggregate
/// of those builds had version 1, which is also version 1 of each event type: nothing is
/// rewritten, but every record is checked to be so, since an event of another version could
/// not be placed in its type's chain.
fn schema_versions_are_per_type(txn: &WriteTransaction) -> Result<String, StoreError> {
    let log = txn.open_table(LOG).map_err(StoreError::storage)?;
    let mut checked = 0u64;
    for entry in log.iter().map_err(StoreError::storage)? {
        let (position, bytes) = entry.map_err(StoreError::storage)?;
        let position = position.value();
        let record: LogRecord = codec::decode(bytes.value())
            .map_err(|source| StoreError::CorruptLog { position, source })?;
        if record.schema_version != 1 {
            return Err(StoreError::Upgrade {
                from: 4,
                reason: format!(
                    "event {} at position {position} (stream {}) has schema version {}, which \
                     format 4 could only have written for an aggregate whose own version was \
                     raised; its type's version cannot be known",
                    record.event_type, record.stream, record.schema_version
                ),
            });
        }
        checked += 1;
    }
    Ok(format!("{checked} events checked, none rewritten"))
}

/// 5 -> 6. Lists every processed command that wrote events under its first event's recorded
/// time (`processed_commands_by_time`), as appends do from format 6 on: the same time every
/// replica derives from the events it holds.
fn processed_commands_by_time(txn: &WriteTransaction) -> Result<String, StoreError> {
    let log = txn.open_table(LOG).map_err(StoreError::storage)?;
    let commands = txn
        .open_table(PROCESSED_COMMANDS)
        .map_err(StoreError::storage)?;
    let mut times = txn
        .open_table(COMMANDS_BY_TIME)
        .map_err(StoreError::storage)?;
    let (mut listed, mut kept) = (0u64, 0u64);
    for entry in commands.iter().map_err(StoreError::storage)? {
        let (id, bytes) = entry.map_err(StoreError::storage)?;
        let command: ProcessedCommand = ProcessedCommand::decode(id.value(), bytes.value())?;
        match super::retention::time_of(&log, &command)? {
            Some(at) => {
                times
                    .insert((at, id.value()), ())
                    .map_err(StoreError::storage)?;
                listed += 1;
            }
            None => kept += 1,
        }
    }
    Ok(format!(
        "{listed} processed commands listed by time, {kept} refusals and fences (kept for good)"
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use redb::ReadableDatabase;

    use super::*;
    use crate::store::tests::{append_request, temp_store};
    use crate::store::{EventStore, StoreOptions};

    /// Writes `names` to a new store, closes it and sets its recorded format to `format`
    /// (and, when given, one event's schema version to `version`), as an older build would.
    async fn written_at(format: u64, odd_version: Option<u16>) -> (tempfile::TempDir, PathBuf) {
        let (dir, store) = temp_store().await;
        store
            .append(append_request("account-1", 0, &["Opened", "Credited"]))
            .await
            .unwrap();
        store.close().await.unwrap();
        drop(store);
        let path = dir.path().join("events.redb");
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        stamp(&txn, format).unwrap();
        if let Some(version) = odd_version {
            let mut log = txn.open_table(LOG).unwrap();
            let first = log
                .first()
                .unwrap()
                .map(|(p, b)| (p.value(), b.value().to_vec()));
            let (position, bytes) = first.unwrap();
            let mut record: LogRecord = codec::decode(&bytes).unwrap();
            record.schema_version = version;
            log.insert(position, codec::encode(&record).unwrap().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        (dir, path)
    }

    fn recorded_format(path: &Path) -> u64 {
        let db = Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get(LAYOUT_VERSION_KEY).unwrap().unwrap().value()
    }

    #[tokio::test]
    async fn a_format_4_store_is_upgraded_at_open_and_its_events_read_as_before() {
        let (_dir, path) = written_at(4, None).await;
        let store = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap();
        let events = store.read_stream("account-1").unwrap();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.schema_version == 1));
        store.close().await.unwrap();
        drop(store);
        assert_eq!(recorded_format(&path), FORMAT);
    }

    // (The previous format's build stays at format 5.)
    #[cfg(not(feature = "previous-format"))]
    #[tokio::test]
    async fn a_format_5_store_lists_its_processed_commands_by_time_at_open() {
        let (dir, store) = temp_store().await;
        for (n, at) in [(1u64, 1_000i64), (2, 2_000)] {
            let mut credit = append_request("account-1", n - 1, &["Credited"]);
            credit.command_id = Some(format!("credit-{n}"));
            credit.metadata.recorded_at_micros = Some(at);
            store.append(credit).await.unwrap();
        }
        let mut refused = append_request("account-1", 2, &[]);
        refused.command_id = Some("refused".into());
        refused.rejection = Some(b"no".to_vec());
        store.append(refused).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        // As format 5 left it: no list of times.
        let path = dir.path().join("events.redb");
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(COMMANDS_BY_TIME).unwrap();
            stamp(&txn, 5).unwrap();
            txn.commit().unwrap();
        }
        let store = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap();
        let view = store.view().unwrap();
        assert_eq!(
            view.commands_written_before(1_500, |_| true).unwrap(),
            ["credit-1"]
        );
        assert_eq!(
            view.commands_written_before(i64::MAX, |_| true).unwrap(),
            ["credit-1", "credit-2"],
            "the refusal is kept"
        );
        store.close().await.unwrap();
        drop(store);
        assert_eq!(recorded_format(&path), FORMAT);
    }

    #[tokio::test]
    async fn a_newer_format_is_refused_naming_both_and_left_alone() {
        let (_dir, path) = written_at(FORMAT + 1, None).await;
        let refused = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains(&format!("data format {}", FORMAT + 1))
                && message.contains(&format!("format {FORMAT} that this build reads"))
                && message.contains("downgrading is not supported"),
            "{message}"
        );
        assert_eq!(recorded_format(&path), FORMAT + 1);
    }

    #[tokio::test]
    async fn a_format_older_than_the_oldest_upgradable_is_refused() {
        let (_dir, path) = written_at(OLDEST_UPGRADABLE - 1, None).await;
        let refused = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::UnsupportedFormat { found: 3, .. }),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn an_event_whose_type_version_cannot_be_known_stops_the_upgrade_and_changes_nothing() {
        let (_dir, path) = written_at(4, Some(2)).await;
        let refused = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains("cannot be upgraded from 4") && message.contains("stream account-1"),
            "{message}"
        );
        assert_eq!(recorded_format(&path), 4);
    }
}
