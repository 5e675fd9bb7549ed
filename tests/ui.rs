//! The operations page in a real browser (headless Chromium through chromedriver) against a
//! three-node cluster: it asks for a token and refuses a non-admin one, lists the three members
//! up, shows an order's saga in its counts, shows a node killed with SIGKILL down within 5 s,
//! loads nothing from elsewhere and logs no error. It leaves a screenshot in
//! `target/ui/operations-page.png`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::cluster::{ClusterOptions, TestCluster};
use support::webdriver::Browser;
use support::{json_of, post_as, token};

const MEMBERS_UP: &str = "
    const rows = [...document.querySelectorAll('#members tr[data-member]')];
    return rows.length === 3 && rows.every((row) => row.dataset.status === 'up')
        ? rows.map((row) => row.dataset.member) : null;";

const ORDER_SAGAS_COMPLETED: &str = "
    const cell = document.querySelector(
        '#saga-counts tr[data-kind=\"order_saga\"] td[data-status=\"completed\"]');
    return cell ? Number(cell.textContent) : 0;";

async fn place_confirmed_order(cluster: &TestCluster) -> String {
    let node = cluster.node(0);
    let product = support::create_product(node, "shop", "UI-1", 250).await;
    support::receive_stock(node, "shop", &product, 10).await;
    let customer = support::register_customer(node, "ada", 1_000_000).await;
    let ada = token("ada", &["writer"]);
    let placed = json_of(
        post_as(
            node,
            "/api/v1/orders",
            &ada,
            json!({"customer_id": customer, "lines": [{"product_id": product, "quantity": 2}]}),
        )
        .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let id = placed["order_id"].as_str().unwrap().to_owned();
    let order = support::settled(node, &format!("/api/v1/orders/{id}"), &ada).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    id
}

#[tokio::test]
async fn the_operations_page_shows_the_cluster_live_in_a_real_browser() {
    let mut cluster = TestCluster::start(&ClusterOptions::default()).await;
    let browser = Browser::start(1440, 1100).await;
    let origin = cluster.node(0).url("");
    browser.goto(&cluster.node(0).url("/ui")).await;

    // It asks for a token, and a token without the admin role is refused with the reason.
    browser
        .wait_for(
            "the token form",
            "return !document.getElementById('login').hidden;",
            Duration::from_secs(10),
        )
        .await;
    browser
        .type_into("#token", &token("ada", &["reader"]))
        .await;
    browser.click("#login button[type=submit]").await;
    let refused = browser
        .wait_for(
            "the refusal of a reader token",
            "const e = document.getElementById('login-error'); return e.hidden ? null : e.textContent;",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        refused.as_str().unwrap().contains("refused this token"),
        "{refused}"
    );

    browser
        .type_into("#token", &token("operator", &["admin"]))
        .await;
    browser.click("#login button[type=submit]").await;
    let members = browser
        .wait_for("three members up", MEMBERS_UP, Duration::from_secs(15))
        .await;
    assert_eq!(members, json!(["node-1", "node-2", "node-3"]));
    let shown = browser
        .script(
            "return {
                services: document.querySelectorAll('#partitions .partition-row').length,
                cards: document.querySelectorAll('#node-cards .card:not(.missing)').length,
                lines: document.querySelectorAll('#chart-requests polyline').length,
            };",
            Vec::new(),
        )
        .await;
    assert_eq!(shown["services"], 7, "{shown}");
    assert_eq!(shown["cards"], 3, "{shown}");

    // An order: its saga is counted once it completes.
    let before = browser.script(ORDER_SAGAS_COMPLETED, Vec::new()).await;
    let order = place_confirmed_order(&cluster).await;
    let after = browser
        .wait_for(
            "the order saga counted as completed",
            &format!(
                "const n = (() => {{ {ORDER_SAGAS_COMPLETED} }})(); return n > {before} ? n : null;"
            ),
            Duration::from_secs(10),
        )
        .await;
    println!("order {order}: completed order sagas {before} -> {after}");
    // The page has drawn its charts by now (points every 2 s since the nodes started).
    browser
        .wait_for(
            "a request-rate line per node",
            "return document.querySelectorAll('#chart-requests polyline').length === 3;",
            Duration::from_secs(10),
        )
        .await;

    // kill -9 of node 3: the page shows it down within 5 s, its report missing.
    cluster.nodes[2].kill9();
    let killed = Instant::now();
    browser
        .wait_for(
            "node-3 shown down",
            "const row = document.querySelector('#members tr[data-member=\"node-3\"]');
             return row && row.dataset.status === 'down';",
            Duration::from_secs(5),
        )
        .await;
    println!(
        "node-3 shown down {} ms after kill -9",
        killed.elapsed().as_millis()
    );
    browser
        .wait_for(
            "node-3's report missing",
            "return document.querySelector('#node-cards .card.missing[data-node=\"node-3\"]') !== null;",
            Duration::from_secs(5),
        )
        .await;

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui/operations-page.png");
    browser.fit_window_to_page().await;
    browser.screenshot(&screenshot).await;
    println!("screenshot: {}", screenshot.display());

    // Everything came from the node, and nothing went wrong in the page.
    let resources = browser
        .script(
            "return performance.getEntriesByType('resource').map((entry) => entry.name);",
            Vec::new(),
        )
        .await;
    let foreign: Vec<&Value> = resources
        .as_array()
        .unwrap()
        .iter()
        .filter(|url| !url.as_str().unwrap().starts_with(origin.as_str()))
        .collect();
    assert!(foreign.is_empty(), "loaded from elsewhere: {foreign:?}");
    let page_error = browser
        .script(
            "const e = document.getElementById('page-error'); return e.hidden ? null : e.textContent;",
            Vec::new(),
        )
        .await;
    assert_eq!(page_error, Value::Null, "the page showed an error");
    let severe: Vec<(String, String)> = browser
        .console()
        .await
        .into_iter()
        .filter(|(level, message)| {
            // The reader token's 403 is logged by the browser as a failed load; it was meant.
            level == "SEVERE" && !message.contains("403")
        })
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
}
