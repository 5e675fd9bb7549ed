//! A partition's snapshot: what a replica's store holds of the partition, written as the
//! proposals that would write it again, so that installing one is applying them through the
//! same checks as any entry.
//!
//! A snapshot is made from a [`StoreView`] opened between two applies, so it holds exactly what
//! the applied entries wrote: every stream of the partition (its events grouped back into the
//! appends that wrote them: one per processed command, one per run of events written together
//! without a command id), the processed commands that wrote nothing (refusals) and fences, and
//! the rows of the read-model tables that proposals write ([`ReplicatedTable`], the sagas'),
//! carried by their stream's last append. What a replica derives from its own log (the stream
//! index, aggregate snapshots, projections, log positions) is not in it: installing the
//! appends makes it again.
//!
//! Installing one on a replica that already holds part of the partition (it is behind, never
//! ahead or apart: what it applied is a prefix of the same log) writes only what it lacks:
//! appends it holds are skipped, a run of events it holds in part is cut to the rest, and a
//! command id it knows is not written twice.
//!
//! Cost, today: the stream list is one index seek per stream of the store, and finding the
//! partition's processed commands reads the whole processed-command table; the store is not
//! keyed by partition yet, so a snapshot reads more than its partition.

use std::collections::HashMap;
use std::sync::Arc;

use super::metadata::{METADATA_GROUP, is_metadata_stream};
use super::types::{PartitionId, Proposal, ProposedAppend};
use crate::placement::partition_of;
use crate::store::{
    AppendRequest, EventMetadata, EventStore, NewEvent, ProcessedCommand, RecordedEvent,
    StoreError, StoreView, TableChange,
};

/// A read-model table that proposals write (with an append), whose rows a snapshot carries.
#[derive(Debug, Clone, Copy)]
pub struct ReplicatedTable {
    pub table: &'static str,
    /// The stream a row belongs to (the row goes with the partition of that stream).
    pub stream_of: fn(key: &[u8]) -> Option<String>,
    /// What else installing the row writes (a counter it counts in, a row of another table
    /// kept in step with it).
    pub with_row: fn(key: &[u8], value: &[u8]) -> Vec<TableChange>,
}

/// How a cluster's data is cut into partitions: how many there are, and the tables proposals
/// write besides streams.
#[derive(Debug, Clone)]
pub struct PartitionLayout {
    pub partitions: u32,
    pub tables: Arc<[ReplicatedTable]>,
}

/// Which partition a machine holds, of which layout.
#[derive(Debug, Clone)]
pub struct PartitionShape {
    pub partition: PartitionId,
    pub layout: PartitionLayout,
}

impl PartitionShape {
    pub(crate) fn holds(&self, stream: &str) -> bool {
        match self.partition {
            METADATA_GROUP => is_metadata_stream(stream),
            partition => {
                !is_metadata_stream(stream)
                    && partition_of(stream, self.layout.partitions) == partition
            }
        }
    }
}

/// The proposals that write `view`'s part of the partition again (see the module).
pub(crate) fn proposals_of(
    view: &StoreView,
    shape: &PartitionShape,
) -> Result<Vec<Proposal>, StoreError> {
    let streams = view.streams(|stream| shape.holds(stream))?;
    let mut proposals = Vec::new();
    let mut commands: HashMap<String, Vec<(String, ProcessedCommand)>> = HashMap::new();
    for (id, command) in view.processed_commands(|command| shape.holds(&command.stream))? {
        if command.is_fence() {
            // A fence settles an id as never applied; where it goes among appends is free.
            proposals.push(Proposal::Fence {
                stream: command.stream,
                command_id: id,
            });
        } else {
            commands
                .entry(command.stream.clone())
                .or_default()
                .push((id, command));
        }
    }
    let mut rows: HashMap<String, Vec<TableChange>> = HashMap::new();
    for table in shape.layout.tables.iter() {
        for (key, value) in view.rows(table.table)? {
            let Some(stream) = (table.stream_of)(&key).filter(|s| shape.holds(s)) else {
                continue;
            };
            let changes = rows.entry(stream).or_default();
            changes.extend((table.with_row)(&key, &value));
            changes.push(TableChange::Put {
                table: table.table.into(),
                key,
                value,
            });
        }
    }
    for stream in streams {
        let events = view.events_of(&stream)?;
        let stream_commands = commands.remove(&stream).unwrap_or_default();
        let mut appends = appends_of(&stream, events, stream_commands);
        if let (Some(last), Some(changes)) = (appends.last_mut(), rows.remove(&stream)) {
            last.table_changes = changes;
        }
        proposals.extend(
            appends
                .into_iter()
                .map(|a| Proposal::Append(ProposedAppend(a))),
        );
    }
    // Streams with only refusals recorded (a command refused before the stream had events).
    for (stream, stream_commands) in commands {
        let appends = appends_of(&stream, Vec::new(), stream_commands);
        proposals.extend(
            appends
                .into_iter()
                .map(|a| Proposal::Append(ProposedAppend(a))),
        );
    }
    Ok(proposals)
}

/// `stream`'s events and recorded commands as the appends that wrote them, oldest first.
fn appends_of(
    stream: &str,
    events: Vec<RecordedEvent>,
    mut commands: Vec<(String, ProcessedCommand)>,
) -> Vec<AppendRequest> {
    commands.sort_by_key(|(_, command)| (command.first_version, command.last_version));
    let mut commands = commands.into_iter().peekable();
    let mut events = events.into_iter().peekable();
    let mut appends = Vec::new();
    let mut version = 0;
    loop {
        // Commands that wrote nothing when the stream stood where it stands now.
        while let Some((_, command)) = commands.peek() {
            let wrote_nothing = command.last_version < command.first_version;
            if !(wrote_nothing && command.first_version <= version + 1) {
                break;
            }
            let (id, command) = commands.next().expect("peeked");
            appends.push(nothing_written(stream, version, id, command));
        }
        let Some(first) = events.next() else {
            break;
        };
        // A command whose events are not where it says is dropped rather than misplaced.
        while commands.peek().is_some_and(|(_, command)| {
            command.last_version >= command.first_version && command.first_version < first.version
        }) {
            let (id, command) = commands.next().expect("peeked");
            tracing::warn!(%stream, %id, first_version = command.first_version, "a processed command's events are not in its stream; left out of the snapshot");
        }
        let command = commands
            .next_if(|(_, command)| command.first_version == first.version)
            .filter(|(_, command)| command.last_version >= command.first_version);
        let mut batch = vec![first];
        match &command {
            Some((_, command)) => {
                while let Some(next) = events.next_if(|e| e.version <= command.last_version) {
                    batch.push(next);
                }
            }
            None => {
                // Events written together without a command id share their metadata.
                let next_command_at = commands
                    .peek()
                    .map_or(u64::MAX, |(_, command)| command.first_version);
                while let Some(next) = events.next_if(|e| {
                    e.correlation_id == batch[0].correlation_id
                        && e.causation_id == batch[0].causation_id
                        && e.recorded_at_micros == batch[0].recorded_at_micros
                        && e.version < next_command_at
                }) {
                    batch.push(next);
                }
            }
        }
        let head = &batch[0];
        let metadata = EventMetadata {
            correlation_id: head.correlation_id.clone(),
            causation_id: head.causation_id.clone(),
            recorded_at_micros: Some(head.recorded_at_micros),
        };
        let expected_version = head.version - 1;
        version = batch.last().map_or(version, |event| event.version);
        let (command_id, fingerprint) = match command {
            Some((id, command)) => (Some(id), command.fingerprint),
            None => (None, 0),
        };
        appends.push(AppendRequest {
            stream: stream.to_owned(),
            expected_version,
            events: batch
                .into_iter()
                .map(|event| NewEvent {
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    payload: event.payload,
                })
                .collect(),
            rejection: None,
            command_id,
            fingerprint,
            metadata,
            table_changes: Vec::new(),
        });
    }
    // Left over: commands past the stream's end; kept when they wrote nothing.
    for (id, command) in commands {
        if command.last_version < command.first_version {
            appends.push(nothing_written(stream, version, id, command));
        }
    }
    appends
}

/// The append that records command `id`, which wrote nothing (refused, or a no-op), on
/// `stream` standing at `version`.
fn nothing_written(
    stream: &str,
    version: u64,
    id: String,
    command: ProcessedCommand,
) -> AppendRequest {
    AppendRequest {
        stream: stream.to_owned(),
        expected_version: version,
        events: Vec::new(),
        rejection: command.rejection,
        command_id: Some(id),
        fingerprint: command.fingerprint,
        metadata: EventMetadata::default(),
        table_changes: Vec::new(),
    }
}

/// What of `proposal` a replica whose store is `store` still lacks: `None` when it holds it
/// all; an append it holds in part, cut to the rest.
pub(crate) fn still_lacking(
    store: &EventStore,
    proposal: Proposal,
) -> Result<Option<Proposal>, StoreError> {
    let Proposal::Append(ProposedAppend(mut append)) = proposal else {
        return Ok(Some(proposal));
    };
    if let Some(id) = &append.command_id
        && store.processed_command(id)?.is_some()
    {
        return Ok(None);
    }
    let held = store.stream_version(&append.stream)?;
    let last = append.expected_version + append.events.len() as u64;
    if append.events.is_empty() || held <= append.expected_version {
        return Ok(Some(Proposal::Append(ProposedAppend(append))));
    }
    if held >= last {
        return Ok(None);
    }
    // Held in part: only a run written without a command id can be (a command's events and
    // its record commit together).
    let cut = usize::try_from(held - append.expected_version).unwrap_or(usize::MAX);
    append.events.drain(..cut.min(append.events.len()));
    append.expected_version = held;
    Ok(Some(Proposal::Append(ProposedAppend(append))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: u64, at: i64, causation: Option<&str>) -> RecordedEvent {
        RecordedEvent {
            position: version * 10,
            stream: "s".into(),
            version,
            event_type: "E".into(),
            schema_version: 1,
            recorded_at_micros: at,
            correlation_id: Some("c".into()),
            causation_id: causation.map(str::to_owned),
            payload: vec![version as u8],
        }
    }

    fn command(first: u64, last: u64, rejection: Option<Vec<u8>>) -> ProcessedCommand {
        ProcessedCommand {
            stream: "s".into(),
            fingerprint: 7,
            first_version: first,
            last_version: last,
            first_position: 0,
            rejection,
        }
    }

    #[test]
    fn events_go_back_into_the_appends_that_wrote_them() {
        let events = vec![
            event(1, 100, Some("a")),
            event(2, 100, Some("a")),
            // Written without a command id, two commits.
            event(3, 200, None),
            event(4, 200, None),
            event(5, 300, None),
            event(6, 400, Some("b")),
        ];
        let commands = vec![
            ("b".to_owned(), command(6, 6, None)),
            ("a".to_owned(), command(1, 2, None)),
            // Refused when the stream was at 5.
            ("r".to_owned(), command(6, 5, Some(vec![9]))),
        ];
        let appends = appends_of("s", events, commands);
        let shape: Vec<(u64, usize, Option<&str>)> = appends
            .iter()
            .map(|a| (a.expected_version, a.events.len(), a.command_id.as_deref()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, 2, Some("a")),
                (2, 2, None),
                (4, 1, None),
                (5, 0, Some("r")),
                (5, 1, Some("b")),
            ]
        );
        assert_eq!(appends[3].rejection, Some(vec![9]));
        assert_eq!(appends[1].metadata.recorded_at_micros, Some(200));
        assert_eq!(appends[4].fingerprint, 7);
    }
}
