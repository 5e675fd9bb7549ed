//! Notifications: what each customer is told about its orders and payments. A read model only
//! (no aggregate of its own): a projection of order and payment events, by customer. A
//! customer's notifications belong to that customer's subject.
//!
//! [`DEF`] is the service for a node: the notifications projection and its route.

pub mod http;
mod read_model;

#[cfg(test)]
mod tests;

pub use read_model::{NOTIFICATIONS, Notification, NotificationsByCustomer};

use std::sync::Arc;

use playhouse_runtime::prelude::*;

use crate::customers::Customer;

pub const SERVICE: &str = "notifications";

pub const DEF: ServiceDef = ServiceDef {
    name: SERVICE,
    start,
    reads_events_of: &[crate::orders::SERVICE, crate::payments::SERVICE],
};

fn start(context: &ServiceContext) -> Service {
    Service::new(SERVICE)
        .projection(context, Arc::new(NotificationsByCustomer))
        .routes(http::routes(
            context.aggregates::<Customer>(),
            context.read_models(SERVICE),
        ))
}
