//! The account aggregate (the seed's bank account): state and pure rules, no actors, no I/O.

use playhouse_runtime::aggregate::Aggregate;
use serde::{Deserialize, Serialize};

use super::messages::{AccountCommand, AccountError, AccountEvent};
use crate::money::MAX_AMOUNT;

/// Longest owner name accepted.
pub const MAX_OWNER_CHARS: usize = 200;

/// Marker type naming the account aggregate kind.
#[derive(Debug, Clone, Copy)]
pub struct Account;

/// An account's state. Amounts are integer minor units (cents): no rounding, ever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountState {
    /// No `Opened` event yet: every command but `Open` is refused.
    #[default]
    Unopened,
    Open {
        owner: String,
        balance: i64,
        /// The token subject the account belongs to (who opened it).
        subject: String,
    },
}

impl AccountState {
    /// The subject the account belongs to, once open.
    pub fn subject(&self) -> Option<&str> {
        match self {
            AccountState::Unopened => None,
            AccountState::Open { subject, .. } => Some(subject),
        }
    }

    pub fn balance(&self) -> Option<i64> {
        match self {
            AccountState::Unopened => None,
            AccountState::Open { balance, .. } => Some(*balance),
        }
    }
}

impl Aggregate for Account {
    const KIND: &'static str = "account";
    const SERVICE: &'static str = super::SERVICE;
    type State = AccountState;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn owner(state: &AccountState) -> Option<&str> {
        state.subject()
    }

    fn event_type(event: &AccountEvent) -> &'static str {
        match event {
            AccountEvent::Opened { .. } => "AccountOpened",
            AccountEvent::Credited { .. } => "AccountCredited",
            AccountEvent::Debited { .. } => "AccountDebited",
        }
    }

    fn decide(
        state: &AccountState,
        command: &AccountCommand,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        match (state, command) {
            (
                AccountState::Unopened,
                AccountCommand::Open {
                    owner,
                    initial_balance,
                    subject,
                },
            ) => {
                if owner.trim().is_empty() {
                    return Err(AccountError::EmptyOwner);
                }
                if !crate::text::is_plain(owner) {
                    return Err(AccountError::OwnerNotPlainText);
                }
                let length = owner.chars().count();
                if length > MAX_OWNER_CHARS {
                    return Err(AccountError::OwnerTooLong {
                        max: MAX_OWNER_CHARS,
                        length,
                    });
                }
                if *initial_balance < 0 {
                    return Err(AccountError::NegativeInitialBalance {
                        initial_balance: *initial_balance,
                    });
                }
                if *initial_balance > MAX_AMOUNT {
                    return Err(AccountError::InitialBalanceTooLarge {
                        initial_balance: *initial_balance,
                        max: MAX_AMOUNT,
                    });
                }
                Ok(vec![AccountEvent::Opened {
                    owner: owner.clone(),
                    initial_balance: *initial_balance,
                    subject: subject.clone(),
                }])
            }
            (AccountState::Open { .. }, AccountCommand::Open { .. }) => {
                Err(AccountError::AlreadyOpen)
            }
            (AccountState::Unopened, _) => Err(AccountError::NotOpen),
            (AccountState::Open { balance, .. }, AccountCommand::Credit { amount }) => {
                positive(*amount)?;
                balance
                    .checked_add(*amount)
                    .ok_or(AccountError::BalanceOverflow {
                        balance: *balance,
                        amount: *amount,
                    })?;
                Ok(vec![AccountEvent::Credited { amount: *amount }])
            }
            (AccountState::Open { balance, .. }, AccountCommand::Debit { amount }) => {
                positive(*amount)?;
                if amount > balance {
                    return Err(AccountError::InsufficientFunds {
                        balance: *balance,
                        requested: *amount,
                    });
                }
                Ok(vec![AccountEvent::Debited { amount: *amount }])
            }
        }
    }

    fn apply(state: &mut AccountState, event: &AccountEvent) {
        match (state, event) {
            (
                state @ AccountState::Unopened,
                AccountEvent::Opened {
                    owner,
                    initial_balance,
                    subject,
                },
            ) => {
                *state = AccountState::Open {
                    owner: owner.clone(),
                    balance: *initial_balance,
                    subject: subject.clone(),
                };
            }
            (AccountState::Open { balance, .. }, AccountEvent::Credited { amount }) => {
                *balance += amount;
            }
            (AccountState::Open { balance, .. }, AccountEvent::Debited { amount }) => {
                *balance -= amount;
            }
            // decide never produces these; replaying a stream that has them is a bug upstream,
            // and ignoring the event keeps the balance from going wrong.
            (state, event) => {
                tracing::error!(
                    ?state,
                    ?event,
                    "account event does not apply to this state; ignored"
                );
            }
        }
    }
}

fn positive(amount: i64) -> Result<(), AccountError> {
    if amount <= 0 {
        Err(AccountError::NonPositiveAmount { amount })
    } else if amount > MAX_AMOUNT {
        Err(AccountError::AmountTooLarge {
            amount,
            max: MAX_AMOUNT,
        })
    } else {
        Ok(())
    }
}
