//! Notifications by customer: what a customer is told about its orders and payments, one entry
//! per event, oldest first.

use playhouse_runtime::bus::{self, key};
use playhouse_runtime::prelude::*;
use playhouse_runtime::store::RecordedEvent;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::orders::{Order, OrderEvent};
use crate::payments::{Payment, PaymentEvent};

/// The projection's name, and its main table's: customer/time/order/kind -> [`Notification`].
pub const NOTIFICATIONS: &str = "notifications";
/// order -> customer, for order events that do not name the customer.
const ORDER_CUSTOMER: &str = "notifications_order_customer";
/// payment -> (customer, order), for refunds.
const PAYMENT_OF: &str = "notifications_payment_of";

/// One thing a customer is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    /// The log position of the event it tells of, in the log of the node owning its aggregate.
    /// Notifications are listed by time (`at`).
    pub position: u64,
    /// When that event happened, RFC 3339.
    pub at: String,
    /// `order-placed`, `order-confirmed`, `order-cancelled`, `payment-authorized`,
    /// `payment-declined` or `payment-refunded`.
    pub kind: String,
    pub order_id: String,
    /// The same in words.
    pub message: String,
}

#[derive(Debug)]
pub struct NotificationsByCustomer;

impl NotificationsByCustomer {
    fn notify(
        tables: &mut Tables<'_>,
        event: &RecordedEvent,
        customer_id: &str,
        order_id: &str,
        kind: &str,
        message: String,
    ) -> Result<(), ProjectionError> {
        let notification = Notification {
            position: event.position,
            at: playhouse_runtime::time::rfc3339_micros(event.recorded_at_micros),
            kind: kind.to_owned(),
            order_id: order_id.to_owned(),
            message,
        };
        // Time first (zero-padded, so that a customer's entries sort by it), then what makes
        // the key unique across the cluster: an order is told each kind of news once, and
        // log positions are per node, so two members may both have a position 42.
        let at = format!("{:020}", event.recorded_at_micros);
        tables.put(
            NOTIFICATIONS,
            key(&[customer_id, &at, order_id, kind]),
            &notification,
        )
    }

    fn customer_of_order(tables: &Tables<'_>, order_id: &str) -> Result<String, ProjectionError> {
        tables
            .get::<String>(ORDER_CUSTOMER, &key(&[order_id]))?
            .ok_or_else(|| ProjectionError::Other(format!("order {order_id} was never placed")))
    }
}

impl Projection for NotificationsByCustomer {
    fn name(&self) -> &'static str {
        NOTIFICATIONS
    }

    fn tables(&self) -> &'static [&'static str] {
        &[NOTIFICATIONS, ORDER_CUSTOMER, PAYMENT_OF]
    }

    fn apply(&self, event: &RecordedEvent, tables: &mut Tables<'_>) -> Result<(), ProjectionError> {
        if let Some(order) = bus::decode::<Order>(event)? {
            let order_id = order.id;
            match order.event {
                OrderEvent::Placed {
                    customer_id, total, ..
                } => {
                    tables.put(ORDER_CUSTOMER, key(&[&order_id]), &customer_id)?;
                    let message = format!("order {order_id} placed, total {total}");
                    Self::notify(
                        tables,
                        event,
                        &customer_id,
                        &order_id,
                        "order-placed",
                        message,
                    )?;
                }
                OrderEvent::Confirmed => {
                    let customer_id = Self::customer_of_order(tables, &order_id)?;
                    let message = format!("order {order_id} confirmed");
                    Self::notify(
                        tables,
                        event,
                        &customer_id,
                        &order_id,
                        "order-confirmed",
                        message,
                    )?;
                }
                OrderEvent::Cancelled { reason } => {
                    let customer_id = Self::customer_of_order(tables, &order_id)?;
                    let message = format!("order {order_id} cancelled: {reason}");
                    Self::notify(
                        tables,
                        event,
                        &customer_id,
                        &order_id,
                        "order-cancelled",
                        message,
                    )?;
                }
            }
        } else if let Some(payment) = bus::decode::<Payment>(event)? {
            let payment_id = payment.id;
            match payment.event {
                PaymentEvent::Authorized {
                    order_id,
                    customer_id,
                    amount,
                    ..
                } => {
                    tables.put(PAYMENT_OF, key(&[&payment_id]), &(&customer_id, &order_id))?;
                    let message = format!("payment of {amount} for order {order_id} authorized");
                    Self::notify(
                        tables,
                        event,
                        &customer_id,
                        &order_id,
                        "payment-authorized",
                        message,
                    )?;
                }
                PaymentEvent::Declined {
                    order_id,
                    customer_id,
                    reason,
                    ..
                } => {
                    tables.put(PAYMENT_OF, key(&[&payment_id]), &(&customer_id, &order_id))?;
                    let message = format!("payment for order {order_id} declined: {reason}");
                    Self::notify(
                        tables,
                        event,
                        &customer_id,
                        &order_id,
                        "payment-declined",
                        message,
                    )?;
                }
                PaymentEvent::Refunded { reason } => {
                    let Some((customer_id, order_id)) =
                        tables.get::<(String, String)>(PAYMENT_OF, &key(&[&payment_id]))?
                    else {
                        return Err(ProjectionError::Other(format!(
                            "payment {payment_id} was refunded before it was decided"
                        )));
                    };
                    let message = format!("payment for order {order_id} refunded: {reason}");
                    Self::notify(
                        tables,
                        event,
                        &customer_id,
                        &order_id,
                        "payment-refunded",
                        message,
                    )?;
                }
            }
        }
        Ok(())
    }
}
