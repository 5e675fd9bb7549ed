//! Earlier shapes of the order's events, and the upcasters that read them today.
//!
//! `OrderPlaced` v1 (builds up to 0b92c6a) held each line's quantity and unit price; v2 adds
//! what the line was charged (`line_total`), so that pricing rules to come (discounts, a
//! rounding rule) are recorded as facts of the sale rather than recomputed from today's rules.
//! Before v2 no such rule existed: a v1 line was charged exactly quantity x unit price, which
//! is what the upcaster writes, and v1's total is the sum of those.

use playhouse_runtime::aggregate::{Upcast, Upcaster, Upcasters};
use serde::{Deserialize, Serialize};

use super::messages::{OrderLine, PlacedLine};

pub(super) const UPCASTERS: Upcasters = Upcasters::chain(&[Upcaster::of::<PlacedV1ToV2>()]);

/// `OrderEvent::Placed` as version 1 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PlacedV1 {
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total: i64,
    pub subject: String,
}

/// `OrderEvent::Placed` at version 2: the fields of today's variant, in its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PlacedV2 {
    pub customer_id: String,
    pub lines: Vec<PlacedLine>,
    pub total: i64,
    pub subject: String,
}

pub(super) struct PlacedV1ToV2;

impl Upcast for PlacedV1ToV2 {
    const EVENT_TYPE: &'static str = "OrderPlaced";
    const FROM: u16 = 1;
    type Old = PlacedV1;
    type New = PlacedV2;

    fn upcast(old: PlacedV1) -> PlacedV2 {
        PlacedV2 {
            customer_id: old.customer_id,
            lines: old
                .lines
                .iter()
                .map(|line| PlacedLine {
                    product_id: line.product_id.clone(),
                    quantity: line.quantity,
                    unit_price: line.unit_price,
                    // v1 totals were checked against overflow when placed.
                    line_total: line.unit_price.saturating_mul(i64::from(line.quantity)),
                })
                .collect(),
            total: old.total,
            subject: old.subject,
        }
    }
}

#[cfg(test)]
mod tests {
    use playhouse_runtime::aggregate::upcast::version_of;
    use playhouse_runtime::testkit::{StoredEvent, fold_stored, read_stored};

    use super::*;
    use crate::orders::{Order, OrderEvent, OrderState, OrderStatus};

    /// `Placed` is the first variant of the order's event enum.
    const PLACED: u32 = 0;

    fn placed_v1() -> StoredEvent {
        StoredEvent::old(
            "OrderPlaced",
            1,
            PLACED,
            &PlacedV1 {
                customer_id: "c-1".into(),
                lines: vec![
                    OrderLine {
                        product_id: "widget".into(),
                        quantity: 2,
                        unit_price: 1000,
                    },
                    OrderLine {
                        product_id: "gadget".into(),
                        quantity: 3,
                        unit_price: 500,
                    },
                ],
                total: 3500,
                subject: "alice".into(),
            },
        )
    }

    #[test]
    fn a_v1_placed_order_reads_with_each_line_charged_quantity_times_price() {
        let OrderEvent::Placed { lines, total, .. } = read_stored::<Order>(&placed_v1()).unwrap()
        else {
            panic!("not a placed order");
        };
        let charged: Vec<i64> = lines.iter().map(|l| l.line_total).collect();
        assert_eq!(charged, [2000, 1500]);
        assert_eq!(total, charged.iter().sum::<i64>());
    }

    #[test]
    fn orders_are_written_at_version_2_and_a_v1_history_folds_as_before() {
        let placed = read_stored::<Order>(&placed_v1()).unwrap();
        assert_eq!(version_of::<Order>(&placed), 2);
        assert_eq!(version_of::<Order>(&OrderEvent::Confirmed), 1);
        let confirmed = StoredEvent::old("OrderConfirmed", 1, 1, &());
        let OrderState::Placed {
            status,
            total,
            lines,
            ..
        } = fold_stored::<Order>(&[placed_v1(), confirmed])
        else {
            panic!("not placed");
        };
        assert_eq!(
            (status, total, lines.len()),
            (OrderStatus::Confirmed, 3500, 2)
        );
    }
}
