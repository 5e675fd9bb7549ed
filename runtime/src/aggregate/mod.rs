//! Event-sourced aggregates: the pure domain trait, and the actors that run it.
//!
//! A domain service implements [`Aggregate`] (pure `decide` and `apply`, no I/O). The runtime
//! hosts a kind's aggregates partition by partition: a partition host actor keeps its live
//! aggregates' states, loads one on first use (snapshot + tail), runs one command at a time per
//! aggregate (the single writer of its stream) while different aggregates proceed side by side,
//! passivates idle ones, and is restarted from the store when domain code panics. Callers use
//! the [`Aggregates`] handle.

mod command;
mod error;
mod handle;
mod host;
mod hosts;
mod messages;
mod remote;
pub mod upcast;
mod view;

#[cfg(test)]
pub(crate) mod tests;

use crate::position::Position;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use error::{CommandError, DomainError, Refusal};
pub use handle::{Aggregates, HistoryEntry};
pub use host::HostStats;
pub use upcast::{Upcast, Upcaster, Upcasters};
pub use view::StateView;

/// Who may read an aggregate besides its owner and admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only the subject it belongs to (and admins) read and act on it; to anyone else it does
    /// not exist.
    Owner,
    /// Every reader may read it (a shop's catalog); only its owner (and admins) act on it.
    PublicRead,
}

/// The pure logic of one aggregate kind.
///
/// `decide` checks a command against the current state and says what happened (events) or why
/// not (an error); `apply` folds an event into the state. Both are synchronous and free of I/O,
/// so every business rule is a plain unit test. `apply` must accept every event `decide` can
/// produce for that state: replaying the stream always rebuilds the same state.
pub trait Aggregate: fmt::Debug + Clone + Send + Sync + 'static {
    /// Stream names are `"{KIND}-{id}"`; also the label on this kind's metrics.
    const KIND: &'static str;
    /// The service that hosts this kind: placement puts its aggregates on the members hosting
    /// that service.
    const SERVICE: &'static str;
    /// What one of them is called in messages to clients ("no account with id ...").
    const NOUN: &'static str = Self::KIND;
    /// Version of the state's shape in snapshots: bump it when `State` changes shape, and
    /// snapshots of another version are ignored (the state is rebuilt from the events).
    const STATE_VERSION: u16 = 1;
    /// How events stored in older shapes are read (see [`upcast`]); each event type's
    /// current version follows from it.
    const UPCASTERS: Upcasters = Upcasters::NONE;

    /// Who besides the owner may read it.
    const ACCESS: Access = Access::Owner;

    type State: Default + Clone + fmt::Debug + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// Serializable: its encoding fingerprints command ids, and it crosses node boundaries.
    type Command: fmt::Debug + Send + Sync + Serialize + DeserializeOwned + 'static;
    type Event: fmt::Debug + Clone + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// The domain's refusals, each saying how the edge reports it.
    type Error: DomainError;

    /// The stable name stored with the event (for readers that do not decode payloads).
    fn event_type(event: &Self::Event) -> &'static str;
    /// The token subject the aggregate belongs to (the one that created it, or for whom it was
    /// created); `None` while it does not exist.
    fn owner(state: &Self::State) -> Option<&str>;
    fn decide(
        state: &Self::State,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error>;
    fn apply(state: &mut Self::State, event: &Self::Event);
}

/// The stream holding the events of aggregate `id` of kind `A`.
pub fn stream_name<A: Aggregate>(id: &str) -> String {
    format!("{}-{}", A::KIND, id)
}

/// Folds `events` into `state`.
pub fn replay<'a, A: Aggregate>(
    mut state: A::State,
    events: impl IntoIterator<Item = &'a A::Event>,
) -> A::State {
    for event in events {
        A::apply(&mut state, event);
    }
    state
}

/// A command with the ids that travel with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandEnvelope<C> {
    pub command: C,
    /// The same id sent twice is applied once; the second answer is the first one's events.
    pub command_id: Option<String>,
    /// Stored with the events (an HTTP request id, a saga id).
    pub correlation_id: Option<String>,
}

impl<C> CommandEnvelope<C> {
    pub fn new(command: C) -> Self {
        Self {
            command,
            command_id: None,
            correlation_id: None,
        }
    }

    pub fn with_command_id(mut self, id: impl Into<String>) -> Self {
        self.command_id = Some(id.into());
        self
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

/// State at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<S> {
    pub state: S,
    /// Version of the last applied event; 0 for an aggregate with no events.
    pub version: u64,
}

/// What a command did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "", deserialize = ""))]
pub struct CommandOutcome<A: Aggregate> {
    /// The events the command produced (for a repeated command id: the ones it produced first).
    pub events: Vec<A::Event>,
    /// The aggregate's state and version right after the command (for a repeated command id:
    /// right after its first run, so a retry gets the answer the first call got).
    pub state: Versioned<A::State>,
    /// True when the command id had been handled before and nothing new happened.
    pub deduplicated: bool,
    /// Where the command's last event landed, when it wrote any: a read model that has passed
    /// it reflects the command (read your writes; see [`crate::position`]).
    pub position: Option<Position>,
}

/// How a command whose answer was never heard turned out, once fenced (see
/// [`Aggregates::fence`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fenced<E> {
    /// It was applied.
    Applied,
    /// It was refused, with this refusal.
    Refused(E),
    /// It had not been processed, and now never will be.
    NeverApplied,
}

/// Per-kind tuning of live aggregates.
#[derive(Debug, Clone)]
pub struct EntitySettings {
    /// Save a snapshot when this many events were applied since the last one; 0 = never.
    pub snapshot_every: u64,
    /// Passivate a live aggregate after this long without a request; it loads again on its
    /// next one.
    pub idle_timeout: Option<Duration>,
    /// How long a caller waits for an answer.
    pub call_timeout: Duration,
}

impl Default for EntitySettings {
    fn default() -> Self {
        Self {
            snapshot_every: 100,
            idle_timeout: Some(Duration::from_secs(300)),
            call_timeout: Duration::from_secs(5),
        }
    }
}
