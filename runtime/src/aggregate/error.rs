//! What a command can fail with, as callers see it: the domain's refusal, or one of a few
//! runtime outcomes. No store internals: a [`CommandError`] is plain data that serializes, so
//! that it can cross a node boundary and be matched without knowing redb.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// How a refusal is reported: a stable `type` slug, a title, an HTTP status, and the request
/// field at fault when there is one. The edge turns it into problem+json; the domain chooses it
/// without knowing HTTP machinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub slug: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub field: Option<&'static str>,
}

impl Refusal {
    /// A field with an invalid value (422 `invalid-field`).
    pub const fn invalid_field(field: &'static str) -> Self {
        Self {
            slug: "invalid-field",
            title: "A field has an invalid value",
            status: 422,
            field: Some(field),
        }
    }

    /// A valid request that the resource's current state refuses (409), under the domain's own
    /// slug (`insufficient-funds`, `out-of-stock`).
    pub const fn conflict(slug: &'static str, title: &'static str) -> Self {
        Self {
            slug,
            title,
            status: 409,
            field: None,
        }
    }

    /// The resource does not exist (404 `not-found`).
    pub const fn not_found() -> Self {
        Self {
            slug: "not-found",
            title: "No such resource",
            status: 404,
            field: None,
        }
    }
}

/// A domain's refusal of a command. Serializable: a refusal is stored with its command id, so
/// that a retry gets it again, and it crosses node boundaries.
pub trait DomainError:
    std::error::Error + Clone + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// How the edge reports this refusal.
    fn refusal(&self) -> Refusal;
}

/// Why a command was not applied (or, for a query, not answered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The domain refused the command (insufficient funds, ...). Nothing was written.
    #[error(transparent)]
    Refused(E),
    /// The stream moved while the command ran. Nothing was written; a retry decides afresh.
    #[error("stream {stream} changed while the command ran; retry it")]
    Conflict { stream: String },
    /// The command id was used before for another command. Nothing was written.
    #[error("command id {command_id} was already used for a different command")]
    CommandIdReused { command_id: String },
    /// The aggregate cannot be reached now (its host is restarting, the store cannot be read,
    /// the owner node is down or not serving), so the command was not applied: retry later
    /// with its command id. (A write whose fate is unknown is `Crashed` or `Interrupted`.)
    #[error("{what} is unavailable; retry in {retry_after_ms} ms")]
    Unavailable { what: String, retry_after_ms: u64 },
    /// The call reached the aggregate's owner node, then its link closed before the answer
    /// came back. The command may or may not have been applied: retry with its command id.
    #[error(
        "the call to {stream}'s owner was interrupted ({reason}); retry with the same command id"
    )]
    Interrupted { stream: String, reason: String },
    /// No answer in time. The command may still be applied: retry with its command id.
    #[error("aggregate {stream} did not answer within {after_ms} ms")]
    TimedOut { stream: String, after_ms: u64 },
    /// The aggregate crashed while handling the command and is restarted from its stored
    /// events. The command may or may not have been applied: retry with its command id.
    #[error(
        "aggregate {stream} crashed while handling the command; retry with the same command id"
    )]
    Crashed { stream: String },
    /// Damaged data or a bug: retrying does not help. Logged in full where it happened.
    #[error("internal error: {message}")]
    Internal { message: String },
    /// The node that would write it is short of disk space (under `store.min_free_mib`): the
    /// command was not applied; retry once space is freed. (New variants go at the end: the
    /// codec numbers them.)
    #[error(
        "the node is short of disk space ({free_mib} MiB free, under its {reserve_mib} MiB \
         reserve) and takes no writes until space is freed"
    )]
    DiskFull { free_mib: u64, reserve_mib: u64 },
}

impl<E> CommandError<E> {
    /// Whether retrying (with the same command id) may succeed: timeouts, unavailability,
    /// crashes and conflicts. Refusals and internal errors stay what they are.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CommandError::Unavailable { .. }
                | CommandError::Interrupted { .. }
                | CommandError::TimedOut { .. }
                | CommandError::Crashed { .. }
                | CommandError::Conflict { .. }
                | CommandError::DiskFull { .. }
        )
    }

    /// The same error with the refusal mapped (to put a refusal of one kind into another).
    pub fn map_refused<F>(self, map: impl FnOnce(E) -> F) -> CommandError<F> {
        match self {
            CommandError::Refused(error) => CommandError::Refused(map(error)),
            CommandError::Conflict { stream } => CommandError::Conflict { stream },
            CommandError::CommandIdReused { command_id } => {
                CommandError::CommandIdReused { command_id }
            }
            CommandError::Unavailable {
                what,
                retry_after_ms,
            } => CommandError::Unavailable {
                what,
                retry_after_ms,
            },
            CommandError::TimedOut { stream, after_ms } => {
                CommandError::TimedOut { stream, after_ms }
            }
            CommandError::Crashed { stream } => CommandError::Crashed { stream },
            CommandError::Interrupted { stream, reason } => {
                CommandError::Interrupted { stream, reason }
            }
            CommandError::Internal { message } => CommandError::Internal { message },
            CommandError::DiskFull {
                free_mib,
                reserve_mib,
            } => CommandError::DiskFull {
                free_mib,
                reserve_mib,
            },
        }
    }
}

/// How long a caller should wait before retrying after a store failure.
const STORE_RETRY_AFTER_MS: u64 = 1_000;

/// How long a caller should wait before retrying a partition that has no leader here: about
/// an election's time.
const LEADER_RETRY_AFTER_MS: u64 = 500;

impl<E> CommandError<E> {
    /// What a store error means to a caller. Damaged data is logged here, once, in full.
    /// Used for reads, loads and fences, where a failed store changed nothing (or, for a
    /// fence, can be asked again): a failed write is mapped before this, in the command path
    /// (`Failure::into_command_error`), to "crashed": its outcome is unknown.
    pub(crate) fn from_store(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { stream, .. } => CommandError::Conflict { stream },
            StoreError::CommandIdReused { command_id, .. } => {
                CommandError::CommandIdReused { command_id }
            }
            StoreError::Storage(_) | StoreError::WriterStopped | StoreError::TaskFailed { .. } => {
                CommandError::Unavailable {
                    what: format!("the event store ({error})"),
                    retry_after_ms: STORE_RETRY_AFTER_MS,
                }
            }
            // Refused before anything was written: not applied. The directory is for the
            // node's operators (its /health says it), not for callers.
            StoreError::DiskFull {
                free_bytes,
                min_free_bytes,
                ..
            } => CommandError::DiskFull {
                free_mib: free_bytes / (1024 * 1024),
                reserve_mib: min_free_bytes / (1024 * 1024),
            },
            // Refused before it was proposed: not applied, and a retry may find the leader.
            StoreError::NotLeader { partition, .. } => CommandError::Unavailable {
                what: format!("partition {partition} ({error})"),
                retry_after_ms: LEADER_RETRY_AFTER_MS,
            },
            StoreError::OutcomeUnknown { partition, .. } => CommandError::Interrupted {
                stream: format!("partition {partition}"),
                reason: error.to_string(),
            },
            StoreError::Corrupt { .. }
            | StoreError::CorruptEvent { .. }
            | StoreError::CorruptLog { .. }
            | StoreError::CorruptCommand { .. }
            | StoreError::CorruptRaftLog { .. }
            | StoreError::Encode { .. }
            | StoreError::EmptyAppend { .. }
            | StoreError::NewerFormat { .. }
            | StoreError::LogBehindIndex { .. }
            | StoreError::UnsupportedFormat { .. }
            | StoreError::Upgrade { .. } => {
                tracing::error!(%error, "a command failed on damaged or unencodable data");
                CommandError::Internal {
                    message: error.to_string(),
                }
            }
        }
    }
}
