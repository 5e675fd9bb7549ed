//! The operations page in a real browser (headless Chromium through chromedriver) against a
//! three-node cluster: it asks for a token and refuses a non-admin one, lists the three members
//! up, shows an order's saga in its counts, shows a node killed with SIGKILL down within 5 s,
//! loads nothing from elsewhere and logs no error. It leaves a screenshot in
//! `target/ui/operations-page.png`. On replicated partitions: every partition's leader,
//! replicas and lag, and a failover when a node is killed. On one node: the page's headers,
//! and what its data route reports after real commands and a transfer.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::webdriver::Browser;
use crate::support::{Node, NodeOptions, assert_problem, get_as, json_of, post_as, token};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MEMBERS_UP: &str = "
    const rows = [...document.querySelectorAll('#members tr[data-member]')];
    return rows.length === 3 && rows.every((row) => row.dataset.status === 'up')
        ? rows.map((row) => row.dataset.member) : null;";

const ORDER_SAGAS_COMPLETED: &str = "
    const cell = document.querySelector(
        '#saga-counts tr[data-kind=\"order_saga\"] td[data-status=\"completed\"]');
    return cell ? Number(cell.textContent) : 0;";

/// Waits until the page asks for a token.
async fn wait_for_the_token_form(browser: &Browser) {
    browser
        .wait_for(
            "the token form",
            "return !document.getElementById('login').hidden;",
            Duration::from_secs(10),
        )
        .await;
}

/// The `since` of the page's latest poll.
async fn last_since(browser: &Browser) -> u64 {
    browser
        .script(
            "const asked = performance.getEntriesByType('resource')
                .filter((e) => e.name.includes('/admin/overview?since='));
             return Number(new URL(asked[asked.length - 1].name).searchParams.get('since'));",
            Vec::new(),
        )
        .await
        .as_u64()
        .unwrap()
}

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
    wait_for_the_token_form(&browser).await;
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

    // kill -9 of node 2 or 3 (the one not running the order's saga, whose count then stays
    // on the page): the page shows it down within 5 s, its report missing.
    let saga_owner = cluster.owner_of("orders", &format!("order_saga-{order}"));
    let victim = if saga_owner == 2 { 1 } else { 2 };
    let name = format!("node-{}", victim + 1);
    cluster.nodes[victim].kill9();
    let killed = Instant::now();
    browser
        .wait_for(
            &format!("{name} shown down"),
            &format!(
                "const row = document.querySelector('#members tr[data-member=\"{name}\"]');
                 return row && row.dataset.status === 'down';"
            ),
            Duration::from_secs(5),
        )
        .await;
    println!(
        "{name} shown down {} ms after kill -9",
        killed.elapsed().as_millis()
    );
    browser
        .wait_for(
            &format!("{name}'s report missing"),
            &format!(
                "return document.querySelector('#node-cards .card.missing[data-node=\"{name}\"]') !== null;"
            ),
            Duration::from_secs(5),
        )
        .await;
    // The page asks only for chart points it lacks: a node gone quiet does not hold that back
    // (the answers would grow to the whole history).
    let since_at_kill = last_since(&browser).await;
    let moved_on = browser
        .wait_for(
            "polls asking for newer points after a node went down",
            &format!(
                "const asked = performance.getEntriesByType('resource')
                    .filter((e) => e.name.includes('/admin/overview?since='))
                    .map((e) => Number(new URL(e.name).searchParams.get('since')));
                 const last = asked[asked.length - 1];
                 return last > {since_at_kill} + 2000 ? last : null;"
            ),
            Duration::from_secs(10),
        )
        .await;
    println!("since: {since_at_kill} at the kill, {moved_on} later");

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui/operations-page.png");
    browser.fit_window_to_page().await;
    browser.screenshot(&screenshot).await;
    println!("screenshot: {}", screenshot.display());

    // The node serving the page paused: the view says it is out of date, then recovers.
    cluster.nodes[0].pause();
    let stale = browser
        .wait_for(
            "the view flagged stale",
            "return document.getElementById('dashboard').classList.contains('stale')
                ? document.getElementById('freshness').textContent : null;",
            Duration::from_secs(15),
        )
        .await;
    cluster.nodes[0].resume();
    assert!(stale.as_str().unwrap().contains("out of date"), "{stale}");
    browser
        .wait_for(
            "the view fresh again",
            "return !document.getElementById('dashboard').classList.contains('stale');",
            Duration::from_secs(15),
        )
        .await;

    // "Forget token" takes the data off the screen, and no answer still on its way brings it
    // back.
    browser.click("#forget").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let forgotten = browser
        .script(
            "return {
                dashboard: document.getElementById('dashboard').hidden,
                login: document.getElementById('login').hidden,
                stored: sessionStorage.length,
            };",
            Vec::new(),
        )
        .await;
    assert_eq!(
        forgotten,
        json!({"dashboard": true, "login": false, "stored": 0})
    );

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

/// The leader of every replicated partition row, once there are 64 and each has one.
const PARTITION_LEADERS: &str = "
    const rows = [...document.querySelectorAll('#replication tr[data-partition]')];
    return rows.length === 64 && rows.every((row) => row.dataset.leader)
        ? rows.map((row) => row.dataset.leader) : null;";

#[tokio::test]
async fn the_operations_page_shows_each_replicated_partition_and_a_failover() {
    let mut options = ClusterOptions::default();
    options
        .env
        .push(("PLAYHOUSE_STORE__JOURNAL".into(), "raft".into()));
    let mut cluster = TestCluster::start(&options).await;
    cluster.wait_settled(Duration::from_secs(30)).await;
    let browser = Browser::start(1440, 1100).await;
    browser.goto(&cluster.node(0).url("/ui")).await;
    wait_for_the_token_form(&browser).await;
    browser
        .type_into("#token", &token("operator", &["admin"]))
        .await;
    browser.click("#login button[type=submit]").await;

    // Every partition with its leader (each as its leader reports it), spread over the nodes.
    let leaders = browser
        .wait_for(
            "64 partitions, each with a leader, at least 15 led by each node",
            &format!(
                "const leaders = (() => {{ {PARTITION_LEADERS} }})();
                 const led = (node) => leaders.filter((l) => l === node).length;
                 return leaders && ['node-1', 'node-2', 'node-3'].every((n) => led(n) >= 15)
                     ? leaders : null;"
            ),
            Duration::from_secs(30),
        )
        .await;
    let leaders: Vec<String> = serde_json::from_value(leaders).unwrap();
    for node in ["node-1", "node-2", "node-3"] {
        let led = leaders.iter().filter(|leader| *leader == node).count();
        assert!(led >= 15, "{node} leads {led} of 64: {leaders:?}");
    }
    let row = browser
        .script(
            "const row = document.querySelector('#replication tr[data-partition=\"0\"]');
             return [...row.cells].map((cell) => cell.textContent);",
            Vec::new(),
        )
        .await;
    let row: Vec<String> = serde_json::from_value(row).unwrap();
    assert_eq!(row.len(), 6, "{row:?}");
    assert_eq!(row[0], "0");
    assert_eq!(
        row[3].matches("node-").count(),
        3,
        "three replicas, with the followers' lag: {row:?}"
    );
    assert!(row[3].contains("lag "), "{row:?}");

    // node 3 killed: its partitions are shown led by the others, each with a failover in
    // the last 20 s.
    let led_by_3: Vec<usize> = (0..leaders.len())
        .filter(|p| leaders[*p] == "node-3")
        .collect();
    cluster.nodes[2].kill9();
    let failovers = browser
        .wait_for(
            "node-3's partitions led by the others",
            &format!(
                "const leaders = (() => {{ {PARTITION_LEADERS} }})();
                 if (!leaders || leaders.includes('node-3')) return null;
                 const rows = document.querySelectorAll('#replication tr[data-partition]');
                 return {led_by_3:?}.map((p) => rows[p].cells[4].textContent);"
            ),
            Duration::from_secs(20),
        )
        .await;
    let failovers: Vec<String> = serde_json::from_value(failovers).unwrap();
    for (partition, when) in led_by_3.iter().zip(&failovers) {
        let seconds = match when.strip_suffix(" ms ago") {
            Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
            None => when
                .strip_suffix(" s ago")
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("partition {partition}: last failover {when:?}")),
        };
        assert!(
            seconds < 20.0,
            "partition {partition}: last failover {when}"
        );
    }
}

#[tokio::test]
async fn the_page_is_public_and_strict_and_its_data_needs_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let client = support::client();
    for (path, content_type) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let response = client.get(node.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
            "{path}: {policy}"
        );
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        // Revalidated, not downloaded again, while unchanged.
        let tag = header("etag");
        let again = client
            .get(node.url(path))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path} {tag}");
        let other = client
            .get(node.url(path))
            .header("if-none-match", "\"0000000000000000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::OK, "{path}");
    }

    let overview = "/admin/overview";
    let anonymous = client.get(node.url(overview)).send().await.unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let reader = get_as(&node, overview, &token("ada", &["reader"])).await;
    assert_problem(reader, StatusCode::FORBIDDEN, "forbidden").await;
    let admin = token("operator", &["admin"]);
    let negative = get_as(&node, "/admin/overview?since=-1", &admin).await;
    assert_problem(negative, StatusCode::UNPROCESSABLE_ENTITY, "invalid-field").await;
    let words = get_as(&node, "/admin/overview?since=yesterday", &admin).await;
    assert_problem(words, StatusCode::BAD_REQUEST, "bad-request").await;

    // Real work: two accounts, credits, a transfer, a refused debit.
    let ada = token("ada", &["writer"]);
    let from = support::open_account_as(&node, "ada", "ada", 1_000).await;
    let to = support::open_account_as(&node, "ada", "ada", 0).await;
    for _ in 0..5 {
        let credit = post_as(
            &node,
            &format!("/api/v1/accounts/{from}/credit"),
            &ada,
            json!({"amount": 1}),
        )
        .await;
        assert_eq!(credit.status(), StatusCode::OK);
    }
    let refused = post_as(
        &node,
        &format!("/api/v1/accounts/{to}/debit"),
        &ada,
        json!({"amount": 1}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let transfer = json_of(
        post_as(
            &node,
            "/api/v1/transfers",
            &ada,
            json!({"from": from, "to": to, "amount": 300}),
        )
        .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let id = transfer["id"].as_str().unwrap();
    let settled = support::settled(&node, &format!("/api/v1/transfers/{id}"), &ada).await;
    assert_eq!(settled["status"], "completed", "{settled}");

    // Within a sampling period or two the report shows them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (stats, account) = loop {
        let answer = get_as(&node, overview, &admin).await;
        assert_eq!(answer.headers()["cache-control"], "no-store");
        let body = json_of(answer, StatusCode::OK).await;
        let stats = body["nodes"][0]["stats"].clone();
        let account = stats["live"]["aggregates"]
            .as_array()
            .and_then(|kinds| kinds.iter().find(|k| k["kind"] == "account").cloned());
        let transfers_completed = stats["sagas"]["kinds"]
            .as_array()
            .and_then(|kinds| kinds.iter().find(|k| k["kind"] == "transfer"))
            .map(|k| k["completed"].clone());
        if let Some(account) = account
            && transfers_completed == Some(json!(1))
            && account["outcomes"]["rejected"].as_f64().unwrap_or(0.0) > 0.0
        {
            assert_eq!(body["members"][0]["this_node"], true);
            assert_eq!(body["partitions"], json!([]), "a node alone has no grid");
            break (stats, account);
        }
        assert!(
            Instant::now() < deadline,
            "the report did not show the work in 10 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(account["live"], 2, "{account}");
    assert_eq!(account["service"], "accounts", "{account}");
    assert!(account["p99_ms"].as_f64().unwrap() > 0.0, "{account}");
    let store = &stats["live"]["store"];
    assert!(store["commits_per_s"].as_f64().unwrap() > 0.0, "{store}");
    assert!(store["fsync_p50_ms"].as_f64().unwrap() > 0.0, "{store}");
    let http = &stats["live"]["http"];
    assert!(
        http["client_errors_per_s"].as_f64().unwrap() > 0.0,
        "the 409: {http}"
    );
    assert!(
        stats["projections"].as_array().unwrap().len() >= 3,
        "{stats}"
    );
    // Chart points come once: none again after the newest one seen.
    let newest = stats["history"].as_array().unwrap().last().unwrap()["at_ms"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let newer = loop {
        let again = json_of(
            get_as(&node, &format!("{overview}?since={newest}"), &admin).await,
            StatusCode::OK,
        )
        .await;
        let points = again["nodes"][0]["stats"]["history"]
            .as_array()
            .unwrap()
            .clone();
        if !points.is_empty() {
            break points;
        }
        assert!(
            Instant::now() < deadline,
            "no chart point after {newest} in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for point in &newer {
        assert!(point["at_ms"].as_u64().unwrap() > newest, "{point}");
    }
}
