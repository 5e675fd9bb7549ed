//! Inventory end to end: the product's owner receives stock, every reader sees it.

use crate::support::{
    Node, NodeOptions, assert_problem, create_product, get_as, json_of, post_as, token,
};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn the_products_owner_receives_stock_and_every_reader_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let product = create_product(&node, "shop", "TEA-1", 1999).await;
    let stock_path = format!("/api/v1/inventory/{product}");
    // Before any goods arrive, the product has none.
    let empty = get_as(&node, &stock_path, &token("someone", &["reader"])).await;
    assert_eq!(
        json_of(empty, StatusCode::OK).await,
        json!({"product_id": product, "available": 0, "reserved": 0, "committed": 0})
    );
    let receive = format!("{stock_path}/receive");
    for quantity in [10, 5] {
        let response = post_as(
            &node,
            &receive,
            &token("shop", &["writer"]),
            json!({"quantity": quantity}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let stock = get_as(&node, &stock_path, &token("someone", &["reader"])).await;
    assert_eq!(json_of(stock, StatusCode::OK).await["available"], 15);
    // Someone else's product is not theirs to stock; an admin may.
    let other = post_as(
        &node,
        &receive,
        &token("mallory", &["writer"]),
        json!({"quantity": 1}),
    )
    .await;
    assert_problem(other, StatusCode::NOT_FOUND, "not-found").await;
    let admin = post_as(
        &node,
        &receive,
        &token("ops", &["admin"]),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!(json_of(admin, StatusCode::OK).await["available"], 16);
    // Bad quantities, and unknown products.
    for quantity in [json!(0), json!(1.5), json!(-1)] {
        let response = post_as(
            &node,
            &receive,
            &token("shop", &["writer"]),
            json!({"quantity": quantity}),
        )
        .await;
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-field").await;
    }
    let unknown = get_as(
        &node,
        "/api/v1/inventory/01234567-89ab-7def-8123-456789abcdef",
        &token("someone", &["reader"]),
    )
    .await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not-found").await;
}
