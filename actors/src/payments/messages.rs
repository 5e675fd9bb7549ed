//! What crosses an actor or node boundary for payments: commands, events and refusals.

use playhouse_runtime::aggregate::{DomainError, Refusal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentCommand {
    /// Authorize `amount` for an order against the customer's credit limit: authorized at or
    /// under it, declined above it. `subject` is the customer's owner.
    Authorize {
        order_id: String,
        customer_id: String,
        amount: i64,
        credit_limit: i64,
        subject: String,
    },
    /// Give an authorized payment back (its order was cancelled).
    Refund { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    Authorized {
        order_id: String,
        customer_id: String,
        amount: i64,
        subject: String,
    },
    Declined {
        order_id: String,
        customer_id: String,
        amount: i64,
        reason: String,
        subject: String,
    },
    Refunded {
        reason: String,
    },
}

/// Why a payment refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentError {
    #[error("amount must be from 1 to {max} minor units, got {amount}")]
    AmountOutOfRange { amount: i64, max: i64 },
    #[error("the payment was already authorized or declined")]
    AlreadyDecided,
    #[error("only an authorized payment can be refunded")]
    NotAuthorized,
    #[error("the payment was already refunded")]
    AlreadyRefunded,
    #[error("no such payment")]
    NoPayment,
}

impl DomainError for PaymentError {
    fn refusal(&self) -> Refusal {
        match self {
            PaymentError::AmountOutOfRange { .. } => Refusal::invalid_field("amount"),
            PaymentError::AlreadyDecided
            | PaymentError::NotAuthorized
            | PaymentError::AlreadyRefunded => {
                Refusal::conflict("payment-state", "The payment's status does not allow this")
            }
            PaymentError::NoPayment => Refusal::not_found(),
        }
    }
}
