//! The catalog's aggregate: products. Pure rules, no actors, no I/O.
//!
//! A SKU is unique because a product's id is derived from its SKU ([`product_id_for`]): two
//! products with one SKU are one stream, which has one writer like every stream, so of two
//! creates racing for a SKU one is refused, wherever the two requests arrived, and there is no
//! second record (a claim) that a crash could leave behind without its product.

use playhouse_runtime::aggregate::{Access, Aggregate};
use serde::{Deserialize, Serialize};

use super::messages::{ProductCommand, ProductError, ProductEvent};
use crate::money::MAX_AMOUNT;

/// Longest product name accepted.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest SKU accepted.
pub const MAX_SKU_CHARS: usize = 64;

/// A SKU: 1 to 64 ASCII letters, digits, `.`, `_` or `-`, starting with a letter or digit.
pub fn valid_sku(sku: &str) -> bool {
    let mut bytes = sku.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && sku.len() <= MAX_SKU_CHARS
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Namespace of product ids, derived from SKUs (UUID v5).
const PRODUCT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x2f0b_9a7e_51c3_4d2e_8f60_7b1a_c4e9_0d31);

/// The id of the product with SKU `sku`: the same SKU always names the same product.
pub fn product_id_for(sku: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&PRODUCT_ID_NAMESPACE, sku.as_bytes())
}

/// Marker type naming the product aggregate kind.
#[derive(Debug, Clone, Copy)]
pub struct Product;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductState {
    #[default]
    Absent,
    Listed {
        name: String,
        sku: String,
        /// Minor units (cents).
        price: i64,
        subject: String,
    },
}

impl Aggregate for Product {
    const KIND: &'static str = "product";
    const SERVICE: &'static str = super::SERVICE;
    /// A shop's catalog: every reader sees every product.
    const ACCESS: Access = Access::PublicRead;
    type State = ProductState;
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;

    fn event_type(event: &ProductEvent) -> &'static str {
        match event {
            ProductEvent::Created { .. } => "ProductCreated",
        }
    }

    fn owner(state: &ProductState) -> Option<&str> {
        match state {
            ProductState::Absent => None,
            ProductState::Listed { subject, .. } => Some(subject),
        }
    }

    fn decide(
        state: &ProductState,
        command: &ProductCommand,
    ) -> Result<Vec<ProductEvent>, ProductError> {
        let ProductCommand::Create {
            name,
            sku,
            price,
            subject,
        } = command;
        if let ProductState::Listed { sku: taken, .. } = state {
            return Err(ProductError::SkuTaken { sku: taken.clone() });
        }
        if name.trim().is_empty() {
            return Err(ProductError::EmptyName);
        }
        let length = name.chars().count();
        if length > MAX_NAME_CHARS {
            return Err(ProductError::NameTooLong {
                max: MAX_NAME_CHARS,
                length,
            });
        }
        if !valid_sku(sku) {
            return Err(ProductError::InvalidSku { sku: sku.clone() });
        }
        if !(1..=MAX_AMOUNT).contains(price) {
            return Err(ProductError::PriceOutOfRange {
                price: *price,
                max: MAX_AMOUNT,
            });
        }
        Ok(vec![ProductEvent::Created {
            name: name.clone(),
            sku: sku.clone(),
            price: *price,
            subject: subject.clone(),
        }])
    }

    fn apply(state: &mut ProductState, event: &ProductEvent) {
        let ProductEvent::Created {
            name,
            sku,
            price,
            subject,
        } = event;
        *state = ProductState::Listed {
            name: name.clone(),
            sku: sku.clone(),
            price: *price,
            subject: subject.clone(),
        };
    }
}
