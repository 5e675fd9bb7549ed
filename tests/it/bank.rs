//! The bank test, Jepsen style: accounts spread over three real nodes, concurrent clients
//! sending transfers, credits and balance reads through all three edges while a nemesis kills
//! (-9) and restarts nodes, cuts one off with iptables and pauses one with SIGSTOP. Every
//! operation is recorded as invoked, then ok, failed or unknown; after the nemesis stops and the
//! cluster settles, a checker reads every account's history and every transfer and asserts that
//! money was conserved, never negative, and every transfer moved its amount once or not at all.
//!
//! `BANK_SECONDS=N` runs the nemesis for at least N seconds (default: one round of its 25
//! faults); `BANK_SEED=N` repeats a schedule (the seed is printed). Not `PLAYHOUSE_*`: nodes
//! refuse overrides that name no config key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::netns::{self, CutOff};
use crate::support::{client, token};
use playhouse_actors::accounts::transfers::transfer_id_for;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SUBJECT: &str = "bank";
const ACCOUNTS: usize = 9;
const INITIAL_BALANCE: i64 = 1_000;
const CLIENTS: usize = 6;
/// One round of faults: the minimum of each.
const KILLS: usize = 20;
const CUTS: usize = 3;
const PAUSES: usize = 2;

/// splitmix64: a small, seeded, repeatable source of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

#[derive(Debug, Clone)]
enum Op {
    Transfer {
        key: String,
        from: usize,
        to: usize,
        amount: i64,
    },
    Credit {
        key: String,
        account: usize,
        amount: i64,
    },
    Read {
        account: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(Value),
    /// A definite refusal (4xx): not applied.
    Failed(String),
    /// No answer, or one that does not say (5xx): applied once or not at all.
    Unknown(String),
}

#[derive(Debug, Clone)]
struct Entry {
    op: Op,
    #[allow(dead_code)] // read through Debug, in failure reports: which edge it went through
    via: usize,
    outcome: Outcome,
}

type History = Arc<Mutex<Vec<Entry>>>;
/// Each node's edge address, as of its last start.
type Edges = Arc<std::sync::RwLock<Vec<String>>>;

fn edge(edges: &Edges, n: usize) -> String {
    edges.read().unwrap()[n].clone()
}

#[test]
fn money_is_conserved_through_kills_pauses_and_partitions() {
    if !netns::inside() {
        return netns::rerun_inside("bank::money_is_conserved_through_kills_pauses_and_partitions");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bank());
}

async fn bank() {
    let seed = std::env::var("BANK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| support::now() ^ u64::from(std::process::id()));
    let seconds: u64 = std::env::var("BANK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    println!("bank test: BANK_SEED={seed} BANK_SECONDS={seconds}");
    let started = Instant::now();
    let mut options = ClusterOptions::default();
    // The clients and the checker are one subject: the per-subject rate limit is not tested here.
    options.env.extend([
        (
            "PLAYHOUSE_RATE_LIMIT__REQUESTS_PER_SECOND".into(),
            "1000000".into(),
        ),
        ("PLAYHOUSE_RATE_LIMIT__BURST".into(), "1000000".into()),
    ]);
    let mut cluster = TestCluster::start(&options).await;
    cluster.wait_settled(Duration::from_secs(30)).await;
    let accounts = open_accounts(&cluster).await;
    // Shared with the nemesis: a restarted node's edge is on a new port.
    let edges: Edges = Arc::new(std::sync::RwLock::new(
        cluster.nodes.iter().map(|n| n.url("")).collect(),
    ));

    let history: History = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (edges, accounts, history, stop) = (
                edges.clone(),
                accounts.clone(),
                history.clone(),
                stop.clone(),
            );
            tokio::spawn(run_client(
                seed ^ ((c as u64 + 1) * 0x1000),
                edges,
                accounts,
                history,
                stop,
            ))
        })
        .collect();

    let faults = nemesis(&mut cluster, &edges, seed, Duration::from_secs(seconds)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    cluster.wait_settled(Duration::from_secs(30)).await;
    let history = history.lock().unwrap().clone();
    let summary = format!(
        "BANK_SEED={seed}, {} s, faults {faults}",
        started.elapsed().as_secs()
    );
    let report = check(&cluster, &accounts, &history, &summary).await;
    println!("bank test: {summary}; {report}");
}

/// Opens the accounts through node 1's edge until each node owns a third of them.
async fn open_accounts(cluster: &TestCluster) -> Vec<String> {
    let writer = token(SUBJECT, &["writer"]);
    let mut per_node: Vec<Vec<String>> = vec![Vec::new(); 3];
    for _ in 0..300 {
        let response = client()
            .post(cluster.node(0).url("/api/v1/accounts"))
            .bearer_auth(&writer)
            .json(&json!({"owner": SUBJECT, "initial_balance": INITIAL_BALANCE}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let owner = cluster.owner_of("accounts", &format!("account-{id}"));
        if per_node[owner].len() < ACCOUNTS / 3 {
            per_node[owner].push(id);
        } else {
            // Over its share: leave it empty of money so it does not count.
            let _ = client()
                .post(cluster.node(0).url(&format!("/api/v1/accounts/{id}/debit")))
                .bearer_auth(&writer)
                .json(&json!({"amount": INITIAL_BALANCE}))
                .send()
                .await;
        }
        if per_node.iter().all(|ids| ids.len() == ACCOUNTS / 3) {
            return per_node.concat();
        }
    }
    panic!("300 accounts did not spread over the nodes");
}

async fn run_client(
    seed: u64,
    edges: Edges,
    accounts: Vec<String>,
    history: History,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut rng = Rng(seed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let (writer, reader) = (token(SUBJECT, &["writer"]), token(SUBJECT, &["reader"]));
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        n += 1;
        let via = rng.below(3);
        let key = format!("c{seed:x}-{n}");
        let op = match rng.below(10) {
            0..=4 => {
                let from = rng.below(accounts.len());
                let to = (from + 1 + rng.below(accounts.len() - 1)) % accounts.len();
                Op::Transfer {
                    key,
                    from,
                    to,
                    amount: 1 + rng.below(60) as i64,
                }
            }
            5..=6 => Op::Credit {
                key,
                account: rng.below(accounts.len()),
                amount: 1 + rng.below(20) as i64,
            },
            _ => Op::Read {
                account: rng.below(accounts.len()),
            },
        };
        let outcome = send(&http, &edge(&edges, via), &accounts, &op, &writer, &reader).await;
        // A client that lost an answer, or just is not sure, sends the same credit again with
        // its key: it must not be applied twice.
        if matches!(op, Op::Credit { .. }) && rng.below(3) == 0 {
            history.lock().unwrap().push(Entry {
                op: op.clone(),
                via,
                outcome,
            });
            let again = rng.below(3);
            let outcome = send(
                &http,
                &edge(&edges, again),
                &accounts,
                &op,
                &writer,
                &reader,
            )
            .await;
            history.lock().unwrap().push(Entry {
                op,
                via: again,
                outcome,
            });
            continue;
        }
        let unavailable = matches!(outcome, Outcome::Unknown(_));
        history.lock().unwrap().push(Entry { op, via, outcome });
        if unavailable {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends `op` through `edge`, and classifies the answer.
async fn send(
    http: &reqwest::Client,
    edge: &str,
    accounts: &[String],
    op: &Op,
    writer: &str,
    reader: &str,
) -> Outcome {
    let request = match op {
        Op::Transfer {
            key,
            from,
            to,
            amount,
        } => http
            .post(format!("{edge}/api/v1/transfers"))
            .bearer_auth(writer)
            .header("Idempotency-Key", key)
            .json(&json!({"from": accounts[*from], "to": accounts[*to], "amount": amount})),
        Op::Credit {
            key,
            account,
            amount,
        } => http
            .post(format!(
                "{edge}/api/v1/accounts/{}/credit",
                accounts[*account]
            ))
            .bearer_auth(writer)
            .header("Idempotency-Key", key)
            .json(&json!({ "amount": amount })),
        Op::Read { account } => http
            .get(format!("{edge}/api/v1/accounts/{}", accounts[*account]))
            .bearer_auth(reader),
    };
    match request.send().await {
        Err(error) => Outcome::Unknown(error.to_string()),
        Ok(response) => {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                Outcome::Ok(body)
            } else if status.is_client_error() {
                Outcome::Failed(format!("{status}: {body}"))
            } else {
                Outcome::Unknown(format!("{status}: {body}"))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Cut,
    Pause,
}

/// Injects one round of faults in a seeded order (and more rounds until `at_least` has
/// passed), healing each and waiting for the cluster before the next. Returns a summary.
async fn nemesis(
    cluster: &mut TestCluster,
    edges: &Edges,
    seed: u64,
    at_least: Duration,
) -> String {
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut counts = BTreeMap::new();
    let mut round = 0;
    while round == 0 || started.elapsed() < at_least {
        round += 1;
        let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::Kill, KILLS)
            .chain(std::iter::repeat_n(Fault::Cut, CUTS))
            .chain(std::iter::repeat_n(Fault::Pause, PAUSES))
            .collect();
        for i in (1..faults.len()).rev() {
            faults.swap(i, rng.below(i + 1));
        }
        for fault in faults {
            let node = rng.below(3);
            let hold = rng.millis(300, 2_500);
            match fault {
                Fault::Kill => {
                    cluster.nodes[node].kill9();
                    tokio::time::sleep(hold).await;
                    cluster.nodes[node].restart();
                    edges.write().unwrap()[node] = cluster.nodes[node].url("");
                }
                Fault::Cut => {
                    // Node 3: the one that dials no one, so that dropping its port cuts every
                    // link it has (the others' links from their ephemeral ports would not be).
                    let cut = CutOff::port(cluster.ports[2]);
                    // It must really be cut off: both peers see it down before it heals.
                    for peer in [0, 1] {
                        cluster
                            .wait_status(peer, 2, "down", Duration::from_secs(10))
                            .await;
                    }
                    tokio::time::sleep(hold).await;
                    cut.heal();
                }
                Fault::Pause => {
                    cluster.node(node).pause();
                    tokio::time::sleep(hold + Duration::from_secs(1)).await;
                    cluster.node(node).resume();
                }
            }
            *counts
                .entry(format!("{fault:?}").to_lowercase())
                .or_insert(0) += 1;
            cluster.wait_settled(Duration::from_secs(30)).await;
            tokio::time::sleep(rng.millis(200, 800)).await;
        }
    }
    format!("{counts:?} in {} s", started.elapsed().as_secs())
}

/// GET `url` as `token`: the status and JSON body, retrying 5xx answers for up to 10 s (a
/// node just back may still be confirming its store).
async fn settled_get(url: &str, token: &str) -> (StatusCode, Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client().get(url).bearer_auth(token).send().await;
        if let Ok(response) = answer {
            let status = response.status();
            if !status.is_server_error() || Instant::now() > deadline {
                return (status, response.json().await.unwrap_or(Value::Null));
            }
        }
        assert!(Instant::now() < deadline, "GET {url}: no answer in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An account's events, every page.
async fn history_of(cluster: &TestCluster, id: &str) -> Vec<Value> {
    let admin = token("auditor", &["admin"]);
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let url = cluster.node(0).url(&format!(
            "/api/v1/accounts/{id}/events?from_version={from}&limit=1000"
        ));
        let (status, page) = settled_get(&url, &admin).await;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_from_version"].as_u64() {
            Some(next) => from = next,
            None => return events,
        }
    }
}

/// Waits until no transfer saga is running or compensating on any node; panics on a stuck one.
async fn sagas_settled(cluster: &TestCluster) {
    let admin = token("auditor", &["admin"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    'again: loop {
        for n in 0..3 {
            for status in ["running", "compensating", "stuck"] {
                // Every page: a page may be empty with a cursor (it scans a bounded stretch).
                let mut cursor = String::new();
                loop {
                    let url = cluster.node(n).url(&format!(
                        "/admin/sagas?kind=transfer&status={status}&limit=5{cursor}"
                    ));
                    let (code, page) = settled_get(&url, &admin).await;
                    assert_eq!(code, StatusCode::OK, "{url}: {page}");
                    if !page["items"].as_array().unwrap().is_empty() {
                        assert!(
                            Instant::now() < deadline,
                            "sagas still {status} on node-{} after 60 s: {page}",
                            n + 1
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'again;
                    }
                    match page["next_cursor"].as_str() {
                        Some(next) => cursor = format!("&cursor={next}"),
                        None => break,
                    }
                }
            }
        }
        return;
    }
}

/// How many events of `events` were caused by command `command_id`, and their `data`.
fn caused_by<'a>(events: &'a [Value], command_id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["causation_id"] == command_id)
        .collect()
}

async fn check(
    cluster: &TestCluster,
    accounts: &[String],
    history: &[Entry],
    summary: &str,
) -> String {
    sagas_settled(cluster).await;
    let mut problems = Vec::new();
    let mut events = Vec::new();
    let mut balances = Vec::new();
    let admin = token("auditor", &["admin"]);
    for id in accounts {
        events.push(history_of(cluster, id).await);
        let (_, account) = settled_get(
            &cluster.node(0).url(&format!("/api/v1/accounts/{id}")),
            &admin,
        )
        .await;
        balances.push(account["balance"].as_i64().unwrap());
    }
    let mut deposited = INITIAL_BALANCE * accounts.len() as i64;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    // Credits by key: every send of one key is one credit, to be applied once at most.
    let mut credits: BTreeMap<String, Vec<&Entry>> = BTreeMap::new();
    for entry in history {
        let (kind, verdict) = match (&entry.op, &entry.outcome) {
            (Op::Read { .. }, Outcome::Ok(_)) => ("read", "ok"),
            (Op::Read { .. }, Outcome::Failed(_)) => ("read", "failed"),
            (Op::Read { .. }, Outcome::Unknown(_)) => ("read", "unknown"),
            (Op::Credit { .. }, Outcome::Ok(_)) => ("credit", "ok"),
            (Op::Credit { .. }, Outcome::Failed(_)) => ("credit", "failed"),
            (Op::Credit { .. }, Outcome::Unknown(_)) => ("credit", "unknown"),
            (Op::Transfer { .. }, Outcome::Ok(_)) => ("transfer", "ok"),
            (Op::Transfer { .. }, Outcome::Failed(_)) => ("transfer", "failed"),
            (Op::Transfer { .. }, Outcome::Unknown(_)) => ("transfer", "unknown"),
        };
        *counts.entry(format!("{kind} {verdict}")).or_insert(0) += 1;
        match &entry.op {
            Op::Read { account } => {
                if let Outcome::Ok(body) = &entry.outcome
                    && body["balance"].as_i64().is_none_or(|b| b < 0)
                {
                    problems.push(format!("read of account {account} saw {body}"));
                }
            }
            Op::Credit { key, .. } => credits.entry(key.clone()).or_default().push(entry),
            Op::Transfer {
                key,
                from,
                to,
                amount,
            } => {
                let id = transfer_id_for(SUBJECT, key);
                if let Outcome::Ok(body) = &entry.outcome
                    && body["id"] != id.as_str()
                {
                    problems.push(format!("{entry:?}: id {} is not {id}", body["id"]));
                }
                // The events a step caused; each must move exactly the transfer's amount the
                // step's way (a debit, the credit, the credit back).
                let step = |account: usize, step: usize, phase: &str, kind: &str| {
                    let caused = caused_by(
                        &events[account],
                        &format!("saga:transfer:{id}:{step}:{phase}"),
                    );
                    let exact = caused.iter().all(|event| {
                        event["type"].as_str().is_some_and(|t| t.contains(kind))
                            && event["data"]["amount"].as_i64() == Some(*amount)
                    });
                    if exact { caused.len() } else { usize::MAX }
                };
                let (debit, credit, undo) = (
                    step(*from, 0, "act", "Debited"),
                    step(*to, 1, "act", "Credited"),
                    step(*from, 0, "undo", "Credited"),
                );
                let (code, view) = settled_get(
                    &cluster.node(0).url(&format!("/api/v1/transfers/{id}")),
                    &admin,
                )
                .await;
                let status = match code {
                    StatusCode::OK => view["status"].as_str().unwrap_or("?"),
                    StatusCode::NOT_FOUND => "absent",
                    _ => {
                        problems.push(format!("transfer {id}: GET answered {code}: {view}"));
                        continue;
                    }
                };
                let consistent = match status {
                    "completed" => debit == 1 && credit == 1 && undo == 0,
                    "failed" => credit == 0 && undo == debit && debit <= 1,
                    "absent" => debit == 0 && credit == 0,
                    _ => false,
                };
                let known_start = matches!(entry.outcome, Outcome::Ok(_));
                let refused = matches!(entry.outcome, Outcome::Failed(_));
                if !consistent
                    || (known_start && status == "absent")
                    || (refused && status != "absent")
                {
                    problems.push(format!(
                        "{entry:?}: transfer {id} is {status}, debits {debit}, credits {credit}, undone {undo} (amount {amount})"
                    ));
                }
            }
        }
    }
    for (key, sends) in &credits {
        let Op::Credit {
            account, amount, ..
        } = &sends[0].op
        else {
            unreachable!("only credits are grouped");
        };
        let command = format!("idem:{}:{SUBJECT}:{key}", SUBJECT.len());
        let applied = caused_by(&events[*account], &command).len();
        let any_ok = sends.iter().any(|e| matches!(e.outcome, Outcome::Ok(_)));
        let all_failed = sends
            .iter()
            .all(|e| matches!(e.outcome, Outcome::Failed(_)));
        let allowed = if any_ok {
            applied == 1
        } else if all_failed {
            applied == 0
        } else {
            applied <= 1
        };
        if !allowed {
            problems.push(format!(
                "credit {key} ({} sends: {:?}) applied {applied} times",
                sends.len(),
                sends.iter().map(|e| &e.outcome).collect::<Vec<_>>()
            ));
        }
        deposited += *amount * applied as i64;
    }
    for (n, balance) in balances.iter().enumerate() {
        if *balance < 0 {
            problems.push(format!("account {n} ends at {balance}"));
        }
    }
    let total: i64 = balances.iter().sum();
    if total != deposited {
        problems.push(format!(
            "the balances sum to {total}, but {deposited} was deposited"
        ));
    }
    // A run in which almost nothing got through would check almost nothing.
    let ok = |kind: &str| counts.get(&format!("{kind} ok")).copied().unwrap_or(0);
    for kind in ["transfer", "credit", "read"] {
        if ok(kind) < 20 {
            problems.push(format!(
                "only {} {kind}s succeeded: too few to check anything",
                ok(kind)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the bank lost its invariants ({} problems; {summary}; {} operations {counts:?}):\n{}",
        problems.len(),
        history.len(),
        problems
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    format!(
        "{} operations {counts:?}; balances sum to {total} = deposited",
        history.len()
    )
}
