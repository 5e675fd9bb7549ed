//! Changing the cluster's members: admitting a node, draining one, recording that a drained
//! node left, removing a lost one by force. Each is one event on the metadata group's
//! stream, appended by its leader past its read barrier and checked against the list it
//! holds then; an admin call on any member is sent on to that leader.
//!
//! Nothing moves here: every partition group's leader reads the new list from its replica of
//! the metadata and moves its replicas to match (`reconcile`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::groups::Groups;
use super::metadata::{METADATA_GROUP, MemberEvent, Membership, propose};
use super::types::Applied;
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The cluster handler that changes the member list on the metadata group's leader.
const TARGET: &str = "raft-members";

/// How many leaders a change is sent on to before it gives up (each may name the next).
const HOPS: usize = 4;

/// A change of the cluster's members, as an admin asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Admit `name`, reached at `address`.
    Admit {
        name: String,
        address: String,
        edge: Option<String>,
    },
    /// Move `name`'s replicas and leads to the other members; it leaves once it holds none.
    Drain { name: String },
    /// `name` (drained) holds no replica any more.
    Leave { name: String },
    /// `name` is lost for good: its replicas are made again from the survivors.
    Remove { name: String },
    /// Every one of `names` is lost for good, recorded at once: the worst day's recovery
    /// (`recovery`), where a leader must not try, between two removals, to move a replica to
    /// a member about to be removed. New variants go at the end (the codec numbers them).
    RemoveLost { names: Vec<String> },
    /// Every one of `checked` reads cluster format `to` (asked by the metadata group's
    /// leader itself, `format`): raise the cluster's format to it, unless the roster now
    /// holds a member not asked.
    RaiseFormat { to: u32, checked: Vec<String> },
}

/// What a change came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeOutcome {
    /// Recorded (now, or it was already so): the metadata stream's version after it.
    Done { version: u64 },
    /// Not possible, and why (a person reads this).
    Refused(String),
    /// This node does not lead the metadata group; `leader` does, as far as it knows.
    NotLeader { leader: Option<String> },
}

/// Makes `change` on the metadata group's leader, whichever member that is: here, or sent on.
pub async fn change(groups: &Groups, cluster: &Cluster, change: MemberChange) -> ChangeOutcome {
    let encoded = match codec::encode(&change) {
        Ok(encoded) => encoded,
        Err(error) => return ChangeOutcome::Refused(error.to_string()),
    };
    let mut leader = groups.leader_of(METADATA_GROUP);
    let mut last = String::from("no member is known to lead the cluster's metadata");
    // Without a leader to ask, each peer in turn (a member moved off the metadata group may
    // never hear who leads it now; its peers know).
    let peers = cluster.peer_names();
    let mut next_peer = peers.iter().cycle();
    for _ in 0..HOPS + peers.len() {
        if leader.is_none() {
            leader = next_peer.next().cloned();
        }
        let outcome = match leader.as_deref() {
            Some(here) if here == groups.node() => change_here(groups, cluster, &change).await,
            Some(there) => {
                let called = cluster
                    .call_uncounted(there, TARGET, encoded.clone(), Duration::from_secs(10))
                    .await;
                match called.map_err(|e| e.to_string()).and_then(|bytes| {
                    codec::decode::<ChangeOutcome>(&bytes).map_err(|e| e.to_string())
                }) {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        last = format!("asking {there}, which leads the metadata: {error}");
                        ChangeOutcome::NotLeader { leader: None }
                    }
                }
            }
            None => ChangeOutcome::NotLeader { leader: None },
        };
        match outcome {
            ChangeOutcome::NotLeader { leader: next } => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                leader = next;
            }
            done => return done,
        }
    }
    ChangeOutcome::Refused(format!(
        "the change could not reach the metadata group's leader ({last}); an election may be under way: try again"
    ))
}

/// Makes `change` if this node leads the metadata group, past its read barrier.
pub(super) async fn change_here(
    groups: &Groups,
    cluster: &Cluster,
    change: &MemberChange,
) -> ChangeOutcome {
    let not_leader = || ChangeOutcome::NotLeader {
        leader: groups
            .leader_of(METADATA_GROUP)
            .filter(|leader| leader != groups.node()),
    };
    let Some(raft) = groups.get(METADATA_GROUP) else {
        return not_leader();
    };
    if groups.read_barrier(METADATA_GROUP).await.is_err() {
        return not_leader();
    }
    let membership = match Membership::read(groups.store()) {
        Ok(membership) => membership,
        Err(error) => return ChangeOutcome::Refused(format!("reading the metadata: {error}")),
    };
    if let MemberChange::Admit { name, .. } = change
        && let Some(refusal) = reads_too_little(cluster, &membership, name).await
    {
        return ChangeOutcome::Refused(refusal);
    }
    let mut events = match decide(&membership, cluster, change) {
        Ok(events) if events.is_empty() => {
            return ChangeOutcome::Done {
                version: membership.version,
            };
        }
        Ok(events) => events,
        Err(refusal) => return ChangeOutcome::Refused(refusal),
    };
    let founders: Vec<String> = cluster
        .configured_members()
        .into_iter()
        .map(|member| member.name)
        .collect();
    let command_id = format!(
        "members/{}/{}",
        membership.version,
        crate::store::fingerprint(&codec::encode(change).unwrap_or_default())
    );
    // The first member admitted must be able to reach the founders, whose addresses are in
    // their configs only: recorded now, from this node's list.
    if matches!(change, MemberChange::Admit { .. }) {
        let roster = cluster.roster();
        let founders_addressed = roster.members.iter().filter_map(|member| {
            // Nothing recorded yet: the founders are this node's list, written first.
            let unaddressed = match membership.roster.get(&member.name) {
                Some(record) => record.address.is_none(),
                None => !membership.formed(),
            };
            unaddressed.then(|| MemberEvent::Added {
                name: member.name.clone(),
                address: member.address.clone(),
                edge: member.edge.clone(),
            })
        });
        let mut all: Vec<MemberEvent> = founders_addressed.collect();
        all.append(&mut events);
        events = all;
    }
    match propose(&raft, &founders, membership.version, command_id, events).await {
        Ok(Applied::Appended(appended)) => {
            tracing::info!(?change, "the cluster's members changed");
            ChangeOutcome::Done {
                version: appended.last_version,
            }
        }
        Ok(Applied::Refused(refusal)) => ChangeOutcome::Refused(format!(
            "another change came first ({refusal:?}); look at the members again and retry"
        )),
        Ok(other) => ChangeOutcome::Refused(format!("the change was not recorded: {other:?}")),
        Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ForwardToLeader(_),
        )) => not_leader(),
        Err(error) => ChangeOutcome::Refused(format!("the change was not recorded: {error}")),
    }
}

/// Why `name` may not be admitted to a cluster at `membership`'s format, if its build is
/// known to read less. Members do not call a node before it is admitted, so most often it
/// cannot be asked and is admitted: a build with formats then stops itself once it finds
/// the cluster's format above its own (`format::run`); a build from before formats has no
/// such check, and would stall on entries it cannot decode (README: never start one after
/// the raise).
async fn reads_too_little(
    cluster: &Cluster,
    membership: &Membership,
    name: &str,
) -> Option<String> {
    if membership.format <= super::format::FIRST || membership.roster.contains_key(name) {
        return None;
    }
    match super::format::read_by(cluster, name).await {
        Ok(reads) if reads < membership.format => Some(format!(
            "{name} runs a build that reads cluster format {reads}, and the cluster is at format {}: start it with this cluster's build (or a later one)",
            membership.format
        )),
        Ok(_) => None,
        Err(error) => {
            tracing::debug!(%name, %error, "cannot ask which format a node being admitted reads");
            None
        }
    }
}

/// The events `change` makes of `membership` (none when it is already so), or why not.
fn decide(
    membership: &Membership,
    cluster: &Cluster,
    change: &MemberChange,
) -> Result<Vec<MemberEvent>, String> {
    let MemberChange::RemoveLost { names } = change else {
        return decide_one(membership, cluster, change).map(|event| event.into_iter().collect());
    };
    let members = match membership.formed() {
        true => membership.roster.keys().cloned().collect(),
        false => cluster
            .roster()
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect(),
    };
    let members: std::collections::BTreeSet<String> = members;
    if let Some(stranger) = names.iter().find(|name| !members.contains(*name)) {
        return Err(format!("{stranger} is not a member"));
    }
    if members.iter().all(|member| names.contains(member)) {
        return Err("removing every member would leave none to recover from".to_owned());
    }
    Ok(names
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|name| MemberEvent::Removed { name: name.clone() })
        .collect())
}

fn decide_one(
    membership: &Membership,
    cluster: &Cluster,
    change: &MemberChange,
) -> Result<Option<MemberEvent>, String> {
    let roster = cluster.roster();
    // Before the first record, the config's list is the cluster's.
    let current: Vec<(String, bool)> = match membership.formed() {
        true => membership
            .roster
            .iter()
            .map(|(name, record)| (name.clone(), record.draining))
            .collect(),
        false => roster
            .members
            .iter()
            .map(|member| (member.name.clone(), false))
            .collect(),
    };
    let find = |name: &str| current.iter().find(|(member, _)| member == name);
    let serving = current.iter().filter(|(_, draining)| !draining).count();
    let factor = roster.placement.replication_factor();
    match change {
        MemberChange::Admit {
            name,
            address,
            edge,
        } => {
            if let Some(record) = membership.roster.get(name) {
                return match record.address.as_deref() {
                    Some(known) if known != address => Err(format!(
                        "{name} is a member already, at {known}; remove it first to admit it at {address}"
                    )),
                    _ => Ok(None),
                };
            }
            if find(name).is_some() {
                return Ok(None);
            }
            Ok(Some(MemberEvent::Added {
                name: name.clone(),
                address: address.clone(),
                edge: edge.clone(),
            }))
        }
        MemberChange::Drain { name } => match find(name) {
            None => Err(format!("{name} is not a member")),
            Some((_, true)) => Ok(None),
            Some(_) if serving <= factor as usize => Err(format!(
                "draining {name} would leave {} members to hold {factor} replicas of each partition; admit a member first (or remove {name} by force if it is lost)",
                serving - 1
            )),
            Some(_) => Ok(Some(MemberEvent::Draining { name: name.clone() })),
        },
        MemberChange::Leave { name } => match find(name) {
            None => Ok(None),
            Some((_, false)) => Err(format!(
                "{name} is not being drained: drain it first (its replicas move away), then it leaves"
            )),
            Some(_) => Ok(Some(MemberEvent::Left { name: name.clone() })),
        },
        MemberChange::Remove { name } => match find(name) {
            // A name mistyped must not look removed.
            None => Err(format!("{name} is not a member")),
            Some(_) if current.len() == 1 => Err(format!("{name} is the last member")),
            Some(_) => Ok(Some(MemberEvent::Removed { name: name.clone() })),
        },
        MemberChange::RaiseFormat { to, checked } => {
            if *to <= membership.format {
                return Ok(None);
            }
            if let Some(unasked) = membership
                .roster
                .keys()
                .find(|name| !checked.contains(name))
            {
                return Err(format!(
                    "{unasked} became a member after the formats were asked; asking again"
                ));
            }
            Ok(Some(MemberEvent::FormatRaised { to: *to }))
        }
        MemberChange::RemoveLost { .. } => {
            unreachable!("decide takes several removals apart before deciding one")
        }
    }
}

/// Answers `raft-members`.
struct MembersHandler {
    groups: Groups,
    cluster: Cluster,
}

impl Handler for MembersHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (groups, cluster) = (self.groups.clone(), self.cluster.clone());
        Box::pin(async move {
            let change: MemberChange =
                codec::decode(&operation).map_err(|e| format!("a member change: {e}"))?;
            let outcome = change_here(&groups, &cluster, &change).await;
            codec::encode(&outcome).map_err(|e| e.to_string())
        })
    }
}

/// Registers the handler that changes the member list.
pub(crate) fn serve(cluster: &Cluster, groups: &Groups) {
    cluster.register(
        TARGET,
        Arc::new(MembersHandler {
            groups: groups.clone(),
            cluster: cluster.clone(),
        }),
    );
}

/// Runs for the node's life: every `every`, reads the member list from this node's replica of
/// the metadata and, when it changed, gives it to the cluster (links, placement).
pub(crate) async fn follow(groups: Groups, cluster: Cluster, every: Duration) {
    let configured = cluster.configured_members();
    let mut seen = u64::MAX;
    // A node that joined catches its replica of the metadata up entry by entry: until it
    // reaches the node's own admission, it holds lists older than the one the node was
    // admitted with (without the founders' addresses its config lacks), and following them
    // would drop members it is linked to (a simulation seed lost a link so, for good).
    let mut listed = false;
    loop {
        match Membership::read(groups.store()) {
            Ok(membership) if membership.version != seen => {
                seen = membership.version;
                listed |= membership.roster.contains_key(groups.node());
                if !listed {
                    tokio::time::sleep(every).await;
                    continue;
                }
                if let Some((members, draining)) = membership.roster_members(&configured) {
                    cluster.set_roster(members, draining);
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reading the cluster's members failed"),
        }
        tokio::time::sleep(every).await;
    }
}
