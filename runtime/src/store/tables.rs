//! The redb table layout. Only this module and its siblings in `store` open redb tables.
//!
//! Layout, chosen so that a group commit dirties few B-tree pages:
//! - `log`: global position -> encoded [`LogRecord`]. Positions only grow, so every commit
//!   appends to the right edge of this tree: the pages it touches are the rightmost path.
//! - the per-stream index, (stream, version) -> position, lives in a file of its own: see
//!   [`super::index`] for why and how it stays in step with the log.
//! - `snapshots`: stream -> encoded [`SnapshotRecord`] (latest only).
//! - `processed_commands`: command id -> encoded [`ProcessedCommand`].
//! - `processed_commands_by_time`: (its first event's recorded time, command id) for each
//!   processed command that wrote events: what a retention cut forgets, found without
//!   reading every processed command (see [`super::retention`]).
//! - `checkpoints`: subscriber name -> last processed global position.
//! - `meta`: layout facts (the layout version), checked on open.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
pub(crate) const PROCESSED_COMMANDS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("processed_commands");
pub(crate) const COMMANDS_BY_TIME: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("processed_commands_by_time");
pub(crate) const CHECKPOINTS: TableDefinition<&str, u64> = TableDefinition::new("checkpoints");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Where the data format is recorded (see [`super::format`]); named before formats had
/// upgrades, and kept so that older builds still find it and refuse a newer format.
pub(crate) const LAYOUT_VERSION_KEY: &str = "layout_version";

/// One event as it sits in the global log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub schema_version: u16,
    pub recorded_at_micros: i64,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub payload: Vec<u8>,
}

/// What an append with a command id produced, kept so that a retry returns the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessedCommand {
    pub stream: String,
    /// Identifies the command itself, so that an id sent again with another command is caught.
    pub fingerprint: u64,
    pub first_version: u64,
    /// Below `first_version` when the command wrote no events (refused, or a no-op).
    pub last_version: u64,
    pub first_position: u64,
    /// The encoded refusal, when the command was refused: a retry gets the same refusal.
    pub rejection: Option<Vec<u8>>,
}

/// The fingerprint of a fence record: no encoded command hashes to it in practice, and were
/// one to, it would only be refused as a reused id.
const FENCE_FINGERPRINT: u64 = u64::MAX;

impl ProcessedCommand {
    /// Reads the record stored under `command_id`; a damaged one is reported with its id.
    pub(crate) fn decode(command_id: &str, bytes: &[u8]) -> Result<Self, super::StoreError> {
        crate::codec::decode(bytes).map_err(|source| super::StoreError::CorruptCommand {
            command_id: command_id.to_owned(),
            source,
        })
    }

    /// The record that settles a command id as never applied (see
    /// [`super::EventStore::fence_command`]).
    pub(crate) fn fence(stream: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            fingerprint: FENCE_FINGERPRINT,
            first_version: 1,
            last_version: 0,
            first_position: 0,
            rejection: None,
        }
    }

    /// Whether this is a fence record rather than a command's outcome.
    pub fn is_fence(&self) -> bool {
        self.fingerprint == FENCE_FINGERPRINT && self.last_version < self.first_version
    }
}

/// The latest snapshot of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub version: u64,
    pub schema_version: u16,
    pub state: Vec<u8>,
}
