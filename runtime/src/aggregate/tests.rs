//! Aggregate host tests with a temp store: commands, idempotency, passivation, snapshots,
//! panics in domain code, corrupt streams, aggregates of one partition side by side, and the
//! hosts under a supervisor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;
use crate::store::{EventStore, StoreOptions};
use crate::supervision::{Backoff, Intensity, Strategy, Supervisor, SupervisorSpec};

/// A counter that can be told to panic, or to hold its decision, to exercise the hosts.
#[derive(Debug, Clone)]
pub(crate) struct Counter;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CounterCommand {
    Add(i64),
    /// Panics in `decide`.
    Explode,
    /// Adds [`HELD`] once [`Gate::open`] lets it go: a slow decision.
    Hold,
}

/// What [`CounterCommand::Hold`] adds.
pub(crate) const HELD: i64 = 1_000;
/// An event of this amount panics in `apply` while [`PANIC_IN_APPLY`] is armed (once).
pub(crate) const EXPLODES_IN_APPLY: i64 = 666;
static PANIC_IN_APPLY: AtomicBool = AtomicBool::new(false);

/// Holds every [`CounterCommand::Hold`] decision until opened (one test uses it).
struct Gate {
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

static GATE: Gate = Gate {
    state: Mutex::new((false, false)),
    changed: Condvar::new(),
};

impl Gate {
    /// Blocks the deciding thread until the gate is opened.
    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.changed.notify_all();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }

    fn is_held(&self) -> bool {
        self.state.lock().unwrap().0
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum CounterEvent {
    Added(i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum CounterError {
    #[error("adding zero changes nothing")]
    Zero,
}

impl DomainError for CounterError {
    fn refusal(&self) -> Refusal {
        Refusal::invalid_field("n")
    }
}

impl Aggregate for Counter {
    const KIND: &'static str = "counter";
    const SERVICE: &'static str = "counters";
    type State = i64;
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;

    fn event_type(_: &CounterEvent) -> &'static str {
        "Added"
    }

    fn owner(_: &i64) -> Option<&str> {
        Some("anyone")
    }

    fn decide(_: &i64, command: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
        match command {
            CounterCommand::Add(0) => Err(CounterError::Zero),
            CounterCommand::Add(n) => Ok(vec![CounterEvent::Added(*n)]),
            CounterCommand::Explode => panic!("the counter was told to explode"),
            CounterCommand::Hold => {
                GATE.pass();
                Ok(vec![CounterEvent::Added(HELD)])
            }
        }
    }

    fn apply(state: &mut i64, CounterEvent::Added(n): &CounterEvent) {
        if *n == EXPLODES_IN_APPLY && PANIC_IN_APPLY.swap(false, Ordering::SeqCst) {
            panic!("the counter exploded applying {n}");
        }
        *state += n;
    }
}

/// The counter host's name, as supervision logs show it (two hosts in one process may share
/// it: handles find their host through the host's `Current`, not by name).
const HOST: &str = "counter-host";

fn settings() -> EntitySettings {
    EntitySettings {
        snapshot_every: 0,
        idle_timeout: Some(Duration::from_secs(60)),
        call_timeout: Duration::from_secs(5),
    }
}

async fn start(settings: EntitySettings) -> (tempfile::TempDir, EventStore, Aggregates<Counter>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
        .await
        .unwrap();
    let counters =
        Aggregates::<Counter>::new(HOST.to_owned(), store.clone(), settings.call_timeout);
    counters
        .spawn(settings, Intensity::default(), None)
        .await
        .unwrap();
    (dir, store, counters)
}

fn add(n: i64) -> CommandEnvelope<CounterCommand> {
    CommandEnvelope::new(CounterCommand::Add(n))
}

/// Polls the host's counters until `done` holds; paused time makes each poll free.
async fn wait_for_stats(
    counters: &Aggregates<Counter>,
    done: impl Fn(&HostStats) -> bool,
) -> HostStats {
    for _ in 0..1000 {
        let stats = counters.stats().await.unwrap();
        if done(&stats) {
            return stats;
        }
        // Paused time: a millisecond costs nothing, and lets a restart's backoff pass.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!(
        "host never reached the expected state: {:?}",
        counters.stats().await
    );
}

#[tokio::test(start_paused = true)]
async fn commands_are_decided_appended_and_applied() {
    let (_dir, store, counters) = start(settings()).await;
    let outcome = counters.execute("a", add(5)).await.unwrap();
    assert_eq!(outcome.events, [CounterEvent::Added(5)]);
    assert_eq!(
        outcome.state,
        Versioned {
            state: 5,
            version: 1
        }
    );
    counters.execute("a", add(-2)).await.unwrap();
    assert_eq!(
        counters.get("a").await.unwrap(),
        Versioned {
            state: 3,
            version: 2
        }
    );

    let rejected = counters.execute("a", add(0)).await.unwrap_err();
    assert!(matches!(
        rejected,
        CommandError::Refused(CounterError::Zero)
    ));
    assert_eq!(
        store.stream_version("counter-a").unwrap(),
        2,
        "a rejected command wrote nothing"
    );
    assert_eq!(
        counters.get("b").await.unwrap().version,
        0,
        "other ids are independent"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fence_reports_applied_and_refused_commands_and_bars_unseen_ones() {
    let (_dir, store, counters) = start(settings()).await;
    counters
        .execute("a", add(7).with_command_id("applied"))
        .await
        .unwrap();
    counters
        .execute("a", add(0).with_command_id("refused"))
        .await
        .unwrap_err();
    assert_eq!(counters.fence("a", "applied").await, Ok(Fenced::Applied));
    assert_eq!(
        counters.fence("a", "refused").await,
        Ok(Fenced::Refused(CounterError::Zero))
    );
    assert_eq!(
        counters.fence("a", "unseen").await,
        Ok(Fenced::NeverApplied)
    );
    // The command that was in doubt arrives after all: it is refused, and changes nothing.
    let late = counters
        .execute("a", add(5).with_command_id("unseen"))
        .await
        .unwrap_err();
    assert!(
        matches!(late, CommandError::CommandIdReused { .. }),
        "{late:?}"
    );
    assert_eq!(counters.get("a").await.unwrap().state, 7);
    assert_eq!(store.stream_version("counter-a").unwrap(), 1);
    // An id used on another aggregate is not this one's to settle.
    assert!(matches!(
        counters.fence("b", "applied").await,
        Err(CommandError::CommandIdReused { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_repeated_command_id_returns_the_first_result_and_changes_nothing() {
    let (_dir, store, counters) = start(settings()).await;
    let first = counters
        .execute("a", add(7).with_command_id("cmd-1"))
        .await
        .unwrap();
    counters.execute("a", add(1)).await.unwrap();
    let again = counters
        .execute("a", add(7).with_command_id("cmd-1"))
        .await
        .unwrap();
    assert!(again.deduplicated && !first.deduplicated);
    assert_eq!(again.events, first.events);
    // The retry sees the state the first call produced, not what came after.
    assert_eq!(again.state, first.state);
    assert_eq!(
        counters.get("a").await.unwrap(),
        Versioned {
            state: 8,
            version: 2
        }
    );
    assert_eq!(store.stream_version("counter-a").unwrap(), 2);
    // A refused command with an id is refused again on a retry, even once it would pass.
    let refused = counters
        .execute("z", add(0).with_command_id("cmd-zero"))
        .await
        .unwrap_err();
    assert!(matches!(refused, CommandError::Refused(CounterError::Zero)));
    let again = counters
        .execute("z", add(0).with_command_id("cmd-zero"))
        .await
        .unwrap_err();
    assert!(matches!(again, CommandError::Refused(CounterError::Zero)));
    assert_eq!(store.stream_version("counter-z").unwrap(), 0);
    // The same id with another command is refused, not answered with the first result.
    let reused = counters
        .execute("a", add(9).with_command_id("cmd-1"))
        .await
        .unwrap_err();
    assert!(matches!(reused, CommandError::CommandIdReused { .. }));
    let events = store.read_stream("counter-a").unwrap();
    assert_eq!(events[0].causation_id.as_deref(), Some("cmd-1"));
}

#[tokio::test(start_paused = true)]
async fn an_idle_aggregate_passivates_and_comes_back_identical() {
    let (_dir, _store, counters) = start(settings()).await;
    for n in [3, 4, 5] {
        counters.execute("a", add(n)).await.unwrap();
    }
    let before = counters.get("a").await.unwrap();
    assert_eq!(counters.stats().await.unwrap().live, 1);

    // Activity keeps it alive: at 59 s it is still there.
    tokio::time::sleep(Duration::from_secs(59)).await;
    let stats = counters.stats().await.unwrap();
    assert_eq!((stats.live, stats.passivated), (1, 0));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = wait_for_stats(&counters, |s| s.passivated == 1).await;
    assert_eq!(stats.live, 0);

    assert_eq!(counters.get("a").await.unwrap(), before);
    let stats = counters.stats().await.unwrap();
    assert_eq!(
        (stats.started, stats.live),
        (2, 1),
        "it was loaded again from the store"
    );
}

#[tokio::test(start_paused = true)]
async fn a_command_racing_passivation_is_not_lost() {
    let (_dir, _store, counters) = start(settings()).await;
    counters.execute("a", add(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Sent right as the host's sweep finds it idle: it is served by the live aggregate, or
    // loads it again; either way it is applied exactly once.
    let outcome = counters.execute("a", add(1)).await.unwrap();
    assert_eq!(
        outcome.state,
        Versioned {
            state: 2,
            version: 2
        }
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_plus_tail_loads_the_same_state() {
    let (_dir, store, counters) = start(EntitySettings {
        snapshot_every: 3,
        ..settings()
    })
    .await;
    for n in 1..=7 {
        counters.execute("a", add(n)).await.unwrap();
    }
    let snapshot = store.load_snapshot("counter-a").unwrap().unwrap();
    assert_eq!(snapshot.version, 6);
    let (loaded, snapshot_version) = command::load::<Counter>(&store, "counter-a").unwrap();
    assert_eq!(snapshot_version, 6);
    assert_eq!(
        loaded,
        Versioned {
            state: 28,
            version: 7
        }
    );
    assert_eq!(loaded, counters.get("a").await.unwrap());
}

/// Tries `operation` until a host takes it: a host that just failed answers "unavailable" (not
/// applied) until its supervisor has started the next one.
async fn when_served<T>(
    mut operation: impl AsyncFnMut() -> Result<T, CommandError<CounterError>>,
) -> Result<T, CommandError<CounterError>> {
    for _ in 0..100 {
        match operation().await {
            Err(CommandError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answer => return answer,
        }
    }
    panic!("no host took the operation within a second");
}

async fn get_when_served(counters: &Aggregates<Counter>, id: &str) -> Versioned<i64> {
    when_served(async || counters.get(id).await).await.unwrap()
}

/// Ids of `count` aggregates in the same partition as `id`.
fn neighbours_of(counters: &Aggregates<Counter>, id: &str, count: usize) -> Vec<String> {
    let partition = counters.partition_of(id);
    (0..)
        .map(|n| format!("{id}-{n}"))
        .filter(|other| counters.partition_of(other) == partition)
        .take(count)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_panicking_aggregate_answers_its_caller_and_its_host_restarts_from_the_store() {
    let (_dir, _store, counters) = start(settings()).await;
    counters.execute("a", add(10)).await.unwrap();
    let error = counters
        .execute("a", CommandEnvelope::new(CounterCommand::Explode))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CommandError::Crashed { stream } if stream == "counter-a"),
        "caller got {error:?}"
    );
    let stats = wait_for_stats(&counters, |s| s.restarts == 1).await;
    assert_eq!(
        stats.live, 0,
        "the new host loads aggregates on their next request"
    );
    assert_eq!(
        get_when_served(&counters, "a").await,
        Versioned {
            state: 10,
            version: 1
        }
    );
    assert_eq!(counters.execute("a", add(1)).await.unwrap().state.state, 11);
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_apply_restarts_the_partition_host_without_losing_an_acknowledged_event() {
    let (_dir, _store, counters) = start(EntitySettings {
        idle_timeout: None,
        ..settings()
    })
    .await;
    let [exploding, neighbours @ ..] = &neighbours_of(&counters, "p", 3)[..] else {
        unreachable!()
    };
    let elsewhere = (0..)
        .map(|n| format!("q-{n}"))
        .find(|id| counters.partition_of(id) != counters.partition_of(exploding))
        .unwrap();
    for id in [exploding, &elsewhere].into_iter().chain(neighbours) {
        counters.execute(id, add(1)).await.unwrap();
    }
    assert_eq!(counters.stats().await.unwrap().live, 4);

    // Commands to the neighbours are in flight and queued while one aggregate's apply panics
    // (after its event is durable).
    let mut sent = Vec::new();
    for round in 0..200 {
        if round == 100 {
            // The first half is under way (some answered) before the panic.
            while !sent
                .iter()
                .any(|(_, _, answer): &(_, _, tokio::task::JoinHandle<_>)| answer.is_finished())
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for id in neighbours {
            let (counters, id) = (counters.clone(), id.clone());
            let command_id = format!("{id}/{round}");
            sent.push((
                id.clone(),
                command_id.clone(),
                tokio::spawn(async move {
                    counters
                        .execute(&id, add(1).with_command_id(command_id))
                        .await
                }),
            ));
        }
    }
    PANIC_IN_APPLY.store(true, Ordering::SeqCst);
    let error = counters
        .execute(exploding, add(EXPLODES_IN_APPLY))
        .await
        .unwrap_err();
    assert!(matches!(error, CommandError::Crashed { .. }), "{error:?}");
    let stats = wait_for_stats(&counters, |s| s.restarts == 1).await;
    assert_eq!(
        stats.live, 1,
        "only the other partition's aggregate stayed live"
    );

    let (mut acknowledged, mut interrupted) = (0, 0);
    for (id, command_id, answer) in sent {
        let answer = answer.await.unwrap();
        let history = counters.history(&id).await.unwrap();
        let written = history
            .iter()
            .any(|entry| entry.causation_id.as_deref() == Some(command_id.as_str()));
        match answer {
            Ok(_) => {
                acknowledged += 1;
                assert!(written, "acknowledged command {command_id} was lost");
            }
            Err(CommandError::Unavailable { .. }) => {
                interrupted += 1;
                assert!(
                    !written,
                    "{command_id} was answered unavailable but applied"
                );
            }
            // Aborted with the host: it may or may not have been written.
            Err(CommandError::Crashed { .. }) => interrupted += 1,
            Err(other) => panic!("{command_id}: {other:?}"),
        }
    }
    assert!(acknowledged > 0, "no neighbour's command got through first");
    assert!(
        interrupted > 0,
        "the panic interrupted no neighbour's command"
    );
    for id in neighbours {
        let history = counters.history(id).await.unwrap();
        let total: i64 = history
            .iter()
            .map(|entry| match entry.event {
                CounterEvent::Added(n) => n,
            })
            .sum();
        assert_eq!(get_when_served(&counters, id).await.state, total);
    }
    // The panicking command's event was durable before apply ran: it is there after the restart.
    assert_eq!(
        get_when_served(&counters, exploding).await,
        Versioned {
            state: 1 + EXPLODES_IN_APPLY,
            version: 2
        }
    );
    assert_eq!(counters.get(&elsewhere).await.unwrap().state, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_command_does_not_delay_another_aggregate_of_its_partition() {
    let (_dir, _store, counters) = start(settings()).await;
    let [slow, quick] = &neighbours_of(&counters, "s", 2)[..] else {
        unreachable!()
    };
    counters.execute(slow, add(1)).await.unwrap();
    counters.execute(quick, add(1)).await.unwrap();

    let held = tokio::spawn({
        let (counters, slow) = (counters.clone(), slow.clone());
        async move {
            counters
                .execute(&slow, CommandEnvelope::new(CounterCommand::Hold))
                .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !GATE.is_held() {
        assert!(tokio::time::Instant::now() < deadline, "Hold never decided");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The next command to the slow aggregate waits its turn behind the held one.
    let after_held = tokio::spawn({
        let (counters, slow) = (counters.clone(), slow.clone());
        async move { counters.execute(&slow, add(1)).await }
    });
    // Meanwhile its neighbour is served, command after command.
    for n in 2..=5 {
        let outcome =
            tokio::time::timeout(Duration::from_secs(10), counters.execute(quick, add(1)))
                .await
                .expect("a command to the neighbour waited for the held one")
                .unwrap();
        assert_eq!(outcome.state.state, n);
    }
    assert!(!held.is_finished() && !after_held.is_finished());

    GATE.open();
    let held = held.await.unwrap().unwrap();
    assert_eq!(
        held.state,
        Versioned {
            state: 1 + HELD,
            version: 2
        }
    );
    let after = after_held.await.unwrap().unwrap();
    assert_eq!(
        after.state,
        Versioned {
            state: 2 + HELD,
            version: 3
        },
        "the slow aggregate's commands ran in arrival order"
    );
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_stream_is_reported_with_stream_and_version_without_a_restart_loop() {
    let (_dir, store, counters) = start(EntitySettings {
        idle_timeout: None,
        ..settings()
    })
    .await;
    // Written through a first host, then damaged on disk, then loaded by a fresh host.
    for n in [1, 2, 3] {
        counters.execute("a", add(n)).await.unwrap();
    }
    crate::store::tests::corrupt_event(&store, "counter-a", 2, &[99, 1, 2]);
    let fresh = Aggregates::<Counter>::new(HOST.to_owned(), store, Duration::from_secs(5));
    fresh
        .spawn(settings(), Intensity::default(), None)
        .await
        .unwrap();
    for _ in 0..2 {
        match fresh.execute("a", add(1)).await.unwrap_err() {
            CommandError::Internal { message } => {
                assert!(
                    message.contains("counter-a") && message.contains("version 2"),
                    "{message}"
                );
            }
            other => panic!("expected a corrupt-record error, got {other:?}"),
        }
    }
    let stats = fresh.stats().await.unwrap();
    assert_eq!(
        (stats.live, stats.started, stats.restarts),
        (0, 0, 0),
        "no restart loop"
    );
    // Other aggregates of the kind are unaffected.
    assert_eq!(fresh.execute("b", add(1)).await.unwrap().state.version, 1);
}

#[tokio::test(start_paused = true)]
async fn a_host_that_exceeds_its_intensity_is_restarted_by_its_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
        .await
        .unwrap();
    let host = HOST.to_owned();
    let intensity = Intensity {
        max_restarts: 1,
        within: Duration::from_secs(60),
    };
    let counters = Aggregates::<Counter>::new(host.clone(), store, Duration::from_secs(5));
    let supervisor = Supervisor::start(
        SupervisorSpec {
            name: format!("{host}-supervisor"),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            backoff: Backoff::NONE,
            children: vec![counters.child_spec(settings(), intensity)],
        },
        None,
    )
    .await
    .unwrap();
    counters.execute("a", add(4)).await.unwrap();
    for _ in 0..2 {
        let error = when_served(async || {
            let explode = CommandEnvelope::new(CounterCommand::Explode);
            counters.execute("a", explode).await
        })
        .await
        .unwrap_err();
        assert!(matches!(error, CommandError::Crashed { .. }), "{error:?}");
    }
    // The second panic within the window failed the hosts' supervisor; its own supervisor
    // starts it (and all its partition hosts) again.
    let mut restarted = None;
    for _ in 0..1000 {
        let children = crate::supervision::children_of(&supervisor).await.unwrap();
        if children[0].restarts == 1 && children[0].actor.is_some() {
            restarted = Some(children);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        restarted.is_some(),
        "the supervisor did not restart the hosts"
    );
    assert_eq!(
        counters.stats().await.unwrap().restarts,
        1 + u64::from(crate::config::DEFAULT_PARTITIONS),
        "one partition's host after the first panic, then all of them"
    );
    assert_eq!(
        get_when_served(&counters, "a").await,
        Versioned {
            state: 4,
            version: 1
        }
    );
    supervisor.stop_and_wait(None, None).await.unwrap();
}
