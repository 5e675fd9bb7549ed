//! Which of a build's services a node hosts, checked against its config and started from the
//! build's one list of services: their supervision groups, routes and projections.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::aggregate::EntitySettings;
use crate::bus::{Bus, Projection};
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::edge::Routes;
use crate::service::{ServiceContext, ServiceDef};
use crate::store::EventStore;
use crate::supervision::ChildSpec;

/// Refuses a config that names a service not among `services` (for this node or any member),
/// or that leaves a read model without the events it reads; the error names the file and the
/// key.
pub fn check(config: &NodeConfig, services: &[ServiceDef]) -> Result<(), String> {
    let known = |name: &String| services.iter().any(|service| service.name == name.as_str());
    let members = config
        .cluster
        .members
        .iter()
        .enumerate()
        .flat_map(|(index, member)| {
            member
                .services
                .iter()
                .map(move |name| (format!("cluster.members[{index}].services"), name))
        });
    let listed = config
        .services
        .iter()
        .map(|name| ("services".to_owned(), name))
        .chain(members);
    if let Some((key, unknown)) = listed.into_iter().find(|(_, name)| !known(name)) {
        return Err(format!(
            "{}: {key}: `{unknown}` is not a service of this build (known: {})",
            config.source.display(),
            services
                .iter()
                .map(|service| service.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    check_read_models_see_their_events(config, services)
}

/// In a cluster, a service whose projections read other services' events must run on every
/// member hosting those services: a projection sees only its own node's log, so a member
/// without it would leave its events out of every list.
fn check_read_models_see_their_events(
    config: &NodeConfig,
    services: &[ServiceDef],
) -> Result<(), String> {
    let members = &config.cluster.members;
    for reader in services {
        let hosted_somewhere = members
            .iter()
            .any(|member| member.services.iter().any(|s| s == reader.name));
        if !hosted_somewhere {
            continue;
        }
        for (index, member) in members.iter().enumerate() {
            let hosts = |name: &str| member.services.iter().any(|s| s == name);
            if let Some(source) = reader.reads_events_of.iter().find(|source| hosts(source))
                && !hosts(reader.name)
            {
                return Err(format!(
                    "{}: cluster.members[{index}] ({}) hosts {source} but not {reader}, whose read models read {source}'s events; a read model sees only its own node's log, so add \"{reader}\" to its services (it must run beside {})",
                    config.source.display(),
                    member.name,
                    reader.reads_events_of.join(" and "),
                    reader = reader.name,
                ));
            }
        }
    }
    Ok(())
}

/// What a node runs for its services: supervision groups, HTTP routes, projections.
pub struct Hosted {
    pub groups: Vec<ChildSpec>,
    pub routes: Routes,
    pub projections: Vec<Arc<dyn Projection>>,
    /// Aggregate kind -> the service hosting it.
    pub services_of_kinds: BTreeMap<String, String>,
}

impl std::fmt::Debug for Hosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted")
            .field("groups", &self.groups)
            .field("services_of_kinds", &self.services_of_kinds)
            .finish_non_exhaustive()
    }
}

/// Makes (as specs: nothing runs until a supervisor starts them) the services of `services`
/// that `config` lists. Fails if their projections cannot run side by side (a bug in a
/// service).
pub fn host(
    config: &NodeConfig,
    services: &[ServiceDef],
    store: &EventStore,
    bus: &Bus,
    cluster: Option<Cluster>,
) -> Result<Hosted, String> {
    let settings = EntitySettings {
        snapshot_every: config.store.snapshot_every,
        idle_timeout: config.store.idle_timeout,
        call_timeout: config.store.command_timeout,
    };
    let context = ServiceContext::new(store.clone(), settings, bus.clone()).in_cluster(cluster);
    let mut hosted = Hosted {
        groups: Vec::new(),
        routes: Routes::new(),
        projections: Vec::new(),
        services_of_kinds: BTreeMap::new(),
    };
    for definition in services
        .iter()
        .filter(|service| config.services.iter().any(|name| name == service.name))
    {
        let service = (definition.start)(&context);
        hosted.groups.push(service.group());
        hosted.routes = hosted.routes.merge(service.routes);
        hosted.projections.extend(service.projections);
        for kind in service.aggregate_kinds {
            hosted
                .services_of_kinds
                .insert(kind.to_owned(), service.name.to_owned());
        }
    }
    crate::bus::check_projections(&hosted.projections)
        .map_err(|error| format!("the services' projections clash: {error}"))?;
    Ok(hosted)
}
