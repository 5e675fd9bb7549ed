//! Projections under their runner: delivery in log order, a crash mid-stream resumed from the
//! checkpoint with nothing lost or counted twice, and waiting for a position.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::*;
use crate::aggregate::tests::{Counter, CounterCommand};
use crate::aggregate::{Aggregates, CommandEnvelope, EntitySettings};
use crate::store::{RecordedEvent, StoreOptions};
use crate::supervision::{Backoff, Intensity, Strategy, Supervisor, SupervisorSpec};

const COUNTS: &str = "test_counts";

/// Counts events per stream; panics once when it reaches `crash_at`, like a bug that bites one
/// time (after a restart it goes on).
struct CountPerStream {
    name: &'static str,
    crash_at: Option<u64>,
    crashed: AtomicBool,
    applied: AtomicU64,
}

impl CountPerStream {
    fn new(name: &'static str, crash_at: Option<u64>) -> Self {
        Self {
            name,
            crash_at,
            crashed: AtomicBool::new(false),
            applied: AtomicU64::new(0),
        }
    }
}

impl Projection for CountPerStream {
    fn name(&self) -> &'static str {
        self.name
    }

    fn tables(&self) -> &'static [&'static str] {
        &[COUNTS]
    }

    fn apply(&self, event: &RecordedEvent, tables: &mut Tables<'_>) -> Result<(), ProjectionError> {
        if self.crash_at == Some(event.position) && !self.crashed.swap(true, Ordering::SeqCst) {
            panic!("the projection was told to crash at {}", event.position);
        }
        self.applied.fetch_add(1, Ordering::SeqCst);
        let key = key(&[&event.stream]);
        let count = tables.get::<u64>(COUNTS, &key)?.unwrap_or(0);
        tables.put(COUNTS, key, &(count + 1))
    }
}

fn counts(store: &EventStore) -> Vec<(String, u64)> {
    counts_in(store, COUNTS)
}

fn counts_in(store: &EventStore, table: &str) -> Vec<(String, u64)> {
    let snapshot = store.read_models().unwrap();
    snapshot
        .scan(table, b"", None, 1000)
        .unwrap()
        .into_iter()
        .map(|(key, value)| {
            (
                String::from_utf8(key).unwrap(),
                crate::codec::decode(&value).unwrap(),
            )
        })
        .collect()
}

async fn write_events(store: &EventStore, host: &str, streams: usize, per_stream: usize) {
    let counters = Aggregates::<Counter>::new(host, store.clone(), Duration::from_secs(5));
    counters
        .spawn(EntitySettings::default(), Intensity::default(), None)
        .await
        .unwrap();
    for round in 0..per_stream {
        for stream in 0..streams {
            counters
                .execute(
                    &format!("s{stream}"),
                    CommandEnvelope::new(CounterCommand::Add(round as i64 + 1)),
                )
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_projection_that_crashes_mid_stream_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
        .await
        .unwrap();
    write_events(&store, "bus-test-counter-host-1", 4, 400).await;
    let bus = Bus::new(store.clone());
    // Crash past the first batch (512 events), so that one batch is committed before it.
    let projection = Arc::new(CountPerStream::new("crashy", Some(700)));
    let supervisor = Supervisor::start(
        SupervisorSpec {
            name: "bus-test-supervisor".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: vec![bus.runner(projection.clone())],
        },
        None,
    )
    .await
    .unwrap();
    let last = store.next_position().unwrap() - 1;
    bus.wait_for("crashy", last, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(projection.crashed.load(Ordering::SeqCst), "it did crash");
    // The batch that crashed was applied again after the restart: more applications than
    // events, yet every count is exact.
    assert!(projection.applied.load(Ordering::SeqCst) > 1600);
    let expected: Vec<(String, u64)> = (0..4).map(|s| (format!("counter-s{s}/"), 400)).collect();
    assert_eq!(counts(&store), expected);
    // And equal to a rebuild from position zero.
    rebuild_offline(&store, Arc::new(CountPerStream::new("crashy", None)))
        .await
        .unwrap();
    assert_eq!(counts(&store), expected);
    supervisor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn new_events_reach_a_caught_up_projection_and_waits_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
        .await
        .unwrap();
    let bus = Bus::new(store.clone());
    let projection = Arc::new(CountPerStream::new("live", None));
    let supervisor = Supervisor::start(
        SupervisorSpec {
            name: "bus-test-supervisor-2".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: vec![bus.runner(projection.clone())],
        },
        None,
    )
    .await
    .unwrap();
    // Nothing in the log: waiting for position 0 times out, saying where it is.
    let behind = bus
        .wait_for("live", 0, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!((behind.applied, behind.wanted), (None, 0));
    write_events(&store, "bus-test-counter-host-2", 2, 3).await;
    bus.wait_for("live", 5, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        counts(&store),
        [("counter-s0/".to_owned(), 3), ("counter-s1/".to_owned(), 3)]
    );
    assert_eq!(bus.projections(), [("live", Some(5))]);
    supervisor.stop_and_wait(None, None).await.unwrap();
}

/// A projection that only claims tables.
struct Claims(&'static str, &'static [&'static str]);

impl Projection for Claims {
    fn name(&self) -> &'static str {
        self.0
    }

    fn tables(&self) -> &'static [&'static str] {
        self.1
    }

    fn apply(&self, _: &RecordedEvent, _: &mut Tables<'_>) -> Result<(), ProjectionError> {
        Ok(())
    }
}

#[test]
fn projections_that_would_share_or_take_the_saga_tables_are_refused() {
    let check = |projections: Vec<Claims>| {
        let projections: Vec<Arc<dyn Projection>> = projections
            .into_iter()
            .map(|p| Arc::new(p) as Arc<dyn Projection>)
            .collect();
        check_projections(&projections)
    };
    assert_eq!(
        check(vec![Claims("a", &["x"]), Claims("b", &["y"])]),
        Ok(())
    );
    let shared = check(vec![Claims("a", &["x"]), Claims("b", &["y", "x"])]).unwrap_err();
    assert!(
        shared.contains("`a` and `b` both claim table `x`"),
        "{shared}"
    );
    let sagas = check(vec![Claims("a", &["sagas_open"])]).unwrap_err();
    assert!(sagas.contains("saga engine"), "{sagas}");
    let twice = check(vec![Claims("a", &["x"]), Claims("a", &["y"])]).unwrap_err();
    assert!(twice.contains("two projections are named `a`"), "{twice}");
}

/// Counts events per stream in a table named like itself (what a list reads), and says that
/// each row is kept up to date by its stream.
struct CountsKeptByStream;

const KEPT: &str = "counts_kept_by_stream";

impl Projection for CountsKeptByStream {
    fn name(&self) -> &'static str {
        KEPT
    }

    fn tables(&self) -> &'static [&'static str] {
        &[KEPT]
    }

    fn apply(&self, event: &RecordedEvent, tables: &mut Tables<'_>) -> Result<(), ProjectionError> {
        let key = key(&[&event.stream]);
        let count = tables.get::<u64>(KEPT, &key)?.unwrap_or(0);
        tables.put(KEPT, key, &(count + 1))
    }

    fn stream_of(&self, table: &str, key: &[u8]) -> Option<String> {
        (table == KEPT).then(|| {
            String::from_utf8_lossy(key)
                .trim_end_matches('/')
                .to_owned()
        })
    }
}

/// The cursors of every page of this node's part of `KEPT`'s list, `limit` at a time.
async fn listed_pages(bus: &Bus, limit: u32) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let request = gather::PageRequest {
            projection: KEPT.into(),
            prefix: Vec::new(),
            cursor: cursor.clone(),
            limit,
            min_position: None,
        };
        let gather::MemberPage::Page { entries, .. } =
            gather::local_page(bus, &request).await.unwrap()
        else {
            panic!("no position was asked for");
        };
        let cursors: Vec<String> = entries.into_iter().map(|(cursor, _)| cursor).collect();
        if cursors.is_empty() {
            return pages;
        }
        cursor = cursors.last().cloned();
        pages.push(cursors);
    }
}

#[tokio::test]
async fn a_node_lists_only_the_rows_of_streams_it_keeps_up_to_date_and_pages_read_past_the_others()
{
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
        .await
        .unwrap();
    write_events(&store, "bus-test-counter-host-3", 6, 2).await;
    let bus = Bus::new(store.clone());
    let supervisor = Supervisor::start(
        SupervisorSpec {
            name: "bus-test-supervisor-3".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: vec![bus.runner(Arc::new(CountsKeptByStream))],
        },
        None,
    )
    .await
    .unwrap();
    bus.wait_for(KEPT, 11, Duration::from_secs(10))
        .await
        .unwrap();
    let all: Vec<String> = (0..6).map(|s| format!("counter-s{s}")).collect();
    assert_eq!(listed_pages(&bus, 10).await, [all]);
    // Streams 1, 2, 3 and 5 moved off this node: their rows stay in its tables, unlisted, and
    // a page of two reads on past them rather than end short.
    bus.list_only(|stream| stream == "counter-s0" || stream == "counter-s4");
    assert_eq!(
        listed_pages(&bus, 2).await,
        [vec!["counter-s0".to_owned(), "counter-s4".to_owned()]]
    );
    assert_eq!(
        listed_pages(&bus, 1).await,
        [vec!["counter-s0".to_owned()], vec!["counter-s4".to_owned()]]
    );
    assert_eq!(counts_in(&store, KEPT).len(), 6, "the rows are kept");
    supervisor.stop_and_wait(None, None).await.unwrap();
}
