//! Bringing back a replica that lost its disk: a leader whose group lists a member under an
//! incarnation other than the one the cluster's metadata records for it (`metadata`) adds the
//! recorded one as a learner, waits until it has caught up, then swaps it in for the old one
//! among the voters.
//!
//! A node that starts on an emptied or replaced data directory draws a new incarnation, which
//! is its replica id in every group: it cannot vote as the replica it was (what it voted and
//! stored is gone, so voting again could elect a leader without an acknowledged write, the
//! loss openraft's issues on wiped nodes describe). Until it is swapped in, the group runs on
//! its other replicas; the messages meant for the old incarnation are refused by the new one.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use openraft::ChangeMembers;

use super::groups::{Groups, PartitionRaft};
use super::leadership::voters;
use super::metadata::Membership;
use super::types::{PartitionId, Replica, ReplicaId};

/// How often a node looks for replicas to bring back in the groups it leads.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// How many replicas one node brings back at once.
const AT_ONCE: usize = 3;

/// Runs for the node's life: every [`LOOK_EVERY`], reads the incarnations the metadata
/// records (as this node's replica applied them) and, in each group this node leads,
/// replaces each voter whose member now runs as another incarnation.
pub(crate) async fn run(groups: Groups) {
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let led: Vec<(PartitionId, PartitionRaft)> = groups
            .running()
            .into_iter()
            .filter(|(_, raft)| raft.is_leader())
            .collect();
        if led.is_empty() {
            continue;
        }
        let current = match Membership::read(groups.store()) {
            Ok(membership) => membership.incarnations,
            Err(error) => {
                tracing::warn!(%error, "reading the recorded incarnations failed; trying again");
                continue;
            }
        };
        let replacements: Vec<(PartitionId, PartitionRaft, ReplicaId, ReplicaId, String)> = led
            .into_iter()
            .flat_map(|(partition, raft)| {
                voters(&raft)
                    .into_iter()
                    .filter_map(|(old, member)| {
                        let new = current.get(&member).copied()?;
                        (new != old).then_some((partition, raft.clone(), old, new, member))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        // Several at once: most of a replacement is waiting for the learner to catch up, and
        // one after the other a node leading a third of 64 partitions took over a minute.
        futures::stream::iter(replacements)
            .for_each_concurrent(AT_ONCE, |(partition, raft, old, new, member)| async move {
                if let Err(error) = replace(&raft, old, new, &member).await {
                    tracing::warn!(partition, %member, %error, "bringing a replica back failed; trying again");
                } else {
                    tracing::info!(partition, %member, old, new, "a replica that lost its disk is a voter again under its new incarnation");
                }
            })
            .await;
    }
}

/// Adds `new` as a learner, waits until it caught up, then makes it a voter in `old`'s place.
async fn replace(
    raft: &PartitionRaft,
    old: ReplicaId,
    new: ReplicaId,
    member: &str,
) -> Result<(), String> {
    tracing::info!(%member, old, new, "a replica came back as a new incarnation: catching it up as a learner");
    let replica = Replica {
        member: member.to_owned(),
    };
    let mut voters: BTreeSet<ReplicaId> = voters(raft).into_keys().collect();
    // Already voting: a change this group's former leader began (a joint configuration, or
    // the new incarnation leading it now) is finished from here.
    if !voters.contains(&new) {
        raft.add_learner(new, replica, true)
            .await
            .map_err(|e| format!("adding it as a learner: {e}"))?;
    }
    voters.remove(&old);
    voters.insert(new);
    raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
        .await
        .map_err(|e| format!("swapping it in among the voters: {e}"))?;
    Ok(())
}
