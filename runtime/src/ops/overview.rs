//! The overview `/admin/overview` answers and `/ui` draws: every member and its status as the
//! answering node sees it, which member owns each partition of each service, and every
//! member's report.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::gather::{NodeReport, gather};
use super::{Ops, SAMPLE_EVERY};
use crate::cluster::Cluster;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Overview {
    /// The node that answered.
    pub node: String,
    /// When it answered, Unix milliseconds.
    pub at_ms: u64,
    /// How often nodes sample their figures (the charts' step).
    pub sample_every_ms: u64,
    /// Every member, this node included, sorted by name.
    pub members: Vec<MemberOverview>,
    /// Who owns each partition, per service (absent on a node alone, which owns everything).
    pub partitions: Vec<ServicePartitions>,
    /// Every member's report, in the order of `members`.
    pub nodes: Vec<NodeReport>,
}

/// A member as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MemberOverview {
    pub name: String,
    /// Its cluster address (absent on a node alone).
    pub address: Option<String>,
    /// Its edge, `host:port`, when the config gives it: where its own page is.
    pub edge: Option<String>,
    /// Whether this is the node that answered.
    pub this_node: bool,
    /// `up`, `down`, `joining`, `refused`, or (this node) `not_serving`.
    pub status: String,
    /// Why it is not up.
    pub reason: Option<String>,
    pub last_heartbeat_ms_ago: Option<u64>,
    /// The last heartbeat's round trip, microseconds.
    pub rtt_us: Option<u64>,
    /// Its log's end: a peer's at its last heartbeat, this node's now.
    pub log_end: Option<u64>,
    pub services: Vec<String>,
    /// How many partitions of each service it owns.
    pub partitions: BTreeMap<String, usize>,
}

/// One service's partitions: `owners[p]` is the index in `members` of partition `p`'s owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ServicePartitions {
    pub service: String,
    pub owners: Vec<Option<u16>>,
}

/// What the overview is made from; the partition grid (static while the config is) is
/// computed once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OverviewSource {
    ops: Ops,
    cluster: Option<Cluster>,
    services: Vec<String>,
    /// Service -> the owner's name per partition.
    grid: Arc<Vec<(String, Vec<Option<String>>)>>,
}

impl OverviewSource {
    /// `services` are the ones this node hosts (what a node alone shows).
    pub fn new(ops: Ops, cluster: Option<Cluster>, services: Vec<String>) -> Self {
        let grid = cluster
            .as_ref()
            .map(|cluster| {
                let placement = cluster.placement();
                placement
                    .services()
                    .map(|service| {
                        let owners = (0..placement.partitions())
                            .map(|partition| placement.owner(service, partition).map(str::to_owned))
                            .collect();
                        (service.to_owned(), owners)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            ops,
            cluster,
            services,
            grid: Arc::new(grid),
        }
    }

    /// The overview now, with chart points newer than `since_ms`.
    pub async fn overview(&self, since_ms: u64) -> Overview {
        // Reports first, the members' status after: a member seen down while its report was
        // asked for is shown down, not up beside a missing report.
        let mut nodes = gather(self.cluster.as_ref(), &self.ops, since_ms).await;
        let mut members = self.members();
        for member in &mut members {
            let not_serving = nodes
                .iter()
                .find(|report| report.node == member.name)
                .and_then(|report| report.stats.as_ref()?.not_serving_reason.clone());
            // Heartbeats say a member is up, not whether it serves; its own report does. A
            // member seen down since its report came keeps "down".
            if member.status == "up"
                && let Some(reason) = not_serving
            {
                member.status = "not_serving".into();
                member.reason = Some(reason);
            }
        }
        let index: BTreeMap<&str, u16> = members
            .iter()
            .enumerate()
            .map(|(at, member)| (member.name.as_str(), at as u16))
            .collect();
        let partitions = self
            .grid
            .iter()
            .map(|(service, owners)| ServicePartitions {
                service: service.clone(),
                owners: owners
                    .iter()
                    .map(|owner| owner.as_deref().and_then(|name| index.get(name).copied()))
                    .collect(),
            })
            .collect();
        nodes.sort_by_key(|report| index.get(report.node.as_str()).copied());
        Overview {
            node: self.ops.node().to_owned(),
            at_ms: crate::time::unix_millis(),
            sample_every_ms: SAMPLE_EVERY.as_millis() as u64,
            members,
            partitions,
            nodes,
        }
    }

    fn members(&self) -> Vec<MemberOverview> {
        members_of(
            self.ops.node(),
            &self.services,
            self.cluster.as_ref(),
            self.ops.log_end(),
        )
    }
}

/// Every member as node `node` sees it, this node included (`this_node`), by name: what
/// `/admin/overview` and `/admin/cluster` both list. `services` and `log_end` are this node's.
pub fn members_of(
    node: &str,
    services: &[String],
    cluster: Option<&Cluster>,
    log_end: u64,
) -> Vec<MemberOverview> {
    let Some(cluster) = cluster else {
        return vec![MemberOverview {
            name: node.to_owned(),
            address: None,
            edge: None,
            this_node: true,
            status: "up".into(),
            reason: None,
            last_heartbeat_ms_ago: None,
            rtt_us: None,
            log_end: Some(log_end),
            services: services.to_vec(),
            partitions: BTreeMap::new(),
        }];
    };
    let serving = cluster.serving();
    let mut members: Vec<MemberOverview> = cluster
        .members()
        .into_iter()
        .map(|peer| {
            let peer = peer.at_now();
            MemberOverview {
                edge: cluster.member(&peer.name).and_then(|m| m.edge.clone()),
                name: peer.name,
                address: Some(peer.address),
                this_node: false,
                status: peer.status.as_str().to_owned(),
                reason: peer.reason,
                last_heartbeat_ms_ago: peer.last_heartbeat_ms_ago,
                rtt_us: peer.rtt_us,
                log_end: peer.log_end,
                services: peer.services,
                partitions: peer.partitions,
            }
        })
        .collect();
    members.push(MemberOverview {
        name: node.to_owned(),
        address: cluster.member(node).map(|m| m.address.clone()),
        edge: cluster.member(node).and_then(|m| m.edge.clone()),
        this_node: true,
        status: if serving.is_ok() { "up" } else { "not_serving" }.to_owned(),
        reason: serving.err(),
        last_heartbeat_ms_ago: None,
        rtt_us: None,
        log_end: Some(log_end),
        services: services.to_vec(),
        partitions: cluster
            .placement()
            .owned_by(node)
            .into_iter()
            .map(|(service, owned)| (service, owned.len()))
            .collect(),
    });
    members.sort_by(|a, b| a.name.cmp(&b.name));
    members
}
