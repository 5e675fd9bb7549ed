//! Elections as soon as a silent leader's lease has run out. A follower cannot vote before
//! the lease it gave its leader runs out (openraft refuses, so that a live leader is not
//! deposed), and its election timer knows nothing of that lease: a timer that fires inside it
//! is refused and must wait for its next turn, so a leader that went silent (stopped, cut
//! off, unable to send) was replaced only about a lease plus an election timeout after its
//! last heartbeat. Here each node notes when it last heard each group's leader, and the
//! follower with the lowest replica id stands for election just after the lease has run out.
//! The other followers keep their timers, in case it cannot (it may be the one cut off).
//!
//! [`Leadership::member_down`](crate::cluster::Leadership::member_down) does the same at once
//! when a leader's link closes (a kill -9); this covers the silences no link reports.

use std::time::Duration;

use dashmap::DashMap;
use openraft::ServerState;
use openraft::rt::WatchReceiver;
use tokio::time::Instant;

use super::groups::Groups;
use super::leadership;
use super::types::PartitionId;

/// How often a node looks for silent leaders: the election comes at most this late after
/// the lease.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// Margin after the lease, so that every follower's lease has run out (they heard the last
/// heartbeat at about the same time).
const AFTER_THE_LEASE: Duration = Duration::from_millis(20);

/// When this node's replica of each group last heard its leader, and in which term.
#[derive(Debug, Default)]
pub(crate) struct LastHeard {
    heard: DashMap<PartitionId, (u64, Instant)>,
    /// Each group's term as this node last looked, and when it first saw it: a leader never
    /// heard in its term (it went silent right after its election) is silent since then.
    noticed: DashMap<PartitionId, (u64, Instant)>,
    /// The silence for which this node last stood for election early (when it began), so
    /// that it does so once per silence: a later election is the timers' job.
    stood: DashMap<PartitionId, Instant>,
}

impl LastHeard {
    /// Notes that `partition`'s leader of `term` was heard just now (an append it sent was
    /// accepted or checked against the log, which renews this replica's lease of it).
    pub(crate) fn heard(&self, partition: PartitionId, term: u64) {
        self.heard.insert(partition, (term, Instant::now()));
    }
}

/// Runs for the node's life: every [`LOOK_EVERY`], stands for election in each group whose
/// leader has not been heard for a lease, where this replica is the follower to do so.
pub(crate) async fn run(groups: Groups, last: std::sync::Arc<LastHeard>, lease: Duration) {
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        for (partition, raft) in groups.running() {
            let (state, term, leader) = {
                let metrics = raft.metrics();
                let metrics = metrics.borrow_watched();
                (metrics.state, metrics.current_term, metrics.current_leader)
            };
            let Some(leader) = leader else { continue };
            if state != ServerState::Follower {
                continue;
            }
            let noticed = {
                let mut noticed = last
                    .noticed
                    .entry(partition)
                    .or_insert((term, Instant::now()));
                if noticed.0 != term {
                    *noticed = (term, Instant::now());
                }
                noticed.1
            };
            let silent_since = match last.heard.get(&partition).map(|entry| *entry) {
                Some((heard_term, heard_at)) if heard_term == term => heard_at,
                _ => noticed,
            };
            if silent_since.elapsed() < lease + AFTER_THE_LEASE {
                continue;
            }
            if last
                .stood
                .get(&partition)
                .is_some_and(|stood| *stood == silent_since)
            {
                continue;
            }
            let first_follower = leadership::voters(&raft)
                .into_keys()
                .filter(|id| *id != leader)
                .min();
            if first_follower != Some(groups.replica_id()) {
                continue;
            }
            last.stood.insert(partition, silent_since);
            tracing::info!(
                partition,
                term,
                silent_ms = silent_since.elapsed().as_millis() as u64,
                "the partition's leader has been silent for its whole lease: standing for election"
            );
            let _ = raft.trigger().elect(true).await;
        }
    }
}
