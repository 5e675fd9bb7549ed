//! playhouse-actors: the domain services of the shop-and-bank system, each a folder of the same
//! shape (`mod.rs` defines the service, `aggregate.rs` is pure logic, `messages.rs` what
//! crosses boundaries, `http.rs` the routes, `tests.rs`), built only on the runtime's traits.

pub mod accounts;
pub mod catalog;
pub mod customers;
pub mod inventory;
mod money;
pub mod notifications;
pub mod orders;
pub mod payments;
mod text;

use playhouse_runtime::service::ServiceDef;

/// Every service of this build: the names a config may list, and how each one starts.
pub const SERVICES: &[ServiceDef] = &[
    accounts::DEF,
    catalog::DEF,
    customers::DEF,
    inventory::DEF,
    orders::DEF,
    payments::DEF,
    notifications::DEF,
];
