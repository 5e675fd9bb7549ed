//! [`StoreView`]: the store as of one moment, read at leisure: its streams, their events, the
//! processed commands and read-model rows, all from the same commit.
//!
//! For copying part of a store elsewhere (a partition's snapshot): the copy must hold exactly
//! what one applied point wrote, so every read goes through the two read transactions opened
//! together, however long the copy takes and whatever commits meanwhile.

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableError};

use super::error::StoreError;
use super::index::STREAM_INDEX;
use super::read_model::{Entry, definition, table_name};
use super::tables::{COMMANDS_BY_TIME, LOG, PROCESSED_COMMANDS, ProcessedCommand};
use super::{EventStore, RecordedEvent};

/// The store as of one commit (see the module).
pub struct StoreView {
    index: ReadTransaction,
    log: ReadTransaction,
}

impl std::fmt::Debug for StoreView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreView")
    }
}

impl EventStore {
    /// The store as it stands now, to read from at leisure.
    pub fn view(&self) -> Result<StoreView, StoreError> {
        // Index first: the writer commits the log before the index, so every position this
        // index holds is in the log opened after it. A commit between the two opens can leave
        // events in the log that this index does not list; a caller that copies streams
        // nobody writes while it opens the view (a partition's state machine, its streams'
        // only writer, opens it between two applies) sees them whole.
        let index = self.index.begin_read().map_err(StoreError::storage)?;
        let log = self.db.begin_read().map_err(StoreError::storage)?;
        Ok(StoreView { index, log })
    }
}

impl StoreView {
    /// Every stream with events, in name order, that `keep` keeps: one index seek per stream,
    /// not a read of every event.
    pub fn streams(&self, mut keep: impl FnMut(&str) -> bool) -> Result<Vec<String>, StoreError> {
        let index = self
            .index
            .open_table(STREAM_INDEX)
            .map_err(StoreError::storage)?;
        let mut streams = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let found = match &next {
                None => index.first().map_err(StoreError::storage)?,
                // The first key after every version of the last stream found: its name with a
                // NUL byte after it sorts right after it and before any other.
                Some(last) => {
                    let after = format!("{last}\0");
                    index
                        .range((after.as_str(), 0)..)
                        .map_err(StoreError::storage)?
                        .next()
                        .transpose()
                        .map_err(StoreError::storage)?
                }
            };
            let Some((key, _)) = found else {
                return Ok(streams);
            };
            let stream = key.value().0.to_owned();
            if keep(&stream) {
                streams.push(stream.clone());
            }
            next = Some(stream);
        }
    }

    /// Every event of `stream`, oldest first.
    pub fn events_of(&self, stream: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        let index = self
            .index
            .open_table(STREAM_INDEX)
            .map_err(StoreError::storage)?;
        let log = self.log.open_table(LOG).map_err(StoreError::storage)?;
        super::events_in(&index, &log, stream, 0, u64::MAX)
    }

    /// Every processed command (and fence) that `keep` keeps, by id.
    pub fn processed_commands(
        &self,
        mut keep: impl FnMut(&ProcessedCommand) -> bool,
    ) -> Result<Vec<(String, ProcessedCommand)>, StoreError> {
        let commands = self
            .log
            .open_table(PROCESSED_COMMANDS)
            .map_err(StoreError::storage)?;
        let mut kept = Vec::new();
        for entry in commands.iter().map_err(StoreError::storage)? {
            let (id, bytes) = entry.map_err(StoreError::storage)?;
            let command: ProcessedCommand = ProcessedCommand::decode(id.value(), bytes.value())?;
            if keep(&command) {
                kept.push((id.value().to_owned(), command));
            }
        }
        Ok(kept)
    }

    /// The ids of the processed commands that `holds` covers (by stream) and that wrote
    /// events recorded before `before_micros`: what a retention cut forgets. Read from the
    /// commands' times (`processed_commands_by_time`), up to the bound only.
    ///
    /// A command's time is its first event's recorded time, which every replica of its
    /// partition stores alike (the leader stamps it), so every replica picks the same ids.
    /// Refusals and fences record no time of their own and are kept: a fence must outlive
    /// any late copy of its command, and a refusal's time could only be guessed.
    pub fn commands_written_before(
        &self,
        before_micros: i64,
        mut holds: impl FnMut(&str) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        let times = match self.log.open_table(COMMANDS_BY_TIME) {
            Ok(times) => times,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(StoreError::storage(error)),
        };
        let commands = self
            .log
            .open_table(PROCESSED_COMMANDS)
            .map_err(StoreError::storage)?;
        let mut ids = Vec::new();
        for entry in times
            .range(..(before_micros, ""))
            .map_err(StoreError::storage)?
        {
            let (key, _) = entry.map_err(StoreError::storage)?;
            let (_, id) = key.value();
            let Some(bytes) = commands.get(id).map_err(StoreError::storage)? else {
                continue;
            };
            let command: ProcessedCommand = ProcessedCommand::decode(id, bytes.value())?;
            if holds(&command.stream) {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    /// Every row of read-model table `table` (empty when it was never written).
    pub fn rows(&self, table: &str) -> Result<Vec<Entry>, StoreError> {
        let name = table_name(table);
        let opened = match self.log.open_table(definition(&name)) {
            Ok(opened) => opened,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(StoreError::storage(error)),
        };
        let mut rows = Vec::new();
        for entry in opened.iter().map_err(StoreError::storage)? {
            let (key, value) = entry.map_err(StoreError::storage)?;
            rows.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(rows)
    }
}
