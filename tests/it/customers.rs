//! Customers end to end: registration, validation, and ownership.

use crate::support::{
    Node, NodeOptions, assert_problem, get_as, json_of, post_as, register_customer, token,
};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_customer_is_registered_and_seen_only_by_its_subject_and_admins() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let response = post_as(
        &node,
        "/api/v1/customers",
        &token("ada", &["writer"]),
        json!({"name": "Ada Lovelace", "email": "ada@example.com", "credit_limit": 50_000}),
    )
    .await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let customer = json_of(response, StatusCode::CREATED).await;
    assert_eq!(customer["email"], "ada@example.com");
    assert_eq!(customer["credit_limit"], 50_000);
    let own = get_as(&node, &location, &token("ada", &["reader"])).await;
    assert_eq!(json_of(own, StatusCode::OK).await, customer);
    let admin = get_as(&node, &location, &token("ops", &["admin"])).await;
    assert_eq!(admin.status(), StatusCode::OK);
    let other = get_as(&node, &location, &token("mallory", &["writer"])).await;
    assert_problem(other, StatusCode::NOT_FOUND, "not-found").await;
    let events = get_as(
        &node,
        &format!("{location}/events"),
        &token("mallory", &["reader"]),
    )
    .await;
    assert_problem(events, StatusCode::NOT_FOUND, "not-found").await;
}

#[tokio::test]
async fn bad_customers_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let writer = token("ada", &["writer"]);
    for (body, field) in [
        (
            json!({"name": "Ada", "email": "not-an-email", "credit_limit": 1}),
            "email",
        ),
        (
            json!({"name": "Ada", "email": "ada@localhost", "credit_limit": 1}),
            "email",
        ),
        (
            json!({"name": "", "email": "ada@example.com", "credit_limit": 1}),
            "name",
        ),
        (
            json!({"name": "Ada", "email": "ada@example.com", "credit_limit": -1}),
            "credit_limit",
        ),
    ] {
        let response = post_as(&node, "/api/v1/customers", &writer, body.clone()).await;
        let problem =
            assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-field").await;
        assert_eq!(problem["field"], field, "{body}");
    }
    // A reader may not register anyone.
    let reader = post_as(
        &node,
        "/api/v1/customers",
        &token("ada", &["reader"]),
        json!({"name": "Ada", "email": "ada@example.com", "credit_limit": 1}),
    )
    .await;
    assert_problem(reader, StatusCode::FORBIDDEN, "forbidden").await;
    register_customer(&node, "ada", 0).await;
}
