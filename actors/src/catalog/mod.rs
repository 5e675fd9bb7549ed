//! Catalog: the shop's products (name, unique SKU, price in cents), readable by every reader
//! and changed only by their owner. Owns the `product-{id}` streams (a product's id is derived
//! from its SKU, which keeps SKUs unique wherever products live) and the products list read
//! model.
//!
//! [`DEF`] is the service for a node: the product host, the products projection, and the
//! routes.

mod aggregate;
pub mod http;
mod messages;
mod read_model;

#[cfg(test)]
mod tests;

pub use aggregate::{Product, ProductState, product_id_for, valid_sku};
pub use messages::{ProductCommand, ProductError, ProductEvent};
pub use read_model::{PRODUCTS, ProductView, ProductsList};

use std::sync::Arc;

use playhouse_runtime::prelude::*;

pub const SERVICE: &str = "catalog";

pub const DEF: ServiceDef = ServiceDef {
    name: SERVICE,
    start,
    reads_events_of: &[],
};

fn start(context: &ServiceContext) -> Service {
    Service::new(SERVICE)
        .host::<Product>(context)
        .projection(context, Arc::new(ProductsList))
        .routes(http::routes(
            context.aggregates(),
            context.read_models(SERVICE),
        ))
}
