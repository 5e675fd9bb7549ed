//! A node joining a running replicated cluster: it asks the members its config lists to
//! contact (with the cluster's cookie, which its links need), an admin admits it (see
//! `members`), and its answer then carries the cluster's id and member list.
//!
//! The settings every member must share (partition count, replication factor) are checked
//! at the door: a node that disagrees is refused with both values named, since it would put
//! streams in other partitions than the cluster does. A node asking is remembered for a
//! while, so that an admin can admit it by name alone (`POST /admin/cluster/members`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::metadata::Membership;
use crate::cluster::identity::SharedSettings;
use crate::cluster::{Cluster, Handler};
use crate::codec;
use crate::config::Member;
use crate::store::EventStore;

/// The cluster handler a node asking to join calls (before it belongs to the cluster).
const TARGET: &str = "cluster-join";

/// How often a node waiting to be admitted asks again.
const ASK_EVERY: Duration = Duration::from_millis(500);

/// How often it says, in its log, that it is still waiting and what to run.
const REMIND_EVERY: Duration = Duration::from_secs(10);

/// A node asking for how long is still listed as asking.
const ASKING_FOR: Duration = Duration::from_secs(60);

/// Nodes listed as asking at most.
const MAX_ASKING: usize = 64;

/// A node asks to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub name: String,
    /// Its cluster address, as the members will dial it.
    pub address: String,
    pub edge: Option<String>,
    pub settings: SharedSettings,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinAnswer {
    /// Not admitted (yet): an admin admits it.
    Waiting,
    /// It may never join as asked, and why.
    Refused(String),
    /// Admitted: the cluster's id and its members now (name, address, edge), and those being
    /// drained.
    Admitted {
        cluster: u64,
        members: Vec<(String, String, Option<String>)>,
        draining: Vec<String>,
    },
}

/// The nodes that asked to join lately and are not members, by name.
#[derive(Debug, Default, Clone)]
pub struct Asking(Arc<Mutex<BTreeMap<String, (JoinRequest, Instant)>>>);

impl Asking {
    fn note(&self, request: &JoinRequest) {
        let mut asking = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        asking.retain(|_, (_, at)| at.elapsed() < ASKING_FOR);
        // Only nodes with the cookie ask, but a misconfigured fleet must not grow this
        // without bound: the one asked longest ago makes room.
        if asking.len() >= MAX_ASKING && !asking.contains_key(&request.name) {
            let oldest = asking
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                asking.remove(&oldest);
            }
        }
        asking.insert(request.name.clone(), (request.clone(), Instant::now()));
    }

    fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }

    /// The nodes asking now (asked within the last minute).
    pub fn now(&self) -> Vec<JoinRequest> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|(_, at)| at.elapsed() < ASKING_FOR)
            .map(|(request, _)| request.clone())
            .collect()
    }

    /// What `name` asked with, if it asked lately.
    pub fn get(&self, name: &str) -> Option<JoinRequest> {
        self.now().into_iter().find(|request| request.name == name)
    }
}

/// Answers `cluster-join` from this node's replica of the metadata.
struct JoinHandler {
    cluster: Cluster,
    store: EventStore,
    asking: Asking,
}

impl Handler for JoinHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (cluster, store, asking) = (
            self.cluster.clone(),
            self.store.clone(),
            self.asking.clone(),
        );
        Box::pin(async move {
            let request: JoinRequest =
                codec::decode(&operation).map_err(|e| format!("a join request: {e}"))?;
            let answer = answer(&cluster, &store, &asking, &request)?;
            codec::encode(&answer).map_err(|e| e.to_string())
        })
    }

    /// A joining node is not serving anything yet, and this serves nothing of the data.
    fn needs_serving(&self) -> bool {
        false
    }

    fn open_to_newcomers(&self) -> bool {
        true
    }
}

fn answer(
    cluster: &Cluster,
    store: &EventStore,
    asking: &Asking,
    request: &JoinRequest,
) -> Result<JoinAnswer, String> {
    let placement = cluster.placement();
    let ours = SharedSettings {
        partitions: placement.partitions(),
        replication_factor: placement.replication_factor(),
    };
    if let Some(difference) = request.settings.disagreement(&ours) {
        tracing::warn!(node = %request.name, %difference, "a node asking to join has other cluster settings; refused");
        return Ok(JoinAnswer::Refused(format!(
            "{difference}: these must be equal on every member (set them as the cluster has them)"
        )));
    }
    let membership = Membership::read(store).map_err(|e| e.to_string())?;
    // Not formed yet (its members are starting, or this replica is behind): ask again.
    let Some((members, draining)) = membership.roster_members(&cluster.configured_members()) else {
        return Ok(JoinAnswer::Waiting);
    };
    if !members.iter().any(|member| member.name == request.name) {
        if asking.get(&request.name).is_none() {
            tracing::info!(node = %request.name, address = %request.address, "a node asks to join the cluster; admit it with POST /admin/cluster/members or `playhouse cluster add`");
        }
        asking.note(request);
        return Ok(JoinAnswer::Waiting);
    }
    asking.forget(&request.name);
    Ok(JoinAnswer::Admitted {
        cluster: cluster.cluster_id(),
        members: members
            .into_iter()
            .map(|member| (member.name, member.address, member.edge))
            .collect(),
        draining,
    })
}

/// Registers the handler nodes asking to join call.
pub(crate) fn serve(cluster: &Cluster, store: &EventStore, asking: &Asking) {
    cluster.register(
        TARGET,
        Arc::new(JoinHandler {
            cluster: cluster.clone(),
            store: store.clone(),
            asking: asking.clone(),
        }),
    );
}

/// On a node joining: asks the members its config lists, in turn, until one says it is
/// admitted (then answers the cluster's id and members) or refuses it.
pub async fn wait_until_admitted(
    cluster: &Cluster,
    request: JoinRequest,
) -> Result<(u64, Vec<Member>, Vec<String>), String> {
    let contacts: Vec<Member> = cluster
        .configured_members()
        .into_iter()
        .filter(|member| member.name != request.name)
        .collect();
    let encoded = codec::encode(&request).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut reminded = Instant::now();
    let mut last = String::from("not asked yet");
    tracing::info!(node = %request.name, contacts = ?contacts.iter().map(|m| m.address.as_str()).collect::<Vec<_>>(), "asking to join the cluster");
    loop {
        for contact in &contacts {
            match cluster
                .call_as_newcomer(&contact.name, &contact.address, TARGET, encoded.clone())
                .await
                .and_then(|bytes| codec::decode::<JoinAnswer>(&bytes).map_err(|e| e.to_string()))
            {
                Ok(JoinAnswer::Admitted {
                    cluster: id,
                    members,
                    draining,
                }) => {
                    let members = members
                        .into_iter()
                        .map(|(name, address, edge)| Member {
                            name,
                            address,
                            edge,
                            services: Vec::new(),
                        })
                        .collect();
                    tracing::info!(node = %request.name, via = %contact.name, cluster = %format!("{id:016x}"), "admitted to the cluster");
                    return Ok((id, members, draining));
                }
                Ok(JoinAnswer::Refused(reason)) => {
                    return Err(format!(
                        "{} refused this node's request to join: {reason}",
                        contact.name
                    ));
                }
                Ok(JoinAnswer::Waiting) => last = format!("{} knows of the request", contact.name),
                Err(error) => last = format!("{}: {error}", contact.name),
            }
        }
        if reminded.elapsed() >= REMIND_EVERY {
            reminded = Instant::now();
            tracing::warn!(
                node = %request.name,
                waited_s = started.elapsed().as_secs(),
                %last,
                "waiting to be admitted: on any member run `playhouse cluster add {name}` (or POST /admin/cluster/members {{\"name\":\"{name}\"}})",
                name = request.name,
            );
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str) -> JoinRequest {
        JoinRequest {
            name: name.to_owned(),
            address: format!("{name}:4600"),
            edge: None,
            settings: SharedSettings {
                partitions: 64,
                replication_factor: 3,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nodes_asking_are_kept_a_minute_and_at_most_sixty_four() {
        let asking = Asking::default();
        asking.note(&request("node-4"));
        tokio::time::advance(Duration::from_secs(1)).await;
        for n in 0..MAX_ASKING {
            asking.note(&request(&format!("stranger-{n}")));
        }
        // The one asked longest ago made room for the last.
        assert_eq!(asking.now().len(), MAX_ASKING);
        assert!(asking.get("node-4").is_none());
        assert_eq!(
            asking.get("stranger-63").unwrap().address,
            "stranger-63:4600"
        );
        asking.forget("stranger-63");
        assert!(asking.get("stranger-63").is_none());
        tokio::time::advance(ASKING_FOR).await;
        assert!(asking.now().is_empty(), "a minute later nobody is asking");
    }
}
