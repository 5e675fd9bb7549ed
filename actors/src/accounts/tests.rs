//! Account rules (unit and property tests) and the account actors over a real store.

use std::time::Duration;

use playhouse_runtime::aggregate::{Aggregate, CommandEnvelope, CommandError, EntitySettings};
use playhouse_runtime::testkit::{TempStore, decide_all, snapshot_property, start_aggregate};
use proptest::prelude::*;

use super::{Account, AccountCommand, AccountError, AccountEvent, AccountState};
use crate::money::MAX_AMOUNT;

fn open(owner: &str, initial_balance: i64) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
        initial_balance,
        subject: format!("{owner}-subject"),
    }
}

/// Runs commands through decide/apply: the state, the accepted events, the refusals.
fn run(commands: &[AccountCommand]) -> (AccountState, Vec<AccountEvent>, Vec<AccountError>) {
    let decided = decide_all::<Account>(commands);
    (decided.state, decided.events, decided.refusals)
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
            AccountError::InitialBalanceTooLarge {
                initial_balance: MAX_AMOUNT + 1,
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

/// Replaying from a snapshot taken at any point (through the codec, as the store keeps it)
/// and then the tail equals replaying everything from the start.
#[test]
fn snapshot_plus_tail_equals_full_replay() {
    snapshot_property::<Account>(proptest::collection::vec(command(), 0..60), 256);
}

proptest! {
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
async fn accounts_run_commands_against_the_store_and_come_back_from_snapshot_and_tail() {
    let temp = TempStore::new().await;
    let settings = EntitySettings {
        snapshot_every: 5,
        idle_timeout: Some(Duration::from_secs(30)),
        call_timeout: Duration::from_secs(5),
    };
    let accounts = start_aggregate::<Account>(&temp.store, settings).await;
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
        CommandError::Refused(AccountError::InsufficientFunds {
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
        CommandError::Refused(AccountError::NotOpen)
    ));

    let live = accounts.get("42").await.unwrap();
    assert_eq!((live.state.balance(), live.version), (Some(400), 13));
    assert_eq!(
        temp.store
            .load_snapshot("account-42")
            .unwrap()
            .unwrap()
            .version,
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
}
