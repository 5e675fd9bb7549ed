//! Order rules (the seed's four tests among them), the snapshot + tail property, and the
//! orders-by-customer read model.

use std::sync::Arc;

use playhouse_runtime::aggregate::{Aggregate, CommandEnvelope};
use playhouse_runtime::bus::{key, read_page, rebuild_offline};
use playhouse_runtime::testkit::{
    TempStore, decide_all, snapshot_property, start_aggregate, test_settings,
};
use proptest::prelude::*;

use super::*;

fn line(product: &str, quantity: u32, unit_price: i64) -> OrderLine {
    OrderLine {
        product_id: product.into(),
        quantity,
        unit_price,
    }
}

fn place(lines: Vec<OrderLine>) -> OrderCommand {
    OrderCommand::Place {
        customer_id: "c1".into(),
        lines,
        subject: "ada".into(),
    }
}

fn cancel(reason: &str) -> OrderCommand {
    OrderCommand::Cancel {
        reason: reason.into(),
    }
}

#[test]
fn a_placed_order_with_two_lines_has_two_lines() {
    let decided = decide_all::<Order>(&[place(vec![line("p1", 1, 100), line("p2", 2, 50)])]);
    let OrderState::Placed { lines, status, .. } = decided.state else {
        panic!("not placed");
    };
    assert_eq!(lines.len(), 2);
    assert_eq!(status, OrderStatus::Pending);
}

#[test]
fn an_order_without_lines_is_refused() {
    assert_eq!(
        Order::decide(&OrderState::Unplaced, &place(Vec::new())),
        Err(OrderError::NoLines)
    );
}

#[test]
fn a_cancelled_order_is_cancelled() {
    let decided =
        decide_all::<Order>(&[place(vec![line("p1", 1, 100)]), cancel("changed my mind")]);
    let OrderState::Placed { status, reason, .. } = decided.state else {
        panic!("not placed");
    };
    assert_eq!(status, OrderStatus::Cancelled);
    assert_eq!(reason.as_deref(), Some("changed my mind"));
}

#[test]
fn two_at_ten_and_three_at_five_total_thirty_five() {
    // 2 x 10.00 + 3 x 5.00 = 35.00, in cents.
    assert_eq!(total_of(&[line("a", 2, 1000), line("b", 3, 500)]), Ok(3500));
}

#[test]
fn an_order_moves_once_from_pending() {
    let placed = decide_all::<Order>(&[place(vec![line("p1", 1, 100)])]).state;
    let confirmed =
        decide_all::<Order>(&[place(vec![line("p1", 1, 100)]), OrderCommand::Confirm]).state;
    assert_eq!(
        Order::decide(&confirmed, &cancel("late")),
        Err(OrderError::AlreadyConfirmed)
    );
    assert_eq!(
        Order::decide(&confirmed, &OrderCommand::Confirm),
        Err(OrderError::AlreadyConfirmed)
    );
    assert_eq!(
        Order::decide(&placed, &cancel(" ")),
        Err(OrderError::InvalidReason)
    );
    assert_eq!(
        Order::decide(&OrderState::Unplaced, &OrderCommand::Confirm),
        Err(OrderError::NotPlaced)
    );
    assert_eq!(Order::owner(&placed), Some("ada"));
}

#[test]
fn every_line_rule_has_its_refusal() {
    for (lines, expected) in [
        (
            vec![line("p", 0, 1)],
            OrderError::QuantityOutOfRange {
                line: 0,
                quantity: 0,
                max: MAX_LINE_QUANTITY,
            },
        ),
        (
            vec![line("p", 1, 0)],
            OrderError::PriceOutOfRange {
                line: 0,
                unit_price: 0,
                max: crate::money::MAX_AMOUNT,
            },
        ),
        (
            vec![line("p", 1, 1), line("p", 2, 1)],
            OrderError::DuplicateProduct {
                line: 1,
                first: 0,
                product_id: "p".into(),
            },
        ),
        (
            vec![line("p", 10_000, crate::money::MAX_AMOUNT)],
            OrderError::TotalTooLarge {
                max: crate::money::MAX_AMOUNT,
            },
        ),
    ] {
        assert_eq!(total_of(&lines), Err(expected));
    }
}

fn command() -> impl Strategy<Value = OrderCommand> {
    prop_oneof![
        proptest::collection::vec(("p[1-3]", 0u32..4, 0i64..300), 0..4).prop_map(|lines| {
            place(
                lines
                    .into_iter()
                    .map(|(p, q, price)| line(&p, q, price))
                    .collect(),
            )
        }),
        Just(OrderCommand::Confirm),
        "[a-z ]{0,6}".prop_map(|reason| cancel(&reason)),
    ]
}

#[test]
fn snapshots_plus_tails_equal_full_replays() {
    snapshot_property::<Order>(proptest::collection::vec(command(), 0..8), 256);
}

#[tokio::test]
async fn orders_by_customer_follows_each_order_to_its_status() {
    let temp = TempStore::new().await;
    let orders = start_aggregate::<Order>(&temp.store, test_settings()).await;
    let run = |id: &str, command: OrderCommand| {
        let (orders, id) = (orders.clone(), id.to_owned());
        async move {
            orders
                .execute(&id, CommandEnvelope::new(command))
                .await
                .unwrap()
        }
    };
    run("o1", place(vec![line("p1", 2, 1000)])).await;
    run("o2", place(vec![line("p1", 1, 1000)])).await;
    run("o1", OrderCommand::Confirm).await;
    run("o2", cancel("out of stock: p1")).await;
    rebuild_offline(&temp.store, Arc::new(OrdersByCustomer))
        .await
        .unwrap();
    let snapshot = temp.store.read_models().unwrap();
    let (items, _) =
        read_page::<OrderSummary>(&snapshot, ORDERS_BY_CUSTOMER, &key(&["c1"]), None, 10).unwrap();
    let statuses: Vec<_> = items
        .iter()
        .map(|o| (o.order_id.as_str(), o.status, o.total))
        .collect();
    assert_eq!(
        statuses,
        [
            ("o1", OrderStatus::Confirmed, 2000),
            ("o2", OrderStatus::Cancelled, 1000)
        ]
    );
    assert_eq!(items[1].reason.as_deref(), Some("out of stock: p1"));
}

/// The order saga's steps against real aggregates on a temp store.
mod saga_steps {
    use playhouse_runtime::aggregate::{Aggregates, CommandEnvelope};
    use playhouse_runtime::saga::{Fence, SagaKind, StepContext, StepOutcome};
    use playhouse_runtime::testkit::{TempStore, start_aggregate, test_settings};

    use super::{cancel, line};
    use crate::customers::{Customer, CustomerCommand};
    use crate::inventory::{Stock, StockCommand};
    use crate::orders::{Order, OrderSaga, OrderSagaInput};
    use crate::payments::{Payment, payment_id_for};

    // Steps of a one-line order: place, reserve, authorize, confirm, commit.
    const PLACE: usize = 0;
    const RESERVE: usize = 1;
    const AUTHORIZE: usize = 2;

    async fn saga(temp: &TempStore) -> OrderSaga {
        let saga = OrderSaga {
            orders: start_aggregate::<Order>(&temp.store, test_settings()).await,
            stock: start_aggregate::<Stock>(&temp.store, test_settings()).await,
            payments: start_aggregate::<Payment>(&temp.store, test_settings()).await,
            customers: start_aggregate::<Customer>(&temp.store, test_settings()).await,
        };
        run(
            &saga.customers,
            "c1",
            CustomerCommand::Register {
                name: "Ada".into(),
                email: "ada@example.com".into(),
                credit_limit: 1_000_000,
                subject: "ada".into(),
            },
        )
        .await;
        run(
            &saga.stock,
            "p1",
            StockCommand::Receive {
                quantity: 10,
                subject: "shop".into(),
            },
        )
        .await;
        saga
    }

    async fn run<A: playhouse_runtime::aggregate::Aggregate>(
        aggregates: &Aggregates<A>,
        id: &str,
        command: A::Command,
    ) {
        aggregates
            .execute(id, CommandEnvelope::new(command))
            .await
            .unwrap();
    }

    fn input() -> OrderSagaInput {
        OrderSagaInput {
            order_id: "o1".into(),
            customer_id: "c1".into(),
            lines: vec![line("p1", 2, 1000)],
            total: 2000,
            subject: "ada".into(),
        }
    }

    fn context(step: usize, phase: &str) -> StepContext {
        StepContext {
            command_id: format!("saga:order_saga:o1:{step}:{phase}"),
            correlation_id: "req-1".into(),
        }
    }

    #[tokio::test]
    async fn an_order_cancelled_by_its_customer_is_not_charged() {
        let temp = TempStore::new().await;
        let saga = saga(&temp).await;
        let input = input();
        assert_eq!(
            saga.act(&input, PLACE, context(PLACE, "act")).await,
            StepOutcome::Done
        );
        run(&saga.orders, "o1", cancel("changed my mind")).await;
        assert_eq!(
            saga.act(&input, AUTHORIZE, context(AUTHORIZE, "act")).await,
            StepOutcome::Refused("the order was cancelled".into())
        );
        assert_eq!(
            saga.payments
                .get(&payment_id_for("o1"))
                .await
                .unwrap()
                .version,
            0,
            "no payment was authorized"
        );
    }

    #[tokio::test]
    async fn compensations_of_what_is_already_undone_are_done() {
        let temp = TempStore::new().await;
        let saga = saga(&temp).await;
        let input = input();
        assert_eq!(
            saga.act(&input, PLACE, context(PLACE, "act")).await,
            StepOutcome::Done
        );
        // Nothing reserved, no payment, and the order cancelled twice (under different ids):
        // each compensation finds nothing left to undo.
        for step in [RESERVE, AUTHORIZE] {
            assert_eq!(
                saga.compensate(&input, step, "out of stock: p1", context(step, "undo"))
                    .await,
                StepOutcome::Done,
                "step {step}"
            );
        }
        run(&saga.orders, "o1", cancel("changed my mind")).await;
        assert_eq!(
            saga.compensate(&input, PLACE, "out of stock: p1", context(PLACE, "undo"))
                .await,
            StepOutcome::Done
        );
    }

    #[tokio::test]
    async fn a_reservation_in_doubt_is_settled_by_its_fence() {
        let temp = TempStore::new().await;
        let saga = saga(&temp).await;
        let input = input();
        // Applied, though its answer was lost: the fence says so.
        assert_eq!(
            saga.act(&input, RESERVE, context(RESERVE, "act")).await,
            StepOutcome::Done
        );
        assert_eq!(
            saga.fence(&input, RESERVE, context(RESERVE, "act")).await,
            Fence::Applied
        );
        // Never arrived: fenced, and when it does arrive it reserves nothing.
        let other = OrderSagaInput {
            order_id: "o2".into(),
            ..input.clone()
        };
        let late = StepContext {
            command_id: "saga:order_saga:o2:1:act".into(),
            correlation_id: "req-2".into(),
        };
        assert_eq!(
            saga.fence(&other, RESERVE, late.clone()).await,
            Fence::NeverApplied
        );
        assert!(matches!(
            saga.act(&other, RESERVE, late).await,
            StepOutcome::Failed(_)
        ));
        let stock = saga.stock.get("p1").await.unwrap();
        assert_eq!(stock.version, 2, "received, and reserved once (for o1)");
    }
}
