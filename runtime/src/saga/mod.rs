//! Durable sagas: an ordered list of steps, each an action and a compensation sent as commands
//! to aggregates (through their `Aggregates<A>` handles), run by an actor per saga under one
//! supervisor per saga kind.
//!
//! A saga is an event-sourced process manager. Its own stream (`{KIND}-{id}`) records every
//! transition, written before it is acted on, so a node that dies mid-saga resumes it where it
//! was: the open sagas are found in the `sagas_open` table (not by scanning the log), and each
//! is driven on to `completed` or, after a refusal, to `compensated`, undoing the completed
//! steps in reverse order. Every command a step sends carries a command id made of the saga's
//! id and the step, so a step resumed or retried is applied once.
//!
//! Failures that may pass (timeouts, unavailable or crashed targets, an open circuit breaker)
//! are retried with backoff and jitter ([`RetryPolicy`]); a refusal (out of stock, declined)
//! compensates at once. An action whose retries run out without an answer is in doubt if any
//! attempt may have reached the target (a timeout, a link lost mid-call; not when every attempt
//! found the target unavailable, which applies nothing). The saga then fences its command id at
//! the target ([`SagaKind::fence`]):
//! the target answers whether it was applied (the saga goes on) or refused, or records that it
//! never will be (the saga compensates, and the late command is refused). A saga never
//! compensates a step that might still apply.
//!
//! Compensations must succeed: when their retries are used up, or the target refuses one, the
//! saga is `stuck`, with its reason, counted in metrics and listed by `/admin/sagas`, and
//! retried slowly.

mod counts;
mod log;
mod record;
mod remote;
mod runner;
mod supervisor;

#[cfg(test)]
mod tests;

pub use crate::resilience::{BreakerSettings, Breakers, CircuitBreaker, CircuitState};
pub use crate::resilience::{RetryPolicy, noise};
pub use counts::{SagaCounts, SagaKindCounts, fill_saga_counts, saga_counts};
pub use log::{SAGA_COUNTS_TABLE, SAGAS_OPEN_TABLE, SAGAS_TABLE, replicated_tables};
pub use record::{Phase, SagaEvent, SagaState, SagaStatus, SagaSummary};
pub use supervisor::Sagas;

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::{CommandEnvelope, CommandError, DomainError, Fenced};

/// What a step is to the saga's course.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Undone by its compensation if a later step fails.
    Compensable,
    /// The point of no return: nothing to undo, and once it is done the saga only goes forward.
    /// If it fails, the steps before it are compensated.
    Pivot,
    /// After the pivot: retried until it succeeds (stuck, and retried slowly, if it keeps
    /// failing), never compensated.
    Retriable,
}

/// One step of a saga, as its kind lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// For people: "reserve 2 x p1", "authorize the payment".
    pub name: String,
    /// The service its commands go to, for that service's circuit breaker.
    pub target: &'static str,
    pub kind: StepKind,
}

/// How a step's action or compensation went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    /// The target refused, for a reason a retry does not change. For an action: compensate.
    /// For a compensation: it cannot be undone (the kind answers `Done` when there is simply
    /// nothing left to undo), so the saga is stuck until someone looks.
    Refused(String),
    /// It may pass, or the outcome is unknown (timeout, crash, a link lost mid-call): retry
    /// after a wait with the same command id.
    Failed(String),
    /// The target could not be reached (down, its breaker open), so the command was not
    /// applied: retry after a wait. An action whose every attempt was this needs no fence.
    Unavailable(String),
}

impl StepOutcome {
    /// A command's result as a step's outcome: refusals say why in `refused`'s words; anything
    /// else that went wrong leaves the outcome unknown, so it is retried (and, for an action,
    /// settled by a fence when the retries run out).
    pub fn of<T, E: DomainError>(
        result: Result<T, CommandError<E>>,
        refused: impl FnOnce(E) -> String,
    ) -> Self {
        match result {
            Ok(_) => StepOutcome::Done,
            Err(CommandError::Refused(error)) => StepOutcome::Refused(refused(error)),
            Err(error @ CommandError::Unavailable { .. }) => {
                StepOutcome::Unavailable(error.to_string())
            }
            Err(error) => StepOutcome::Failed(error.to_string()),
        }
    }
}

/// How an action whose outcome was never heard turned out, once fenced (see
/// [`SagaKind::fence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// It was applied after all: the saga goes on.
    Applied,
    /// It was refused, for this reason: compensate.
    Refused(String),
    /// It was not applied, and now never will be: compensate.
    NeverApplied,
    /// The fence itself could not be set (the target is unreachable): the step stays in doubt.
    Failed(String),
}

impl Fence {
    /// A [`Aggregates::fence`](crate::aggregate::Aggregates::fence) result as a saga's fence.
    pub fn of<E: DomainError>(
        result: Result<Fenced<E>, CommandError<E>>,
        refused: impl FnOnce(E) -> String,
    ) -> Self {
        match result {
            Ok(Fenced::Applied) => Fence::Applied,
            Ok(Fenced::Refused(error)) => Fence::Refused(refused(error)),
            Ok(Fenced::NeverApplied) => Fence::NeverApplied,
            Err(error) => Fence::Failed(error.to_string()),
        }
    }
}

/// What every command of one step carries: the same each time this step of this saga is
/// tried, so that the target applies it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    /// The saga, step and phase (see [`command_id`]).
    pub command_id: String,
    /// The request that started the saga: its events, and its steps' events, share it.
    pub correlation_id: String,
}

impl StepContext {
    /// `command` with this step's command and correlation ids.
    pub fn envelope<C>(&self, command: C) -> CommandEnvelope<C> {
        CommandEnvelope::new(command)
            .with_correlation_id(self.correlation_id.clone())
            .with_command_id(self.command_id.clone())
    }
}

/// A kind of saga: its steps, and what each step's action and compensation do.
pub trait SagaKind: Send + Sync + 'static {
    /// Streams are `{KIND}-{id}`; also the kind in metrics and `/admin/sagas`.
    const KIND: &'static str;
    /// The service whose members run these sagas: each saga runs on the owner of its stream's
    /// partition, among the members hosting this service.
    const SERVICE: &'static str;
    /// What one saga works on (an order, a transfer), stored in its `Started` event.
    type Input: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Whoever starts a saga of this kind sends its first step's command too, with the step's
    /// command id (so that what it created exists when it answers): the saga then never takes
    /// that step for unsent, and settles it by fencing when its own attempts find the target
    /// unavailable.
    const STARTER_SENDS_FIRST_STEP: bool = false;

    /// The steps for `input`, in order. The same input always gives the same steps.
    fn steps(&self, input: &Self::Input) -> Vec<Step>;

    /// Does step `step`, sending its commands with `step_context`'s ids.
    fn act(
        &self,
        input: &Self::Input,
        step: usize,
        step_context: StepContext,
    ) -> impl Future<Output = StepOutcome> + Send;

    /// Undoes step `step` (which completed) because of `reason`. Answers `Done` when there is
    /// nothing left to undo (already released, already refunded), and `Refused` only when the
    /// step cannot be undone.
    fn compensate(
        &self,
        input: &Self::Input,
        step: usize,
        reason: &str,
        step_context: StepContext,
    ) -> impl Future<Output = StepOutcome> + Send;

    /// Settles step `step`'s action after its retries ran out without an answer: fences its
    /// command id at the aggregate it goes to (see
    /// [`Aggregates::fence`](crate::aggregate::Aggregates::fence)), so that it cannot apply
    /// after the saga has compensated. A step that sends several commands fences the one whose
    /// outcome decides it.
    fn fence(
        &self,
        input: &Self::Input,
        step: usize,
        step_context: StepContext,
    ) -> impl Future<Output = Fence> + Send;
}

/// How a kind's sagas retry and wait.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    pub actions: RetryPolicy,
    pub compensations: RetryPolicy,
    /// The longest one attempt at a step may take before it counts as failed.
    pub step_timeout: Duration,
    /// How often a stuck saga is tried again.
    pub stuck_retry: Duration,
    pub breakers: Breakers,
}

impl Default for SagaSettings {
    fn default() -> Self {
        Self {
            actions: RetryPolicy::ACTIONS,
            compensations: RetryPolicy::COMPENSATIONS,
            step_timeout: Duration::from_secs(5),
            stuck_retry: Duration::from_secs(30),
            breakers: Breakers::default(),
        }
    }
}

impl SagaError {
    /// What a failed write of a saga's `Started` says to whoever started it. Only a write
    /// refused before it was proposed (this node does not lead the saga's partition) was
    /// certainly not made; one whose fate was lost (proposed, then the leader changed; the
    /// writer or the disk failed mid-commit) may have started the saga, which then runs.
    pub(crate) fn from_start(error: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match error {
            StoreError::NotLeader { .. } => SagaError::Unavailable(error.to_string()),
            StoreError::OutcomeUnknown { .. }
            | StoreError::WriterStopped
            | StoreError::Storage(_)
            | StoreError::TaskFailed { .. } => SagaError::OutcomeUnknown(error.to_string()),
            other => SagaError::Store(other.to_string()),
        }
    }
}

#[cfg(test)]
mod start_errors {
    use super::SagaError;
    use crate::store::StoreError;

    #[test]
    fn only_a_start_refused_before_it_was_proposed_is_unavailable() {
        let not_leader = StoreError::NotLeader {
            partition: 3,
            leader: Some("node-2".into()),
        };
        assert!(matches!(
            SagaError::from_start(not_leader),
            SagaError::Unavailable(_)
        ));
        let lost = StoreError::OutcomeUnknown {
            partition: 3,
            reason: "the leader changed".into(),
        };
        assert!(matches!(
            SagaError::from_start(lost),
            SagaError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            SagaError::from_start(StoreError::WriterStopped),
            SagaError::OutcomeUnknown(_)
        ));
    }
}

/// The command id of a step's action (`phase` "act") or compensation ("undo").
pub fn command_id(kind: &str, saga: &str, step: usize, phase: &str) -> String {
    format!("saga:{kind}:{saga}:{step}:{phase}")
}

/// Why a saga could not be started or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SagaError {
    #[error("the saga store is unavailable: {0}")]
    Store(String),
    /// Its owner (in a cluster) cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
    #[error("saga {0} was started before with other input")]
    StartedDifferently(String),
    /// Its owner got the request, then stopped answering (timed out, link lost): it may or may
    /// not have started it. Asking again with the same id tells.
    #[error("{0}")]
    OutcomeUnknown(String),
}
