//! Payment rules and the snapshot + tail property.

use playhouse_runtime::aggregate::Aggregate;
use playhouse_runtime::testkit::{decide_all, snapshot_property};
use proptest::prelude::*;

use super::*;

fn authorize(amount: i64, credit_limit: i64) -> PaymentCommand {
    PaymentCommand::Authorize {
        order_id: "o1".into(),
        customer_id: "c1".into(),
        amount,
        credit_limit,
        subject: "ada".into(),
    }
}

fn refund() -> PaymentCommand {
    PaymentCommand::Refund {
        reason: "order cancelled".into(),
    }
}

fn status(commands: &[PaymentCommand]) -> Option<PaymentStatus> {
    match decide_all::<Payment>(commands).state {
        PaymentState::Decided { status, .. } => Some(status),
        PaymentState::None => None,
    }
}

#[test]
fn up_to_the_credit_limit_is_authorized_above_it_declined_with_a_reason() {
    assert_eq!(
        status(&[authorize(500, 500)]),
        Some(PaymentStatus::Authorized)
    );
    let declined = decide_all::<Payment>(&[authorize(501, 500)]).state;
    let PaymentState::Decided { status, reason, .. } = &declined else {
        panic!("undecided");
    };
    assert_eq!(*status, PaymentStatus::Declined);
    assert_eq!(
        reason.as_deref(),
        Some("amount 501 is over the credit limit 500")
    );
    assert_eq!(Payment::owner(&declined), Some("ada"));
}

#[test]
fn only_an_authorized_payment_is_refunded_and_once() {
    assert_eq!(
        status(&[authorize(1, 5), refund()]),
        Some(PaymentStatus::Refunded)
    );
    let refused = |commands: &[PaymentCommand]| decide_all::<Payment>(commands).refusals;
    assert_eq!(
        refused(&[authorize(9, 5), refund()]),
        [PaymentError::NotAuthorized]
    );
    assert_eq!(
        refused(&[authorize(1, 5), refund(), refund()]),
        [PaymentError::AlreadyRefunded]
    );
    assert_eq!(refused(&[refund()]), [PaymentError::NoPayment]);
    assert_eq!(
        refused(&[authorize(1, 5), authorize(1, 5)]),
        [PaymentError::AlreadyDecided]
    );
    assert_eq!(
        refused(&[authorize(0, 5)]),
        [PaymentError::AmountOutOfRange {
            amount: 0,
            max: crate::money::MAX_AMOUNT
        }]
    );
}

#[test]
fn an_orders_payment_id_is_derived_from_the_order() {
    assert_eq!(payment_id_for("o1"), payment_id_for("o1"));
    assert_ne!(payment_id_for("o1"), payment_id_for("o2"));
}

#[test]
fn snapshots_plus_tails_equal_full_replays() {
    let command = prop_oneof![
        (-1i64..10, 0i64..10).prop_map(|(amount, limit)| authorize(amount, limit)),
        Just(refund()),
    ];
    snapshot_property::<Payment>(proptest::collection::vec(command, 0..6), 256);
}
