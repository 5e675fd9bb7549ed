//! Orders by customer: each customer's orders with their status, for
//! `GET /api/v1/orders?customer_id=`.

use playhouse_runtime::aggregate::stream_name;
use playhouse_runtime::bus::{self, key};
use playhouse_runtime::prelude::*;
use playhouse_runtime::store::RecordedEvent;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Order, OrderEvent, OrderStatus};

/// The projection's name, and its main table's: customer/order -> [`OrderSummary`].
pub const ORDERS_BY_CUSTOMER: &str = "orders_by_customer";
/// order -> customer, to find an order's entry when it is confirmed or cancelled.
const CUSTOMER_OF: &str = "orders_customer_of";

/// An order as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderSummary {
    pub order_id: String,
    pub customer_id: String,
    /// In minor units (cents).
    pub total: i64,
    #[schema(value_type = String, example = "pending")]
    pub status: OrderStatus,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct OrdersByCustomer;

impl Projection for OrdersByCustomer {
    fn name(&self) -> &'static str {
        ORDERS_BY_CUSTOMER
    }

    fn tables(&self) -> &'static [&'static str] {
        &[ORDERS_BY_CUSTOMER, CUSTOMER_OF]
    }

    fn apply(&self, event: &RecordedEvent, tables: &mut Tables<'_>) -> Result<(), ProjectionError> {
        let Some(delivered) = bus::decode::<Order>(event)? else {
            return Ok(());
        };
        let order_id = delivered.id;
        let (customer_id, mut summary) = match delivered.event {
            OrderEvent::Placed {
                customer_id, total, ..
            } => {
                tables.put(CUSTOMER_OF, key(&[&order_id]), &customer_id)?;
                let summary = OrderSummary {
                    order_id: order_id.clone(),
                    customer_id: customer_id.clone(),
                    total,
                    status: OrderStatus::Pending,
                    reason: None,
                };
                (customer_id, summary)
            }
            OrderEvent::Confirmed | OrderEvent::Cancelled { .. } => {
                let Some(customer_id) = tables.get::<String>(CUSTOMER_OF, &key(&[&order_id]))?
                else {
                    return Err(ProjectionError::Other(format!(
                        "order {order_id} changed status before it was placed"
                    )));
                };
                let entry = key(&[&customer_id, &order_id]);
                let Some(mut summary) = tables.get::<OrderSummary>(ORDERS_BY_CUSTOMER, &entry)?
                else {
                    return Err(ProjectionError::Other(format!(
                        "order {order_id} has no entry"
                    )));
                };
                match delivered.event {
                    OrderEvent::Cancelled { reason } => {
                        summary.status = OrderStatus::Cancelled;
                        summary.reason = Some(reason);
                    }
                    _ => summary.status = OrderStatus::Confirmed,
                }
                (customer_id, summary)
            }
        };
        summary.customer_id.clone_from(&customer_id);
        tables.put(
            ORDERS_BY_CUSTOMER,
            key(&[&customer_id, &order_id]),
            &summary,
        )
    }

    /// An order's entry changes with the order (confirmed, cancelled): its stream keeps it.
    fn stream_of(&self, table: &str, key: &[u8]) -> Option<String> {
        if table != ORDERS_BY_CUSTOMER {
            return None;
        }
        // customer/order/
        let order_id = std::str::from_utf8(key).ok()?.split('/').nth(1)?;
        Some(stream_name::<Order>(order_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orders_entry_is_kept_by_its_orders_stream() {
        let entry = key(&["customer-7", "order-42"]);
        assert_eq!(
            OrdersByCustomer.stream_of(ORDERS_BY_CUSTOMER, &entry),
            Some(stream_name::<Order>("order-42"))
        );
        // The order -> customer table is not listed.
        assert_eq!(OrdersByCustomer.stream_of(CUSTOMER_OF, &entry), None);
    }
}
