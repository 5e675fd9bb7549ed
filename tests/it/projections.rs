//! Read models across crashes: after `kill -9` under a write load, each read model equals a
//! rebuild from position zero, by the admin route on a running node and by the CLI on a
//! stopped one.

use std::process::Command;

use crate::support;
use crate::support::{Node, NodeOptions, get_as, json_of, post_as, register_customer, token};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Every page of a list, waiting first until every saga has settled and the read models have
/// applied the whole log.
async fn whole_list(node: &Node, path: &str, token: &str) -> Vec<Value> {
    let admin = support::token("ops", &["admin"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for status in ["running", "compensating"] {
        loop {
            let sagas: Value = json_of(
                get_as(node, &format!("/admin/sagas?status={status}"), &admin).await,
                StatusCode::OK,
            )
            .await;
            if sagas["items"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sagas did not settle: {sagas}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    loop {
        let status: Value = json_of(
            get_as(node, "/admin/projections", &admin).await,
            StatusCode::OK,
        )
        .await;
        if status["projections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["lag"] == 0)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "read models did not catch up: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let separator = if path.contains('?') { '&' } else { '?' };
    let (mut items, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page_path = match &cursor {
            Some(cursor) => format!("{path}{separator}limit=100&cursor={cursor}"),
            None => format!("{path}{separator}limit=100"),
        };
        let page: Value = json_of(get_as(node, &page_path, token).await, StatusCode::OK).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn read_models_equal_a_rebuild_after_kill_9_under_a_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &NodeOptions::default());
    let customer = register_customer(&node, "ada", 1_000_000).await;
    let shop = token("shop", &["writer"]);
    let ada = token("ada", &["writer"]);
    // A write load of products and orders from several clients, killed mid-way.
    let load = |client: usize| {
        let (base, shop, ada, customer) = (
            node.base.clone(),
            shop.clone(),
            ada.clone(),
            customer.clone(),
        );
        tokio::spawn(async move {
            let http = support::client();
            for n in 0.. {
                let product = http
                    .post(format!("{base}/api/v1/products"))
                    .bearer_auth(&shop)
                    .json(&json!({"name": "p", "sku": format!("C{client}-{n}"), "price": 100}))
                    .send()
                    .await;
                let Ok(product) = product else { return };
                let Ok(product) = product.json::<Value>().await else {
                    return;
                };
                let order = json!({"customer_id": customer,
                    "lines": [{"product_id": product["id"], "quantity": 1}]});
                let placed = http
                    .post(format!("{base}/api/v1/orders"))
                    .bearer_auth(&ada)
                    .json(&order)
                    .send()
                    .await;
                if placed.is_err() {
                    return;
                }
            }
        })
    };
    let clients: Vec<_> = (0..4).map(load).collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    node.kill9();
    for client in clients {
        let _ = client.await;
    }
    node.restart();

    let reader = token("someone", &["reader"]);
    let orders_path = format!("/api/v1/orders?customer_id={customer}");
    let notifications_path = format!("/api/v1/notifications?customer_id={customer}");
    let products = whole_list(&node, "/api/v1/products", &reader).await;
    let orders = whole_list(&node, &orders_path, &ada).await;
    let notifications = whole_list(&node, &notifications_path, &ada).await;
    assert!(
        products.len() > 10,
        "the load wrote {} products",
        products.len()
    );
    // No stock was received: every order was cancelled by its saga (placed + cancelled).
    assert_eq!(
        2 * orders.len(),
        notifications.len(),
        "two notifications per order"
    );

    // Rebuilt by the running node...
    let admin = token("ops", &["admin"]);
    for name in ["products", "orders_by_customer", "notifications"] {
        let response = post_as(
            &node,
            &format!("/admin/projections/{name}/rebuild"),
            &admin,
            json!(null),
        )
        .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{name}");
    }
    assert_eq!(
        whole_list(&node, "/api/v1/products", &reader).await,
        products
    );
    assert_eq!(whole_list(&node, &orders_path, &ada).await, orders);
    assert_eq!(
        whole_list(&node, &notifications_path, &ada).await,
        notifications
    );

    // ...and by the CLI, on the stopped node.
    assert!(node.terminate().success());
    for name in ["products", "orders_by_customer", "notifications"] {
        let output = Command::new(env!("CARGO_BIN_EXE_playhouse"))
            .args(["projections", "rebuild", name, "--config"])
            .arg(node.config_path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("rebuilt from"));
    }
    node.restart();
    assert_eq!(
        whole_list(&node, "/api/v1/products", &reader).await,
        products
    );
    assert_eq!(whole_list(&node, &orders_path, &ada).await, orders);
    assert_eq!(
        whole_list(&node, &notifications_path, &ada).await,
        notifications
    );
}

#[tokio::test]
async fn the_cli_refuses_to_rebuild_under_a_running_node_and_unknown_projections() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let config = node.config_path().to_owned();
    let rebuild = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_playhouse"))
            .args(["projections", "rebuild", name, "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let running = rebuild("products");
    assert!(!running.status.success());
    assert!(
        String::from_utf8_lossy(&running.stderr).contains("Stop it first"),
        "{}",
        String::from_utf8_lossy(&running.stderr)
    );
    drop(node);
    let unknown = rebuild("nope");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("known: "));
}
