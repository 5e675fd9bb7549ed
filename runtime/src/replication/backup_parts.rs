//! A partition's copy for a backup, from whichever member holds it: a backup taken on a member
//! that lacks partitions (a cluster of more members than the replication factor) fetches each
//! of those from the partition's leader, in parts that fit a call.
//!
//! The first part's call makes the copy there (the partition's snapshot past its read point,
//! as for a partition held where the backup runs) and keeps it for the parts after it, for
//! [`KEPT_FOR`] after the last part asked at most; the last part drops it. A copy is named by
//! the backup asking, so two backups at once never read each other's, and each answer names
//! the copy it is from: a first part asked again (its answer lost) makes a new copy in place
//! of the old, and a part of any other copy than the first part's is refused.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::backup::{PartitionCopy, copy_past_read_point};
use super::groups::Groups;
use super::types::PartitionId;
use crate::cluster::wire::CallError;
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
    /// Which copy it is from (drawn when the copy was made).
    copy: u64,
    last_applied: Option<(u64, u64)>,
    /// How many proposals the whole copy holds.
    total: u64,
    proposals: Vec<Vec<u8>>,
}

impl Part {
    /// Whether `self` is a later part of the copy `first` began.
    fn continues(&self, first: &Part) -> bool {
        self.copy == first.copy
            && self.total == first.total
            && self.last_applied == first.last_applied
    }
}

/// `partition`'s copy, past its read point now, fetched from its leader for backup `backup`.
pub(crate) async fn fetch(
    groups: &Groups,
    cluster: &Cluster,
    backup: u64,
    partition: PartitionId,
) -> Result<PartitionCopy, String> {
    let max_bytes = cluster.max_call_bytes() / 2;
    let (mut first, member) = first_part(groups, cluster, backup, partition, max_bytes).await?;
    let mut copy = PartitionCopy {
        last_applied: first.last_applied,
        proposals: std::mem::take(&mut first.proposals),
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
        if !part.continues(&first) {
            return Err(format!(
                "{member} answered a part of another copy than the one begun; take the backup again"
            ));
        }
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
        .map_err(|error| match error {
            CallError::NoHandler { .. } => format!(
                "{member} runs an earlier build, which cannot send a partition's copy: upgrade \
                 every member first, or take the backup on a member holding every partition"
            ),
            other => other.to_string(),
        })?;
    codec::decode::<Result<Part, String>>(&answer).map_err(|e| e.to_string())?
}

/// The copies this member made for backups, kept for their next parts.
#[derive(Default)]
struct Kept(Mutex<Vec<KeptCopy>>);

struct KeptCopy {
    backup: u64,
    partition: PartitionId,
    /// Drawn when the copy was made: names it in every part.
    id: u64,
    asked_at: Instant,
    copy: Arc<PartitionCopy>,
}

impl Kept {
    fn take_fresh(&self, backup: u64, partition: PartitionId) -> Option<(u64, Arc<PartitionCopy>)> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|copy| copy.asked_at.elapsed() < KEPT_FOR);
        let found = kept
            .iter_mut()
            .find(|copy| copy.backup == backup && copy.partition == partition)?;
        found.asked_at = Instant::now();
        Some((found.id, found.copy.clone()))
    }

    /// Keeps `copy` for `backup`'s next parts, in place of any earlier copy of the partition;
    /// the copy's id.
    fn keep(&self, backup: u64, partition: PartitionId, copy: Arc<PartitionCopy>) -> u64 {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|copy| {
            copy.asked_at.elapsed() < KEPT_FOR
                && !(copy.backup == backup && copy.partition == partition)
        });
        let id = uuid::Uuid::new_v4().as_u64_pair().0;
        kept.push(KeptCopy {
            backup,
            partition,
            id,
            asked_at: Instant::now(),
            copy,
        });
        id
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
        let (id, copy) = if from == 0 {
            let copy =
                Arc::new(copy_past_read_point(&self.groups, Some(&self.cluster), partition).await?);
            (self.kept.keep(backup, partition, copy.clone()), copy)
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
            copy: id,
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

    #[tokio::test(start_paused = true)]
    async fn a_copy_made_again_replaces_the_first_and_its_parts_say_which_copy_they_are_of() {
        let kept = Kept::default();
        let copy = |n: usize| {
            Arc::new(PartitionCopy {
                last_applied: Some((1, n as u64)),
                proposals: vec![vec![0; 4]; n],
            })
        };
        let first = kept.keep(7, 3, copy(2));
        let again = kept.keep(7, 3, copy(5));
        assert_ne!(first, again);
        let (id, found) = kept.take_fresh(7, 3).unwrap();
        assert_eq!(
            (id, found.proposals.len()),
            (again, 5),
            "the later copy, alone"
        );
        assert!(
            kept.take_fresh(8, 3).is_none(),
            "another backup's copy is not read"
        );
        let part = |copy: u64, total: u64| Part {
            copy,
            last_applied: Some((1, total)),
            total,
            proposals: Vec::new(),
        };
        assert!(part(again, 5).continues(&part(again, 5)));
        assert!(!part(first, 5).continues(&part(again, 5)));
        assert!(!part(again, 2).continues(&part(again, 5)));
        tokio::time::advance(KEPT_FOR).await;
        assert!(
            kept.take_fresh(7, 3).is_none(),
            "dropped once no part was asked for a while"
        );
    }
}
