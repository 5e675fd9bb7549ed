//! The shop workload and its checker over any [`Api`]: clients place orders (one or two lines,
//! for a customer with credit or one with little) and cancel some; every operation is recorded
//! as ok, failed or unknown. Once every order saga has ended, the checker reads every order,
//! its payment and the stock, and says what broke: stock oversold or left reserved, a confirmed
//! order not paid exactly once, a cancelled one still paid, an acknowledged order missing, a
//! saga that never ended, a customer's orders list (through any node) that does not show each
//! order as it is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use playhouse_actors::orders::{OrderSaga, order_id_for};
use playhouse_runtime::prelude::SagaKind;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::api::{Answer, Api, Call, Outcome, settled_get};
use super::ledger::{Checked, Rng, sagas_settled};
use super::token;

pub const SUBJECT: &str = "shop";
const PRODUCTS: usize = 3;
const PRICE: i64 = 100;

/// What the clients order from and for.
#[derive(Debug, Clone)]
pub struct Shop {
    pub products: Vec<String>,
    /// Units of each product received into stock.
    pub received: Vec<u64>,
    /// A customer with ample credit, and one with room for about two orders.
    pub customers: Vec<String>,
}

#[derive(Debug, Clone, Hash)]
pub enum Op {
    Place {
        key: String,
        customer: usize,
        /// (product index, quantity).
        lines: Vec<(usize, u32)>,
    },
    Cancel {
        key: String,
        order: String,
    },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub op: Op,
    pub via: usize,
    pub outcome: Outcome,
}

pub type History = Arc<Mutex<Vec<Entry>>>;

/// Sends `call` through node 0 until it is answered 2xx (setup runs before any fault).
async fn must(api: &dyn Api, call: Call) -> Value {
    for _ in 0..100 {
        if let Answer::Status(status, body) = api.send(0, call.clone()).await
            && status.is_success()
        {
            return body;
        }
        api.sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "setup request {} {} never succeeded",
        call.method, call.path
    );
}

/// Makes the products, their stock and the customers.
pub async fn open(api: &dyn Api, stock: u64) -> Shop {
    let writer = token(SUBJECT, &["writer"]);
    let mut shop = Shop {
        products: Vec::new(),
        received: Vec::new(),
        customers: Vec::new(),
    };
    for n in 0..PRODUCTS {
        let body =
            json!({"name": format!("Product {n}"), "sku": format!("SIM-{n}"), "price": PRICE});
        let product = must(
            api,
            Call::post("/api/v1/products", &writer, body).with_key(format!("product-{n}")),
        )
        .await;
        let id = product["id"].as_str().unwrap().to_owned();
        let receive = Call::post(
            format!("/api/v1/inventory/{id}/receive"),
            &writer,
            json!({ "quantity": stock }),
        );
        must(api, receive.with_key(format!("stock-{n}"))).await;
        shop.products.push(id);
        shop.received.push(stock);
    }
    for (n, credit_limit) in [1_000_000, 4 * PRICE].into_iter().enumerate() {
        let body = json!({"name": format!("Customer {n}"), "email": format!("c{n}@example.com"), "credit_limit": credit_limit});
        let customer = must(
            api,
            Call::post("/api/v1/customers", &writer, body).with_key(format!("customer-{n}")),
        )
        .await;
        shop.customers
            .push(customer["id"].as_str().unwrap().to_owned());
    }
    shop
}

/// One client: until `stop`, places orders and cancels some of the ones it placed, waiting
/// between `think.0` and `think.1` ms after each.
pub async fn run_client(
    api: &dyn Api,
    seed: u64,
    shop: &Shop,
    history: &History,
    stop: &AtomicBool,
    think: (u64, u64),
) {
    let mut rng = Rng(seed);
    let writer = token(SUBJECT, &["writer"]);
    let mut placed: Vec<String> = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let via = rng.below(api.nodes());
        let key = format!("s{seed:x}-{n}");
        let (op, call) = if !placed.is_empty() && rng.below(5) == 0 {
            let order = placed[rng.below(placed.len())].clone();
            let call = Call::post(format!("/api/v1/orders/{order}/cancel"), &writer, json!({}));
            (
                Op::Cancel {
                    key: key.clone(),
                    order,
                },
                call,
            )
        } else {
            let customer = rng.below(shop.customers.len());
            let lines: Vec<(usize, u32)> = (0..1 + rng.below(2))
                .map(|_| (rng.below(shop.products.len()), 1 + rng.below(3) as u32))
                .collect();
            let body = json!({
                "customer_id": shop.customers[customer],
                "lines": lines.iter().map(|(product, quantity)| {
                    json!({"product_id": shop.products[*product], "quantity": quantity})
                }).collect::<Vec<_>>(),
            });
            placed.push(order_id_for(SUBJECT, &key));
            let call = Call::post("/api/v1/orders", &writer, body);
            (
                Op::Place {
                    key: key.clone(),
                    customer,
                    lines,
                },
                call,
            )
        };
        let call = call
            .with_key(&key)
            .with_request_id(format!("q{seed:x}-{n}"));
        let outcome = api.send(via, call).await.outcome();
        let unavailable = matches!(outcome, Outcome::Unknown(_) | Outcome::NotApplied(_));
        history.lock().unwrap().push(Entry { op, via, outcome });
        api.sleep(if unavailable {
            Duration::from_millis(50)
        } else {
            rng.millis(think.0, think.1)
        })
        .await;
    }
}

/// How many events of `events` are of a type containing `kind`.
fn events_of(events: &Value, kind: &str) -> usize {
    events["events"].as_array().map_or(0, |events| {
        events
            .iter()
            .filter(|event| event["type"].as_str().is_some_and(|t| t.contains(kind)))
            .count()
    })
}

/// For a failure report: the order saga `id` as some node's `/admin/sagas` lists it, and the
/// types of the order's events.
async fn explain(api: &dyn Api, id: &str, admin: &str) -> String {
    let mut saga = Value::Null;
    'nodes: for node in 0..api.nodes() {
        for status in [
            "running",
            "compensating",
            "stuck",
            "completed",
            "compensated",
        ] {
            let mut cursor = String::new();
            loop {
                let kind = <OrderSaga as SagaKind>::KIND;
                let path = format!("/admin/sagas?kind={kind}&status={status}&limit=100{cursor}");
                let (_, page) = settled_get(api, node, &path, admin, Duration::from_secs(5)).await;
                if let Some(found) = page["items"]
                    .as_array()
                    .and_then(|items| items.iter().find(|item| item["id"] == id))
                {
                    saga = found.clone();
                    break 'nodes;
                }
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = format!("&cursor={next}"),
                    None => break,
                }
            }
        }
    }
    let (_, events) = settled_get(
        api,
        0,
        &format!("/api/v1/orders/{id}/events"),
        admin,
        Duration::from_secs(5),
    )
    .await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    format!("saga {saga}; order events {types:?}")
}

/// What is wrong with `customer`'s orders list through `node` (every page), if it does not
/// show `orders` (id -> status) as they are within `patience` (read models catch up, a member
/// down is missing from a list for a while). A node that does not answer at all (stopped,
/// retired) is passed over. A member that a partition moved off keeps the rows it had and no
/// longer hears of their orders: listing them would show a status the order left behind.
async fn listed_wrong(
    api: &dyn Api,
    node: usize,
    customer: &str,
    orders: &BTreeMap<String, String>,
    token: &str,
    patience: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut first = true;
    loop {
        let mut listed: BTreeMap<String, String> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        let answered = loop {
            let mut path = format!("/api/v1/orders?customer_id={customer}&limit=100");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            match api.send(node, Call::get(path, token)).await {
                Answer::Status(StatusCode::OK, page) => {
                    for item in page["items"].as_array().into_iter().flatten() {
                        let id = item["order_id"].as_str().unwrap_or("?").to_owned();
                        listed.insert(id, item["status"].as_str().unwrap_or("?").to_owned());
                    }
                    match page["next_cursor"].as_str() {
                        Some(next) => cursor = Some(next.to_owned()),
                        None => break Ok(()),
                    }
                }
                Answer::Status(status, body) => break Err(format!("{status}: {body}")),
                Answer::Nothing(_) | Answer::Unreached(_) if first => return None,
                Answer::Nothing(why) | Answer::Unreached(why) => break Err(why),
            }
        };
        first = false;
        let wrong = match answered {
            Ok(()) if listed == *orders => return None,
            Ok(()) => {
                let differing: Vec<String> = orders
                    .keys()
                    .chain(listed.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .filter(|id| orders.get(*id) != listed.get(*id))
                    .map(|id| format!("{id} listed {:?}, is {:?}", listed.get(id), orders.get(id)))
                    .collect();
                format!(
                    "customer {customer}'s orders listed through node {node}: {}",
                    differing.join("; ")
                )
            }
            Err(why) => format!("customer {customer}'s orders list through node {node}: {why}"),
        };
        if tokio::time::Instant::now() > deadline {
            return Some(wrong);
        }
        api.sleep(Duration::from_millis(200)).await;
    }
}

/// Checks `history` against what the cluster holds (read through node 0) once every order
/// saga has ended.
pub async fn check(api: &dyn Api, shop: &Shop, history: &[Entry], least_ok: usize) -> Checked {
    let mut checked = Checked::default();
    let kind = <OrderSaga as SagaKind>::KIND;
    if let Err(stuck) = sagas_settled(api, &[kind], Duration::from_secs(60)).await {
        checked.problems.push(stuck);
    }
    let admin = token("auditor", &["admin"]);
    let patience = Duration::from_secs(10);
    let get = |path: String| {
        let admin = admin.clone();
        async move { settled_get(api, 0, &path, &admin, patience).await }
    };
    let mut committed = vec![0u64; shop.products.len()];
    let mut orders: BTreeMap<String, (String, &Entry)> = BTreeMap::new();
    for entry in history {
        let verdict = entry.outcome.verdict();
        let kind = match &entry.op {
            Op::Place { key, .. } => {
                orders.insert(order_id_for(SUBJECT, key), (key.clone(), entry));
                "order"
            }
            Op::Cancel { .. } => "cancel",
        };
        *checked
            .counts
            .entry(format!("{kind} {verdict}"))
            .or_insert(0) += 1;
    }
    let problems = &mut checked.problems;
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    // Each customer's orders as the orders themselves say, for the lists.
    let mut by_customer: Vec<BTreeMap<String, String>> =
        vec![BTreeMap::new(); shop.customers.len()];
    for (id, (key, entry)) in &orders {
        let Op::Place {
            lines, customer, ..
        } = &entry.op
        else {
            unreachable!("only placements are orders");
        };
        let (code, order) = get(format!("/api/v1/orders/{id}")).await;
        let status = match code {
            StatusCode::OK => order["status"].as_str().unwrap_or("?").to_owned(),
            StatusCode::NOT_FOUND => "absent".to_owned(),
            _ => {
                problems.push(format!("order {id} ({key}): GET answered {code}: {order}"));
                continue;
            }
        };
        *statuses.entry(status.clone()).or_insert(0) += 1;
        if status != "absent" {
            by_customer[*customer].insert(id.clone(), status.clone());
        }
        match (&entry.outcome, status.as_str()) {
            (Outcome::Ok(_), "absent") => problems.push(format!(
                "order {id} ({key}) was acknowledged, and is missing"
            )),
            (outcome, status) if outcome.not_applied() && status != "absent" => problems.push(format!(
                "order {id} ({key}) was refused or said unavailable ({:?}), and exists: {status}",
                entry.outcome
            )),
            (_, "pending" | "?") => problems.push(format!(
                "order {id} ({key}) never ended: {order}; {}",
                explain(api, id, &admin).await
            )),
            _ => {}
        }
        let payment = order["payment_id"].as_str();
        let (paid, authorizations, refunds) = match payment {
            None => (None, 0, 0),
            Some(payment) => {
                let (code, view) = get(format!("/api/v1/payments/{payment}")).await;
                let (_, events) = get(format!("/api/v1/payments/{payment}/events")).await;
                let status = match code {
                    StatusCode::OK => view["status"].as_str().map(str::to_owned),
                    _ => None,
                };
                (
                    status,
                    events_of(&events, "Authorized"),
                    events_of(&events, "Refunded"),
                )
            }
        };
        match status.as_str() {
            "confirmed" => {
                if paid.as_deref() != Some("authorized") || authorizations != 1 || refunds != 0 {
                    problems.push(format!(
                        "confirmed order {id} ({key}): payment {paid:?}, {authorizations} authorizations, {refunds} refunds"
                    ));
                }
                for (product, quantity) in lines {
                    committed[*product] += u64::from(*quantity);
                }
            }
            "cancelled" if paid.as_deref() == Some("authorized") || authorizations > 1 => {
                problems.push(format!(
                    "cancelled order {id} ({key}) is still paid: {paid:?}, {authorizations} authorizations; {}",
                    explain(api, id, &admin).await
                ));
            }
            _ => {}
        }
    }
    for (n, product) in shop.products.iter().enumerate() {
        let (code, stock) = get(format!("/api/v1/inventory/{product}")).await;
        let number = |field: &str| stock[field].as_u64();
        match (
            code,
            number("available"),
            number("reserved"),
            number("committed"),
        ) {
            (StatusCode::OK, Some(available), Some(reserved), Some(held)) => {
                if reserved != 0 || available + held != shop.received[n] || held != committed[n] {
                    // What moved the stock, and for which saga step: the step that left it
                    // wrong is among them.
                    let (_, events) = get(format!("/api/v1/inventory/{product}/events")).await;
                    let moves: Vec<String> = events["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| format!("{} {} by {}", e["type"], e["data"], e["causation_id"]))
                        .collect();
                    problems.push(format!(
                        "product {n}: {available} available, {reserved} reserved, {held} committed of {} received; confirmed orders hold {}; its events: {}",
                        shop.received[n],
                        committed[n],
                        moves.join("; ")
                    ));
                }
            }
            _ => problems.push(format!("product {n}: stock answered {code}: {stock}")),
        }
    }
    for (customer, orders) in shop.customers.iter().zip(&by_customer) {
        for node in 0..api.nodes() {
            if let Some(wrong) = listed_wrong(api, node, customer, orders, &admin, patience).await {
                problems.push(wrong);
            }
        }
    }
    let confirmed = statuses.get("confirmed").copied().unwrap_or(0);
    if confirmed < least_ok {
        problems.push(format!(
            "only {confirmed} orders were confirmed: too few to check anything"
        ));
    }
    checked.summary = format!(
        "{} shop operations {:?}; orders {statuses:?}",
        history.len(),
        checked.counts
    );
    checked
}
