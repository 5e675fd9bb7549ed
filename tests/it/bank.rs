//! The bank test, Jepsen style, on three real nodes: concurrent clients send transfers,
//! credits and balance reads through all three edges while a nemesis kills (-9) and restarts
//! nodes, cuts one off with iptables and pauses one with SIGSTOP; then the checker of
//! `support::ledger` reads every account's history and every transfer and asserts that money
//! was conserved, never negative, and every transfer moved its amount once or not at all.
//!
//! First one node (the one owning, or with replication leading, the first account's
//! partition) is killed for 30 s while the clients go on, and the share of 2xx answers through
//! the other edges is printed. With replication the nemesis also aims half its kills at
//! leaders and wipes one node's data directory.
//!
//! `BANK_SECONDS=N` runs the nemesis for at least N seconds (default: one round of its 25
//! faults, 26 with replication); `BANK_SEED=N` repeats a schedule (the seed is printed); `BANK_JOURNAL=raft` runs it
//! on replicated partitions (`store.journal = "raft"`). Not `PLAYHOUSE_*`: nodes refuse
//! overrides that name no config key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::api::{Http, Outcome};
use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::ledger::{self, Clients, History, Rng};
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
    let acked = ledger::Acked::default();
    let clients = Clients::start(
        CLIENTS,
        (1, 20),
        (seed, 0),
        &api,
        &accounts,
        &history,
        &acked,
    );

    let replicated = std::env::var("BANK_JOURNAL").as_deref() == Ok("raft");
    let availability =
        availability_while_down(&mut cluster, &edges, &history, &accounts, replicated).await;
    println!("bank test: {availability}");
    let faults = nemesis(
        &mut cluster,
        &edges,
        &accounts,
        seed,
        Duration::from_secs(seconds),
        replicated,
    )
    .await;
    clients.stop().await;
    cluster.wait_settled(Duration::from_secs(30)).await;
    let history = history.lock().unwrap().clone();
    let unknown = history
        .iter()
        .filter(|entry| matches!(entry.outcome, Outcome::Unknown(_)))
        .count();
    println!(
        "bank test: unknown outcomes by cause: {:?}",
        unknown_causes(&history)
    );
    let summary = format!(
        "BANK_SEED={seed}, {} s, faults {faults}; {availability}; {unknown} of {} outcomes unknown ({:.1}%)",
        started.elapsed().as_secs(),
        history.len(),
        100.0 * unknown as f64 / history.len().max(1) as f64
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

/// The unknown outcomes counted by what they said (a status and problem type, or why
/// nothing came back), most frequent first.
pub(crate) fn unknown_causes(history: &[ledger::Entry]) -> Vec<(String, usize)> {
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    for entry in history {
        if let Outcome::Unknown(why) = &entry.outcome {
            let cause = match why.split_once(": {") {
                Some((status, body)) => {
                    let kind = body
                        .split("problem:")
                        .nth(1)
                        .unwrap_or("")
                        .split('"')
                        .next();
                    format!("{status} {}", kind.unwrap_or(""))
                }
                None => why.split(':').next().unwrap_or(why).to_owned(),
            };
            *causes.entry(cause).or_default() += 1;
        }
    }
    let mut causes: Vec<_> = causes.into_iter().collect();
    causes.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    causes
}

/// How long one node stays down in [`availability_while_down`].
const DOWN_WINDOW: Duration = Duration::from_secs(30);

/// Kills (-9) the node that leads (or, unreplicated, owns) the first account's partition and
/// keeps it down for [`DOWN_WINDOW`] while the clients go on; then restarts it. Says which
/// share of the answers through the other two edges were 2xx over the whole window and from
/// the moment the survivors had taken over (with replication: a leader among them for every
/// partition; without: the node seen down), and how long that took.
async fn availability_while_down(
    cluster: &mut TestCluster,
    edges: &Edges,
    history: &History,
    accounts: &[String],
    replicated: bool,
) -> String {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let partition = cluster
        .placement
        .partition(&format!("account-{}", accounts[0]));
    let victim = if replicated {
        leader_of(cluster, partition).await
    } else {
        cluster.owner_of("accounts", &format!("account-{}", accounts[0]))
    };
    let survivors: Vec<usize> = (0..3).filter(|n| *n != victim).collect();
    let killed = tokio::time::Instant::now();
    cluster.nodes[victim].kill9();
    let taken_over = loop {
        let done = if replicated {
            let leading = leaders(cluster).await;
            leading.len() == cluster.placement.partitions() as usize
                && leading.values().all(|leader| *leader != victim)
        } else {
            cluster.status_seen(survivors[0], victim).await.as_deref() == Some("down")
        };
        if done || killed.elapsed() > DOWN_WINDOW {
            break killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep_until(killed + DOWN_WINDOW).await;
    cluster.nodes[victim].restart();
    edges.write().unwrap()[victim] = cluster.nodes[victim].url("");
    cluster.wait_settled(Duration::from_secs(30)).await;
    let share_from = |from: tokio::time::Instant| {
        let history = history.lock().unwrap();
        let answers: Vec<_> = history
            .iter()
            .filter(|e| e.via != victim && e.at >= from && e.at < killed + DOWN_WINDOW)
            .collect();
        let ok = answers
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Ok(_)))
            .count();
        format!(
            "{ok} of {} ({:.1}%)",
            answers.len(),
            100.0 * ok as f64 / answers.len().max(1) as f64
        )
    };
    format!(
        "node-{} ({} partition {partition}) killed for {DOWN_WINDOW:?}: 2xx through the other edges {} over the window, {} once they had taken over ({} ms)",
        victim + 1,
        if replicated { "leading" } else { "owning" },
        share_from(killed),
        share_from(killed + taken_over),
        taken_over.as_millis()
    )
}

/// The node leading `partition`, once one reports it (an election or a hand-over may be
/// under way): at most 30 s.
async fn leader_of(cluster: &TestCluster, partition: u32) -> usize {
    let started = Instant::now();
    loop {
        if let Some(leader) = leaders(cluster).await.get(&partition) {
            return *leader;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no node reports leading partition {partition} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each partition's leader (a node index), as the running nodes report it.
async fn leaders(cluster: &TestCluster) -> BTreeMap<u32, usize> {
    let mut leaders = BTreeMap::new();
    for n in (0..3).filter(|n| cluster.nodes[*n].is_running()) {
        let view = cluster.view(n).await;
        for group in view["replication"]["partitions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if group["role"] == "leader" {
                leaders.insert(group["partition"].as_u64().unwrap() as u32, n);
            }
        }
    }
    leaders
}

/// Whether every partition has a leader whose voters are the three nodes' current
/// incarnations (a node back on a wiped disk has been caught up and promoted).
async fn whole(cluster: &TestCluster) -> bool {
    let mut incarnations = Vec::new();
    let mut led = 0;
    let mut groups = Vec::new();
    for n in 0..3 {
        if !cluster.nodes[n].is_running() {
            return false;
        }
        let view = cluster.view(n).await;
        incarnations.push(
            view["replication"]["replica"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
        for group in view["replication"]["partitions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if group["role"] == "leader" {
                led += 1;
                groups.push(group.clone());
            }
        }
    }
    led == cluster.placement.partitions()
        && groups.iter().all(|group| {
            let replicas = group["replicas"].as_array().cloned().unwrap_or_default();
            replicas.len() == 3
                && replicas.iter().all(|replica| {
                    replica["voter"] == true
                        && incarnations
                            .iter()
                            .any(|current| replica["replica"] == current.as_str())
                })
        })
}

/// What [`whole`] found missing, for a failure message: each node's incarnation and what
/// its metadata records, and the groups it leads whose voters are not every node's current
/// incarnation.
async fn unwhole(cluster: &TestCluster) -> String {
    let mut views = Vec::new();
    for n in 0..3 {
        if !cluster.nodes[n].is_running() {
            views.push(format!("node-{} is not running", n + 1));
            continue;
        }
        let view = cluster.view(n).await;
        let replication = &view["replication"];
        let led: Vec<String> = replication["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|group| group["role"] == "leader")
            .map(|group| format!("{}: {}", group["partition"], group["replicas"]))
            .collect();
        views.push(format!(
            "node-{} is {}, its metadata records {} (group {}), it leads {} groups: {}",
            n + 1,
            replication["replica"],
            replication["metadata"]["incarnations"],
            replication["metadata"]["group"]["replicas"],
            led.len(),
            led.join("; ")
        ));
    }
    views.join("\n")
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    /// A kill -9 of the node leading the partition of an account the seed picks.
    KillLeader,
    Cut,
    Pause,
    /// A kill -9, the data directory removed, a restart: a lost disk.
    Wipe,
}

/// Injects one round of faults in a seeded order (and more rounds until `at_least` has
/// passed), healing each and waiting for the cluster before the next. Returns a summary.
async fn nemesis(
    cluster: &mut TestCluster,
    edges: &Edges,
    accounts: &[String],
    seed: u64,
    at_least: Duration,
    replicated: bool,
) -> String {
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut counts = BTreeMap::new();
    let mut round = 0;
    while round == 0 || started.elapsed() < at_least {
        round += 1;
        // With replication, half the kills aim at a leader, and one node loses its disk.
        let (kills, leader_kills, wipes) = if replicated {
            (KILLS / 2, KILLS / 2, 1)
        } else {
            (KILLS, 0, 0)
        };
        let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::Kill, kills)
            .chain(std::iter::repeat_n(Fault::KillLeader, leader_kills))
            .chain(std::iter::repeat_n(Fault::Cut, CUTS))
            .chain(std::iter::repeat_n(Fault::Pause, PAUSES))
            .chain(std::iter::repeat_n(Fault::Wipe, wipes))
            .collect();
        for i in (1..faults.len()).rev() {
            faults.swap(i, rng.below(i + 1));
        }
        for fault in faults {
            let mut node = rng.below(3);
            let hold = rng.millis(300, 2_500);
            match fault {
                Fault::Kill | Fault::KillLeader | Fault::Wipe => {
                    if let Fault::KillLeader = fault {
                        let account = &accounts[rng.below(accounts.len())];
                        let partition = cluster.placement.partition(&format!("account-{account}"));
                        node = leaders(cluster)
                            .await
                            .get(&partition)
                            .copied()
                            .unwrap_or(node);
                    }
                    cluster.nodes[node].kill9();
                    if let Fault::Wipe = fault {
                        std::fs::remove_dir_all(cluster.data_dir(node)).unwrap();
                    }
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
            // A lost disk is healed once its node is a voter everywhere again: only then may
            // another node fail (two lost copies of a partition would be a lost majority).
            if replicated {
                let started = Instant::now();
                while !whole(cluster).await {
                    if started.elapsed() >= Duration::from_secs(60) {
                        panic!(
                            "the replicas were not whole a minute after {fault:?} of node-{}: {}",
                            node + 1,
                            unwhole(cluster).await
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            tokio::time::sleep(rng.millis(200, 800)).await;
        }
    }
    format!("{counts:?} in {} s", started.elapsed().as_secs())
}
