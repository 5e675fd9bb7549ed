//! The domain services this build can host, and how a node starts and routes each one.

use anyhow::bail;
use playhouse_actors::accounts;
use playhouse_runtime::aggregate::EntitySettings;
use playhouse_runtime::config::NodeConfig;
use playhouse_runtime::store::EventStore;
use playhouse_runtime::supervision::ChildSpec;
use utoipa_axum::router::OpenApiRouter;

/// Every service name a config may list.
pub const KNOWN: &[&str] = &[accounts::SERVICE];

/// Refuses a config that names a service this build does not have, naming the file.
pub fn check(config: &NodeConfig) -> anyhow::Result<()> {
    if let Some(unknown) = config
        .services
        .iter()
        .find(|s| !KNOWN.contains(&s.as_str()))
    {
        bail!(
            "{}: services: `{unknown}` is not a service of this build (known: {})",
            config.source.display(),
            KNOWN.join(", ")
        );
    }
    Ok(())
}

/// What a node runs for its services: supervision groups, and HTTP routes.
pub struct Hosted {
    pub groups: Vec<ChildSpec>,
    pub routes: OpenApiRouter,
}

pub fn host(config: &NodeConfig, store: &EventStore) -> Hosted {
    let settings = EntitySettings {
        snapshot_every: config.store.snapshot_every,
        idle_timeout: config.store.idle_timeout,
        call_timeout: config.store.command_timeout,
    };
    let mut hosted = Hosted {
        groups: Vec::new(),
        routes: OpenApiRouter::new(),
    };
    for service in &config.services {
        if service == accounts::SERVICE {
            let handle = accounts::handle(store.clone(), settings.call_timeout);
            hosted
                .groups
                .push(accounts::child_spec(&handle, settings.clone()));
            hosted.routes = hosted.routes.merge(accounts::http::routes(handle));
        }
    }
    hosted
}
