//! Edge load benchmark, one run, with wrk (Debian package `wrk`, installed by scripts/setup.sh):
//! - GET an account through the full edge (JWT, rate limit, actor) vs a bare axum handler doing
//!   the same lookup and JSON, in its own process: req/s, p50/p99;
//! - POST credit (durable: answered after fsync) over 1000 accounts: cmd/s, p50/p99;
//! - the read models' lag under that credit load: credit acknowledged -> visible to a read
//!   with `min_position`, p50/p99;
//! - the node's peak RSS (VmHWM).
//!
//! `cargo bench --bench edge [-- --seconds N --connections N]`

mod support;

use support::{BenchNode, Process, free_port, memory_mib, open_accounts, script, wait_for, wrk};

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Accounts the load runs over (`--accounts N`): each is a live actor in the node.
const DEFAULT_ACCOUNTS: usize = 1000;

fn bare_server(port: u16, accounts: usize) {
    use axum::extract::{Path, State};
    let accounts: Arc<HashMap<String, serde_json::Value>> = Arc::new(
        (0..accounts)
            .map(|i| {
                let id = format!("{i:08}-0000-7000-8000-000000000000");
                let body =
                    serde_json::json!({"id": id, "owner": "bench", "balance": 100, "version": 1});
                (id, body)
            })
            .collect(),
    );
    let app = axum::Router::new()
        .route(
            "/bare/{id}",
            axum::routing::get(
                |State(accounts): State<Arc<HashMap<String, serde_json::Value>>>,
                 Path(id): Path<String>| async move {
                    match accounts.get(&id) {
                        Some(body) => axum::Json(body.clone()).into_response(),
                        None => axum::http::StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .with_state(accounts);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(listener, app).await.unwrap();
        });
}

use axum::response::IntoResponse;

/// Until `probing` turns false: credit an account of the probe's own, then read the products
/// list with `min_position` = the credit's position, which waits until the products read model
/// has applied the log past the credit. The time from the credit's answer to the read's is the
/// read models' lag.
fn read_model_lag(
    base: &str,
    token: &str,
    probing: &std::sync::atomic::AtomicBool,
) -> Vec<Duration> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = reqwest::Client::new();
        let account: serde_json::Value = client
            .post(format!("{base}/api/v1/accounts"))
            .bearer_auth(token)
            .json(&serde_json::json!({"owner": "probe", "initial_balance": 0}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let credit = format!(
            "{base}/api/v1/accounts/{}/credit",
            account["id"].as_str().unwrap()
        );
        let mut lags = Vec::new();
        while probing.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(response) = client
                .post(&credit)
                .bearer_auth(token)
                .json(&serde_json::json!({"amount": 1}))
                .send()
                .await
            else {
                continue;
            };
            let Some(position) = response
                .headers()
                .get("x-playhouse-position")
                .and_then(|p| p.to_str().ok())
                .map(str::to_owned)
            else {
                continue;
            };
            let acknowledged = Instant::now();
            let read = client
                .get(format!(
                    "{base}/api/v1/products?limit=1&min_position={position}"
                ))
                .bearer_auth(token)
                .send()
                .await;
            if read.is_ok_and(|r| r.status().is_success()) {
                lags.push(acknowledged.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lags
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut seconds = 10;
    let mut connections = 64;
    let mut accounts = DEFAULT_ACCOUNTS;
    let mut bare_port = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bare-server" => bare_port = args.next().and_then(|s| s.parse().ok()),
            "--accounts" => {
                accounts = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--accounts N")
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds N")
            }
            "--connections" => {
                connections = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--connections N")
            }
            _ => {}
        }
    }
    if let Some(port) = bare_port {
        return bare_server(port, accounts);
    }
    let dir = tempfile::tempdir().unwrap();
    let node = BenchNode::start(dir.path());
    let base = node.base.clone();
    let bare_port = free_port();
    let _bare = Process(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--bare-server",
                &bare_port.to_string(),
                "--accounts",
                &accounts.to_string(),
            ])
            .spawn()
            .unwrap(),
    );
    wait_for(&format!(
        "http://127.0.0.1:{bare_port}/bare/00000000-0000-7000-8000-000000000000"
    ));
    let token = node.token("writer");

    let idle_rss = memory_mib(node.pid(), "VmRSS:");
    // Open the accounts the load runs against.
    let ids = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(open_accounts(&base, &token, accounts, 100));
    let opened_rss = memory_mib(node.pid(), "VmRSS:");
    let auth = format!("Bearer {token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let account_paths: Vec<String> = ids
        .iter()
        .map(|id| format!("/api/v1/accounts/{id}"))
        .collect();
    let credit_paths: Vec<String> = ids
        .iter()
        .map(|id| format!("/api/v1/accounts/{id}/credit"))
        .collect();
    let bare_paths: Vec<String> = (0..accounts)
        .map(|i| format!("/bare/{i:08}-0000-7000-8000-000000000000"))
        .collect();
    let get_script = script(dir.path(), "get", "GET", &account_paths, &headers, None);
    let bare_script = script(dir.path(), "bare", "GET", &bare_paths, &[], None);
    let credit_script = script(
        dir.path(),
        "credit",
        "POST",
        &credit_paths,
        &headers,
        Some(r#"{"amount":1}"#),
    );

    println!(
        "edge benchmark: wrk -t2 -c{connections} -d{seconds}s, {accounts} accounts, node and bare server are release builds in their own processes"
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>8}",
        "scenario", "req/s", "p50 ms", "p99 ms", "non-2xx"
    );
    let bare = wrk(
        &format!("http://127.0.0.1:{bare_port}"),
        &bare_script,
        seconds,
        connections,
    );
    let get = wrk(&base, &get_script, seconds, connections);
    // While wrk sends credits, a probe measures how far behind the read models are: a credit,
    // then a products-list read that waits for that credit's position.
    let probing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe = {
        let (base, token, probing) = (base.clone(), token.clone(), probing.clone());
        std::thread::spawn(move || read_model_lag(&base, &token, &probing))
    };
    let credit = wrk(&base, &credit_script, seconds, connections);
    probing.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut lags = probe.join().unwrap();
    for (name, figures) in [
        ("GET bare axum handler", &bare),
        ("GET /api/v1/accounts/{id}", &get),
        ("POST /api/v1/accounts/{id}/credit", &credit),
    ] {
        println!(
            "{name:<34} {:>10.0} {:>9.3} {:>9.3} {:>8}",
            figures.requests_per_second, figures.p50_ms, figures.p99_ms, figures.non_2xx
        );
    }
    println!(
        "GET account / bare axum: {:.0}%",
        100.0 * get.requests_per_second / bare.requests_per_second
    );
    lags.sort_unstable();
    if lags.is_empty() {
        println!("read-model lag under the credit load: no probe completed");
    } else {
        let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!(
            "read-model lag under the credit load (credit acknowledged -> visible to a min_position read, {} probes): p50 {:.2} ms, p99 {:.2} ms",
            lags.len(),
            at(0.5),
            at(0.99)
        );
    }
    println!(
        "node RSS: {idle_rss:.1} MiB idle, {opened_rss:.1} MiB with {accounts} live accounts, peak (VmHWM) {:.1} MiB",
        memory_mib(node.pid(), "VmHWM:")
    );
}
