//! What crosses an actor or node boundary for the catalog: product commands, events and
//! refusals. The service's only serializable types.

use playhouse_runtime::aggregate::{DomainError, Refusal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductCommand {
    /// `subject` is the token subject creating it, to whom the product belongs.
    Create {
        name: String,
        sku: String,
        price: i64,
        subject: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductEvent {
    Created {
        name: String,
        sku: String,
        price: i64,
        subject: String,
    },
}

/// Why a product refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ProductError {
    #[error("name must not be empty")]
    EmptyName,
    #[error("name must be at most {max} characters, got {length}")]
    NameTooLong { max: usize, length: usize },
    #[error(
        "sku `{sku}` must be 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit"
    )]
    InvalidSku { sku: String },
    #[error("price must be from 1 to {max} minor units, got {price}")]
    PriceOutOfRange { price: i64, max: i64 },
    /// The product with this SKU exists (a product's id is derived from its SKU).
    #[error("another product already has sku `{sku}`")]
    SkuTaken { sku: String },
}

impl DomainError for ProductError {
    fn refusal(&self) -> Refusal {
        match self {
            ProductError::EmptyName | ProductError::NameTooLong { .. } => {
                Refusal::invalid_field("name")
            }
            ProductError::InvalidSku { .. } => Refusal::invalid_field("sku"),
            ProductError::PriceOutOfRange { .. } => Refusal::invalid_field("price"),
            ProductError::SkuTaken { .. } => Refusal {
                field: Some("sku"),
                ..Refusal::conflict("sku-taken", "Another product has this SKU")
            },
        }
    }
}
