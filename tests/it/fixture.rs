//! A data directory written by commit 0b92c6a (`fixtures/store-0b92c6a/`, single node,
//! `config/single.toml`) opens on today's build, is upgraded in place to today's data format,
//! and answers every state its manifest lists through the HTTP API; its old events read in
//! today's shapes, ownership is unchanged, and new commands on its aggregates work.
//!
//! This test stays for good: every later format change brings its upgrade step, and this
//! directory keeps opening.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{self, AUDIENCE, Node, NodeOptions, get_as, json_of, post_as};

/// The key the fixture's node ran with (its README).
const FIXTURE_KEY: &str = "fixture-secret-0123456789abcdef01234567";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/store-0b92c6a")
}

/// A writer token for `subject`, signed with the fixture's key.
fn token(subject: &str) -> String {
    signed(subject, &["writer"])
}

fn signed(subject: &str, roles: &[&str]) -> String {
    support::token_with(FIXTURE_KEY, AUDIENCE, support::now() + 3600, subject, roles)
}

/// A copy of the fixture's data directory (the original stays as the earlier build left it).
fn copy_of_the_fixture(into: &Path) -> PathBuf {
    let data = into.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for file in ["events.redb", "events.index.redb", "identity.toml"] {
        assert!(
            fixture().join("data").join(file).is_file(),
            "the fixture lacks data/{file} (is it committed?)"
        );
    }
    for entry in std::fs::read_dir(fixture().join("data")).unwrap() {
        let entry = entry.unwrap();
        let copy = data.join(entry.file_name());
        std::fs::copy(entry.path(), &copy).unwrap();
        let mut permissions = std::fs::metadata(&copy).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&copy, permissions).unwrap();
    }
    data
}

/// The node of `config/single.toml` on `data`, with the fixture's key.
fn start_on(data: &Path, dir: &Path) -> Node {
    start_with(data, dir, Vec::new())
}

/// [`start_on`], with more environment.
fn start_with(data: &Path, dir: &Path, extra: Vec<(String, String)>) -> Node {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/single.toml");
    let mut env = vec![
        ("PLAYHOUSE_DATA_DIR".to_owned(), data.display().to_string()),
        (
            "PLAYHOUSE_EDGE__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        ("PLAYHOUSE_JWT_KEY".to_owned(), FIXTURE_KEY.to_owned()),
        (
            "PLAYHOUSE_RATE_LIMIT__REQUESTS_PER_SECOND".to_owned(),
            "10000".to_owned(),
        ),
        ("PLAYHOUSE_RATE_LIMIT__BURST".to_owned(), "10000".to_owned()),
    ];
    env.extend(extra);
    Node::launch(config, env, dir.join("node.log"), &NodeOptions::default())
}

async fn get(node: &Node, path: &str, subject: &str) -> Value {
    json_of(get_as(node, path, &token(subject)).await, StatusCode::OK).await
}

async fn events(node: &Node, path: &str, subject: &str) -> Vec<Value> {
    get(node, &format!("{path}/events"), subject).await["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// Every state the manifest lists, as the API answers it now.
async fn answers_the_manifest(node: &Node, manifest: &Value) {
    for (id, expected) in manifest["accounts"].as_object().unwrap() {
        let subject = expected["subject"].as_str().unwrap();
        let path = format!("/api/v1/accounts/{id}");
        let account = get(node, &path, subject).await;
        assert_eq!(account["balance"], expected["balance"], "{id}: {account}");
        assert_eq!(account["version"], expected["version"], "{id}: {account}");
        // The old events are the history, each readable.
        let history = events(node, &path, subject).await;
        assert_eq!(json!(history.len()), expected["version"], "{id}");
        assert_eq!(history[0]["type"], "AccountOpened");
        // Ownership unchanged: to another subject it does not exist.
        let stranger = get_as(node, &path, &token("mallory")).await;
        assert_eq!(stranger.status(), StatusCode::NOT_FOUND, "{id}");
    }
    for (id, status) in manifest["transfers"].as_object().unwrap() {
        let transfer = get(node, &format!("/api/v1/transfers/{id}"), "alice").await;
        assert_eq!(&transfer["status"], status, "{id}: {transfer}");
    }
    for (id, expected) in manifest["products"].as_object().unwrap() {
        let product = get(node, &format!("/api/v1/products/{id}"), "alice").await;
        for field in ["name", "sku", "price"] {
            assert_eq!(product[field], expected[field], "{id}: {product}");
        }
    }
    for (id, expected) in manifest["stock"].as_object().unwrap() {
        let stock = get(node, &format!("/api/v1/inventory/{id}"), "shop").await;
        for field in ["available", "reserved", "committed"] {
            assert_eq!(stock[field], expected[field], "{id}: {stock}");
        }
    }
    for (id, expected) in manifest["customers"].as_object().unwrap() {
        let customer = get(node, &format!("/api/v1/customers/{id}"), "alice").await;
        for field in ["name", "email", "credit_limit"] {
            assert_eq!(customer[field], expected[field], "{id}: {customer}");
        }
    }
    for (id, expected) in manifest["orders"].as_object().unwrap() {
        let path = format!("/api/v1/orders/{id}");
        let order = get(node, &path, "alice").await;
        for field in ["status", "total", "payment_id"] {
            assert_eq!(order[field], expected[field], "{id}: {order}");
        }
        // Placed at version 1 of `OrderPlaced`, read at version 2: each line with what it was
        // charged, which add up to the total.
        let charged: i64 = order["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| {
                let line_total = line["line_total"].as_i64().unwrap();
                assert_eq!(
                    line_total,
                    line["quantity"].as_i64().unwrap() * line["unit_price"].as_i64().unwrap()
                );
                line_total
            })
            .sum();
        assert_eq!(json!(charged), expected["total"], "{id}: {order}");
        let placed = &events(node, &path, "alice").await[0];
        assert_eq!(placed["type"], "OrderPlaced");
        assert!(
            placed["data"]["lines"][0]["line_total"].is_i64(),
            "{placed}"
        );
    }
}

#[tokio::test]
async fn the_0b92c6a_data_directory_is_upgraded_and_answers_its_manifest() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(fixture().join("manifest.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = copy_of_the_fixture(dir.path());
    let mut node = start_on(&data, dir.path());
    let log = node.log_text();
    assert!(
        log.contains("upgrading the data format") && log.contains("data format upgraded"),
        "{log}"
    );
    answers_the_manifest(&node, &manifest).await;
    // A node alone lists itself, with its log's end: the fixture's 54 events.
    let admin = signed("ops", &["admin"]);
    let view = json_of(
        get_as(&node, "/admin/cluster", &admin).await,
        StatusCode::OK,
    )
    .await;
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{view}");
    assert_eq!(members[0]["this_node"], true, "{view}");
    assert_eq!(members[0]["log_end"], 54, "{view}");

    // New commands on old aggregates: a credit, and a transfer between two old accounts.
    let accounts = manifest["accounts"].as_object().unwrap();
    let (main, expected) = accounts.iter().next().unwrap();
    let writer = token("alice");
    let credited = post_as(
        &node,
        &format!("/api/v1/accounts/{main}/credit"),
        &writer,
        json!({"amount": 100}),
    )
    .await;
    let credited = json_of(credited, StatusCode::OK).await;
    assert_eq!(
        credited["balance"].as_i64().unwrap(),
        expected["balance"].as_i64().unwrap() + 100
    );
    let (savings, _) = accounts.iter().nth(1).unwrap();
    let transfer = post_as(
        &node,
        "/api/v1/transfers",
        &writer,
        json!({"from": main, "to": savings, "amount": 50}),
    )
    .await;
    assert!(transfer.status().is_success(), "{}", transfer.status());
    let transfer: Value = transfer.json().await.unwrap();
    let path = format!("/api/v1/transfers/{}", transfer["id"].as_str().unwrap());
    let settled = support::settled(&node, &path, &writer).await;
    assert_eq!(settled["status"], "completed", "{settled}");

    // Stopped and started again: already upgraded, nothing to do, the same answers.
    assert!(node.terminate().success(), "{}", node.log_text());
    let before = node.log_text().matches("upgrading the data format").count();
    node.restart();
    assert_eq!(
        node.log_text().matches("upgrading the data format").count(),
        before,
        "upgraded twice"
    );
    let account = get(&node, &format!("/api/v1/accounts/{main}"), "alice").await;
    assert_eq!(
        account["version"],
        json!(expected["version"].as_u64().unwrap() + 2)
    );
}

/// The fixture's directory on a node alone that writes through Raft (`store.journal =
/// "raft"`: a group of one per partition): what the earlier build wrote is each partition's
/// applied state from the start, so the node answers the manifest and takes new commands on
/// old aggregates; started again, the same.
#[tokio::test]
async fn the_0b92c6a_data_directory_answers_its_manifest_when_its_node_writes_through_raft() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(fixture().join("manifest.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = copy_of_the_fixture(dir.path());
    let raft = vec![("PLAYHOUSE_STORE__JOURNAL".to_owned(), "raft".to_owned())];
    let mut node = start_with(&data, dir.path(), raft);
    answers_the_manifest(&node, &manifest).await;
    assert!(data.join("raft.redb").is_file(), "{}", node.log_text());
    let accounts = manifest["accounts"].as_object().unwrap();
    let (main, expected) = accounts.iter().next().unwrap();
    let credited = post_as(
        &node,
        &format!("/api/v1/accounts/{main}/credit"),
        &token("alice"),
        json!({"amount": 100}),
    )
    .await;
    let credited = json_of(credited, StatusCode::OK).await;
    assert_eq!(
        credited["balance"].as_i64().unwrap(),
        expected["balance"].as_i64().unwrap() + 100
    );
    assert!(node.terminate().success(), "{}", node.log_text());
    node.restart();
    let account = get(&node, &format!("/api/v1/accounts/{main}"), "alice").await;
    assert_eq!(
        account["version"],
        json!(expected["version"].as_u64().unwrap() + 1)
    );
}

/// The fixture's directory with its log emptied, or gone: the node refuses to start and says
/// the events were lost, instead of serving an empty store.
#[test]
fn a_data_directory_whose_log_was_lost_is_refused() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/single.toml");
    for lose in ["empty", "remove", "remove both"] {
        let dir = tempfile::tempdir().unwrap();
        let data = copy_of_the_fixture(dir.path());
        match lose {
            "empty" => std::fs::write(data.join("events.redb"), b"").unwrap(),
            "remove" => std::fs::remove_file(data.join("events.redb")).unwrap(),
            _ => {
                std::fs::remove_file(data.join("events.redb")).unwrap();
                std::fs::remove_file(data.join("events.index.redb")).unwrap();
            }
        }
        let log = dir.path().join("node.log");
        let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_playhouse"))
            .args(["node", "--config"])
            .arg(&config)
            .env("PLAYHOUSE_DATA_DIR", &data)
            .env("PLAYHOUSE_EDGE__LISTEN", "127.0.0.1:0")
            .env("PLAYHOUSE_JWT_KEY", FIXTURE_KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // A node that does not refuse would run on: it is given 20 s, then killed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = node.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                node.kill().unwrap();
                node.wait().unwrap();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert!(
            status.is_some_and(|status| !status.success()),
            "{lose}: it started\n{stderr}"
        );
        assert!(
            stderr.contains("events were lost") || stderr.contains("the log lost events"),
            "{lose}: {stderr}"
        );
    }
}
