//! What crosses an actor or node boundary for accounts: commands, events and refusals. The
//! service's only serializable types.

use playhouse_runtime::aggregate::{DomainError, Refusal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountCommand {
    /// `subject` is the token subject opening it, to whom the account will belong; `owner` is
    /// the holder's name as given.
    Open {
        owner: String,
        initial_balance: i64,
        subject: String,
    },
    Credit {
        amount: i64,
    },
    Debit {
        amount: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened {
        owner: String,
        initial_balance: i64,
        subject: String,
    },
    Credited {
        amount: i64,
    },
    Debited {
        amount: i64,
    },
}

/// Why an account refused a command. Messages name the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    #[error("amount must be greater than zero, got {amount}")]
    NonPositiveAmount { amount: i64 },
    #[error("amount must be at most {max}, got {amount}")]
    AmountTooLarge { amount: i64, max: i64 },
    #[error("initial balance must be zero or more, got {initial_balance}")]
    NegativeInitialBalance { initial_balance: i64 },
    #[error("owner must not be empty")]
    EmptyOwner,
    #[error("owner must be at most {max} characters, got {length}")]
    OwnerTooLong { max: usize, length: usize },
    #[error("insufficient funds: balance is {balance}, debit of {requested} requested")]
    InsufficientFunds { balance: i64, requested: i64 },
    #[error("account is already open")]
    AlreadyOpen,
    #[error("account was never opened")]
    NotOpen,
    #[error("credit of {amount} would overflow the balance {balance}")]
    BalanceOverflow { balance: i64, amount: i64 },
    #[error("initial balance must be at most {max}, got {initial_balance}")]
    InitialBalanceTooLarge { initial_balance: i64, max: i64 },
    #[error("owner must be plain text, without control characters")]
    OwnerNotPlainText,
}

impl DomainError for AccountError {
    fn refusal(&self) -> Refusal {
        match self {
            AccountError::NonPositiveAmount { .. } | AccountError::AmountTooLarge { .. } => {
                Refusal::invalid_field("amount")
            }
            AccountError::NegativeInitialBalance { .. }
            | AccountError::InitialBalanceTooLarge { .. } => {
                Refusal::invalid_field("initial_balance")
            }
            AccountError::EmptyOwner
            | AccountError::OwnerTooLong { .. }
            | AccountError::OwnerNotPlainText => Refusal::invalid_field("owner"),
            // Valid requests the account's current state cannot take: 409.
            AccountError::InsufficientFunds { .. } => {
                Refusal::conflict("insufficient-funds", "Insufficient funds")
            }
            AccountError::BalanceOverflow { .. } => {
                Refusal::conflict("balance-overflow", "The balance would overflow")
            }
            AccountError::AlreadyOpen => Refusal::conflict(
                "conflict",
                "The request conflicts with the resource's state",
            ),
            AccountError::NotOpen => Refusal::not_found(),
        }
    }
}
