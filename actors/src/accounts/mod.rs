//! Accounts: bank accounts holding integer minor units (cents). The service owns every
//! `account-{id}` stream: opening, credits and debits, with no overdraft.
//!
//! [`child_spec`] is the service's group for a node's supervision tree: a one-for-one
//! supervisor named `accounts` over the account host, whose entities are the accounts.

mod aggregate;
pub mod http;
mod messages;

#[cfg(test)]
mod tests;

pub use aggregate::{Account, AccountState, MAX_AMOUNT, MAX_OWNER_CHARS};
pub use messages::{AccountCommand, AccountError, AccountEvent};

use std::time::Duration;

use playhouse_runtime::aggregate::{Aggregates, EntitySettings};
use playhouse_runtime::store::EventStore;
use playhouse_runtime::supervision::{
    Backoff, ChildSpec, Intensity, Strategy, Supervisor, SupervisorSpec,
};

/// The service's name in configs, metrics and the supervision tree.
pub const SERVICE: &str = "accounts";
/// The registered name of the accounts host (one per node).
pub const HOST_NAME: &str = "accounts-host";

/// Crashing accounts are restarted one by one; only a storm of crashes fails the host.
const HOST_INTENSITY: Intensity = Intensity {
    max_restarts: 100,
    within: Duration::from_secs(10),
};

fn spec(
    supervisor_name: &str,
    accounts: &Aggregates<Account>,
    settings: EntitySettings,
) -> SupervisorSpec {
    SupervisorSpec {
        name: supervisor_name.to_owned(),
        strategy: Strategy::OneForOne,
        intensity: Intensity::default(),
        backoff: Backoff::default(),
        children: vec![accounts.child_spec(settings, HOST_INTENSITY)],
    }
}

/// The handle to send account commands with, valid across restarts of the group.
pub fn handle(store: EventStore, call_timeout: Duration) -> Aggregates<Account> {
    Aggregates::new(HOST_NAME, store, call_timeout)
}

/// The accounts group for a node's root supervisor, serving the aggregates of `accounts`.
pub fn child_spec(accounts: &Aggregates<Account>, settings: EntitySettings) -> ChildSpec {
    Supervisor::child_spec(spec(SERVICE, accounts, settings))
}
