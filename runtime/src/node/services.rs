//! Which of a build's services a node hosts, checked against its config and started from the
//! build's one list of services: their supervision groups, routes and projections.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::aggregate::EntitySettings;
use crate::bus::{Bus, Projection};
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::edge::Routes;
use crate::replication::Journal;
use crate::service::{ServiceContext, ServiceDef};
use crate::store::EventStore;
use crate::supervision::ChildSpec;

/// `config` made ready to run with the build's `services`: a list left out means every one of
/// them (a node's own list, when left out, is its member entry's in a cluster), then checked
/// (see [`check`]).
pub fn prepare(mut config: NodeConfig, services: &[ServiceDef]) -> Result<NodeConfig, String> {
    let every: Vec<String> = services.iter().map(|s| s.name.to_owned()).collect();
    if config.services.is_empty() {
        let entry = config
            .cluster
            .members
            .iter()
            .find(|member| member.name == config.node_name);
        config.services = match entry {
            Some(member) if !member.services.is_empty() => member.services.clone(),
            _ => every.clone(),
        };
    }
    for member in &mut config.cluster.members {
        if member.services.is_empty() {
            member.services = every.clone();
        }
    }
    check(&config, services)?;
    Ok(config)
}

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
    check_every_member_hosts_everything_when_replicated(config, services)?;
    check_read_models_see_their_events(config, services)
}

/// With replication any member may come to lead any partition, which every service shares, so
/// every member runs every service: a list that leaves one out is refused.
fn check_every_member_hosts_everything_when_replicated(
    config: &NodeConfig,
    services: &[ServiceDef],
) -> Result<(), String> {
    if !config.cluster.replicated || !config.cluster.has_peers() {
        return Ok(());
    }
    let lists = std::iter::once(("services".to_owned(), &config.services)).chain(
        config
            .cluster
            .members
            .iter()
            .enumerate()
            .map(|(index, member)| {
                (
                    format!("cluster.members[{index}].services"),
                    &member.services,
                )
            }),
    );
    for (key, list) in lists {
        if let Some(missing) = services
            .iter()
            .find(|service| !list.iter().any(|name| name == service.name))
        {
            return Err(format!(
                "{}: {key} leaves out `{}`: with store.journal = \"raft\" every member may lead any partition, so every member runs every service; remove the list (all services) or name them all",
                config.source.display(),
                missing.name,
            ));
        }
    }
    Ok(())
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
    journal: &Journal,
    bus: &Bus,
    cluster: Option<Cluster>,
) -> Result<Hosted, String> {
    let settings = EntitySettings {
        snapshot_every: config.store.snapshot_every,
        idle_timeout: config.store.idle_timeout,
        call_timeout: config.store.command_timeout,
    };
    let context = ServiceContext::new(store.clone(), settings, bus.clone())
        .with_partitions(config.cluster.partitions)
        .with_journal(journal.clone())
        .in_cluster(cluster);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Service, ServiceContext};

    fn nothing(_: &ServiceContext) -> Service {
        Service::new("unused")
    }

    const BUILD: &[ServiceDef] = &[
        ServiceDef {
            name: "ledger",
            start: nothing,
            reads_events_of: &[],
        },
        ServiceDef {
            name: "mail",
            start: nothing,
            reads_events_of: &[],
        },
    ];

    fn config(text: &str) -> NodeConfig {
        let text = format!(
            "environment = \"development\"\nnode_name = \"a\"\n{text}\n[auth]\nissuer = \"i\"\naudience = \"a\"\ndev_key = \"a-development-key-of-some-length\"\n"
        );
        NodeConfig::parse(std::path::Path::new("t.toml"), &text, Vec::new()).unwrap()
    }

    #[test]
    fn a_list_left_out_means_every_service_of_the_build() {
        let alone = prepare(config(""), BUILD).unwrap();
        assert_eq!(alone.services, ["ledger", "mail"]);
        let cluster = "[cluster]\ndev_cookie = \"a-cluster-cookie-of-length\"\nmembers = [\n{ name = \"a\", address = \"a:1\" },\n{ name = \"b\", address = \"b:1\", services = [\"mail\"] }]\n";
        let clustered = prepare(config(cluster), BUILD).unwrap();
        assert_eq!(clustered.services, ["ledger", "mail"]);
        assert_eq!(clustered.cluster.members[0].services, ["ledger", "mail"]);
        assert_eq!(clustered.cluster.members[1].services, ["mail"]);
    }

    #[test]
    fn a_node_left_out_hosts_what_its_member_entry_lists_and_an_unknown_name_is_refused() {
        let cluster = "[cluster]\ndev_cookie = \"a-cluster-cookie-of-length\"\nmembers = [\n{ name = \"a\", address = \"a:1\", services = [\"mail\"] },\n{ name = \"b\", address = \"b:1\" }]\n";
        assert_eq!(prepare(config(cluster), BUILD).unwrap().services, ["mail"]);
        let error = prepare(config("services = [\"ledger\", \"post\"]"), BUILD).unwrap_err();
        assert!(
            error.contains("`post` is not a service of this build"),
            "{error}"
        );
    }

    #[test]
    fn with_raft_every_member_runs_every_service_and_the_factor_is_positive() {
        let members = |second: &str| {
            format!(
                "[store]\njournal = \"raft\"\n[cluster]\ndev_cookie = \"a-cluster-cookie-of-length\"\nmembers = [\n{{ name = \"a\", address = \"a:1\" }},\n{{ name = \"b\", address = \"b:1\"{second} }}]\n"
            )
        };
        let replicated = prepare(config(&members("")), BUILD).unwrap();
        assert!(replicated.cluster.replicated);
        assert_eq!(replicated.cluster.replication_factor, 3);
        let error = prepare(config(&members(", services = [\"mail\"]")), BUILD).unwrap_err();
        assert!(
            error.contains("cluster.members[1].services leaves out `ledger`"),
            "{error}"
        );
        // More members than the factor: each partition on three of the four (a member learns
        // who leads the partitions it lacks from the others).
        let four = "[store]\njournal = \"raft\"\n[cluster]\nreplication_factor = 3\ndev_cookie = \"a-cluster-cookie-of-length\"\nmembers = [\n{ name = \"a\", address = \"a:1\" },\n{ name = \"b\", address = \"b:1\" },\n{ name = \"c\", address = \"c:1\" },\n{ name = \"d\", address = \"d:1\" }]\n";
        let four = prepare(config(four), BUILD).unwrap();
        assert_eq!(four.cluster.replication_factor, 3);
        // Without raft the same lists are fine: each partition has one owner among the hosts.
        let direct = members(", services = [\"mail\"]")
            .replace("journal = \"raft\"", "journal = \"direct\"");
        prepare(config(&direct), BUILD).unwrap();
        let text = "environment = \"development\"\nnode_name = \"a\"\n[cluster]\nreplication_factor = 0\n[auth]\nissuer = \"i\"\naudience = \"a\"\ndev_key = \"a-development-key-of-some-length\"\n";
        let error = NodeConfig::parse(std::path::Path::new("t.toml"), text, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("cluster.replication_factor"), "{error}");
    }
}
