//! Stock rules: never below zero, one reservation per order, release and commit; the
//! snapshot + tail property; and stock conserved over any command sequence.

use playhouse_runtime::aggregate::Aggregate;
use playhouse_runtime::testkit::{decide_all, snapshot_property};
use proptest::prelude::*;

use super::*;

fn receive(quantity: u64) -> StockCommand {
    StockCommand::Receive {
        quantity,
        subject: "shop".into(),
    }
}

fn reserve(order: &str, quantity: u64) -> StockCommand {
    StockCommand::Reserve {
        order_id: order.into(),
        quantity,
    }
}

#[test]
fn reservations_are_held_then_released_or_committed() {
    let decided = decide_all::<Stock>(&[
        receive(10),
        reserve("o1", 4),
        reserve("o2", 5),
        StockCommand::Commit {
            order_id: "o1".into(),
        },
        StockCommand::Release {
            order_id: "o2".into(),
        },
    ]);
    assert!(decided.refusals.is_empty(), "{:?}", decided.refusals);
    let state = decided.state;
    assert_eq!(
        (state.available, state.reserved_total(), state.committed),
        (6, 0, 4)
    );
    assert_eq!(Stock::owner(&state), Some("shop"));
}

#[test]
fn every_stock_rule_has_its_refusal() {
    let decided = decide_all::<Stock>(&[receive(3), reserve("o1", 2)]);
    let state = decided.state;
    for (command, expected) in [
        (
            reserve("o2", 2),
            StockError::OutOfStock {
                available: 1,
                requested: 2,
            },
        ),
        (
            reserve("o1", 1),
            StockError::AlreadyReserved {
                order_id: "o1".into(),
            },
        ),
        (
            StockCommand::Release {
                order_id: "o9".into(),
            },
            StockError::NoReservation {
                order_id: "o9".into(),
            },
        ),
        (
            receive(0),
            StockError::QuantityOutOfRange {
                quantity: 0,
                max: MAX_QUANTITY,
            },
        ),
        (
            reserve("o3", 0),
            StockError::QuantityOutOfRange {
                quantity: 0,
                max: MAX_QUANTITY,
            },
        ),
    ] {
        assert_eq!(
            Stock::decide(&state, &command),
            Err(expected),
            "{command:?}"
        );
    }
}

fn command() -> impl Strategy<Value = StockCommand> {
    let order = "o[1-4]";
    prop_oneof![
        (0u64..8).prop_map(receive),
        (order, 0u64..6).prop_map(|(order, quantity)| reserve(&order, quantity)),
        order.prop_map(|order_id| StockCommand::Release { order_id }),
        order.prop_map(|order_id| StockCommand::Commit { order_id }),
    ]
}

#[test]
fn snapshots_plus_tails_equal_full_replays() {
    snapshot_property::<Stock>(proptest::collection::vec(command(), 0..30), 256);
}

proptest! {
    /// Whatever happens, received = available + reserved + committed.
    #[test]
    fn stock_is_conserved(commands in proptest::collection::vec(command(), 0..60)) {
        let state = decide_all::<Stock>(&commands).state;
        prop_assert_eq!(state.received, state.available + state.reserved_total() + state.committed);
    }
}

#[test]
fn stock_received_in_all_is_bounded_so_counts_never_wrap() {
    let state = StockState {
        received: MAX_RECEIVED - 5,
        available: MAX_RECEIVED - 5,
        ..StockState::default()
    };
    assert!(Stock::decide(&state, &receive(5)).is_ok());
    assert_eq!(
        Stock::decide(&state, &receive(6)),
        Err(StockError::TooMuchStock {
            received: MAX_RECEIVED - 5,
            max: MAX_RECEIVED
        })
    );
}
