//! Sagas across crashes, against the real binary: concurrent orders and transfers while the
//! node is killed with SIGKILL at random moments, ten times, and restarted. Afterwards every saga
//! has ended (completed or compensated, none stuck), stock adds up, confirmed orders are paid
//! once, money is conserved and no balance went negative, and each completed transfer moved its
//! amount exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{
    Node, NodeOptions, create_product, open_account_as, receive_stock, register_customer, token,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PRODUCTS: usize = 4;
const STOCK_EACH: u64 = 40;
const ACCOUNTS: usize = 6;
const DEPOSIT_EACH: i64 = 10_000;
const KILLS: usize = 10;

/// A tiny deterministic generator, so that a failing schedule can be read from the seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// What the clients saw: the transfers answered 202 (id -> (from, to, amount)), and every
/// balance they read.
#[derive(Default)]
struct History {
    transfers: HashMap<String, (String, String, i64)>,
    balances_seen: Vec<i64>,
    requests: usize,
    failures: usize,
}

async fn admin_json(base: &str, path: &str) -> Value {
    let response = support::client()
        .get(format!("{base}{path}"))
        .bearer_auth(token("ops", &["admin"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// Every item of a paged list.
async fn all_items(base: &str, path: &str) -> Vec<Value> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let (mut items, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page_path = match &cursor {
            Some(cursor) => format!("{path}{separator}limit=100&cursor={cursor}"),
            None => format!("{path}{separator}limit=100"),
        };
        let page = admin_json(base, &page_path).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn every_saga_ends_and_nothing_is_lost_across_ten_kills() {
    let seed = std::env::var("PLAYHOUSE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| support::now() | 1);
    println!("saga crash test seed: {seed} (PLAYHOUSE_CRASH_SEED={seed} repeats the schedule)");
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &NodeOptions::default());

    let mut products = Vec::new();
    for n in 0..PRODUCTS {
        let product = create_product(&node, "shop", &format!("P{n}"), 100 * (n as i64 + 1)).await;
        receive_stock(&node, "shop", &product, STOCK_EACH).await;
        products.push(product);
    }
    // Credit limits from generous to tight, so that some payments are declined.
    let mut customers = Vec::new();
    for (n, limit) in [50_000, 2_000, 500].into_iter().enumerate() {
        customers.push(register_customer(&node, &format!("buyer{n}"), limit).await);
    }
    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        accounts.push(open_account_as(&node, "bank", &format!("a{n}"), DEPOSIT_EACH).await);
    }

    let base = Arc::new(RwLock::new(node.base.clone()));
    let history = Arc::new(Mutex::new(History::default()));
    let running = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for client in 0..6u64 {
        let (base, history, running) = (base.clone(), history.clone(), running.clone());
        let (products, customers, accounts) =
            (products.clone(), customers.clone(), accounts.clone());
        clients.push(tokio::spawn(async move {
            let mut dice = Dice(seed.wrapping_add(client * 7919) | 1);
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap();
            while running.load(Ordering::Relaxed) {
                let url = base.read().unwrap().clone();
                let (subject, path, body) = match dice.next(3) {
                    0 => {
                        let customer = dice.next(customers.len() as u64) as usize;
                        let lines: Vec<Value> = (0..1 + dice.next(2))
                            .map(|l| {
                                let product = &products[((client + l) % PRODUCTS as u64) as usize];
                                json!({"product_id": product, "quantity": 1 + dice.next(3)})
                            })
                            .collect();
                        let body = json!({"customer_id": customers[customer], "lines": lines});
                        (
                            format!("buyer{customer}"),
                            "/api/v1/orders".to_owned(),
                            Some(body),
                        )
                    }
                    1 => {
                        let from = &accounts[dice.next(ACCOUNTS as u64) as usize];
                        let to = &accounts[dice.next(ACCOUNTS as u64) as usize];
                        let amount = 1 + dice.next(4_000) as i64;
                        let body = json!({"from": from, "to": to, "amount": amount});
                        (
                            "bank".to_owned(),
                            "/api/v1/transfers".to_owned(),
                            Some(body),
                        )
                    }
                    _ => {
                        let account = &accounts[dice.next(ACCOUNTS as u64) as usize];
                        (
                            "bank".to_owned(),
                            format!("/api/v1/accounts/{account}"),
                            None,
                        )
                    }
                };
                let request = match &body {
                    Some(body) => http.post(format!("{url}{path}")).json(body),
                    None => http.get(format!("{url}{path}")),
                };
                let answer = request
                    .bearer_auth(token(&subject, &["writer"]))
                    .send()
                    .await;
                history.lock().unwrap().requests += 1;
                let Ok(answer) = answer else {
                    history.lock().unwrap().failures += 1;
                    continue;
                };
                let status = answer.status();
                let Ok(answer) = answer.json::<Value>().await else {
                    history.lock().unwrap().failures += 1;
                    continue;
                };
                let mut seen = history.lock().unwrap();
                match (path.as_str(), status) {
                    ("/api/v1/transfers", StatusCode::ACCEPTED) => {
                        let body = body.unwrap();
                        seen.transfers.insert(
                            answer["id"].as_str().unwrap().to_owned(),
                            (
                                body["from"].as_str().unwrap().to_owned(),
                                body["to"].as_str().unwrap().to_owned(),
                                body["amount"].as_i64().unwrap(),
                            ),
                        );
                    }
                    (_, StatusCode::OK) if body.is_none() => {
                        seen.balances_seen.push(answer["balance"].as_i64().unwrap());
                    }
                    _ => {}
                }
            }
        }));
    }

    let mut dice = Dice(seed);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(200 + dice.next(600))).await;
        node.kill9();
        node.restart();
        *base.write().unwrap() = node.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let base = node.base.clone();

    // Let every saga end.
    let deadline = Instant::now() + Duration::from_secs(60);
    for status in ["running", "compensating", "stuck"] {
        loop {
            let sagas = admin_json(&base, &format!("/admin/sagas?status={status}")).await;
            if sagas["items"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "sagas still {status}: {sagas}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let sagas = all_items(&base, "/admin/sagas").await;
    let finished = |kind: &str| {
        sagas
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| s["status"].as_str().unwrap())
            .collect::<Vec<_>>()
    };
    for kind in ["order_saga", "transfer"] {
        assert!(
            finished(kind)
                .iter()
                .all(|s| *s == "completed" || *s == "compensated"),
            "{kind}: {:?}",
            finished(kind)
        );
    }

    // Orders: every order of every customer, with its status; confirmed ones paid once.
    let mut committed = [0u64; PRODUCTS];
    let (mut confirmed, mut cancelled) = (0, 0);
    for customer in &customers {
        // The list is a read model: wait until it has applied the whole log.
        let orders = loop {
            let projections = admin_json(&base, "/admin/projections").await;
            if projections["projections"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["lag"] == 0)
            {
                break all_items(&base, &format!("/api/v1/orders?customer_id={customer}")).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for summary in orders {
            let order = admin_json(
                &base,
                &format!("/api/v1/orders/{}", summary["order_id"].as_str().unwrap()),
            )
            .await;
            let payment = support::client()
                .get(format!(
                    "{base}/api/v1/payments/{}",
                    order["payment_id"].as_str().unwrap()
                ))
                .bearer_auth(token("ops", &["admin"]))
                .send()
                .await
                .unwrap();
            let payment_status = if payment.status() == StatusCode::NOT_FOUND {
                "none".to_owned()
            } else {
                payment.json::<Value>().await.unwrap()["status"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            match order["status"].as_str().unwrap() {
                "confirmed" => {
                    confirmed += 1;
                    assert_eq!(payment_status, "authorized", "confirmed order {order}");
                    for line in order["lines"].as_array().unwrap() {
                        let product = products
                            .iter()
                            .position(|p| line["product_id"] == p.as_str())
                            .unwrap();
                        committed[product] += line["quantity"].as_u64().unwrap();
                    }
                }
                "cancelled" => {
                    cancelled += 1;
                    assert_ne!(
                        payment_status, "authorized",
                        "cancelled order kept its payment: {order}"
                    );
                    assert!(order["reason"].is_string(), "{order}");
                }
                other => panic!("order left {other}: {order}"),
            }
        }
    }
    // Stock: received = available + reserved + committed; nothing reserved once all settled;
    // committed is what the confirmed orders hold.
    for (n, product) in products.iter().enumerate() {
        let stock = admin_json(&base, &format!("/api/v1/inventory/{product}")).await;
        let count = |field: &str| stock[field].as_u64().unwrap();
        assert_eq!(
            count("available") + count("reserved") + count("committed"),
            STOCK_EACH,
            "{stock}"
        );
        assert_eq!(count("reserved"), 0, "{stock}");
        assert_eq!(count("committed"), committed[n], "{stock}");
    }

    // Money: conserved, never negative, and each completed transfer moved once.
    let mut total = 0;
    let mut histories: HashMap<String, Vec<Value>> = HashMap::new();
    for account in &accounts {
        let balance = admin_json(&base, &format!("/api/v1/accounts/{account}")).await["balance"]
            .as_i64()
            .unwrap();
        assert!(balance >= 0, "account {account} at {balance}");
        total += balance;
        let mut events = Vec::new();
        let mut from_version = 1;
        loop {
            let page = admin_json(
                &base,
                &format!("/api/v1/accounts/{account}/events?from_version={from_version}"),
            )
            .await;
            events.extend(page["events"].as_array().unwrap().iter().cloned());
            match page["next_from_version"].as_u64() {
                Some(next) => from_version = next,
                None => break,
            }
        }
        histories.insert(account.clone(), events);
    }
    assert_eq!(
        total,
        DEPOSIT_EACH * ACCOUNTS as i64,
        "money was created or lost"
    );
    let history = std::mem::take(&mut *history.lock().unwrap());
    assert!(
        history.balances_seen.iter().all(|b| *b >= 0),
        "a negative balance was read"
    );
    let moves = |account: &str, command_id: &str| {
        histories[account]
            .iter()
            .filter(|e| e["causation_id"] == command_id)
            .count()
    };
    let (mut completed, mut failed) = (0, 0);
    for (id, (from, to, _amount)) in &history.transfers {
        let transfer = admin_json(&base, &format!("/api/v1/transfers/{id}")).await;
        let debit = moves(from, &format!("saga:transfer:{id}:0:act"));
        let credit = moves(to, &format!("saga:transfer:{id}:1:act"));
        let back = moves(from, &format!("saga:transfer:{id}:0:undo"));
        match transfer["status"].as_str().unwrap() {
            "completed" => {
                completed += 1;
                assert_eq!((debit, credit, back), (1, 1, 0), "transfer {transfer}");
            }
            "failed" => {
                failed += 1;
                assert_eq!(credit, 0, "failed transfer credited: {transfer}");
                assert_eq!(
                    debit, back,
                    "failed transfer left a debit standing: {transfer}"
                );
            }
            other => panic!("transfer left {other}: {transfer}"),
        }
    }
    println!(
        "{} requests ({} failed or unknown), {} kills; orders: {confirmed} confirmed, {cancelled} cancelled; transfers: {completed} completed, {failed} failed",
        history.requests, history.failures, KILLS
    );
    assert!(confirmed > 0 && completed > 0, "the load did some work");
}
