//! The catalog end to end: products (public to readers), unique SKUs, the products list with
//! pages and read-your-writes.

use crate::support::{
    Node, NodeOptions, assert_problem, client, create_product, get_as, json_of, position_of,
    post_as, token,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_product_is_created_read_by_anyone_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let shop = token("shop", &["writer"]);
    let response = post_as(
        &node,
        "/api/v1/products",
        &shop,
        json!({"name": "Teapot", "sku": "TEA-001", "price": 1999}),
    )
    .await;
    let position = position_of(&response);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let product = json_of(response, StatusCode::CREATED).await;
    let id = product["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/products/{id}"));
    assert_eq!(
        (&product["name"], &product["sku"], &product["price"]),
        (&json!("Teapot"), &json!("TEA-001"), &json!(1999))
    );
    // Any reader reads the catalog.
    let read = get_as(&node, &location, &token("someone", &["reader"])).await;
    assert_eq!(json_of(read, StatusCode::OK).await, product);
    // The list reflects the write once it has passed its position.
    let list = get_as(
        &node,
        &format!("/api/v1/products?min_position={position}"),
        &token("someone", &["reader"]),
    )
    .await;
    let list = json_of(list, StatusCode::OK).await;
    assert_eq!(list["items"], json!([product]));
    assert!(list["next_cursor"].is_null());
}

#[tokio::test]
async fn a_sku_is_unique_and_bad_products_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    create_product(&node, "shop", "MUG-1", 500).await;
    let shop = token("rival", &["writer"]);
    let taken = post_as(
        &node,
        "/api/v1/products",
        &shop,
        json!({"name": "Mug", "sku": "MUG-1", "price": 400}),
    )
    .await;
    let problem = assert_problem(taken, StatusCode::CONFLICT, "sku-taken").await;
    assert_eq!(problem["field"], "sku");
    for (body, field) in [
        (json!({"name": " ", "sku": "A", "price": 1}), "name"),
        (json!({"name": "a\u{0}b", "sku": "A", "price": 1}), "name"),
        (json!({"name": "A", "sku": "no spaces", "price": 1}), "sku"),
        (json!({"name": "A", "sku": "A", "price": 0}), "price"),
    ] {
        let response = post_as(&node, "/api/v1/products", &shop, body.clone()).await;
        let problem =
            assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-field").await;
        assert_eq!(problem["field"], field, "{body}");
    }
    let unknown = get_as(
        &node,
        "/api/v1/products/01234567-89ab-7def-8123-456789abcdef",
        &token("someone", &["reader"]),
    )
    .await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not-found").await;
}

#[tokio::test]
async fn a_retried_create_is_answered_again_and_a_products_history_is_its_owners() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let shop = token("shop", &["writer"]);
    let create = || {
        client()
            .post(node.url("/api/v1/products"))
            .bearer_auth(&shop)
            .header("Idempotency-Key", "create-teapot")
            .json(&json!({"name": "Teapot", "sku": "TEA-9", "price": 1999}))
            .send()
    };
    let first = create().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = create().await.unwrap();
    assert_eq!(
        again.status(),
        StatusCode::CREATED,
        "a retry gets the first answer"
    );
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let id = first["id"].as_str().unwrap();
    // Anyone may read the product; only its owner (and admins) its events.
    let reader = token("someone", &["reader"]);
    let product = get_as(&node, &format!("/api/v1/products/{id}"), &reader).await;
    assert_eq!(product.status(), StatusCode::OK);
    let events = get_as(&node, &format!("/api/v1/products/{id}/events"), &reader).await;
    assert_problem(events, StatusCode::NOT_FOUND, "not-found").await;
    let events = get_as(&node, &format!("/api/v1/products/{id}/events"), &shop).await;
    assert_eq!(events.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_products_list_comes_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let shop = token("shop", &["writer"]);
    let (mut ids, mut last) = (Vec::new(), 0);
    for n in 0..5 {
        let body = json!({"name": format!("p{n}"), "sku": format!("SKU-{n}"), "price": 100 + n});
        let response = post_as(&node, "/api/v1/products", &shop, body).await;
        last = position_of(&response);
        ids.push(
            json_of(response, StatusCode::CREATED).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.sort();
    let reader = token("someone", &["reader"]);
    // The first page waits for the last write; the others follow the cursor.
    let mut path = format!("/api/v1/products?min_position={last}&limit=2");
    let mut seen = Vec::new();
    loop {
        let page: Value = json_of(get_as(&node, &path, &reader).await, StatusCode::OK).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/api/v1/products?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let too_many = get_as(&node, "/api/v1/products?limit=101", &reader).await;
    assert_problem(too_many, StatusCode::UNPROCESSABLE_ENTITY, "invalid-field").await;
}
