//! The one writer of a node's Raft log file: every partition group's appends, votes,
//! truncations and purges, group-committed.
//!
//! A single tokio task takes the first queued write, gathers whatever else is queued (any
//! group's), and commits the lot in one `Durability::Immediate` redb transaction, then answers
//! each. Writes of one group keep their order (one queue, applied in order inside the
//! transaction), which openraft requires of a log: a vote and the entries around it must reach
//! the disk in the order they were made. Under load, 64 groups' appends share one fsync.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, Durability, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::types::PartitionId;
use crate::store::Disk;

/// Entries of every group: (partition, index) -> encoded entry.
pub(crate) const ENTRIES: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("raft_entries");

/// Each group's small records: (partition, which) -> encoded value.
pub(crate) const GROUP_RECORDS: TableDefinition<(u32, u8), &[u8]> =
    TableDefinition::new("raft_group_records");

/// Keys of [`GROUP_RECORDS`].
pub(crate) const VOTE: u8 = 0;
pub(crate) const COMMITTED: u8 = 1;
pub(crate) const LAST_PURGED: u8 = 2;
pub(crate) const SNAPSHOT: u8 = 3;

/// The "group" under which node-wide records are kept (no partition, nor the metadata group,
/// has this number).
pub(crate) const NODE_RECORDS: u32 = u32::MAX;
const _: () = assert!(NODE_RECORDS != crate::placement::METADATA_GROUP);
/// This node's incarnation: its replica id in every group (a node record).
pub(crate) const INCARNATION: u8 = 0;

/// Most writes one transaction carries; more wait for the next one.
const MAX_BATCH: usize = 1024;

/// One change to one group's log.
#[derive(Debug)]
pub(crate) enum LogChange {
    /// Entries at consecutive indexes (encoded).
    Append(Vec<(u64, Vec<u8>)>),
    /// A record of [`GROUP_RECORDS`].
    Record { which: u8, value: Vec<u8> },
    /// Drop every entry after `after` (all of them for `None`).
    TruncateAfter(Option<u64>),
    /// Drop every entry up to and including `upto`, recording the purged log id.
    Purge { upto: u64, log_id: Vec<u8> },
}

/// A change waiting for its commit, and who to tell.
#[derive(Debug)]
pub(crate) struct LogWrite {
    pub group: PartitionId,
    pub change: LogChange,
    /// Whether the change must be on disk before it is answered (a commit point need not:
    /// it rides with the next durable commit).
    pub durable: bool,
    pub done: oneshot::Sender<Result<(), String>>,
}

/// What the writer task is asked to do.
#[derive(Debug)]
enum Job {
    Write(LogWrite),
    /// Stop once what was queued before is committed; answered after the task let go of the file.
    Close(oneshot::Sender<()>),
}

/// Sends writes to the writer task; the task stops when every sender is gone or on `close`.
#[derive(Debug, Clone)]
pub(crate) struct LogWriter {
    queue: mpsc::Sender<Job>,
    /// Set when the node crashes: the task commits nothing more.
    stopped: Arc<AtomicBool>,
}

impl LogWriter {
    /// Starts the writer of `db` on the current runtime.
    pub(crate) fn start(db: Arc<Database>, disk: Disk) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        let stopped = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(db, disk, jobs, stopped.clone()));
        Self { queue, stopped }
    }

    /// Queues `change` and waits until it is durable.
    pub(crate) async fn write(
        &self,
        group: PartitionId,
        change: LogChange,
    ) -> Result<(), std::io::Error> {
        let committed = self.send(group, change, true).await?;
        committed
            .await
            .map_err(|_| stopped())?
            .map_err(std::io::Error::other)
    }

    /// Queues `change` without waiting for it, and without making the disk wait for it: it
    /// commits in order with the group's other writes and becomes durable with the next
    /// durable one.
    pub(crate) async fn queue(
        &self,
        group: PartitionId,
        change: LogChange,
    ) -> Result<(), std::io::Error> {
        self.send(group, change, false).await.map(drop)
    }

    async fn send(
        &self,
        group: PartitionId,
        change: LogChange,
        durable: bool,
    ) -> Result<oneshot::Receiver<Result<(), String>>, std::io::Error> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Job::Write(LogWrite {
                group,
                change,
                durable,
                done,
            }))
            .await
            .map_err(|_| stopped())?;
        Ok(committed)
    }

    /// Makes the task commit nothing more, from now on (a crash: what is queued is lost, as
    /// it would be in a killed process).
    pub(crate) fn stop_writing(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Commits what is queued, then stops the task (at once if it already stopped).
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

async fn run(
    db: Arc<Database>,
    disk: Disk,
    mut jobs: mpsc::Receiver<Job>,
    stopped: Arc<AtomicBool>,
) {
    let mut closing = None;
    while let Some(first) = jobs.recv().await {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write(write) => batch.push(write),
                Job::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        if stopped.load(Ordering::SeqCst) {
            for write in batch {
                let _ = write
                    .done
                    .send(Err("the node crashed before this write".to_owned()));
            }
            break;
        }
        commit_batch(&db, &disk, batch).await;
        if closing.is_some() {
            break;
        }
    }
    drop(db);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Commits `batch` and answers each write with the result.
async fn commit_batch(db: &Arc<Database>, disk: &Disk, batch: Vec<LogWrite>) {
    if batch.is_empty() {
        return;
    }
    let durable = batch.iter().any(|write| write.durable);
    let (changes, waiting): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|write| ((write.group, write.change), write.done))
        .unzip();
    let db = db.clone();
    let result = match disk.run(move || commit(&db, changes, durable)).await {
        Ok(result) => result,
        Err(panic) => Err(format!("the Raft log commit panicked: {panic}")),
    };
    if let Err(error) = &result {
        tracing::error!(%error, "a Raft log commit failed; its groups stop");
    }
    for done in waiting {
        let _ = done.send(result.clone());
    }
}

fn stopped() -> std::io::Error {
    std::io::Error::other("the Raft log writer has stopped")
}

/// Commits `changes` in order, in one transaction, durable when `durable`.
fn commit(
    db: &Database,
    changes: Vec<(PartitionId, LogChange)>,
    durable: bool,
) -> Result<(), String> {
    let failed = |error: &dyn std::fmt::Display| format!("Raft log storage failure: {error}");
    let mut txn = db.begin_write().map_err(|e| failed(&e))?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(|e| failed(&e))?;
    {
        let mut entries = txn.open_table(ENTRIES).map_err(|e| failed(&e))?;
        let mut records = txn.open_table(GROUP_RECORDS).map_err(|e| failed(&e))?;
        for (group, change) in changes {
            match change {
                LogChange::Append(appended) => {
                    for (index, bytes) in appended {
                        entries
                            .insert((group, index), bytes.as_slice())
                            .map_err(|e| failed(&e))?;
                    }
                }
                LogChange::Record { which, value } => {
                    records
                        .insert((group, which), value.as_slice())
                        .map_err(|e| failed(&e))?;
                }
                LogChange::TruncateAfter(after) => {
                    let from = after.map_or(0, |index| index + 1);
                    entries
                        .retain_in((group, from)..=(group, u64::MAX), |_, _| false)
                        .map_err(|e| failed(&e))?;
                }
                LogChange::Purge { upto, log_id } => {
                    entries
                        .retain_in((group, 0)..=(group, upto), |_, _| false)
                        .map_err(|e| failed(&e))?;
                    records
                        .insert((group, LAST_PURGED), log_id.as_slice())
                        .map_err(|e| failed(&e))?;
                }
            }
        }
    }
    txn.commit().map_err(|e| failed(&e))
}
