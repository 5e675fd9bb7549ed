//! The catalog's aggregates: products, and SKU claims that keep SKUs unique across nodes. Pure
//! rules, no actors, no I/O.
//!
//! A SKU is unique because creating a product first claims its SKU in the `sku-{SKU}` stream,
//! which has one writer like every stream: of two products racing for one SKU, one claim is
//! refused, wherever the two requests arrived.

use playhouse_runtime::aggregate::{Access, Aggregate};
use serde::{Deserialize, Serialize};

use super::messages::{ProductCommand, ProductError, ProductEvent, SkuCommand, SkuError, SkuEvent};
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
        if *state != ProductState::Absent {
            return Err(ProductError::AlreadyCreated);
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

/// Marker type naming the SKU-claim aggregate kind (one per SKU).
#[derive(Debug, Clone, Copy)]
pub struct SkuClaim;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkuState {
    #[default]
    Free,
    Claimed {
        product_id: String,
        subject: String,
    },
}

impl Aggregate for SkuClaim {
    const KIND: &'static str = "sku";
    type State = SkuState;
    type Command = SkuCommand;
    type Event = SkuEvent;
    type Error = SkuError;

    fn event_type(_: &SkuEvent) -> &'static str {
        "SkuClaimed"
    }

    fn owner(state: &SkuState) -> Option<&str> {
        match state {
            SkuState::Free => None,
            SkuState::Claimed { subject, .. } => Some(subject),
        }
    }

    fn decide(state: &SkuState, command: &SkuCommand) -> Result<Vec<SkuEvent>, SkuError> {
        let SkuCommand::Claim {
            product_id,
            subject,
        } = command;
        match state {
            SkuState::Free => Ok(vec![SkuEvent::Claimed {
                product_id: product_id.clone(),
                subject: subject.clone(),
            }]),
            // The same product claiming again (a retried create) holds it already.
            SkuState::Claimed {
                product_id: holder, ..
            } if holder == product_id => Ok(Vec::new()),
            SkuState::Claimed {
                product_id: holder, ..
            } => Err(SkuError::Taken {
                product_id: holder.clone(),
            }),
        }
    }

    fn apply(state: &mut SkuState, event: &SkuEvent) {
        let SkuEvent::Claimed {
            product_id,
            subject,
        } = event;
        *state = SkuState::Claimed {
            product_id: product_id.clone(),
            subject: subject.clone(),
        };
    }
}
