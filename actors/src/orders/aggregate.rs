//! The order aggregate (the seed's order): lines at the prices of placing time, a total, and a
//! status that moves from pending to confirmed or cancelled, once. Pure rules, no actors.

use playhouse_runtime::aggregate::{Aggregate, Upcasters};
use serde::{Deserialize, Serialize};

use super::messages::{OrderCommand, OrderError, OrderEvent, OrderLine, PlacedLine};
use crate::money::MAX_AMOUNT;
use crate::text::is_plain;

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Most units of one product one line may order.
pub const MAX_LINE_QUANTITY: u32 = 10_000;
/// Longest cancellation reason.
pub const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// Marker type naming the order aggregate kind.
#[derive(Debug, Clone, Copy)]
pub struct Order;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderState {
    #[default]
    Unplaced,
    Placed {
        customer_id: String,
        lines: Vec<PlacedLine>,
        /// Σ line totals, in minor units.
        total: i64,
        status: OrderStatus,
        /// Why it was cancelled.
        reason: Option<String>,
        subject: String,
    },
}

/// The total of `lines`, checked line by line; the error names what is wrong.
pub fn total_of(lines: &[OrderLine]) -> Result<i64, OrderError> {
    if lines.is_empty() {
        return Err(OrderError::NoLines);
    }
    if lines.len() > MAX_LINES {
        return Err(OrderError::TooManyLines {
            max: MAX_LINES,
            count: lines.len(),
        });
    }
    let mut total: i64 = 0;
    for (line, order_line) in lines.iter().enumerate() {
        if !(1..=MAX_LINE_QUANTITY).contains(&order_line.quantity) {
            return Err(OrderError::QuantityOutOfRange {
                line,
                quantity: order_line.quantity,
                max: MAX_LINE_QUANTITY,
            });
        }
        if !(1..=MAX_AMOUNT).contains(&order_line.unit_price) {
            return Err(OrderError::PriceOutOfRange {
                line,
                unit_price: order_line.unit_price,
                max: MAX_AMOUNT,
            });
        }
        if let Some(first) = lines[..line]
            .iter()
            .position(|earlier| earlier.product_id == order_line.product_id)
        {
            return Err(OrderError::DuplicateProduct {
                line,
                first,
                product_id: order_line.product_id.clone(),
            });
        }
        total = order_line
            .unit_price
            .checked_mul(i64::from(order_line.quantity))
            .and_then(|amount| total.checked_add(amount))
            .filter(|total| *total <= MAX_AMOUNT)
            .ok_or(OrderError::TotalTooLarge { max: MAX_AMOUNT })?;
    }
    Ok(total)
}

impl Aggregate for Order {
    const KIND: &'static str = "order";
    const SERVICE: &'static str = super::SERVICE;
    /// 2: lines carry their totals.
    const STATE_VERSION: u16 = 2;
    const UPCASTERS: Upcasters = super::versions::UPCASTERS;
    type State = OrderState;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn event_type(event: &OrderEvent) -> &'static str {
        match event {
            OrderEvent::Placed { .. } => "OrderPlaced",
            OrderEvent::Confirmed => "OrderConfirmed",
            OrderEvent::Cancelled { .. } => "OrderCancelled",
        }
    }

    fn owner(state: &OrderState) -> Option<&str> {
        match state {
            OrderState::Unplaced => None,
            OrderState::Placed { subject, .. } => Some(subject),
        }
    }

    fn decide(state: &OrderState, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match (state, command) {
            (
                OrderState::Unplaced,
                OrderCommand::Place {
                    customer_id,
                    lines,
                    subject,
                },
            ) => {
                let total = total_of(lines)?;
                let lines = lines
                    .iter()
                    .map(PlacedLine::charged)
                    .collect::<Option<Vec<_>>>()
                    .ok_or(OrderError::TotalTooLarge { max: MAX_AMOUNT })?;
                Ok(vec![OrderEvent::Placed {
                    customer_id: customer_id.clone(),
                    total,
                    lines,
                    subject: subject.clone(),
                }])
            }
            (OrderState::Placed { .. }, OrderCommand::Place { .. }) => {
                Err(OrderError::AlreadyPlaced)
            }
            (OrderState::Unplaced, _) => Err(OrderError::NotPlaced),
            (OrderState::Placed { status, .. }, OrderCommand::Confirm) => match status {
                OrderStatus::Pending => Ok(vec![OrderEvent::Confirmed]),
                OrderStatus::Confirmed => Err(OrderError::AlreadyConfirmed),
                OrderStatus::Cancelled => Err(OrderError::AlreadyCancelled),
            },
            (OrderState::Placed { status, .. }, OrderCommand::Cancel { reason }) => {
                if reason.trim().is_empty()
                    || reason.chars().count() > MAX_REASON_CHARS
                    || !is_plain(reason)
                {
                    return Err(OrderError::InvalidReason);
                }
                match status {
                    OrderStatus::Pending => Ok(vec![OrderEvent::Cancelled {
                        reason: reason.clone(),
                    }]),
                    OrderStatus::Confirmed => Err(OrderError::AlreadyConfirmed),
                    OrderStatus::Cancelled => Err(OrderError::AlreadyCancelled),
                }
            }
        }
    }

    fn apply(state: &mut OrderState, event: &OrderEvent) {
        match (state, event) {
            (
                state @ OrderState::Unplaced,
                OrderEvent::Placed {
                    customer_id,
                    lines,
                    total,
                    subject,
                },
            ) => {
                *state = OrderState::Placed {
                    customer_id: customer_id.clone(),
                    lines: lines.clone(),
                    total: *total,
                    status: OrderStatus::Pending,
                    reason: None,
                    subject: subject.clone(),
                };
            }
            (OrderState::Placed { status, .. }, OrderEvent::Confirmed) => {
                *status = OrderStatus::Confirmed;
            }
            (OrderState::Placed { status, reason, .. }, OrderEvent::Cancelled { reason: why }) => {
                *status = OrderStatus::Cancelled;
                *reason = Some(why.clone());
            }
            (state, event) => {
                tracing::error!(
                    ?state,
                    ?event,
                    "order event does not apply to this state; ignored"
                );
            }
        }
    }
}
