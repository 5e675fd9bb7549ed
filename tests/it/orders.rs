//! Orders end to end: placed at the catalog's prices (202) and driven by the order saga to
//! confirmed, or cancelled with the reason (out of stock, payment declined) and everything it
//! held given back; listing a customer's orders with read-your-writes; ownership.

use crate::support::{
    Node, NodeOptions, assert_problem, create_product, get_as, json_of, position_of, post_as,
    receive_stock, register_customer, settled, token,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Places an order of `lines` (product, quantity) for `customer` as `ada`; its path.
async fn place(node: &Node, customer: &str, lines: &[(&str, u32)]) -> (String, u64) {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(product, quantity)| json!({"product_id": product, "quantity": quantity}))
        .collect();
    let body = json!({"customer_id": customer, "lines": lines});
    let response = post_as(node, "/api/v1/orders", &token("ada", &["writer"]), body).await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let position = position_of(&response);
    let placed = json_of(response, StatusCode::ACCEPTED).await;
    assert_eq!(placed["status"], "pending");
    assert_eq!(
        location,
        format!("/api/v1/orders/{}", placed["order_id"].as_str().unwrap())
    );
    (location, position)
}

async fn stock(node: &Node, product: &str) -> (u64, u64, u64) {
    let stock = json_of(
        get_as(
            node,
            &format!("/api/v1/inventory/{product}"),
            &token("ada", &["reader"]),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let n = |field: &str| stock[field].as_u64().unwrap();
    (n("available"), n("reserved"), n("committed"))
}

#[tokio::test]
async fn an_order_with_stock_and_credit_is_confirmed_at_catalog_prices() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let tea = create_product(&node, "shop", "TEA", 1000).await;
    let cup = create_product(&node, "shop", "CUP", 500).await;
    receive_stock(&node, "shop", &tea, 10).await;
    receive_stock(&node, "shop", &cup, 10).await;
    let customer = register_customer(&node, "ada", 100_000).await;
    let ada = token("ada", &["writer"]);
    let (order, position) = place(&node, &customer, &[(&tea, 2), (&cup, 3)]).await;

    let confirmed = settled(&node, &order, &ada).await;
    assert_eq!(confirmed["status"], "confirmed", "{confirmed}");
    // 2 x 10.00 + 3 x 5.00 = 35.00
    assert_eq!(confirmed["total"], 3500);
    assert_eq!(
        confirmed["lines"][0],
        json!({"product_id": tea, "quantity": 2, "unit_price": 1000, "line_total": 2000})
    );
    // Confirmed is the point of no return; committing the stock follows it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stock(&node, &cup).await != (7, 0, 3) {
        assert!(std::time::Instant::now() < deadline, "stock not committed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(stock(&node, &tea).await, (8, 0, 2));
    let payment = format!(
        "/api/v1/payments/{}",
        confirmed["payment_id"].as_str().unwrap()
    );
    let payment = json_of(get_as(&node, &payment, &ada).await, StatusCode::OK).await;
    assert_eq!(
        (&payment["status"], &payment["amount"]),
        (&json!("authorized"), &json!(3500))
    );

    let list = get_as(
        &node,
        &format!("/api/v1/orders?customer_id={customer}&min_position={position}"),
        &ada,
    )
    .await;
    let list: Value = json_of(list, StatusCode::OK).await;
    assert_eq!(list["items"][0]["order_id"], confirmed["id"]);
    // A confirmed order cannot be cancelled.
    let cancel = post_as(&node, &format!("{order}/cancel"), &ada, json!(null)).await;
    assert_problem(cancel, StatusCode::CONFLICT, "order-state").await;
}

#[tokio::test]
async fn an_order_out_of_stock_is_cancelled_with_the_reason_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let tea = create_product(&node, "shop", "TEA", 1000).await;
    let cup = create_product(&node, "shop", "CUP", 500).await;
    receive_stock(&node, "shop", &tea, 5).await;
    receive_stock(&node, "shop", &cup, 1).await;
    let customer = register_customer(&node, "ada", 100_000).await;
    // The tea is reserved, then the cups are short: the tea goes back.
    let (order, _) = place(&node, &customer, &[(&tea, 2), (&cup, 3)]).await;
    let cancelled = settled(&node, &order, &token("ada", &["reader"])).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["reason"], format!("out of stock: {cup}"));
    assert_eq!(stock(&node, &tea).await, (5, 0, 0));
    assert_eq!(stock(&node, &cup).await, (1, 0, 0));
    let payment = format!(
        "/api/v1/payments/{}",
        cancelled["payment_id"].as_str().unwrap()
    );
    let none = get_as(&node, &payment, &token("ada", &["reader"])).await;
    assert_problem(none, StatusCode::NOT_FOUND, "not-found").await;
}

#[tokio::test]
async fn an_order_over_the_credit_limit_is_declined_and_its_stock_released() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let tea = create_product(&node, "shop", "TEA", 1000).await;
    receive_stock(&node, "shop", &tea, 5).await;
    let customer = register_customer(&node, "ada", 1000).await;
    let (order, _) = place(&node, &customer, &[(&tea, 3)]).await;
    let ada = token("ada", &["reader"]);
    let cancelled = settled(&node, &order, &ada).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        cancelled["reason"],
        "payment declined: amount 3000 is over the credit limit 1000"
    );
    assert_eq!(stock(&node, &tea).await, (5, 0, 0));
    let payment = format!(
        "/api/v1/payments/{}",
        cancelled["payment_id"].as_str().unwrap()
    );
    let payment = json_of(get_as(&node, &payment, &ada).await, StatusCode::OK).await;
    assert_eq!(payment["status"], "declined");
    // Someone else sees neither the order nor its payment.
    let mallory = token("mallory", &["reader"]);
    assert_problem(
        get_as(&node, &order, &mallory).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
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
    // One product on two lines is merged; a sum over the limit is refused naming the lines the
    // client sent, with the quantities it sent.
    let body = json!({"customer_id": customer, "lines": [
        {"product_id": tea, "quantity": 6_000},
        {"product_id": tea, "quantity": 1},
        {"product_id": tea, "quantity": 5_000},
    ]});
    let response = post_as(&node, "/api/v1/orders", &ada, body).await;
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-field").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("lines[0], lines[1], lines[2]") && detail.contains("11001 units"),
        "{detail}"
    );
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
