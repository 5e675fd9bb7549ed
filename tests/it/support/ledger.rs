//! The bank workload and its checker, Jepsen style, over any [`Api`]: clients send transfers,
//! credits (some sent twice with their key, as a client unsure of an answer would) and balance
//! reads through every node; every operation is recorded as ok, failed or unknown; once the
//! cluster has settled, the checker reads every account's history and every transfer and says
//! what broke: money not conserved, a negative balance, a credit key applied twice, a transfer
//! moving its amount other than once or not at all, a saga that never ended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use playhouse_actors::accounts::transfers::{TransferSaga, transfer_id_for};
use playhouse_runtime::prelude::SagaKind;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::api::{Answer, Api, Call, Outcome, settled_get};
use super::token;

pub const SUBJECT: &str = "bank";
pub const INITIAL_BALANCE: i64 = 1_000;

/// splitmix64: a small, seeded, repeatable source of choices.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

#[derive(Debug, Clone, Hash)]
pub enum Op {
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
        /// The highest version an acknowledged credit had left the account at when the read
        /// was sent: a read through any edge must see at least it.
        at_least: Option<u64>,
    },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub op: Op,
    /// Which node's edge it went through.
    pub via: usize,
    pub outcome: Outcome,
    /// When its answer came (simulated time in the simulation).
    pub at: tokio::time::Instant,
}

pub type History = Arc<Mutex<Vec<Entry>>>;

/// The highest version of each account (by index) an acknowledged credit reported, shared by
/// the clients: a read sent after it must see at least that version, whichever edge it goes
/// through (a read that did not would have been answered from stale state).
pub type Acked = Arc<Mutex<BTreeMap<usize, u64>>>;

/// Opens accounts through node 0 until each node owns `per_node` of them (`owner_of` names the
/// owner of an account's stream); their ids, node by node.
pub async fn open_accounts(
    api: &dyn Api,
    per_node: usize,
    owner_of: impl Fn(&str) -> usize,
    ids: &mut dyn FnMut() -> String,
) -> Vec<String> {
    let writer = token(SUBJECT, &["writer"]);
    let mut owned: Vec<Vec<String>> = vec![Vec::new(); api.nodes()];
    for _ in 0..300 {
        let opened = api
            .send(
                0,
                Call::post(
                    "/api/v1/accounts",
                    &writer,
                    json!({"owner": SUBJECT, "initial_balance": INITIAL_BALANCE}),
                )
                .with_key(ids()),
            )
            .await;
        let Answer::Status(StatusCode::CREATED, body) = opened else {
            api.sleep(Duration::from_millis(100)).await;
            continue;
        };
        let id = body["id"].as_str().unwrap().to_owned();
        let owner = owner_of(&format!("account-{id}"));
        if owned[owner].len() < per_node {
            owned[owner].push(id);
        } else {
            // Over its share: leave it empty of money so that it does not count.
            let debit = Call::post(
                format!("/api/v1/accounts/{id}/debit"),
                &writer,
                json!({"amount": INITIAL_BALANCE}),
            );
            let _ = api.send(0, debit.with_key(ids())).await;
        }
        if owned.iter().all(|ids| ids.len() == per_node) {
            return owned.concat();
        }
    }
    panic!("300 accounts did not spread over the nodes");
}

/// Bank clients on tasks of their own, each running [`run_client`] until [`Clients::stop`].
pub struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    /// Starts `count` clients through `api`, thinking `think` ms (a range) between
    /// operations; client `c` of `round` is seeded `seed ^ ((round * 16 + c + 1) * 0x1000)`,
    /// so that each round of a test sends other operations.
    pub fn start<A: Api + Send + Sync + 'static>(
        count: usize,
        think: (u64, u64),
        (seed, round): (u64, u64),
        api: &Arc<A>,
        accounts: &[String],
        history: &History,
        acked: &Acked,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count as u64)
            .map(|c| {
                let (api, accounts, history, acked, stop) = (
                    api.clone(),
                    accounts.to_vec(),
                    history.clone(),
                    acked.clone(),
                    stop.clone(),
                );
                let seed = seed ^ ((round * 16 + c + 1) * 0x1000);
                tokio::spawn(async move {
                    run_client(
                        api.as_ref(),
                        seed,
                        &accounts,
                        &history,
                        &acked,
                        &stop,
                        think,
                    )
                    .await;
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops every client once its operation in flight is answered and recorded.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// One client: until `stop`, picks an operation, sends it through a node and records it, then
/// waits between `think.0` and `think.1` ms.
pub async fn run_client(
    api: &dyn Api,
    seed: u64,
    accounts: &[String],
    history: &History,
    acked: &Acked,
    stop: &AtomicBool,
    think: (u64, u64),
) {
    let mut rng = Rng(seed);
    let (writer, reader) = (token(SUBJECT, &["writer"]), token(SUBJECT, &["reader"]));
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let via = rng.below(api.nodes());
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
            _ => {
                let account = rng.below(accounts.len());
                Op::Read {
                    account,
                    at_least: acked.lock().unwrap().get(&account).copied(),
                }
            }
        };
        let request_id = format!("r{seed:x}-{n}");
        let outcome = send(api, via, accounts, &op, &writer, &reader, &request_id).await;
        if let Op::Credit { account, .. } = op {
            // A client that lost an answer, or just is not sure, sends the same credit again
            // with its key: it must not be applied twice.
            let again = (rng.below(3) == 0).then(|| rng.below(api.nodes()));
            let written = written_version(&outcome);
            if let Some(version) = written {
                let mut acked = acked.lock().unwrap();
                let highest = acked.entry(account).or_insert(version);
                *highest = (*highest).max(version);
            }
            history.lock().unwrap().push(Entry {
                op: op.clone(),
                via,
                outcome,
                at: tokio::time::Instant::now(),
            });
            if let Some(again) = again {
                let request_id = format!("{request_id}-again");
                let outcome = send(api, again, accounts, &op, &writer, &reader, &request_id).await;
                history.lock().unwrap().push(Entry {
                    op,
                    via: again,
                    outcome,
                    at: tokio::time::Instant::now(),
                });
            }
            // Once a credit is acknowledged, a read through any edge sees it: each is asked,
            // from one the seed picks (an edge answering from a deposed leader's old state
            // would be caught here).
            if let Some(version) = written {
                let first = rng.below(api.nodes());
                for n in 0..api.nodes() {
                    let read = Op::Read {
                        account,
                        at_least: Some(version),
                    };
                    let via = (first + n) % api.nodes();
                    let request_id = format!("{request_id}-read-{via}");
                    let outcome =
                        send(api, via, accounts, &read, &writer, &reader, &request_id).await;
                    history.lock().unwrap().push(Entry {
                        op: read,
                        via,
                        outcome,
                        at: tokio::time::Instant::now(),
                    });
                }
            }
            continue;
        }
        let unavailable = matches!(outcome, Outcome::Unknown(_) | Outcome::NotApplied(_));
        history.lock().unwrap().push(Entry {
            op,
            via,
            outcome,
            at: tokio::time::Instant::now(),
        });
        api.sleep(if unavailable {
            Duration::from_millis(50)
        } else {
            rng.millis(think.0, think.1)
        })
        .await;
    }
}

/// The account's version an acknowledged credit left it at.
fn written_version(outcome: &Outcome) -> Option<u64> {
    match outcome {
        Outcome::Ok(body) => body["version"].as_u64(),
        _ => None,
    }
}

/// Sends `op` through node `via`, and classifies the answer.
async fn send(
    api: &dyn Api,
    via: usize,
    accounts: &[String],
    op: &Op,
    writer: &str,
    reader: &str,
    request_id: &str,
) -> Outcome {
    let call = match op {
        Op::Transfer {
            key,
            from,
            to,
            amount,
        } => Call::post(
            "/api/v1/transfers",
            writer,
            json!({"from": accounts[*from], "to": accounts[*to], "amount": amount}),
        )
        .with_key(key),
        Op::Credit {
            key,
            account,
            amount,
        } => Call::post(
            format!("/api/v1/accounts/{}/credit", accounts[*account]),
            writer,
            json!({ "amount": amount }),
        )
        .with_key(key),
        Op::Read { account, .. } => {
            Call::get(format!("/api/v1/accounts/{}", accounts[*account]), reader)
        }
    };
    api.send(via, call.with_request_id(request_id))
        .await
        .outcome()
}

/// An account's events, every page, read through node 0 (or any that answers).
async fn history_of(api: &dyn Api, id: &str, admin: &str) -> Result<Vec<Value>, String> {
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let path = format!("/api/v1/accounts/{id}/events?from_version={from}&limit=1000");
        let (status, page) = settled_get(api, 0, &path, admin, Duration::from_secs(10)).await;
        if status != StatusCode::OK {
            return Err(format!("{path}: {status} {page}"));
        }
        events.extend(page["events"].as_array().into_iter().flatten().cloned());
        match page["next_from_version"].as_u64() {
            Some(next) => from = next,
            None => return Ok(events),
        }
    }
}

/// Waits, at most `patience`, until no saga of `kinds` is running, compensating or stuck on
/// any node; says which are left when some are.
pub async fn sagas_settled(
    api: &dyn Api,
    kinds: &[&str],
    patience: Duration,
) -> Result<(), String> {
    let admin = token("auditor", &["admin"]);
    let deadline = tokio::time::Instant::now() + patience;
    'again: loop {
        for node in 0..api.nodes() {
            for kind in kinds {
                for status in ["running", "compensating", "stuck"] {
                    // Every page: a page may be empty with a cursor (it scans a bounded stretch).
                    let mut cursor = String::new();
                    loop {
                        let path =
                            format!("/admin/sagas?kind={kind}&status={status}&limit=5{cursor}");
                        let (code, page) =
                            settled_get(api, node, &path, &admin, Duration::from_secs(10)).await;
                        if code != StatusCode::OK {
                            return Err(format!("node {node}: {path}: {code} {page}"));
                        }
                        if !page["items"].as_array().is_none_or(Vec::is_empty) {
                            if tokio::time::Instant::now() > deadline {
                                return Err(format!(
                                    "sagas still {status} on node {node} after {patience:?}: {page}"
                                ));
                            }
                            api.sleep(Duration::from_millis(200)).await;
                            continue 'again;
                        }
                        match page["next_cursor"].as_str() {
                            Some(next) => cursor = format!("&cursor={next}"),
                            None => break,
                        }
                    }
                }
            }
        }
        return Ok(());
    }
}

/// The balance an account's stored events leave.
fn stored_balance(events: &[Value]) -> i64 {
    events
        .iter()
        .map(|event| {
            let kind = event["type"].as_str().unwrap_or_default();
            let data = &event["data"];
            if kind.contains("Opened") {
                data["initial_balance"].as_i64().unwrap_or_default()
            } else if kind.contains("Credited") {
                data["amount"].as_i64().unwrap_or_default()
            } else if kind.contains("Debited") {
                -data["amount"].as_i64().unwrap_or_default()
            } else {
                0
            }
        })
        .sum()
}

/// The events of `events` caused by command `command_id`.
pub fn caused_by<'a>(events: &'a [Value], command_id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["causation_id"] == command_id)
        .collect()
}

/// What the checker found, and the operations' counts.
#[derive(Debug, Default)]
pub struct Checked {
    pub problems: Vec<String>,
    /// Operations by kind and verdict ("transfer ok", "credit unknown", ...).
    pub counts: BTreeMap<String, usize>,
    pub summary: String,
}

/// Checks `history` against what the cluster holds (read through `api`, node 0) once every
/// saga has ended. `least_ok`: fewer successful transfers, credits or reads than this is itself
/// a problem (a run in which almost nothing got through checks almost nothing).
pub async fn check(
    api: &dyn Api,
    accounts: &[String],
    history: &[Entry],
    least_ok: usize,
) -> Checked {
    let mut checked = Checked::default();
    let kind = <TransferSaga as SagaKind>::KIND;
    // A saga marked stuck tries again every 30 s (`SagaSettings::stuck_retry`), and a try
    // that meets a breaker still open from the last faults waits for the next: leave room for
    // several tries after the faults end.
    if let Err(stuck) = sagas_settled(api, &[kind], Duration::from_secs(120)).await {
        checked.problems.push(stuck);
    }
    let admin = token("auditor", &["admin"]);
    let mut events = Vec::new();
    let mut balances = Vec::new();
    for id in accounts {
        match history_of(api, id, &admin).await {
            Ok(history) => events.push(history),
            Err(unread) => {
                checked
                    .problems
                    .push(format!("an account's history cannot be read: {unread}"));
                events.push(Vec::new());
            }
        }
        let path = format!("/api/v1/accounts/{id}");
        let (_, account) = settled_get(api, 0, &path, &admin, Duration::from_secs(10)).await;
        let balance = account["balance"].as_i64();
        if balance.is_none() {
            checked
                .problems
                .push(format!("account {id}'s balance cannot be read: {account}"));
        }
        // The state a read answers is its stored events folded: a state ahead of or behind
        // the store is named here, with both.
        let stored = events.last().map(Vec::as_slice).unwrap_or_default();
        let folded = stored_balance(stored);
        let version = account["version"].as_u64();
        if balance.is_some()
            && !stored.is_empty()
            && (balance != Some(folded) || version != Some(stored.len() as u64))
        {
            checked.problems.push(format!(
                "account {id} reads {account}, but its {} stored events fold to a balance of {folded}: {}",
                stored.len(),
                serde_json::to_string(stored).unwrap_or_default()
            ));
        }
        balances.push(balance);
    }
    let problems = &mut checked.problems;
    let mut deposited = INITIAL_BALANCE * accounts.len() as i64;
    // Credits by key: every send of one key is one credit, to be applied once at most.
    let mut credits: BTreeMap<String, Vec<&Entry>> = BTreeMap::new();
    for entry in history {
        let kind = match entry.op {
            Op::Read { .. } => "read",
            Op::Credit { .. } => "credit",
            Op::Transfer { .. } => "transfer",
        };
        let verdict = entry.outcome.verdict();
        *checked
            .counts
            .entry(format!("{kind} {verdict}"))
            .or_insert(0) += 1;
        match &entry.op {
            Op::Read { account, at_least } => {
                let Outcome::Ok(body) = &entry.outcome else {
                    continue;
                };
                if body["balance"].as_i64().is_none_or(|b| b < 0) {
                    problems.push(format!("read of account {account} saw {body}"));
                }
                if let Some(written) = at_least
                    && body["version"].as_u64().is_none_or(|seen| seen < *written)
                {
                    problems.push(format!(
                        "a read of account {account} through node {}, sent after a credit was acknowledged at version {written}, saw {body}: the acknowledged write is missing",
                        entry.via
                    ));
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
                let path = format!("/api/v1/transfers/{id}");
                let (code, view) =
                    settled_get(api, 0, &path, &admin, Duration::from_secs(10)).await;
                let status = match code {
                    StatusCode::OK => view["status"].as_str().unwrap_or("?").to_owned(),
                    StatusCode::NOT_FOUND => "absent".to_owned(),
                    _ => {
                        problems.push(format!("transfer {id}: GET answered {code}: {view}"));
                        continue;
                    }
                };
                let consistent = match status.as_str() {
                    "completed" => debit == 1 && credit == 1 && undo == 0,
                    "failed" => credit == 0 && undo == debit && debit <= 1,
                    "absent" => debit == 0 && credit == 0,
                    _ => false,
                };
                let known_start = matches!(entry.outcome, Outcome::Ok(_));
                let refused = entry.outcome.not_applied();
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
        // Refused or unavailable: a credit whose every send says so must not be applied.
        let all_failed = sends.iter().all(|e| e.outcome.not_applied());
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
    let unread = balances.iter().any(Option::is_none);
    let balances: Vec<i64> = balances.into_iter().flatten().collect();
    for (n, balance) in balances.iter().enumerate() {
        if *balance < 0 {
            problems.push(format!("account {n} ends at {balance}"));
        }
    }
    let total: i64 = balances.iter().sum();
    if !unread && total != deposited {
        problems.push(format!(
            "the balances sum to {total}, but {deposited} was deposited"
        ));
    }
    let ok = |kind: &str| {
        checked
            .counts
            .get(&format!("{kind} ok"))
            .copied()
            .unwrap_or(0)
    };
    for kind in ["transfer", "credit", "read"] {
        if ok(kind) < least_ok {
            problems.push(format!(
                "only {} {kind}s succeeded: too few to check anything",
                ok(kind)
            ));
        }
    }
    checked.summary = format!(
        "{} bank operations {:?}; balances sum to {total}, {deposited} deposited",
        history.len(),
        checked.counts
    );
    checked
}
