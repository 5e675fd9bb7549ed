//! The saga engine on paused time, with a scripted saga kind over a real temp store: each step
//! failing in turn, retries with backoff, timeouts settled by fences, refusals, stuck
//! compensations, circuit breakers, resuming after the supervisor dies.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::store::StoreOptions;
use crate::supervision::{Backoff, Intensity, Strategy, Supervisor, SupervisorSpec};

/// A saga kind whose steps answer from a script: per (step, phase) a queue of outcomes, then
/// `Done`; per step a queue of fence answers, then `NeverApplied`. `HANG` as a failure text
/// makes the call never answer.
#[derive(Default)]
struct Scripted {
    kinds: Vec<StepKind>,
    script: Mutex<HashMap<(usize, &'static str), VecDeque<StepOutcome>>>,
    fences: Mutex<HashMap<usize, VecDeque<Fence>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

const HANG: &str = "hang";

#[derive(Debug, Clone, PartialEq)]
struct Call {
    phase: &'static str,
    step: usize,
    context: StepContext,
    at: Instant,
}

impl Scripted {
    fn new(kinds: &[StepKind]) -> Self {
        Self {
            kinds: kinds.to_vec(),
            ..Self::default()
        }
    }

    fn then(self, step: usize, phase: &'static str, outcomes: Vec<StepOutcome>) -> Self {
        self.script
            .lock()
            .unwrap()
            .entry((step, phase))
            .or_default()
            .extend(outcomes);
        self
    }

    fn fenced(self, step: usize, answers: Vec<Fence>) -> Self {
        self.fences
            .lock()
            .unwrap()
            .entry(step)
            .or_default()
            .extend(answers);
        self
    }

    fn log(&self, phase: &'static str, step: usize, context: StepContext) {
        self.calls.lock().unwrap().push(Call {
            phase,
            step,
            context,
            at: Instant::now(),
        });
    }

    async fn answer(&self, phase: &'static str, step: usize, context: StepContext) -> StepOutcome {
        self.log(phase, step, context);
        let scripted = self
            .script
            .lock()
            .unwrap()
            .get_mut(&(step, phase))
            .and_then(VecDeque::pop_front);
        match scripted {
            Some(StepOutcome::Failed(text)) if text == HANG => std::future::pending().await,
            Some(outcome) => outcome,
            None => StepOutcome::Done,
        }
    }
}

impl SagaKind for Scripted {
    const KIND: &'static str = "scripted";
    const SERVICE: &'static str = "scripts";
    type Input = u32;

    fn steps(&self, _: &u32) -> Vec<Step> {
        self.kinds
            .iter()
            .enumerate()
            .map(|(n, kind)| Step {
                name: format!("s{n}"),
                target: "target",
                kind: *kind,
            })
            .collect()
    }

    async fn act(&self, _: &u32, step: usize, context: StepContext) -> StepOutcome {
        self.answer("act", step, context).await
    }

    async fn compensate(&self, _: &u32, step: usize, _: &str, context: StepContext) -> StepOutcome {
        self.answer("undo", step, context).await
    }

    async fn fence(&self, _: &u32, step: usize, context: StepContext) -> Fence {
        self.log("fence", step, context);
        let scripted = self
            .fences
            .lock()
            .unwrap()
            .get_mut(&step)
            .and_then(VecDeque::pop_front);
        scripted.unwrap_or(Fence::NeverApplied)
    }
}

fn settings() -> SagaSettings {
    let no_jitter = |policy: RetryPolicy| RetryPolicy {
        jitter: 0.0,
        ..policy
    };
    SagaSettings {
        actions: no_jitter(RetryPolicy::ACTIONS),
        compensations: no_jitter(RetryPolicy::COMPENSATIONS),
        step_timeout: Duration::from_secs(1),
        stuck_retry: Duration::from_secs(30),
        // A breaker that never opens here: its own test is in breaker.rs.
        breakers: Breakers::new(BreakerSettings {
            failure_threshold: u32::MAX,
            reset_delay: Duration::from_secs(1),
        }),
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: crate::store::EventStore,
    sagas: Sagas<Scripted>,
    calls: Arc<Mutex<Vec<Call>>>,
    supervisor: ractor::ActorRef<crate::supervision::SupervisorMsg>,
}

async fn supervise(sagas: &Sagas<Scripted>) -> ractor::ActorRef<crate::supervision::SupervisorMsg> {
    Supervisor::start(
        SupervisorSpec {
            name: "saga-test-root".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: vec![sagas.child_spec()],
        },
        None,
    )
    .await
    .unwrap()
}

async fn harness(kind: Scripted) -> Harness {
    harness_with(kind, settings()).await
}

async fn harness_with(kind: Scripted, settings: SagaSettings) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store =
        crate::store::EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
            .await
            .unwrap();
    let calls = kind.calls.clone();
    let sagas = Sagas::new(kind, store.clone(), settings);
    let supervisor = supervise(&sagas).await;
    Harness {
        _dir: dir,
        store,
        sagas,
        calls,
        supervisor,
    }
}

impl Harness {
    /// Starts saga `id` and waits (virtual time) until it finishes or is stuck.
    async fn run(&self, id: &str) -> SagaState<u32> {
        let started = self.sagas.start(id, 7, "tester", "req-1").await.unwrap();
        assert_eq!(started.version, 1, "saga {id} is new");
        self.settled(id).await
    }

    async fn settled(&self, id: &str) -> SagaState<u32> {
        for _ in 0..10_000 {
            let state = self.sagas.get(id).await.unwrap().unwrap();
            if state.phase.is_finished() || state.stuck_at.is_some() {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("saga {id} did not settle");
    }

    fn calls(&self) -> Vec<(&'static str, usize)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|call| (call.phase, call.step))
            .collect()
    }
}

use StepKind::{Compensable, Pivot};

#[tokio::test(start_paused = true)]
async fn each_step_failing_in_turn_compensates_exactly_the_completed_steps_in_reverse() {
    for failing in 0..4 {
        let kind = Scripted::new(&[Compensable, Compensable, Compensable, Pivot]).then(
            failing,
            "act",
            vec![StepOutcome::Refused(format!("no to s{failing}"))],
        );
        let harness = harness(kind).await;
        let state = harness.run("s").await;
        assert_eq!(state.phase, Phase::Compensated);
        assert_eq!(
            state.reason.as_deref(),
            Some(format!("no to s{failing}").as_str())
        );
        let mut expected: Vec<(&str, usize)> = (0..=failing).map(|s| ("act", s)).collect();
        expected.extend((0..failing).rev().map(|s| ("undo", s)));
        assert_eq!(harness.calls(), expected, "step {failing} refused");
        harness.supervisor.stop_and_wait(None, None).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn all_steps_done_completes() {
    let harness = harness(Scripted::new(&[Compensable, Pivot])).await;
    let state = harness.run("ok").await;
    assert_eq!(
        (state.phase, state.status()),
        (Phase::Completed, SagaStatus::Completed)
    );
    assert_eq!(harness.calls(), [("act", 0), ("act", 1)]);
    // The summary tables say so, and nothing is left open.
    let snapshot = harness.store.read_models().unwrap();
    let entries = snapshot.scan(SAGAS_OPEN_TABLE, b"", None, 10).unwrap();
    assert!(entries.is_empty());
    let summary: SagaSummary = crate::codec::decode(
        &snapshot
            .get(SAGAS_TABLE, &crate::bus::key(&["scripted", "ok"]))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary.status, "completed");
    let completed_one = [crate::saga::SagaKindCounts {
        kind: "scripted".into(),
        completed: 1,
        ..Default::default()
    }];
    let counts = crate::saga::saga_counts(&harness.store).unwrap();
    assert_eq!(counts.kinds, completed_one);

    // A store from before the counters: the saga finished, uncounted. Filling counts it, once.
    harness
        .store
        .commit_projection(
            "test-forget-counts",
            0,
            vec![crate::store::TableChange::Delete {
                table: crate::saga::SAGA_COUNTS_TABLE.into(),
                key: crate::bus::key(&["scripted", "completed"]),
            }],
        )
        .await
        .unwrap();
    assert!(
        crate::saga::saga_counts(&harness.store)
            .unwrap()
            .kinds
            .is_empty()
    );
    let filled = crate::saga::fill_saga_counts(&harness.store).await.unwrap();
    assert_eq!(filled, Some(1));
    assert_eq!(
        crate::saga::saga_counts(&harness.store).unwrap().kinds,
        completed_one
    );
    assert_eq!(
        crate::saga::fill_saga_counts(&harness.store).await.unwrap(),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_that_never_answers_is_retried_with_backoff_then_fenced_then_compensated() {
    // Step 1 never answers: each attempt times out after the step timeout (1 s).
    let hang = || StepOutcome::Failed(HANG.into());
    let kind = Scripted::new(&[Compensable, Compensable, Pivot]).then(
        1,
        "act",
        (0..5).map(|_| hang()).collect(),
    );
    let harness = harness(kind).await;
    let state = harness.run("slow").await;
    assert_eq!(state.phase, Phase::Compensated);
    assert_eq!(
        state.reason.as_deref(),
        Some("s1: no answer after 5 attempts")
    );
    assert_eq!(
        harness.calls(),
        [
            ("act", 0),
            ("act", 1),
            ("act", 1),
            ("act", 1),
            ("act", 1),
            ("act", 1),
            ("fence", 1),
            ("undo", 0)
        ]
    );
    // Attempts start 1 s (the timeout) + 100, 200, 400, 800 ms apart.
    let calls = harness.calls.lock().unwrap().clone();
    let gaps: Vec<u128> = calls[1..6]
        .windows(2)
        .map(|pair| (pair[1].at - pair[0].at).as_millis())
        .collect();
    assert_eq!(gaps, [1100, 1200, 1400, 1800]);
    // Every attempt of a step, and its fence, carry the same command id, so the target
    // applies it once, and not after the fence.
    assert!(
        calls[1..7]
            .iter()
            .all(|call| call.context.command_id == "saga:scripted:slow:1:act")
    );
    // Every command of the saga carries the request that started it.
    assert!(
        calls
            .iter()
            .all(|call| call.context.correlation_id == "req-1")
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_target_was_never_reached_compensates_without_a_fence() {
    let down = || StepOutcome::Unavailable("node-3 is down".into());
    let kind = Scripted::new(&[Compensable, Compensable, Pivot]).then(
        1,
        "act",
        (0..5).map(|_| down()).collect(),
    );
    let first = harness(kind).await;
    let state = first.run("never-sent").await;
    assert_eq!(state.phase, Phase::Compensated);
    assert_eq!(state.reason.as_deref(), Some("s1: node-3 is down"));
    assert!(
        !first.calls().contains(&("fence", 1)),
        "nothing was sent, so nothing is settled: {:?}",
        first.calls()
    );
    // One attempt that may have arrived (a timeout) among them is enough to need the fence.
    let kind = Scripted::new(&[Compensable, Compensable, Pivot]).then(
        1,
        "act",
        vec![
            down(),
            StepOutcome::Failed(HANG.into()),
            down(),
            down(),
            down(),
        ],
    );
    let second = harness(kind).await;
    second.run("maybe-sent").await;
    assert!(
        second.calls().contains(&("fence", 1)),
        "{:?}",
        second.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_in_doubt_that_was_applied_goes_on_instead_of_compensating() {
    let hang = || StepOutcome::Failed(HANG.into());
    let kind = Scripted::new(&[Compensable, Compensable, Pivot])
        .then(1, "act", (0..5).map(|_| hang()).collect())
        .fenced(1, vec![Fence::Applied]);
    let harness = harness(kind).await;
    let state = harness.run("late").await;
    assert_eq!(state.phase, Phase::Completed);
    let calls = harness.calls();
    assert_eq!(calls[6..], [("fence", 1), ("act", 2)]);
    assert!(!calls.contains(&("undo", 0)), "nothing applied is undone");
}

#[tokio::test(start_paused = true)]
async fn a_step_in_doubt_that_was_refused_compensates_with_the_refusal() {
    let down = || StepOutcome::Failed("inventory unavailable".into());
    let kind = Scripted::new(&[Compensable, Compensable, Pivot])
        .then(1, "act", (0..5).map(|_| down()).collect())
        .fenced(1, vec![Fence::Refused("out of stock: p1".into())]);
    let harness = harness(kind).await;
    let state = harness.run("refused").await;
    assert_eq!(state.phase, Phase::Compensated);
    assert_eq!(state.reason.as_deref(), Some("out of stock: p1"));
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_fence_fails_stays_in_doubt_stuck_until_it_can_be_settled() {
    let down = || StepOutcome::Failed("inventory unavailable".into());
    let kind = Scripted::new(&[Compensable, Compensable, Pivot])
        .then(1, "act", (0..6).map(|_| down()).collect())
        .fenced(1, vec![Fence::Failed("unreachable".into())]);
    let harness = harness(kind).await;
    let stuck = harness.run("doubt").await;
    assert_eq!(stuck.status(), SagaStatus::Stuck);
    assert_eq!(stuck.phase, Phase::Running { step: 1 });
    assert!(
        stuck.last_error.as_deref().unwrap().contains("unreachable"),
        "{:?}",
        stuck.last_error
    );
    assert!(!harness.calls().contains(&("undo", 0)), "not compensated");
    // 30 s later it tries the step again (fails), then the fence again (now settles it).
    tokio::time::sleep(Duration::from_secs(31)).await;
    let state = harness.settled("doubt").await;
    assert_eq!(state.phase, Phase::Compensated);
    let calls = harness.calls();
    assert_eq!(
        calls[calls.len() - 4..],
        [("fence", 1), ("act", 1), ("fence", 1), ("undo", 0)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_compensation_is_stuck_not_taken_as_undone() {
    let kind = Scripted::new(&[Compensable, Pivot])
        .then(1, "act", vec![StepOutcome::Refused("declined".into())])
        .then(
            0,
            "undo",
            vec![StepOutcome::Refused("account closed".into())],
        );
    let harness = harness(kind).await;
    let stuck = harness.run("undo-refused").await;
    assert_eq!(stuck.status(), SagaStatus::Stuck);
    assert_eq!(stuck.phase, Phase::Compensating { below: 1 });
    assert_eq!(
        stuck.last_error.as_deref(),
        Some("the compensation was refused: account closed")
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_slows_a_step_down_without_using_up_its_attempts() {
    let down = || StepOutcome::Failed("payments unavailable".into());
    let kind = Scripted::new(&[Compensable, Pivot]).then(1, "act", vec![down(), down()]);
    let breaker = BreakerSettings {
        failure_threshold: 1,
        reset_delay: Duration::from_secs(2),
    };
    let harness = harness_with(
        kind,
        SagaSettings {
            breakers: Breakers::new(breaker),
            ..settings()
        },
    )
    .await;
    let state = harness.run("breaker").await;
    assert_eq!(state.phase, Phase::Completed);
    // Each failure opens the breaker; the next attempt waits for its reset delay instead of
    // failing at once against the open breaker.
    let calls = harness.calls.lock().unwrap().clone();
    let at: Vec<_> = calls.iter().filter(|c| c.step == 1).map(|c| c.at).collect();
    assert_eq!(at.len(), 3, "every attempt reached the target");
    assert!(
        at.windows(2)
            .all(|pair| pair[1] - pair[0] >= Duration::from_secs(2))
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_compensates_at_once_without_retry() {
    let kind = Scripted::new(&[Compensable, Compensable, Pivot]).then(
        2,
        "act",
        vec![StepOutcome::Refused("payment declined".into())],
    );
    let harness = harness(kind).await;
    let started = Instant::now();
    let state = harness.run("no").await;
    assert_eq!(state.phase, Phase::Compensated);
    assert_eq!(
        harness.calls(),
        [("act", 0), ("act", 1), ("act", 2), ("undo", 1), ("undo", 0)]
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "no backoff waited"
    );
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_keeps_failing_is_retried_then_stuck_and_retried_slowly() {
    let fail = || StepOutcome::Failed("target down".into());
    let kind = Scripted::new(&[Compensable, Pivot])
        .then(1, "act", vec![StepOutcome::Refused("refused".into())])
        // Ten failed attempts use the retries up; the eleventh (a slow retry) succeeds.
        .then(0, "undo", (0..10).map(|_| fail()).collect());
    let harness = harness(kind).await;
    let stuck = harness.run("stuck").await;
    assert_eq!(stuck.status(), SagaStatus::Stuck);
    assert_eq!(stuck.stuck_at, Some(0));
    assert_eq!(stuck.last_error.as_deref(), Some("target down"));
    let undo_attempts = harness.calls().iter().filter(|c| c.0 == "undo").count();
    assert_eq!(undo_attempts, 10);
    // It stays visible as stuck, open, and is tried again 30 s later.
    let snapshot = harness.store.read_models().unwrap();
    assert_eq!(
        snapshot
            .scan(SAGAS_OPEN_TABLE, b"", None, 10)
            .unwrap()
            .len(),
        1
    );
    // The page's counts show it stuck, with its error, and not yet compensated.
    let counts = crate::saga::saga_counts(&harness.store).unwrap();
    assert_eq!((counts.kinds[0].stuck, counts.kinds[0].compensated), (1, 0));
    assert_eq!(counts.latest_stuck.len(), 1);
    assert_eq!(
        counts.latest_stuck[0].last_error.as_deref(),
        Some("target down")
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    let state = harness.settled("stuck").await;
    assert_eq!(state.phase, Phase::Compensated);
    let counts = crate::saga::saga_counts(&harness.store).unwrap();
    assert_eq!((counts.kinds[0].stuck, counts.kinds[0].compensated), (0, 1));
    assert!(counts.latest_stuck.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_saga_resumes_where_it_was_when_its_supervisor_died() {
    let hang = StepOutcome::Failed(HANG.into());
    let kind = Scripted::new(&[Compensable, Compensable, Pivot]).then(1, "act", vec![hang]);
    let harness = harness(kind).await;
    harness.sagas.start("r", 7, "tester", "test").await.unwrap();
    // Let it do step 0 and hang in step 1, then take the whole tree down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    harness.supervisor.stop_and_wait(None, None).await.unwrap();
    let state = harness.sagas.get("r").await.unwrap().unwrap();
    assert_eq!(state.phase, Phase::Running { step: 1 });
    // Starting it again is a no-op; a new supervisor resumes it from its stream.
    let again = harness.sagas.start("r", 7, "tester", "test").await.unwrap();
    assert_eq!(again.phase, Phase::Running { step: 1 });
    assert_eq!(
        harness.sagas.start("r", 8, "tester", "test").await,
        Err(SagaError::StartedDifferently("r".into())),
        "the same id on other input is refused, not taken for the first saga"
    );
    let supervisor = supervise(&harness.sagas).await;
    let state = harness.settled("r").await;
    assert_eq!(state.phase, Phase::Completed);
    // Step 0 was not done again; step 1 was tried again under its command id.
    assert_eq!(
        harness.calls(),
        [("act", 0), ("act", 1), ("act", 1), ("act", 2)]
    );
    supervisor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_resumed_saga_fences_its_current_step_even_if_no_attempt_was_recorded() {
    // The first attempt at step 1 is out (it hangs) when the node goes down: nothing records
    // it. Resumed, the target is unreachable every time: the step may have been applied by
    // that first attempt, so it is fenced, not compensated blindly.
    let down = || StepOutcome::Unavailable("node-3 is down".into());
    let mut outcomes = vec![StepOutcome::Failed(HANG.into())];
    outcomes.extend((0..5).map(|_| down()));
    let kind = Scripted::new(&[Compensable, Compensable, Pivot]).then(1, "act", outcomes);
    let harness = harness(kind).await;
    harness
        .sagas
        .start("resumed", 7, "tester", "test")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    harness.supervisor.stop_and_wait(None, None).await.unwrap();
    let state = harness.sagas.get("resumed").await.unwrap().unwrap();
    assert_eq!(state.phase, Phase::Running { step: 1 });
    assert_eq!(state.attempts, 0, "the attempt in flight was not recorded");
    let supervisor = supervise(&harness.sagas).await;
    harness.settled("resumed").await;
    assert!(
        harness.calls().contains(&("fence", 1)),
        "{:?}",
        harness.calls()
    );
    supervisor.stop_and_wait(None, None).await.unwrap();
}
