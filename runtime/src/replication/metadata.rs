//! The cluster's metadata group: one more Raft group, with every member a voter, whose data is
//! one stream, [`MEMBERS_STREAM`]: the member list the cluster formed with, and each member's
//! current incarnation (the replica id it has in every group since it last started on an
//! emptied or rolled-back data directory).
//!
//! A node records its incarnation once its groups run, through the metadata group's leader
//! (asking its peers who that is). Leaders of partition groups read the recorded incarnations
//! from their own replica of the stream, and swap a replica that came back as a new
//! incarnation in for its old one (`repair`); the metadata group repairs itself the same way.
//! An incarnation is recorded only by the node that drew it, so the last one recorded for a
//! member is the one it runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::groups::Groups;
use super::types::{Applied, Proposal, ProposedAppend, ReplicaId};
use crate::cluster::{Cluster, Handler};
use crate::codec;
use crate::store::{AppendRequest, EventMetadata, EventStore, NewEvent, StoreError};

pub use crate::placement::METADATA_GROUP;

/// The metadata group's one stream. Its name starts with `$`, which no aggregate's stream
/// does (`kind-id`), so it belongs to no partition of aggregates.
pub const MEMBERS_STREAM: &str = "$cluster-members";

/// The cluster handler that records a member's incarnation on the metadata group's leader.
const TARGET: &str = "raft-metadata";

/// How often a node asks again until its incarnation is recorded.
const ASK_EVERY: Duration = Duration::from_millis(500);

/// Whether `stream` is the metadata group's (rather than a partition's).
pub fn is_metadata_stream(stream: &str) -> bool {
    stream == MEMBERS_STREAM
}

/// An event of [`MEMBERS_STREAM`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum MemberEvent {
    /// The members the cluster formed with (the first event).
    Formed { members: Vec<String> },
    /// `member` runs as replica `replica` from now on.
    Incarnation { member: String, replica: ReplicaId },
}

impl MemberEvent {
    fn type_name(&self) -> &'static str {
        match self {
            MemberEvent::Formed { .. } => "MembersFormed",
            MemberEvent::Incarnation { .. } => "IncarnationRecorded",
        }
    }
}

/// The cluster's members and their incarnations, as one replica of the metadata group
/// applied them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The members the cluster formed with, sorted (empty until the first record).
    pub members: Vec<String>,
    /// Each member's current incarnation, once it recorded one.
    pub incarnations: BTreeMap<String, ReplicaId>,
    /// The stream's version (0: nothing recorded yet).
    pub version: u64,
}

impl Membership {
    /// What this node's store holds of the metadata stream.
    pub fn read(store: &EventStore) -> Result<Self, StoreError> {
        let mut membership = Self::default();
        for event in store.read_stream(MEMBERS_STREAM)? {
            membership.version = event.version;
            match codec::decode::<MemberEvent>(&event.payload) {
                Ok(MemberEvent::Formed { mut members }) => {
                    members.sort();
                    membership.members = members;
                }
                Ok(MemberEvent::Incarnation { member, replica }) => {
                    membership.incarnations.insert(member, replica);
                }
                // Written by a later build: skipped, as a reader of an unknown kind would.
                Err(error) => tracing::warn!(
                    version = event.version,
                    event_type = %event.event_type,
                    %error,
                    "an event of the cluster's metadata cannot be read by this build"
                ),
            }
        }
        Ok(membership)
    }
}

/// A member asks the leader to record its incarnation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    member: String,
    replica: ReplicaId,
}

/// What the node asked answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Recorded {
    /// Recorded (now or before).
    Done,
    /// It does not lead the metadata group; `leader` does, as far as it knows.
    NotLeader { leader: Option<String> },
}

/// Records `record` if this node leads the metadata group, past its read barrier: the formed
/// member list too when nothing is recorded yet.
async fn record_here(
    groups: &Groups,
    members: &[String],
    record: &Record,
) -> Result<Recorded, String> {
    let not_leader = || Recorded::NotLeader {
        leader: groups
            .leader_of(METADATA_GROUP)
            .filter(|leader| leader != groups.node()),
    };
    let Some(raft) = groups.get(METADATA_GROUP) else {
        return Ok(not_leader());
    };
    if groups.read_barrier(METADATA_GROUP).await.is_err() {
        return Ok(not_leader());
    }
    const ATTEMPTS: u32 = 3;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let membership = Membership::read(groups.store()).map_err(|e| e.to_string())?;
        if membership.incarnations.get(&record.member) == Some(&record.replica) {
            return Ok(Recorded::Done);
        }
        let mut events = Vec::new();
        if membership.version == 0 {
            events.push(MemberEvent::Formed {
                members: members.to_vec(),
            });
        }
        events.push(MemberEvent::Incarnation {
            member: record.member.clone(),
            replica: record.replica,
        });
        let events = events
            .iter()
            .map(|event| {
                Ok(NewEvent {
                    event_type: event.type_name().to_owned(),
                    schema_version: 1,
                    payload: codec::encode(event).map_err(|e| e.to_string())?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let command_id = format!("incarnation/{}/{:016x}", record.member, record.replica);
        let request = AppendRequest {
            stream: MEMBERS_STREAM.to_owned(),
            expected_version: membership.version,
            fingerprint: crate::store::fingerprint(command_id.as_bytes()),
            command_id: Some(command_id),
            events,
            rejection: None,
            metadata: EventMetadata {
                recorded_at_micros: Some(super::journal::now_micros()),
                ..EventMetadata::default()
            },
            table_changes: Vec::new(),
        };
        return match raft
            .client_write(Proposal::Append(ProposedAppend(request)))
            .await
        {
            Ok(written) => match written.data {
                Applied::Appended(_) => Ok(Recorded::Done),
                // Another member's record came first (two asked at once): this one goes
                // after it, read again.
                Applied::Refused(refusal) if attempt < ATTEMPTS => {
                    tracing::debug!(?refusal, "a record raced another; reading again");
                    continue;
                }
                other => Err(format!("the record was refused: {other:?}")),
            },
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_),
            )) => Ok(not_leader()),
            Err(error) => Err(error.to_string()),
        };
    }
}

/// Answers `raft-metadata`.
struct MetadataHandler {
    groups: Groups,
    members: Arc<[String]>,
}

impl Handler for MetadataHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (groups, members) = (self.groups.clone(), self.members.clone());
        Box::pin(async move {
            let record: Record =
                codec::decode(&operation).map_err(|e| format!("a metadata record: {e}"))?;
            let recorded = record_here(&groups, &members, &record).await?;
            codec::encode(&recorded).map_err(|e| e.to_string())
        })
    }
}

/// Registers the metadata handler with `cluster`; `members` are the configured members (what
/// the first record says the cluster formed with).
pub(crate) fn serve(cluster: &Cluster, groups: &Groups, members: Vec<String>) {
    cluster.register(
        TARGET,
        Arc::new(MetadataHandler {
            groups: groups.clone(),
            members: members.into(),
        }),
    );
}

/// Runs once the node's groups run: records this node's incarnation through the metadata
/// group's leader, asking again every [`ASK_EVERY`] (the leader it was told of first, then
/// every peer in turn) until one has recorded it.
pub(crate) async fn record_own_incarnation(groups: Groups, cluster: Cluster, members: Vec<String>) {
    let record = Record {
        member: groups.node().to_owned(),
        replica: groups.replica_id(),
    };
    let peers: Vec<String> = members
        .iter()
        .filter(|member| **member != record.member)
        .cloned()
        .collect();
    let Ok(encoded) = codec::encode(&record) else {
        return;
    };
    let mut next_peer = 0;
    let mut failures = 0u32;
    let mut told_leader: Option<String> = None;
    // A replica that is not a voter (yet) may believe it leads, from an old term its log
    // holds: once it has refused here, the peers are asked instead.
    let mut refused_here = false;
    loop {
        let leader = told_leader
            .take()
            .or_else(|| groups.leader_of(METADATA_GROUP))
            .filter(|leader| !(refused_here && *leader == record.member));
        let asked = match leader {
            Some(leader) if leader == record.member => {
                let asked = record_here(&groups, &members, &record).await;
                refused_here = !matches!(asked, Ok(Recorded::Done));
                asked
            }
            leader => {
                let peer = leader.unwrap_or_else(|| {
                    next_peer = (next_peer + 1) % peers.len().max(1);
                    peers.get(next_peer).cloned().unwrap_or_default()
                });
                match cluster
                    .call_uncounted(&peer, TARGET, encoded.clone(), ASK_EVERY * 4)
                    .await
                {
                    // A refusal comes back as the call's error (`CallError::Handler`).
                    Ok(bytes) => codec::decode::<Recorded>(&bytes).map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                }
            }
        };
        match asked {
            Ok(Recorded::Done) => {
                tracing::info!(replica = %format!("{:016x}", record.replica), "this node's incarnation is recorded in the cluster's metadata");
                return;
            }
            Ok(Recorded::NotLeader { leader }) => told_leader = leader,
            Err(error) => {
                failures += 1;
                // Every ten seconds or so: until it is recorded, a replica of this node that
                // lost its disk cannot be swapped back in.
                if failures.is_multiple_of(20) {
                    tracing::warn!(%error, failures, "recording this node's incarnation in the cluster's metadata keeps failing; asking again");
                } else {
                    tracing::debug!(%error, "recording this node's incarnation failed; asking again");
                }
            }
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_stream_is_no_aggregates_stream() {
        assert!(is_metadata_stream(MEMBERS_STREAM));
        assert!(!is_metadata_stream("account-$cluster-members"));
        assert!(!is_metadata_stream("account-1"));
    }
}
