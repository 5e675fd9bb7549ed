//! What a live aggregate costs in memory: opens accounts through their handle (an open and a
//! credit each, durable, 256 at a time), keeps every one live (no passivation), and prints the
//! process's resident memory at each level, and per account.
//!
//! `cargo bench --bench live_aggregates [-- --levels 10000,100000]`
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
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        store.close().await.unwrap();
    });
}
