//! Who leads each of a node's groups, and telling the partition hosts and saga runners when
//! this node comes to lead a partition or stops leading it.
//!
//! A new leader serves a partition only from a complete state: it hears [`LeadershipEvent::Gained`]
//! once it has applied its log through its own term's first entry (openraft's read barrier
//! passed), so everything an earlier leader committed is in its store. What a node kept in
//! memory about a partition while someone else led it may be stale, so hosts drop it on both
//! events.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use openraft::LinearizerOption;
use openraft::rt::WatchReceiver;
use tokio::task::JoinHandle;

use super::groups::PartitionRaft;
use super::types::{PartitionId, ReplicaId};
use crate::metrics::{RAFT_ELECTIONS, RAFT_LEADER_CHANGES, RAFT_LEADERS};

/// A change of who leads one of this node's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadershipEvent {
    /// This node leads the partition, and has applied its log through its term's first entry.
    Gained(PartitionId),
    /// This node no longer leads the partition.
    Lost(PartitionId),
}

impl LeadershipEvent {
    pub fn partition(self) -> PartitionId {
        match self {
            LeadershipEvent::Gained(partition) | LeadershipEvent::Lost(partition) => partition,
        }
    }
}

/// What hears leadership changes (a kind's hosts, a saga kind's supervisor).
pub type LeadershipListener = Arc<dyn Fn(LeadershipEvent) + Send + Sync>;

/// The listeners of one node's groups. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Listeners {
    listeners: Arc<RwLock<Vec<LeadershipListener>>>,
}

impl Listeners {
    pub(crate) fn add(&self, listener: LeadershipListener) {
        self.listeners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(listener);
    }

    pub(crate) fn tell(&self, event: LeadershipEvent) {
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for listener in listeners {
            listener(event);
        }
    }
}

/// The member leading `raft`'s group, as this replica knows it.
pub(crate) fn leader_of(raft: &PartitionRaft) -> Option<String> {
    let metrics = raft.server_metrics();
    let metrics = metrics.borrow_watched();
    let leader = metrics.current_leader?;
    metrics
        .membership_config
        .get_node(&leader)
        .map(|replica| replica.member.clone())
}

/// How leadership of one partition went, as this node saw it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LeaderHistory {
    /// Times the partition got another leader (or lost one) since this node started.
    pub changes: u64,
    /// When that last happened.
    pub last_change: Option<tokio::time::Instant>,
}

/// The leader history of each partition this node replicates. Cheap to clone.
pub(crate) type Histories = Arc<dashmap::DashMap<PartitionId, LeaderHistory>>;

/// The partitions this node serves as leader: from [`LeadershipEvent::Gained`] (its term's
/// first entry applied) to [`LeadershipEvent::Lost`]. Cheap to clone.
pub(crate) type Serving = Arc<dashmap::DashMap<PartitionId, u64>>;

/// `raft`'s group's voters as this replica knows them, by replica id, with their members.
pub(crate) fn voters(raft: &PartitionRaft) -> BTreeMap<ReplicaId, String> {
    let metrics = raft.server_metrics();
    let metrics = metrics.borrow_watched();
    let membership = metrics.membership_config.membership();
    membership
        .voter_ids()
        .filter_map(|id| {
            membership
                .get_node(&id)
                .map(|replica| (id, replica.member.clone()))
        })
        .collect()
}

/// Whether `replica` is in `raft`'s group (a voter or a learner) as its last configuration
/// says: a group this node was never added to, or was moved off, is not its to speak for.
pub(crate) fn holds(raft: &PartitionRaft, replica: ReplicaId) -> bool {
    let metrics = raft.server_metrics();
    let metrics = metrics.borrow_watched();
    metrics.membership_config.get_node(&replica).is_some()
}

/// Every replica of `raft`'s group, voters and learners, with its member.
pub(crate) fn replicas(raft: &PartitionRaft) -> BTreeMap<ReplicaId, String> {
    let metrics = raft.server_metrics();
    let metrics = metrics.borrow_watched();
    metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, replica)| (*id, replica.member.clone()))
        .collect()
}

/// Whether `raft`'s group is between two voter sets (joint consensus under way).
pub(crate) fn is_joint(raft: &PartitionRaft) -> bool {
    let metrics = raft.server_metrics();
    let metrics = metrics.borrow_watched();
    metrics
        .membership_config
        .membership()
        .get_joint_config()
        .len()
        > 1
}

/// How a leader makes sure it reads a complete state: a quorum acknowledged it within the
/// lease, or it asks one now; and it has applied everything committed when it asked.
pub(crate) fn read_barrier() -> LinearizerOption {
    LinearizerOption::new(None, true)
}

/// Watches `partition`'s group and tells `listeners` when this node comes to lead it (once
/// it passed the read barrier) and when it stops.
pub(crate) fn watch(
    partition: PartitionId,
    raft: PartitionRaft,
    listeners: Listeners,
    histories: Histories,
    serving: Serving,
) -> JoinHandle<()> {
    // Exported from the start, at zero: a dashboard's "no failover" is a series at 0, not
    // a missing one.
    metrics::counter!(RAFT_ELECTIONS).increment(0);
    metrics::counter!(RAFT_LEADER_CHANGES).increment(0);
    metrics::gauge!(RAFT_LEADERS).increment(0.0);
    // The metadata group has no hosts or sagas to tell, and is not a partition led.
    let is_partition = partition != crate::placement::METADATA_GROUP;
    tokio::spawn(async move {
        let mut metrics = raft.server_metrics();
        // Whether this node serves the partition, and the term it came to lead it in.
        let mut leading = false;
        let mut led_term = 0;
        let (mut leader, mut term) = (None, 0);
        loop {
            let leads = {
                let now = metrics.borrow_watched();
                if now.vote.leader_id().term > term {
                    if term > 0 {
                        metrics::counter!(RAFT_ELECTIONS).increment(1);
                    }
                    term = now.vote.leader_id().term;
                }
                if now.current_leader != leader {
                    // The first leader heard after a start is not a change.
                    if leader.is_some() {
                        metrics::counter!(RAFT_LEADER_CHANGES).increment(1);
                        let mut history = histories.entry(partition).or_default();
                        history.changes += 1;
                        history.last_change = Some(tokio::time::Instant::now());
                    }
                    leader = now.current_leader;
                }
                now.current_leader.as_ref() == Some(&now.id)
            };
            // Lost; or lost and gained again between two looks (the watch keeps only the
            // latest), which leaves what was kept as stale as any change: told as a loss.
            if leading && (!leads || term != led_term) {
                leading = false;
                serving.remove(&partition);
                tracing::info!(partition, term, replica = %raft.metrics().borrow_watched().id, "this node no longer leads the partition");
                if is_partition {
                    metrics::gauge!(RAFT_LEADERS).decrement(1.0);
                    listeners.tell(LeadershipEvent::Lost(partition));
                }
            }
            if leads && !leading {
                // Only once its term's first entry is applied; if it loses the lead meanwhile,
                // the barrier fails and the next change is looked at.
                if raft.ensure_linearizable(read_barrier()).await.is_ok() {
                    leading = true;
                    led_term = term;
                    // Told first: the hosts forget what they kept before anything is served.
                    if is_partition {
                        listeners.tell(LeadershipEvent::Gained(partition));
                        metrics::gauge!(RAFT_LEADERS).increment(1.0);
                    }
                    serving.insert(partition, term);
                    tracing::info!(partition, term, replica = %raft.metrics().borrow_watched().id, "this node leads the partition");
                }
            }
            if leads && !leading {
                // The barrier failed while the metrics still say it leads: try again shortly
                // rather than waiting for a change that may not come.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}
