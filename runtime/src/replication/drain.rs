//! A drained member leaving: once the member list says this node is being drained, the
//! leaders move its replicas and leads away (`reconcile`, `balance`); this node asks every
//! member, every [`LOOK_EVERY`], which replicas the groups it leads count, and when no
//! leader counts one of this node's (and every group's leader answered), it records that it
//! left. From then on it holds nothing and may be stopped.
//!
//! Only leaders are asked: a replica moved off a group may never hear the configuration
//! that removed it, so its own view says nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::rt::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::groups::Groups;
use super::leadership::replicas;
use super::members::{ChangeOutcome, MemberChange};
use super::metadata::METADATA_GROUP;
use super::types::{PartitionId, ReplicaId};
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The cluster handler that answers which members the groups a node leads count.
const TARGET: &str = "raft-held";

/// How often a member being drained looks whether it is done.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// A leader's word on its group's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    pub partition: PartitionId,
    pub term: u64,
    /// The leader (the member answering).
    pub leader: String,
    /// Its voters and learners: replica id and member.
    pub replicas: Vec<(ReplicaId, String)>,
}

impl Held {
    fn counts_member(&self, member: &str) -> bool {
        self.replicas.iter().any(|(_, m)| m == member)
    }
}

/// What the groups this node leads count.
pub(crate) fn held_here(groups: &Groups) -> Vec<Held> {
    groups
        .running()
        .into_iter()
        .filter(|(_, raft)| raft.is_leader())
        .map(|(partition, raft)| Held {
            partition,
            term: raft.metrics().borrow_watched().current_term,
            leader: groups.node().to_owned(),
            replicas: replicas(&raft).into_iter().collect(),
        })
        .collect()
}

struct HeldHandler(Groups);

impl Handler for HeldHandler {
    fn handle(&self, _operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let held = held_here(&self.0);
        Box::pin(async move { codec::encode(&held).map_err(|e| e.to_string()) })
    }
}

/// Registers the handler that says what the groups this node leads count.
pub(crate) fn serve(cluster: &Cluster, groups: &Groups) {
    cluster.register(TARGET, Arc::new(HeldHandler(groups.clone())));
}

/// What every group's leader (the newest term's word per group) counts, as asked of every
/// member now; groups no leader answered for are missing.
pub(crate) async fn held_everywhere(
    groups: &Groups,
    cluster: &Cluster,
) -> BTreeMap<PartitionId, Held> {
    let asked = cluster.peer_names().into_iter().map(|peer| {
        let cluster = cluster.clone();
        async move {
            let call = cluster.call_uncounted(&peer, TARGET, Vec::new(), Duration::from_secs(2));
            match call.await {
                Ok(bytes) => codec::decode::<Vec<Held>>(&bytes).unwrap_or_default(),
                Err(_) => Vec::new(),
            }
        }
    });
    let mut all: Vec<Held> = futures::future::join_all(asked)
        .await
        .into_iter()
        .flatten()
        .collect();
    all.extend(held_here(groups));
    let mut by_group: BTreeMap<PartitionId, Held> = BTreeMap::new();
    for held in all {
        match by_group.get(&held.partition) {
            Some(known) if known.term >= held.term => {}
            _ => {
                by_group.insert(held.partition, held);
            }
        }
    }
    by_group
}

/// How often a node asks the leaders which groups count it.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Runs for the node's life: every [`CHECK_EVERY`], asks every member what the groups it
/// leads count, and notes the groups whose leader no longer counts this node's replica (a
/// move took it off): a replica moved off may never hear the configuration that removed it,
/// and would otherwise go on claiming the group (and waiting for a leader) from what it last
/// heard. Those groups' leaders go to the directory, so this node still routes to them.
pub(crate) async fn watch_removals(groups: Groups, cluster: Cluster) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let held = held_everywhere(&groups, &cluster).await;
        let me = groups.replica_id();
        for (partition, held) in held {
            groups.learn_leader(partition, held.term, &held.leader);
            let counted = held.replicas.iter().any(|(id, _)| *id == me);
            groups.note_removed(partition, !counted);
        }
    }
}

/// Runs for the node's life: while the member list says this node is being drained, looks
/// whether any group still counts it; when none does, records that it left, once.
pub(crate) async fn run(groups: Groups, cluster: Cluster) {
    let me = groups.node().to_owned();
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        if !cluster.roster().draining.contains(&me) {
            continue;
        }
        let held = held_everywhere(&groups, &cluster).await;
        let partitions = cluster.placement().partitions();
        let unanswered = (0..partitions)
            .chain([METADATA_GROUP])
            .filter(|partition| !held.contains_key(partition))
            .count();
        let still: Vec<PartitionId> = held
            .values()
            .filter(|held| held.counts_member(&me))
            .map(|held| held.partition)
            .collect();
        if unanswered > 0 || !still.is_empty() {
            tracing::info!(
                holding = still.len(),
                unanswered,
                "being drained: replicas still to move away"
            );
            continue;
        }
        match super::members::change(&groups, &cluster, MemberChange::Leave { name: me.clone() })
            .await
        {
            ChangeOutcome::Done { .. } => {
                tracing::warn!(
                    "drained: this node holds no replica and has left the cluster; it can be stopped now"
                );
                return;
            }
            other => tracing::warn!(
                ?other,
                "recording that this drained node left failed; trying again"
            ),
        }
    }
}
