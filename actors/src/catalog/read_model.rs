//! The products list: every product, in id order, for `GET /api/v1/products`.

use playhouse_runtime::bus::{self, key};
use playhouse_runtime::prelude::*;
use playhouse_runtime::store::RecordedEvent;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Product, ProductEvent};

/// The projection's name, and its table's.
pub const PRODUCTS: &str = "products";

/// A product as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub id: String,
    pub name: String,
    pub sku: String,
    /// Price in minor units (cents).
    pub price: i64,
}

/// Keeps the products table: one entry per created product, keyed by id.
#[derive(Debug)]
pub struct ProductsList;

impl Projection for ProductsList {
    fn name(&self) -> &'static str {
        PRODUCTS
    }

    fn tables(&self) -> &'static [&'static str] {
        &[PRODUCTS]
    }

    fn apply(&self, event: &RecordedEvent, tables: &mut Tables<'_>) -> Result<(), ProjectionError> {
        let Some(delivered) = bus::decode::<Product>(event)? else {
            return Ok(());
        };
        let ProductEvent::Created {
            name, sku, price, ..
        } = delivered.event;
        let view = ProductView {
            id: delivered.id,
            name,
            sku,
            price,
        };
        tables.put(PRODUCTS, key(&[&view.id]), &view)
    }
}
