//! Aggregate actor tests on paused time with a temp store: commands, idempotency, passivation,
//! snapshots, crash recovery, corrupt streams, and the host under a supervisor.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;
use crate::store::{EventStore, StoreOptions};
use crate::supervision::{Backoff, Intensity, Strategy, Supervisor, SupervisorSpec};

/// A counter that can be told to panic, to exercise the actor machinery.
#[derive(Debug, Clone)]
pub(crate) struct Counter;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CounterCommand {
    Add(i64),
    Explode,
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
        }
    }

    fn apply(state: &mut i64, CounterEvent::Added(n): &CounterEvent) {
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
        tokio::task::yield_now().await;
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
    // Sent right as the entity reports itself idle: it lands on the old entity before its
    // Passivate, or waits for the new one; either way it is applied exactly once.
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
    let (loaded, snapshot_version) = entity::load::<Counter>(&store, "counter-a").unwrap();
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

#[tokio::test(start_paused = true)]
async fn a_panicking_aggregate_answers_its_caller_and_restarts_with_its_state() {
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
    assert_eq!(stats.live, 1, "the crashed aggregate was restarted at once");
    assert_eq!(
        counters.get("a").await.unwrap(),
        Versioned {
            state: 10,
            version: 1
        }
    );
    assert_eq!(counters.execute("a", add(1)).await.unwrap().state.state, 11);
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
        let error = counters
            .execute("a", CommandEnvelope::new(CounterCommand::Explode))
            .await
            .unwrap_err();
        assert!(matches!(error, CommandError::Crashed { .. }));
    }
    // The second crash failed the host; its supervisor starts a new one under the same name.
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
        "the supervisor did not restart the host"
    );
    let stats = counters.stats().await.unwrap();
    assert_eq!(stats.restarts, 0, "a new host starts with fresh counters");
    assert_eq!(
        counters.get("a").await.unwrap(),
        Versioned {
            state: 4,
            version: 1
        }
    );
    supervisor.stop_and_wait(None, None).await.unwrap();
}
