//! Account rules (unit and property tests) and the account actors over a real store.

use std::time::Duration;

use playhouse_runtime::actor::{ActorCell, ActorRef, SpawnErr};
use playhouse_runtime::aggregate::Aggregates;
use playhouse_runtime::aggregate::{
    Aggregate, CommandEnvelope, CommandError, EntitySettings, replay,
};
use playhouse_runtime::codec;
use playhouse_runtime::store::{EventStore, StoreOptions};
use playhouse_runtime::supervision::{Supervisor, SupervisorMsg};
use proptest::prelude::*;

use super::aggregate::MAX_AMOUNT;

use super::{Account, AccountCommand, AccountError, AccountEvent, AccountState, spec};

fn open(owner: &str, initial_balance: i64) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
        initial_balance,
        subject: format!("{owner}-subject"),
    }
}

/// Runs commands through decide/apply, keeping the events of the accepted ones.
fn run(commands: &[AccountCommand]) -> (AccountState, Vec<AccountEvent>, Vec<AccountError>) {
    let mut state = AccountState::default();
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for command in commands {
        match Account::decide(&state, command) {
            Ok(new) => {
                for event in &new {
                    Account::apply(&mut state, event);
                }
                events.extend(new);
            }
            Err(error) => errors.push(error),
        }
    }
    (state, events, errors)
}

#[test]
fn open_credit_debit() {
    let (state, events, errors) = run(&[
        open("alice", 100),
        AccountCommand::Credit { amount: 50 },
        AccountCommand::Debit { amount: 120 },
    ]);
    assert!(errors.is_empty());
    assert_eq!(events.len(), 3);
    assert_eq!(
        state,
        AccountState::Open {
            owner: "alice".into(),
            balance: 30,
            subject: "alice-subject".into(),
        }
    );
}

#[test]
fn every_rule_has_its_error() {
    let opened = run(&[open("alice", 10)]).0;
    let cases = [
        (
            AccountState::Unopened,
            open("bob", -1),
            AccountError::NegativeInitialBalance {
                initial_balance: -1,
            },
        ),
        (
            AccountState::Unopened,
            open("  ", 0),
            AccountError::EmptyOwner,
        ),
        (
            AccountState::Unopened,
            AccountCommand::Credit { amount: 5 },
            AccountError::NotOpen,
        ),
        (
            AccountState::Unopened,
            AccountCommand::Debit { amount: 5 },
            AccountError::NotOpen,
        ),
        (
            opened.clone(),
            AccountCommand::Credit { amount: 0 },
            AccountError::NonPositiveAmount { amount: 0 },
        ),
        (
            opened.clone(),
            AccountCommand::Debit { amount: -3 },
            AccountError::NonPositiveAmount { amount: -3 },
        ),
        (
            opened.clone(),
            AccountCommand::Debit { amount: 11 },
            AccountError::InsufficientFunds {
                balance: 10,
                requested: 11,
            },
        ),
        (
            opened.clone(),
            AccountCommand::Credit { amount: i64::MAX },
            AccountError::AmountTooLarge {
                amount: i64::MAX,
                max: MAX_AMOUNT,
            },
        ),
        (
            AccountState::Unopened,
            open("x", MAX_AMOUNT + 1),
            AccountError::AmountTooLarge {
                amount: MAX_AMOUNT + 1,
                max: MAX_AMOUNT,
            },
        ),
        (
            AccountState::Open {
                owner: "rich".into(),
                balance: i64::MAX - 1,
                subject: "rich".into(),
            },
            AccountCommand::Credit { amount: 2 },
            AccountError::BalanceOverflow {
                balance: i64::MAX - 1,
                amount: 2,
            },
        ),
        (opened, open("alice", 0), AccountError::AlreadyOpen),
    ];
    for (state, command, expected) in cases {
        assert_eq!(
            Account::decide(&state, &command),
            Err(expected),
            "{command:?} on {state:?}"
        );
    }
    // Debiting the whole balance is allowed; the account may reach zero, not below.
    let state = run(&[open("alice", 10), AccountCommand::Debit { amount: 10 }]).0;
    assert_eq!(state.balance(), Some(0));
}

fn command() -> impl Strategy<Value = AccountCommand> {
    prop_oneof![
        1 => (-5i64..1000).prop_map(|b| open("owner", b)),
        4 => (-50i64..500).prop_map(|amount| AccountCommand::Credit { amount }),
        4 => (-50i64..500).prop_map(|amount| AccountCommand::Debit { amount }),
    ]
}

proptest! {
    /// Replaying from a snapshot taken at any point (through the codec, as the store keeps it)
    /// and then the tail equals replaying everything from the start.
    #[test]
    fn snapshot_plus_tail_equals_full_replay(
        commands in proptest::collection::vec(command(), 0..60),
        cut in any::<prop::sample::Index>(),
    ) {
        let (state, events, _) = run(&commands);
        let full = replay::<Account>(AccountState::default(), &events);
        prop_assert_eq!(&full, &state);

        let cut = cut.index(events.len() + 1);
        let at_cut = replay::<Account>(AccountState::default(), &events[..cut]);
        let snapshot: AccountState = codec::decode(&codec::encode(&at_cut).unwrap()).unwrap();
        prop_assert_eq!(replay::<Account>(snapshot, &events[cut..]), full);
    }

    /// No sequence of commands drives a balance below zero, and the balance is exactly the
    /// initial balance plus accepted credits minus accepted debits.
    #[test]
    fn balances_never_go_negative_and_add_up(commands in proptest::collection::vec(command(), 0..80)) {
        let (state, events, _) = run(&commands);
        let mut expected = 0i64;
        let mut running = AccountState::default();
        for event in &events {
            match event {
                AccountEvent::Opened { initial_balance, .. } => expected = *initial_balance,
                AccountEvent::Credited { amount } => expected += amount,
                AccountEvent::Debited { amount } => expected -= amount,
            }
            Account::apply(&mut running, event);
            prop_assert!(running.balance().unwrap() >= 0);
        }
        if !events.is_empty() {
            prop_assert_eq!(state.balance(), Some(expected));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_account_service_runs_commands_against_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
        .await
        .unwrap();
    let settings = EntitySettings {
        snapshot_every: 5,
        idle_timeout: Some(Duration::from_secs(30)),
        call_timeout: Duration::from_secs(5),
    };
    let service = start_named(
        "accounts-test",
        "accounts-host-test",
        store.clone(),
        settings,
        None,
    )
    .await
    .unwrap();
    let accounts = &service.accounts;
    accounts
        .execute("42", CommandEnvelope::new(open("alice", 1_000)))
        .await
        .unwrap();
    for _ in 0..12 {
        accounts
            .execute(
                "42",
                CommandEnvelope::new(AccountCommand::Debit { amount: 50 }),
            )
            .await
            .unwrap();
    }
    let refused = accounts
        .execute(
            "42",
            CommandEnvelope::new(AccountCommand::Debit { amount: 1_000 }),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        CommandError::Rejected(AccountError::InsufficientFunds {
            balance: 400,
            requested: 1_000
        })
    ));
    let never_opened = accounts
        .execute(
            "7",
            CommandEnvelope::new(AccountCommand::Credit { amount: 1 }),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        never_opened,
        CommandError::Rejected(AccountError::NotOpen)
    ));

    let live = accounts.get("42").await.unwrap();
    assert_eq!((live.state.balance(), live.version), (Some(400), 13));
    assert_eq!(
        store.load_snapshot("account-42").unwrap().unwrap().version,
        10
    );
    // After passivation the account comes back from snapshot + tail, identical.
    tokio::time::sleep(Duration::from_secs(31)).await;
    for _ in 0..1000 {
        if accounts.stats().await.unwrap().passivated >= 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(accounts.stats().await.unwrap().passivated >= 1);
    assert_eq!(accounts.get("42").await.unwrap(), live);
    service.supervisor.stop_and_wait(None, None).await.unwrap();
}

/// The running accounts service: its supervisor and the handle to send commands with.
#[derive(Debug, Clone)]
struct AccountsService {
    pub supervisor: ActorRef<SupervisorMsg>,
    pub accounts: Aggregates<Account>,
}

/// Starts the group on its own with explicit registry names, so that tests can run several in
/// one process.
async fn start_named(
    supervisor_name: &str,
    host_name: &str,
    store: EventStore,
    settings: EntitySettings,
    parent: Option<ActorCell>,
) -> Result<AccountsService, SpawnErr> {
    let accounts = Aggregates::new(host_name, store, settings.call_timeout);
    let supervisor = Supervisor::start(spec(supervisor_name, &accounts, settings), parent).await?;
    Ok(AccountsService {
        supervisor,
        accounts,
    })
}
