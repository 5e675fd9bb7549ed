//! The bank test, Jepsen style, on three real nodes: concurrent clients send transfers,
//! credits and balance reads through all three edges while a nemesis kills (-9) and restarts
//! nodes, cuts one off with iptables and pauses one with SIGSTOP; then the checker of
//! `support::ledger` reads every account's history and every transfer and asserts that money
//! was conserved, never negative, and every transfer moved its amount once or not at all.
//!
//! `BANK_SECONDS=N` runs the nemesis for at least N seconds (default: one round of its 25
//! faults); `BANK_SEED=N` repeats a schedule (the seed is printed); `BANK_JOURNAL=raft` runs it
//! on replicated partitions (`store.journal = "raft"`). Not `PLAYHOUSE_*`: nodes refuse
//! overrides that name no config key.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::api::Http;
use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::ledger::{self, History, Rng};
use crate::support::netns::{self, CutOff};

const ACCOUNTS: usize = 9;
const CLIENTS: usize = 6;
/// One round of faults: the minimum of each.
const KILLS: usize = 20;
const CUTS: usize = 3;
const PAUSES: usize = 2;

/// Each node's edge address, as of its last start.
type Edges = Arc<RwLock<Vec<String>>>;

#[test]
fn money_is_conserved_through_kills_pauses_and_partitions() {
    if !netns::inside() {
        return netns::rerun_inside("bank::money_is_conserved_through_kills_pauses_and_partitions");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bank());
}

async fn bank() {
    let seed = std::env::var("BANK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| support::now() ^ u64::from(std::process::id()));
    let seconds: u64 = std::env::var("BANK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    println!("bank test: BANK_SEED={seed} BANK_SECONDS={seconds}");
    let started = Instant::now();
    let mut options = ClusterOptions::default();
    // The clients and the checker are one subject: the per-subject rate limit is not tested here.
    options.env.extend([
        (
            "PLAYHOUSE_RATE_LIMIT__REQUESTS_PER_SECOND".into(),
            "1000000".into(),
        ),
        ("PLAYHOUSE_RATE_LIMIT__BURST".into(), "1000000".into()),
    ]);
    if let Ok(journal) = std::env::var("BANK_JOURNAL") {
        println!("bank test: store.journal = {journal}");
        options
            .env
            .push(("PLAYHOUSE_STORE__JOURNAL".into(), journal));
    }
    let mut cluster = TestCluster::start(&options).await;
    cluster.wait_settled(Duration::from_secs(30)).await;
    // Shared with the nemesis: a restarted node's edge is on a new port.
    let edges: Edges = Arc::new(RwLock::new(
        cluster.nodes.iter().map(|n| n.url("")).collect(),
    ));
    let api = Arc::new(Http::new(edges.clone(), Duration::from_secs(3)));
    let mut opened = 0;
    let mut ids = || {
        opened += 1;
        format!("open-{seed:x}-{opened}")
    };
    let accounts = ledger::open_accounts(
        api.as_ref(),
        ACCOUNTS / 3,
        |stream| cluster.owner_of("accounts", stream),
        &mut ids,
    )
    .await;

    let history: History = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (api, accounts, history, stop) =
                (api.clone(), accounts.clone(), history.clone(), stop.clone());
            tokio::spawn(async move {
                let seed = seed ^ ((c as u64 + 1) * 0x1000);
                ledger::run_client(api.as_ref(), seed, &accounts, &history, &stop, (1, 20)).await;
            })
        })
        .collect();

    let faults = nemesis(&mut cluster, &edges, seed, Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    cluster.wait_settled(Duration::from_secs(30)).await;
    let history = history.lock().unwrap().clone();
    let summary = format!(
        "BANK_SEED={seed}, {} s, faults {faults}",
        started.elapsed().as_secs()
    );
    let checked = ledger::check(api.as_ref(), &accounts, &history, 20).await;
    assert!(
        checked.problems.is_empty(),
        "the bank lost its invariants ({} problems; {summary}; {}):\n{}",
        checked.problems.len(),
        checked.summary,
        checked
            .problems
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("bank test: {summary}; {}", checked.summary);
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Cut,
    Pause,
}

/// Injects one round of faults in a seeded order (and more rounds until `at_least` has
/// passed), healing each and waiting for the cluster before the next. Returns a summary.
async fn nemesis(
    cluster: &mut TestCluster,
    edges: &Edges,
    seed: u64,
    at_least: Duration,
) -> String {
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut counts = BTreeMap::new();
    let mut round = 0;
    while round == 0 || started.elapsed() < at_least {
        round += 1;
        let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::Kill, KILLS)
            .chain(std::iter::repeat_n(Fault::Cut, CUTS))
            .chain(std::iter::repeat_n(Fault::Pause, PAUSES))
            .collect();
        for i in (1..faults.len()).rev() {
            faults.swap(i, rng.below(i + 1));
        }
        for fault in faults {
            let node = rng.below(3);
            let hold = rng.millis(300, 2_500);
            match fault {
                Fault::Kill => {
                    cluster.nodes[node].kill9();
                    tokio::time::sleep(hold).await;
                    cluster.nodes[node].restart();
                    edges.write().unwrap()[node] = cluster.nodes[node].url("");
                }
                Fault::Cut => {
                    // Node 3: the one that dials no one, so that dropping its port cuts every
                    // link it has (the others' links from their ephemeral ports would not be).
                    let cut = CutOff::port(cluster.ports[2]);
                    // It must really be cut off: both peers see it down before it heals.
                    for peer in [0, 1] {
                        cluster
                            .wait_status(peer, 2, "down", Duration::from_secs(10))
                            .await;
                    }
                    tokio::time::sleep(hold).await;
                    cut.heal();
                }
                Fault::Pause => {
                    cluster.node(node).pause();
                    tokio::time::sleep(hold + Duration::from_secs(1)).await;
                    cluster.node(node).resume();
                }
            }
            *counts
                .entry(format!("{fault:?}").to_lowercase())
                .or_insert(0) += 1;
            cluster.wait_settled(Duration::from_secs(30)).await;
            tokio::time::sleep(rng.millis(200, 800)).await;
        }
    }
    format!("{counts:?} in {} s", started.elapsed().as_secs())
}
