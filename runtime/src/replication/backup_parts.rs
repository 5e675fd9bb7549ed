//! A partition's copy for a backup, from whichever member holds it: a backup taken on a member
//! that lacks partitions (a cluster of more members than the replication factor) fetches each
//! of those from the partition's leader, in parts that fit a call.
//!
//! The first part's call makes the copy there (the partition's snapshot past its read point,
//! as for a partition held where the backup runs) and keeps it for the parts after it, for
//! [`KEPT_FOR`] after the last part asked at most; the last part drops it. A copy is named by
//! the backup asking, so two backups at once never read each other's.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::backup::{PartitionCopy, copy_past_read_point};
use super::groups::Groups;
use super::types::PartitionId;
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The cluster handler that answers a part of a partition's copy.
pub(crate) const TARGET: &str = "raft-backup-part";
/// How long a copy made for a backup is kept, from the last part asked.
const KEPT_FOR: Duration = Duration::from_secs(120);
/// How long the first part may take: reaching the read point and making the snapshot.
const FIRST_PART_PATIENCE: Duration = Duration::from_secs(150);
/// How long a later part may take (it is read from the copy kept).
const PART_PATIENCE: Duration = Duration::from_secs(30);
/// How long to go on asking when no leader answers (an election, a move).
const ASKING_FOR: Duration = Duration::from_secs(60);

/// A part of `partition`'s copy for backup `backup`: its proposals from `from` on, as many as
/// fit `max_bytes` (at least one).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartRequest {
    backup: u64,
    partition: PartitionId,
    from: u64,
    max_bytes: u64,
}

/// A part answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    last_applied: Option<(u64, u64)>,
    /// How many proposals the whole copy holds.
    total: u64,
    proposals: Vec<Vec<u8>>,
}

/// `partition`'s copy, past its read point now, fetched from its leader for backup `backup`.
pub(crate) async fn fetch(
    groups: &Groups,
    cluster: &Cluster,
    backup: u64,
    partition: PartitionId,
) -> Result<PartitionCopy, String> {
    let max_bytes = cluster.max_call_bytes() / 2;
    let (first, member) = first_part(groups, cluster, backup, partition, max_bytes).await?;
    let mut copy = PartitionCopy {
        last_applied: first.last_applied,
        proposals: first.proposals,
    };
    while (copy.proposals.len() as u64) < first.total {
        let request = PartRequest {
            backup,
            partition,
            from: copy.proposals.len() as u64,
            max_bytes,
        };
        let part = ask(cluster, &member, &request, PART_PATIENCE)
            .await
            .map_err(|reason| format!("part of its copy from {member}: {reason}"))?;
        if part.proposals.is_empty() {
            return Err(format!("{member} sent an empty part of its copy"));
        }
        copy.proposals.extend(part.proposals);
    }
    Ok(copy)
}

/// The copy's first part, from the partition's leader (asked again while none answers), and
/// the member that made it.
async fn first_part(
    groups: &Groups,
    cluster: &Cluster,
    backup: u64,
    partition: PartitionId,
    max_bytes: u64,
) -> Result<(Part, String), String> {
    let request = PartRequest {
        backup,
        partition,
        from: 0,
        max_bytes,
    };
    let deadline = Instant::now() + ASKING_FOR;
    loop {
        let asked = match groups.leader_of(partition) {
            Some(leader) => ask(cluster, &leader, &request, FIRST_PART_PATIENCE)
                .await
                .map(|part| (part, leader.clone()))
                .map_err(|reason| format!("asking {leader}, its leader: {reason}")),
            None => Err("no leader known".to_owned()),
        };
        match asked {
            Ok(answered) => return Ok(answered),
            Err(reason) if Instant::now() >= deadline => {
                return Err(format!("its copy from the member holding it: {reason}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn ask(
    cluster: &Cluster,
    member: &str,
    request: &PartRequest,
    patience: Duration,
) -> Result<Part, String> {
    let bytes = codec::encode(request).map_err(|e| e.to_string())?;
    let answer = cluster
        .call_uncounted(member, TARGET, bytes, patience)
        .await
        .map_err(|error| error.to_string())?;
    codec::decode::<Result<Part, String>>(&answer).map_err(|e| e.to_string())?
}

/// The copies this member made for backups, kept for their next parts.
#[derive(Default)]
struct Kept(Mutex<Vec<KeptCopy>>);

struct KeptCopy {
    backup: u64,
    partition: PartitionId,
    asked_at: Instant,
    copy: Arc<PartitionCopy>,
}

impl Kept {
    fn take_fresh(&self, backup: u64, partition: PartitionId) -> Option<Arc<PartitionCopy>> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|copy| copy.asked_at.elapsed() < KEPT_FOR);
        let found = kept
            .iter_mut()
            .find(|copy| copy.backup == backup && copy.partition == partition)?;
        found.asked_at = Instant::now();
        Some(found.copy.clone())
    }

    fn keep(&self, backup: u64, partition: PartitionId, copy: Arc<PartitionCopy>) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|copy| copy.asked_at.elapsed() < KEPT_FOR);
        kept.push(KeptCopy {
            backup,
            partition,
            asked_at: Instant::now(),
            copy,
        });
    }

    fn drop_copy(&self, backup: u64, partition: PartitionId) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|copy| !(copy.backup == backup && copy.partition == partition));
    }
}

/// Answers [`TARGET`]: parts of copies of the partitions this member holds.
struct PartHandler {
    groups: Groups,
    cluster: Cluster,
    kept: Arc<Kept>,
}

impl PartHandler {
    async fn answer(&self, request: PartRequest) -> Result<Part, String> {
        let PartRequest {
            backup,
            partition,
            from,
            max_bytes,
        } = request;
        let copy = if from == 0 {
            let copy =
                Arc::new(copy_past_read_point(&self.groups, Some(&self.cluster), partition).await?);
            self.kept.keep(backup, partition, copy.clone());
            copy
        } else {
            self.kept.take_fresh(backup, partition).ok_or_else(|| {
                format!(
                    "the copy of partition {partition} made for this backup is gone (no part \
                     asked for {} s, or this node restarted): take the backup again",
                    KEPT_FOR.as_secs()
                )
            })?
        };
        let total = copy.proposals.len() as u64;
        let proposals = within(&copy.proposals, from, max_bytes);
        if from + proposals.len() as u64 >= total {
            self.kept.drop_copy(backup, partition);
        }
        Ok(Part {
            last_applied: copy.last_applied,
            total,
            proposals,
        })
    }
}

/// The proposals from `from` on that fit `max_bytes` together, at least one (a proposal fits a
/// call: it was proposed in one).
fn within(proposals: &[Vec<u8>], from: u64, max_bytes: u64) -> Vec<Vec<u8>> {
    let mut taken = Vec::new();
    let mut bytes = 0u64;
    for proposal in proposals.iter().skip(from as usize) {
        let size = proposal.len() as u64;
        if !taken.is_empty() && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        taken.push(proposal.clone());
    }
    taken
}

impl Handler for PartHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let handler = PartHandler {
            groups: self.groups.clone(),
            cluster: self.cluster.clone(),
            kept: self.kept.clone(),
        };
        Box::pin(async move {
            let request: PartRequest =
                codec::decode(&operation).map_err(|e| format!("a backup part request: {e}"))?;
            codec::encode(&handler.answer(request).await).map_err(|e| e.to_string())
        })
    }
}

/// Registers [`TARGET`] on `cluster`.
pub(crate) fn serve(cluster: &Cluster, groups: &Groups) {
    cluster.register(
        TARGET,
        Arc::new(PartHandler {
            groups: groups.clone(),
            cluster: cluster.clone(),
            kept: Arc::default(),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_takes_what_fits_and_at_least_one_proposal() {
        let proposals: Vec<Vec<u8>> = [10, 20, 30, 100, 5].iter().map(|n| vec![0; *n]).collect();
        let sizes = |part: Vec<Vec<u8>>| part.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(within(&proposals, 0, 60)), [10, 20, 30]);
        assert_eq!(
            sizes(within(&proposals, 3, 60)),
            [100],
            "one too large goes alone"
        );
        assert_eq!(sizes(within(&proposals, 4, 60)), [5]);
        assert!(within(&proposals, 5, 60).is_empty());
    }
}
