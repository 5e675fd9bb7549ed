//! Store benchmark: durable appends/s and latency for 1, 16 and 256 concurrent writers over 1000
//! aggregates, group commit against the naive one-transaction-per-append baseline, in one run.
//!
//! `cargo bench -p playhouse-runtime --bench store [-- --seconds N --dir PATH]`
//!
//! Each append carries one event and waits until it is durable. Writer `w` owns the aggregates
//! `a` with `a % writers == w`, so there are no version conflicts to retry: the figures are the
//! store's, not the contention's. The naive baseline is the same store with batches capped at
//! one event: one `Durability::Immediate` transaction per append.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use playhouse_runtime::store::{
    AppendRequest, EventMetadata, EventStore, GroupCommitOptions, NewEvent, StoreOptions,
};

const AGGREGATES: usize = 1000;
const WRITER_COUNTS: [usize; 3] = [1, 16, 256];

struct Figures {
    appends: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    /// The B-tree layout after the run, for the largest group-commit row.
    layout: Option<String>,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

async fn run(dir: &std::path::Path, group_commit: bool, writers: usize, seconds: f64) -> Figures {
    let work = tempfile::tempdir_in(dir).unwrap();
    let options = StoreOptions {
        group_commit: GroupCommitOptions {
            max_batch_events: if group_commit { 4096 } else { 1 },
            ..GroupCommitOptions::default()
        },
        ..StoreOptions::default()
    };
    let store = EventStore::open(work.path().join("events.redb"), options)
        .await
        .unwrap();
    let run_for = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let owned: Vec<usize> = (writer..AGGREGATES).step_by(writers).collect();
            let mut versions = vec![0u64; owned.len()];
            let mut latencies = Vec::new();
            let mut turn = 0;
            while started.elapsed() < run_for {
                let slot = turn % owned.len();
                turn += 1;
                let request = AppendRequest {
                    stream: format!("bench-{}", owned[slot]),
                    expected_version: versions[slot],
                    events: vec![NewEvent {
                        event_type: "Credited".into(),
                        schema_version: 1,
                        payload: vec![7; 48],
                    }],
                    command_id: None,
                    fingerprint: 0,
                    table_changes: Vec::new(),
                    rejection: None,
                    metadata: EventMetadata::default(),
                };
                let sent = Instant::now();
                let outcome = store.append(request).await.unwrap();
                latencies.push(sent.elapsed());
                versions[slot] = outcome.last_version;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let mut figures = Figures {
        appends: latencies.len(),
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
        layout: None,
    };
    if group_commit && writers == *WRITER_COUNTS.last().unwrap() {
        let stats = store.layout_stats().unwrap();
        let events = store.next_position().unwrap().max(1);
        figures.layout = Some(format!(
            "layout after {events} events: log height {} / {} leaf pages / {:.1} B per event; \
             stream index height {} / {} leaf pages / {:.1} B per event",
            stats.log_tree_height,
            stats.log_leaf_pages,
            stats.log_stored_bytes as f64 / events as f64,
            stats.index_tree_height,
            stats.index_leaf_pages,
            stats.index_stored_bytes as f64 / events as f64,
        ));
    }
    figures
}

fn main() {
    let mut seconds = 3.0;
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds N")
            }
            "--dir" => dir = PathBuf::from(args.next().expect("--dir PATH")),
            // `cargo bench` passes `--bench`; ignore what we do not know.
            _ => {}
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "store benchmark: {AGGREGATES} aggregates, 1 event per append, durable (fsync) commits, {seconds} s per row, data in {}",
        dir.display()
    );
    println!(
        "{:<14} {:>8} {:>12} {:>10} {:>10} {:>10}",
        "mode", "writers", "appends/s", "p50 ms", "p99 ms", "appends"
    );
    let mut naive_at_max = 0.0;
    let mut group_at_max = 0.0;
    // Printed after the table, so that the table stays one block.
    let mut layout = None;
    for group_commit in [false, true] {
        for writers in WRITER_COUNTS {
            let figures = runtime.block_on(run(&dir, group_commit, writers, seconds));
            let mode = if group_commit {
                "group-commit"
            } else {
                "naive"
            };
            println!(
                "{mode:<14} {writers:>8} {:>12.0} {:>10.3} {:>10.3} {:>10}",
                figures.per_second(),
                figures.p50.as_secs_f64() * 1e3,
                figures.p99.as_secs_f64() * 1e3,
                figures.appends
            );
            layout = figures.layout.clone().or(layout);
            if writers == *WRITER_COUNTS.last().unwrap() {
                if group_commit {
                    group_at_max = figures.per_second();
                } else {
                    naive_at_max = figures.per_second();
                }
            }
        }
    }
    println!(
        "group commit vs naive at {} writers: {:.1}x",
        WRITER_COUNTS.last().unwrap(),
        group_at_max / naive_at_max
    );
    if let Some(layout) = layout {
        println!("{layout}");
    }
}
