//! What a service's tests need, so that no service writes it again (feature `testkit`):
//! - [`decide_all`] and [`fold`]: run commands through `decide`/`apply` without a runtime;
//! - [`check_snapshot_and_tail`] and [`snapshot_property`]: for any aggregate, a snapshot
//!   taken anywhere in its history plus the events after it rebuilds the same state as the
//!   whole history (with the snapshot through the store's codec);
//! - [`TempStore`] and [`start_aggregate`]: a real store in a temp dir, and an aggregate host
//!   on it with a name no other test uses;
//! - [`eventually`]: a bounded poll, instead of a sleep.

use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestRunner};

use crate::aggregate::{Aggregate, Aggregates, EntitySettings, replay};
use crate::codec;
use crate::store::{EventStore, StoreOptions};
use crate::supervision::Intensity;

/// What running commands through `decide`/`apply` gave: the final state, the events of the
/// accepted commands, and the refusals of the others, in order.
#[derive(Debug)]
pub struct Decided<A: Aggregate> {
    pub state: A::State,
    pub events: Vec<A::Event>,
    pub refusals: Vec<A::Error>,
}

/// Runs `commands` in order through `decide`, applying the events of each accepted one.
pub fn decide_all<A: Aggregate>(commands: &[A::Command]) -> Decided<A> {
    decide_all_from::<A>(A::State::default(), commands)
}

/// Like [`decide_all`], from a given state.
pub fn decide_all_from<A: Aggregate>(state: A::State, commands: &[A::Command]) -> Decided<A> {
    let mut decided = Decided {
        state,
        events: Vec::new(),
        refusals: Vec::new(),
    };
    for command in commands {
        match A::decide(&decided.state, command) {
            Ok(events) => {
                for event in &events {
                    A::apply(&mut decided.state, event);
                }
                decided.events.extend(events);
            }
            Err(refusal) => decided.refusals.push(refusal),
        }
    }
    decided
}

/// The state `events` build from nothing.
pub fn fold<A: Aggregate>(events: &[A::Event]) -> A::State {
    replay::<A>(A::State::default(), events)
}

/// Checks that for every split of the history that `commands` produce, the state after the
/// first part (through the codec, as a stored snapshot is) with the rest applied equals the
/// state after all of it.
pub fn check_snapshot_and_tail<A: Aggregate>(commands: &[A::Command]) -> Result<(), String>
where
    A::State: PartialEq,
{
    let events = decide_all::<A>(commands).events;
    let whole = fold::<A>(&events);
    for split in 0..=events.len() {
        let encoded = codec::encode(&fold::<A>(&events[..split]))
            .map_err(|e| format!("the state after {split} events does not encode: {e}"))?;
        let snapshot: A::State = codec::decode(&encoded)
            .map_err(|e| format!("the snapshot after {split} events does not decode: {e}"))?;
        let rebuilt = replay::<A>(snapshot, &events[split..]);
        if rebuilt != whole {
            return Err(format!(
                "snapshot after {split} of {} events + tail gives {rebuilt:?}, the whole history {whole:?}",
                events.len()
            ));
        }
    }
    Ok(())
}

/// [`check_snapshot_and_tail`] as a property: over `cases` command lists from `commands`.
/// Panics with the smallest failing list proptest finds.
pub fn snapshot_property<A: Aggregate>(commands: impl Strategy<Value = Vec<A::Command>>, cases: u32)
where
    A::State: PartialEq,
    A::Command: Clone,
{
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    if let Err(failure) = runner.run(&commands, |commands| {
        check_snapshot_and_tail::<A>(&commands).map_err(proptest::test_runner::TestCaseError::fail)
    }) {
        panic!("{} snapshot + tail property: {failure}", A::KIND);
    }
}

/// A store in a temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempStore {
    pub store: EventStore,
    pub dir: tempfile::TempDir,
}

impl TempStore {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
            .await
            .expect("a store in a fresh temp dir opens");
        Self { store, dir }
    }
}

/// Entity settings for tests: no snapshots unless asked, no passivation.
pub fn test_settings() -> EntitySettings {
    EntitySettings {
        snapshot_every: 0,
        idle_timeout: None,
        call_timeout: Duration::from_secs(5),
    }
}

/// Starts a host for kind `A` on `store` (unsupervised), under a name no other test in this
/// process uses (ractor's registry is process-global), and returns its handle.
pub async fn start_aggregate<A: Aggregate>(
    store: &EventStore,
    settings: EntitySettings,
) -> Aggregates<A> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "{}-test-host-{}",
        A::KIND,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let aggregates = Aggregates::<A>::new(name, store.clone(), settings.call_timeout);
    aggregates
        .spawn(settings, Intensity::default(), None)
        .await
        .expect("a test host starts");
    aggregates
}

/// Polls `check` until it returns `Some`, for at most `timeout`; panics naming `what`
/// otherwise. A bounded wait for something that happens in the background.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    T: Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
