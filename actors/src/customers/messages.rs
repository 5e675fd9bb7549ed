//! What crosses an actor or node boundary for customers: commands, events and refusals.

use playhouse_runtime::aggregate::{DomainError, Refusal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerCommand {
    /// `subject` is the token subject registering, to whom the customer (and later its orders,
    /// payments and notifications) belongs.
    Register {
        name: String,
        email: String,
        credit_limit: i64,
        subject: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerEvent {
    Registered {
        name: String,
        email: String,
        credit_limit: i64,
        subject: String,
    },
}

/// Why a customer refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CustomerError {
    #[error("name must be 1 to {max} characters of plain text, not blank")]
    InvalidName { max: usize },
    #[error("`{email}` is not an email address like name@example.com")]
    InvalidEmail { email: String },
    #[error("credit limit must be from 0 to {max} minor units, got {credit_limit}")]
    CreditLimitOutOfRange { credit_limit: i64, max: i64 },
    #[error("the customer is already registered")]
    AlreadyRegistered,
}

impl DomainError for CustomerError {
    fn refusal(&self) -> Refusal {
        match self {
            CustomerError::InvalidName { .. } => Refusal::invalid_field("name"),
            CustomerError::InvalidEmail { .. } => Refusal::invalid_field("email"),
            CustomerError::CreditLimitOutOfRange { .. } => Refusal::invalid_field("credit_limit"),
            CustomerError::AlreadyRegistered => Refusal::conflict(
                "conflict",
                "The request conflicts with the resource's state",
            ),
        }
    }
}
