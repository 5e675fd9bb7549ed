//! The cluster against the real binary: three `config/local-cluster` processes route every
//! command to its owner, see a dead owner at once and serve its data when it returns, and
//! refuse what would make two owners of one aggregate.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::cluster::{ClusterOptions, TestCluster};
use support::{Node, NodeOptions, get_as, json_of, post_as, token};

/// Opens accounts through node `via`'s edge until every node owns at least `per_node`; returns
/// `(id, owner index)` for each.
async fn accounts_on_every_node(
    cluster: &TestCluster,
    via: usize,
    per_node: usize,
) -> Vec<(String, usize)> {
    let writer = token("alice", &["writer"]);
    let mut opened = Vec::new();
    for _ in 0..200 {
        let response = post_as(
            cluster.node(via),
            "/api/v1/accounts",
            &writer,
            json!({"owner": "alice", "initial_balance": 100}),
        )
        .await;
        let id = json_of(response, StatusCode::CREATED).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let owner = cluster.owner_of("accounts", &format!("account-{id}"));
        opened.push((id, owner));
        let fewest = (0..cluster.nodes.len())
            .map(|n| opened.iter().filter(|(_, o)| *o == n).count())
            .min()
            .unwrap();
        if fewest >= per_node {
            return opened;
        }
    }
    panic!("200 accounts did not spread over the nodes: {opened:?}");
}

/// Each node's log end, as `/admin/projections` says.
async fn log_ends(cluster: &TestCluster) -> Vec<u64> {
    let mut ends = Vec::new();
    for n in 0..cluster.nodes.len() {
        let view = json_of(
            get_as(
                cluster.node(n),
                "/admin/projections",
                &token("ops", &["admin"]),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        ends.push(view["log_end"].as_u64().unwrap());
    }
    ends
}

#[tokio::test]
async fn commands_through_one_edge_land_on_their_owners_and_every_edge_reads_them() {
    let cluster = TestCluster::start(&ClusterOptions::default()).await;
    let accounts = accounts_on_every_node(&cluster, 0, 2).await;
    // Each account's one event is in its owner's log, and only there.
    let ends = log_ends(&cluster).await;
    for (n, end) in ends.iter().enumerate() {
        let owned = accounts.iter().filter(|(_, owner)| *owner == n).count() as u64;
        assert_eq!(*end, owned, "node-{} log end: {ends:?}", n + 1);
    }
    // Credits through node 2's edge, reads through every edge.
    let writer = token("alice", &["writer"]);
    for (id, _) in &accounts {
        let response = post_as(
            cluster.node(1),
            &format!("/api/v1/accounts/{id}/credit"),
            &writer,
            json!({"amount": 5}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    for (id, _) in &accounts {
        for n in 0..3 {
            let account = json_of(
                get_as(cluster.node(n), &format!("/api/v1/accounts/{id}"), &writer).await,
                StatusCode::OK,
            )
            .await;
            assert_eq!(account["balance"], 105, "{id} through node-{}", n + 1);
            let history = json_of(
                get_as(
                    cluster.node(n),
                    &format!("/api/v1/accounts/{id}/events"),
                    &writer,
                )
                .await,
                StatusCode::OK,
            )
            .await;
            assert_eq!(history["events"].as_array().unwrap().len(), 2);
        }
    }
    // Ownership checks hold across nodes: someone else's account is not found anywhere.
    let mallory = token("mallory", &["writer"]);
    let (id, _) = &accounts[0];
    for n in 0..3 {
        let response = get_as(cluster.node(n), &format!("/api/v1/accounts/{id}"), &mallory).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_killed_owner_answers_503_at_once_and_serves_its_data_intact_when_back() {
    let mut cluster = TestCluster::start(&ClusterOptions::default()).await;
    let accounts = accounts_on_every_node(&cluster, 0, 2).await;
    let writer = token("alice", &["writer"]);
    cluster.nodes[1].kill9();
    let killed = Instant::now();
    // Node 2's partitions answer 503 + Retry-After within 2 s, through either other edge.
    let on_two: Vec<&String> = accounts
        .iter()
        .filter(|(_, owner)| *owner == 1)
        .map(|(id, _)| id)
        .collect();
    let first_503 = loop {
        let response = get_as(
            cluster.node(0),
            &format!("/api/v1/accounts/{}", on_two[0]),
            &writer,
        )
        .await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(response.headers().contains_key("retry-after"));
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "no 503 within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("first 503 for a dead owner's account after {first_503:?}");
    assert!(first_503 < Duration::from_secs(2), "{first_503:?}");
    // Answered at once, not after a timeout, and the rest keep serving.
    for id in &on_two {
        let asked = Instant::now();
        let response = post_as(
            cluster.node(2),
            &format!("/api/v1/accounts/{id}/credit"),
            &writer,
            json!({"amount": 1}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "{:?}",
            asked.elapsed()
        );
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:playhouse:problem:unavailable");
    }
    for (id, owner) in accounts.iter().filter(|(_, owner)| *owner != 1) {
        let response = post_as(
            cluster.node(0),
            &format!("/api/v1/accounts/{id}/credit"),
            &writer,
            json!({"amount": 1}),
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{id} on node-{}",
            owner + 1
        );
    }
    // Back: its partitions serve again, with every event it had.
    cluster.nodes[1].restart();
    cluster.wait_all_up(Duration::from_secs(20)).await;
    for id in &on_two {
        let account = json_of(
            get_as(cluster.node(0), &format!("/api/v1/accounts/{id}"), &writer).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(account["balance"], 100);
        assert_eq!(account["version"], 1);
    }
}

#[tokio::test]
async fn a_wrong_cookie_or_another_member_list_never_joins() {
    let cluster = TestCluster::start(&ClusterOptions::default()).await;
    // A fourth process claiming to be node-1 (which dials the others) with another cookie, on
    // its own port and data: its links are refused at the handshake.
    let dir = tempfile::tempdir().unwrap();
    let mut ports = cluster.ports.clone();
    ports[0] = support::cluster::free_port();
    let mut env = support::cluster::node_env(&cluster.dir, 1, &ports, &ClusterOptions::default());
    env.retain(|(name, _)| name != "PLAYHOUSE_DATA_DIR");
    env.push((
        "PLAYHOUSE_DATA_DIR".into(),
        dir.path().join("data").display().to_string(),
    ));
    env.push((
        "PLAYHOUSE_CLUSTER_COOKIE".into(),
        "not-the-cluster-cookie-at-all".into(),
    ));
    let impostor = Node::launch(
        support::cluster::shipped_config(1),
        env,
        dir.path().join("impostor.log"),
        &NodeOptions::default(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = json_of(
        get_as(&impostor, "/admin/cluster", &token("ops", &["admin"])).await,
        StatusCode::OK,
    )
    .await;
    for member in view["members"].as_array().unwrap() {
        assert_ne!(member["status"], "up", "{view}");
    }
    let log = impostor.log_text();
    assert!(log.contains("same cluster cookie"), "{log}");
    // The real members are unaffected.
    cluster.wait_all_up(Duration::from_secs(5)).await;
    drop(impostor);

    // A node whose member list differs (it adds itself, node-0, to the three) is refused: its
    // heartbeats carry another placement fingerprint. Named node-0, it dials the others.
    let dir = tempfile::tempdir().unwrap();
    let own_port = support::cluster::free_port();
    let members = support::cluster::members_toml(&cluster.ports).replacen(
        "[",
        &format!(
            "[{{ name = \"node-0\", address = \"127.0.0.1:{own_port}\", services = {} }}, ",
            services_toml()
        ),
        1,
    );
    let mut env =
        support::cluster::node_env(&cluster.dir, 1, &cluster.ports, &ClusterOptions::default());
    env.retain(|(name, _)| {
        !matches!(
            name.as_str(),
            "PLAYHOUSE_DATA_DIR" | "PLAYHOUSE_CLUSTER__MEMBERS" | "PLAYHOUSE_CLUSTER__LISTEN"
        )
    });
    env.extend([
        (
            "PLAYHOUSE_DATA_DIR".to_owned(),
            dir.path().join("data").display().to_string(),
        ),
        ("PLAYHOUSE_NODE_NAME".into(), "node-0".into()),
        (
            "PLAYHOUSE_CLUSTER__LISTEN".into(),
            format!("127.0.0.1:{own_port}"),
        ),
        ("PLAYHOUSE_CLUSTER__MEMBERS".into(), members),
    ]);
    let placed_differently = Node::launch(
        support::cluster::shipped_config(1),
        env,
        dir.path().join("different.log"),
        &NodeOptions::default(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = json_of(
            get_as(
                &placed_differently,
                "/admin/cluster",
                &token("ops", &["admin"]),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        let members = view["members"].as_array().unwrap();
        if members.iter().all(|member| member["status"] == "refused") {
            assert!(
                members[0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("placed differently"),
                "{view}"
            );
            break;
        }
        for member in members {
            assert_ne!(member["status"], "up", "{view}");
        }
        assert!(Instant::now() < deadline, "not refused within 10 s: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The members do not list it, and their own links never dropped.
    let seen_by_one = cluster.view(0).await;
    assert_eq!(
        seen_by_one["members"].as_array().unwrap().len(),
        2,
        "{seen_by_one}"
    );
    cluster.wait_all_up(Duration::from_secs(5)).await;
}

fn services_toml() -> String {
    let quoted: Vec<String> = support::cluster::SERVICES
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect();
    format!("[{}]", quoted.join(", "))
}

#[tokio::test]
async fn a_node_refuses_to_start_on_another_nodes_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &NodeOptions::default());
    assert!(node.terminate().success());
    // The same data dir under another node name.
    let config = std::fs::read_to_string(node.config_path()).unwrap();
    let renamed = dir.path().join("renamed.toml");
    std::fs::write(
        &renamed,
        config.replace("node_name = \"test-node\"", "node_name = \"impostor\""),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_playhouse"))
        .args(["node", "--config"])
        .arg(&renamed)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("belongs to node `test-node`, and this is node `impostor`"),
        "{stderr}"
    );
    // Its own node still starts on it.
    node.restart();
}
