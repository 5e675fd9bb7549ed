//! Keeping each group's replicas where the member list says they go: the leader of a group
//! compares its voters with the replicas placement proposes over the members the metadata
//! records now (each under its recorded incarnation), and moves the difference: it adds each
//! incoming replica as a learner, waits until it has caught up, then changes the voters by
//! joint consensus. So a member that joined gains replicas, a drained or removed member
//! loses them, and a member back on a wiped disk (a new incarnation) is swapped in for the
//! replica it was.
//!
//! Nothing about a move is kept but what Raft keeps: the target comes from the metadata and
//! the current voters from the group's own configuration, so a move whose leader crashed is
//! taken up by the next leader from where the log left it (a learner already added, a joint
//! configuration to finish). At most `cluster.max_moves` partitions move at once across the
//! cluster: each move waits for a permit from the metadata leader (`move_permits`), so serving
//! goes on while they do; a leader that is itself moved off hands its lead to an incoming
//! voter that has caught up, which finishes the move (taking the permit's place over).
//!
//! A node that starts on an emptied or replaced data directory draws a new incarnation, which
//! is its replica id in every group: it cannot vote as the replica it was (what it voted and
//! stored is gone, so voting again could elect a leader without an acknowledged write, the
//! loss openraft's issues on wiped nodes describe). Until it is swapped in, the group runs on
//! its other replicas; the messages meant for the old incarnation are refused by the new one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use futures::StreamExt;
use openraft::ChangeMembers;
use openraft::rt::WatchReceiver;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::groups::{Groups, PartitionRaft};
use super::leadership::{is_joint, replicas, voters};
use super::metadata::{METADATA_GROUP, Membership};
use super::move_permits::{self, Permit};
use super::types::{PartitionId, Replica, ReplicaId};
use crate::cluster::Cluster;
use crate::placement::Placement;

/// How often a node looks for replicas to move in the groups it leads.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// How soon it looks again when a move waited for a permit (`move_permits`).
const LOOK_AGAIN: Duration = Duration::from_millis(500);

/// How long one round waits for an incoming learner to catch up before it looks again (the
/// learner goes on catching up meanwhile).
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(60);

/// A move of one partition's replicas, as the operations page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MoveReport {
    pub partition: PartitionId,
    /// The members losing a replica.
    pub from: Vec<String>,
    /// The members gaining one.
    pub to: Vec<String>,
    /// `catching up`, `changing voters` or `handing the lead over`.
    pub stage: String,
    /// How much of the leader's log the slowest incoming replica holds, 0 to 1.
    pub progress: f64,
    pub elapsed_ms: u64,
}

struct Move {
    from: Vec<String>,
    to: Vec<(ReplicaId, String)>,
    stage: &'static str,
    started: Instant,
}

/// The moves under way on this node.
#[derive(Clone, Default)]
pub(crate) struct Moves(Arc<DashMap<PartitionId, Move>>);

impl Moves {
    fn stage(&self, partition: PartitionId, stage: &'static str) {
        if let Some(mut entry) = self.0.get_mut(&partition) {
            entry.stage = stage;
        }
    }

    /// Whether `partition` is being moved here.
    pub(crate) fn moving(&self, partition: PartitionId) -> bool {
        self.0.contains_key(&partition)
    }

    pub(crate) fn report(&self, groups: &Groups) -> Vec<MoveReport> {
        let mut reports: Vec<MoveReport> = self
            .0
            .iter()
            .map(|entry| {
                let (partition, moving) = (*entry.key(), entry.value());
                let progress = groups
                    .get(partition)
                    .map_or(0.0, |raft| caught_up_share(&raft, &moving.to));
                MoveReport {
                    partition,
                    from: moving.from.clone(),
                    to: moving.to.iter().map(|(_, member)| member.clone()).collect(),
                    stage: moving.stage.to_owned(),
                    progress,
                    elapsed_ms: u64::try_from(moving.started.elapsed().as_millis())
                        .unwrap_or(u64::MAX),
                }
            })
            .collect();
        reports.sort_by_key(|report| report.partition);
        reports
    }
}

/// Of the leader's log, the share the slowest of `incoming` holds.
fn caught_up_share(raft: &PartitionRaft, incoming: &[(ReplicaId, String)]) -> f64 {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    let last = metrics.last_log_index.unwrap_or(0).max(1) as f64;
    let Some(replication) = metrics.replication.as_ref() else {
        return 0.0;
    };
    incoming
        .iter()
        .map(|(id, _)| {
            replication
                .get(id)
                .cloned()
                .flatten()
                .map_or(0.0, |matched| (matched.index as f64 / last).min(1.0))
        })
        .fold(1.0, f64::min)
}

/// What one group's leader has to do to bring its replicas where they go.
struct Plan {
    partition: PartitionId,
    raft: PartitionRaft,
    /// The voters it should have, by replica id.
    target: BTreeMap<ReplicaId, String>,
    /// Its voters now.
    voters: BTreeMap<ReplicaId, String>,
    /// Learners that are no target (a move given up, a member gone).
    stray_learners: BTreeSet<ReplicaId>,
}

/// Runs for the node's life: every [`LOOK_EVERY`], in each group this node leads, moves the
/// replicas that are not where the member list puts them, `at_once` partitions at a time.
pub(crate) async fn run(groups: Groups, cluster: Cluster, at_once: usize) {
    // Permits of moves not done yet (a learner still catching up, a step that failed), kept
    // from one look to the next while this node leads the group (given back, the place
    // would go to another move while this one's data still flows).
    let kept: Mutex<HashMap<PartitionId, Permit>> = Mutex::default();
    let mut pause = LOOK_EVERY;
    loop {
        tokio::time::sleep(pause).await;
        pause = LOOK_EVERY;
        // Looked at even when this node leads nothing now: a permit it kept goes on below.
        let Some(plans) = plans_here(&groups, &cluster) else {
            continue;
        };
        let (groups, cluster, kept) = (&groups, &cluster, &kept);
        // A permit kept for a partition that no longer moves here goes back when this node
        // still leads it (settled), and is left to the group's next leader when it does not
        // (the move goes on there under the same place).
        let planned: std::collections::HashSet<PartitionId> =
            plans.iter().map(|plan| plan.partition).collect();
        let finished: Vec<(PartitionId, Permit)> = {
            let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
            let gone: Vec<PartitionId> = kept
                .keys()
                .filter(|partition| !planned.contains(partition))
                .copied()
                .collect();
            gone.into_iter()
                .filter_map(|partition| Some((partition, kept.remove(&partition)?)))
                .collect()
        };
        for (partition, permit) in finished {
            if groups.leads(partition) {
                permit.give_back(groups, cluster).await;
            } else {
                permit.hand_on();
            }
        }
        let waiting = std::sync::atomic::AtomicBool::new(false);
        let waiting = &waiting;
        futures::stream::iter(plans)
            .for_each_concurrent(at_once, |plan| async move {
                let partition = plan.partition;
                let raft = plan.raft.clone();
                // A lapsed permit holds no place any more: the move asks anew.
                let held = kept
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&partition)
                    .filter(|permit| !permit.has_lapsed());
                let permit = match held {
                    Some(permit) => permit,
                    None => {
                        // A move already under way (its learner added, its voters joint) goes
                        // on whatever the count: stopped, it would stay half done.
                        let under_way = plan.under_way();
                        match move_permits::take(groups, cluster, partition, under_way).await {
                            Ok(permit) => permit,
                            Err(reason) => {
                                tracing::debug!(partition, %reason, "a move waits for a permit");
                                waiting.store(true, std::sync::atomic::Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                };
                let moved = execute(groups, plan, &permit).await;
                groups.move_registry().0.remove(&partition);
                match moved {
                    Ok(Moved::Done(done)) => {
                        tracing::info!(partition, done, "replicas moved");
                        permit.give_back(groups, cluster).await;
                        return;
                    }
                    Ok(Moved::LeadHandedOver) => {
                        tracing::info!(partition, "lead handed over to finish the move");
                    }
                    Err(Stopped::CatchingUp(member)) => tracing::info!(
                        partition,
                        %member,
                        "a learner is still catching up; the move goes on at the next look"
                    ),
                    Err(Stopped::Failed(error)) => {
                        tracing::warn!(partition, %error, "moving replicas failed; trying again");
                    }
                }
                // Not done: its place is kept for the next look (a learner goes on catching
                // up meanwhile, and given back, the place could go to another move before
                // this one goes on), or left to the group's next leader.
                if raft.is_leader() {
                    kept.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(partition, permit);
                } else {
                    permit.hand_on();
                }
            })
            .await;
        // A move refused a permit asks again soon: the permit it waits for may be free now.
        pause = if waiting.load(std::sync::atomic::Ordering::Relaxed) {
            LOOK_AGAIN
        } else {
            LOOK_EVERY
        };
    }
}

/// What the groups this node leads must change, `None` when it cannot tell (the member list
/// is not recorded yet, or cannot be read).
fn plans_here(groups: &Groups, cluster: &Cluster) -> Option<Vec<Plan>> {
    let led: Vec<(PartitionId, PartitionRaft)> = groups
        .running()
        .into_iter()
        .filter(|(_, raft)| raft.is_leader())
        .collect();
    if led.is_empty() {
        return Some(Vec::new());
    }
    let membership = match Membership::read(groups.store()) {
        Ok(membership) => membership,
        Err(error) => {
            tracing::warn!(%error, "reading the cluster's members failed; trying again");
            return None;
        }
    };
    // Before the member list is recorded there is nothing to compare with.
    if !membership.formed() {
        return None;
    }
    let placement = cluster.placement();
    Some(
        led.into_iter()
            .filter_map(|(partition, raft)| plan(partition, raft, &placement, &membership))
            .collect(),
    )
}

/// What `partition`'s group must change, if anything: its voters should be the members
/// placement proposes, each under the incarnation the metadata records.
fn plan(
    partition: PartitionId,
    raft: PartitionRaft,
    placement: &Placement,
    membership: &Membership,
) -> Option<Plan> {
    let proposed = placement.replicas(partition);
    if proposed.is_empty() {
        return None;
    }
    let voters = voters(&raft);
    let mut target = BTreeMap::new();
    for member in proposed {
        // A member whose incarnation is not recorded keeps the replica it votes with; one
        // not voting yet (just admitted, not started) cannot be added: wait rather than
        // shrink the group meanwhile. (A member voting unrecorded once held every move of
        // the group back: the simulation's seed 32, a node's record missing after faults.)
        let id = match membership.incarnations.get(&member) {
            Some(id) => *id,
            None => *voters.iter().find(|(_, voter)| **voter == member)?.0,
        };
        target.insert(id, member);
    }
    let stray_learners: BTreeSet<ReplicaId> = replicas(&raft)
        .into_keys()
        .filter(|id| !voters.contains_key(id) && !target.contains_key(id))
        .collect();
    let settled = target.keys().eq(voters.keys()) && !is_joint(&raft) && stray_learners.is_empty();
    (!settled).then_some(Plan {
        partition,
        raft,
        target,
        voters,
        stray_learners,
    })
}

impl Plan {
    /// Whether a move of this group is already under way: an incoming replica is a learner
    /// already, or the voters are joint.
    fn under_way(&self) -> bool {
        let replicas = replicas(&self.raft);
        is_joint(&self.raft)
            || self
                .target
                .keys()
                .any(|id| !self.voters.contains_key(id) && replicas.contains_key(id))
    }
}

/// How a move ended here.
enum Moved {
    /// The voters are the target's: the move is over.
    Done(&'static str),
    /// This leader, moved off, handed the lead to an incoming voter, which finishes the move.
    LeadHandedOver,
}

/// Why a move stopped before it was done.
enum Stopped {
    /// This incoming member's learner has not caught up within [`CATCH_UP_PATIENCE`]: it goes
    /// on catching up, and the move goes on at the next look.
    CatchingUp(String),
    Failed(String),
}

/// Moves one group's replicas under `permit`: learners in, caught up, voters changed (or,
/// when this leader is moved off, the lead handed to an incoming voter that caught up). Says
/// what it did. Only the wait for learners stops when the permit lapses: a change of voters,
/// once begun, is seen through (stopped between its two steps it would leave the voters
/// joint).
async fn execute(groups: &Groups, plan: Plan, permit: &Permit) -> Result<Moved, Stopped> {
    let Plan {
        partition,
        raft,
        target,
        voters,
        stray_learners,
    } = plan;
    let incoming: Vec<(ReplicaId, String)> = target
        .iter()
        .filter(|(id, _)| !voters.contains_key(id))
        .map(|(id, member)| (*id, member.clone()))
        .collect();
    let outgoing: Vec<String> = voters
        .iter()
        .filter(|(id, _)| !target.contains_key(id))
        .map(|(_, member)| member.clone())
        .collect();
    tracing::info!(partition, from = ?outgoing, to = ?incoming.iter().map(|(_, m)| m).collect::<Vec<_>>(), "moving replicas");
    groups.move_registry().0.insert(
        partition,
        Move {
            from: outgoing,
            to: incoming.clone(),
            stage: "catching up",
            started: Instant::now(),
        },
    );
    for (id, member) in &incoming {
        let replica = Replica {
            member: member.clone(),
        };
        let added = tokio::time::timeout(CATCH_UP_PATIENCE, raft.add_learner(*id, replica, true));
        let added = tokio::select! {
            added = added => added,
            () = permit.lapsed() => return Err(Stopped::Failed(format!(
                "its permit lapsed (the metadata leader did not answer) while {member} caught \
                 up; the learner stays, and the move goes on under a new permit"
            ))),
        };
        match added {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                return Err(Stopped::Failed(format!(
                    "adding {member} as a learner: {error}"
                )));
            }
            Err(_) => return Err(Stopped::CatchingUp(member.clone())),
        }
    }
    let me = groups.replica_id();
    if !target.contains_key(&me) {
        // Moved off itself: an incoming replica that has caught up leads the change.
        if let Some(successor) = target
            .keys()
            .find(|id| voters.contains_key(id) && super::balance::caught_up(&raft, **id))
        {
            groups
                .move_registry()
                .stage(partition, "handing the lead over");
            raft.trigger()
                .transfer_leader(*successor)
                .await
                .map_err(|e| Stopped::Failed(format!("handing the lead over: {e}")))?;
            return Ok(Moved::LeadHandedOver);
        }
    }
    groups.move_registry().stage(partition, "changing voters");
    raft.change_membership(
        ChangeMembers::ReplaceAllVoters(target.keys().copied().collect()),
        false,
    )
    .await
    .map_err(|e| Stopped::Failed(format!("changing the voters: {e}")))?;
    if !stray_learners.is_empty() {
        raft.change_membership(ChangeMembers::RemoveNodes(stray_learners), false)
            .await
            .map_err(|e| Stopped::Failed(format!("removing learners no longer wanted: {e}")))?;
    }
    if partition == METADATA_GROUP {
        return Ok(Moved::Done("metadata voters changed"));
    }
    Ok(Moved::Done("voters changed"))
}
