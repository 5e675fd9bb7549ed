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

/// How long an operation refused by a former leader (or finding no leader during an election)
/// waits for this node to hear of the new one before it answers "unavailable": a failover
/// takes about one lease (1 s with `RaftSettings::default`), a lease and a half when the first
/// candidate loses, two when the leader was cut off one way; this covers those with a margin.
pub const NEW_LEADER_WAIT: std::time::Duration = std::time::Duration::from_millis(3_000);

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
            Journal::Direct(store) => {
                store.ensure_room()?;
                store.append(request).await
            }
            Journal::Replicated { groups, partitions } => {
                // Checked here, on the leader, before proposing: applying never refuses.
                groups.store().ensure_room()?;
                let partition = partition_of(&request.stream, *partitions);
                // Every replica stores the leader's time, not its own.
                request
                    .metadata
                    .recorded_at_micros
                    .get_or_insert_with(now_micros);
                match propose(groups, partition, Proposal::Append(ProposedAppend(request))).await? {
                    (Applied::Appended(mut outcome), index) => {
                        outcome.replicated_at = Some((partition, index));
                        Ok(outcome)
                    }
                    (Applied::Refused(refusal), _) => Err(refusal.into_store_error()),
                    (other, _) => Err(unexpected(partition, &other)),
                }
            }
        }
    }

    /// Where this node's replica of `stream`'s partition has applied its log to (partition,
    /// Raft index): a position every write answered so far in that partition is at or before.
    /// `None` without replication.
    pub fn applied_at(&self, stream: &str) -> Option<(PartitionId, u64)> {
        match self {
            Journal::Direct(_) => None,
            Journal::Replicated { groups, .. } => {
                let partition = self.partition(stream);
                Some((partition, groups.applied_index(partition)?))
            }
        }
    }

    /// Waits, for at most `patience`, until this node's replica of `partition` has applied its
    /// log through `index`. Fails saying why: no replication, no replica here, or not yet.
    pub async fn wait_applied(
        &self,
        partition: PartitionId,
        index: u64,
        patience: std::time::Duration,
    ) -> Result<(), String> {
        match self {
            Journal::Direct(_) => Err(
                "partition positions name writes of a cluster with replication; this node writes directly: pass the log position its answer named".into(),
            ),
            Journal::Replicated { groups, .. } => {
                groups.wait_applied(partition, index, patience).await
            }
        }
    }

    /// Whether writes go through partition groups.
    pub fn is_replicated(&self) -> bool {
        matches!(self, Journal::Replicated { .. })
    }

    /// Whether this node holds a replica of `partition` (always, without replication).
    pub fn holds(&self, partition: PartitionId) -> bool {
        match self {
            Journal::Direct(_) => true,
            Journal::Replicated { groups, .. } => groups.holds(partition),
        }
    }

    /// Whether this node votes in `stream`'s partition now, so that its log keeps the stream's
    /// read-model rows up to date (a member the partition moved off keeps its old rows).
    /// Always without replication.
    pub fn keeps_up(&self, stream: &str) -> bool {
        match self {
            Journal::Direct(_) => true,
            Journal::Replicated { groups, .. } => groups.votes_in(self.partition(stream)),
        }
    }

    /// Whether this node holds a replica of every partition (so that its read models hold
    /// every item). Always without replication.
    pub fn holds_every_partition(&self) -> bool {
        match self {
            Journal::Direct(_) => true,
            Journal::Replicated { groups, partitions } => {
                (0..*partitions).all(|partition| groups.holds(partition))
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
                    (Applied::Fenced(processed), _) => Ok(processed),
                    (Applied::Refused(refusal), _) => Err(refusal.into_store_error()),
                    (other, _) => Err(unexpected(partition, &other)),
                }
            }
        }
    }
}

/// Proposes `proposal` to `partition`'s group here and waits for what applying it answered,
/// and the index of its entry.
async fn propose(
    groups: &Groups,
    partition: PartitionId,
    proposal: Proposal,
) -> Result<(Applied, u64), StoreError> {
    let Some(raft) = groups.get(partition) else {
        return Err(StoreError::NotLeader {
            partition,
            leader: None,
        });
    };
    match raft.client_write(proposal).await {
        Ok(written) => Ok((written.data, written.log_id.index)),
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

pub(super) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
