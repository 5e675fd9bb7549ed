//! What a live aggregate costs in memory: opens accounts through their handle (an open and a
//! credit each, durable, 256 at a time), keeps every one live (no passivation), and prints the
//! process's resident memory at each level, and per account.
//!
//! `cargo bench --bench live_aggregates [-- --levels 10000,100000]`
//!
//! With `--features heap-profile` the allocator is dhat's heap profiler instead: the run then
//! prints the heap bytes per account and the allocation sites holding the most bytes once every
//! level is reached (all accounts live), and leaves `dhat-heap.json` for dhat's viewer.
//!
//! Levels are cumulative: the accounts of the first stay live while the next is reached. The
//! store is on disk in a temp dir; its page cache counts in the RSS as a node's would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use playhouse_actors::accounts::{Account, AccountCommand};
use playhouse_runtime::aggregate::{Aggregates, CommandEnvelope, EntitySettings};
use playhouse_runtime::store::{EventStore, StoreOptions};
use playhouse_runtime::supervision::Intensity;

/// jemalloc, as the node runs (nodes/main.rs): the figures are the node's, not glibc's.
#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const CONCURRENCY: usize = 256;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Opens and credits accounts `from..to`, `CONCURRENCY` at a time.
async fn open(accounts: &Aggregates<Account>, from: usize, to: usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (accounts, next) = (accounts.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= to {
                    return;
                }
                let id = format!("{n:08}-0000-7000-8000-000000000000");
                let open = AccountCommand::Open {
                    owner: format!("owner {n}"),
                    initial_balance: 100,
                    subject: "bench".into(),
                };
                accounts
                    .execute(&id, CommandEnvelope::new(open))
                    .await
                    .unwrap();
                let credit = AccountCommand::Credit { amount: 1 };
                accounts
                    .execute(&id, CommandEnvelope::new(credit))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn main() {
    let mut levels = vec![10_000, 100_000];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--levels" {
            let list = args.next().expect("--levels N[,N...]");
            levels = list
                .split(',')
                .map(|n| n.parse().expect("a count"))
                .collect();
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    #[cfg(feature = "heap-profile")]
    let profiler = dhat::Profiler::builder()
        .file_name("dhat-heap.json")
        .build();
    runtime.block_on(async {
        let work = tempfile::tempdir().unwrap();
        let store = EventStore::open(work.path().join("events.redb"), StoreOptions::default())
            .await
            .unwrap();
        let accounts =
            Aggregates::<Account>::new("bench-accounts", store.clone(), Duration::from_secs(60));
        let settings = EntitySettings {
            snapshot_every: 100,
            idle_timeout: None,
            call_timeout: Duration::from_secs(60),
        };
        accounts
            .spawn(settings, Intensity::default(), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = rss_mib();
        println!("live aggregates benchmark: accounts opened and credited through their handle");
        println!(
            "{:>10} {:>10} {:>12} {:>14}",
            "accounts", "RSS MiB", "growth MiB", "KiB/account"
        );
        println!("{:>10} {idle:>10.1} {:>12} {:>14}", 0, "", "");
        let mut reached = 0;
        for level in levels {
            let started = Instant::now();
            open(&accounts, reached, level).await;
            reached = level;
            // Freed memory goes back within about 2 s with the node's jemalloc settings.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rss = rss_mib();
            println!(
                "{level:>10} {rss:>10.1} {:>12.1} {:>14.2}   ({:.1} s to open)",
                rss - idle,
                (rss - idle) * 1024.0 / level as f64,
                started.elapsed().as_secs_f64()
            );
        }
        let stats = accounts.stats().await.unwrap();
        println!("host: {stats:?}");
        #[cfg(feature = "heap-profile")]
        heap_profile::report(profiler, reached);
        store.close().await.unwrap();
    });
}

/// What the heap holds with every account live: the total per account, and the sites that
/// allocated it, from dhat's profile (bytes still allocated at the end, by call stack).
#[cfg(feature = "heap-profile")]
mod heap_profile {
    pub fn report(profiler: dhat::Profiler, accounts: usize) {
        let heap = dhat::HeapStats::get();
        println!(
            "heap: {:.1} MiB in {} blocks, {:.0} bytes and {:.1} blocks per account",
            heap.curr_bytes as f64 / 1048576.0,
            heap.curr_blocks,
            heap.curr_bytes as f64 / accounts as f64,
            heap.curr_blocks as f64 / accounts as f64
        );
        drop(profiler);
        let profile: serde_json::Value =
            serde_json::from_slice(&std::fs::read("dhat-heap.json").unwrap()).unwrap();
        let frames = profile["ftbl"].as_array().unwrap();
        // Sites grouped by the innermost frame of playhouse's code on their stack, with the
        // frame it called (what allocated): one line per place in our code that holds memory.
        let mut places: std::collections::HashMap<String, (u64, u64)> = Default::default();
        for site in profile["pps"].as_array().unwrap() {
            let stack: Vec<Frame> = site["fs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|frame| {
                    Frame::parse(frames[frame.as_u64().unwrap() as usize].as_str().unwrap())
                })
                .collect();
            let place = match stack.iter().position(Frame::is_ours) {
                Some(0) => stack[0].to_string(),
                Some(ours) => format!("{}  ->  {}", stack[ours], stack[ours - 1]),
                None => "(no frame of playhouse's)".to_owned(),
            };
            let held = places.entry(place).or_default();
            held.0 += site["eb"].as_u64().unwrap();
            held.1 += site["ebk"].as_u64().unwrap();
        }
        let mut places: Vec<_> = places.into_iter().collect();
        places.sort_by(|a, b| b.1.0.cmp(&a.1.0));
        println!(
            "{:>8} {:>10} {:>8}  held by (innermost of our frames first)",
            "MiB", "B/account", "blocks"
        );
        for (place, (bytes, blocks)) in places.iter().take(14) {
            println!(
                "{:>8.1} {:>10.1} {blocks:>8}  {place}",
                *bytes as f64 / 1048576.0,
                *bytes as f64 / accounts as f64,
            );
        }
    }

    /// One frame of dhat's: `0x..: function<generics> (dir/file.rs:line:column)`.
    struct Frame {
        function: String,
        file: String,
        line: String,
    }

    impl Frame {
        fn parse(frame: &str) -> Frame {
            let frame = frame.split_once(": ").map_or(frame, |(_, rest)| rest);
            let (function, place) = frame.rsplit_once(" (").unwrap_or((frame, ""));
            let mut place = place.trim_end_matches(')').split(':');
            Frame {
                function: function.split('<').next().unwrap_or("").to_owned(),
                file: place.next().unwrap_or("").to_owned(),
                line: place.next().unwrap_or("").to_owned(),
            }
        }

        /// Whether the frame is in playhouse's code: dhat names files relative to their crate,
        /// so one of ours is a `src/...` file that one of our crates has.
        fn is_ours(&self) -> bool {
            self.file.starts_with("src/")
                && ["runtime", "actors"]
                    .iter()
                    .any(|dir| std::path::Path::new(dir).join(&self.file).exists())
        }
    }

    impl std::fmt::Display for Frame {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let file = self.file.rsplit('/').next().unwrap_or("");
            write!(f, "{}:{} {}", file, self.line, self.function)
        }
    }
}
