//! Customers: who buys (name, email, credit limit). Owns the `customer-{id}` streams. A
//! customer belongs to the token subject that registered it, and so do its orders, payments and
//! notifications.
//!
//! [`DEF`] is the service for a node: the customer host and the routes.

mod aggregate;
pub mod http;
mod messages;

#[cfg(test)]
mod tests;

pub use aggregate::{Customer, CustomerState, valid_email};
pub use messages::{CustomerCommand, CustomerError, CustomerEvent};

use playhouse_runtime::prelude::*;

pub const SERVICE: &str = "customers";

pub const DEF: ServiceDef = ServiceDef {
    name: SERVICE,
    start,
    reads_events_of: &[],
};

fn start(context: &ServiceContext) -> Service {
    Service::new(SERVICE)
        .host::<Customer>(context)
        .routes(http::routes(context.aggregates()))
}
