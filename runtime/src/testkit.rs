//! What a service's tests need, so that no service writes it again (feature `testkit`):
//! - [`decide_all`] and [`fold`]: run commands through `decide`/`apply` without a runtime;
//! - [`check_snapshot_and_tail`] and [`snapshot_property`]: for any aggregate, a snapshot
//!   taken anywhere in its history plus the events after it rebuilds the same state as the
//!   whole history (with the snapshot through the store's codec);
//! - [`TempStore`] and [`start_aggregate`]: a real store in a temp dir, and an aggregate host
//!   on it with a name no other test uses;
//! - [`StoredEvent`], [`read_stored`] and [`fold_stored`]: events as an earlier build stored
//!   them, read through the aggregate's upcasters, and the state they fold to;
//! - [`eventually`]: a bounded poll, instead of a sleep.

use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestRunner};

use crate::aggregate::upcast::{self, ReadError};
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

/// An event as some build stored it: its type, that type's schema version then, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub event_type: String,
    pub schema_version: u16,
    pub payload: Vec<u8>,
}

impl StoredEvent {
    /// The event enum's variant number `variant` (its position, from 0) with `fields` as they
    /// were at `schema_version`: a struct with the variant's fields then, in order.
    pub fn old<T: serde::Serialize>(
        event_type: &str,
        schema_version: u16,
        variant: u32,
        fields: &T,
    ) -> Self {
        Self {
            event_type: event_type.to_owned(),
            schema_version,
            payload: codec::encode_variant(variant, fields).expect("test fields encode"),
        }
    }

    /// `event` as this build stores it.
    pub fn current<A: Aggregate>(event: &A::Event) -> Self {
        Self {
            event_type: A::event_type(event).to_owned(),
            schema_version: upcast::version_of::<A>(event),
            payload: codec::encode(event).expect("the event encodes"),
        }
    }
}

/// Reads `stored` as the runtime reads a stored event: through `A`'s upcasters.
pub fn read_stored<A: Aggregate>(stored: &StoredEvent) -> Result<A::Event, ReadError> {
    upcast::read::<A>(&stored.event_type, stored.schema_version, &stored.payload)
}

/// The state a history stored by earlier builds folds to today. Panics naming the first event
/// that cannot be read.
pub fn fold_stored<A: Aggregate>(stored: &[StoredEvent]) -> A::State {
    let events: Vec<A::Event> = stored
        .iter()
        .enumerate()
        .map(|(at, event)| {
            read_stored::<A>(event).unwrap_or_else(|e| {
                panic!(
                    "event {at} ({} v{}) of {}: {e}",
                    event.event_type,
                    event.schema_version,
                    A::KIND
                )
            })
        })
        .collect();
    fold::<A>(&events)
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

/// Aggregate settings for tests: no snapshots unless asked, no passivation.
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
