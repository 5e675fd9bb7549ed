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
//! compensates at once. Compensations must succeed: when their retries are used up the saga is
//! `stuck`, with its reason, counted in metrics and listed by `/admin/sagas`, and retried
//! slowly until it succeeds.

mod breaker;
mod log;
mod record;
mod retry;
mod runner;
mod supervisor;

#[cfg(test)]
mod tests;

pub use breaker::{BreakerSettings, Breakers, CircuitBreaker, CircuitState};
pub use log::{SAGAS_OPEN_TABLE, SAGAS_TABLE};
pub use record::{Phase, SagaEvent, SagaState, SagaSummary};
pub use retry::RetryPolicy;
pub use supervisor::Sagas;

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::{CommandError, DomainError};

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
    /// The target refused, for a reason a retry does not change: compensate (or, for a
    /// compensation, nothing left to undo).
    Refused(String),
    /// It may pass: retry after a wait.
    Failed(String),
}

impl StepOutcome {
    /// A command's result as a step's outcome: refusals say why in `refused`'s words, transient
    /// errors are retried, internal ones refuse (retrying damaged data does not help).
    pub fn of<T, E: DomainError>(
        result: Result<T, CommandError<E>>,
        refused: impl FnOnce(E) -> String,
    ) -> Self {
        match result {
            Ok(_) => StepOutcome::Done,
            Err(CommandError::Refused(error)) => StepOutcome::Refused(refused(error)),
            Err(error) if error.is_transient() => StepOutcome::Failed(error.to_string()),
            Err(error) => StepOutcome::Refused(error.to_string()),
        }
    }
}

/// A kind of saga: its steps, and what each step's action and compensation do.
pub trait SagaKind: Send + Sync + 'static {
    /// Streams are `{KIND}-{id}`; also the kind in metrics and `/admin/sagas`.
    const KIND: &'static str;
    /// What one saga works on (an order, a transfer), stored in its `Started` event.
    type Input: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The steps for `input`, in order. The same input always gives the same steps.
    fn steps(&self, input: &Self::Input) -> Vec<Step>;

    /// Does step `step`. Commands it sends carry `command_id`, the same every time this step of
    /// this saga is tried.
    fn act(
        &self,
        input: &Self::Input,
        step: usize,
        command_id: String,
    ) -> impl Future<Output = StepOutcome> + Send;

    /// Undoes step `step` (which completed) because of `reason`.
    fn compensate(
        &self,
        input: &Self::Input,
        step: usize,
        reason: &str,
        command_id: String,
    ) -> impl Future<Output = StepOutcome> + Send;
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

/// The command id of a step's action (`phase` "act") or compensation ("undo").
pub fn command_id(kind: &str, saga: &str, step: usize, phase: &str) -> String {
    format!("saga:{kind}:{saga}:{step}:{phase}")
}

/// Why a saga could not be started or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    #[error("the saga store is unavailable: {0}")]
    Store(String),
    #[error("saga {0} was started before with other input")]
    StartedDifferently(String),
}
