//! The cluster's format: which shapes of Raft entries and node-to-node calls every member
//! reads, so that nodes of two consecutive builds run side by side during a rolling upgrade.
//!
//! Every build reads what the builds before it wrote (the codec numbers enum variants in
//! order and new ones go at the end), but an older build cannot read what a newer one adds.
//! So what a build adds to what members send each other belongs to a numbered format, and is
//! written only once the cluster's format, recorded in the metadata group, has reached it.
//! The metadata group's leader raises the format (`MemberEvent::FormatRaised`) to the
//! highest one every member of the roster says it reads (handler `cluster-format`; a build
//! from before formats has no such handler and reads format 1). Admission refuses a node
//! known to read less; a node that finds the cluster's format above what it reads (an older
//! build with formats, admitted or restarted after the raise) stops, saying so. A build from
//! before formats cannot notice: downgrading past a raise is not supported.
//!
//! The formats, and what each adds:
//! - 1: everything before formats were numbered.
//! - 2: the retention cut of processed command ids (`Proposal::ForgetCommands`, `retention`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::groups::Groups;
use super::members::{ChangeOutcome, MemberChange, change_here};
use super::metadata::{METADATA_GROUP, Membership};
use crate::cluster::wire::CallError;
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The cluster format this build reads and writes. A build with the `previous-format` cargo
/// feature is the one before (for the rolling-upgrade test).
pub const READS: u32 = if cfg!(feature = "previous-format") {
    1
} else {
    2
};

/// The format of a cluster that never recorded one, and of a member without the handler.
pub const FIRST: u32 = 1;

/// The format from which leaders propose retention cuts (`Proposal::ForgetCommands`).
pub const FORGET_COMMANDS_FROM: u32 = 2;

/// The cluster handler that answers which format a member reads.
const TARGET: &str = "cluster-format";

/// How often the metadata group's leader looks whether the format can be raised.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// How long a member has to say which format it reads.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Answers `cluster-format`: [`READS`].
struct FormatHandler;

impl Handler for FormatHandler {
    fn handle(&self, _: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        Box::pin(async { codec::encode(&READS).map_err(|e| e.to_string()) })
    }
}

/// Registers the handler that says which format this node reads.
pub(crate) fn serve(cluster: &Cluster) {
    cluster.register(TARGET, Arc::new(FormatHandler));
}

/// The format `member` reads: this build's for this node, [`FIRST`] for a member whose build
/// has no `cluster-format` handler.
pub(crate) async fn read_by(cluster: &Cluster, member: &str) -> Result<u32, String> {
    if member == cluster.node() {
        return Ok(READS);
    }
    match cluster
        .call_uncounted(member, TARGET, Vec::new(), ASK_TIMEOUT)
        .await
    {
        Ok(bytes) => codec::decode(&bytes).map_err(|e| format!("{member}'s answer: {e}")),
        Err(CallError::NoHandler { .. }) => Ok(FIRST),
        Err(error) => Err(error.to_string()),
    }
}

/// What the cluster's format can be raised to now: the lowest format the roster's members
/// read, when it is above the recorded one; `None` while a member cannot be asked or reads
/// no more than the cluster's format.
async fn raisable(cluster: &Cluster, membership: &Membership) -> Option<(u32, Vec<String>)> {
    let mut lowest = READS;
    for member in membership.roster.keys() {
        match read_by(cluster, member).await {
            Ok(reads) => lowest = lowest.min(reads),
            Err(error) => {
                tracing::debug!(%member, %error, "cannot tell which format a member reads; the cluster's format stays");
                return None;
            }
        }
    }
    (lowest > membership.format).then(|| (lowest, membership.roster.keys().cloned().collect()))
}

/// Runs for the node's life: where this node leads the metadata group, raises the cluster's
/// format once every member reads a higher one; everywhere, stops the node when the cluster's
/// format is above what this build reads.
pub(crate) async fn run(groups: Groups, cluster: Cluster) {
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let membership = match Membership::read(groups.store()) {
            Ok(membership) => membership,
            Err(error) => {
                tracing::warn!(%error, "reading the cluster's format failed");
                continue;
            }
        };
        if membership.format > READS {
            groups.fail(format!(
                "the cluster's format is {}, and this build reads format {READS} at most: it \
                 cannot follow the cluster's entries. Run a build that reads format {} or later \
                 (downgrading after an upgrade completed is not supported)",
                membership.format, membership.format
            ));
            return;
        }
        // Nothing to raise to (this build reads no more than is recorded), or not ours to.
        if membership.format >= READS || !membership.formed() || !groups.leads(METADATA_GROUP) {
            continue;
        }
        let Some((to, checked)) = raisable(&cluster, &membership).await else {
            continue;
        };
        match change_here(
            &groups,
            &cluster,
            &MemberChange::RaiseFormat { to, checked },
        )
        .await
        {
            ChangeOutcome::Done { .. } => {
                tracing::info!(
                    from = membership.format,
                    to,
                    "the cluster's format was raised: every member reads it"
                );
            }
            outcome => tracing::debug!(?outcome, "raising the cluster's format waits"),
        }
    }
}
