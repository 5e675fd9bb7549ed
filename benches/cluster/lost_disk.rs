//! Part 7, a lost disk: a replicated three-node cluster is loaded with `--events` events
//! (accounts, transfers: sagas and their tables, then credits through the partitions'
//! leaders); with the load stopped, node 3 is killed, its data directory emptied and the node
//! started again. Measured: the time until it is a caught-up voter of every partition (under
//! its new incarnation, no entry behind its leader), and until it has applied its whole log
//! to its store. Then the three nodes stop and each
//! store is summed up (`EventStore::digest`): node 3's must equal its peers' stream by stream,
//! with the processed-command and read-model (saga) tables.

use std::path::Path;
use std::time::{Duration, Instant};

use playhouse_runtime::store::{EventStore, StoreOptions};

use super::support::wrk;
use super::{Settings, Three, token};

/// Accounts the credits are spread over.
const ACCOUNTS: usize = 1_000;
/// Transfers (each a saga of two steps) made before the credits.
const TRANSFERS: usize = 300;

/// Every node's `/admin/cluster` view, in node order.
async fn views(three: &Three) -> Result<Vec<serde_json::Value>, String> {
    let mut views = Vec::new();
    for n in 0..3 {
        views.push(
            three
                .cluster_view(n)
                .await
                .ok_or_else(|| format!("node-{} does not answer", n + 1))?,
        );
    }
    Ok(views)
}

/// Whether every partition's leader counts node 3's current incarnation as a voter with no
/// entry to catch up on; says what is missing otherwise.
async fn caught_up_voter(three: &Three) -> Result<(), String> {
    let views = views(three).await?;
    let incarnation = views[2]["replication"]["replica"]
        .as_str()
        .ok_or("node-3 reports no incarnation yet")?
        .to_owned();
    let partitions = views[0]["replication"]["partitions"]
        .as_array()
        .ok_or("node-1 reports no partitions")?;
    for (partition, seen) in partitions.iter().enumerate() {
        // The leader as node 1 sees it, and that leader's own report of the partition.
        let leader = seen["leader"]
            .as_str()
            .ok_or(format!("partition {partition} has no leader"))?;
        let n = leader.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
        let report = &views[n]["replication"]["partitions"][partition];
        let node_3 = report["replicas"]
            .as_array()
            .and_then(|replicas| {
                replicas
                    .iter()
                    .find(|r| r["member"] == "node-3" && r["replica"] == incarnation.as_str())
            })
            .ok_or(format!(
                "partition {partition}: node-3's new incarnation is not a replica yet"
            ))?;
        if node_3["voter"] != true || node_3["lag"] != 0 {
            return Err(format!("partition {partition}: node-3 is {node_3}"));
        }
    }
    Ok(())
}

/// Whether node 3 has applied, in every partition, everything its leader's log holds: its
/// store then holds what its peers' do. Says what is missing otherwise.
async fn applied_everything(three: &Three) -> Result<(), String> {
    let views = views(three).await?;
    let partitions = views[2]["replication"]["partitions"]
        .as_array()
        .ok_or("node-3 reports no partitions")?;
    for (partition, mine) in partitions.iter().enumerate() {
        let leader = mine["leader"]
            .as_str()
            .ok_or(format!("partition {partition} has no leader"))?;
        let n = leader.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
        let last = views[n]["replication"]["partitions"][partition]["last_log_index"].as_u64();
        let applied = mine["last_applied"].as_u64();
        if applied < last {
            return Err(format!(
                "partition {partition}: node-3 applied {applied:?} of {last:?}"
            ));
        }
    }
    Ok(())
}

/// Transfers of 1 between accounts in turn, through node 1's edge; how many were accepted.
async fn transfers(three: &Three, accounts: &[(String, usize)]) -> usize {
    let writer = token("bench", &["writer"]);
    let mut accepted = 0;
    for i in 0..TRANSFERS {
        let (from, to) = (&accounts[i].0, &accounts[(i + 1) % accounts.len()].0);
        let answer = three
            .http
            .post(format!("{}/api/v1/transfers", three.nodes[0].edge))
            .bearer_auth(&writer)
            .json(&serde_json::json!({"from": from, "to": to, "amount": 1}))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            accepted += 1;
        }
    }
    accepted
}

/// Credits through the leaders' edges until about `events` events are stored; how many
/// credits were answered 2xx and at what rate.
async fn load(dir: &Path, three: &Three, accounts: &[(String, usize)], events: u64) -> (u64, f64) {
    let servers = three.servers(accounts, true).await;
    let scripts = super::cost::credit_scripts(dir, "lost-disk-credit", accounts, &servers);
    let (mut credited, started) = (0u64, Instant::now());
    let already = (ACCOUNTS + 2 * TRANSFERS) as u64;
    while already + credited < events {
        let runs: Vec<_> = (0..3)
            .map(|n| {
                let (edge, script) = (three.nodes[n].edge.clone(), scripts[n].clone());
                std::thread::spawn(move || wrk(&edge, &script, 30, 22))
            })
            .collect();
        for run in runs {
            let figures = run.join().unwrap();
            credited += (figures.requests_per_second * 30.0) as u64 - figures.non_2xx;
        }
        println!(
            "   loaded about {} events ({:.0} s)",
            already + credited,
            started.elapsed().as_secs_f64()
        );
    }
    (credited, credited as f64 / started.elapsed().as_secs_f64())
}

/// Part 7 (see the module).
pub async fn lost_disk(dir: &Path, settings: &Settings) {
    let extra = [("PLAYHOUSE_STORE__JOURNAL".to_owned(), "raft".to_owned())];
    let mut three = Three::start(dir, &extra);
    three.all_up(Duration::from_secs(30)).await;
    three.leaders_settled(Duration::from_secs(60)).await;
    println!(
        "\n7. a lost disk: {} events on a replicated three-node cluster, then node 3's data directory emptied",
        settings.events
    );
    let accounts = three.open_accounts(ACCOUNTS).await;
    let transferred = transfers(&three, &accounts).await;
    let (credited, rate) = load(dir, &three, &accounts, settings.events).await;
    println!(
        "   loaded: {ACCOUNTS} accounts, {transferred} transfers, {credited} credits ({rate:.0}/s); load stopped"
    );
    // Everything applied everywhere before the disk goes.
    let deadline = Instant::now() + Duration::from_secs(300);
    while let Err(behind) = caught_up_voter(&three).await {
        assert!(
            Instant::now() < deadline,
            "replicas did not catch up: {behind}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let data = dir.join("three");
    let node_3 = data.join("node-3");
    let size = dir_size(&node_3);
    three.nodes[2].kill9();
    std::fs::remove_dir_all(&node_3).unwrap();
    let started = Instant::now();
    three.nodes[2].spawn();
    let serving = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(3_600);
    let mut last_said = Instant::now();
    while let Err(behind) = caught_up_voter(&three).await {
        assert!(
            Instant::now() < deadline,
            "node 3 never caught up: {behind}"
        );
        if last_said.elapsed() > Duration::from_secs(30) {
            println!("   {:.0} s: {behind}", started.elapsed().as_secs_f64());
            last_said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let caught_up = started.elapsed();
    // Its log holds everything; its store holds it once applied.
    while let Err(behind) = applied_everything(&three).await {
        assert!(
            Instant::now() < deadline,
            "node 3 never applied its log: {behind}"
        );
        if last_said.elapsed() > Duration::from_secs(30) {
            println!("   {:.0} s: {behind}", started.elapsed().as_secs_f64());
            last_said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let applied = started.elapsed();
    println!(
        "   node 3's data directory held {:.0} MiB; restarted empty, it answered health checks after {:.1} s, was a caught-up voter of all 64 partitions (its log whole) after {:.1} s, and had applied it all to its store after {:.1} s",
        size as f64 / (1 << 20) as f64,
        serving.as_secs_f64(),
        caught_up.as_secs_f64(),
        applied.as_secs_f64()
    );
    for node in &mut three.nodes {
        node.stop();
    }
    let mut digests = Vec::new();
    for n in 1..=3 {
        let path = data.join(format!("node-{n}")).join("events.redb");
        let store = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        digests.push(store.digest().unwrap());
        store.close().await.unwrap();
    }
    for n in 1..3 {
        let differences = digests[0].differences(&digests[n], 10);
        println!(
            "   node {} against node 1: {} events in {} streams, {} processed commands, {} read-model tables: {}",
            n + 1,
            digests[n].events(),
            digests[n].streams.len(),
            digests[n].processed_commands.rows,
            digests[n].read_models.len(),
            if differences.is_empty() {
                "equal".to_owned()
            } else {
                differences.join("; ")
            }
        );
    }
}

/// Bytes in the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
