//! Catalog rules, the snapshot + tail property of both aggregates, and the products list.

use playhouse_runtime::aggregate::{Aggregate, CommandEnvelope};
use playhouse_runtime::bus::{read_page, rebuild_offline};
use playhouse_runtime::testkit::{
    TempStore, decide_all, snapshot_property, start_aggregate, test_settings,
};
use proptest::prelude::*;

use super::*;
use crate::money::MAX_AMOUNT;

fn create(name: &str, sku: &str, price: i64) -> ProductCommand {
    ProductCommand::Create {
        name: name.into(),
        sku: sku.into(),
        price,
        subject: "shopkeeper".into(),
    }
}

#[test]
fn a_product_is_created_once_with_its_fields() {
    let decided = decide_all::<Product>(&[create("Teapot", "TEA-1", 1999), create("Cup", "C", 5)]);
    assert_eq!(
        decided.state,
        ProductState::Listed {
            name: "Teapot".into(),
            sku: "TEA-1".into(),
            price: 1999,
            subject: "shopkeeper".into()
        }
    );
    assert_eq!(
        decided.refusals,
        [ProductError::SkuTaken {
            sku: "TEA-1".into()
        }]
    );
    assert_eq!(Product::owner(&decided.state), Some("shopkeeper"));
}

#[test]
fn every_product_rule_has_its_refusal() {
    let long = "n".repeat(201);
    for (command, expected) in [
        (create(" ", "A", 1), ProductError::EmptyName),
        (
            create(&long, "A", 1),
            ProductError::NameTooLong {
                max: 200,
                length: 201,
            },
        ),
        (
            create("x", "", 1),
            ProductError::InvalidSku { sku: "".into() },
        ),
        (
            create("x", "-A", 1),
            ProductError::InvalidSku { sku: "-A".into() },
        ),
        (
            create("x", "A B", 1),
            ProductError::InvalidSku { sku: "A B".into() },
        ),
        (
            create("x", "A", 0),
            ProductError::PriceOutOfRange {
                price: 0,
                max: MAX_AMOUNT,
            },
        ),
        (
            create("x", "A", MAX_AMOUNT + 1),
            ProductError::PriceOutOfRange {
                price: MAX_AMOUNT + 1,
                max: MAX_AMOUNT,
            },
        ),
    ] {
        assert_eq!(
            Product::decide(&ProductState::Absent, &command),
            Err(expected)
        );
    }
    assert!(valid_sku(&"A".repeat(64)) && !valid_sku(&"A".repeat(65)));
}

#[test]
fn a_sku_names_one_product_so_a_second_with_it_is_refused() {
    assert_eq!(product_id_for("TEA-1"), product_id_for("TEA-1"));
    assert_ne!(product_id_for("TEA-1"), product_id_for("TEA-2"));
    assert_ne!(product_id_for("TEA-1"), product_id_for("tea-1"));
    let decided = decide_all::<Product>(&[create("Tea", "TEA-1", 100), create("Mug", "TEA-1", 50)]);
    assert_eq!(
        decided.refusals,
        [ProductError::SkuTaken {
            sku: "TEA-1".into()
        }]
    );
    assert_eq!(decided.events.len(), 1);
}

fn product_command() -> impl Strategy<Value = ProductCommand> {
    ("[a-z ]{0,5}", "[A-Z0-9-]{0,4}", -2i64..5000)
        .prop_map(|(name, sku, price)| create(&name, &sku, price))
}

#[test]
fn snapshots_plus_tails_equal_full_replays() {
    snapshot_property::<Product>(proptest::collection::vec(product_command(), 0..8), 128);
}

#[tokio::test]
async fn the_products_list_has_every_product_in_id_order_a_page_at_a_time() {
    let temp = TempStore::new().await;
    let products = start_aggregate::<Product>(&temp.store, test_settings()).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = uuid::Uuid::now_v7().to_string();
        products
            .execute(
                &id,
                CommandEnvelope::new(create(&format!("p{n}"), &format!("S{n}"), 100 + n)),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    assert_eq!(
        rebuild_offline(&temp.store, std::sync::Arc::new(ProductsList))
            .await
            .unwrap(),
        5
    );
    let snapshot = temp.store.read_models().unwrap();
    let (first, next) = read_page::<ProductView>(&snapshot, PRODUCTS, b"", None, 3).unwrap();
    assert_eq!(
        first.iter().map(|p| &p.id).collect::<Vec<_>>(),
        ids[..3].iter().collect::<Vec<_>>()
    );
    let (rest, last) =
        read_page::<ProductView>(&snapshot, PRODUCTS, b"", next.as_deref(), 3).unwrap();
    assert_eq!(rest.iter().map(|p| p.price).collect::<Vec<_>>(), [103, 104]);
    assert_eq!(last, None);
}
