//! The notifications read model over real order and payment streams.

use std::sync::Arc;

use playhouse_runtime::aggregate::CommandEnvelope;
use playhouse_runtime::bus::{key, read_page, rebuild_offline};
use playhouse_runtime::testkit::{TempStore, start_aggregate, test_settings};

use super::*;
use crate::orders::{Order, OrderCommand, OrderLine};
use crate::payments::{Payment, PaymentCommand, payment_id_for};

#[tokio::test]
async fn a_customer_is_told_of_each_order_and_payment_event_in_order() {
    let temp = TempStore::new().await;
    let orders = start_aggregate::<Order>(&temp.store, test_settings()).await;
    let payments = start_aggregate::<Payment>(&temp.store, test_settings()).await;
    let place = OrderCommand::Place {
        customer_id: "c1".into(),
        lines: vec![OrderLine {
            product_id: "p1".into(),
            quantity: 1,
            unit_price: 700,
        }],
        subject: "ada".into(),
    };
    orders
        .execute("o1", CommandEnvelope::new(place))
        .await
        .unwrap();
    let authorize = PaymentCommand::Authorize {
        order_id: "o1".into(),
        customer_id: "c1".into(),
        amount: 700,
        credit_limit: 100,
        subject: "ada".into(),
    };
    payments
        .execute(&payment_id_for("o1"), CommandEnvelope::new(authorize))
        .await
        .unwrap();
    let cancel = OrderCommand::Cancel {
        reason: "payment declined".into(),
    };
    orders
        .execute("o1", CommandEnvelope::new(cancel))
        .await
        .unwrap();

    rebuild_offline(&temp.store, Arc::new(NotificationsByCustomer))
        .await
        .unwrap();
    let snapshot = temp.store.read_models().unwrap();
    let (items, _) =
        read_page::<Notification>(&snapshot, NOTIFICATIONS, &key(&["c1"]), None, 10).unwrap();
    let kinds: Vec<&str> = items.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["order-placed", "payment-declined", "order-cancelled"]
    );
    assert!(
        items[1].message.contains("over the credit limit 100"),
        "{}",
        items[1].message
    );
    let (others, _) =
        read_page::<Notification>(&snapshot, NOTIFICATIONS, &key(&["c2"]), None, 10).unwrap();
    assert!(others.is_empty());
}
