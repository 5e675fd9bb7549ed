//! Where a partition's writes go: straight into this node's store, or proposed to the
//! partition's Raft group and applied by every replica.
//!
//! Aggregates and sagas write through a [`Journal`] and read from the store, so the same code
//! runs on a node with replication and one without. A replicated write answers what applying
//! it answered; [`StoreError::NotLeader`] when it was refused before it was proposed (nothing
//! written anywhere), [`StoreError::OutcomeUnknown`] when it was proposed and its fate was
//! lost.

use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};

use super::groups::Groups;
use super::leadership::LeadershipListener;
use super::types::{Applied, PartitionId, Proposal, ProposedAppend};
use crate::placement::partition_of;
use crate::store::{AppendOutcome, AppendRequest, EventStore, ProcessedCommand, StoreError};

/// Where writes go. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Journal {
    /// Into this node's store, which is the only copy.
    Direct(EventStore),
    /// Through the partition's group on this node (which must lead it).
    Replicated { groups: Groups, partitions: u32 },
}

impl Journal {
    /// Appends `request` to its stream if the stream is at the expected version (see
    /// [`EventStore::append`]); answers once it is durable (on a majority of replicas).
    pub async fn append(&self, mut request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        match self {
            Journal::Direct(store) => store.append(request).await,
            Journal::Replicated { groups, partitions } => {
                let partition = partition_of(&request.stream, *partitions);
                // Every replica stores the leader's time, not its own.
                request
                    .metadata
                    .recorded_at_micros
                    .get_or_insert_with(now_micros);
                match propose(groups, partition, Proposal::Append(ProposedAppend(request))).await? {
                    Applied::Appended(outcome) => Ok(outcome),
                    Applied::Refused(refusal) => Err(refusal.into_store_error()),
                    other => Err(unexpected(partition, &other)),
                }
            }
        }
    }

    /// The partition, of the journal's partitions, of `stream` (0 for a direct journal, which
    /// has one).
    fn partition(&self, stream: &str) -> PartitionId {
        match self {
            Journal::Direct(_) => 0,
            Journal::Replicated { partitions, .. } => partition_of(stream, *partitions),
        }
    }

    /// Whether this node writes `stream` now: always directly; with replication, when it leads
    /// the stream's partition.
    pub fn leads(&self, stream: &str) -> bool {
        match self {
            Journal::Direct(_) => true,
            Journal::Replicated { groups, .. } => groups.leads(self.partition(stream)),
        }
    }

    /// Waits until what this node's store holds of `stream` is complete and current, so that
    /// a read of it is linearizable: at once directly; with replication, once this node is
    /// known to lead the partition and has applied everything committed
    /// ([`StoreError::NotLeader`] otherwise).
    pub async fn read_barrier(&self, stream: &str) -> Result<(), StoreError> {
        match self {
            Journal::Direct(_) => Ok(()),
            Journal::Replicated { groups, .. } => groups.read_barrier(self.partition(stream)).await,
        }
    }

    /// Calls `listener` when this node comes to lead a partition or stops (never, directly:
    /// a direct journal's node always leads what it holds).
    pub fn on_leadership(&self, listener: LeadershipListener) {
        if let Journal::Replicated { groups, .. } = self {
            groups.on_leadership(listener);
        }
    }

    /// Settles command id `command_id` of `stream` (see [`EventStore::fence_command`]).
    pub async fn fence(
        &self,
        stream: &str,
        command_id: &str,
    ) -> Result<Option<ProcessedCommand>, StoreError> {
        match self {
            Journal::Direct(store) => store.fence_command(stream, command_id).await,
            Journal::Replicated { groups, partitions } => {
                let partition = partition_of(stream, *partitions);
                let proposal = Proposal::Fence {
                    stream: stream.to_owned(),
                    command_id: command_id.to_owned(),
                };
                match propose(groups, partition, proposal).await? {
                    Applied::Fenced(processed) => Ok(processed),
                    Applied::Refused(refusal) => Err(refusal.into_store_error()),
                    other => Err(unexpected(partition, &other)),
                }
            }
        }
    }
}

/// Proposes `proposal` to `partition`'s group here and waits for what applying it answered.
async fn propose(
    groups: &Groups,
    partition: PartitionId,
    proposal: Proposal,
) -> Result<Applied, StoreError> {
    let Some(raft) = groups.get(partition) else {
        return Err(StoreError::NotLeader {
            partition,
            leader: None,
        });
    };
    match raft.client_write(proposal).await {
        Ok(written) => Ok(written.data),
        // Refused before its entry was appended: nothing can come of it.
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            Err(StoreError::NotLeader {
                partition,
                leader: forward.leader_node.map(|node| node.member),
            })
        }
        Err(error) => Err(StoreError::OutcomeUnknown {
            partition,
            reason: error.to_string(),
        }),
    }
}

fn unexpected(partition: PartitionId, applied: &Applied) -> StoreError {
    StoreError::OutcomeUnknown {
        partition,
        reason: format!("applying the entry answered something else: {applied:?}"),
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
