//! Telling a rolled-back data directory (put back from an old copy) from one that merely
//! crashed: what the node's peers saw of it that it no longer holds.
//!
//! Raft's safety rests on two promises a replica keeps across restarts: the vote it gave in a
//! term, and the entries it acknowledged. A node started on a copy of its directory from
//! before it made some of them could break both: vote again in a term it already voted in,
//! or help elect a leader that lacks an entry it acknowledged (the loss openraft's issues on
//! wiped and restored nodes describe, e.g. #1808). A crash alone never forgets either: a vote
//! is answered only once it is on disk, and an append only once its entries are.
//!
//! So each node remembers, in memory, the highest term and log id each peer replica answered
//! it with (only what that replica had on disk when it answered). A node that starts on a
//! directory it used before asks its peers what they saw of its replica before any of its
//! groups runs; when one saw a later vote or a longer log than the directory holds, the node
//! takes a new incarnation and rejoins every group as a new replica (`repair`), with what the
//! directory holds as its head start. A peer that is down when the node asks cannot tell it:
//! a directory restored while another replica is also down may go unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::types::{PartitionId, ReplicaId};
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The cluster handler that answers what a node saw of a replica.
pub const VOUCH_TARGET: &str = "raft-vouch";

/// How long a restarting node waits for the rest of its peers' answers once one has answered
/// (its links are up), before it goes on with those it has: a peer that is down must not keep
/// it from rejoining.
pub(crate) const PATIENCE: Duration = Duration::from_secs(3);

/// How long it waits for a first answer (its links coming up) before it goes on alone.
const FIRST_ANSWER_PATIENCE: Duration = Duration::from_secs(10);

/// How often it asks a peer that has not answered yet.
const ASK_EVERY: Duration = Duration::from_millis(100);

/// What a replica had on disk in one group, as far as one node knows: the term of its vote,
/// and the id (term, index) of the last entry it held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    pub vote_term: u64,
    pub last_log: Option<(u64, u64)>,
}

impl Held {
    /// What `self` has that `held` lacks, said for a person; `None` when `held` has it all.
    fn beyond(&self, held: &Held) -> Option<String> {
        if self.vote_term > held.vote_term {
            return Some(format!(
                "a vote in term {} (it holds term {})",
                self.vote_term, held.vote_term
            ));
        }
        // A shorter log is forgotten only if no later leader could have cut it: a replica
        // that voted in a later term than the entries' may have had them (never committed)
        // truncated by that term's leader, which is no loss.
        let cut_by_a_later_leader = self.last_log.is_some_and(|(term, _)| held.vote_term > term);
        if self.last_log > held.last_log && !cut_by_a_later_leader {
            return Some(format!(
                "entries through {} (it holds {})",
                show(self.last_log),
                show(held.last_log)
            ));
        }
        None
    }

    fn raise(&mut self, other: Held) {
        self.vote_term = self.vote_term.max(other.vote_term);
        self.last_log = self.last_log.max(other.last_log);
    }
}

fn show(log: Option<(u64, u64)>) -> String {
    match log {
        Some((term, index)) => format!("term {term} index {index}"),
        None => "no entry".to_owned(),
    }
}

/// What this node saw its peers' replicas answer, by replica and partition. Kept in memory:
/// a node that restarts forgets it, which loses no safety (it only vouches less).
#[derive(Debug, Default)]
pub(crate) struct Witness {
    seen: DashMap<(ReplicaId, PartitionId), Held>,
}

impl Witness {
    /// Notes that `replica` answered with `held` in `partition`'s group, on disk.
    pub(crate) fn saw(&self, replica: ReplicaId, partition: PartitionId, held: Held) {
        self.seen
            .entry((replica, partition))
            .or_default()
            .raise(held);
    }

    /// Everything seen of `replica`, by partition.
    fn of(&self, replica: ReplicaId) -> BTreeMap<PartitionId, Held> {
        self.seen
            .iter()
            .filter(|seen| seen.key().0 == replica)
            .map(|seen| (seen.key().1, *seen.value()))
            .collect()
    }
}

/// Answers `raft-vouch`: what this node saw of the replica the request names.
pub(crate) struct VouchHandler(pub Arc<Witness>);

impl Handler for VouchHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let witness = self.0.clone();
        Box::pin(async move {
            let replica: ReplicaId = codec::decode(&operation).map_err(|e| e.to_string())?;
            codec::encode(&witness.of(replica)).map_err(|e| e.to_string())
        })
    }

    /// Asked before the asking node serves anything, and answered before this one does.
    fn needs_serving(&self) -> bool {
        false
    }
}

/// What the peers said of a restarting node's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No peer that answered saw more than it holds.
    Holds {
        /// The peers that did not answer within [`PATIENCE`].
        unheard: Vec<String>,
    },
    /// A peer saw more than it holds: it was rolled back. Says what, first found.
    Forgot(String),
}

/// Asks every peer in `peers` what it saw of `replica` (all at once, again every
/// [`ASK_EVERY`] while some have not answered) and compares it with what this node's
/// directory holds of each partition in `held`. Waits for every answer, or [`PATIENCE`] after
/// the first, or [`FIRST_ANSWER_PATIENCE`] for none. A peer that restarted since knows
/// nothing of the replica, and vouches for it.
pub(crate) async fn vouch(
    cluster: &Cluster,
    peers: BTreeSet<String>,
    replica: ReplicaId,
    held: &BTreeMap<PartitionId, Held>,
) -> Verdict {
    let started = tokio::time::Instant::now();
    let mut first_answer = None;
    let mut waiting = peers;
    while !waiting.is_empty() {
        let asks = waiting
            .iter()
            .map(|peer| async move { (peer.clone(), ask(cluster, peer, replica).await) });
        for (peer, answer) in futures::future::join_all(asks).await {
            let Ok(seen) = answer else {
                continue;
            };
            first_answer.get_or_insert_with(tokio::time::Instant::now);
            if let Some(forgot) = compare(&peer, &seen, held) {
                return Verdict::Forgot(forgot);
            }
            waiting.remove(&peer);
        }
        let deadline = match first_answer {
            Some(first) => first + PATIENCE,
            None => started + FIRST_ANSWER_PATIENCE,
        };
        if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
    Verdict::Holds {
        unheard: waiting.into_iter().collect(),
    }
}

/// What `peer` saw that `held` lacks, said for a person.
fn compare(
    peer: &str,
    seen: &BTreeMap<PartitionId, Held>,
    held: &BTreeMap<PartitionId, Held>,
) -> Option<String> {
    // Only the partitions asked about: what the directory holds of each is in `held`.
    held.iter().find_map(|(partition, here)| {
        seen.get(partition)?
            .beyond(here)
            .map(|what| format!("{peer} saw partition {partition}'s replica here with {what}"))
    })
}

async fn ask(
    cluster: &Cluster,
    peer: &str,
    replica: ReplicaId,
) -> Result<BTreeMap<PartitionId, Held>, String> {
    let request = codec::encode(&replica).map_err(|e| e.to_string())?;
    let bytes = cluster
        .call_uncounted(peer, VOUCH_TARGET, request, Duration::from_secs(1))
        .await
        .map_err(|e| e.to_string())?;
    codec::decode(&bytes).map_err(|e| e.to_string())
}

/// Registers the vouch handler with `cluster`.
pub(crate) fn serve(cluster: &Cluster, witness: Arc<Witness>) {
    cluster.register(VOUCH_TARGET, Arc::new(VouchHandler(witness)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(vote_term: u64, last_log: Option<(u64, u64)>) -> Held {
        Held {
            vote_term,
            last_log,
        }
    }

    #[test]
    fn a_directory_holding_what_peers_saw_holds() {
        let seen = BTreeMap::from([(3, held(4, Some((4, 10))))]);
        // The same, or more (a later term after a truncation counts as more).
        for here in [held(4, Some((4, 10))), held(5, Some((5, 9)))] {
            assert_eq!(compare("b", &seen, &BTreeMap::from([(3, here)])), None);
        }
    }

    #[test]
    fn a_forgotten_vote_or_entry_is_named() {
        let seen = BTreeMap::from([(3, held(4, Some((4, 10))))]);
        let vote = compare("b", &seen, &BTreeMap::from([(3, held(3, Some((4, 10))))]));
        assert_eq!(
            vote.as_deref(),
            Some("b saw partition 3's replica here with a vote in term 4 (it holds term 3)")
        );
        let entries = compare("b", &seen, &BTreeMap::from([(3, held(4, Some((4, 7))))]));
        assert_eq!(
            entries.as_deref(),
            Some(
                "b saw partition 3's replica here with entries through term 4 index 10 (it holds term 4 index 7)"
            )
        );
        // A partition the directory holds nothing of forgot everything seen of it.
        assert!(compare("b", &seen, &BTreeMap::from([(3, Held::default())])).is_some());
        // Partitions not asked about are not compared.
        assert_eq!(compare("b", &seen, &BTreeMap::new()), None);
    }

    #[test]
    fn a_log_cut_by_a_later_leader_is_not_forgotten() {
        // Entries through (4, 10) acknowledged, never committed; the leader of term 5 cut
        // them to (4, 8) and this replica crashed before taking term 5's entries.
        let seen = BTreeMap::from([(3, held(4, Some((4, 10))))]);
        let cut = BTreeMap::from([(3, held(5, Some((4, 8))))]);
        assert_eq!(compare("b", &seen, &cut), None);
    }

    #[test]
    fn a_witness_keeps_the_most_it_saw_of_each_replica() {
        let witness = Witness::default();
        witness.saw(7, 1, held(2, Some((2, 5))));
        witness.saw(7, 1, held(3, None));
        witness.saw(7, 2, held(1, Some((1, 1))));
        witness.saw(8, 1, held(9, Some((9, 9))));
        assert_eq!(
            witness.of(7),
            BTreeMap::from([(1, held(3, Some((2, 5)))), (2, held(1, Some((1, 1))))])
        );
    }
}
