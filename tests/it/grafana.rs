//! The Grafana dashboard (`deploy/grafana/playhouse.json`) queries only series the nodes
//! export: three real nodes on replicated partitions take some traffic (accounts, credits, a
//! transfer saga, a list), and every metric a panel names must be in some node's `/metrics`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::{client, metrics_of, open_account_as, token};

/// Every metric name a query of `dashboard` mentions: the identifiers starting with one of
/// the exporters' prefixes.
fn queried_metrics(dashboard: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    collect_exprs(dashboard, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has no queries");
    for expr in exprs {
        let bytes = expr.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            let rest = &expr[at..];
            let starts_name = (rest.starts_with("playhouse_") || rest.starts_with("process_"))
                && (at == 0 || !is_name_byte(bytes[at - 1]));
            if starts_name {
                let len = rest.bytes().take_while(|b| is_name_byte(*b)).count();
                names.insert(rest[..len].to_owned());
                at += len;
            } else {
                at += 1;
            }
        }
    }
    names
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn collect_exprs<'a>(value: &'a Value, exprs: &mut Vec<&'a str>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("expr", Value::String(expr)) => exprs.push(expr),
                    _ => collect_exprs(field, exprs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, exprs)),
        _ => {}
    }
}

/// The series names in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn every_series_the_dashboard_queries_is_one_a_node_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/playhouse.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|error| panic!("{path} is not JSON: {error}"));
    let queried = queried_metrics(&dashboard);
    assert!(queried.len() >= 15, "{queried:?}");

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut options = ClusterOptions::default();
        options
            .env
            .push(("PLAYHOUSE_STORE__JOURNAL".into(), "raft".into()));
        let cluster = TestCluster::start(&options).await;
        cluster.wait_settled(Duration::from_secs(30)).await;
        cluster.wait_for_leaders(Duration::from_secs(30)).await;
        let http = client();
        let writer = token("grafana", &["writer"]);
        let edge = |n: usize, path: &str| cluster.node(n).url(path);

        let mut accounts = Vec::new();
        for n in 0..2 {
            accounts.push(open_account_as(cluster.node(n), "grafana", "grafana", 100).await);
        }
        let credited = http
            .post(edge(1, &format!("/api/v1/accounts/{}/credit", accounts[0])))
            .bearer_auth(&writer)
            .json(&json!({"amount": 5}))
            .send()
            .await
            .unwrap();
        assert!(credited.status().is_success(), "{credited:?}");
        let transfer = http
            .post(edge(2, "/api/v1/transfers"))
            .bearer_auth(&writer)
            .json(&json!({"from": accounts[0], "to": accounts[1], "amount": 7}))
            .send()
            .await
            .unwrap();
        assert!(transfer.status().is_success(), "{transfer:?}");
        let products = http
            .get(edge(0, "/api/v1/products?limit=5"))
            .bearer_auth(&writer)
            .send()
            .await
            .unwrap();
        assert!(products.status().is_success(), "{products:?}");
        // The leaders' lag gauges are set every 2 s, and the saga ends in a moment: scrape
        // until every queried series is there, for at most 20 s.
        let started = std::time::Instant::now();
        loop {
            let mut series = BTreeSet::new();
            for n in 0..3 {
                series.extend(exported(&metrics_of(cluster.node(n)).await));
            }
            let missing: Vec<&String> = queried
                .iter()
                .filter(|name| !series.contains(*name))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the dashboard queries series no node exports: {missing:?}\n(exported: {series:?})"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}
