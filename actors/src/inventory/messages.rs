//! What crosses an actor or node boundary for inventory: commands, events and refusals.

use playhouse_runtime::aggregate::{DomainError, Refusal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockCommand {
    /// Goods arrive. `subject` owns the stock record (the product's owner).
    Receive { quantity: u64, subject: String },
    /// Set `quantity` aside for `order_id` (one reservation per order).
    Reserve { order_id: String, quantity: u64 },
    /// Give an order's reservation back (the order was cancelled).
    Release { order_id: String },
    /// An order's reservation leaves the shelf for good (the order was confirmed).
    Commit { order_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockEvent {
    Received { quantity: u64, subject: String },
    Reserved { order_id: String, quantity: u64 },
    Released { order_id: String, quantity: u64 },
    Committed { order_id: String, quantity: u64 },
}

/// Why the stock of a product refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum StockError {
    #[error("quantity must be from 1 to {max}, got {quantity}")]
    QuantityOutOfRange { quantity: u64, max: u64 },
    #[error("out of stock: {available} available, {requested} requested")]
    OutOfStock { available: u64, requested: u64 },
    #[error("order {order_id} already holds a reservation of this product")]
    AlreadyReserved { order_id: String },
    #[error("order {order_id} holds no reservation of this product")]
    NoReservation { order_id: String },
    #[error("no stock of this product was ever received")]
    NoStock,
    #[error("{received} received so far; at most {max} can be received in all")]
    TooMuchStock { received: u64, max: u64 },
}

impl DomainError for StockError {
    fn refusal(&self) -> Refusal {
        match self {
            StockError::QuantityOutOfRange { .. } => Refusal::invalid_field("quantity"),
            StockError::OutOfStock { .. } => Refusal::conflict("out-of-stock", "Out of stock"),
            StockError::TooMuchStock { .. } => Refusal {
                field: Some("quantity"),
                ..Refusal::conflict("too-much-stock", "No more stock can be received")
            },
            StockError::AlreadyReserved { .. } | StockError::NoReservation { .. } => {
                Refusal::conflict(
                    "conflict",
                    "The request conflicts with the resource's state",
                )
            }
            StockError::NoStock => Refusal::not_found(),
        }
    }
}
