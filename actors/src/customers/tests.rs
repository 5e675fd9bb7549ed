//! Customer rules and the snapshot + tail property.

use playhouse_runtime::aggregate::Aggregate;
use playhouse_runtime::testkit::{decide_all, snapshot_property};
use proptest::prelude::*;

use super::*;

fn register(name: &str, email: &str, credit_limit: i64) -> CustomerCommand {
    CustomerCommand::Register {
        name: name.into(),
        email: email.into(),
        credit_limit,
        subject: "ada".into(),
    }
}

#[test]
fn a_customer_registers_once_and_belongs_to_its_subject() {
    let decided = decide_all::<Customer>(&[
        register("Ada", "ada@example.com", 500),
        register("Ada", "ada@example.com", 500),
    ]);
    assert_eq!(decided.events.len(), 1);
    assert_eq!(decided.refusals, [CustomerError::AlreadyRegistered]);
    assert_eq!(Customer::owner(&decided.state), Some("ada"));
}

#[test]
fn every_customer_rule_has_its_refusal() {
    let unregistered = CustomerState::Unregistered;
    for (command, expected) in [
        (
            register(" ", "a@b.co", 0),
            CustomerError::InvalidName { max: 200 },
        ),
        (
            register("a\nb", "a@b.co", 0),
            CustomerError::InvalidName { max: 200 },
        ),
        (
            register("Ada", "not-an-email", 0),
            CustomerError::InvalidEmail {
                email: "not-an-email".into(),
            },
        ),
        (
            register("Ada", "a@b.co", -1),
            CustomerError::CreditLimitOutOfRange {
                credit_limit: -1,
                max: crate::money::MAX_AMOUNT,
            },
        ),
    ] {
        assert_eq!(Customer::decide(&unregistered, &command), Err(expected));
    }
}

#[test]
fn emails_are_local_at_domain() {
    for good in ["ada@example.com", "a.b+tag@mail.example.co.uk", "x@a-b.io"] {
        assert!(valid_email(good), "{good}");
    }
    for bad in [
        "",
        "ada",
        "@example.com",
        "ada@",
        "ada@example",
        "ada@@example.com",
        "ada@-example.com",
        "ada@exa mple.com",
        "a da@example.com",
        &format!("{}@example.com", "a".repeat(65)),
    ] {
        assert!(!valid_email(bad), "{bad}");
    }
}

#[test]
fn snapshots_plus_tails_equal_full_replays() {
    let command = (
        "[A-Za-z ]{0,4}",
        prop_oneof!["[a-z]{1,3}@[a-z]{1,3}\\.[a-z]{2}", "[a-z@.]{0,6}"],
        -2i64..100,
    )
        .prop_map(|(name, email, limit)| register(&name, &email, limit));
    snapshot_property::<Customer>(proptest::collection::vec(command, 0..6), 128);
}
