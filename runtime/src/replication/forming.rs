//! Setting a partition's group up the first time its replicas meet: once, by one member, and
//! only when every replica is empty.
//!
//! Each node answers a `raft-hello` call with its replica id (its incarnation) and which of
//! its groups are set up. For each partition, the first member of its proposed replica set
//! asks every replica; when all answer and none holds the group, it initializes the group with
//! their replica ids as voters. A group that any replica holds is never set up again: a
//! replica that lost its disk (a new incarnation) rejoins it through the leader, not through
//! a second `initialize()` (see openraft's warning: two different initial configurations of
//! one group elect two leaders).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::groups::Groups;
use super::types::{PartitionId, Replica, ReplicaId};
use crate::cluster::{Cluster, Handler};
use crate::codec;
use crate::placement::Placement;

/// The cluster handler that answers who a node's replicas are.
pub const HELLO_TARGET: &str = "raft-hello";

/// How often a member that sets groups up asks its peers again while some are missing.
const ASK_EVERY: Duration = Duration::from_millis(500);

/// A node's answer: its replica id in every group, and the partitions whose groups it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub member: String,
    pub replica: ReplicaId,
    pub initialized: Vec<PartitionId>,
}

/// Answers `raft-hello`.
pub(crate) struct HelloHandler(pub Groups);

impl Handler for HelloHandler {
    fn handle(&self, _operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let groups = self.0.clone();
        Box::pin(async move {
            // Not before its groups run: until its peers have vouched for its directory, the
            // replica id it would give may be about to change (see `rollback`), and a leader
            // must not hand a partition to a replica that is not running yet.
            if !groups.started() {
                return Err(format!(
                    "{}'s partition groups are not running yet",
                    groups.node()
                ));
            }
            let hello = hello(&groups).await;
            codec::encode(&hello).map_err(|e| e.to_string())
        })
    }

    /// Forming groups comes before serving anything.
    fn needs_serving(&self) -> bool {
        false
    }
}

async fn hello(groups: &Groups) -> Hello {
    let mut initialized = Vec::new();
    for (partition, raft) in groups.running() {
        if raft.is_initialized().await.unwrap_or(true) {
            initialized.push(partition);
        }
    }
    initialized.sort_unstable();
    Hello {
        member: groups.node().to_owned(),
        replica: groups.replica_id(),
        initialized,
    }
}

/// Sets up the groups this node is first to hold, as their replicas come to answer; returns
/// once every one of them is set up (here, or found set up elsewhere).
pub(crate) async fn form(groups: Groups, cluster: Cluster, placement: Placement) {
    let me = groups.node().to_owned();
    let mut pending: Vec<PartitionId> = placement
        .replicated_on(&me)
        .into_iter()
        .filter(|partition| placement.replicas(*partition).first() == Some(&me))
        .collect();
    while !pending.is_empty() {
        let mut heard: BTreeMap<String, Hello> = BTreeMap::new();
        heard.insert(me.clone(), hello(&groups).await);
        let peers: std::collections::BTreeSet<String> = pending
            .iter()
            .flat_map(|partition| placement.replicas(*partition))
            .filter(|member| *member != me)
            .collect();
        for peer in peers {
            match ask(&cluster, &peer).await {
                Ok(answer) => {
                    heard.insert(peer, answer);
                }
                Err(error) => tracing::debug!(%peer, %error, "no hello yet"),
            }
        }
        let mut still = Vec::new();
        for partition in pending {
            match initialize_if_all_empty(&groups, &placement, partition, &heard).await {
                Ok(true) => {}
                Ok(false) => still.push(partition),
                Err(error) => {
                    tracing::warn!(partition, %error, "setting the group up failed; trying again");
                    still.push(partition);
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(ASK_EVERY).await;
        }
    }
}

/// Initializes `partition`'s group when every replica answered and none holds it. `Ok(true)`
/// when the group is set up (now or before, anywhere), `Ok(false)` when a replica has not
/// answered yet.
async fn initialize_if_all_empty(
    groups: &Groups,
    placement: &Placement,
    partition: PartitionId,
    heard: &BTreeMap<String, Hello>,
) -> Result<bool, String> {
    let mut voters = BTreeMap::new();
    for member in placement.replicas(partition) {
        let Some(hello) = heard.get(&member) else {
            return Ok(false);
        };
        if hello.initialized.binary_search(&partition).is_ok() {
            return Ok(true);
        }
        voters.insert(hello.replica, Replica { member });
    }
    let raft = groups.get(partition).ok_or("the group does not run here")?;
    match raft.initialize(voters.clone()).await {
        Ok(()) => {
            tracing::info!(partition, voters = ?voters.values().map(|r| &r.member).collect::<Vec<_>>(), "partition group set up");
            Ok(true)
        }
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(true),
        Err(error) => Err(error.to_string()),
    }
}

/// Asks `peer` who its replicas are.
pub(crate) async fn ask(cluster: &Cluster, peer: &str) -> Result<Hello, String> {
    let bytes = cluster
        .call_uncounted(peer, HELLO_TARGET, Vec::new(), Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())?;
    codec::decode(&bytes).map_err(|e| e.to_string())
}

/// Registers the hello handler with `cluster`.
pub(crate) fn serve(cluster: &Cluster, groups: &Groups) {
    cluster.register(HELLO_TARGET, Arc::new(HelloHandler(groups.clone())));
}
