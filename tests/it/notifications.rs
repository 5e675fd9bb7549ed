//! Notifications end to end: a customer is told of its orders, in order, and only it.

use crate::support::{
    Node, NodeOptions, assert_problem, create_product, get_as, json_of, position_of, post_as,
    register_customer, settled, token,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_customer_is_told_of_its_orders_and_nobody_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let tea = create_product(&node, "shop", "TEA", 1000).await;
    let customer = register_customer(&node, "ada", 100_000).await;
    let ada = token("ada", &["writer"]);
    let body = json!({"customer_id": customer, "lines": [{"product_id": tea, "quantity": 1}]});
    let placed = post_as(&node, "/api/v1/orders", &ada, body).await;
    let position = position_of(&placed);
    let placed = json_of(placed, StatusCode::ACCEPTED).await;
    let order = placed["order_id"].as_str().unwrap();
    // No stock: the saga cancels the order, and the customer is told why.
    let cancelled = settled(&node, &format!("/api/v1/orders/{order}"), &ada).await;
    assert_eq!(cancelled["status"], "cancelled");

    let path = format!("/api/v1/notifications?customer_id={customer}&min_position={position}");
    let mut page = Value::Null;
    for _ in 0..500 {
        page = json_of(get_as(&node, &path, &ada).await, StatusCode::OK).await;
        if page["items"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let kinds: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["order-placed", "order-cancelled"]);
    let message = page["items"][1]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("out of stock: {tea}")),
        "{message}"
    );

    let other = get_as(&node, &path, &token("mallory", &["reader"])).await;
    assert_problem(other, StatusCode::NOT_FOUND, "not-found").await;
    let beyond = get_as(
        &node,
        &format!("/api/v1/notifications?customer_id={customer}&min_position=999999"),
        &ada,
    )
    .await;
    assert_problem(beyond, StatusCode::CONFLICT, "conflict").await;
}
