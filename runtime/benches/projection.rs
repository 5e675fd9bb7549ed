//! Projection benchmark: how fast a read model is fed from the log, with its checkpoint
//! committed durably with every batch of changes.
//!
//! `cargo bench -p playhouse-runtime --bench projection [-- --events N --dir PATH]`
//!
//! Writes N events (one per append, 256 writers over 1000 streams, group-committed), then
//! rebuilds two projections from position zero, timed: one that keeps a count per stream (a
//! read and a write per event, like orders-by-customer) and one that only passes events over
//! (what every projection does with events of other kinds).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use playhouse_runtime::bus::{Projection, ProjectionError, Tables, key, rebuild_offline};
use playhouse_runtime::store::{
    AppendRequest, EventMetadata, EventStore, NewEvent, RecordedEvent, StoreOptions,
};

const STREAMS: usize = 1000;
const WRITERS: usize = 256;

struct CountPerStream;

impl Projection for CountPerStream {
    fn name(&self) -> &'static str {
        "bench_counts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["bench_counts"]
    }

    fn apply(&self, event: &RecordedEvent, tables: &mut Tables<'_>) -> Result<(), ProjectionError> {
        let key = key(&[&event.stream]);
        let count = tables.get::<u64>("bench_counts", &key)?.unwrap_or(0);
        tables.put("bench_counts", key, &(count + 1))
    }
}

struct PassOver;

impl Projection for PassOver {
    fn name(&self) -> &'static str {
        "bench_pass_over"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn apply(&self, _: &RecordedEvent, _: &mut Tables<'_>) -> Result<(), ProjectionError> {
        Ok(())
    }
}

async fn write_events(store: &EventStore, events: usize) {
    let per_writer = events / WRITERS;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let owned: Vec<usize> = (writer..STREAMS).step_by(WRITERS).collect();
            let mut versions = vec![0u64; owned.len()];
            for n in 0..per_writer {
                let slot = n % owned.len();
                store
                    .append(AppendRequest {
                        stream: format!("bench-{}", owned[slot]),
                        expected_version: versions[slot],
                        events: vec![NewEvent {
                            event_type: "Bench".into(),
                            schema_version: 1,
                            payload: vec![0; 32],
                        }],
                        rejection: None,
                        command_id: None,
                        fingerprint: 0,
                        table_changes: Vec::new(),
                        metadata: EventMetadata::default(),
                    })
                    .await
                    .unwrap();
                versions[slot] += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn main() {
    let mut events = 100_000;
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => {
                events = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--events N")
            }
            "--dir" => dir = PathBuf::from(args.next().expect("--dir PATH")),
            _ => {}
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let work = tempfile::tempdir_in(&dir).unwrap();
        let store = EventStore::open(work.path().join("events.redb"), StoreOptions::default())
            .await
            .unwrap();
        let started = Instant::now();
        write_events(&store, events).await;
        let written = store.next_position().unwrap();
        println!(
            "projection benchmark: {written} events written in {:.1} s ({WRITERS} writers, {STREAMS} streams), data in {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        println!("{:<34} {:>10} {:>12}", "projection", "events", "events/s");
        let projections: [(&str, Arc<dyn Projection>); 2] = [
            ("count per stream (read + write)", Arc::new(CountPerStream)),
            ("pass over (checkpoint only)", Arc::new(PassOver)),
        ];
        for (label, projection) in projections {
            let started = Instant::now();
            let applied = rebuild_offline(&store, projection).await.unwrap();
            let elapsed = started.elapsed().as_secs_f64();
            println!("{label:<34} {applied:>10} {:>12.0}", applied as f64 / elapsed);
        }
        store.close().await.unwrap();
    });
}
