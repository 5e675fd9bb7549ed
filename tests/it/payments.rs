//! Payments end to end: the read route (payments are made by the order saga).

use crate::support::{Node, NodeOptions, assert_problem, client, get_as, token};
use reqwest::StatusCode;

#[tokio::test]
async fn an_unknown_payment_is_not_found_and_the_route_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let path = "/api/v1/payments/01234567-89ab-7def-8123-456789abcdef";
    let unknown = get_as(&node, path, &token("ada", &["reader"])).await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not-found").await;
    let events = get_as(&node, &format!("{path}/events"), &token("ops", &["admin"])).await;
    assert_problem(events, StatusCode::NOT_FOUND, "not-found").await;
    let anonymous = client().get(node.url(path)).send().await.unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
