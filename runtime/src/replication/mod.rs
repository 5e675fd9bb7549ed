//! Replicated partitions: each partition of aggregates is a Raft group (openraft), replicated
//! on up to three members.
//!
//! `types` says what a group agrees on, `log_writer` and `log_store` keep every group's Raft
//! log in one file with one group-committing writer, `state_machine` applies committed
//! entries to the node's event store, `snapshot` writes a partition's data as a snapshot and
//! installs one, `network` carries Raft messages over the cluster's
//! calls, `groups` runs the node's groups, `forming` sets a group up the first time its replicas
//! meet, `leadership` tells hosts and saga runners when this node comes to lead a
//! partition or stops, `rollback` tells a rolled-back data directory by what peers saw of
//! it, `reconcile` moves replicas where the member list puts them (a member joined, drained
//! or removed; a replica that lost its disk, or was rolled back, back in under its new
//! incarnation), `members` changes the member list, `backup` takes
//! every partition's snapshot for a backup and proposes a backup's entries to a new cluster,
//! `admission` lets a new node ask to join,
//! `drain` tells a drained member when it holds nothing more, `recovery` restarts
//! the groups that lost a majority of their voters for good on their survivors, `balance` hands leads back to their preferred members, `silence` calls an
//! election as soon as a silent leader's lease has run out, `directory` tells a member
//! who leads the partitions it holds no replica of, and `metadata` keeps the member list and
//! each member's incarnation in a group of their own.

mod admission;
mod backup;
mod backup_parts;
mod balance;
mod directory;
mod drain;
mod format;
mod forming;
mod groups;
mod journal;
mod leadership;
mod log_store;
mod log_writer;
mod members;
mod metadata;
mod move_permits;
mod network;
mod reconcile;
mod recovery;
mod report;
mod retention;
mod rollback;
mod silence;
mod snapshot;
mod snapshot_room;
mod state_machine;
mod types;

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod tests;

pub use admission::{JoinAnswer, JoinRequest, wait_until_admitted};
pub use backup::{
    FORMAT as BACKUP_FORMAT, MAGIC as BACKUP_MAGIC, Record as BackupRecord, RestoredBatch,
    formation as cluster_formation, read_magic, read_record, restore_batch, take as take_backup,
    write_record,
};
pub use format::READS as CLUSTER_FORMAT_READ;
pub use groups::{GroupError, Groups, PartitionRaft, RaftSettings};
pub use journal::{Journal, NEW_LEADER_WAIT};
pub use leadership::{LeadershipEvent, LeadershipListener};
pub use log_store::{GroupLog, Incarnation, RaftLogs};
pub use members::{ChangeOutcome, MemberChange, change as change_members};
pub use metadata::{MEMBERS_STREAM, METADATA_GROUP, Membership};
pub use network::{GroupNetwork, GroupNetworkFactory, RAFT_TARGET};
pub use reconcile::MoveReport;
pub use recovery::{RecoveredGroup, Recovery, RecoveryError, UntouchedGroup, recover};
pub use report::{PartitionReport, ReplicaReport};
pub use snapshot::{PartitionLayout, PartitionShape, ReplicatedTable};
pub use state_machine::{APPLIED_TABLE, PartitionMachine, PartitionSnapshot, SnapshotBuilder};
pub use types::{
    Applied, PartitionId, Proposal, ProposedAppend, RaftTypes, Refusal, Replica, ReplicaId,
};
