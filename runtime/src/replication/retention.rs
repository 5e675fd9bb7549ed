//! The retention cut with replicated partitions: each partition's leader proposes
//! `Proposal::ForgetCommands` every `store::retention::cut_every`, with its clock's bound in
//! the entry, so that every replica forgets the same processed command ids at the same
//! point of the partition's log. Proposed only once the cluster's format reads it
//! (`format::FORGET_COMMANDS_FROM`): a member of an older build could not decode the entry.

use std::time::Duration;

use super::format::{FORGET_COMMANDS_FROM, READS};
use super::groups::Groups;
use super::metadata::{METADATA_GROUP, Membership};
use crate::store::retention::{cut_before, cut_every};

/// Runs for the node's life: proposes a cut in every partition this node leads.
pub(crate) async fn run(groups: Groups, retention: Duration) {
    loop {
        tokio::time::sleep(cut_every(retention)).await;
        if READS < FORGET_COMMANDS_FROM || cluster_format(&groups) < FORGET_COMMANDS_FROM {
            continue;
        }
        let before_micros = cut_before(retention);
        for (partition, raft) in groups.running() {
            if partition == METADATA_GROUP || !raft.is_leader() {
                continue;
            }
            propose(&raft, partition, before_micros).await;
        }
    }
}

/// The cluster's format as this node's replica of the metadata holds it; a node alone
/// (no metadata group) reads only its own build's.
fn cluster_format(groups: &Groups) -> u32 {
    if !groups.in_cluster() {
        return READS;
    }
    Membership::read(groups.store()).map_or(super::format::FIRST, |membership| membership.format)
}

#[cfg(not(feature = "previous-format"))]
async fn propose(raft: &super::groups::PartitionRaft, partition: u32, before_micros: i64) {
    // Not the leader any more, or a quorum out of reach: the next leader's next cut does it.
    if let Err(error) = raft
        .client_write(super::types::Proposal::ForgetCommands { before_micros })
        .await
    {
        tracing::debug!(partition, %error, "a retention cut was not made");
    }
}

/// A build of format 1 has no cut to propose (`READS` keeps `run` from getting here).
#[cfg(feature = "previous-format")]
async fn propose(_: &super::groups::PartitionRaft, _: u32, _: i64) {}
