//! A node's data directory: whose it is (checked before anything is opened), the store's files
//! in it, and rebuilding a read model offline.

use crate::bus::Bus;
use crate::config::NodeConfig;
use crate::replication::{Groups, Journal, RaftLogs, RaftSettings};
use crate::service::ServiceDef;
use crate::store::{Disk, EventStore, GroupCommitOptions, StoreOptions};

/// The store's log file in a data directory (its index goes beside it).
pub const STORE_FILE: &str = "events.redb";

/// The Raft log file of every partition group the node runs.
pub const RAFT_LOG_FILE: &str = "raft.redb";

/// Whose a data directory is, once checked (or claimed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A node alone's, or a direct cluster member's: placed by its config's member list.
    Placement,
    /// A member's of the replicated cluster with this id.
    Replicated(u64),
    /// A node joining a replicated cluster, not admitted yet: claimed once it is.
    Joining,
}

/// The settings every member of `config`'s replicated cluster must share.
pub fn shared_settings(config: &NodeConfig) -> crate::cluster::identity::SharedSettings {
    crate::cluster::identity::SharedSettings {
        partitions: config.cluster.partitions,
        replication_factor: config.cluster.replication_factor,
    }
}

/// Checks that the data directory is this node's, claiming it when it is new (but for a
/// node joining a cluster, which claims it once admitted).
fn claim_directory(config: &NodeConfig) -> Result<Claim, String> {
    use crate::cluster::identity;
    let founding = crate::placement::Placement::new(&config.cluster).fingerprint();
    let (dir, node) = (&config.data_dir, config.node_name.as_str());
    if !(config.cluster.replicated && config.cluster.has_peers()) {
        identity::claim(dir, node, founding).map_err(|e| format!("{e:#}"))?;
        return Ok(Claim::Placement);
    }
    let settings = shared_settings(config);
    match identity::replicated_cluster(dir, node, settings, founding)
        .map_err(|e| format!("{e:#}"))?
    {
        Some(id) => Ok(Claim::Replicated(id)),
        None if config.cluster.join => Ok(Claim::Joining),
        None => {
            identity::claim_replicated(dir, node, founding, settings)
                .map_err(|e| format!("{e:#}"))?;
            Ok(Claim::Replicated(founding))
        }
    }
}

/// Checks that the data directory is this node's (claiming it if new), then opens its store
/// with the config's settings over `options` (which may name a simulated disk).
pub async fn open_store(
    config: &NodeConfig,
    options: StoreOptions,
) -> Result<(EventStore, Claim), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("data_dir: cannot create {}: {e}", config.data_dir.display()))?;
    let identity = config
        .data_dir
        .join(crate::cluster::identity::IDENTITY_FILE);
    let claimed_before = identity.exists();
    let claim = claim_directory(config)?;
    let path = config.data_dir.join(STORE_FILE);
    // A directory that was claimed holds a store: without one, its events were lost, and
    // starting empty would serve as if they never existed.
    if claimed_before && !options.disk.holds_data(&path) {
        return Err(format!(
            "{} says this data directory holds node {}'s data, but {} is missing or empty: its \
             events were lost or moved. Restore the data directory from a backup; to start this \
             node afresh on purpose, empty the directory (identity.toml too)",
            identity.display(),
            config.node_name,
            path.display()
        ));
    }
    let store = EventStore::open(
        &path,
        StoreOptions {
            group_commit: GroupCommitOptions {
                max_batch_events: config.store.max_batch_events,
                max_linger: config.store.max_linger,
                ..options.group_commit
            },
            cache_size_bytes: Some(config.store.cache_bytes),
            min_free_bytes: config.store.min_free_bytes,
            ..options
        },
    )
    .await
    .map_err(|e| format!("opening the store {}: {e}", path.display()))?;
    Ok((store, claim))
}

/// The partition groups of a node alone, each a group of one over `store`, leading: what its
/// aggregates and sagas write through.
pub async fn start_groups_alone(
    config: &NodeConfig,
    store: &EventStore,
    disk: Disk,
) -> Result<(Groups, Journal), String> {
    let settings = RaftSettings {
        snapshot_every: config.cluster.raft_snapshot_every,
        ..RaftSettings::alone()
    };
    let groups = open_groups(config, store, disk, None, &settings).await?;
    groups
        .start_alone(config.cluster.partitions)
        .await
        .map_err(|e| format!("starting the partition groups: {e}"))?;
    Ok(journal_of(config, groups))
}

/// The partition groups a member of a replicated cluster holds, starting (once its peers have
/// said whether its directory was rolled back; they elect leaders and are set up the first
/// time as their replicas come up): what its aggregates and sagas write through.
pub async fn start_groups_in_cluster(
    config: &NodeConfig,
    store: &EventStore,
    disk: Disk,
    cluster: &crate::cluster::Cluster,
) -> Result<(Groups, Journal), String> {
    // A member that formed the cluster sets up the groups its founding placement gives it
    // first; one that joined later never sets a group up.
    let founding =
        (!config.cluster.join).then(|| crate::placement::Placement::new(&config.cluster));
    let groups = open_groups(
        config,
        store,
        disk,
        Some(cluster.clone()),
        &RaftSettings {
            snapshot_every: config.cluster.raft_snapshot_every,
            max_moves: config.cluster.max_moves as usize,
            ..RaftSettings::default()
        },
    )
    .await?;
    groups.start_in_cluster(founding);
    Ok(journal_of(config, groups))
}

/// The node's groups over its Raft log file, none running yet.
async fn open_groups(
    config: &NodeConfig,
    store: &EventStore,
    disk: Disk,
    cluster: Option<crate::cluster::Cluster>,
    settings: &RaftSettings,
) -> Result<Groups, String> {
    let path = config.data_dir.join(RAFT_LOG_FILE);
    let logs = RaftLogs::open(&path, disk)
        .await
        .map_err(|e| format!("opening the Raft log {}: {e}", path.display()))?;
    let incarnation = logs
        .incarnation()
        .await
        .map_err(|e| format!("reading the Raft log {}: {e}", path.display()))?;
    Groups::new(
        &config.node_name,
        incarnation,
        cluster,
        store.clone(),
        logs,
        settings,
        crate::replication::PartitionLayout {
            partitions: config.cluster.partitions,
            tables: crate::saga::replicated_tables().into(),
        },
    )
}

fn journal_of(config: &NodeConfig, groups: Groups) -> (Groups, Journal) {
    let journal = Journal::Replicated {
        groups: groups.clone(),
        partitions: config.cluster.partitions,
    };
    (groups, journal)
}

/// On a stopped node's store: empties projection `name` and applies the whole log to it
/// again. Answers how many log events it read.
pub async fn rebuild_projection(
    config: &NodeConfig,
    services: &[ServiceDef],
    name: &str,
) -> Result<u64, String> {
    let config = &super::prepare(config.clone(), services)?;
    let (store, _) = open_store(config, StoreOptions::default()).await.map_err(|e| {
        format!(
            "{e} (is the node still running? Stop it first, or use POST /admin/projections/{{name}}/rebuild)"
        )
    })?;
    let bus = Bus::new(store.clone());
    // An offline rebuild writes no aggregate: the store serves as the journal.
    let journal = Journal::Direct(store.clone());
    let hosted = super::host(config, services, &store, &journal, &bus, None)?;
    let Some(projection) = hosted.projections.iter().find(|p| p.name() == name) else {
        let known: Vec<&str> = hosted.projections.iter().map(|p| p.name()).collect();
        return Err(format!(
            "no projection named `{name}` in this node's services (known: {})",
            known.join(", ")
        ));
    };
    let events = crate::bus::rebuild_offline(&store, projection.clone())
        .await
        .map_err(|e| format!("rebuilding {name}: {e}"))?;
    store
        .close()
        .await
        .map_err(|e| format!("closing the store: {e}"))?;
    Ok(events)
}
