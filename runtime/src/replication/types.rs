//! What a partition's Raft group agrees on: the entries leaders propose (`Proposal`), what
//! applying one answers (`Applied`), and how a replica is named (`Replica`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::{AppendOutcome, AppendRequest, ProcessedCommand, StoreError};

/// A partition: the unit a Raft group replicates (64 per cluster by default).
pub type PartitionId = u32;

/// A Raft node id: one incarnation of one member in the groups it replicates. A member whose
/// data directory is lost comes back under a new incarnation, never its old id (openraft's
/// rule: an id must not return with less than it had acknowledged).
pub type ReplicaId = u64;

openraft::declare_raft_types!(
    /// The Raft types of a partition group.
    pub RaftTypes:
        D = Proposal,
        R = Applied,
        NodeId = ReplicaId,
        Node = Replica,
        // Standard Raft: at most one leader per term, which is what the operations page shows.
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, ReplicaId>,
);

/// How to reach a replica: the member that runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub member: String,
}

impl fmt::Display for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.member)
    }
}

/// One entry a partition's leader proposes. The leader has decided it against its state;
/// every replica applies it through the same checks (expected version, command id), so that
/// what it did is whatever applying it answers, on every replica alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Proposal {
    /// Events for one stream (or a recorded refusal), with the leader's time stamped in.
    Append(ProposedAppend),
    /// Settle a command id that a saga never heard back about (`EventStore::fence_command`).
    Fence { stream: String, command_id: String },
    /// Forget the partition's processed commands whose events were recorded before
    /// `before_micros` (the leader's clock less `store.command_retention_seconds`): the
    /// retention cut (`retention`). Cluster format 2: proposed only once every member reads
    /// it (`format`); a build of format 1 cannot decode it.
    #[cfg(not(feature = "previous-format"))]
    ForgetCommands { before_micros: i64 },
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proposal::Append(append) => write!(
                f,
                "append {} event(s) to {} at version {}",
                append.0.events.len(),
                append.0.stream,
                append.0.expected_version
            ),
            Proposal::Fence { stream, command_id } => {
                write!(f, "fence command {command_id} of {stream}")
            }
            #[cfg(not(feature = "previous-format"))]
            Proposal::ForgetCommands { before_micros } => {
                write!(f, "forget commands written before {before_micros} µs")
            }
        }
    }
}

/// An append as the store takes it. Its time must be stamped (`metadata.recorded_at_micros`):
/// a replica's own clock would make replicas store different events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposedAppend(pub AppendRequest);

/// What applying a proposal answered: the same on every replica that applies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Applied {
    /// Nothing to answer: a blank entry or a membership change.
    Nothing,
    Appended(AppendOutcome),
    /// A fence's answer: what the command produced, or `None` (it never will now).
    Fenced(Option<ProcessedCommand>),
    /// The store refused the append, the same way on every replica.
    Refused(Refusal),
}

/// A refusal that applying the same entry to the same state always gives: a stream that moved
/// on, a command id reused with another command. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    Conflict {
        stream: String,
        expected: u64,
        actual: u64,
    },
    CommandIdReused {
        command_id: String,
        first_stream: String,
        stream: String,
    },
    EmptyAppend {
        stream: String,
    },
    /// The entry's events cannot be encoded (the same bytes fail everywhere).
    Unencodable {
        stream: String,
        reason: String,
    },
}

impl Refusal {
    /// The refusal a store error is, or `None` for an error that says nothing about the entry
    /// (storage failing, the writer gone): those stop the replica, never answer a command.
    pub fn of(error: &StoreError) -> Option<Self> {
        Some(match error {
            StoreError::Conflict {
                stream,
                expected,
                actual,
            } => Refusal::Conflict {
                stream: stream.clone(),
                expected: *expected,
                actual: *actual,
            },
            StoreError::CommandIdReused {
                command_id,
                first_stream,
                stream,
            } => Refusal::CommandIdReused {
                command_id: command_id.clone(),
                first_stream: first_stream.clone(),
                stream: stream.clone(),
            },
            StoreError::EmptyAppend { stream } => Refusal::EmptyAppend {
                stream: stream.clone(),
            },
            StoreError::Encode { stream, source } => Refusal::Unencodable {
                stream: stream.clone(),
                reason: source.to_string(),
            },
            _ => return None,
        })
    }

    /// The store error a caller of the store would have seen.
    pub fn into_store_error(self) -> StoreError {
        match self {
            Refusal::Conflict {
                stream,
                expected,
                actual,
            } => StoreError::Conflict {
                stream,
                expected,
                actual,
            },
            Refusal::CommandIdReused {
                command_id,
                first_stream,
                stream,
            } => StoreError::CommandIdReused {
                command_id,
                first_stream,
                stream,
            },
            Refusal::EmptyAppend { stream } => StoreError::EmptyAppend { stream },
            Refusal::Unencodable { stream, reason } => StoreError::Encode {
                stream,
                source: crate::codec::CodecError::Unencodable { reason },
            },
        }
    }
}
