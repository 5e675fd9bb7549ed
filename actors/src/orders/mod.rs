//! Orders: what a customer buys (lines at the catalog's price when placed, a total) and where
//! the order stands (pending, confirmed, or cancelled with a reason). Owns the `order-{id}`
//! streams and the orders-by-customer read model. An order belongs to its customer's subject.
//!
//! [`DEF`] is the service for a node: the order host, the orders-by-customer projection, the
//! order saga's supervisor, and the routes.

mod aggregate;
pub mod http;
mod messages;
mod read_model;
mod saga;
mod versions;

#[cfg(test)]
mod tests;

pub use aggregate::{MAX_LINE_QUANTITY, MAX_LINES, Order, OrderState, OrderStatus, total_of};
pub use http::order_id_for;
pub use messages::{OrderCommand, OrderError, OrderEvent, OrderLine, PlacedLine};
pub use read_model::{ORDERS_BY_CUSTOMER, OrderSummary, OrdersByCustomer};
pub use saga::{OrderSaga, OrderSagaInput};

use std::sync::Arc;

use playhouse_runtime::prelude::*;

use crate::catalog::Product;
use crate::customers::Customer;

pub const SERVICE: &str = "orders";

pub const DEF: ServiceDef = ServiceDef {
    name: SERVICE,
    start,
    reads_events_of: &[],
};

fn start(context: &ServiceContext) -> Service {
    let sagas = context.sagas(OrderSaga {
        orders: context.aggregates(),
        stock: context.aggregates(),
        payments: context.aggregates(),
        customers: context.aggregates(),
    });
    Service::new(SERVICE)
        .host::<Order>(context)
        .projection(context, Arc::new(OrdersByCustomer))
        .saga(&sagas)
        .routes(http::routes(
            context.aggregates(),
            context.aggregates::<Customer>(),
            context.aggregates::<Product>(),
            sagas,
            context.read_models(SERVICE),
        ))
}
