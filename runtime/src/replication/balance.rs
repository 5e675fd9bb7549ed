//! Keeping leaders spread (and, on the way, the replication lag metric): each partition has a preferred leader, the first of its proposed
//! replicas (by placement) that is a voter and up, and a leader that is not the preferred one
//! hands the lead over once the preferred one has caught up. Placement spreads the first
//! replicas evenly, so when every member is up leaders are spread as evenly as placement
//! spreads them, also after a member that was down comes back (it was leading nothing).
//!
//! The handover is openraft's leader transfer: the leader stops taking writes (they are
//! refused "not leader", nothing applied, so a client retries), the target elects itself
//! once it holds the leader's whole log, and the old leader's lease no longer blocks it.

use std::time::Duration;

use openraft::rt::WatchReceiver;

use super::groups::{Groups, PartitionRaft};
use super::leadership::{is_joint, voters};
use super::types::ReplicaId;
use crate::cluster::{Cluster, Route};
use crate::metrics::RAFT_REPLICATION_LAG;
use crate::placement::Placement;

/// How often a node looks at the groups it leads.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// How far behind the leader's log the preferred replica may be for the lead to move to it:
/// the transfer waits for it to catch up, and writes wait with it.
const CAUGHT_UP_WITHIN: u64 = 16;

/// Runs for the node's life: every [`LOOK_EVERY`], hands each group this node leads to its
/// preferred leader when that is another member, up and caught up.
pub(crate) async fn run(groups: Groups, cluster: Cluster) {
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        // Over the members as they are now: a member that joined is preferred for the
        // partitions placement gives it first, one being drained for none.
        let placement = cluster.placement();
        for (partition, raft) in groups.running() {
            let lag = if raft.is_leader() {
                worst_lag(&raft)
            } else {
                0
            };
            metrics::gauge!(RAFT_REPLICATION_LAG, "partition" => partition.to_string())
                .set(lag as f64);
            if !raft.is_leader() || replacing(&raft) || groups.move_registry().moving(partition) {
                continue;
            }
            // A move pending (the voters are not yet where placement puts them): the leader
            // that moves them stays until it is done (`reconcile`).
            let mut proposed = placement.replicas(partition);
            let mut voting: Vec<String> = voters(&raft).into_values().collect();
            proposed.sort();
            voting.sort();
            if proposed != voting {
                continue;
            }
            let Some(preferred) = preferred_leader(&raft, &cluster, &placement, partition) else {
                continue;
            };
            if preferred == groups.replica_id() || !caught_up(&raft, preferred) {
                continue;
            }
            // A member back on a wiped disk answers as another incarnation: its old replica
            // id (still a voter until repair swaps it) would refuse the lead.
            if !still_runs(&cluster, &raft, preferred).await {
                continue;
            }
            tracing::info!(
                partition,
                to = preferred,
                "handing the lead to the partition's preferred leader"
            );
            let _ = raft.trigger().transfer_leader(preferred).await;
        }
    }
}

/// Whether `raft`'s group is changing its voters (a joint configuration, or one member voting
/// under two incarnations while `reconcile` swaps one for the other): the lead stays where it
/// is until the change is done, since a leader handed over mid-change (to the incoming
/// incarnation, which already votes) must finish it before the group is whole again.
fn replacing(raft: &PartitionRaft) -> bool {
    let members: Vec<String> = voters(raft).into_values().collect();
    let mut distinct = members.clone();
    distinct.sort();
    distinct.dedup();
    is_joint(raft) || distinct.len() < members.len()
}

/// The replica id of the first of `partition`'s proposed replicas that is a voter and up.
fn preferred_leader(
    raft: &PartitionRaft,
    cluster: &Cluster,
    placement: &Placement,
    partition: u32,
) -> Option<ReplicaId> {
    let voters = voters(raft);
    placement
        .replicas(partition)
        .into_iter()
        .find_map(|member| {
            let (id, _) = voters.iter().find(|(_, m)| **m == member)?;
            matches!(cluster.route_to(&member), Route::Local | Route::Remote(_)).then_some(*id)
        })
}

/// Whether the member of voter `replica` still runs that incarnation (it says so when asked).
async fn still_runs(cluster: &Cluster, raft: &PartitionRaft, replica: ReplicaId) -> bool {
    let Some(member) = voters(raft).get(&replica).cloned() else {
        return false;
    };
    super::forming::ask(cluster, &member)
        .await
        .is_ok_and(|hello| hello.replica == replica)
}

/// On a leader: the entries its furthest-behind replica lacks.
fn worst_lag(raft: &PartitionRaft) -> u64 {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    let last = metrics.last_log_index.unwrap_or(0);
    metrics.replication.as_ref().map_or(0, |replication| {
        replication
            .values()
            .map(|matched| last.saturating_sub(matched.as_ref().map_or(0, |log_id| log_id.index)))
            .max()
            .unwrap_or(0)
    })
}

/// Whether `replica`'s log matches the leader's to within [`CAUGHT_UP_WITHIN`] entries.
pub(crate) fn caught_up(raft: &PartitionRaft, replica: ReplicaId) -> bool {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    let last = metrics.last_log_index.unwrap_or(0);
    // Progress not known yet (nothing matched since this leader took over) is not caught up.
    let Some(matched) = metrics
        .replication
        .as_ref()
        .and_then(|replication| replication.get(&replica).cloned().flatten())
    else {
        return false;
    };
    matched.index + CAUGHT_UP_WITHIN >= last
}
