//! Replicated partitions: each partition of aggregates is a Raft group (openraft), replicated
//! on up to three members.
//!
//! `types` says what a group agrees on, `log_writer` and `log_store` keep every group's Raft
//! log in one file with one group-committing writer, and `state_machine` applies committed
//! entries to the node's event store.

mod log_store;
mod log_writer;
mod state_machine;
mod types;

#[cfg(test)]
mod tests;

pub use log_store::{GroupLog, RaftLogs};
pub use state_machine::{APPLIED_TABLE, PartitionMachine, PartitionSnapshot, SnapshotBuilder};
pub use types::{
    Applied, PartitionId, Proposal, ProposedAppend, RaftTypes, Refusal, Replica, ReplicaId,
};
