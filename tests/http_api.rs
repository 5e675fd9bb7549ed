//! End to end over HTTP against the real binary: health, accounts, auth, rate limits, errors,
//! idempotency, durability across restarts and `kill -9`, graceful shutdown.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{AUDIENCE, Node, NodeOptions, TEST_KEY, client, now, token, token_with};

fn writer() -> String {
    token("alice", &["writer"])
}

async fn open_account(node: &Node, owner: &str, balance: i64) -> String {
    let response = client()
        .post(node.url("/api/v1/accounts"))
        .bearer_auth(writer())
        .json(&json!({ "owner": owner, "initial_balance": balance }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn balance(node: &Node, id: &str) -> i64 {
    let response = client()
        .get(node.url(&format!("/api/v1/accounts/{id}")))
        .bearer_auth(token("auditor", &["reader"]))
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

/// GETs `path` (with a bearer token when given) and parses the JSON answer.
async fn get_json(node: &Node, path: &str, token: Option<impl std::fmt::Display>) -> Value {
    let mut request = client().get(node.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Asserts a problem+json answer with `status` and `type` slug; returns the body.
async fn assert_problem(response: reqwest::Response, status: StatusCode, slug: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["type"],
        format!("urn:playhouse:problem:{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16());
    body
}

#[tokio::test]
async fn health_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    for path in ["/health", "/health/ready", "/health/live"] {
        let response = client().get(node.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "healthy", "{path}: {body}");
    }
    let body: Value = get_json(&node, "/health", None::<String>).await;
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["store", "disk", "memory", "cluster"]);
}

#[tokio::test]
async fn low_disk_makes_health_degraded_then_unhealthy_with_503() {
    // Thresholds above 100% free: every real disk is "low", so both answers are certain.
    for (degraded, unhealthy, expected_status, http) in [
        (100.0, 0.0, "degraded", StatusCode::OK),
        (100.0, 100.0, "unhealthy", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = NodeOptions {
            disk_degraded_below_percent: degraded,
            disk_unhealthy_below_percent: unhealthy,
            ..NodeOptions::default()
        };
        let node = Node::start(dir.path(), &options);
        for path in ["/health", "/health/ready"] {
            let response = client().get(node.url(path)).send().await.unwrap();
            assert_eq!(response.status(), http, "{path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["status"], expected_status, "{path}: {body}");
            let disk = body["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "disk")
                .unwrap();
            assert_eq!(disk["status"], expected_status);
            assert!(
                disk["message"].as_str().unwrap().contains("% free"),
                "{disk}"
            );
        }
        // Liveness says the process answers, whatever the disk.
        let live = client().get(node.url("/health/live")).send().await.unwrap();
        assert_eq!(live.status(), StatusCode::OK);
    }
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
        Some(token("auditor", &["reader"])),
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
async fn missing_or_bad_tokens_get_401_and_missing_roles_403() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let url = node.url("/api/v1/accounts");
    let body = json!({"owner": "mallory", "initial_balance": 1});

    let response = client().post(&url).json(&body).send().await.unwrap();
    let problem = assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(problem["detail"].as_str().unwrap().contains("Bearer"));

    // alg=none: header {"alg":"none","typ":"JWT"}, valid claims, empty signature.
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64url(&format!(
            r#"{{"sub":"mallory","iss":"playhouse","aud":"{AUDIENCE}","exp":{},"roles":["admin"]}}"#,
            now() + 3600
        ))
    );
    let bad_tokens = [
        ("alg=none", unsigned),
        (
            "expired",
            token_with(TEST_KEY, AUDIENCE, now() - 3600, "mallory", &["admin"]),
        ),
        (
            "wrong key",
            token_with(
                "some-other-key-0123456789abcdef!!",
                AUDIENCE,
                now() + 3600,
                "mallory",
                &["admin"],
            ),
        ),
        (
            "wrong audience",
            token_with(TEST_KEY, "another-api", now() + 3600, "mallory", &["admin"]),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, bad) in bad_tokens {
        let response = client()
            .post(&url)
            .bearer_auth(&bad)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{what} token was accepted"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
    }

    // A reader may look but not write.
    let response = client()
        .post(&url)
        .bearer_auth(token("bob", &["reader"]))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    // Health stays public.
    assert_eq!(
        client()
            .get(node.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

fn base64url(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn the_rate_limit_gives_429_with_retry_after_and_ratelimit_headers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &NodeOptions {
            requests_per_second: 1,
            burst: 3,
            ..NodeOptions::default()
        },
    );
    let id = "01234567-89ab-7def-8123-456789abcdef";
    let url = node.url(&format!("/api/v1/accounts/{id}"));
    let reader = token("greedy", &["reader"]);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = client()
            .get(&url)
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["x-ratelimit-limit"], "3");
        assert!(response.headers().contains_key("x-ratelimit-reset"));
        remaining.push(
            response.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let response = client()
        .get(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(response.headers()["x-ratelimit-limit"], "3");
    assert!(response.headers().contains_key("x-ratelimit-reset"));
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;

    // The limit is per subject: another token still gets through.
    let response = client()
        .get(&url)
        .bearer_auth(token("patient", &["reader"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
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
async fn metrics_and_openapi_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let id = open_account(&node, "alice", 5).await;
    balance(&node, &id).await;
    let metrics = client()
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "playhouse_http_requests_total",
        "playhouse_http_request_duration_seconds_bucket",
        "playhouse_commands_total",
        "playhouse_store_batch_events",
        "playhouse_store_commit_seconds",
        "playhouse_live_actors",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    assert!(
        metrics.contains(r#"route="/api/v1/accounts/{id}""#),
        "{metrics}"
    );

    let spec: Value = get_json(&node, "/openapi.json", None::<String>).await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/accounts",
        "/api/v1/accounts/{id}",
        "/api/v1/accounts/{id}/credit",
        "/api/v1/accounts/{id}/debit",
        "/api/v1/accounts/{id}/events",
        "/health",
    ] {
        assert!(spec["paths"].get(path).is_some(), "the spec lacks {path}");
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
