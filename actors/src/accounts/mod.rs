//! Accounts: bank accounts holding integer minor units (cents). The service owns every
//! `account-{id}` stream: opening, credits and debits, with no overdraft.
//!
//! [`start`] spawns the service's group: a one-for-one supervisor named `accounts` over the
//! account host, whose entities are the accounts themselves.

mod aggregate;

#[cfg(test)]
mod tests;

pub use aggregate::{Account, AccountCommand, AccountError, AccountEvent, AccountState};

use playhouse_runtime::actor::{ActorCell, ActorRef, SpawnErr};
use playhouse_runtime::aggregate::{Aggregates, EntitySettings};
use playhouse_runtime::store::EventStore;
use playhouse_runtime::supervision::{
    Backoff, Intensity, Strategy, Supervisor, SupervisorMsg, SupervisorSpec,
};

/// The registered name of the accounts host (one per node).
pub const HOST_NAME: &str = "accounts-host";

/// The running accounts service: its supervisor and the handle to send commands with.
#[derive(Debug, Clone)]
pub struct AccountsService {
    pub supervisor: ActorRef<SupervisorMsg>,
    pub accounts: Aggregates<Account>,
}

/// Spawns the accounts group under `parent` (or unsupervised when `None`).
pub async fn start(
    store: EventStore,
    settings: EntitySettings,
    parent: Option<ActorCell>,
) -> Result<AccountsService, SpawnErr> {
    start_named("accounts", HOST_NAME, store, settings, parent).await
}

/// Like [`start`] with explicit registry names, so that tests can run several in one process.
pub async fn start_named(
    supervisor_name: &str,
    host_name: &str,
    store: EventStore,
    settings: EntitySettings,
    parent: Option<ActorCell>,
) -> Result<AccountsService, SpawnErr> {
    let timeout = settings.call_timeout;
    let spec = SupervisorSpec {
        name: supervisor_name.to_owned(),
        strategy: Strategy::OneForOne,
        intensity: Intensity::default(),
        backoff: Backoff::default(),
        children: vec![Aggregates::<Account>::child_spec(
            host_name,
            store.clone(),
            settings,
            // Crashing accounts are restarted one by one; only a storm of crashes fails the host.
            Intensity {
                max_restarts: 100,
                within: std::time::Duration::from_secs(10),
            },
        )],
    };
    let supervisor = Supervisor::start(spec, parent).await?;
    Ok(AccountsService {
        supervisor,
        accounts: Aggregates::new(host_name, store, timeout),
    })
}
