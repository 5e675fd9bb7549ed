//! Part 6, the cost of replication: the same three release nodes with `store.journal =
//! "direct"` (each partition on its owner alone) and `"raft"` (each partition a Raft group on
//! all three), alternated run by run in one sitting: durable credits/s through the edges of
//! the nodes that serve each account (the owner, or the partition's leader) at full load,
//! latency at a fixed offered load, and orders placed through every edge until confirmed (the
//! order saga: an order, a customer's credit, stock and a payment, each in its own partition);
//! then each node's CPU with no load at all.

use std::path::Path;
use std::time::{Duration, Instant};

use super::support::{script, wrk};
use super::{Settings, Three, token};

/// Credits per second sent, open loop, for the latency at a fixed offered load.
const OFFERED_PER_SECOND: u64 = 500;

/// Clients placing orders at once, spread over the three edges.
const ORDER_CLIENTS: usize = 24;

/// How long idle CPU is measured.
const IDLE_SECONDS: u64 = 10;

/// One run's figures.
struct Run {
    credits_per_second: f64,
    /// The highest p99 of the three edges' wrk runs.
    worst_edge_p99_ms: f64,
    non_2xx: u64,
    offered_p50_ms: f64,
    offered_p99_ms: f64,
    offered_failed: u64,
    confirmed_orders_per_second: f64,
    order_p50_ms: f64,
    order_p99_ms: f64,
    /// Orders that ended otherwise than confirmed, or whose placing failed.
    orders_not_confirmed: u64,
}

impl Three {
    /// Which node serves each account's writes: with replication its partition's leader (as
    /// node 1 reports it), otherwise its owner.
    pub(super) async fn servers(
        &self,
        accounts: &[(String, usize)],
        replicated: bool,
    ) -> Vec<usize> {
        if !replicated {
            return accounts.iter().map(|(_, owner)| *owner).collect();
        }
        let view = self.cluster_view(0).await.expect("node 1 answers");
        let leaders: Vec<usize> = view["replication"]["partitions"]
            .as_array()
            .expect("a replicated node reports its partitions")
            .iter()
            .map(|p| {
                let leader = p["leader"].as_str().expect("every partition has a leader");
                leader.trim_start_matches("node-").parse::<usize>().unwrap() - 1
            })
            .collect();
        accounts
            .iter()
            .map(|(id, _)| leaders[self.placement.partition(&format!("account-{id}")) as usize])
            .collect()
    }
}

/// wrk scripts, one per node, crediting 1 to the accounts of `accounts` that node serves
/// (`servers`, by account), named `{name}-{node}` in `dir`.
pub(super) fn credit_scripts(
    dir: &Path,
    name: &str,
    accounts: &[(String, usize)],
    servers: &[usize],
) -> Vec<std::path::PathBuf> {
    let auth = format!("Bearer {}", token("bench", &["writer"]));
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    (0..3)
        .map(|n| {
            let paths: Vec<String> = accounts
                .iter()
                .zip(servers)
                .filter(|(_, server)| **server == n)
                .map(|((id, _), _)| format!("/api/v1/accounts/{id}/credit"))
                .collect();
            script(
                dir,
                &format!("{name}-{n}"),
                "POST",
                &paths,
                &headers,
                Some(r#"{"amount":1}"#),
            )
        })
        .collect()
}

/// One cluster, one run: started on `journal`, 300 accounts opened, credits through the
/// serving edges at full load and at a fixed offered load, stopped.
async fn one_run(dir: &Path, settings: &Settings, journal: &str) -> Run {
    let extra = [("PLAYHOUSE_STORE__JOURNAL".to_owned(), journal.to_owned())];
    let three = Three::start(dir, &extra);
    three.all_up(Duration::from_secs(30)).await;
    let replicated = journal == "raft";
    if replicated {
        three.leaders_settled(Duration::from_secs(60)).await;
    }
    let accounts = three.open_accounts(300).await;
    let servers = three.servers(&accounts, replicated).await;
    let writer = token("bench", &["writer"]);
    let scripts = credit_scripts(dir, "credit", &accounts, &servers);
    let loads: Vec<_> = (0..3)
        .map(|n| {
            let credits = scripts[n].clone();
            let (edge, seconds) = (three.nodes[n].edge.clone(), settings.seconds);
            std::thread::spawn(move || wrk(&edge, &credits, seconds, 22))
        })
        .collect();
    let figures: Vec<_> = loads.into_iter().map(|l| l.join().unwrap()).collect();
    let (offered_p50_ms, offered_p99_ms, offered_failed) =
        offered_load(&three, &accounts, &servers, &writer, settings.seconds).await;
    let orders = place_orders(&three, &writer, settings.seconds).await;
    Run {
        confirmed_orders_per_second: orders.confirmed as f64 / settings.seconds as f64,
        order_p50_ms: orders.p50_ms,
        order_p99_ms: orders.p99_ms,
        orders_not_confirmed: orders.not_confirmed,
        credits_per_second: figures.iter().map(|f| f.requests_per_second).sum(),
        worst_edge_p99_ms: figures.iter().map(|f| f.p99_ms).fold(0.0, f64::max),
        non_2xx: figures.iter().map(|f| f.non_2xx).sum(),
        offered_p50_ms,
        offered_p99_ms,
        offered_failed,
    }
}

/// [`OFFERED_PER_SECOND`] credits a second for `seconds`, each sent on schedule whether or
/// not the earlier ones were answered (open loop), to the serving edge of an account in
/// turn: p50 and p99 in ms, and how many were not answered 2xx.
async fn offered_load(
    three: &Three,
    accounts: &[(String, usize)],
    servers: &[usize],
    writer: &str,
    seconds: u64,
) -> (f64, f64, u64) {
    let every = Duration::from_micros(1_000_000 / OFFERED_PER_SECOND);
    let started = tokio::time::Instant::now();
    let sends = (0..OFFERED_PER_SECOND * seconds).map(|i| {
        let (id, _) = &accounts[i as usize % accounts.len()];
        let url = format!(
            "{}/api/v1/accounts/{id}/credit",
            three.nodes[servers[i as usize % accounts.len()]].edge
        );
        let (http, writer) = (three.http.clone(), writer.to_owned());
        async move {
            tokio::time::sleep_until(started + every * i as u32).await;
            let sent = Instant::now();
            let answer = http
                .post(url)
                .bearer_auth(writer)
                .json(&serde_json::json!({"amount": 1}))
                .send()
                .await;
            (
                sent.elapsed(),
                answer.is_ok_and(|r| r.status().is_success()),
            )
        }
    });
    let answers = futures::future::join_all(sends).await;
    let failed = answers.iter().filter(|(_, ok)| !ok).count() as u64;
    let mut times: Vec<Duration> = answers.into_iter().map(|(t, _)| t).collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(super::percentile(&times, 0.50)),
        ms(super::percentile(&times, 0.99)),
        failed,
    )
}

/// What the order phase measured.
struct Orders {
    confirmed: u64,
    p50_ms: f64,
    p99_ms: f64,
    not_confirmed: u64,
}

/// Posts `body` to `path` at `edge`; the answer's JSON when it is 2xx.
async fn post(
    http: &reqwest::Client,
    edge: &str,
    writer: &str,
    path: &str,
    body: serde_json::Value,
) -> Option<serde_json::Value> {
    let answer = http
        .post(format!("{edge}{path}"))
        .bearer_auth(writer)
        .json(&body)
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

/// [`ORDER_CLIENTS`] clients, each through one edge in turn, place one-line orders for
/// `seconds` and wait for each to be confirmed (polling every millisecond, so the latency
/// includes up to a millisecond of polling): confirmed orders, and p50/p99 from the POST
/// to the GET that first shows it confirmed.
async fn place_orders(three: &Three, writer: &str, seconds: u64) -> Orders {
    let edge = |n: usize| three.nodes[n % 3].edge.clone();
    let mut customers = Vec::new();
    for n in 0..ORDER_CLIENTS {
        let body = serde_json::json!({"name": "bench", "email": "bench@example.com", "credit_limit": 1_000_000_000});
        let customer = post(&three.http, &edge(n), writer, "/api/v1/customers", body)
            .await
            .expect("a customer is registered");
        customers.push(customer["id"].as_str().unwrap().to_owned());
    }
    let mut products = Vec::new();
    for n in 0..16 {
        let body = serde_json::json!({"name": "bench", "sku": format!("BENCH-{n}"), "price": 100});
        let product = post(&three.http, &edge(n), writer, "/api/v1/products", body)
            .await
            .expect("a product is created");
        let id = product["id"].as_str().unwrap().to_owned();
        let stock = serde_json::json!({"quantity": 1_000_000_000});
        post(
            &three.http,
            &edge(n),
            writer,
            &format!("/api/v1/inventory/{id}/receive"),
            stock,
        )
        .await
        .expect("stock is received");
        products.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let clients = customers.into_iter().enumerate().map(|(client, customer)| {
        let (http, edge, writer) = (three.http.clone(), edge(client), writer.to_owned());
        let products = products.clone();
        async move {
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            let mut n = client;
            while Instant::now() < deadline {
                n += 1;
                let started = Instant::now();
                let order = serde_json::json!({"customer_id": customer,
                    "lines": [{"product_id": products[n % products.len()], "quantity": 1}]});
                let Some(placed) = post(&http, &edge, &writer, "/api/v1/orders", order).await
                else {
                    failed += 1;
                    continue;
                };
                let url = format!(
                    "{edge}/api/v1/orders/{}",
                    placed["order_id"].as_str().unwrap()
                );
                loop {
                    let state: Option<serde_json::Value> =
                        match http.get(&url).bearer_auth(&writer).send().await {
                            Ok(answer) => answer.json().await.ok(),
                            Err(_) => None,
                        };
                    match state.as_ref().and_then(|s| s["status"].as_str()) {
                        Some("confirmed") => {
                            latencies.push(started.elapsed());
                            break;
                        }
                        Some("pending") | None => {
                            tokio::time::sleep(Duration::from_millis(1)).await
                        }
                        Some(_) => {
                            failed += 1;
                            break;
                        }
                    }
                }
            }
            (latencies, failed)
        }
    });
    let mut latencies = Vec::new();
    let mut not_confirmed = 0;
    for (mine, failed) in futures::future::join_all(clients).await {
        latencies.extend(mine);
        not_confirmed += failed;
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Orders {
        confirmed: latencies.len() as u64,
        p50_ms: ms(super::percentile(&latencies, 0.50)),
        p99_ms: ms(super::percentile(&latencies, 0.99)),
        not_confirmed,
    }
}

/// CPU time (user + system) each node's process used in [`IDLE_SECONDS`] with no load, as
/// a share of one core.
async fn idle_cpu(dir: &Path, journal: &str) -> Vec<f64> {
    let extra = [("PLAYHOUSE_STORE__JOURNAL".to_owned(), journal.to_owned())];
    let three = Three::start(dir, &extra);
    three.all_up(Duration::from_secs(30)).await;
    if journal == "raft" {
        three.leaders_settled(Duration::from_secs(60)).await;
    }
    // Settled: elections, forming and balancing are over.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before: Vec<u64> = three.nodes.iter().map(|n| cpu_ticks(n.pid())).collect();
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let after: Vec<u64> = three.nodes.iter().map(|n| cpu_ticks(n.pid())).collect();
    // Linux counts CPU time in ticks of 1/100 s (USER_HZ).
    after
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b) as f64 / 100.0 / IDLE_SECONDS as f64)
        .collect()
}

/// User plus system CPU ticks of process `pid` so far (`/proc/<pid>/stat`, fields 14 and 15).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// One figure of a run, by name.
type Figure = fn(&Run) -> f64;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Part 6: `settings.tries` runs of each journal, alternated, then idle CPU.
pub async fn replication_cost(dir: &Path, settings: &Settings) {
    println!(
        "\n6. the cost of replication: 3 release nodes, 300 accounts, {} alternated runs of each journal; full load: wrk -t2 -c22 -d{}s through each node's edge, crediting the accounts it serves (owner, or partition leader); fixed load: {OFFERED_PER_SECOND} credits/s open loop for {} s",
        settings.tries, settings.seconds, settings.seconds
    );
    println!(
        "| run | journal | credits/s | worst edge p99 ms | non-2xx | at {OFFERED_PER_SECOND}/s: p50 ms | p99 ms | failed | confirmed orders/s | order p50 ms | order p99 ms | orders not confirmed |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut runs: Vec<(&str, Run)> = Vec::new();
    for round in 0..settings.tries {
        for journal in ["direct", "raft"] {
            let run = one_run(
                &dir.join(format!("cost-{round}-{journal}")),
                settings,
                journal,
            )
            .await;
            println!(
                "| {} | {journal} | {:.0} | {:.2} | {} | {:.2} | {:.2} | {} | {:.0} | {:.2} | {:.2} | {} |",
                round + 1,
                run.credits_per_second,
                run.worst_edge_p99_ms,
                run.non_2xx,
                run.offered_p50_ms,
                run.offered_p99_ms,
                run.offered_failed,
                run.confirmed_orders_per_second,
                run.order_p50_ms,
                run.order_p99_ms,
                run.orders_not_confirmed
            );
            runs.push((journal, run));
        }
    }
    let of = |journal: &str, figure: Figure| -> f64 {
        median(
            runs.iter()
                .filter(|(j, _)| *j == journal)
                .map(|(_, run)| figure(run))
                .collect(),
        )
    };
    let figures: [(&str, Figure); 7] = [
        ("credits/s", |r| r.credits_per_second),
        ("worst edge p99 ms", |r| r.worst_edge_p99_ms),
        ("p50 ms at the fixed load", |r| r.offered_p50_ms),
        ("p99 ms at the fixed load", |r| r.offered_p99_ms),
        ("confirmed orders/s", |r| r.confirmed_orders_per_second),
        ("order p50 ms (POST to confirmed)", |r| r.order_p50_ms),
        ("order p99 ms", |r| r.order_p99_ms),
    ];
    println!(
        "\n| median of {} runs | direct | raft | raft / direct |",
        settings.tries
    );
    println!("|---|---:|---:|---:|");
    for (name, figure) in figures {
        let (direct, raft) = (of("direct", figure), of("raft", figure));
        println!(
            "| {name} | {direct:.2} | {raft:.2} | {:.2} |",
            raft / direct
        );
    }
    for journal in ["direct", "raft"] {
        let cpu = idle_cpu(&dir.join(format!("idle-{journal}")), journal).await;
        println!(
            "   idle CPU with journal {journal}, share of one core per node over {IDLE_SECONDS} s: {}",
            cpu.iter()
                .map(|c| format!("{:.1}%", c * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
