//! Payments: one per order, authorized against the customer's credit limit or declined with a
//! reason, refunded when the order is cancelled. Owns the `payment-{id}` streams (an order's
//! payment id is derived from the order id). A payment belongs to its customer's subject.
//!
//! [`DEF`] is the service for a node: the payment host and the route.

mod aggregate;
pub mod http;
mod messages;

#[cfg(test)]
mod tests;

pub use aggregate::{Payment, PaymentState, PaymentStatus, payment_id_for};
pub use messages::{PaymentCommand, PaymentError, PaymentEvent};

use playhouse_runtime::prelude::*;

pub const SERVICE: &str = "payments";

pub const DEF: ServiceDef = ServiceDef {
    name: SERVICE,
    start,
    reads_events_of: &[],
};

fn start(context: &ServiceContext) -> Service {
    Service::new(SERVICE)
        .host::<Payment>(context)
        .routes(http::routes(context.aggregates()))
}
