//! Accounts: bank accounts holding integer minor units (cents). The service owns every
//! `account-{id}` stream: opening, credits and debits, with no overdraft. An account belongs to
//! the token subject that opened it.
//!
//! Transfers between accounts are sagas ([`transfers`]).
//!
//! [`DEF`] is the service for a node: the account host, the transfer saga's supervisor, and
//! the routes.

mod aggregate;
pub mod http;
mod messages;
pub mod transfers;

#[cfg(test)]
mod tests;

pub use aggregate::{Account, AccountState, MAX_OWNER_CHARS};
pub use messages::{AccountCommand, AccountError, AccountEvent};

use playhouse_runtime::prelude::*;

/// The service's name in configs, metrics and the supervision tree.
pub const SERVICE: &str = "accounts";

/// The accounts service.
pub const DEF: ServiceDef = ServiceDef {
    name: SERVICE,
    start,
    reads_events_of: &[],
};

fn start(context: &ServiceContext) -> Service {
    let transfers = context.sagas(transfers::TransferSaga {
        accounts: context.aggregates(),
    });
    Service::new(SERVICE)
        .host::<Account>(context)
        .saga(&transfers)
        .routes(http::routes(context.aggregates()))
        .routes(transfers::http::routes(transfers, context.aggregates()))
}
