//! The actor that drives one saga: each `Advance` does one transition (a step, a
//! compensation, or the end), writes it, and schedules the next.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::log::SagaLog;
use super::record::{Phase, SagaEvent, SagaState};
use super::{Fence, SagaKind, SagaSettings, Step, StepContext, StepKind, StepOutcome, command_id};
use crate::metrics::{SAGA_STEP_RETRIES, SAGAS};
use crate::resilience::{RetryPolicy, noise};

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
    /// Started just now (nothing of it can have been sent), not resumed or restarted.
    pub fresh: bool,
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
    /// Whether an attempt at the current action may have reached its target. Only an action
    /// no attempt of which did can be compensated without a fence. Not stored, and attempts
    /// are recorded only when they fail: a resumed or restarted saga assumes its current
    /// action may have been sent (its first attempt may have gone out just before a crash).
    maybe_applied: bool,
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
        // Its store must hold every transition earlier leaders committed before it acts.
        args.log.read_barrier(&args.id).await?;
        let (log, id) = (args.log.clone(), args.id.clone());
        let saga = args
            .log
            .store()
            .blocking("loading a saga", move || log.load(&id))
            .await??
            .ok_or_else(|| format!("saga {}-{} has no stream", K::KIND, args.id))?;
        let steps = args.kind.steps(&saga.input);
        myself.cast(RunnerMsg::Advance)?;
        Ok(RunnerState {
            maybe_applied: !args.fresh || saga.attempts > 0 || K::STARTER_SENDS_FIRST_STEP,
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
    After(Duration),
}

async fn record<K: SagaKind>(
    state: &mut RunnerState<K>,
    event: SagaEvent<K::Input>,
) -> Result<(), ActorProcessingErr> {
    if matches!(
        event,
        SagaEvent::StepDone { .. } | SagaEvent::Compensating { .. }
    ) {
        state.maybe_applied = false;
    }
    state.saga = state
        .log
        .append(&state.id, &state.saga, event, &state.steps)
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

/// Which of a step's calls to make.
#[derive(Clone, Copy)]
enum Call<'a> {
    Act,
    Undo { reason: &'a str },
}

impl<K: SagaKind> RunnerState<K> {
    fn step_context(&self, step: usize, phase: &str) -> StepContext {
        StepContext {
            command_id: command_id(K::KIND, &self.id, step, phase),
            correlation_id: self.saga.correlation_id.clone(),
        }
    }

    /// The wait before attempt `attempt + 1` at `step`: the policy's backoff, and at least until
    /// the target's circuit breaker lets a call through again, so that an open breaker slows a
    /// saga down instead of using up its attempts at once.
    fn retry_wait(&self, step: usize, attempt: u32, policy: &RetryPolicy) -> Duration {
        let backoff = policy.delay(attempt, noise(self.seed, attempt));
        let target = self.steps[step].target;
        backoff.max(self.settings.breakers.with(target, |b| b.retry_in()))
    }
}

impl<K: SagaKind> RunnerState<K> {
    /// How long a stuck saga waits before trying `step` again: the slow retry delay, spread
    /// over its last fifth by the saga's seed, so that sagas stuck together by one outage do
    /// not all try again at the same instant (their burst of calls alone can open a breaker
    /// and hold them all back another round). When the target's breaker is open, nothing was
    /// tried: the saga comes back once the breaker lets a call through, spread over 2 s.
    fn stuck_wait(&self, step: usize) -> Duration {
        let slow = self.settings.stuck_retry;
        let seed = noise(self.seed, self.saga.attempts);
        let target = self.steps[step].target;
        let breaker = self.settings.breakers.with(target, |b| b.retry_in());
        if !breaker.is_zero() {
            let spread = Duration::from_millis(seed % 2_000);
            return (breaker + spread).min(slow);
        }
        let fifth = (slow / 5).as_millis().max(1) as u64;
        slow - slow / 5 + Duration::from_millis(seed % fifth)
    }
}

/// Tries `step`'s action or compensation once: through the target's circuit breaker, within
/// the step timeout.
async fn attempt<K: SagaKind>(state: &RunnerState<K>, step: usize, call: Call<'_>) -> StepOutcome {
    let target = state.steps[step].target;
    let breakers = &state.settings.breakers;
    if !breakers.with(target, |breaker| breaker.allow()) {
        return StepOutcome::Unavailable(format!("the circuit breaker for {target} is open"));
    }
    let (input, kind, timeout) = (&state.saga.input, &state.kind, state.settings.step_timeout);
    let outcome = match call {
        Call::Act => {
            let context = state.step_context(step, "act");
            tokio::time::timeout(timeout, kind.act(input, step, context)).await
        }
        Call::Undo { reason } => {
            let context = state.step_context(step, "undo");
            tokio::time::timeout(timeout, kind.compensate(input, step, reason, context)).await
        }
    }
    .unwrap_or_else(|_| StepOutcome::Failed(no_answer(timeout)));
    let worked = !matches!(
        outcome,
        StepOutcome::Failed(_) | StepOutcome::Unavailable(_)
    );
    breakers.with(target, |breaker| breaker.record(worked));
    outcome
}

fn no_answer(timeout: Duration) -> String {
    format!("no answer within {} ms", timeout.as_millis())
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
    let outcome = attempt(state, step, Call::Act).await;
    if !matches!(outcome, StepOutcome::Unavailable(_)) {
        state.maybe_applied = true;
    }
    let next = match outcome {
        StepOutcome::Done => {
            record(state, SagaEvent::StepDone { step }).await?;
            Next::Now
        }
        StepOutcome::Refused(reason) if current.kind != StepKind::Retriable => {
            compensate_from(state, step, reason).await?
        }
        // Past the point of no return a refusal cannot be compensated: someone must look.
        StepOutcome::Refused(error) => give_up_stuck(state, step, stuck, error).await?,
        StepOutcome::Failed(error) | StepOutcome::Unavailable(error) => {
            let attempt = state.saga.attempts + 1;
            metrics::counter!(SAGA_STEP_RETRIES, "kind" => K::KIND).increment(1);
            let policy = state.settings.actions;
            if !stuck && !policy.exhausted(attempt) {
                let wait = state.retry_wait(step, attempt, &policy);
                let failed = SagaEvent::StepFailed {
                    step,
                    attempt,
                    error,
                };
                record(state, failed).await?;
                Next::After(wait)
            } else if current.kind == StepKind::Retriable {
                give_up_stuck(state, step, stuck, error).await?
            } else if !state.maybe_applied {
                // No attempt reached the target: nothing to settle.
                let reason = format!("{}: {error}", current.name);
                compensate_from(state, step, reason).await?
            } else {
                settle_in_doubt(state, step, attempt, error).await?
            }
        }
    };
    schedule(myself, next)
}

/// Decides an action whose retries ran out without an answer. It may have been applied, so
/// compensating blindly could leave its effect behind (a reservation never released, money
/// debited and never credited back): the step's command id is fenced at its target first.
async fn settle_in_doubt<K: SagaKind>(
    state: &mut RunnerState<K>,
    step: usize,
    attempts: u32,
    error: String,
) -> Result<Next, ActorProcessingErr> {
    let context = state.step_context(step, "act");
    let timeout = state.settings.step_timeout;
    let fence = state.kind.fence(&state.saga.input, step, context);
    let settled = tokio::time::timeout(timeout, fence)
        .await
        .unwrap_or_else(|_| Fence::Failed(no_answer(timeout)));
    let name = &state.steps[step].name;
    tracing::info!(saga = %state.id, kind = K::KIND, step, ?settled, "in-doubt step settled");
    match settled {
        Fence::Applied => {
            record(state, SagaEvent::StepDone { step }).await?;
            Ok(Next::Now)
        }
        Fence::Refused(reason) => compensate_from(state, step, reason).await,
        // What went wrong in detail stays in the saga's last error, for operators; the reason
        // is shown to customers (an order's cancel reason).
        Fence::NeverApplied => {
            let reason = format!("{name}: no answer after {attempts} attempts");
            compensate_from(state, step, reason).await
        }
        Fence::Failed(why) => {
            let stuck = state.saga.stuck_at.is_some();
            let error = format!("{error}; and its outcome could not be settled: {why}");
            give_up_stuck(state, step, stuck, error).await
        }
    }
}

async fn compensate_from<K: SagaKind>(
    state: &mut RunnerState<K>,
    failed_step: usize,
    reason: String,
) -> Result<Next, ActorProcessingErr> {
    record(
        state,
        SagaEvent::Compensating {
            failed_step,
            reason,
        },
    )
    .await?;
    Ok(Next::Now)
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
    let next = match attempt(state, step, Call::Undo { reason: &reason }).await {
        StepOutcome::Done => {
            record(state, SagaEvent::StepCompensated { step }).await?;
            Next::Now
        }
        // The step cannot be undone (the kind answers Done when there is nothing to undo):
        // what it did stays done, and someone must look.
        StepOutcome::Refused(why) => {
            let error = format!("the compensation was refused: {why}");
            give_up_stuck(state, step, stuck, error).await?
        }
        StepOutcome::Failed(error) | StepOutcome::Unavailable(error) => {
            let attempt = state.saga.attempts + 1;
            metrics::counter!(SAGA_STEP_RETRIES, "kind" => K::KIND).increment(1);
            let policy = state.settings.compensations;
            if stuck {
                Next::After(state.stuck_wait(step))
            } else if policy.exhausted(attempt) {
                give_up_stuck(state, step, stuck, error).await?
            } else {
                let wait = state.retry_wait(step, attempt, &policy);
                let failed = SagaEvent::CompensationFailed {
                    step,
                    attempt,
                    error,
                };
                record(state, failed).await?;
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
        tracing::error!(saga = %state.id, kind = K::KIND, step, error = %error, "saga stuck: retrying slowly; someone should look");
        metrics::counter!(SAGAS, "kind" => K::KIND, "outcome" => "stuck").increment(1);
        record(state, SagaEvent::Stuck { step, error }).await?;
    }
    Ok(Next::After(state.stuck_wait(step)))
}
