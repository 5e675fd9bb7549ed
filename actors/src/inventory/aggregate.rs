//! The stock of one product: available, reserved per order, and committed. Pure rules, no
//! actors, no I/O. Quantities never go below zero, and an order holds at most one reservation
//! of a product.

use std::collections::BTreeMap;

use playhouse_runtime::aggregate::{Access, Aggregate};
use serde::{Deserialize, Serialize};

use super::messages::{StockCommand, StockError, StockEvent};

/// Most units one command may move.
pub const MAX_QUANTITY: u64 = 1_000_000_000;
/// Most units of a product received in all: far beyond any real stock, and far from `u64`'s
/// end, so that counts never wrap.
pub const MAX_RECEIVED: u64 = u64::MAX / 2;

/// Marker type naming the stock aggregate kind (one per product, by product id).
#[derive(Debug, Clone, Copy)]
pub struct Stock;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockState {
    /// The product's owner, once stock was received; `None` before.
    pub subject: Option<String>,
    pub available: u64,
    /// Units set aside, by order id (a BTreeMap: snapshots encode in one order).
    pub reserved: BTreeMap<String, u64>,
    pub committed: u64,
    /// Everything ever received.
    pub received: u64,
}

impl StockState {
    pub fn reserved_total(&self) -> u64 {
        self.reserved.values().sum()
    }
}

fn quantity_ok(quantity: u64) -> Result<(), StockError> {
    if (1..=MAX_QUANTITY).contains(&quantity) {
        Ok(())
    } else {
        Err(StockError::QuantityOutOfRange {
            quantity,
            max: MAX_QUANTITY,
        })
    }
}

impl Aggregate for Stock {
    const KIND: &'static str = "inventory";
    const SERVICE: &'static str = super::SERVICE;
    /// A stock record is addressed by its product's id.
    const NOUN: &'static str = "product";
    /// Every reader may see what is in stock; only the product's owner receives goods.
    const ACCESS: Access = Access::PublicRead;
    type State = StockState;
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = StockError;

    fn event_type(event: &StockEvent) -> &'static str {
        match event {
            StockEvent::Received { .. } => "StockReceived",
            StockEvent::Reserved { .. } => "StockReserved",
            StockEvent::Released { .. } => "StockReleased",
            StockEvent::Committed { .. } => "StockCommitted",
        }
    }

    fn owner(state: &StockState) -> Option<&str> {
        state.subject.as_deref()
    }

    fn decide(state: &StockState, command: &StockCommand) -> Result<Vec<StockEvent>, StockError> {
        match command {
            StockCommand::Receive { quantity, subject } => {
                quantity_ok(*quantity)?;
                // Far beyond any real stock, but counted goods must never wrap around.
                if state.received.saturating_add(*quantity) > MAX_RECEIVED {
                    return Err(StockError::TooMuchStock {
                        received: state.received,
                        max: MAX_RECEIVED,
                    });
                }
                Ok(vec![StockEvent::Received {
                    quantity: *quantity,
                    subject: subject.clone(),
                }])
            }
            StockCommand::Reserve { order_id, quantity } => {
                quantity_ok(*quantity)?;
                if state.reserved.contains_key(order_id) {
                    return Err(StockError::AlreadyReserved {
                        order_id: order_id.clone(),
                    });
                }
                if *quantity > state.available {
                    return Err(StockError::OutOfStock {
                        available: state.available,
                        requested: *quantity,
                    });
                }
                Ok(vec![StockEvent::Reserved {
                    order_id: order_id.clone(),
                    quantity: *quantity,
                }])
            }
            StockCommand::Release { order_id } | StockCommand::Commit { order_id } => {
                let quantity =
                    *state
                        .reserved
                        .get(order_id)
                        .ok_or_else(|| StockError::NoReservation {
                            order_id: order_id.clone(),
                        })?;
                let order_id = order_id.clone();
                Ok(vec![match command {
                    StockCommand::Release { .. } => StockEvent::Released { order_id, quantity },
                    _ => StockEvent::Committed { order_id, quantity },
                }])
            }
        }
    }

    fn apply(state: &mut StockState, event: &StockEvent) {
        match event {
            StockEvent::Received { quantity, subject } => {
                state.subject.get_or_insert_with(|| subject.clone());
                state.available += quantity;
                state.received += quantity;
            }
            StockEvent::Reserved { order_id, quantity } => {
                state.available -= quantity;
                state.reserved.insert(order_id.clone(), *quantity);
            }
            StockEvent::Released { order_id, quantity } => {
                state.reserved.remove(order_id);
                state.available += quantity;
            }
            StockEvent::Committed { order_id, quantity } => {
                state.reserved.remove(order_id);
                state.committed += quantity;
            }
        }
    }
}
