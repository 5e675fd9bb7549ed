//! Backup and restore on real processes: a backup of a three-node cluster that keeps each
//! partition on two of them (so the member taking it fetches a third of the partitions from
//! the others), taken after the bank's load (`playhouse backup`), is restored into a new
//! three-node cluster of three replicas (`playhouse restore`). The new cluster answers what the old one answered at the backup's point: each
//! account's events are a prefix of the old cluster's, holding every credit acknowledged
//! before the backup began; a credit retried with its Idempotency-Key answers as it first did;
//! the transfers it holds all end. A restore into the cluster it was taken of is refused.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use playhouse_actors::accounts::transfers::TransferSaga;
use playhouse_runtime::placement::partition_of;
use playhouse_runtime::prelude::SagaKind;
use serde_json::{Value, json};

use crate::membership::{wait_placed, wait_placed_by};
use crate::support::api::{Http, Outcome};
use crate::support::cluster::{TestCluster, shipped_config};
use crate::support::ledger::{self, Acked, Clients, History, Op};
use crate::support::{TEST_KEY, client, token};
use crate::worst_day::{CLIENTS, raft_options};

#[test]
fn a_backup_of_a_running_cluster_restores_into_a_new_cluster_answering_what_the_old_one_did() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(back_up_and_restore());
}

/// Runs `playhouse ARGS --edge EDGE --config CONFIG` with the test key; its output.
fn playhouse(args: &[&str], edge: &str, config: std::path::PathBuf) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_playhouse"))
        .args(args)
        .args(["--edge", edge, "--config"])
        .arg(config)
        .env("PLAYHOUSE_JWT_KEY", TEST_KEY)
        .output()
        .unwrap()
}

/// An account's events as `node`'s edge reads them (type, version, data, causation).
async fn events_of(node: &crate::support::Node, id: &str) -> Vec<Value> {
    let admin = token("auditor", &["admin"]);
    let mut events = Vec::new();
    let mut from = 1u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client()
            .get(node.url(&format!("/api/v1/accounts/{id}/events?from_version={from}")))
            .bearer_auth(&admin)
            .send()
            .await;
        let page: Value = match answer {
            Ok(answer) if answer.status() == 200 => answer.json().await.unwrap(),
            // A partition changing leader answers 503: read again.
            other => {
                assert!(Instant::now() < deadline, "{id}'s events: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for event in page["events"].as_array().unwrap() {
            events.push(json!({
                "type": event["type"],
                "version": event["version"],
                "data": event["data"],
                "causation_id": event["causation_id"],
                "recorded_at": event["recorded_at"],
            }));
        }
        match page["next_from_version"].as_u64() {
            Some(next) => from = next,
            None => return events,
        }
    }
}

async fn back_up_and_restore() {
    let options = raft_options();
    // More members than replicas: no member holds every partition.
    let mut two_replicas = raft_options();
    two_replicas
        .env
        .push(("PLAYHOUSE_CLUSTER__REPLICATION_FACTOR".into(), "2".into()));
    let old = TestCluster::start(&two_replicas).await;
    old.wait_settled(Duration::from_secs(30)).await;
    wait_placed_by(&old, &["node-1", "node-2", "node-3"], 2).await;
    let edges = Arc::new(RwLock::new(
        old.nodes.iter().map(|n| n.url("")).collect::<Vec<_>>(),
    ));
    let api = Arc::new(Http::new(edges.clone(), Duration::from_secs(5)));
    let mut opened = 0;
    let mut ids = || {
        opened += 1;
        format!("backup-{opened}")
    };
    // node-2, which takes the backup, lacks some partitions: accounts are opened until one
    // lives in a partition the backup fetches from another member.
    let held: Vec<u64> = old.view(1).await["replication"]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|group| group["partition"].as_u64().filter(|p| *p < 64))
        .collect();
    assert!(held.len() < 64, "node-2 holds every partition");
    let elsewhere =
        |id: &String| !held.contains(&u64::from(partition_of(&format!("account-{id}"), 64)));
    let mut accounts = Vec::new();
    while !accounts.iter().any(elsewhere) {
        assert!(
            accounts.len() < 40,
            "no account outside node-2's partitions"
        );
        let opened = ledger::open_accounts(
            api.as_ref(),
            2,
            |stream| old.owner_of("accounts", stream),
            &mut ids,
        )
        .await;
        accounts.extend(opened);
    }
    let fetched: Vec<&String> = accounts.iter().filter(|id| elsewhere(id)).collect();
    let history: History = Arc::new(Mutex::new(Vec::new()));
    let acked = Acked::default();
    let clients = Clients::start(
        CLIENTS,
        (5, 40),
        (0xd1e, 0),
        &api,
        &accounts,
        &history,
        &acked,
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    clients.stop().await;
    // A quiet moment (see `replication::backup`: partitions are cut one at a time, so a saga
    // moving money while the backup runs could be cut in half): every transfer ended.
    ledger::sagas_settled(
        api.as_ref(),
        &[<TransferSaga as SagaKind>::KIND],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let mut at_backup = Vec::new();
    let mut balances_at_backup = Vec::new();
    for id in &accounts {
        at_backup.push(events_of(&old.nodes[0], id).await);
        balances_at_backup.push(balance_of(&old.nodes[0], id).await);
    }

    // The backup, through node-2's edge, of the running cluster. node-2 lacks some
    // partitions: those are copied on their leaders and fetched.
    println!(
        "backup test: node-2 holds {} of the 64 partitions; accounts in the others: {fetched:?}",
        held.len()
    );
    let began = tokio::time::Instant::now();
    let kept = tempfile::tempdir().unwrap();
    let file = kept.path().join("cluster.backup");
    let edge = old.nodes[1].address();
    let (out, config) = (file.display().to_string(), shipped_config(2));
    let (backed_up, backup_took) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        (
            playhouse(&["backup", "--out", &out], &edge, config),
            started.elapsed(),
        )
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&backed_up.stdout).into_owned();
    assert!(
        backed_up.status.success(),
        "playhouse backup: {said} {}",
        String::from_utf8_lossy(&backed_up.stderr)
    );
    println!(
        "backup test: {} (the command took {backup_took:.1?})",
        said.trim()
    );

    // The old cluster moves on.
    let clients = Clients::start(
        CLIENTS,
        (5, 40),
        (0xd1e, 1),
        &api,
        &accounts,
        &history,
        &acked,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    clients.stop().await;

    // Back into the cluster it was taken of: refused.
    let refused = playhouse(
        &["restore", "--from", &file.display().to_string()],
        &old.nodes[0].address(),
        shipped_config(1),
    );
    let complaint = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && complaint.contains("a restore starts a new cluster"),
        "a restore into the old cluster: {:?} {complaint}",
        refused.status
    );

    // What the old cluster holds now; then it stops (one test cluster runs at a time).
    let mut moved_on = 0;
    for (id, then) in accounts.iter().zip(&at_backup) {
        let now = events_of(&old.nodes[0], id).await;
        assert!(
            now.starts_with(then),
            "{id}: the old cluster's history changed"
        );
        moved_on += now.len() - then.len();
    }
    drop(old);

    // A new cluster, restored from the backup.
    let new = TestCluster::start(&options).await;
    new.wait_settled(Duration::from_secs(30)).await;
    wait_placed(&new, &["node-1", "node-2", "node-3"]).await;
    let restore_started = Instant::now();
    let restored = playhouse(
        &["restore", "--from", &file.display().to_string()],
        &new.nodes[0].address(),
        shipped_config(1),
    );
    let restored_said = String::from_utf8_lossy(&restored.stdout).into_owned();
    assert!(
        restored.status.success(),
        "playhouse restore: {restored_said} {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    println!(
        "backup test: {} (took {:.1?})",
        restored_said.lines().last().unwrap_or(""),
        restore_started.elapsed()
    );

    // Each account, through every edge of the new cluster: what the old one held at the
    // backup, event for event (times and causes included), not what it wrote after.
    for (id, then) in accounts.iter().zip(&at_backup) {
        for node in &new.nodes {
            let restored = events_of(node, id).await;
            assert_eq!(&restored, then, "{id} through {}", node.url(""));
        }
    }
    println!(
        "backup test: {} accounts as at the backup; the {moved_on} events the old cluster wrote after it are not in the new one",
        accounts.len()
    );

    // A credit acknowledged before the backup, retried with its key, answers as it did.
    let first_credit =
        history
            .lock()
            .unwrap()
            .iter()
            .find_map(|entry| match (&entry.op, &entry.outcome) {
                (
                    Op::Credit {
                        key,
                        account,
                        amount,
                    },
                    Outcome::Ok(body),
                ) if entry.at < began => Some((key.clone(), *account, *amount, body.clone())),
                _ => None,
            });
    let (key, account, amount, first_answer) =
        first_credit.expect("a credit acknowledged before the backup");
    let again: Value = client()
        .post(new.nodes[2].url(&format!("/api/v1/accounts/{}/credit", accounts[account])))
        .bearer_auth(token(ledger::SUBJECT, &["writer"]))
        .header("Idempotency-Key", key)
        .json(&json!({ "amount": amount }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["version"], first_answer["version"],
        "a retried credit: {again} first answered {first_answer}"
    );

    // Every transfer in the new cluster has ended, and each balance is the old one's.
    let new_api = Http::new(
        Arc::new(RwLock::new(new.nodes.iter().map(|n| n.url("")).collect())),
        Duration::from_secs(5),
    );
    ledger::sagas_settled(
        &new_api,
        &[<TransferSaga as SagaKind>::KIND],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    for (id, then) in accounts.iter().zip(&balances_at_backup) {
        assert_eq!(&balance_of(&new.nodes[1], id).await, then, "{id}'s balance");
    }
}

/// An account's balance as `node`'s edge reads it.
async fn balance_of(node: &crate::support::Node, id: &str) -> i64 {
    let admin = token("auditor", &["admin"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client()
            .get(node.url(&format!("/api/v1/accounts/{id}")))
            .bearer_auth(&admin)
            .send()
            .await;
        match answer {
            Ok(answer) if answer.status() == 200 => {
                let account: Value = answer.json().await.unwrap();
                return account["balance"].as_i64().unwrap();
            }
            other => {
                assert!(Instant::now() < deadline, "{id}: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
