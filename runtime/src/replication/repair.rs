//! Bringing back a replica that lost its disk: a leader whose group lists a member under an
//! incarnation that member no longer runs adds its new incarnation as a learner, waits until
//! it has caught up, then swaps it in for the old one among the voters.
//!
//! A node that starts on an emptied or replaced data directory draws a new incarnation, which
//! is its replica id in every group: it cannot vote as the replica it was (what it voted and
//! stored is gone, so voting again could elect a leader without an acknowledged write, the
//! loss openraft's issues on wiped nodes describe). Until it is swapped in, the group runs on
//! its other replicas; the messages meant for the old incarnation are refused by the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;

use super::forming::{Hello, ask};
use super::groups::{Groups, PartitionRaft};
use super::leadership::voters;
use super::types::{PartitionId, Replica, ReplicaId};
use crate::cluster::Cluster;

/// How often a node looks for replicas to bring back in the groups it leads.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// Runs for the node's life: every [`LOOK_EVERY`], asks the members of the groups this node
/// leads who they are now, and replaces each replica whose member came back as another
/// incarnation.
pub(crate) async fn run(groups: Groups, cluster: Cluster) {
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
        let mut current: BTreeMap<String, ReplicaId> = BTreeMap::new();
        let members: BTreeSet<String> = led
            .iter()
            .flat_map(|(_, raft)| voters(raft).into_values())
            .filter(|member| member != groups.node())
            .collect();
        for member in members {
            if let Ok(Hello { replica, .. }) = ask(&cluster, &member).await {
                current.insert(member, replica);
            }
        }
        for (partition, raft) in led {
            for (old, member) in voters(&raft) {
                let Some(new) = current.get(&member).copied() else {
                    continue;
                };
                if new == old {
                    continue;
                }
                if let Err(error) = replace(&raft, old, new, &member).await {
                    tracing::warn!(partition, %member, %error, "bringing a replica back failed; trying again");
                } else {
                    tracing::info!(partition, %member, old, new, "a replica that lost its disk is a voter again under its new incarnation");
                }
            }
        }
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
    raft.add_learner(new, replica, true)
        .await
        .map_err(|e| format!("adding it as a learner: {e}"))?;
    let mut voters: BTreeSet<ReplicaId> = voters(raft).into_keys().collect();
    voters.remove(&old);
    voters.insert(new);
    raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
        .await
        .map_err(|e| format!("swapping it in among the voters: {e}"))?;
    Ok(())
}
