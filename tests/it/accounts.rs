//! The accounts service end to end over HTTP against the real binary: opening, credits and
//! debits, bad input, idempotency, ownership, and durability across restarts and `kill -9`.

use crate::support::{Node, NodeOptions, assert_problem, client, get_json, open_account_as, token};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn writer() -> String {
    token("alice", &["writer"])
}

async fn open_account(node: &Node, owner: &str, balance: i64) -> String {
    open_account_as(node, "alice", owner, balance).await
}

/// The balance, read with an admin token (admins read every account).
async fn balance(node: &Node, id: &str) -> i64 {
    let response = client()
        .get(node.url(&format!("/api/v1/accounts/{id}")))
        .bearer_auth(token("auditor", &["admin"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["balance"]
        .as_i64()
        .unwrap()
}

async fn post(node: &Node, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(node.url(path))
        .bearer_auth(writer())
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn creating_an_account_returns_its_id_and_the_api_moves_money() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let response = post(
        &node,
        "/api/v1/accounts",
        json!({"owner": "alice", "initial_balance": 10_000}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(uuid_version(id), Some(7));
    assert_eq!(location, format!("/api/v1/accounts/{id}"));
    assert_eq!(body["owner"], "alice");
    assert_eq!(
        (body["balance"].as_i64(), body["version"].as_u64()),
        (Some(10_000), Some(1))
    );

    let credited: Value = post(
        &node,
        &format!("/api/v1/accounts/{id}/credit"),
        json!({"amount": 2_500}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(credited["balance"], 12_500);
    let debited: Value = post(
        &node,
        &format!("/api/v1/accounts/{id}/debit"),
        json!({"amount": 500}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        (debited["balance"].as_i64(), debited["version"].as_u64()),
        (Some(12_000), Some(3))
    );
    let refused = post(
        &node,
        &format!("/api/v1/accounts/{id}/debit"),
        json!({"amount": 1_000_000}),
    )
    .await;
    let problem = assert_problem(refused, StatusCode::CONFLICT, "insufficient-funds").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("12000"),
        "{problem}"
    );

    let history: Value = get_json(
        &node,
        &format!("/api/v1/accounts/{id}/events"),
        Some(token("alice", &["reader"])),
    )
    .await;
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["AccountOpened", "AccountCredited", "AccountDebited"]
    );
    assert_eq!(history["events"][1]["data"]["amount"], 2_500);
}

fn uuid_version(id: &str) -> Option<u32> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32)
        .then(|| hex[12..13].parse().ok())
        .flatten()
}

#[tokio::test]
async fn bad_input_gets_a_4xx_problem_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let id = open_account(&node, "alice", 100).await;
    let credit = format!("/api/v1/accounts/{id}/credit");

    let response = client()
        .post(node.url(&credit))
        .bearer_auth(writer())
        .header("content-type", "application/json")
        .body("{\"amount\": ")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "malformed-body").await;

    let problem = assert_problem(
        post(&node, &credit, json!({"amount": -5})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
    )
    .await;
    assert_eq!(problem["field"], "amount");
    assert!(
        problem["detail"].as_str().unwrap().contains("-5"),
        "{problem}"
    );

    // JSON Schema counts 25.0 as an integer; 2.5 is no whole number of cents.
    let credited: Value = post(&node, &credit, json!({"amount": 25.0}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(credited["balance"], 125);
    let problem = assert_problem(
        post(&node, &credit, json!({"amount": 2.5})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
    )
    .await;
    assert_eq!(problem["field"], "amount");
    assert!(
        problem["detail"].as_str().unwrap().contains("whole number"),
        "{problem}"
    );

    // A float would round this to 1; read exactly, it is no whole number.
    let response = client()
        .post(node.url(&credit))
        .bearer_auth(writer())
        .header("content-type", "application/json")
        .body(r#"{"amount": 0.99999999999999999999}"#)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-field").await;
    let problem = assert_problem(
        post(
            &node,
            "/api/v1/accounts",
            json!({"owner": "a\nb", "initial_balance": 1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
    )
    .await;
    assert_eq!(problem["field"], "owner");

    let problem = assert_problem(
        post(&node, &credit, json!({"amount": "ten"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
    )
    .await;
    assert_eq!(problem["field"], "amount");

    let problem = assert_problem(
        post(
            &node,
            "/api/v1/accounts",
            json!({"owner": "x", "initial_balance": -1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
    )
    .await;
    assert_eq!(problem["field"], "initial_balance");

    let unknown = "01234567-89ab-7def-8123-456789abcdef";
    let problem = assert_problem(
        post(
            &node,
            &format!("/api/v1/accounts/{unknown}/credit"),
            json!({"amount": 5}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains(unknown));
    assert_problem(
        post(
            &node,
            "/api/v1/accounts/not-a-uuid/debit",
            json!({"amount": 5}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;

    let response = client()
        .post(node.url(&credit))
        .bearer_auth(writer())
        .header("content-type", "text/plain")
        .body("5")
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;

    let huge = json!({"owner": "x".repeat(100_000), "initial_balance": 1});
    assert_problem(
        post(&node, "/api/v1/accounts", huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
    )
    .await;

    let response = client()
        .delete(node.url(&format!("/api/v1/accounts/{id}")))
        .bearer_auth(writer())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    assert_problem(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
    assert_eq!(balance(&node, &id).await, 125, "nothing bad was applied");
}

#[tokio::test]
async fn an_idempotency_key_makes_retries_return_the_first_result() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let create = || {
        client()
            .post(node.url("/api/v1/accounts"))
            .bearer_auth(writer())
            .header("idempotency-key", "create-1")
            .json(&json!({"owner": "alice", "initial_balance": 100}))
            .send()
    };
    let first: Value = create().await.unwrap().json().await.unwrap();
    let again = create().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again, "a retried create names the same account");
    let id = first["id"].as_str().unwrap();

    let credit = || {
        client()
            .post(node.url(&format!("/api/v1/accounts/{id}/credit")))
            .bearer_auth(writer())
            .header("idempotency-key", "credit-1")
            .json(&json!({"amount": 50}))
            .send()
    };
    let first: Value = credit().await.unwrap().json().await.unwrap();
    post(
        &node,
        &format!("/api/v1/accounts/{id}/credit"),
        json!({"amount": 1}),
    )
    .await;
    let again: Value = credit().await.unwrap().json().await.unwrap();
    assert_eq!(first, again, "the retry answers as the first call did");
    assert_eq!(balance(&node, id).await, 151, "the credit was applied once");

    // A refused request is refused again on a retry with its key, even once it would pass.
    let debit = || {
        client()
            .post(node.url(&format!("/api/v1/accounts/{id}/debit")))
            .bearer_auth(writer())
            .header("idempotency-key", "debit-too-much")
            .json(&json!({"amount": 500}))
            .send()
    };
    assert_problem(
        debit().await.unwrap(),
        StatusCode::CONFLICT,
        "insufficient-funds",
    )
    .await;
    post(
        &node,
        &format!("/api/v1/accounts/{id}/credit"),
        json!({"amount": 1000}),
    )
    .await;
    let again = assert_problem(
        debit().await.unwrap(),
        StatusCode::CONFLICT,
        "insufficient-funds",
    )
    .await;
    assert!(
        again["detail"].as_str().unwrap().contains("balance is 151"),
        "{again}"
    );
    assert_eq!(balance(&node, id).await, 1151);
    post(
        &node,
        &format!("/api/v1/accounts/{id}/debit"),
        json!({"amount": 1000}),
    )
    .await;

    // The same key with another request is refused, and changes nothing.
    let response = client()
        .post(node.url(&format!("/api/v1/accounts/{id}/credit")))
        .bearer_auth(writer())
        .header("idempotency-key", "credit-1")
        .json(&json!({"amount": 999}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::CONFLICT, "idempotency-key-reused").await;
    assert_eq!(balance(&node, id).await, 151);

    let response = client()
        .post(node.url(&format!("/api/v1/accounts/{id}/credit")))
        .bearer_auth(writer())
        .header("idempotency-key", "bad key with spaces")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid-header").await;
}

#[tokio::test]
async fn state_survives_a_graceful_restart_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &NodeOptions::default());
    let id = open_account(&node, "alice", 1_000).await;
    let debited = post(
        &node,
        &format!("/api/v1/accounts/{id}/debit"),
        json!({"amount": 300}),
    )
    .await;
    assert_eq!(debited.status(), StatusCode::OK);
    let status = node.terminate();
    assert!(
        status.success(),
        "SIGTERM exit status {status}; log:\n{}",
        node.log_text()
    );
    assert!(
        node.log_text().contains("store closed"),
        "{}",
        node.log_text()
    );
    node.restart();
    assert_eq!(balance(&node, &id).await, 700);
}

#[tokio::test]
async fn a_credit_acknowledged_with_2xx_survives_kill_9_right_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &NodeOptions::default());
    let id = open_account(&node, "alice", 0).await;
    let mut acknowledged = 0;
    for round in 1..=20 {
        let response = post(
            &node,
            &format!("/api/v1/accounts/{id}/credit"),
            json!({"amount": round}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        acknowledged += round;
    }
    // The 2xx is in hand; the process dies without any chance to flush.
    node.kill9();
    node.restart();
    assert_eq!(balance(&node, &id).await, acknowledged);
}

#[tokio::test]
async fn an_account_belongs_to_the_subject_that_opened_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let id = open_account(&node, "alice", 1_000).await;
    let mallory = token("mallory", &["writer"]);
    // Another subject's account answers as if it did not exist: ids do not leak.
    for (path, body) in [
        (
            format!("/api/v1/accounts/{id}/debit"),
            Some(json!({"amount": 900})),
        ),
        (
            format!("/api/v1/accounts/{id}/credit"),
            Some(json!({"amount": 1})),
        ),
        (format!("/api/v1/accounts/{id}"), None),
        (format!("/api/v1/accounts/{id}/events"), None),
    ] {
        let request = match &body {
            Some(body) => client().post(node.url(&path)).json(body),
            None => client().get(node.url(&path)),
        };
        let response = request.bearer_auth(&mallory).send().await.unwrap();
        let problem = assert_problem(response, StatusCode::NOT_FOUND, "not-found").await;
        assert!(
            problem["detail"].as_str().unwrap().contains(&id),
            "{problem}"
        );
    }
    assert_eq!(balance(&node, &id).await, 1_000, "mallory moved no money");

    // Its own subject reads it with a reader token; an admin reads and acts on any account.
    let own = get_json(
        &node,
        &format!("/api/v1/accounts/{id}"),
        Some(token("alice", &["reader"])),
    )
    .await;
    assert_eq!(own["balance"], 1_000);
    let response = client()
        .post(node.url(&format!("/api/v1/accounts/{id}/debit")))
        .bearer_auth(token("operator", &["admin"]))
        .json(&json!({"amount": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(balance(&node, &id).await, 900);
}

#[tokio::test]
async fn a_long_history_is_read_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let id = open_account(&node, "alice", 0).await;
    for amount in 1..=5 {
        post(
            &node,
            &format!("/api/v1/accounts/{id}/credit"),
            json!({ "amount": amount }),
        )
        .await;
    }
    let reader = Some(token("alice", &["reader"]));
    let first = get_json(
        &node,
        &format!("/api/v1/accounts/{id}/events?limit=2"),
        reader.clone(),
    )
    .await;
    let versions = |page: &Value| -> Vec<u64> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(versions(&first), [1, 2]);
    assert_eq!(first["next_from_version"], 3);
    let rest = get_json(
        &node,
        &format!("/api/v1/accounts/{id}/events?from_version=3&limit=10"),
        reader.clone(),
    )
    .await;
    assert_eq!(versions(&rest), [3, 4, 5, 6]);
    assert!(rest["next_from_version"].is_null(), "{rest}");
    let response = client()
        .get(node.url(&format!("/api/v1/accounts/{id}/events?limit=5000")))
        .bearer_auth(token("alice", &["reader"]))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-field").await;
    assert_eq!(problem["field"], "limit");
}
