//! `GET /admin/cluster` (admin role): this node, whether it serves its partitions, and every
//! member as it sees it, itself included (status, last heartbeat, round trip, services,
//! partitions), in the shape `/admin/overview` lists them; with replication, each partition
//! group this node holds (leader, term, replicas and their lag, the last move of the lead),
//! and the metadata group with the members and incarnations it records.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Routes;
use super::admin::AdminProblems;
use super::auth::Admin;
use super::json::ApiJson;
use crate::cluster::Cluster;
use crate::ops::{MemberOverview, members_of};
use crate::replication::{Groups, Membership, PartitionReport};
use crate::store::EventStore;

/// What the route answers about: this node, in its cluster if it has peers.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub node: String,
    pub services: Vec<String>,
    pub cluster: Option<Cluster>,
    /// This node's store, for its own log end.
    pub store: EventStore,
    /// Its partition groups, with `store.journal = "raft"`.
    pub groups: Option<Groups>,
}

pub fn routes(info: ClusterInfo) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(cluster_view))
        .with_state(info)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// This node.
    pub node: String,
    /// Whether this node serves its partitions (false after it found its store behind what
    /// its peers saw: see `not_serving_reason`).
    pub serving: bool,
    pub not_serving_reason: Option<String>,
    /// The placement fingerprint members compare (hex), a replicated cluster's id (the
    /// fingerprint of the members it formed with); absent on a node alone.
    pub placement: Option<String>,
    pub services: Vec<String>,
    /// How many partitions of each service this node serves: those it owns, or with
    /// replication those it leads (a partition is every service's).
    pub partitions: BTreeMap<String, usize>,
    /// Every member, this node included (`this_node`), by name.
    pub members: Vec<MemberOverview>,
    /// With `store.journal = "raft"`: the partition groups this node holds.
    pub replication: Option<ReplicationView>,
}

/// This node's part in the replicated partitions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicationView {
    /// This node's replica id in every group (its data directory's incarnation), in hex.
    pub replica: String,
    /// Partitions this node leads now.
    pub leading: usize,
    /// Each group this node holds, by partition.
    pub partitions: Vec<PartitionReport>,
    /// The cluster's metadata group, in a cluster: absent on a node alone.
    pub metadata: Option<MetadataView>,
    /// Moves of replicas under way in the groups this node leads (a member joined, is being
    /// drained or was removed; a replica back on a new disk).
    pub moves: Vec<crate::replication::MoveReport>,
    /// Nodes that asked this node to join within the last minute and are not members:
    /// `POST /admin/cluster/members {"name"}` admits one.
    pub asking: Vec<AskingView>,
    /// The cluster format this node's build reads (and writes once the cluster is at it).
    pub reads_format: u32,
}

/// A node asking to join.
#[derive(Debug, Serialize, ToSchema)]
pub struct AskingView {
    pub name: String,
    pub address: String,
    pub edge: Option<String>,
}

/// A member as the metadata records it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedMember {
    pub name: String,
    /// Its address, when it joined (a founding member's is in the configs).
    pub address: Option<String>,
    pub edge: Option<String>,
    /// `active`, or `draining` (its replicas are moving away; it leaves once it holds none).
    pub state: String,
}

/// The cluster's metadata group as this node's replica holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetadataView {
    /// The group (its `partition` is 4294967294, beside the partitions' groups).
    pub group: PartitionReport,
    /// The members the cluster formed with, as recorded (empty until a member recorded its
    /// incarnation).
    pub members: Vec<String>,
    /// The members now: founders and members admitted since, less those that left or were
    /// removed.
    pub roster: Vec<RecordedMember>,
    /// Each member's current incarnation (its replica id in every group, in hex), as
    /// recorded: a replica under another id is being replaced.
    pub incarnations: BTreeMap<String, String>,
    /// The cluster's format: the highest every member reads, and so what may be written
    /// (README, "Upgrade a cluster"). Raised by the metadata group's leader once every
    /// member of the roster reads more.
    pub format: u32,
}

fn partitions_served(
    cluster: &Cluster,
    groups: Option<&Groups>,
    services: &[String],
) -> BTreeMap<String, usize> {
    match groups {
        Some(groups) => {
            let led = groups
                .report()
                .iter()
                .filter(|partition| partition.role == "leader")
                .count();
            services
                .iter()
                .map(|service| (service.clone(), led))
                .collect()
        }
        None => cluster
            .placement()
            .owned_by(cluster.node())
            .into_iter()
            .map(|(service, owned)| (service, owned.len()))
            .collect(),
    }
}

fn replication_of(groups: Option<&Groups>, store: &EventStore) -> Option<ReplicationView> {
    let groups = groups?;
    let partitions = groups.report();
    let metadata = groups.metadata_report().map(|group| {
        // A store that cannot be read here shows as nothing recorded; `/health` reports it.
        let membership = Membership::read(store).unwrap_or_default();
        MetadataView {
            group,
            roster: membership
                .roster
                .iter()
                .map(|(name, record)| RecordedMember {
                    name: name.clone(),
                    address: record.address.clone(),
                    edge: record.edge.clone(),
                    state: if record.draining {
                        "draining"
                    } else {
                        "active"
                    }
                    .to_owned(),
                })
                .collect(),
            format: membership.format,
            members: membership.members,
            incarnations: membership
                .incarnations
                .into_iter()
                .map(|(member, replica)| (member, format!("{replica:016x}")))
                .collect(),
        }
    });
    Some(ReplicationView {
        replica: format!("{:016x}", groups.replica_id()),
        leading: partitions.iter().filter(|p| p.role == "leader").count(),
        partitions,
        metadata,
        moves: groups.moves(),
        reads_format: crate::replication::CLUSTER_FORMAT_READ,
        asking: groups
            .asking()
            .into_iter()
            .map(|asking| AskingView {
                name: asking.name,
                address: asking.address,
                edge: asking.edge,
            })
            .collect(),
    })
}

/// This node and every member: status, last heartbeat, round trip, services, partitions.
#[utoipa::path(get, path = "/admin/cluster", tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "The cluster as this node sees it", body = ClusterView), AdminProblems))]
async fn cluster_view(State(info): State<ClusterInfo>, _: Admin) -> ApiJson<ClusterView> {
    let log_end = *info.store.watch_log_end().borrow();
    let Some(cluster) = &info.cluster else {
        return ApiJson(ClusterView {
            node: info.node.clone(),
            serving: true,
            not_serving_reason: None,
            placement: None,
            services: info.services.clone(),
            partitions: BTreeMap::new(),
            members: members_of(&info.node, &info.services, None, log_end),
            replication: replication_of(info.groups.as_ref(), &info.store),
        });
    };
    let serving = cluster.serving();
    ApiJson(ClusterView {
        node: info.node.clone(),
        serving: serving.is_ok(),
        not_serving_reason: serving.err(),
        placement: Some(format!("{:016x}", cluster.cluster_id())),
        services: info.services.clone(),
        partitions: partitions_served(cluster, info.groups.as_ref(), &info.services),
        members: members_of(&info.node, &info.services, Some(cluster), log_end),
        replication: replication_of(info.groups.as_ref(), &info.store),
    })
}
