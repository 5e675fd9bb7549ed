//! What crosses an actor or node boundary for orders: commands, events and refusals.

use playhouse_runtime::aggregate::{DomainError, Refusal};
use serde::{Deserialize, Serialize};

/// One line of an order, at the catalog's price when it was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: u32,
    /// Price of one unit in minor units (cents), as the catalog had it at placing time.
    pub unit_price: i64,
}

/// One line of a placed order, with what it was charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlacedLine {
    pub product_id: String,
    pub quantity: u32,
    /// Price of one unit in minor units (cents), as the catalog had it at placing time.
    pub unit_price: i64,
    /// What the line was charged, in minor units: recorded when the order is placed, so that
    /// a later pricing rule (a discount, a rounding) never changes an old order's lines. So far
    /// quantity x unit price.
    pub line_total: i64,
}

impl PlacedLine {
    /// `line` charged at quantity x unit price; `None` if that overflows.
    pub fn charged(line: &OrderLine) -> Option<PlacedLine> {
        Some(PlacedLine {
            product_id: line.product_id.clone(),
            quantity: line.quantity,
            unit_price: line.unit_price,
            line_total: line.unit_price.checked_mul(i64::from(line.quantity))?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderCommand {
    /// `subject` is the customer's owner, to whom the order belongs.
    Place {
        customer_id: String,
        lines: Vec<OrderLine>,
        subject: String,
    },
    Confirm,
    Cancel {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// Version 2: each line carries its `line_total` (version 1 had only the unit price; see
    /// `versions.rs`).
    Placed {
        customer_id: String,
        lines: Vec<PlacedLine>,
        total: i64,
        subject: String,
    },
    Confirmed,
    Cancelled {
        reason: String,
    },
}

/// Why an order refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    #[error("an order needs at least one line")]
    NoLines,
    #[error("an order has at most {max} lines, got {count}")]
    TooManyLines { max: usize, count: usize },
    #[error("line {line}: quantity must be from 1 to {max}, got {quantity}")]
    QuantityOutOfRange {
        line: usize,
        quantity: u32,
        max: u32,
    },
    #[error("line {line}: unit price must be from 1 to {max}, got {unit_price}")]
    PriceOutOfRange {
        line: usize,
        unit_price: i64,
        max: i64,
    },
    #[error("line {line}: product {product_id} is already on line {first}")]
    DuplicateProduct {
        line: usize,
        first: usize,
        product_id: String,
    },
    #[error("the order's total would be over {max} minor units")]
    TotalTooLarge { max: i64 },
    #[error("the order is already placed")]
    AlreadyPlaced,
    #[error("no such order")]
    NotPlaced,
    #[error("the order is already confirmed")]
    AlreadyConfirmed,
    #[error("the order is already cancelled")]
    AlreadyCancelled,
    #[error("a reason must be 1 to 500 characters of plain text")]
    InvalidReason,
}

impl DomainError for OrderError {
    fn refusal(&self) -> Refusal {
        match self {
            OrderError::NoLines
            | OrderError::TooManyLines { .. }
            | OrderError::QuantityOutOfRange { .. }
            | OrderError::PriceOutOfRange { .. }
            | OrderError::DuplicateProduct { .. }
            | OrderError::TotalTooLarge { .. } => Refusal::invalid_field("lines"),
            OrderError::InvalidReason => Refusal::invalid_field("reason"),
            OrderError::AlreadyPlaced
            | OrderError::AlreadyConfirmed
            | OrderError::AlreadyCancelled => {
                Refusal::conflict("order-state", "The order's status does not allow this")
            }
            OrderError::NotPlaced => Refusal::not_found(),
        }
    }
}
