//! Saga benchmark, one run against a release node on the default config (all seven services):
//! - durable credits per second (the baseline: one command, one fsync'd append);
//! - orders placed over HTTP until confirmed: confirmed orders per second, and p50/p99 from the
//!   POST to the moment a GET first shows `confirmed`;
//! - transfers likewise, until `completed`.
//!
//! Each phase runs `--clients N` (default 64) concurrent clients for `--seconds N` (default 10).
//! A client polls its order or transfer every millisecond until it settles, so the latency
//! includes up to a millisecond of polling, and the polls are load the node also serves.
//!
//! `cargo bench --bench sagas [-- --seconds N --clients N]`

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::BenchNode;

struct Setup {
    base: String,
    token: String,
    accounts: Vec<String>,
    customers: Vec<String>,
    products: Vec<String>,
}

async fn post(http: &reqwest::Client, setup: &Setup, path: &str, body: Value) -> Value {
    let response = http
        .post(format!("{}{path}", setup.base))
        .bearer_auth(&setup.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

async fn prepare(base: String, token: String, clients: usize) -> Setup {
    let http = reqwest::Client::new();
    let mut setup = Setup {
        base,
        token,
        accounts: Vec::new(),
        customers: Vec::new(),
        products: Vec::new(),
    };
    for n in 0..clients * 2 {
        let account = post(
            &http,
            &setup,
            "/api/v1/accounts",
            json!({"owner": "bench", "initial_balance": 1_000_000_000}),
        )
        .await;
        setup
            .accounts
            .push(account["id"].as_str().unwrap().to_owned());
        if n < clients {
            let customer = post(&http, &setup, "/api/v1/customers",
                json!({"name": "bench", "email": "bench@example.com", "credit_limit": 1_000_000_000})).await;
            setup
                .customers
                .push(customer["id"].as_str().unwrap().to_owned());
        }
        if n < 16 {
            let product = post(
                &http,
                &setup,
                "/api/v1/products",
                json!({"name": "bench", "sku": format!("BENCH-{n}"), "price": 100}),
            )
            .await;
            let id = product["id"].as_str().unwrap().to_owned();
            post(
                &http,
                &setup,
                &format!("/api/v1/inventory/{id}/receive"),
                json!({"quantity": 1_000_000_000}),
            )
            .await;
            setup.products.push(id);
        }
    }
    setup
}

#[derive(Clone, Copy)]
enum Load {
    Credits,
    Orders,
    Transfers,
}

/// Runs `clients` loops of `load` for `seconds`; returns the latencies of what settled well.
async fn run(
    setup: Arc<Setup>,
    load: Load,
    clients: usize,
    seconds: u64,
) -> (Vec<Duration>, usize) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let setup = setup.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut latencies, mut other) = (Vec::new(), 0);
            let mut n = 0usize;
            while Instant::now() < deadline {
                n += 1;
                let started = Instant::now();
                let (path, body, done) = match load {
                    Load::Credits => (
                        format!("/api/v1/accounts/{}/credit", setup.accounts[client]),
                        json!({"amount": 1}),
                        "",
                    ),
                    Load::Orders => (
                        "/api/v1/orders".to_owned(),
                        json!({"customer_id": setup.customers[client],
                            "lines": [{"product_id": setup.products[(client + n) % setup.products.len()], "quantity": 1}]}),
                        "confirmed",
                    ),
                    Load::Transfers => (
                        "/api/v1/transfers".to_owned(),
                        json!({"from": setup.accounts[2 * client], "to": setup.accounts[2 * client + 1], "amount": 1}),
                        "completed",
                    ),
                };
                let answer = post(&http, &setup, &path, body).await;
                if done.is_empty() {
                    latencies.push(started.elapsed());
                    continue;
                }
                let location = match load {
                    Load::Orders => format!("/api/v1/orders/{}", answer["order_id"].as_str().unwrap()),
                    _ => format!("/api/v1/transfers/{}", answer["id"].as_str().unwrap()),
                };
                loop {
                    let state: Value = http
                        .get(format!("{}{location}", setup.base))
                        .bearer_auth(&setup.token)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if state["status"] == done {
                        latencies.push(started.elapsed());
                        break;
                    }
                    if state["status"] != "pending" {
                        other += 1;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (latencies, other)
        }));
    }
    let (mut all, mut others) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, other) = task.await.unwrap();
        all.extend(latencies);
        others += other;
    }
    all.sort_unstable();
    (all, others)
}

fn main() {
    let (mut seconds, mut clients) = (10u64, 64usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds N")
            }
            "--clients" => {
                clients = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--clients N")
            }
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let node = BenchNode::start(dir.path());
    let (base, token) = (node.base.clone(), node.token("writer"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let setup = Arc::new(prepare(base, token, clients).await);
        println!("saga benchmark: {clients} concurrent clients, {seconds} s per phase, release node, default config");
        println!("{:<28} {:>10} {:>9} {:>9} {:>8}", "phase", "per s", "p50 ms", "p99 ms", "other");
        for (name, load) in [
            ("durable credits", Load::Credits),
            ("orders until confirmed", Load::Orders),
            ("transfers until completed", Load::Transfers),
        ] {
            let (latencies, other) = run(setup.clone(), load, clients, seconds).await;
            let at = |q: f64| {
                latencies
                    .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
                    .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
            };
            println!(
                "{name:<28} {:>10.0} {:>9.2} {:>9.2} {:>8}",
                latencies.len() as f64 / seconds as f64,
                at(0.5),
                at(0.99),
                other
            );
        }
    });
}
