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

/// An event of [`MEMBERS_STREAM`]. New kinds go at the end (the codec numbers them in
/// order); a build that does not know one skips it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MemberEvent {
    /// The members the cluster formed with (the first event); their addresses are in their
    /// configs.
    Formed { members: Vec<String> },
    /// `member` runs as replica `replica` from now on.
    Incarnation { member: String, replica: ReplicaId },
    /// An admin admitted `name`, reached at `address`.
    Added {
        name: String,
        address: String,
        edge: Option<String>,
    },
    /// An admin asked `name` to be drained: its replicas move to the other members, then it
    /// leaves.
    Draining { name: String },
    /// `name` was drained and left: it holds no replica any more.
    Left { name: String },
    /// An admin removed `name` by force (lost for good): its replicas are made again on the
    /// other members from what the survivors hold.
    Removed { name: String },
    /// Every member reads cluster format `to` (`format`): what it adds may be written now.
    FormatRaised { to: u32 },
}

impl MemberEvent {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            MemberEvent::Formed { .. } => "MembersFormed",
            MemberEvent::Incarnation { .. } => "IncarnationRecorded",
            MemberEvent::Added { .. } => "MemberAdded",
            MemberEvent::Draining { .. } => "MemberDraining",
            MemberEvent::Left { .. } => "MemberLeft",
            MemberEvent::Removed { .. } => "MemberRemoved",
            MemberEvent::FormatRaised { .. } => "FormatRaised",
        }
    }
}

/// A member as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// Its cluster address, when it joined (a founding member's is in the configs).
    pub address: Option<String>,
    pub edge: Option<String>,
    pub draining: bool,
}

/// The cluster's members and their incarnations, as one replica of the metadata group
/// applied them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The members the cluster formed with, sorted (empty until the first record).
    pub members: Vec<String>,
    /// The members now (founders and those admitted since, less those that left or were
    /// removed), by name.
    pub roster: BTreeMap<String, MemberRecord>,
    /// Each member's current incarnation, once it recorded one.
    pub incarnations: BTreeMap<String, ReplicaId>,
    /// The stream's version (0: nothing recorded yet).
    pub version: u64,
    /// When its first record was made (its leader's clock, in microseconds since the Unix
    /// epoch): with the cluster's id, what tells this cluster from another formed with the
    /// same member names.
    pub formed_at_micros: Option<i64>,
    /// The cluster's format (`format`): what every member reads, and so what may be written.
    pub format: u32,
}

impl Membership {
    /// What this node's store holds of the metadata stream.
    pub fn read(store: &EventStore) -> Result<Self, StoreError> {
        let mut membership = Self {
            format: super::format::FIRST,
            ..Self::default()
        };
        for event in store.read_stream(MEMBERS_STREAM)? {
            membership.version = event.version;
            membership
                .formed_at_micros
                .get_or_insert(event.recorded_at_micros);
            match codec::decode::<MemberEvent>(&event.payload) {
                Ok(MemberEvent::Formed { mut members }) => {
                    members.sort();
                    for member in &members {
                        membership.roster.insert(
                            member.clone(),
                            MemberRecord {
                                address: None,
                                edge: None,
                                draining: false,
                            },
                        );
                    }
                    membership.members = members;
                }
                Ok(MemberEvent::Incarnation { member, replica }) => {
                    membership.incarnations.insert(member, replica);
                }
                // Also a founder's address, recorded at the first admission (so that members
                // that joined can reach it): whether it is being drained is kept.
                Ok(MemberEvent::Added {
                    name,
                    address,
                    edge,
                }) => {
                    let record = membership.roster.entry(name).or_insert(MemberRecord {
                        address: None,
                        edge: None,
                        draining: false,
                    });
                    record.address = Some(address);
                    record.edge = edge;
                }
                Ok(MemberEvent::Draining { name }) => {
                    if let Some(record) = membership.roster.get_mut(&name) {
                        record.draining = true;
                    }
                }
                Ok(MemberEvent::Left { name } | MemberEvent::Removed { name }) => {
                    membership.roster.remove(&name);
                    membership.incarnations.remove(&name);
                }
                Ok(MemberEvent::FormatRaised { to }) => {
                    membership.format = membership.format.max(to);
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

    /// This cluster's formation: `cluster_id` (the fingerprint of the members it formed with)
    /// and when it formed, as one number; `None` before the first record.
    pub fn formation(&self, cluster_id: u64) -> Option<u64> {
        let formed_at = self.formed_at_micros?;
        let mut bytes = cluster_id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&formed_at.to_be_bytes());
        Some(crate::store::fingerprint(&bytes))
    }

    /// Whether the cluster's member list is recorded yet (it is once any member recorded its
    /// incarnation).
    pub fn formed(&self) -> bool {
        self.version > 0
    }

    /// The members now, with the addresses to reach them at (a founder's from `configured`,
    /// the config's list), and those being drained; `None` before the list is recorded.
    pub fn roster_members(
        &self,
        configured: &[crate::config::Member],
    ) -> Option<(Vec<crate::config::Member>, Vec<String>)> {
        if !self.formed() {
            return None;
        }
        let mut members = Vec::new();
        let mut draining = Vec::new();
        for (name, record) in &self.roster {
            let known = configured.iter().find(|member| member.name == *name);
            let Some(address) = record
                .address
                .clone()
                .or_else(|| known.map(|member| member.address.clone()))
            else {
                tracing::warn!(member = %name, "a founding member missing from this node's config: it cannot be reached from here");
                continue;
            };
            members.push(crate::config::Member {
                name: name.clone(),
                address,
                edge: record
                    .edge
                    .clone()
                    .or_else(|| known.and_then(|member| member.edge.clone())),
                services: Vec::new(),
            });
            if record.draining {
                draining.push(name.clone());
            }
        }
        Some((members, draining))
    }
}

/// Appends `events` to the metadata stream through this node's replica of the metadata
/// group, which must lead it, after `expected_version`, once: `command_id` makes a retry
/// apply nothing again. Prefixed with the formed member list when nothing is recorded yet.
pub(crate) async fn propose(
    raft: &super::groups::PartitionRaft,
    founders: &[String],
    expected_version: u64,
    command_id: String,
    events: Vec<MemberEvent>,
) -> Result<
    Applied,
    openraft::error::RaftError<
        super::types::RaftTypes,
        openraft::error::ClientWriteError<super::types::RaftTypes>,
    >,
> {
    let mut all = Vec::new();
    if expected_version == 0 {
        all.push(MemberEvent::Formed {
            members: founders.to_vec(),
        });
    }
    all.extend(events);
    let events = all
        .iter()
        .map(|event| NewEvent {
            event_type: event.type_name().to_owned(),
            schema_version: 1,
            // Plain enums of strings and numbers: encoding cannot fail.
            payload: codec::encode(event).unwrap_or_default(),
        })
        .collect();
    let request = AppendRequest {
        stream: MEMBERS_STREAM.to_owned(),
        expected_version,
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
    raft.client_write(Proposal::Append(ProposedAppend(request)))
        .await
        .map(|written| written.data)
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
        let command_id = format!("incarnation/{}/{:016x}", record.member, record.replica);
        let event = MemberEvent::Incarnation {
            member: record.member.clone(),
            replica: record.replica,
        };
        return match propose(&raft, members, membership.version, command_id, vec![event]).await {
            Ok(applied) => match applied {
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
pub(crate) async fn record_own_incarnation(groups: Groups, cluster: Cluster) {
    let record = Record {
        member: groups.node().to_owned(),
        replica: groups.replica_id(),
    };
    let members: Vec<String> = cluster
        .configured_members()
        .into_iter()
        .map(|member| member.name)
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
                let peers = cluster.peer_names();
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
