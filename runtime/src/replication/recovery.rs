//! The worst day: members lost for good took a majority of some groups' voters with them.
//! Such a group elects no leader and refuses writes, as Raft must: nothing can tell a
//! member that is gone from one that is slow. Only an admin can say "these will never come
//! back"; this module does what such an admin asks, on the survivor it is asked on.
//!
//! For each group this node votes in and whose voters (in any of its configurations, while
//! a change is under way) lost their majority, the group is stopped, a configuration of the
//! surviving voters is written at the end of this replica's log under a term past any it has
//! seen (`GroupLog::force_configuration`), and the group started again: it elects a leader
//! among the survivors with what this replica holds, and `reconcile` makes the other replicas
//! from it. The metadata group goes first, so that the lost members can be recorded as
//! removed (all at once: a leader must not try to move a replica to one of them) before any
//! partition has a leader to move replicas. etcd's `--force-new-cluster` and ra's
//! `force_shrink_members_to_current_member` do the same for a single group.
//!
//! What is lost: entries that the lost voters held and this replica did not, which a leader
//! may have acknowledged (a majority of the old voters held them). The answer says, per
//! group, the last entry kept and the last this replica knew committed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::rt::WatchReceiver;
use serde::Serialize;
use utoipa::ToSchema;

use super::groups::{Groups, PartitionRaft};
use super::members::{ChangeOutcome, MemberChange};
use super::metadata::{METADATA_GROUP, Membership};
use super::types::{PartitionId, Replica, ReplicaId};
use crate::cluster::{Cluster, MemberStatus};

/// How long a recovered group is given to elect a leader before the answer says it has not.
const ELECTION_WAIT: Duration = Duration::from_secs(10);

/// What a recovery did on the member it ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Recovery {
    /// The member that recovered its groups (the one asked).
    pub member: String,
    /// The members recorded as removed, lost for good.
    pub lost: Vec<String>,
    /// The groups restarted on their surviving voters.
    pub recovered: Vec<RecoveredGroup>,
    /// The groups that needed nothing from this member, and why.
    pub untouched: Vec<UntouchedGroup>,
}

/// A group restarted on its surviving voters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RecoveredGroup {
    /// The partition; absent for the cluster's metadata group.
    pub partition: Option<PartitionId>,
    pub voters_before: Vec<String>,
    pub voters_after: Vec<String>,
    /// The last entry this replica held, kept with everything before it. Entries the lost
    /// voters held past it are gone, acknowledged or not.
    pub kept_through_index: Option<u64>,
    /// The last entry this replica knew to be committed. Entries after it and up to
    /// `kept_through_index` are kept although no one may have been told they were written.
    pub known_committed_index: Option<u64>,
    /// The last entry the leader last said a majority held. Past `kept_through_index`, it
    /// shows that committed entries were lost for certain (up to it, and perhaps more).
    pub cluster_committed_index: Option<u64>,
    /// The term the surviving configuration was written in.
    pub term: u64,
    /// Whether it elected a leader within the wait (it goes on trying if not).
    pub leader_elected: bool,
}

/// A group the recovery left as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UntouchedGroup {
    /// The partition; absent for the cluster's metadata group.
    pub partition: Option<PartitionId>,
    pub why: String,
}

/// Why a recovery was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// The request itself is wrong (the text names what).
    #[error("{0}")]
    Invalid(String),
    #[error("{0} is not a member")]
    NotMember(String),
    /// A member named lost answers heartbeats: it is not lost.
    #[error(
        "{0} is up (it answers this node's heartbeats): a member that is up is not lost; stop it for good (and wipe its disk) before recovering without it, or drain it instead"
    )]
    StillUp(String),
    /// Storage or the metadata failed midway; what was done stays done, and the recovery
    /// may be asked again.
    #[error("{0}")]
    Failed(String),
}

/// What to do with one group.
enum Verdict {
    Force {
        before: Vec<String>,
        after: Vec<String>,
        membership: openraft::Membership<ReplicaId, Replica>,
        known_committed: Option<u64>,
        cluster_committed: Option<u64>,
    },
    Leave(String),
}

/// Recovers, on this member, every group that lost the majority of its voters with `lost`,
/// and records `lost` as removed from the cluster.
pub async fn recover(
    groups: &Groups,
    cluster: &Cluster,
    lost: Vec<String>,
) -> Result<Recovery, RecoveryError> {
    let lost: BTreeSet<String> = lost.into_iter().collect();
    check(groups, cluster, &lost)?;
    tracing::warn!(
        ?lost,
        "recovering the groups that lost their majority with members lost for good"
    );
    let mut recovery = Recovery {
        member: groups.node().to_owned(),
        lost: lost.iter().cloned().collect(),
        recovered: Vec::new(),
        untouched: Vec::new(),
    };
    recover_group(groups, METADATA_GROUP, &lost, &mut recovery).await?;
    record_removals(groups, cluster, &lost).await?;
    for partition in 0..cluster.placement().partitions() {
        recover_group(groups, partition, &lost, &mut recovery).await?;
    }
    tracing::warn!(
        recovered = recovery.recovered.len(),
        untouched = recovery.untouched.len(),
        "recovery done: the recovered groups run on their survivors; admit members to make their other replicas"
    );
    Ok(recovery)
}

/// Refuses a recovery that names no member, this one, a stranger, or a member still up.
fn check(groups: &Groups, cluster: &Cluster, lost: &BTreeSet<String>) -> Result<(), RecoveryError> {
    if lost.is_empty() {
        return Err(RecoveryError::Invalid(
            "name the members lost for good (`lost`): at least one".to_owned(),
        ));
    }
    if lost.contains(groups.node()) {
        return Err(RecoveryError::Invalid(format!(
            "{} is the member asked to recover: ask a survivor, naming the others",
            groups.node()
        )));
    }
    // A member already removed (a recovery asked again) is still known to the groups that
    // count its replica.
    let recorded = Membership::read(groups.store())
        .map_err(|error| RecoveryError::Failed(format!("reading the metadata: {error}")))?;
    let mut known: BTreeSet<String> = match recorded.formed() {
        true => recorded.roster.keys().cloned().collect(),
        false => cluster.member_names().into_iter().collect(),
    };
    for (_, raft) in groups.running() {
        known.extend(super::leadership::replicas(&raft).into_values());
    }
    if let Some(stranger) = lost.iter().find(|name| !known.contains(*name)) {
        return Err(RecoveryError::NotMember(stranger.clone()));
    }
    let up = cluster
        .members()
        .into_iter()
        .find(|view| lost.contains(&view.name) && view.status == MemberStatus::Up);
    if let Some(view) = up {
        return Err(RecoveryError::StillUp(view.name));
    }
    Ok(())
}

/// Restarts `partition`'s group on its surviving voters if it lost their majority.
async fn recover_group(
    groups: &Groups,
    partition: PartitionId,
    lost: &BTreeSet<String>,
    recovery: &mut Recovery,
) -> Result<(), RecoveryError> {
    let named = (partition != METADATA_GROUP).then_some(partition);
    let Some(raft) = groups.get(partition) else {
        recovery.untouched.push(UntouchedGroup {
            partition: named,
            why: "it does not run on this member".to_owned(),
        });
        return Ok(());
    };
    let (before, after, membership, known_committed, cluster_committed) =
        match examine(&raft, groups.replica_id(), lost) {
            Verdict::Leave(why) => {
                recovery.untouched.push(UntouchedGroup {
                    partition: named,
                    why,
                });
                return Ok(());
            }
            Verdict::Force {
                before,
                after,
                membership,
                known_committed,
                cluster_committed,
            } => (
                before,
                after,
                membership,
                known_committed,
                cluster_committed,
            ),
        };
    let me = groups.replica_id();
    let (kept_through, written) = groups
        .reopen_after(partition, |log| async move {
            let kept = log.last_index();
            let written = log
                .force_configuration(me, membership)
                .await
                .map_err(|error| format!("writing the surviving configuration: {error}"))?;
            Ok((kept, written))
        })
        .await
        .map_err(|reason| {
            RecoveryError::Failed(format!("recovering {}: {reason}", label(partition)))
        })?;
    tracing::warn!(
        partition,
        ?before,
        ?after,
        kept_through,
        term = written.leader_id.term,
        "a group that lost its majority runs on its survivors"
    );
    let leader_elected = match groups.get(partition) {
        Some(raft) => raft
            .wait(Some(ELECTION_WAIT))
            .metrics(
                |m| m.current_leader.is_some(),
                "a leader among the survivors",
            )
            .await
            .is_ok(),
        None => false,
    };
    recovery.recovered.push(RecoveredGroup {
        partition: named,
        voters_before: before,
        voters_after: after,
        kept_through_index: kept_through,
        known_committed_index: known_committed,
        cluster_committed_index: cluster_committed,
        term: written.leader_id.term,
        leader_elected,
    });
    Ok(())
}

/// Whether `raft`'s group lost the majority of its voters with `lost`, and if so the
/// configuration of its survivors (the learners not lost stay learners).
fn examine(raft: &PartitionRaft, me: ReplicaId, lost: &BTreeSet<String>) -> Verdict {
    let metrics = raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    let member_of = |id: &ReplicaId| {
        membership.get_node(id).map_or_else(
            || format!("replica {id:x}"),
            |replica| replica.member.clone(),
        )
    };
    let is_lost = |id: &ReplicaId| lost.contains(&member_of(id));
    let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
    if !voters.contains(&me) {
        return Verdict::Leave(
            "this member's replica does not vote in it: recover it on a member whose replica does"
                .to_owned(),
        );
    }
    let majority_lost = membership.get_joint_config().iter().any(|config| {
        let surviving = config.iter().filter(|id| !is_lost(id)).count();
        surviving * 2 <= config.len()
    });
    if !majority_lost {
        return Verdict::Leave(
            "a majority of its voters survive: it elects a leader and replaces the lost replicas by itself"
                .to_owned(),
        );
    }
    let survivors: BTreeSet<ReplicaId> = voters.iter().copied().filter(|id| !is_lost(id)).collect();
    let nodes: BTreeMap<ReplicaId, Replica> = membership
        .nodes()
        .filter(|(id, _)| !is_lost(id))
        .map(|(id, replica)| (*id, replica.clone()))
        .collect();
    let names = |ids: &BTreeSet<ReplicaId>| ids.iter().map(member_of).collect::<Vec<_>>();
    let forced = openraft::Membership::new(vec![survivors.clone()], nodes)
        .expect("every surviving voter is among the nodes kept");
    Verdict::Force {
        before: names(&voters),
        after: names(&survivors),
        membership: forced,
        known_committed: metrics.local_committed.map(|log_id| log_id.index),
        cluster_committed: metrics.cluster_committed.map(|log_id| log_id.index),
    }
}

/// Records `lost` as removed once the metadata group has a leader (this member, when it was
/// just recovered here), leaving out those already removed by an earlier attempt.
async fn record_removals(
    groups: &Groups,
    cluster: &Cluster,
    lost: &BTreeSet<String>,
) -> Result<(), RecoveryError> {
    let recorded = Membership::read(groups.store())
        .map_err(|error| RecoveryError::Failed(format!("reading the metadata: {error}")))?;
    let names: Vec<String> = lost
        .iter()
        .filter(|name| !recorded.formed() || recorded.roster.contains_key(*name))
        .cloned()
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    // An election among survivors takes an election timeout or two. Where this member leads
    // the metadata group once it is over (it was recovered here), it makes the change itself:
    // the leader it last heard of may be one of the lost, which a CI run asked in vain. A
    // leader elected but not yet past its read barrier answers "not leader": asked again
    // until the wait is over (a busy CI machine took longer than one election for it).
    let change = MemberChange::RemoveLost { names };
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
    loop {
        let leads = match groups.get(METADATA_GROUP) {
            Some(raft) => raft
                .wait(Some(
                    deadline.saturating_duration_since(tokio::time::Instant::now()),
                ))
                .metrics(|m| m.current_leader.is_some(), "a metadata leader")
                .await
                .is_ok_and(|m| m.current_leader == Some(m.id)),
            None => false,
        };
        let outcome = if leads {
            super::members::change_here(groups, cluster, &change).await
        } else {
            super::members::change(groups, cluster, change.clone()).await
        };
        match outcome {
            ChangeOutcome::Done { .. } => return Ok(()),
            ChangeOutcome::Refused(reason) => {
                return Err(RecoveryError::Failed(format!(
                    "recording the lost members as removed: {reason}"
                )));
            }
            ChangeOutcome::NotLeader { .. } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ChangeOutcome::NotLeader { .. } => {
                return Err(RecoveryError::Failed(
                    "recording the lost members as removed: the metadata group has no leader yet; ask again".to_owned(),
                ));
            }
        }
    }
}

fn label(partition: PartitionId) -> String {
    match partition {
        METADATA_GROUP => "the metadata group".to_owned(),
        partition => format!("partition {partition}"),
    }
}
