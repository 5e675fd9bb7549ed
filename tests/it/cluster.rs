//! The cluster against the real binary: three `config/local-cluster` processes route every
//! command to its owner, see a dead owner at once and serve its data when it returns, and
//! refuse what would make two owners of one aggregate.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::cluster::{ClusterOptions, TestCluster, admin_view};
use crate::support::netns::{self, CutOff};
use crate::support::tls::TestCa;
use crate::support::{Node, NodeOptions, get_as, json_of, post_as, token};
use reqwest::StatusCode;
use serde_json::json;

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

/// How long after `since` node `via`'s edge first answers account `id` with 503 and
/// `Retry-After` (polling every 10 ms); panics after 5 s.
async fn first_503(cluster: &TestCluster, via: usize, id: &str, since: Instant) -> Duration {
    let writer = token("alice", &["writer"]);
    loop {
        let response = get_as(
            cluster.node(via),
            &format!("/api/v1/accounts/{id}"),
            &writer,
        )
        .await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(response.headers().contains_key("retry-after"));
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "no 503 from node-{} within 5 s",
            via + 1
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The members an `/admin/cluster` view lists, less the node that answered.
fn peers_in(view: &serde_json::Value) -> Vec<&serde_json::Value> {
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|member| member["this_node"] != true)
        .collect()
}

/// Waits until node `n` sees `peer` down; asserts that came within 2 s of `since`.
async fn seen_down_within_2_s(cluster: &TestCluster, n: usize, peer: usize, since: Instant) {
    cluster
        .wait_status(n, peer, "down", Duration::from_secs(5))
        .await;
    let after = since.elapsed();
    println!("node-{} saw node-{} down after {after:?}", n + 1, peer + 1);
    assert!(after < Duration::from_secs(2), "{after:?}");
}

/// Credits 1 to account `id` through node `via`, expecting 200.
async fn credit_works(cluster: &TestCluster, via: usize, id: &str) {
    let response = post_as(
        cluster.node(via),
        &format!("/api/v1/accounts/{id}/credit"),
        &token("alice", &["writer"]),
        json!({"amount": 1}),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{id} via node-{}",
        via + 1
    );
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
    let first_503 = first_503(&cluster, 0, on_two[0], killed).await;
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

/// The environment of a second "node-1" (the member that dials the others) on its own port
/// and data directory, kept in the returned directory.
fn another_node_one(cluster: &TestCluster) -> (tempfile::TempDir, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut ports = cluster.ports.clone();
    ports[0] = support::cluster::free_port();
    let mut env = support::cluster::node_env(&cluster.dir, 1, &ports, &ClusterOptions::default());
    env.retain(|(name, _)| name != "PLAYHOUSE_DATA_DIR");
    env.push((
        "PLAYHOUSE_DATA_DIR".into(),
        dir.path().join("data").display().to_string(),
    ));
    (dir, env)
}

/// Starts a node that must not join: after 2 s it sees no member up.
async fn launch_outsider(env: Vec<(String, String)>, log: std::path::PathBuf) -> Node {
    let outsider = Node::launch(
        support::cluster::shipped_config(1),
        env,
        log,
        &NodeOptions::default(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = admin_view(&outsider).await;
    for member in peers_in(&view) {
        assert_ne!(member["status"], "up", "{view}");
    }
    outsider
}

#[tokio::test]
async fn a_wrong_cookie_or_another_member_list_never_joins() {
    let cluster = TestCluster::start(&ClusterOptions::default()).await;
    // A fourth process claiming to be node-1 (which dials the others) with another cookie, on
    // its own port and data: its links are refused at the handshake.
    let (dir, mut env) = another_node_one(&cluster);
    env.push((
        "PLAYHOUSE_CLUSTER_COOKIE".into(),
        "not-the-cluster-cookie-at-all".into(),
    ));
    let impostor = launch_outsider(env, dir.path().join("impostor.log")).await;
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
        &format!("[{{ name = \"node-0\", address = \"127.0.0.1:{own_port}\" }}, "),
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
        let view = admin_view(&placed_differently).await;
        let members = peers_in(&view);
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
    // It never serves: no peer shares its member list, so none can confirm its store, and
    // the partitions it believes it owns are the real owners' to write.
    let writer = token("alice", &["writer"]);
    for _ in 0..8 {
        let response = post_as(
            &placed_differently,
            "/api/v1/accounts",
            &writer,
            json!({"owner": "alice", "initial_balance": 1}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let view = admin_view(&placed_differently).await;
    assert_eq!(view["serving"], false, "{view}");
    // Still not after a while (an earlier version served after a 3 s grace).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let response = post_as(
        &placed_differently,
        "/api/v1/accounts",
        &writer,
        json!({"owner": "alice", "initial_balance": 1}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The members do not list it (node-1 lists the three members, itself included), and their
    // own links never dropped.
    let seen_by_one = cluster.view(0).await;
    assert_eq!(
        seen_by_one["members"].as_array().unwrap().len(),
        3,
        "{seen_by_one}"
    );
    cluster.wait_all_up(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_node_refuses_to_start_on_another_nodes_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &NodeOptions::default());
    // SIGTERM at once: the node may still be finishing its start, and must stop cleanly.
    let stopped = node.terminate();
    assert!(stopped.success(), "{stopped:?}\n{}", node.log_text());
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

/// Products (one owned by each node), stock and a customer with credit, made through node 0.
struct Shop {
    /// One stocked product per node, with its inventory's owner, in owner order.
    products: Vec<(String, usize)>,
    /// Every product made on the way.
    created: Vec<String>,
    customer: String,
}

async fn shop(cluster: &TestCluster, stock: u64) -> Shop {
    let (mut products, mut created) = (Vec::new(), Vec::new());
    for n in 0..60 {
        let id = support::create_product(cluster.node(0), "shop", &format!("SKU-{n}"), 100).await;
        created.push(id.clone());
        let owner = cluster.owner_of("inventory", &format!("inventory-{id}"));
        if products.iter().all(|(_, o)| *o != owner) {
            support::receive_stock(cluster.node(0), "shop", &id, stock).await;
            products.push((id, owner));
        }
        if products.len() == cluster.nodes.len() {
            products.sort_by_key(|(_, owner)| *owner);
            let customer = support::register_customer(cluster.node(0), "ada", 1_000_000).await;
            return Shop {
                products,
                created,
                customer,
            };
        }
    }
    panic!("60 products did not spread over the nodes: {products:?}");
}

/// Where an order's pieces live: its order and saga, its payment.
#[derive(Debug)]
struct OrderOwners {
    order: usize,
    saga: usize,
    payment: usize,
}

fn owners_of_order(cluster: &TestCluster, id: &str) -> OrderOwners {
    let payment = playhouse_actors::payments::payment_id_for(id);
    OrderOwners {
        order: cluster.owner_of("orders", &format!("order-{id}")),
        saga: cluster.owner_of("orders", &format!("order_saga-{id}")),
        payment: cluster.owner_of("payments", &format!("payment-{payment}")),
    }
}

/// Places a one-line order through node `via`: its id, or the status when not accepted.
async fn place_order(
    cluster: &TestCluster,
    via: usize,
    customer: &str,
    product: &str,
) -> Result<String, StatusCode> {
    let body = json!({"customer_id": customer, "lines": [{"product_id": product, "quantity": 1}]});
    let response = post_as(
        cluster.node(via),
        "/api/v1/orders",
        &token("ada", &["writer"]),
        body,
    )
    .await;
    if response.status() != StatusCode::ACCEPTED {
        return Err(response.status());
    }
    let placed: serde_json::Value = response.json().await.unwrap();
    Ok(placed["order_id"].as_str().unwrap().to_owned())
}

async fn available(cluster: &TestCluster, via: usize, product: &str) -> u64 {
    let stock = json_of(
        get_as(
            cluster.node(via),
            &format!("/api/v1/inventory/{product}"),
            &token("ada", &["reader"]),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    stock["available"].as_u64().unwrap()
}

#[tokio::test]
async fn an_order_spread_over_three_nodes_is_confirmed_and_one_whose_payment_owner_is_down_is_cancelled()
 {
    let mut cluster = TestCluster::start(&ClusterOptions::default()).await;
    let shop = shop(&cluster, 1_000).await;
    let ada = token("ada", &["writer"]);

    // Stock, payment and order on three different nodes: placed through node 1's edge.
    let mut spread = None;
    for attempt in 0..200 {
        let (product, stock_owner) = &shop.products[attempt % 3];
        let id = place_order(&cluster, 0, &shop.customer, product)
            .await
            .unwrap();
        let owners = owners_of_order(&cluster, &id);
        let order = support::settled(cluster.node(0), &format!("/api/v1/orders/{id}"), &ada).await;
        assert_eq!(order["status"], "confirmed", "{owners:?}: {order}");
        let mut nodes = [*stock_owner, owners.order, owners.payment];
        nodes.sort_unstable();
        if nodes == [0, 1, 2] {
            spread = Some((id, owners, *stock_owner));
            break;
        }
    }
    let (id, owners, stock_owner) = spread.expect("no order spread over three nodes in 200");
    println!("order {id}: stock on node-{}, {owners:?}", stock_owner + 1);
    let payment = playhouse_actors::payments::payment_id_for(&id);
    for via in 0..3 {
        let payment = json_of(
            get_as(
                cluster.node(via),
                &format!("/api/v1/payments/{payment}"),
                &ada,
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(payment["status"], "authorized", "{payment}");
    }

    // Node 3 dies. An order it would pay for runs out of the step's retries and is cancelled,
    // with its stock given back; one whose order lives there is refused at once.
    cluster.nodes[2].kill9();
    cluster
        .wait_status(0, 2, "down", Duration::from_secs(5))
        .await;
    let customer = if cluster.owner_of("customers", &format!("customer-{}", shop.customer)) == 2 {
        let mut other = None;
        for _ in 0..60 {
            // The node picks the id: one it places on the dead node-3 is refused (503).
            let registered = post_as(
                cluster.node(0),
                "/api/v1/customers",
                &token("ada", &["writer"]),
                json!({"name": "Ada", "email": "ada@example.com", "credit_limit": 1_000_000}),
            )
            .await;
            if registered.status() == StatusCode::SERVICE_UNAVAILABLE {
                continue;
            }
            let id = json_of(registered, StatusCode::CREATED).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_ne!(cluster.owner_of("customers", &format!("customer-{id}")), 2);
            other = Some(id);
            break;
        }
        other.expect("no customer off node-3 in 60")
    } else {
        shop.customer.clone()
    };
    let (product, _) = &shop.products[0];
    let mut refused_at_once = 0;
    for _ in 0..200 {
        let before = available(&cluster, 0, product).await;
        match place_order(&cluster, 0, &customer, product).await {
            Err(status) => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                refused_at_once += 1;
            }
            Ok(id) => {
                let owners = owners_of_order(&cluster, &id);
                assert!(owners.order != 2 && owners.saga != 2, "{owners:?}");
                let path = format!("/api/v1/orders/{id}");
                let order = support::settled(cluster.node(1), &path, &ada).await;
                if owners.payment != 2 {
                    assert_eq!(order["status"], "confirmed", "{order}");
                    continue;
                }
                assert_eq!(order["status"], "cancelled", "{order}");
                let reason = order["reason"].as_str().unwrap();
                assert!(reason.contains("payment"), "{reason}");
                println!(
                    "order {id} cancelled: {reason} ({refused_at_once} refused at once before it)"
                );
                let deadline = Instant::now() + Duration::from_secs(10);
                while available(&cluster, 1, product).await != before {
                    assert!(Instant::now() < deadline, "stock not released");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return;
            }
        }
    }
    panic!("no order with its payment on node-3 in 200");
}

#[tokio::test]
async fn a_paused_node_is_seen_down_within_2_s_and_rejoins_when_continued() {
    let cluster = TestCluster::start(&ClusterOptions::default()).await;
    let accounts = accounts_on_every_node(&cluster, 0, 1).await;
    let on_three = &accounts.iter().find(|(_, owner)| *owner == 2).unwrap().0;
    // SIGSTOP: its sockets stay open and its kernel still acknowledges TCP, so only the
    // heartbeats can tell.
    cluster.node(2).pause();
    let paused = Instant::now();
    // A request already on its way to the paused owner is answered when it is seen down,
    // not at the 5 s call timeout.
    let in_flight = tokio::spawn(
        support::client()
            .get(cluster.node(0).url(&format!("/api/v1/accounts/{on_three}")))
            .bearer_auth(token("alice", &["writer"]))
            .send(),
    );
    // And a credit: its ownership check (a read) is what waits on the paused owner, so the
    // command is never sent, and the answer says so: `unavailable`, not "outcome unknown".
    let credit = || {
        support::client()
            .post(
                cluster
                    .node(0)
                    .url(&format!("/api/v1/accounts/{on_three}/credit")),
            )
            .bearer_auth(token("alice", &["writer"]))
            .header("Idempotency-Key", "credit-sent-to-a-paused-owner")
            .json(&json!({"amount": 7}))
            .send()
    };
    let credit_in_flight = tokio::spawn(credit());
    for n in [0, 1] {
        seen_down_within_2_s(&cluster, n, 2, paused).await;
    }
    let first = first_503(&cluster, 0, on_three, paused).await;
    println!("first 503 for a paused owner's account after {first:?}");
    assert!(first < Duration::from_secs(2), "{first:?}");
    let answered = in_flight.await.unwrap().unwrap();
    println!(
        "the request in flight was answered after {:?}",
        paused.elapsed()
    );
    assert_eq!(answered.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        paused.elapsed() < Duration::from_millis(2500),
        "{:?}",
        paused.elapsed()
    );

    let refused = credit_in_flight.await.unwrap().unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:playhouse:problem:unavailable");

    cluster.node(2).resume();
    cluster.wait_all_up(Duration::from_secs(10)).await;
    // It was not applied: resent with its key, it applies now, once.
    let resent = credit().await.unwrap();
    assert_eq!(resent.status(), StatusCode::OK);
    let account: serde_json::Value = resent.json().await.unwrap();
    assert_eq!(account["balance"], 107, "{account}");
    credit_works(&cluster, 0, on_three).await;
}

#[test]
fn a_cut_off_node_is_seen_down_within_2_s_both_ways_and_rejoins_when_healed() {
    if !netns::inside() {
        return netns::rerun_inside(
            "cluster::a_cut_off_node_is_seen_down_within_2_s_both_ways_and_rejoins_when_healed",
        );
    }
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let cluster = TestCluster::start(&ClusterOptions::default()).await;
        let accounts = accounts_on_every_node(&cluster, 0, 1).await;
        let owned_by = |n: usize| &accounts.iter().find(|(_, owner)| *owner == n).unwrap().0;
        let cut = CutOff::port(cluster.ports[2]);
        let cut_at = Instant::now();
        // Both sides see the other down: node 3 loses both peers, they lose node 3 only.
        for (n, peer) in [(0, 2), (1, 2), (2, 0), (2, 1)] {
            seen_down_within_2_s(&cluster, n, peer, cut_at).await;
        }
        assert_eq!(cluster.status_seen(0, 1).await.as_deref(), Some("up"));
        // Each side answers 503 for what the other owns, and serves its own.
        let first = first_503(&cluster, 0, owned_by(2), cut_at).await;
        println!("first 503 for a cut-off owner's account after {first:?}");
        assert!(first < Duration::from_secs(2), "{first:?}");
        first_503(&cluster, 2, owned_by(0), cut_at).await;
        credit_works(&cluster, 2, owned_by(2)).await;
        credit_works(&cluster, 1, owned_by(0)).await;

        cut.heal();
        let healed = Instant::now();
        cluster.wait_all_up(Duration::from_secs(15)).await;
        println!(
            "all up again {:?} after the rules were removed",
            healed.elapsed()
        );
        credit_works(&cluster, 0, owned_by(2)).await;
        credit_works(&cluster, 2, owned_by(0)).await;
    });
}

/// Every item of a list, paged through node `via` with `limit` per page; also the members any
/// page said were missing.
async fn list_all(
    cluster: &TestCluster,
    via: usize,
    path: &str,
    limit: usize,
) -> (Vec<serde_json::Value>, Vec<String>) {
    let reader = token("ada", &["reader"]);
    let (mut items, mut missing) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    let separator = if path.contains('?') { '&' } else { '?' };
    for _ in 0..1000 {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = json_of(
            get_as(cluster.node(via), &url, &reader).await,
            StatusCode::OK,
        )
        .await;
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit, "{page}");
        items.extend(got.iter().cloned());
        for member in page["missing_members"].as_array().into_iter().flatten() {
            missing.push(member.as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                missing.sort();
                missing.dedup();
                return (items, missing);
            }
        }
    }
    panic!("{path}: more than 1000 pages");
}

#[tokio::test]
async fn lists_gather_every_members_part_and_say_which_are_missing() {
    let mut cluster = TestCluster::start(&ClusterOptions::default()).await;
    let shop = shop(&cluster, 100).await;
    let mut products: Vec<(String, usize)> = shop
        .created
        .iter()
        .map(|id| {
            let owner = cluster.owner_of("catalog", &format!("product-{id}"));
            (id.clone(), owner)
        })
        .collect();
    products.sort();
    let ids = |items: &[serde_json::Value], field: &str| -> Vec<String> {
        items
            .iter()
            .map(|item| item[field].as_str().unwrap().to_owned())
            .collect()
    };

    // The catalog through every edge, two at a time: every product once, in id order.
    let all_ids: Vec<String> = products.iter().map(|(id, _)| id.clone()).collect();
    for via in 0..3 {
        let (items, missing) = list_all(&cluster, via, "/api/v1/products", 2).await;
        assert_eq!(ids(&items, "id"), all_ids, "through node-{}", via + 1);
        assert!(missing.is_empty());
    }

    // A customer's orders live with their owners; the list through any edge has them all,
    // and with min_position it has the one just placed (read your writes, across nodes).
    let mut placed = Vec::new();
    for n in 0..6 {
        let (product, _) = &shop.products[n % 3];
        let body = json!({"customer_id": shop.customer, "lines": [{"product_id": product, "quantity": 1}]});
        let response = post_as(
            cluster.node(n % 3),
            "/api/v1/orders",
            &token("ada", &["writer"]),
            body,
        )
        .await;
        let position = support::position_of(&response);
        let order = json_of(response, StatusCode::ACCEPTED).await;
        let id = order["order_id"].as_str().unwrap().to_owned();
        placed.push(id.clone());
        let path = format!(
            "/api/v1/orders?customer_id={}&min_position={position}&limit=100",
            shop.customer
        );
        let page = json_of(
            get_as(cluster.node((n + 1) % 3), &path, &token("ada", &["reader"])).await,
            StatusCode::OK,
        )
        .await;
        assert!(
            ids(page["items"].as_array().unwrap(), "order_id").contains(&id),
            "order {id} (owned by node-{}) missing from {page}",
            cluster.owner_of("orders", &format!("order-{id}")) + 1
        );
    }
    let owners: std::collections::BTreeSet<usize> = placed
        .iter()
        .map(|id| cluster.owner_of("orders", &format!("order-{id}")))
        .collect();
    println!("6 orders owned by nodes {owners:?}");
    placed.sort();
    let path = format!("/api/v1/orders?customer_id={}", shop.customer);
    let (items, _) = list_all(&cluster, 2, &path, 4).await;
    assert_eq!(ids(&items, "order_id"), placed);
    let path = format!("/api/v1/notifications?customer_id={}", shop.customer);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (items, _) = list_all(&cluster, 1, &path, 5).await;
        let told: std::collections::BTreeSet<String> = items
            .iter()
            .filter(|n| n["kind"] == "order-placed")
            .map(|n| n["order_id"].as_str().unwrap().to_owned())
            .collect();
        if told.len() == placed.len() {
            break;
        }
        assert!(Instant::now() < deadline, "notifications: {items:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Node 3 down: the list is what the others hold, and says node-3's part is missing.
    cluster.nodes[2].kill9();
    cluster
        .wait_status(0, 2, "down", Duration::from_secs(5))
        .await;
    let (items, missing) = list_all(&cluster, 0, "/api/v1/products", 2).await;
    products.retain(|(_, owner)| *owner != 2);
    let expected: Vec<String> = products.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids(&items, "id"), expected);
    assert_eq!(missing, ["node-3"]);
    // Read-your-writes cannot be promised without node 3's part: 503, not a page without it.
    let response = get_as(
        cluster.node(0),
        "/api/v1/products?min_position=0",
        &token("ada", &["reader"]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
}

#[test]
fn a_member_hosting_orders_without_notifications_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [support::cluster::free_port(), support::cluster::free_port()];
    let members = format!(
        "[{{ name = \"node-1\", address = \"127.0.0.1:{}\" }}, \
         {{ name = \"node-2\", address = \"127.0.0.1:{}\", services = [\"orders\"] }}]",
        ports[0], ports[1]
    );
    let output = Command::new(env!("CARGO_BIN_EXE_playhouse"))
        .args(["node", "--config"])
        .arg(support::cluster::shipped_config(1))
        .env("PLAYHOUSE_DATA_DIR", dir.path().join("data"))
        .env("PLAYHOUSE_CLUSTER__MEMBERS", members)
        .env(
            "PLAYHOUSE_CLUSTER__LISTEN",
            format!("127.0.0.1:{}", ports[0]),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("(node-2) hosts orders but not notifications"),
        "{stderr}"
    );
}

#[tokio::test]
async fn one_trace_id_runs_through_the_logs_of_both_nodes_of_a_call() {
    let options = ClusterOptions {
        log_level: "info,playhouse_runtime::edge::observe=debug,playhouse_runtime::cluster::inbound=debug",
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(&options).await;
    let accounts = accounts_on_every_node(&cluster, 0, 1).await;
    let on_two = &accounts.iter().find(|(_, owner)| *owner == 1).unwrap().0;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = support::client()
        .post(
            cluster
                .node(0)
                .url(&format!("/api/v1/accounts/{on_two}/credit")),
        )
        .bearer_auth(token("alice", &["writer"]))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"amount": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (edge, owner) = (cluster.node(0).log_text(), cluster.node(1).log_text());
        let served = owner.lines().any(|line| {
            line.contains("served a call from another node") && line.contains(trace_id)
        });
        if edge.contains(trace_id) && served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "trace id {trace_id} not in both logs: {:?}",
            cluster.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn members_linked_by_mutual_tls_work_together_and_a_certificate_from_another_ca_never_joins()
{
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("playhouse test CA");
    let options = ClusterOptions {
        node_env: (1..=3)
            .map(|n| ca.node_files(certs.path(), &format!("node-{n}")))
            .collect(),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(&options).await;
    let accounts = accounts_on_every_node(&cluster, 0, 1).await;
    for (id, owner) in &accounts {
        credit_works(&cluster, (owner + 1) % 3, id).await;
    }
    assert!(
        cluster.node(0).log_text().contains("tls=true"),
        "the start-up log should say links use TLS: {:?}",
        cluster.logs_tail()
    );

    // Same cookie, same name, a certificate from another CA: the handshake fails both ways.
    let stranger_ca = TestCa::new("someone else's CA");
    let (stranger_dir, mut env) = another_node_one(&cluster);
    env.extend(stranger_ca.node_files(stranger_dir.path(), "node-1"));
    launch_outsider(env, stranger_dir.path().join("stranger.log")).await;
    cluster.wait_all_up(Duration::from_secs(5)).await;
}
