//! Part 8, a member joins: a replicated three-node cluster is loaded with `--events` events, a
//! tenth of them in one partition that placement over four members gives the fourth; then,
//! under a steady load of credits through the three edges, node 4 asks to join and is
//! admitted. Measured: the time from admission until every partition's voters are placement's
//! over the four members; how long each partition's move took (as its leader's
//! `/admin/cluster` shows it, polled every 250 ms), the heavy partition's among them; and the
//! load's credits/s during the rebalance against before it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use playhouse_runtime::config::Member;
use playhouse_runtime::placement::Placement;

use super::support::wrk;
use super::{BenchNode, Settings, Three, free_port, members_toml};

/// Accounts the general load is spread over.
const ACCOUNTS: usize = 1_000;
/// Accounts in the heavy partition.
const HEAVY_ACCOUNTS: usize = 30;
/// Connections per edge of the steady load (below saturation, so that the rebalance has room).
const STEADY_CONNECTIONS: u32 = 8;

/// Placement over `names`, replicated three times.
fn placement_over(names: &[&str]) -> Placement {
    let members: Vec<Member> = names
        .iter()
        .map(|name| Member {
            name: (*name).to_owned(),
            address: String::new(),
            edge: None,
            services: vec!["accounts".into()],
        })
        .collect();
    Placement::of(64, &members).replicated(3)
}

/// Credits to `accounts` through the three edges for `seconds`; credits answered 2xx.
fn credit_for(
    dir: &Path,
    three: &Three,
    name: &str,
    accounts: &[(String, usize)],
    seconds: u64,
    connections: u32,
) -> (u64, f64) {
    let servers: Vec<usize> = (0..accounts.len()).map(|i| i % 3).collect();
    let scripts = super::cost::credit_scripts(dir, name, accounts, &servers);
    let runs: Vec<_> = (0..3)
        .map(|n| {
            let (edge, script) = (three.nodes[n].edge.clone(), scripts[n].clone());
            std::thread::spawn(move || wrk(&edge, &script, seconds, connections))
        })
        .collect();
    let mut credited = 0u64;
    for run in runs {
        let figures = run.join().unwrap();
        credited +=
            ((figures.requests_per_second * seconds as f64) as u64).saturating_sub(figures.non_2xx);
    }
    (credited, credited as f64 / seconds as f64)
}

/// Each partition's voters as its leader reports them, and the moves under way, over every
/// node that answers.
async fn survey(
    three: &Three,
    node_4: Option<&BenchNode>,
) -> (BTreeMap<u64, Vec<String>>, Vec<serde_json::Value>) {
    let mut edges: Vec<String> = three.nodes.iter().map(|n| n.edge.clone()).collect();
    edges.extend(node_4.map(|n| n.edge.clone()));
    let (mut voters, mut moves) = (BTreeMap::new(), Vec::new());
    for edge in edges {
        let Ok(answer) = three
            .http
            .get(format!("{edge}/admin/cluster"))
            .bearer_auth(&three.admin)
            .send()
            .await
        else {
            continue;
        };
        let Ok(view) = answer.json::<serde_json::Value>().await else {
            continue;
        };
        moves.extend(
            view["replication"]["moves"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        for group in view["replication"]["partitions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if group["role"] != "leader" {
                continue;
            }
            let mut names: Vec<String> = group["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["voter"] == true)
                .map(|r| r["member"].as_str().unwrap_or_default().to_owned())
                .collect();
            names.sort();
            voters.insert(group["partition"].as_u64().unwrap_or(u64::MAX), names);
        }
    }
    (voters, moves)
}

/// Whether every partition's voters are `placement`'s.
fn placed(voters: &BTreeMap<u64, Vec<String>>, placement: &Placement) -> bool {
    (0..64u32).all(|p| {
        let mut expected = placement.replicas(p);
        expected.sort();
        voters.get(&u64::from(p)) == Some(&expected)
    })
}

/// Part 8 (see the module).
pub async fn join(dir: &Path, settings: &Settings) {
    let raft = ("PLAYHOUSE_STORE__JOURNAL".to_owned(), "raft".to_owned());
    let mut three = Three::start(dir, std::slice::from_ref(&raft));
    three.all_up(Duration::from_secs(30)).await;
    three.leaders_settled(Duration::from_secs(60)).await;
    let four = placement_over(&["node-1", "node-2", "node-3", "node-4"]);
    let heavy = (0..64u32)
        .find(|p| four.replicas(*p).iter().any(|m| m == "node-4"))
        .expect("node 4 gets some partition");
    println!(
        "\n8. a member joins: {} events on a replicated three-node cluster (a tenth in partition {heavy}, which moves to node 4), then node 4 admitted under load",
        settings.events
    );
    let mut accounts = Vec::new();
    let mut heavy_accounts = Vec::new();
    while accounts.len() < ACCOUNTS || heavy_accounts.len() < HEAVY_ACCOUNTS {
        for account in three.open_accounts(200).await {
            let partition = three.placement.partition(&format!("account-{}", account.0));
            if partition == heavy && heavy_accounts.len() < HEAVY_ACCOUNTS {
                heavy_accounts.push(account);
            } else if accounts.len() < ACCOUNTS {
                accounts.push(account);
            }
        }
    }
    let started = Instant::now();
    let mut in_heavy = HEAVY_ACCOUNTS as u64;
    while in_heavy < settings.events / 10 {
        in_heavy += credit_for(dir, &three, "join-heavy", &heavy_accounts, 20, 16).0;
    }
    let mut loaded = in_heavy + ACCOUNTS as u64;
    while loaded < settings.events {
        loaded += credit_for(dir, &three, "join-load", &accounts, 30, 16).0;
        println!(
            "   loaded about {loaded} events ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "   loaded about {loaded} events, {in_heavy} of them in partition {heavy}, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, before) = credit_for(
        dir,
        &three,
        "join-steady",
        &accounts,
        20,
        STEADY_CONNECTIONS,
    );
    println!(
        "   steady load before the join: {before:.0} credits/s ({STEADY_CONNECTIONS} connections per edge)"
    );

    // The steady load goes on in 10 s rounds while node 4 joins and partitions move.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = {
        let (dir, stop) = (dir.to_owned(), stop.clone());
        let edges: Vec<String> = three.nodes.iter().map(|n| n.edge.clone()).collect();
        let servers: Vec<usize> = (0..accounts.len()).map(|i| i % 3).collect();
        let scripts = super::cost::credit_scripts(&dir, "join-during", &accounts, &servers);
        std::thread::spawn(move || {
            let mut rates = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let runs: Vec<_> = (0..3)
                    .map(|n| {
                        let (edge, script) = (edges[n].clone(), scripts[n].clone());
                        std::thread::spawn(move || wrk(&edge, &script, 10, STEADY_CONNECTIONS))
                    })
                    .collect();
                let rate: f64 = runs
                    .into_iter()
                    .map(|run| {
                        let f = run.join().unwrap();
                        f.requests_per_second - f.non_2xx as f64 / 10.0
                    })
                    .sum();
                rates.push(rate);
            }
            rates
        })
    };
    let port = free_port();
    let founders: Vec<u16> = three.nodes.iter().map(|n| n.cluster_port).collect();
    let contacts = members_toml(
        &["node-4", "node-1", "node-2"],
        &[port, founders[0], founders[1]],
    );
    let extra = vec![
        raft.clone(),
        ("PLAYHOUSE_NODE_NAME".to_owned(), "node-4".to_owned()),
        ("PLAYHOUSE_CLUSTER__JOIN".to_owned(), "true".to_owned()),
    ];
    let data = dir.join("three");
    let joining = std::thread::spawn(move || BenchNode::start(&data, 4, port, &contacts, &extra));
    let asked = Instant::now();
    let admitted = loop {
        let answer = three
            .http
            .post(format!("{}/admin/cluster/members", three.nodes[0].edge))
            .bearer_auth(&three.admin)
            .json(&serde_json::json!({ "name": "node-4" }))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status() == 202) {
            break Instant::now();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "node 4 was never admitted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut node_4 = joining.join().unwrap();
    let serving = admitted.elapsed();
    let mut moved: BTreeMap<u64, u64> = BTreeMap::new();
    // As polled: each node's moves are read one after another, not at one instant.
    let mut most_at_once = 0;
    let mut last_said = Instant::now();
    let done = loop {
        let (voters, moves) = survey(&three, Some(&node_4)).await;
        most_at_once = most_at_once.max(moves.len());
        for m in &moves {
            let (partition, elapsed) = (
                m["partition"].as_u64().unwrap_or(u64::MAX),
                m["elapsed_ms"].as_u64().unwrap_or(0),
            );
            let longest = moved.entry(partition).or_default();
            *longest = (*longest).max(elapsed);
        }
        if moves.is_empty() && placed(&voters, &four) {
            break admitted.elapsed();
        }
        assert!(
            admitted.elapsed() < Duration::from_secs(3_600),
            "the rebalance did not end within an hour"
        );
        if last_said.elapsed() > Duration::from_secs(30) {
            println!(
                "   {:.0} s: {} moves under way",
                admitted.elapsed().as_secs_f64(),
                moves.len()
            );
            last_said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, Ordering::SeqCst);
    let rates = rounds.join().unwrap();
    let during: Vec<f64> = rates
        .iter()
        .copied()
        .take(((done.as_secs_f64() / 10.0).ceil() as usize).max(1))
        .collect();
    let mean = during.iter().sum::<f64>() / during.len().max(1) as f64;
    let mut others: Vec<u64> = moved
        .iter()
        .filter(|(p, _)| **p != u64::from(heavy))
        .map(|(_, ms)| *ms)
        .collect();
    others.sort_unstable();
    println!(
        "   node 4 admitted {:.1} s after it started asking, serving {:.1} s after admission; every partition placed over four members {:.1} s after admission",
        (admitted - asked).as_secs_f64(),
        serving.as_secs_f64(),
        done.as_secs_f64()
    );
    println!(
        "   moves seen: {} partitions, at most {most_at_once} at once as polled (cluster.max_moves = 2 across the cluster); partition {heavy} (about {in_heavy} events) moved in {:.1} s; the others: median {:.1} s, longest {:.1} s (each +- 0.25 s)",
        moved.len(),
        moved.get(&u64::from(heavy)).copied().unwrap_or(0) as f64 / 1000.0,
        others.get(others.len() / 2).copied().unwrap_or(0) as f64 / 1000.0,
        others.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    println!(
        "   steady load: {before:.0} credits/s before, {mean:.0} credits/s during the rebalance ({:.2} of before; 10 s rounds: {:?})",
        mean / before.max(1.0),
        during.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
    );
    node_4.stop();
    for node in &mut three.nodes {
        node.stop();
    }
}
