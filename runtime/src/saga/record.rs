//! A saga's own stream: what it has done, as events, and the state they fold into. The saga's
//! actor is its stream's only writer, and writes each transition before acting on it.

use serde::{Deserialize, Serialize};

/// One transition of a saga. Steps are numbered from 0 in the order its kind gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaEvent<I> {
    /// The saga and what it works on; `subject` is who started it.
    Started {
        input: I,
        subject: String,
    },
    StepDone {
        step: usize,
    },
    /// A step failed in a way that may pass (timeout, unavailable): retried after a wait.
    StepFailed {
        step: usize,
        attempt: u32,
        error: String,
    },
    /// A step was refused or gave up: the completed steps are compensated, last first.
    Compensating {
        failed_step: usize,
        reason: String,
    },
    StepCompensated {
        step: usize,
    },
    CompensationFailed {
        step: usize,
        attempt: u32,
        error: String,
    },
    /// Retries are used up on a step that must not be given up (a compensation, or a step
    /// after the point of no return): the saga waits, visible, and is retried slowly.
    Stuck {
        step: usize,
        error: String,
    },
    Completed,
    Compensated,
}

impl<I> SagaEvent<I> {
    pub fn type_name(&self) -> &'static str {
        match self {
            SagaEvent::Started { .. } => "SagaStarted",
            SagaEvent::StepDone { .. } => "SagaStepDone",
            SagaEvent::StepFailed { .. } => "SagaStepFailed",
            SagaEvent::Compensating { .. } => "SagaCompensating",
            SagaEvent::StepCompensated { .. } => "SagaStepCompensated",
            SagaEvent::CompensationFailed { .. } => "SagaCompensationFailed",
            SagaEvent::Stuck { .. } => "SagaStuck",
            SagaEvent::Completed => "SagaCompleted",
            SagaEvent::Compensated => "SagaCompensated",
        }
    }
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Doing step `step` (or, at the step count, about to complete).
    Running {
        step: usize,
    },
    /// Undoing: the steps below `below` that completed are still to compensate, last first.
    Compensating {
        below: usize,
    },
    Completed,
    Compensated,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Completed | Phase::Compensated)
    }
}

/// A saga's status, as the API shows it and `/admin/sagas` filters by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SagaStatus {
    Running,
    Compensating,
    /// Retries are used up where the saga must not give up: retried slowly; someone should look.
    Stuck,
    Completed,
    Compensated,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Stuck => "stuck",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
        }
    }
}

/// A saga's state: its input, phase, and the latest attempt's trouble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState<I> {
    pub input: I,
    pub subject: String,
    /// The request that started it (the `Started` event's correlation id); its steps' commands
    /// carry it too. Empty in a state folded from events alone.
    pub correlation_id: String,
    pub phase: Phase,
    /// Failed attempts at the current step (or compensation).
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Why it is compensating (or was compensated).
    pub reason: Option<String>,
    /// Stuck at this step: retries are used up, and it is retried slowly.
    pub stuck_at: Option<usize>,
    /// The stream's version.
    pub version: u64,
}

impl<I: Clone> SagaState<I> {
    /// The state `events` build, if they begin with `Started`.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a SagaEvent<I>>) -> Option<Self>
    where
        I: 'a,
    {
        let mut events = events.into_iter();
        let Some(SagaEvent::Started { input, subject }) = events.next() else {
            return None;
        };
        let mut state = Self {
            input: input.clone(),
            subject: subject.clone(),
            correlation_id: String::new(),
            phase: Phase::Running { step: 0 },
            attempts: 0,
            last_error: None,
            reason: None,
            stuck_at: None,
            version: 1,
        };
        for event in events {
            state.apply(event);
        }
        Some(state)
    }

    pub fn apply(&mut self, event: &SagaEvent<I>) {
        self.version += 1;
        match event {
            SagaEvent::Started { .. } => {}
            SagaEvent::StepDone { step } => {
                self.phase = Phase::Running { step: step + 1 };
                self.clear_trouble();
            }
            SagaEvent::StepFailed { attempt, error, .. }
            | SagaEvent::CompensationFailed { attempt, error, .. } => {
                self.attempts = *attempt;
                self.last_error = Some(error.clone());
            }
            SagaEvent::Compensating {
                failed_step,
                reason,
            } => {
                self.phase = Phase::Compensating {
                    below: *failed_step,
                };
                self.reason = Some(reason.clone());
                self.clear_trouble();
            }
            SagaEvent::StepCompensated { step } => {
                self.phase = Phase::Compensating { below: *step };
                self.clear_trouble();
            }
            SagaEvent::Stuck { step, error } => {
                self.stuck_at = Some(*step);
                self.last_error = Some(error.clone());
            }
            SagaEvent::Completed => {
                self.phase = Phase::Completed;
                self.clear_trouble();
            }
            SagaEvent::Compensated => {
                self.phase = Phase::Compensated;
                self.clear_trouble();
            }
        }
    }

    fn clear_trouble(&mut self) {
        self.attempts = 0;
        self.last_error = None;
        self.stuck_at = None;
    }

    pub fn status(&self) -> SagaStatus {
        match (self.phase, self.stuck_at) {
            (Phase::Completed, _) => SagaStatus::Completed,
            (Phase::Compensated, _) => SagaStatus::Compensated,
            (_, Some(_)) => SagaStatus::Stuck,
            (Phase::Running { .. }, None) => SagaStatus::Running,
            (Phase::Compensating { .. }, None) => SagaStatus::Compensating,
        }
    }
}

/// A saga as `/admin/sagas` lists it, kept in the saga tables with every transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaSummary {
    pub kind: String,
    pub id: String,
    /// `running`, `compensating`, `stuck`, `completed` or `compensated`.
    pub status: String,
    /// The step it is at (or was last at), by name.
    pub step: Option<String>,
    /// Failed attempts at that step.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Why it compensated.
    pub reason: Option<String>,
    /// Last transition, RFC 3339.
    pub updated_at: String,
}
