//! The actor that drives one saga: each `Advance` does one transition (a step, a
//! compensation, or the end), writes it, and schedules the next.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::log::SagaLog;
use super::record::{Phase, SagaEvent, SagaState};
use super::retry::noise;
use super::{SagaKind, SagaSettings, Step, StepKind, StepOutcome, command_id};
use crate::metrics::{SAGA_STEP_RETRIES, SAGAS};

pub(crate) enum RunnerMsg {
    Advance,
}

impl ractor::Message for RunnerMsg {}

pub(crate) struct Runner<K>(std::marker::PhantomData<fn() -> K>);

impl<K> Runner<K> {
    pub(crate) fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

pub(crate) struct RunnerArgs<K: SagaKind> {
    pub id: String,
    pub kind: Arc<K>,
    pub log: SagaLog<K>,
    pub settings: Arc<SagaSettings>,
}

pub(crate) struct RunnerState<K: SagaKind> {
    id: String,
    kind: Arc<K>,
    log: SagaLog<K>,
    settings: Arc<SagaSettings>,
    saga: SagaState<K::Input>,
    steps: Vec<Step>,
    /// Seeds the jitter of this saga's retries.
    seed: u64,
}

impl<K: SagaKind> Actor for Runner<K> {
    type Msg = RunnerMsg;
    type State = RunnerState<K>;
    type Arguments = RunnerArgs<K>;

    async fn pre_start(
        &self,
        myself: ActorRef<RunnerMsg>,
        args: RunnerArgs<K>,
    ) -> Result<RunnerState<K>, ActorProcessingErr> {
        let (log, id) = (args.log.clone(), args.id.clone());
        let saga = tokio::task::spawn_blocking(move || log.load(&id))
            .await??
            .ok_or_else(|| format!("saga {}-{} has no stream", K::KIND, args.id))?;
        let steps = args.kind.steps(&saga.input);
        myself.cast(RunnerMsg::Advance)?;
        Ok(RunnerState {
            seed: crate::store::fingerprint(args.id.as_bytes()),
            id: args.id,
            kind: args.kind,
            log: args.log,
            settings: args.settings,
            saga,
            steps,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RunnerMsg>,
        RunnerMsg::Advance: RunnerMsg,
        state: &mut RunnerState<K>,
    ) -> Result<(), ActorProcessingErr> {
        match state.saga.phase {
            Phase::Completed | Phase::Compensated => {
                myself.stop(Some("finished".into()));
                Ok(())
            }
            Phase::Running { step } => run_step(&myself, state, step).await,
            Phase::Compensating { below } => compensate_step(&myself, state, below).await,
        }
    }
}

/// What to do after a transition.
enum Next {
    Now,
    After(std::time::Duration),
}

async fn record<K: SagaKind>(
    state: &mut RunnerState<K>,
    event: SagaEvent<K::Input>,
) -> Result<(), ActorProcessingErr> {
    state.saga = state
        .log
        .append(&state.id, Some(&state.saga), event, &state.steps, &state.id)
        .await?;
    Ok(())
}

fn schedule(myself: &ActorRef<RunnerMsg>, next: Next) -> Result<(), ActorProcessingErr> {
    match next {
        Next::Now => myself.cast(RunnerMsg::Advance)?,
        Next::After(wait) => {
            myself.send_after(wait, || RunnerMsg::Advance);
        }
    }
    Ok(())
}

/// Tries `step`'s action (or `undo` its compensation) once: through the target's circuit
/// breaker, within the step timeout.
async fn attempt<K: SagaKind>(
    state: &RunnerState<K>,
    step: usize,
    undo: Option<&str>,
) -> StepOutcome {
    let target = state.steps[step].target;
    let breakers = &state.settings.breakers;
    if !breakers.with(target, |breaker| breaker.allow()) {
        return StepOutcome::Failed(format!("the circuit breaker for {target} is open"));
    }
    let input = &state.saga.input;
    let kind = &state.kind;
    let timeout = state.settings.step_timeout;
    let outcome = match undo {
        None => {
            let id = command_id(K::KIND, &state.id, step, "act");
            tokio::time::timeout(timeout, kind.act(input, step, id)).await
        }
        Some(reason) => {
            let id = command_id(K::KIND, &state.id, step, "undo");
            tokio::time::timeout(timeout, kind.compensate(input, step, reason, id)).await
        }
    }
    .unwrap_or_else(|_| {
        StepOutcome::Failed(format!("no answer within {} ms", timeout.as_millis()))
    });
    let worked = !matches!(outcome, StepOutcome::Failed(_));
    breakers.with(target, |breaker| breaker.record(worked));
    outcome
}

async fn run_step<K: SagaKind>(
    myself: &ActorRef<RunnerMsg>,
    state: &mut RunnerState<K>,
    step: usize,
) -> Result<(), ActorProcessingErr> {
    let Some(current) = state.steps.get(step).cloned() else {
        record(state, SagaEvent::Completed).await?;
        metrics::counter!(SAGAS, "kind" => K::KIND, "outcome" => "completed").increment(1);
        return schedule(myself, Next::Now);
    };
    let stuck = state.saga.stuck_at.is_some();
    let next = match attempt(state, step, None).await {
        StepOutcome::Done => {
            record(state, SagaEvent::StepDone { step }).await?;
            Next::Now
        }
        StepOutcome::Refused(reason) if current.kind != StepKind::Retriable => {
            record(
                state,
                SagaEvent::Compensating {
                    failed_step: step,
                    reason,
                },
            )
            .await?;
            Next::Now
        }
        // Past the point of no return a refusal cannot be compensated: someone must look.
        StepOutcome::Refused(error) => give_up_stuck(state, step, stuck, error).await?,
        StepOutcome::Failed(error) => {
            let attempt = state.saga.attempts + 1;
            metrics::counter!(SAGA_STEP_RETRIES, "kind" => K::KIND).increment(1);
            if stuck {
                Next::After(state.settings.stuck_retry)
            } else if !state.settings.actions.exhausted(attempt) {
                let wait = state
                    .settings
                    .actions
                    .delay(attempt, noise(state.seed, attempt));
                record(
                    state,
                    SagaEvent::StepFailed {
                        step,
                        attempt,
                        error,
                    },
                )
                .await?;
                Next::After(wait)
            } else if current.kind == StepKind::Retriable {
                give_up_stuck(state, step, stuck, error).await?
            } else {
                let reason = format!("{} failed {attempt} times: {error}", current.name);
                record(
                    state,
                    SagaEvent::Compensating {
                        failed_step: step,
                        reason,
                    },
                )
                .await?;
                Next::Now
            }
        }
    };
    schedule(myself, next)
}

async fn compensate_step<K: SagaKind>(
    myself: &ActorRef<RunnerMsg>,
    state: &mut RunnerState<K>,
    below: usize,
) -> Result<(), ActorProcessingErr> {
    // The last completed step below `below` that can be undone.
    let Some(step) = (0..below)
        .rev()
        .find(|&step| state.steps[step].kind == StepKind::Compensable)
    else {
        record(state, SagaEvent::Compensated).await?;
        metrics::counter!(SAGAS, "kind" => K::KIND, "outcome" => "compensated").increment(1);
        return schedule(myself, Next::Now);
    };
    let reason = state.saga.reason.clone().unwrap_or_default();
    let stuck = state.saga.stuck_at.is_some();
    let next = match attempt(state, step, Some(&reason)).await {
        StepOutcome::Done => {
            record(state, SagaEvent::StepCompensated { step }).await?;
            Next::Now
        }
        // The target says there is nothing to undo (already released, already cancelled).
        StepOutcome::Refused(why) => {
            tracing::info!(saga = %state.id, kind = K::KIND, step, why = %why, "compensation not needed");
            record(state, SagaEvent::StepCompensated { step }).await?;
            Next::Now
        }
        StepOutcome::Failed(error) => {
            let attempt = state.saga.attempts + 1;
            metrics::counter!(SAGA_STEP_RETRIES, "kind" => K::KIND).increment(1);
            if stuck {
                Next::After(state.settings.stuck_retry)
            } else if state.settings.compensations.exhausted(attempt) {
                give_up_stuck(state, step, stuck, error).await?
            } else {
                let wait = state
                    .settings
                    .compensations
                    .delay(attempt, noise(state.seed, attempt));
                record(
                    state,
                    SagaEvent::CompensationFailed {
                        step,
                        attempt,
                        error,
                    },
                )
                .await?;
                Next::After(wait)
            }
        }
    };
    schedule(myself, next)
}

/// Marks the saga stuck at `step` (once), to be tried again after the slow retry delay.
async fn give_up_stuck<K: SagaKind>(
    state: &mut RunnerState<K>,
    step: usize,
    already_stuck: bool,
    error: String,
) -> Result<Next, ActorProcessingErr> {
    if !already_stuck {
        tracing::error!(saga = %state.id, kind = K::KIND, step, error = %error, "saga stuck: retries used up; retrying slowly");
        metrics::counter!(SAGAS, "kind" => K::KIND, "outcome" => "stuck").increment(1);
        record(state, SagaEvent::Stuck { step, error }).await?;
    }
    Ok(Next::After(state.settings.stuck_retry))
}
