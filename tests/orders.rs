//! Orders end to end: placing at the catalog's prices (202), reading, cancelling, listing a
//! customer's orders with read-your-writes, and ownership.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    Node, NodeOptions, assert_problem, create_product, get_as, json_of, position_of, post_as,
    register_customer, token,
};

#[tokio::test]
async fn an_order_is_placed_at_catalog_prices_read_listed_and_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let tea = create_product(&node, "shop", "TEA", 1000).await;
    let cup = create_product(&node, "shop", "CUP", 500).await;
    let customer = register_customer(&node, "ada", 100_000).await;
    let ada = token("ada", &["writer"]);
    let body = json!({"customer_id": customer, "lines": [
        {"product_id": tea, "quantity": 2}, {"product_id": cup, "quantity": 3}]});
    let response = post_as(&node, "/api/v1/orders", &ada, body).await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let position = position_of(&response);
    let placed = json_of(response, StatusCode::ACCEPTED).await;
    assert_eq!(placed["status"], "pending");
    let order_id = placed["order_id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/orders/{order_id}"));

    let order = json_of(get_as(&node, &location, &ada).await, StatusCode::OK).await;
    // 2 x 10.00 + 3 x 5.00 = 35.00
    assert_eq!(order["total"], 3500);
    assert_eq!(order["customer_id"], customer.as_str());
    assert_eq!(
        order["lines"][0],
        json!({"product_id": tea, "quantity": 2, "unit_price": 1000})
    );

    let list = get_as(
        &node,
        &format!("/api/v1/orders?customer_id={customer}&min_position={position}"),
        &ada,
    )
    .await;
    let list: Value = json_of(list, StatusCode::OK).await;
    assert_eq!(list["items"][0]["order_id"], order_id);
    assert_eq!(list["items"][0]["total"], 3500);

    let cancelled = post_as(&node, &format!("{location}/cancel"), &ada, json!(null)).await;
    let cancelled = json_of(cancelled, StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["reason"], "cancelled by the customer");
    let again = post_as(&node, &format!("{location}/cancel"), &ada, json!(null)).await;
    assert_problem(again, StatusCode::CONFLICT, "order-state").await;
}

#[tokio::test]
async fn orders_refuse_bad_lines_and_others_customers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let tea = create_product(&node, "shop", "TEA", 1000).await;
    let customer = register_customer(&node, "ada", 100_000).await;
    let ada = token("ada", &["writer"]);
    let unknown = "01234567-89ab-7def-8123-456789abcdef";
    for lines in [
        json!([]),
        json!([{"product_id": unknown, "quantity": 1}]),
        json!([{"product_id": tea, "quantity": 0}]),
        json!([{"product_id": tea, "quantity": 10_001}]),
    ] {
        let body = json!({"customer_id": customer, "lines": lines});
        let response = post_as(&node, "/api/v1/orders", &ada, body).await;
        let problem =
            assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-field").await;
        assert!(
            problem["field"].as_str().unwrap().starts_with("lines"),
            "{problem}"
        );
    }
    // Ordering for someone else's customer: that customer does not exist for mallory.
    let body = json!({"customer_id": customer, "lines": [{"product_id": tea, "quantity": 1}]});
    let mallory = post_as(
        &node,
        "/api/v1/orders",
        &token("mallory", &["writer"]),
        body.clone(),
    )
    .await;
    assert_problem(mallory, StatusCode::NOT_FOUND, "not-found").await;
    let placed = json_of(
        post_as(&node, "/api/v1/orders", &ada, body).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let order = format!("/api/v1/orders/{}", placed["order_id"].as_str().unwrap());
    let peek = get_as(&node, &order, &token("mallory", &["reader"])).await;
    assert_problem(peek, StatusCode::NOT_FOUND, "not-found").await;
    let list = get_as(
        &node,
        &format!("/api/v1/orders?customer_id={customer}"),
        &token("mallory", &["reader"]),
    )
    .await;
    assert_problem(list, StatusCode::NOT_FOUND, "not-found").await;
}
