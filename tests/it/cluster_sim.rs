//! Cluster behaviour that needs no real process, on the simulated cluster (`support::sim`):
//! three nodes in this process, on the in-memory network and paused time, so that waits of
//! seconds cost none. The real-process tests (`cluster.rs`) keep what only real processes show:
//! kill -9, SIGSTOP, iptables cut-offs, TLS, cookies, start-up refusals.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::{Answer, Api, Call};
use crate::support::sim::{NODES, SimApi, SimCluster};
use crate::support::token;

/// Sends `call` through node `via` and expects `status`; the body.
async fn expect(api: &SimApi, via: usize, call: Call, status: StatusCode) -> Value {
    let path = call.path.clone();
    match api.send(via, call).await {
        Answer::Status(got, body) if got == status => body,
        other => panic!("{path} through node {via}: {other:?}, expected {status}"),
    }
}

/// Opens accounts through node `via` until every node owns at least `per_node`; (id, owner).
async fn accounts_on_every_node(
    cluster: &SimCluster,
    via: usize,
    per_node: usize,
) -> Vec<(String, usize)> {
    let (api, writer) = (cluster.api(), token("alice", &["writer"]));
    let mut opened = Vec::new();
    for n in 0..200 {
        let open = Call::post(
            "/api/v1/accounts",
            &writer,
            json!({"owner": "alice", "initial_balance": 100}),
        )
        .with_key(format!("open-{n}"));
        let account = expect(&api, via, open, StatusCode::CREATED).await;
        let id = account["id"].as_str().unwrap().to_owned();
        let owner = cluster.owner_of("accounts", &format!("account-{id}"));
        opened.push((id, owner));
        if (0..NODES).all(|n| opened.iter().filter(|(_, o)| *o == n).count() >= per_node) {
            return opened;
        }
    }
    panic!("200 accounts did not spread over the nodes: {opened:?}");
}

fn in_paused_time<F: std::future::Future>(test: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(test)
}

#[test]
fn commands_through_one_edge_land_on_their_owners_and_every_edge_reads_them() {
    in_paused_time(async {
        let mut cluster = SimCluster::start(1, false).await;
        let api = cluster.api();
        let accounts = accounts_on_every_node(&cluster, 0, 2).await;
        // Each account's one event is in its owner's log, and only there.
        let admin = token("ops", &["admin"]);
        for n in 0..NODES {
            let view = expect(
                &api,
                n,
                Call::get("/admin/projections", &admin),
                StatusCode::OK,
            )
            .await;
            let owned = accounts.iter().filter(|(_, owner)| *owner == n).count() as u64;
            assert_eq!(view["log_end"], owned, "node {n}: {view}");
        }
        // Credits through node 1's edge, reads through every edge.
        let writer = token("alice", &["writer"]);
        for (id, _) in &accounts {
            let credit = Call::post(
                format!("/api/v1/accounts/{id}/credit"),
                &writer,
                json!({"amount": 5}),
            );
            expect(&api, 1, credit, StatusCode::OK).await;
        }
        for (id, _) in &accounts {
            for n in 0..NODES {
                let read = Call::get(format!("/api/v1/accounts/{id}"), &writer);
                let account = expect(&api, n, read, StatusCode::OK).await;
                assert_eq!(account["balance"], 105, "{id} through node {n}");
                let history = Call::get(format!("/api/v1/accounts/{id}/events"), &writer);
                let history = expect(&api, n, history, StatusCode::OK).await;
                assert_eq!(history["events"].as_array().unwrap().len(), 2);
            }
        }
        // Ownership holds across nodes: someone else's account is not found anywhere.
        let mallory = token("mallory", &["writer"]);
        let (id, _) = &accounts[0];
        for n in 0..NODES {
            let read = Call::get(format!("/api/v1/accounts/{id}"), &mallory);
            expect(&api, n, read, StatusCode::NOT_FOUND).await;
        }
        cluster.tear_down();
    });
}

#[test]
fn a_node_restarted_on_an_emptied_disk_does_not_serve_or_write() {
    in_paused_time(async {
        let mut cluster = SimCluster::start(2, false).await;
        let api = cluster.api();
        let admin = token("ops", &["admin"]);
        let accounts = accounts_on_every_node(&cluster, 0, 1).await;
        let (on_three, _) = accounts.iter().find(|(_, owner)| *owner == 2).unwrap();
        // The peers have heard node 3's log end (heartbeats carry it) before its disk is lost.
        let owned = accounts.iter().filter(|(_, owner)| *owner == 2).count() as u64;
        let heard = |view: &Value| {
            view["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "node-3")
                .and_then(|m| m["log_end"].as_u64())
        };
        while heard(&expect(&api, 0, Call::get("/admin/cluster", &admin), StatusCode::OK).await)
            != Some(owned)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Node 3 dials no one (its name sorts last): after 6 s down, the others redial it only
        // every few seconds, and it must not serve while it waits for them.
        cluster.crash_and_wipe(2);
        tokio::time::sleep(Duration::from_secs(6)).await;
        cluster.restart(2).await;
        // It waits (not serving) for a peer, which then tells it that it has lost data.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let view = expect(&api, 2, Call::get("/admin/cluster", &admin), StatusCode::OK).await;
            assert_eq!(view["serving"], false, "{view}");
            if view["not_serving_reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("saw this node's log"))
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{view}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Its accounts are not served empty, through its own edge or another's; nor written.
        let writer = token("alice", &["writer"]);
        for via in [0, 2] {
            let read = Call::get(format!("/api/v1/accounts/{on_three}"), &writer);
            expect(&api, via, read, StatusCode::SERVICE_UNAVAILABLE).await;
            let credit = Call::post(
                format!("/api/v1/accounts/{on_three}/credit"),
                &writer,
                json!({"amount": 1}),
            );
            expect(&api, via, credit, StatusCode::SERVICE_UNAVAILABLE).await;
        }
        let health = expect(
            &api,
            2,
            Call::get("/health", &admin),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
        assert!(health.to_string().contains("log"), "{health}");
        // The operations page, opened on another node, shows it not serving, and why.
        let overview = expect(
            &api,
            0,
            Call::get("/admin/overview", &admin),
            StatusCode::OK,
        )
        .await;
        let member = overview["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "node-3")
            .unwrap();
        assert_eq!(member["status"], "not_serving", "{member}");
        assert!(
            member["reason"].as_str().unwrap().contains("log"),
            "{member}"
        );
        cluster.tear_down();
    });
}

#[test]
fn a_clusters_direct_data_directory_is_refused_by_raft_naming_why_and_opens_as_before() {
    in_paused_time(async {
        let mut cluster = SimCluster::start(31, false).await;
        let accounts = accounts_on_every_node(&cluster, 0, 1).await;
        for n in 0..NODES {
            cluster.crash(n);
        }
        // Each member's store holds its own services' share of each partition: made the
        // replicas of Raft groups as they are, they would disagree from the first entry. The
        // data directory's placement (replication is part of it) refuses the switch.
        let to_raft = |config: &mut playhouse_runtime::config::NodeConfig| {
            config.store.journal = playhouse_runtime::config::JournalKind::Raft;
            config.cluster.replicated = true;
        };
        let (owner, _) = (0..NODES)
            .map(|n| (n, accounts.iter().filter(|(_, o)| *o == n).count()))
            .max_by_key(|(_, owned)| *owned)
            .unwrap();
        for attempt in ["first", "second"] {
            let error = cluster
                .try_restart_with(owner, to_raft)
                .await
                .expect_err("a cluster's direct data directory must not start on raft");
            assert!(
                error.contains("placed differently") && error.contains("store.journal"),
                "{attempt} start: {error}"
            );
        }
        // Back on the journal it was written with, it serves what it held.
        cluster
            .try_restart_with(owner, |config| {
                config.store.journal = playhouse_runtime::config::JournalKind::Direct;
                config.cluster.replicated = false;
            })
            .await
            .unwrap();
        for n in (0..NODES).filter(|n| *n != owner) {
            cluster.restart(n).await;
        }
        let reader = token("alice", &["writer"]);
        for (id, _) in accounts.iter().filter(|(_, o)| *o == owner) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match cluster
                    .api()
                    .send(owner, Call::get(format!("/api/v1/accounts/{id}"), &reader))
                    .await
                {
                    Answer::Status(StatusCode::OK, body) => {
                        assert_eq!(body["balance"], 100, "{body}");
                        break;
                    }
                    other => assert!(
                        tokio::time::Instant::now() < deadline,
                        "account {id} on its owner: {other:?}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
}
