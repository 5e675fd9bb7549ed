//! What reading stored events costs: activating aggregates with long histories, and rebuilding
//! a projection over the whole log. Both decode every event (through the upcaster chain since
//! events carry versions), so this is the figure that versioned decoding must not worsen.
//!
//! `cargo bench --bench decoding [-- --accounts N --events N]`
//!
//! Writes N accounts of M events each (opened, then credits; 1,000 x 1,000 by default), then:
//! - activation: every account read once through its host, no snapshots (so each loads and
//!   folds its whole stream), one after another;
//! - rebuild: a projection that decodes every account event and keeps each account's balance
//!   in a read-model table (a read and a write per event), from position zero.

use std::sync::Arc;
use std::time::{Duration, Instant};

use playhouse_actors::accounts::{Account, AccountEvent};
use playhouse_runtime::aggregate::{Aggregates, EntitySettings};
use playhouse_runtime::bus::{Projection, ProjectionError, Tables, decode, key, rebuild_offline};
use playhouse_runtime::codec;
use playhouse_runtime::store::{
    AppendRequest, EventMetadata, EventStore, NewEvent, RecordedEvent, StoreOptions,
};
use playhouse_runtime::supervision::Intensity;

/// Each account's balance, from its decoded events.
struct Balances;

impl Projection for Balances {
    fn name(&self) -> &'static str {
        "bench_balances"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["bench_balances"]
    }

    fn apply(&self, event: &RecordedEvent, tables: &mut Tables<'_>) -> Result<(), ProjectionError> {
        let Some(delivered) = decode::<Account>(event)? else {
            return Ok(());
        };
        let change = match delivered.event {
            AccountEvent::Opened {
                initial_balance, ..
            } => initial_balance,
            AccountEvent::Credited { amount } => amount,
            AccountEvent::Debited { amount } => -amount,
        };
        let key = key(&[&delivered.id]);
        let balance = tables.get::<i64>("bench_balances", &key)?.unwrap_or(0);
        tables.put("bench_balances", key, &(balance + change))
    }
}

fn encoded(event: &AccountEvent, event_type: &str) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        schema_version: 1,
        payload: codec::encode(event).unwrap(),
    }
}

/// One append of `events` events per account, 16 accounts at a time.
async fn write(store: &EventStore, accounts: usize, events: usize) {
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for account in (writer..accounts).step_by(16) {
                let mut batch = vec![encoded(
                    &AccountEvent::Opened {
                        owner: format!("owner-{account}"),
                        initial_balance: 100,
                        subject: "bench".into(),
                    },
                    "AccountOpened",
                )];
                let credit = encoded(&AccountEvent::Credited { amount: 1 }, "AccountCredited");
                batch.extend(std::iter::repeat_n(credit, events - 1));
                store
                    .append(AppendRequest {
                        stream: format!("account-{account}"),
                        expected_version: 0,
                        events: batch,
                        rejection: None,
                        command_id: None,
                        fingerprint: 0,
                        table_changes: Vec::new(),
                        metadata: EventMetadata::default(),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn main() {
    let (mut accounts, mut events) = (1000, 1000);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|s| s.parse().ok());
        match arg.as_str() {
            "--accounts" => accounts = value().expect("--accounts N"),
            "--events" => events = value().expect("--events N"),
            _ => {}
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let work = tempfile::tempdir().unwrap();
        let store = EventStore::open(work.path().join("events.redb"), StoreOptions::default())
            .await
            .unwrap();
        write(&store, accounts, events).await;
        let total = accounts * events;
        println!("decoding benchmark: {accounts} accounts x {events} events = {total} events");

        let host = Aggregates::<Account>::new("bench-accounts", store.clone(), Duration::from_secs(60));
        let settings = EntitySettings {
            snapshot_every: 0,
            idle_timeout: None,
            call_timeout: Duration::from_secs(60),
        };
        host.spawn(settings, Intensity::default(), None).await.unwrap();
        let started = Instant::now();
        for account in 0..accounts {
            let state = host.get(&account.to_string()).await.unwrap();
            assert_eq!(state.version, events as u64);
        }
        let took = started.elapsed().as_secs_f64();
        println!(
            "activation, whole history, no snapshot: {took:.2} s, {:.0} events/s, {:.2} ms per account",
            total as f64 / took,
            took * 1e3 / accounts as f64
        );

        let started = Instant::now();
        let applied = rebuild_offline(&store, Arc::new(Balances)).await.unwrap();
        let took = started.elapsed().as_secs_f64();
        println!(
            "projection rebuild (decode, read, write): {applied} events in {took:.2} s, {:.0} events/s",
            applied as f64 / took
        );
        store.close().await.unwrap();
    });
}
