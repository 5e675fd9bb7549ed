//! How one partition's group stands on this node, for `/admin/cluster` and the operations
//! page: who leads, in which term, the replicas and (on the leader) how far behind each is,
//! and when the lead last moved.

use openraft::ServerState;
use openraft::rt::WatchReceiver;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::groups::PartitionRaft;
use super::leadership::LeaderHistory;
use super::types::PartitionId;

/// One partition's group as this node's replica sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartitionReport {
    pub partition: PartitionId,
    /// The member leading it, if this replica knows one.
    pub leader: Option<String>,
    pub term: u64,
    /// This replica's part: leader, follower, candidate or learner.
    pub role: String,
    /// The last entry this replica holds, and the last it applied.
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub replicas: Vec<ReplicaReport>,
    /// Times the lead moved (or was lost) since this node started, and how long ago it last
    /// did.
    pub leader_changes: u64,
    pub last_leader_change_ms_ago: Option<u64>,
}

/// One replica of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaReport {
    pub member: String,
    /// Its replica id (the member's incarnation), in hex.
    pub replica: String,
    /// A voter, or a learner still catching up.
    pub voter: bool,
    /// Entries it lacks of the leader's log; known on the leader only.
    pub lag: Option<u64>,
}

pub(crate) fn of(
    partition: PartitionId,
    raft: &PartitionRaft,
    history: LeaderHistory,
) -> PartitionReport {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    let membership = metrics.membership_config.membership();
    let voters: Vec<_> = membership.voter_ids().collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let replicas: Vec<ReplicaReport> = membership
        .nodes()
        .map(|(id, replica)| ReplicaReport {
            member: replica.member.clone(),
            replica: format!("{id:016x}"),
            voter: voters.contains(id),
            lag: metrics.replication.as_ref().map(|replication| {
                let matched = replication
                    .get(id)
                    .cloned()
                    .flatten()
                    .map_or(0, |log_id| log_id.index);
                last.saturating_sub(matched)
            }),
        })
        .collect();
    let leader = metrics
        .current_leader
        .as_ref()
        .and_then(|id| membership.get_node(id))
        .map(|replica| replica.member.clone());
    PartitionReport {
        partition,
        leader,
        term: metrics.current_term,
        role: match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "stopped",
        }
        .to_owned(),
        last_log_index: metrics.last_log_index,
        last_applied: metrics.last_applied.as_ref().map(|log_id| log_id.index),
        replicas,
        leader_changes: history.changes,
        last_leader_change_ms_ago: history
            .last_change
            .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)),
    }
}
