//! Raft messages between replicas, carried by the cluster's calls to handler `raft`.
//!
//! Every partition group shares the node's links: a message names its partition and the
//! replica it is for, and the receiving node hands it to that group's `Raft`. A message for a
//! replica id the node does not run (an old incarnation, a group it does not hold) is refused,
//! so a wiped node's new incarnation is never mistaken for its old one.
//!
//! A snapshot goes in parts no larger than half a call may be (a partition's snapshot is its
//! data, far more than one frame; one frame too large would close the link and everything on
//! it): the receiver gathers the parts of one sending, in order, and installs the whole once
//! the last has come. A part out of order drops the gathering, and the leader sends the
//! snapshot again from its first part.

use std::future::Future;
use std::io;
use std::sync::Arc;

use dashmap::DashMap;

use futures::future::BoxFuture;
use openraft::entry::RaftEntry;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use serde::{Deserialize, Serialize};

use super::groups::Groups;
use super::rollback::{Held, Witness};
use super::snapshot_room::{self, NoRoom};
use super::state_machine::PartitionSnapshot;
use super::types::{PartitionId, RaftTypes, Replica, ReplicaId};
use crate::cluster::wire::CallError;
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The cluster handler every node registers for its groups' messages.
pub const RAFT_TARGET: &str = "raft";

/// The least a Raft message waits for its answer (see `send_encoded`): the shortest election
/// timeout, beyond which a follower that slow is as good as gone anyway.
const MIN_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// A message for one replica of one group.
#[derive(Debug, Deserialize)]
struct Envelope {
    partition: PartitionId,
    to: ReplicaId,
    message: Message,
}

/// An [`Envelope`] as it is sent: the same encoding, without owning the message (so that a
/// message found too large can still be split).
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    partition: PartitionId,
    to: ReplicaId,
    message: &'a Message,
}

#[derive(Debug, Serialize, Deserialize)]
enum Message {
    Append(AppendEntriesRequest<RaftTypes>),
    Vote(VoteRequest<RaftTypes>),
    PreVote(VoteRequest<RaftTypes>),
    /// Part `index` of a snapshot's proposals, of the sending `sending`; the last part is
    /// answered with the install's answer, the others with [`Answer::PartTaken`].
    SnapshotPart {
        vote: VoteOf<RaftTypes>,
        meta: SnapshotMetaOf<RaftTypes>,
        sending: u64,
        index: u32,
        last: bool,
        proposals: Vec<Vec<u8>>,
    },
    TransferLeader(TransferLeaderRequest<RaftTypes>),
}

#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Append(AppendEntriesResponse<RaftTypes>),
    Vote(VoteResponse<RaftTypes>),
    Snapshot(SnapshotResponse<RaftTypes>),
    TransferLeader(TransferLeaderResponse<RaftTypes>),
    PartTaken,
}

/// Why a message got no answer from its replica.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
enum Refused {
    /// The node runs no replica `to` of the partition (another incarnation, or none).
    #[error("node {node} runs no replica {replica} of partition {partition}")]
    NoReplica {
        node: String,
        partition: PartitionId,
        replica: ReplicaId,
    },
    /// A snapshot's part came out of order (or of another sending): what was gathered is
    /// dropped, and the sender starts again.
    #[error(
        "part {index} of snapshot sending {sending} of partition {partition} came out of order"
    )]
    PartOutOfOrder {
        partition: PartitionId,
        sending: u64,
        index: u32,
    },
    /// The replica's Raft has stopped (shut down, or a storage failure).
    #[error("replica {replica} of partition {partition} has stopped: {reason}")]
    Stopped {
        partition: PartitionId,
        replica: ReplicaId,
        reason: String,
    },
    /// A snapshot does not fit beyond the receiving store's reserve (`snapshot_room`): the
    /// leader sends it again later. Appended last; a build from before it reads this answer
    /// as one it cannot decode, which it treats as a failed send too (and sends again).
    #[error(
        "node {node} has no room for a snapshot of partition {partition}: it needs {needed_mib} \
         MiB and has {spare_mib} MiB free beyond its store.min_free_mib reserve; it is sent \
         again once space is freed there"
    )]
    NoRoom {
        node: String,
        partition: PartitionId,
        needed_mib: u64,
        spare_mib: u64,
    },
}

/// Answers the `raft` messages of this node's groups.
pub(crate) struct RaftHandler(pub Groups);

impl Handler for RaftHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let groups = self.0.clone();
        Box::pin(async move {
            let envelope: Envelope = codec::decode(&operation).map_err(|e| e.to_string())?;
            let answer = deliver(&groups, envelope).await;
            codec::encode(&answer).map_err(|e| e.to_string())
        })
    }

    /// Raft decides for itself whom to listen to: a node that does not serve its own
    /// partitions yet (it is checking its disk) still takes part in its groups.
    fn needs_serving(&self) -> bool {
        false
    }
}

async fn deliver(groups: &Groups, envelope: Envelope) -> Result<Answer, Refused> {
    let Envelope {
        partition,
        to,
        message,
    } = envelope;
    let Some(raft) = groups.replica(partition, to) else {
        return Err(Refused::NoReplica {
            node: groups.node().to_owned(),
            partition,
            replica: to,
        });
    };
    let stopped = |reason: String| Refused::Stopped {
        partition,
        replica: to,
        reason,
    };
    // What the sender holds on disk by now: a candidate's vote request and a leader's
    // appends carry its own vote (see `rollback`).
    if let Message::Append(AppendEntriesRequest { vote, .. })
    | Message::Vote(VoteRequest { vote, .. }) = &message
    {
        groups.witness().saw(
            vote.leader_id().voted_for,
            partition,
            Held {
                vote_term: vote.leader_id().term,
                last_log: None,
            },
        );
    }
    Ok(match message {
        Message::Append(request) => {
            let response = raft
                .append_entries(request)
                .await
                .map_err(|e| stopped(e.to_string()))?;
            // Anything but a higher vote means the sender leads this replica's term, and its
            // lease here was renewed.
            if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
                groups.heard_from_leader(partition, &raft);
            }
            Answer::Append(response)
        }
        Message::Vote(request) => Answer::Vote(
            raft.vote(request)
                .await
                .map_err(|e| stopped(e.to_string()))?,
        ),
        Message::PreVote(request) => Answer::Vote(
            raft.pre_vote(request)
                .await
                .map_err(|e| stopped(e.to_string()))?,
        ),
        Message::SnapshotPart {
            vote,
            meta,
            sending,
            index,
            last,
            proposals,
        } => {
            let taken = groups
                .snapshot_parts()
                .take(partition, to, sending, index, last, proposals);
            let proposals = match taken {
                Taken::Whole(proposals) => proposals,
                Taken::More { bytes } => {
                    // Refused at the part that shows it cannot fit, not only at the last.
                    let needed = snapshot_room::needed_to_take(bytes);
                    if let Err(no_room) = snapshot_room::fits(groups.store(), needed) {
                        groups.snapshot_parts().drop_gathered(partition, to);
                        return Err(refuse_for_room(groups, partition, no_room));
                    }
                    // Only a leader of this replica's term sends one, and it renews its lease.
                    groups.heard_from_leader(partition, &raft);
                    return Ok(Answer::PartTaken);
                }
                Taken::OutOfOrder => {
                    return Err(Refused::PartOutOfOrder {
                        partition,
                        sending,
                        index,
                    });
                }
            };
            let snapshot = SnapshotOf::<RaftTypes, PartitionSnapshot> {
                meta,
                snapshot: PartitionSnapshot { proposals },
            };
            let needed = snapshot_room::needed_to_take(snapshot_room::bytes_of(&snapshot.snapshot));
            // Held until the snapshot is installed: others written meanwhile count it.
            let _claimed = snapshot_room::claim(groups.store(), needed)
                .map_err(|no_room| refuse_for_room(groups, partition, no_room))?;
            let installed = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| stopped(e.to_string()))?;
            // Only a leader of this replica's term sends one, and it renews its lease here.
            groups.heard_from_leader(partition, &raft);
            Answer::Snapshot(installed)
        }
        Message::TransferLeader(request) => Answer::TransferLeader(
            raft.handle_transfer_leader(request)
                .await
                .map_err(|e| stopped(e.to_string()))?,
        ),
    })
}

/// A snapshot sent to this node refused for want of space (see `snapshot_room`), logged.
fn refuse_for_room(groups: &Groups, partition: PartitionId, no_room: NoRoom) -> Refused {
    let refused = Refused::NoRoom {
        node: groups.node().to_owned(),
        partition,
        needed_mib: snapshot_room::mib(no_room.needed),
        spare_mib: no_room.spare / snapshot_room::MIB,
    };
    tracing::warn!(%refused, "a snapshot sent here is refused");
    refused
}

/// The snapshot parts a node has been sent and not yet installed, by partition and replica.
#[derive(Debug, Default)]
pub(crate) struct SnapshotParts {
    gathering: DashMap<(PartitionId, ReplicaId), Gathering>,
}

/// What taking one snapshot part came to.
#[derive(Debug, PartialEq, Eq)]
enum Taken {
    /// Out of order, or of another sending: what was gathered is dropped.
    OutOfOrder,
    /// Kept; more parts are to come. `bytes`: what was gathered so far.
    More { bytes: u64 },
    /// The last part: the whole snapshot's proposals.
    Whole(Vec<Vec<u8>>),
}

#[derive(Debug)]
struct Gathering {
    sending: u64,
    next: u32,
    proposals: Vec<Vec<u8>>,
    bytes: u64,
}

impl SnapshotParts {
    /// Drops what was gathered for replica `to` of `partition` (a snapshot refused).
    fn drop_gathered(&self, partition: PartitionId, to: ReplicaId) {
        self.gathering.remove(&(partition, to));
    }

    /// Takes part `index` of `sending` for replica `to` of `partition`.
    fn take(
        &self,
        partition: PartitionId,
        to: ReplicaId,
        sending: u64,
        index: u32,
        last: bool,
        proposals: Vec<Vec<u8>>,
    ) -> Taken {
        let key = (partition, to);
        if index == 0 {
            self.gathering.insert(
                key,
                Gathering {
                    sending,
                    next: 0,
                    proposals: Vec::new(),
                    bytes: 0,
                },
            );
        }
        {
            let Some(mut gathering) = self.gathering.get_mut(&key) else {
                return Taken::OutOfOrder;
            };
            if gathering.sending != sending || gathering.next != index {
                drop(gathering);
                self.gathering.remove(&key);
                return Taken::OutOfOrder;
            }
            gathering.bytes += proposals.iter().map(|p| p.len() as u64).sum::<u64>();
            gathering.proposals.extend(proposals);
            gathering.next += 1;
            if !last {
                return Taken::More {
                    bytes: gathering.bytes,
                };
            }
        }
        match self.gathering.remove(&key) {
            Some((_, gathering)) => Taken::Whole(gathering.proposals),
            None => Taken::OutOfOrder,
        }
    }
}

/// `proposals` in parts of at most `budget` bytes each (a proposal larger than that alone),
/// at least one part.
fn in_parts(proposals: Vec<Vec<u8>>, budget: usize) -> Vec<Vec<Vec<u8>>> {
    let mut parts = vec![Vec::new()];
    let mut size = 0;
    for proposal in proposals {
        let part = parts.last_mut().expect("at least one part");
        if !part.is_empty() && size + proposal.len() > budget {
            parts.push(Vec::new());
            size = 0;
        }
        size += proposal.len();
        parts.last_mut().expect("at least one part").push(proposal);
    }
    parts
}

/// Makes each group's connections to its peers (openraft's network factory).
#[derive(Debug, Clone)]
pub struct GroupNetworkFactory {
    /// `None` on a node alone: its groups have no peers to reach.
    cluster: Option<Cluster>,
    partition: PartitionId,
    witness: Arc<Witness>,
}

impl GroupNetworkFactory {
    pub(crate) fn new(
        cluster: Option<Cluster>,
        partition: PartitionId,
        witness: Arc<Witness>,
    ) -> Self {
        Self {
            cluster,
            partition,
            witness,
        }
    }
}

impl RaftNetworkFactory<RaftTypes> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: ReplicaId, node: &Replica) -> Self::Network {
        GroupNetwork {
            cluster: self.cluster.clone(),
            partition: self.partition,
            target,
            member: Arc::from(node.member.as_str()),
            witness: self.witness.clone(),
        }
    }
}

/// One group's way to one peer replica.
#[derive(Debug, Clone)]
pub struct GroupNetwork {
    cluster: Option<Cluster>,
    partition: PartitionId,
    target: ReplicaId,
    member: Arc<str>,
    /// Where what the target answered it holds on disk is noted (see `rollback`).
    witness: Arc<Witness>,
}

/// Why a message did not reach its replica, as openraft wants to hear it.
enum Failed {
    /// Not sent, or nobody there to take it: back off before trying again.
    Unreachable(io::Error),
    /// Sent, and the answer did not come back: try again.
    Network(io::Error),
}

impl Failed {
    fn rpc(self) -> RPCError<RaftTypes> {
        match self {
            Failed::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Failed::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn streaming(self) -> StreamingError<RaftTypes> {
        match self {
            Failed::Unreachable(e) => StreamingError::Unreachable(Unreachable::new(&e)),
            Failed::Network(e) => StreamingError::Network(NetworkError::new(&e)),
        }
    }
}

impl GroupNetwork {
    async fn send(&self, message: Message, option: &RPCOption) -> Result<Answer, Failed> {
        match self.encoded(&message)? {
            Some(bytes) => self.send_encoded(bytes, option).await,
            None => Err(Failed::Network(io::Error::other(format!(
                "a Raft message of partition {} is larger than a call to node {} may be \
                 (cluster.max_frame_bytes)",
                self.partition, self.member
            )))),
        }
    }

    /// The cluster this group's messages go through (none on a node alone, which has no
    /// peer to send to).
    fn link(&self) -> Result<&Cluster, Failed> {
        self.cluster.as_ref().ok_or_else(|| {
            Failed::Unreachable(io::Error::other(format!(
                "this node is alone: it has no link to {}",
                self.member
            )))
        })
    }

    /// `message` for this peer as a call's bytes, or `None` when it is larger than one call
    /// may be (sent, it would be refused as `TooLarge`).
    fn encoded(&self, message: &Message) -> Result<Option<Vec<u8>>, Failed> {
        let cluster = self.link()?;
        let envelope = EnvelopeRef {
            partition: self.partition,
            to: self.target,
            message,
        };
        let bytes = codec::encode(&envelope).map_err(|e| Failed::Network(io::Error::other(e)))?;
        Ok((bytes.len() as u64 <= cluster.max_operation_bytes(RAFT_TARGET)).then_some(bytes))
    }

    async fn send_encoded(&self, bytes: Vec<u8>, option: &RPCOption) -> Result<Answer, Failed> {
        let cluster = self.link()?;
        // Uncounted: Raft's own retries and backoff decide about a slow peer; its misses must
        // not open the breaker that commands to that member rely on. Never less patient than
        // `MIN_PATIENCE`: openraft gives entries the heartbeat interval (75 ms of 100), which a
        // follower that must write them down first misses on a busy machine; each miss was
        // a resend after a backoff, and enough of them in a row an election (the churn under
        // load the bank test saw). A dead peer is found by its link and the heartbeats, not here.
        let patience = option.soft_ttl().max(MIN_PATIENCE);
        let answered = cluster
            .call_uncounted(&self.member, RAFT_TARGET, bytes, patience)
            .await;
        let bytes = answered.map_err(|error| match error {
            CallError::Unreachable { .. }
            | CallError::NoHandler { .. }
            | CallError::NotServing { .. }
            | CallError::PlacedDifferently { .. } => Failed::Unreachable(io::Error::other(error)),
            other => Failed::Network(io::Error::other(other)),
        })?;
        let answer: Result<Answer, Refused> =
            codec::decode(&bytes).map_err(|e| Failed::Network(io::Error::other(e)))?;
        answer.map_err(|refused| Failed::Unreachable(io::Error::other(refused)))
    }

    /// Sends `rpc`, in parts when it is larger than one call may be: openraft sends up to
    /// `max_payload_entries` entries at once whatever their size, and a follower far behind
    /// a run of large proposals would otherwise never be sent what it lacks. The entries
    /// are halved until each part fits; each part's previous entry is the last of the part
    /// before, and it commits no further than its own last entry. The first answer that is
    /// not a success is the answer (openraft goes on from what the follower says it holds).
    fn append<'a>(
        &'a self,
        rpc: AppendEntriesRequest<RaftTypes>,
        option: &'a RPCOption,
    ) -> BoxFuture<'a, Result<AppendEntriesResponse<RaftTypes>, Failed>> {
        Box::pin(async move {
            let term = rpc.vote.leader_id().term;
            let last = rpc
                .entries
                .last()
                .map(|entry| entry.log_id())
                .or(rpc.prev_log_id);
            let message = Message::Append(rpc);
            let Some(bytes) = self.encoded(&message)? else {
                let Message::Append(rpc) = message else {
                    unreachable!("the message was made an append just above")
                };
                return self.append_in_parts(rpc, option).await;
            };
            match self.send_encoded(bytes, option).await? {
                Answer::Append(response) => {
                    // A follower answers success only once the entries (and the vote that
                    // took them) are on its disk.
                    let acknowledged = match &response {
                        AppendEntriesResponse::Success => Some(last),
                        AppendEntriesResponse::PartialSuccess(matching) => Some(*matching),
                        _ => None,
                    };
                    if let Some(log) = acknowledged {
                        self.witness.saw(
                            self.target,
                            self.partition,
                            Held {
                                vote_term: term,
                                last_log: log.map(|id| (id.leader_id.term, id.index)),
                            },
                        );
                    }
                    Ok(response)
                }
                other => Err(Self::unexpected(&other)),
            }
        })
    }

    /// [`Self::append`] for a request too large for one call: its entries in two halves.
    async fn append_in_parts(
        &self,
        rpc: AppendEntriesRequest<RaftTypes>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<RaftTypes>, Failed> {
        let AppendEntriesRequest {
            vote,
            prev_log_id,
            mut entries,
            leader_commit,
        } = rpc;
        if entries.len() < 2 {
            return Err(Failed::Unreachable(io::Error::other(format!(
                "one Raft entry of partition {} is larger than a call to node {} may be \
                 (cluster.max_frame_bytes): raise it on every member",
                self.partition, self.member
            ))));
        }
        let second = entries.split_off(entries.len() / 2);
        let first_last = entries.last().map(|entry| entry.log_id());
        let first = AppendEntriesRequest {
            vote,
            prev_log_id,
            entries,
            leader_commit: leader_commit.min(first_last),
        };
        match self.append(first, option).await? {
            AppendEntriesResponse::Success => {}
            other => return Ok(other),
        }
        let second = AppendEntriesRequest {
            vote,
            prev_log_id: first_last,
            entries: second,
            leader_commit,
        };
        self.append(second, option).await
    }

    fn unexpected(answer: &Answer) -> Failed {
        Failed::Network(io::Error::other(format!(
            "a replica answered with the wrong kind of message: {answer:?}"
        )))
    }
}

impl RaftNetworkV2<RaftTypes> for GroupNetwork {
    type SnapshotData = PartitionSnapshot;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<RaftTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftTypes>, RPCError<RaftTypes>> {
        self.append(rpc, &option).await.map_err(Failed::rpc)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftTypes>, RPCError<RaftTypes>> {
        match self.send(Message::Vote(rpc), &option).await {
            Ok(Answer::Vote(response)) => {
                // A replica answers a vote request once its vote is on its disk.
                self.witness.saw(
                    self.target,
                    self.partition,
                    Held {
                        vote_term: response.vote.leader_id().term,
                        last_log: None,
                    },
                );
                Ok(response)
            }
            Ok(other) => Err(Self::unexpected(&other).rpc()),
            Err(failed) => Err(failed.rpc()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<RaftTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftTypes>, RPCError<RaftTypes>> {
        match self.send(Message::PreVote(rpc), &option).await {
            Ok(Answer::Vote(response)) => Ok(response),
            Ok(other) => Err(Self::unexpected(&other).rpc()),
            Err(failed) => Err(failed.rpc()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<RaftTypes>,
        snapshot: SnapshotOf<RaftTypes, PartitionSnapshot>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<RaftTypes>, StreamingError<RaftTypes>> {
        // Half a call at most: the envelope and the meta take the rest.
        let budget = self.cluster.as_ref().map_or(usize::MAX, |cluster| {
            (cluster.max_call_bytes() / 2) as usize
        });
        let parts = in_parts(snapshot.snapshot.proposals, budget);
        let (sending, count) = (uuid::Uuid::new_v4().as_u64_pair().0, parts.len());
        let mut cancel = std::pin::pin!(cancel);
        for (index, proposals) in parts.into_iter().enumerate() {
            let last = index + 1 == count;
            let message = Message::SnapshotPart {
                vote,
                meta: snapshot.meta.clone(),
                sending,
                index: u32::try_from(index).unwrap_or(u32::MAX),
                last,
                proposals,
            };
            let answered = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                answered = self.send(message, &option) => answered,
            };
            match answered {
                Ok(Answer::PartTaken) if !last => {}
                Ok(Answer::Snapshot(response)) if last => return Ok(response),
                Ok(other) => return Err(Self::unexpected(&other).streaming()),
                Err(failed) => return Err(failed.streaming()),
            }
        }
        unreachable!("the last part is answered with the install's answer or an error")
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<RaftTypes>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<RaftTypes>, RPCError<RaftTypes>> {
        match self.send(Message::TransferLeader(request), &option).await {
            Ok(Answer::TransferLeader(response)) => Ok(response),
            Ok(other) => Err(Self::unexpected(&other).rpc()),
            Err(failed) => Err(failed.rpc()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposals(sizes: &[usize]) -> Vec<Vec<u8>> {
        sizes.iter().map(|size| vec![7; *size]).collect()
    }

    #[test]
    fn a_snapshot_goes_in_parts_within_the_budget_and_in_order() {
        let parts = in_parts(proposals(&[40, 40, 30, 100, 10]), 80);
        let sizes: Vec<Vec<usize>> = parts
            .iter()
            .map(|part| part.iter().map(Vec::len).collect())
            .collect();
        // A proposal larger than the budget goes alone; nothing is reordered.
        assert_eq!(sizes, vec![vec![40, 40], vec![30], vec![100], vec![10]]);
        assert_eq!(
            in_parts(Vec::new(), 80).len(),
            1,
            "an empty snapshot is one part"
        );
    }

    #[test]
    fn parts_are_gathered_in_order_of_one_sending_and_anything_else_starts_over() {
        let parts = SnapshotParts::default();
        let one = |n: u8| vec![vec![n]];
        assert_eq!(
            parts.take(3, 9, 100, 0, false, one(1)),
            Taken::More { bytes: 1 }
        );
        assert_eq!(
            parts.take(3, 9, 100, 1, false, one(2)),
            Taken::More { bytes: 2 }
        );
        // Another replica's parts are its own.
        assert_eq!(parts.take(3, 8, 200, 0, true, one(9)), Taken::Whole(one(9)));
        assert_eq!(
            parts.take(3, 9, 100, 2, true, one(3)),
            Taken::Whole(vec![vec![1], vec![2], vec![3]])
        );
        // Out of order: dropped, and the next part of that sending is refused too.
        assert!(matches!(
            parts.take(3, 9, 300, 0, false, one(1)),
            Taken::More { .. }
        ));
        assert_eq!(parts.take(3, 9, 300, 2, false, one(3)), Taken::OutOfOrder);
        assert_eq!(parts.take(3, 9, 300, 1, true, one(2)), Taken::OutOfOrder);
        // A part of an older sending after a new one began: refused.
        assert!(matches!(
            parts.take(3, 9, 400, 0, false, one(1)),
            Taken::More { .. }
        ));
        assert_eq!(parts.take(3, 9, 300, 1, false, one(2)), Taken::OutOfOrder);
        // Sent again from its first part, it goes through.
        assert!(matches!(
            parts.take(3, 9, 500, 0, false, one(1)),
            Taken::More { .. }
        ));
        assert_eq!(
            parts.take(3, 9, 500, 1, true, one(2)),
            Taken::Whole(vec![vec![1], vec![2]])
        );
    }
}
