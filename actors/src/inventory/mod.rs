//! Inventory: the stock of each product (stream `inventory-{product_id}`): received goods,
//! reservations held by orders, and what confirmed orders took. Readable by every reader;
//! goods are received by the product's owner; orders reserve, release and commit through the
//! order saga.
//!
//! [`DEF`] is the service for a node: the stock host and the routes.

mod aggregate;
pub mod http;
mod messages;

#[cfg(test)]
mod tests;

pub use aggregate::{MAX_QUANTITY, MAX_RECEIVED, Stock, StockState};
pub use messages::{StockCommand, StockError, StockEvent};

use playhouse_runtime::prelude::*;

use crate::catalog::Product;

pub const SERVICE: &str = "inventory";

pub const DEF: ServiceDef = ServiceDef {
    name: SERVICE,
    start,
    reads_events_of: &[],
};

fn start(context: &ServiceContext) -> Service {
    Service::new(SERVICE)
        .host::<Stock>(context)
        .routes(http::routes(
            context.aggregates(),
            context.aggregates::<Product>(),
        ))
}
