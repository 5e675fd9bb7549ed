//! Who leads the partitions this node holds no replica of, learned from the members that do.
//!
//! With more members than the replication factor, every member's edge still takes requests
//! for every aggregate, but a member holds no group of some partitions and so hears nothing of
//! their elections. It asks its peers, every [`ASK_EVERY`], which leader each of their groups
//! knows and in which term; the claim of the highest term wins (a deposed leader's word is of
//! an older term than its successor's). A leader named here may be stale for up to one round:
//! a command sent to it is refused before anything is proposed ("unavailable", not applied),
//! and the router sends it again once a newer leader is heard of
//! (`aggregate::handle::routed`). A member seen down is forgotten as a leader at once.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::future::BoxFuture;
use openraft::rt::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::groups::Groups;
use super::types::PartitionId;
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The cluster handler that answers which leader each of a node's groups knows.
pub const LEADERS_TARGET: &str = "raft-leaders";

/// How often a member that lacks some partitions asks its peers who leads them.
const ASK_EVERY: Duration = Duration::from_millis(250);

/// How long one question may take: a peer slower than one round is asked again next round.
const PATIENCE: Duration = Duration::from_millis(1_000);

/// A replica's word on who leads its partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KnownLeader {
    pub partition: PartitionId,
    pub term: u64,
    pub leader: String,
}

/// The leaders of the partitions this node does not replicate, as its peers last said.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    leaders: DashMap<PartitionId, (u64, String)>,
}

impl Directory {
    /// The member leading `partition`, as last heard.
    pub(crate) fn leader(&self, partition: PartitionId) -> Option<String> {
        self.leaders
            .get(&partition)
            .map(|entry| entry.value().1.clone())
    }

    /// Takes in what a peer knows: a claim of a newer term than the one kept replaces it.
    pub(crate) fn learn(&self, known: impl IntoIterator<Item = KnownLeader>) {
        for KnownLeader {
            partition,
            term,
            leader,
        } in known
        {
            let mut entry = self
                .leaders
                .entry(partition)
                .or_insert_with(|| (term, leader.clone()));
            if term > entry.0 {
                *entry = (term, leader);
            }
        }
    }

    /// `member` went down: it leads nothing until a peer names it again (in a newer term, or
    /// the same one if it was only a short silence).
    pub(crate) fn forget(&self, member: &str) {
        self.leaders.retain(|_, (_, leader)| leader != member);
    }
}

/// What this node's groups know of their leaders.
pub(crate) fn known_here(groups: &Groups) -> Vec<KnownLeader> {
    groups
        .running()
        .into_iter()
        .filter(|(partition, _)| groups.holds(*partition))
        .filter_map(|(partition, raft)| {
            let term = raft.metrics().borrow_watched().current_term;
            let leader = super::leadership::leader_of(&raft)?;
            Some(KnownLeader {
                partition,
                term,
                leader,
            })
        })
        .collect()
}

/// Answers `raft-leaders`.
pub(crate) struct LeadersHandler(pub Groups);

impl Handler for LeadersHandler {
    fn handle(&self, _operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let known = known_here(&self.0);
        Box::pin(async move { codec::encode(&known).map_err(|e| e.to_string()) })
    }
}

/// Registers the handler that tells peers who leads this node's partitions.
pub(crate) fn serve(cluster: &Cluster, groups: &Groups) {
    cluster.register(LEADERS_TARGET, Arc::new(LeadersHandler(groups.clone())));
}

/// Runs for the node's life: every [`ASK_EVERY`] while it lacks a replica of some partition
/// (more members than the replication factor, or a partition moved away), asks every peer
/// who leads their groups.
pub(crate) async fn run(groups: Groups, directory: Arc<Directory>, cluster: Cluster) {
    loop {
        let partitions = cluster.placement().partitions();
        if (0..partitions).all(|partition| groups.holds(partition)) {
            tokio::time::sleep(ASK_EVERY).await;
            continue;
        }
        let peers = cluster.peer_names();
        let asked = peers.iter().map(|peer| {
            let cluster = cluster.clone();
            async move {
                let call = cluster.call_uncounted(peer, LEADERS_TARGET, Vec::new(), PATIENCE);
                match call.await {
                    Ok(bytes) => codec::decode::<Vec<KnownLeader>>(&bytes).ok(),
                    Err(_) => None,
                }
            }
        });
        for known in futures::future::join_all(asked).await.into_iter().flatten() {
            directory.learn(known);
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(partition: PartitionId, term: u64, leader: &str) -> KnownLeader {
        KnownLeader {
            partition,
            term,
            leader: leader.to_owned(),
        }
    }

    #[test]
    fn the_claim_of_the_newest_term_wins_and_a_member_seen_down_leads_nothing() {
        let directory = Directory::default();
        directory.learn([claim(0, 3, "node-1"), claim(1, 2, "node-2")]);
        // A deposed leader's replica still names it, in the older term: not taken.
        directory.learn([claim(0, 4, "node-3"), claim(0, 3, "node-1")]);
        assert_eq!(directory.leader(0).as_deref(), Some("node-3"));
        assert_eq!(directory.leader(1).as_deref(), Some("node-2"));
        assert_eq!(directory.leader(2), None);
        directory.forget("node-3");
        assert_eq!(directory.leader(0), None);
        assert_eq!(directory.leader(1).as_deref(), Some("node-2"));
        // Named again after coming back, even in the term it had.
        directory.learn([claim(0, 4, "node-3")]);
        assert_eq!(directory.leader(0).as_deref(), Some("node-3"));
    }
}
