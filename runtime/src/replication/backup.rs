//! Backups of a running cluster, and restoring one into a new cluster.
//!
//! A backup is every partition's snapshot, each at a Raft index at or past the point the
//! backup began: for each partition, the member taking it reaches the partition's read point
//! (its read barrier where it leads, else the leader's applied index after the leader's
//! barrier), has its group build a snapshot (made between two applies, so exactly what the
//! applied entries wrote: see `snapshot`), and writes it out. A partition this member holds
//! no replica of (more members than the replication factor) is copied the same way on its
//! leader and fetched from there in parts (`backup_parts`). Every write acknowledged before
//! the backup began is in it.
//!
//! Each partition is cut at its own Raft index, not all at one instant: writes made while
//! the backup runs may be in one partition's cut and not in another's. A saga that moved
//! money between two partitions meanwhile may then be restored with one side of a step (its
//! record of a debit without the debit, or the debit without the saga). Taken while nothing
//! is written (or with sagas settled), a backup is the cluster as it stood. A cut of every
//! partition at one instant (holding proposals cluster-wide while the read points are
//! taken) is still to come.
//!
//! A snapshot is the proposals that write the partition's data again, so a restore is those
//! proposals, proposed to the new cluster's leaders in order and applied through the same
//! checks as any entry. The metadata group is not in a backup: the new cluster has its own
//! members, incarnations and id, and never meets the old one.
//!
//! The file: [`MAGIC`], then records, each a 4-byte big-endian length and a [`Record`] in
//! the codec: a header, then per partition its start and its proposals, then an end that
//! counts them (a file cut short has none).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use openraft::rt::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::backup_parts;
use super::groups::Groups;
use super::snapshot::still_lacking;
use super::types::{Applied, PartitionId, Proposal};
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The first bytes of a backup file.
pub const MAGIC: &[u8] = b"playhouse backup\n";
/// The record format written today; a reader refuses another.
pub const FORMAT: u32 = 1;
/// The largest record read back (one proposal: an append of at most a few MiB).
const MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;
/// Partitions whose snapshots are made at once for a backup.
const PARTITIONS_AT_ONCE: usize = 8;
/// How long a partition may take to reach its read point and build its snapshot.
const PARTITION_WAIT: Duration = Duration::from_secs(60);
/// How long a snapshot build may stay put off for want of space before the backup says so.
const PUT_OFF_PATIENCE: Duration = Duration::from_secs(3);

/// The cluster handler that answers a partition's read point on its leader.
const READ_POINT: &str = "raft-read-point";
/// The cluster handler that proposes restored entries on a partition's leader.
const RESTORE: &str = "raft-restore";

/// One record of a backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Header {
        format: u32,
        /// The backed-up cluster's formation (`Membership::formation`; 0 for a node alone):
        /// a restore into that cluster is refused.
        cluster_id: u64,
        partitions: u32,
        /// The member that took it.
        member: String,
        taken_at_micros: i64,
    },
    /// A partition's snapshot follows: `proposals` records.
    Partition {
        partition: PartitionId,
        /// The last entry its snapshot covers (term, index).
        last_applied: Option<(u64, u64)>,
        proposals: u64,
    },
    /// One encoded [`Proposal`].
    Proposal(Vec<u8>),
    End {
        partitions: u32,
        proposals: u64,
    },
    /// The member could not go on (the reason is for a person); no end record follows.
    Failed(String),
}

/// Writes `record` to `out`, length first.
pub fn write_record(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    let bytes = codec::encode(record).map_err(std::io::Error::other)?;
    let length = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    out.write_all(&length.to_be_bytes())?;
    out.write_all(&bytes)
}

/// Reads the next record from `input`, `None` at its end.
pub fn read_record(input: &mut impl Read) -> std::io::Result<Option<Record>> {
    let mut length = [0u8; 4];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes(length);
    if length > MAX_RECORD_BYTES {
        return Err(std::io::Error::other(format!(
            "a record of {length} bytes: this is not a backup, or it is damaged"
        )));
    }
    let mut bytes = vec![0u8; length as usize];
    input.read_exact(&mut bytes)?;
    codec::decode(&bytes)
        .map(Some)
        .map_err(|error| std::io::Error::other(format!("a damaged record: {error}")))
}

/// Reads and checks a backup file's magic bytes.
pub fn read_magic(input: &mut impl Read) -> std::io::Result<()> {
    let mut magic = vec![0u8; MAGIC.len()];
    input.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(std::io::Error::other(
            "not a playhouse backup (its first bytes differ)",
        ));
    }
    Ok(())
}

/// The records of a backup taken on this member, sent to `out` as they are made (a
/// partition's snapshot at a time): the partitions it holds from its own replicas, the others
/// fetched from their leaders (`backup_parts`). A failure midway ends the records early (no
/// end record: the file is refused).
pub async fn take(
    groups: Groups,
    cluster: Option<Cluster>,
    partitions: u32,
    out: tokio::sync::mpsc::Sender<Record>,
) {
    let backup = uuid::Uuid::new_v4().as_u64_pair().0;
    let header = Record::Header {
        format: FORMAT,
        cluster_id: formation(&groups, cluster.as_ref()),
        partitions,
        member: groups.node().to_owned(),
        taken_at_micros: (crate::time::unix_millis() as i64).saturating_mul(1_000),
    };
    let mut sent = out.send(header).await.is_ok();
    let mut total = 0u64;
    tracing::info!(partitions, "taking a backup");
    // A few partitions at a time: most of a partition's time is waiting (for its read point,
    // for its snapshot's sync), and the file still lists them in order.
    let mut snapshots = futures::stream::iter(0..partitions)
        .map(|partition| {
            let (groups, cluster) = (groups.clone(), cluster.clone());
            async move {
                let made = match cluster.as_ref() {
                    Some(cluster) if !groups.holds(partition) => {
                        backup_parts::fetch(&groups, cluster, backup, partition).await
                    }
                    _ => copy_past_read_point(&groups, cluster.as_ref(), partition).await,
                };
                (partition, made)
            }
        })
        .buffered(PARTITIONS_AT_ONCE);
    while let Some((partition, made)) = snapshots.next().await {
        if !sent {
            // The reader went away: nothing more to make.
            return;
        }
        let copy = match made {
            Ok(copy) => copy,
            Err(reason) => {
                let error = format!("partition {partition}: {reason}");
                tracing::warn!(%error, "the backup stopped");
                let _ = out.send(Record::Failed(error)).await;
                return;
            }
        };
        let PartitionCopy {
            last_applied,
            proposals,
        } = copy;
        total += proposals.len() as u64;
        sent = out
            .send(Record::Partition {
                partition,
                last_applied,
                proposals: proposals.len() as u64,
            })
            .await
            .is_ok();
        for proposal in proposals {
            if !sent {
                break;
            }
            sent = out.send(Record::Proposal(proposal)).await.is_ok();
        }
    }
    let _ = out
        .send(Record::End {
            partitions,
            proposals: total,
        })
        .await;
    tracing::info!(partitions, proposals = total, "backup taken");
}

/// The formation of the cluster `groups` run in (0 for a node alone, or before it formed).
pub fn formation(groups: &Groups, cluster: Option<&Cluster>) -> u64 {
    let Some(cluster) = cluster else {
        return 0;
    };
    super::metadata::Membership::read(groups.store())
        .ok()
        .and_then(|membership| membership.formation(cluster.cluster_id()))
        .unwrap_or(0)
}

/// What a backup holds of one partition: its snapshot's proposals, and the last entry the
/// snapshot covers (term, index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionCopy {
    pub last_applied: Option<(u64, u64)>,
    pub proposals: Vec<Vec<u8>>,
}

/// `partition`'s copy from this member's replica: its snapshot, built at or past its read
/// point now.
pub(crate) async fn copy_past_read_point(
    groups: &Groups,
    cluster: Option<&Cluster>,
    partition: PartitionId,
) -> Result<PartitionCopy, String> {
    let raft = groups
        .held(partition)
        .ok_or_else(|| "this member holds no replica of it".to_owned())?;
    let point = match groups.read_barrier(partition).await {
        Ok(()) => groups.applied_index(partition),
        Err(_) => {
            let cluster = cluster.ok_or("it has no leader")?;
            let index = leaders_read_point(groups, cluster, partition).await?;
            groups
                .wait_applied(partition, index, PARTITION_WAIT)
                .await?;
            Some(index)
        }
    };
    raft.trigger()
        .snapshot()
        .await
        .map_err(|error| format!("asking for a snapshot: {error}"))?;
    // A build put off for want of space (`snapshot_room`) would never come: said at once
    // rather than after the whole wait.
    let deadline = tokio::time::Instant::now() + PARTITION_WAIT;
    let mut put_off_since = None;
    loop {
        let snapshot = raft.metrics().borrow_watched().snapshot.map(|id| id.index);
        if snapshot >= point {
            break;
        }
        let now = tokio::time::Instant::now();
        match groups.snapshot_put_off(partition) {
            Some(needed) if now >= *put_off_since.get_or_insert(now) + PUT_OFF_PATIENCE => {
                return Err(format!(
                    "{} has no room for the partition's snapshot: it needs {} MiB beyond its \
                     store.min_free_mib reserve; free space there and take the backup again",
                    groups.node(),
                    super::snapshot_room::mib(needed)
                ));
            }
            Some(_) => {}
            None => put_off_since = None,
        }
        if now >= deadline {
            return Err(format!(
                "no snapshot past index {point:?} within {PARTITION_WAIT:?} (it holds one at {snapshot:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snapshot = raft
        .get_snapshot()
        .await
        .map_err(|error| format!("reading its snapshot: {error}"))?
        .ok_or_else(|| "its snapshot vanished".to_owned())?;
    Ok(PartitionCopy {
        last_applied: snapshot
            .meta
            .last_log_id
            .map(|log_id| (log_id.leader_id.term, log_id.index)),
        proposals: snapshot.snapshot.proposals,
    })
}

/// The leader's applied index after its read barrier: everything acknowledged before now.
async fn leaders_read_point(
    groups: &Groups,
    cluster: &Cluster,
    partition: PartitionId,
) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + PARTITION_WAIT;
    loop {
        let asked = match groups.leader_of(partition) {
            Some(leader) => cluster
                .call(
                    &leader,
                    READ_POINT,
                    codec::encode(&partition).unwrap_or_default(),
                )
                .await
                .map_err(|error| error.to_string())
                .and_then(|bytes| {
                    codec::decode::<Result<u64, String>>(&bytes).map_err(|e| e.to_string())?
                }),
            None => Err("no leader known".to_owned()),
        };
        match asked {
            Ok(index) => return Ok(index),
            Err(reason) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("its leader's read point: {reason}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What proposing a batch of restored entries came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestoredBatch {
    pub partition: PartitionId,
    /// Entries applied.
    pub applied: u64,
    /// Entries already held (a batch sent again), not proposed.
    pub held: u64,
    /// Entries the store refused (it held something else: not a new cluster).
    pub refused: u64,
    /// The first refusal, as the store said it.
    pub first_refusal: Option<String>,
}

/// A batch of a partition's restored entries, as sent to its leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RestoreBatch {
    partition: PartitionId,
    proposals: Vec<Vec<u8>>,
    /// The partition's last batch: its hosts and sagas start again from what it holds.
    last: bool,
}

/// Proposes `proposals` (encoded, in backup order) to `partition`'s leader, here or at
/// another member.
pub async fn restore_batch(
    groups: &Groups,
    cluster: Option<&Cluster>,
    partition: PartitionId,
    proposals: Vec<Vec<u8>>,
    last: bool,
) -> Result<RestoredBatch, String> {
    let batch = RestoreBatch {
        partition,
        proposals,
        last,
    };
    let deadline = tokio::time::Instant::now() + PARTITION_WAIT;
    loop {
        let outcome = match (
            groups.leads(partition),
            cluster,
            groups.leader_of(partition),
        ) {
            (true, _, _) => restore_here(groups, &batch).await,
            (false, Some(cluster), Some(leader)) if leader != groups.node() => {
                let encoded = codec::encode(&batch).map_err(|e| e.to_string())?;
                cluster
                    .call_uncounted(&leader, RESTORE, encoded, Duration::from_secs(30))
                    .await
                    .map_err(|error| error.to_string())
                    .and_then(|bytes| {
                        codec::decode::<Result<RestoredBatch, String>>(&bytes)
                            .map_err(|e| e.to_string())?
                    })
            }
            _ => Err(format!("partition {partition} has no leader")),
        };
        match outcome {
            Ok(restored) => return Ok(restored),
            Err(reason) if tokio::time::Instant::now() >= deadline => return Err(reason),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Proposes `batch` on this member, which must lead its partition.
async fn restore_here(groups: &Groups, batch: &RestoreBatch) -> Result<RestoredBatch, String> {
    let partition = batch.partition;
    let raft = groups
        .get(partition)
        .filter(|_| groups.leads(partition))
        .ok_or_else(|| format!("this member does not lead partition {partition}"))?;
    // Everything committed is applied here, so what the store lacks is what the group lacks.
    groups
        .read_barrier(partition)
        .await
        .map_err(|error| error.to_string())?;
    let mut restored = RestoredBatch {
        partition,
        ..RestoredBatch::default()
    };
    // A batch sent again (its answer was lost) proposes only what is not held yet.
    let mut proposals = Vec::new();
    for bytes in &batch.proposals {
        let proposal: Proposal = codec::decode(bytes)
            .map_err(|error| format!("a damaged entry in the batch: {error}"))?;
        match still_lacking(groups.store(), proposal).map_err(|error| error.to_string())? {
            Some(lacking) => proposals.push(lacking),
            None => restored.held += 1,
        }
    }
    if proposals.is_empty() {
        if batch.last {
            groups.tell_gained_again(partition);
        }
        return Ok(restored);
    }
    let mut answers = raft
        .client_write_many(proposals)
        .await
        .map_err(|error| error.to_string())?;
    while let Some(answer) = answers
        .try_next()
        .await
        .map_err(|error| error.to_string())?
    {
        match answer.map_err(|error| error.to_string())?.response {
            Applied::Refused(refusal) => {
                restored.refused += 1;
                restored
                    .first_refusal
                    .get_or_insert_with(|| refusal.into_store_error().to_string());
            }
            _ => restored.applied += 1,
        }
    }
    if batch.last {
        // The hosts and sagas started on an empty partition: they start again from what it
        // holds now (a saga caught mid-way by the backup resumes).
        groups.tell_gained_again(partition);
    }
    Ok(restored)
}

/// Answers `raft-read-point` and `raft-restore` on a partition's leader.
struct BackupHandler {
    groups: Groups,
    restore: bool,
}

impl Handler for BackupHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (groups, restore) = (self.groups.clone(), self.restore);
        Box::pin(async move {
            if restore {
                let batch: RestoreBatch =
                    codec::decode(&operation).map_err(|e| format!("a restore batch: {e}"))?;
                let outcome = restore_here(&groups, &batch).await;
                return codec::encode(&outcome).map_err(|e| e.to_string());
            }
            let partition: PartitionId =
                codec::decode(&operation).map_err(|e| format!("a partition: {e}"))?;
            let point = match groups.read_barrier(partition).await {
                Ok(()) => groups
                    .applied_index(partition)
                    .ok_or_else(|| "nothing applied yet".to_owned()),
                Err(error) => Err(error.to_string()),
            };
            codec::encode(&point).map_err(|e| e.to_string())
        })
    }
}

/// Registers the handlers a backup and a restore call on a partition's leader.
pub(crate) fn serve(cluster: &Cluster, groups: &Groups) {
    backup_parts::serve(cluster, groups);
    for (target, restore) in [(READ_POINT, false), (RESTORE, true)] {
        cluster.register(
            target,
            Arc::new(BackupHandler {
                groups: groups.clone(),
                restore,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_a_cut_file_ends_early() {
        let records = [
            Record::Header {
                format: FORMAT,
                cluster_id: 7,
                partitions: 2,
                member: "node-1".into(),
                taken_at_micros: 1,
            },
            Record::Partition {
                partition: 0,
                last_applied: Some((3, 42)),
                proposals: 1,
            },
            Record::Proposal(vec![1, 2, 3]),
            Record::End {
                partitions: 2,
                proposals: 1,
            },
        ];
        let mut file = MAGIC.to_vec();
        for record in &records {
            write_record(&mut file, record).unwrap();
        }
        let mut input = file.as_slice();
        read_magic(&mut input).unwrap();
        let mut read = Vec::new();
        while let Some(record) = read_record(&mut input).unwrap() {
            read.push(record);
        }
        assert_eq!(read, records);

        // Cut inside the last record: an error, never a record made up.
        let mut cut = &file[..file.len() - 2];
        read_magic(&mut cut).unwrap();
        let mut outcome = Ok(Some(records[0].clone()));
        while let Ok(Some(_)) = outcome {
            outcome = read_record(&mut cut);
        }
        assert!(outcome.is_err(), "{outcome:?}");
        assert!(read_magic(&mut &b"not a backup at all"[..]).is_err());
    }
}
