//! The worst day on real processes: a three-node replicated cluster under the bank's load
//! loses two nodes for good (killed, their data directories deleted). Every partition has
//! lost its majority: writes are refused. The documented recovery (`playhouse cluster
//! recover --lost node-2,node-3` on the survivor) restarts every group on the survivor; writes
//! are taken again, and two new nodes admitted make every partition three replicas again.
//! The load pauses for a moment before the loss, so that the survivor holds every
//! acknowledged write and the bank's checker can hold it to all of them (what a recovery
//! loses when the survivor lagged is in the README).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::membership::{admit_by_name, launch_joining, not_served, wait_placed};
use crate::support::api::{Http, Outcome};
use crate::support::cluster::{ClusterOptions, TestCluster, shipped_config};
use crate::support::ledger::{self, Acked, Clients, History};
use crate::support::{TEST_KEY, client, token};

/// Bank clients sending the load (also the backup test's).
pub(crate) const CLIENTS: usize = 3;

#[test]
fn two_of_three_nodes_lost_for_good_then_the_survivor_recovers_the_cluster() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(lose_two_and_recover());
}

/// A cluster on Raft, with no rate limit in the clients' way.
pub(crate) fn raft_options() -> ClusterOptions {
    let mut options = ClusterOptions::default();
    options.env.extend([
        ("PLAYHOUSE_STORE__JOURNAL".into(), "raft".into()),
        (
            "PLAYHOUSE_RATE_LIMIT__REQUESTS_PER_SECOND".into(),
            "1000000".into(),
        ),
        ("PLAYHOUSE_RATE_LIMIT__BURST".into(), "1000000".into()),
    ]);
    options
}

async fn lose_two_and_recover() {
    let options = raft_options();
    let mut cluster = TestCluster::start(&options).await;
    cluster.wait_settled(Duration::from_secs(30)).await;
    wait_placed(&cluster, &["node-1", "node-2", "node-3"]).await;

    let edges = Arc::new(RwLock::new(
        cluster.nodes.iter().map(|n| n.url("")).collect::<Vec<_>>(),
    ));
    let api = Arc::new(Http::new(edges.clone(), Duration::from_secs(5)));
    let mut opened = 0;
    let mut ids = || {
        opened += 1;
        format!("worst-{opened}")
    };
    let accounts = ledger::open_accounts(
        api.as_ref(),
        2,
        |stream| cluster.owner_of("accounts", stream),
        &mut ids,
    )
    .await;
    let history: History = Arc::new(Mutex::new(Vec::new()));
    let acked = Acked::default();

    // Load through every edge, then a pause in which every replica catches up.
    let clients = Clients::start(
        CLIENTS,
        (5, 40),
        (0xd1e, 0),
        &api,
        &accounts,
        &history,
        &acked,
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    clients.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // node-2 and node-3 are lost for good: killed, their data directories gone.
    for n in [1, 2] {
        cluster.nodes[n].kill9();
        std::fs::remove_dir_all(cluster.data_dir(n)).unwrap();
    }
    let lost_at = Instant::now();
    // Every client now goes through the survivor.
    for edge in edges.write().unwrap().iter_mut() {
        *edge = cluster.nodes[0].url("");
    }
    let clients = Clients::start(
        CLIENTS,
        (5, 40),
        (0xd1e, 1),
        &api,
        &accounts,
        &history,
        &acked,
    );

    // No partition has a majority: writes are refused, whoever asks.
    let survivor = &cluster.nodes[0];
    let writer = token("bank", &["writer"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = client()
        .post(survivor.url(&format!("/api/v1/accounts/{}/credit", accounts[0])))
        .bearer_auth(&writer)
        .json(&json!({"amount": 1}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    let refused_status = refused.status();
    assert_eq!(
        refused_status,
        503,
        "a write with no majority: {}",
        refused.text().await.unwrap()
    );

    // The documented recovery, through the CLI on the survivor's edge.
    let recover_started = Instant::now();
    let recovered = std::process::Command::new(env!("CARGO_BIN_EXE_playhouse"))
        .args(["cluster", "recover", "--lost", "node-2,node-3", "--edge"])
        .arg(survivor.address())
        .arg("--config")
        .arg(shipped_config(1))
        .env("PLAYHOUSE_JWT_KEY", TEST_KEY)
        .output()
        .unwrap();
    let recover_took = recover_started.elapsed();
    let said = String::from_utf8_lossy(&recovered.stdout);
    assert!(
        recovered.status.success(),
        "playhouse cluster recover: {:?} {said} {}",
        recovered.status,
        String::from_utf8_lossy(&recovered.stderr)
    );
    let report: Value = serde_json::from_str(&said).unwrap();
    let groups = report["recovered"].as_array().unwrap();
    assert_eq!(groups.len(), 65, "64 partitions and the metadata: {report}");
    let elected = groups
        .iter()
        .filter(|g| g["leader_elected"] == true)
        .count();
    let behind = groups
        .iter()
        .filter(|g| g["cluster_committed_index"].as_u64() > g["kept_through_index"].as_u64())
        .count();
    assert_eq!(
        behind, 0,
        "the survivor had every committed entry: {report}"
    );

    // Writes are taken again through the survivor: the clients' first acknowledged one.
    let first_write = loop {
        let asked: tokio::time::Instant = recover_started.into();
        let first = history
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.at >= asked && !matches!(e.op, ledger::Op::Read { .. }))
            .find(|e| matches!(e.outcome, Outcome::Ok(_)))
            .map(|e| e.at - asked);
        if let Some(first) = first {
            break first;
        }
        assert!(
            recover_started.elapsed() < Duration::from_secs(60),
            "no write acknowledged a minute after the recovery was asked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "worst day: lost at +0 s; recovery asked {:.1} s after, took {recover_took:.1?} ({elected} of 65 groups elected a leader within it); first write taken {first_write:.1?} after it was asked",
        (recover_started - lost_at).as_secs_f64()
    );

    // Two new nodes (fresh directories) join through the survivor: every partition has
    // three replicas again.
    let grow_started = Instant::now();
    let joiners =
        ["node-4", "node-5"].map(|name| (name, launch_joining(&cluster, &options, name, 1)));
    for (name, _) in &joiners {
        admit_by_name(&cluster.nodes[0], name).await;
    }
    for (_, joiner) in joiners {
        let node = joiner.await.unwrap();
        edges.write().unwrap().push(node.url(""));
        cluster.nodes.push(node);
    }
    let placed = wait_placed(&cluster, &["node-1", "node-4", "node-5"]).await;
    println!(
        "worst day: node-4 and node-5 admitted together, every partition on three replicas {:.1?} after they started ({placed:.1?} after both were serving)",
        grow_started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    clients.stop().await;

    let history = history.lock().unwrap().clone();
    let outage: Vec<_> = history
        .iter()
        .filter(|e| e.at >= lost_at.into() && e.at <= recover_started.into())
        .cloned()
        .collect();
    let served_in_outage = outage
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Ok(_)))
        .count();
    println!(
        "worst day: {} operations while no partition had a majority, {served_in_outage} of them reads or refusals served; not served: {}",
        outage.len(),
        not_served(&outage).len()
    );
    let checked = ledger::check(api.as_ref(), &accounts, &history, 10).await;
    assert!(
        checked.problems.is_empty(),
        "the bank lost its invariants across the loss and the recovery ({}):\n{}",
        checked.summary,
        checked.problems.join("\n")
    );
    println!("worst day: {}", checked.summary);
}
