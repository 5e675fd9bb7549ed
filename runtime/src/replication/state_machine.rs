//! A partition's state machine on one replica: committed proposals applied to the node's
//! event store, through the same checks on every replica.
//!
//! Applying an append runs the store's expected-version check and processed-command lookup
//! again, so what a command did is what applying it answered: a command retried across a
//! leader change, or proposed twice, applies once. The applied log id (and membership) is
//! written in the same store transaction as an append's events, so a replica that crashes
//! re-applies exactly the entries whose effects it lost, never one twice. Other entries
//! (blank, membership, fence) record it in a transaction of their own.
//!
//! Appends are applied without waiting for the disk (`EventStore::append_unsynced`): the entry
//! is already durable in the Raft log, so one fsync per command is the log's. The store makes
//! them durable with its next durable commit (within about a second); a crash before that
//! loses the applied state with them, and the replica applies those entries again.
//!
//! Snapshots (see `snapshot`): what the store holds of the partition when the snapshot is
//! taken, as the proposals that would write it again; installing one applies what this
//! replica lacks of them. Before a snapshot is kept the store is made durable, so that the
//! log openraft then drops behind it is never needed again to rebuild the applied state
//! after a crash; an installed snapshot is made durable before openraft drops the log too.

use std::io;

use futures::TryStreamExt;
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use serde::{Deserialize, Serialize};

use super::log_store::GroupLog;
use super::snapshot::{PartitionShape, proposals_of, still_lacking};
use super::snapshot_room::{self, PutOff};
use super::types::{Applied, Proposal, ProposedAppend, RaftTypes, Refusal};
use crate::codec;
use crate::store::{EventStore, StoreError, StoreView, TableChange};

type LogId = LogIdOf<RaftTypes>;
type StoredMembership = StoredMembershipOf<RaftTypes>;

/// The read-model table where each partition's applied state is kept, by partition (4 bytes,
/// big-endian).
pub const APPLIED_TABLE: &str = "raft_applied";

/// What a replica has applied of its partition's log, stored with the effects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// A partition's snapshot: the proposals that write what the store held of the partition at
/// the snapshot's last entry, encoded, in order (see `snapshot`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    pub proposals: Vec<Vec<u8>>,
}

/// A partition's state machine on this replica.
#[derive(Debug)]
pub struct PartitionMachine {
    shape: PartitionShape,
    store: EventStore,
    log: GroupLog,
    state: AppliedState,
    put_off: PutOff,
}

impl PartitionMachine {
    /// The state machine of `shape`'s partition over `store`, resuming where the store says
    /// it got to.
    pub async fn open(
        shape: PartitionShape,
        store: EventStore,
        log: GroupLog,
    ) -> Result<Self, StoreError> {
        let partition = shape.partition;
        let key = partition.to_be_bytes();
        let state = match store.read_models()?.get(APPLIED_TABLE, &key)? {
            Some(bytes) => codec::decode(&bytes).map_err(|source| StoreError::Corrupt {
                stream: format!("raft applied state of partition {partition}"),
                version: 0,
                source,
            })?,
            None => AppliedState::default(),
        };
        Ok(Self {
            shape,
            store,
            log,
            state,
            put_off: PutOff::default(),
        })
    }

    /// Its snapshot builds put off for want of space (shared with the builders).
    pub(crate) fn put_off(&self) -> PutOff {
        self.put_off.clone()
    }

    fn applied_record(&self) -> Result<TableChange, io::Error> {
        Ok(TableChange::Put {
            table: APPLIED_TABLE.into(),
            key: self.shape.partition.to_be_bytes().to_vec(),
            value: codec::encode(&self.state).map_err(io::Error::other)?,
        })
    }

    /// Records the applied state in a transaction of its own (for entries with no append).
    async fn save_applied(&self) -> Result<(), io::Error> {
        let record = self.applied_record()?;
        self.store
            .write_tables(vec![record])
            .await
            .map_err(io::Error::other)
    }

    /// The command ids `proposals` (a snapshot's) record.
    fn listed_in(proposals: &[Proposal]) -> std::collections::HashSet<String> {
        proposals
            .iter()
            .filter_map(|proposal| match proposal {
                Proposal::Append(ProposedAppend(append)) => append.command_id.clone(),
                Proposal::Fence { command_id, .. } => Some(command_id.clone()),
                #[cfg(not(feature = "previous-format"))]
                Proposal::ForgetCommands { .. } => None,
            })
            .collect()
    }

    /// Forgets the processed commands of the partition that this replica holds and the
    /// snapshot does not list (`listed`): the leader forgot them in retention cuts this
    /// replica never applied (their entries are behind the snapshot). Otherwise a command
    /// sent again with one of those ids would apply on the leader and be taken for a repeat
    /// here. Written with the applied state (`changes`): a crash keeps both or neither.
    async fn forget_what_the_snapshot_forgot(
        &self,
        listed: &std::collections::HashSet<String>,
        changes: Vec<TableChange>,
    ) -> Result<(), StoreError> {
        let held = self
            .store
            .view()?
            .processed_commands(|command| self.shape.holds(&command.stream))?;
        let forgotten: Vec<String> = held
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !listed.contains(id))
            .collect();
        if !forgotten.is_empty() {
            tracing::info!(
                partition = self.shape.partition,
                forgotten = forgotten.len(),
                "processed commands the snapshot's leader had forgotten are forgotten here too"
            );
        }
        self.store.forget_commands(forgotten, changes).await
    }

    /// Applies one proposal; the applied state is already advanced to its entry.
    async fn apply_proposal(&mut self, proposal: Proposal) -> Result<Applied, io::Error> {
        answered(match proposal {
            Proposal::Append(append) => {
                let mut request = append.0;
                request.table_changes.push(self.applied_record()?);
                // Unsynced: the entry is durable in the Raft log, and the applied entry
                // recorded with it says where re-applying starts after a crash.
                self.store
                    .append_unsynced(request)
                    .await
                    .map(Applied::Appended)
            }
            Proposal::Fence { stream, command_id } => self
                .store
                .fence_command(&stream, &command_id)
                .await
                .map(Applied::Fenced),
            #[cfg(not(feature = "previous-format"))]
            Proposal::ForgetCommands { before_micros } => {
                let applied = self.applied_record()?;
                self.forget(before_micros, applied).await
            }
        })
    }

    /// Applies a retention cut: the same ids on every replica, since a command's time is its
    /// first event's, which the leader stamped (`StoreView::commands_written_before`). The
    /// applied entry is written with it: a crash that kept the cut but not the entry would
    /// apply earlier entries again, a repeat of a forgotten command among them as new.
    #[cfg(not(feature = "previous-format"))]
    async fn forget(
        &self,
        before_micros: i64,
        applied: TableChange,
    ) -> Result<Applied, StoreError> {
        let shape = self.shape.clone();
        let forgotten = self
            .store
            .forget_commands_before(
                before_micros,
                move |stream| shape.holds(stream),
                vec![applied],
            )
            .await?;
        if forgotten > 0 {
            tracing::debug!(
                partition = self.shape.partition,
                forgotten,
                "processed commands forgotten (retention)"
            );
        }
        Ok(Applied::Nothing)
    }
}

impl RaftStateMachine<RaftTypes> for PartitionMachine {
    type SnapshotData = PartitionSnapshot;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<RaftTypes>, io::Error>> + Unpin + Send,
    {
        // Appends are queued to the store one after the other and answered once all are in:
        // the store writes them in this order, in as few transactions as it can.
        let mut queued = Vec::new();
        let mut unrecorded = false;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            self.state.last_applied = Some(log_id);
            let answer = match entry.payload {
                EntryPayload::Normal(Proposal::Append(append)) => {
                    let mut request = append.0;
                    request.table_changes.push(self.applied_record()?);
                    // Unsynced: the entry is durable in the Raft log, and the applied entry
                    // recorded with it says where re-applying starts after a crash.
                    let answer = self
                        .store
                        .queue_unsynced(request)
                        .await
                        .map_err(io::Error::other)?;
                    queued.push((answer, responder));
                    // An append records the applied state with its events; anything after
                    // an unrecorded entry is then covered too.
                    unrecorded = false;
                    continue;
                }
                payload => {
                    answer_queued(&mut queued).await?;
                    match payload {
                        EntryPayload::Blank => Applied::Nothing,
                        EntryPayload::Membership(membership) => {
                            self.state.membership = StoredMembership::new(Some(log_id), membership);
                            Applied::Nothing
                        }
                        EntryPayload::Normal(proposal) => self.apply_proposal(proposal).await?,
                    }
                }
            };
            unrecorded = true;
            if let Some(responder) = responder {
                responder.send(answer);
            }
        }
        // A refused append writes nothing, its applied record included.
        if answer_queued(&mut queued).await? {
            unrecorded = true;
        }
        if unrecorded {
            self.save_applied().await?;
        }
        Ok(())
    }

    /// A snapshot openraft's policy (or a trigger) asks for is put off while it would not fit
    /// on disk (see `snapshot_room`); one openraft must have (`force`: at start-up) is built.
    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        if !force && !self.put_off.may_build(&self.store) {
            return None;
        }
        Some(self.get_snapshot_builder().await)
    }

    /// Opens the store's view here, between two applies: the builder copies exactly what the
    /// applied entries wrote, however long it takes while applying goes on.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            view: Some(self.store.view()),
            store: self.store.clone(),
            shape: self.shape.clone(),
            log: self.log.clone(),
            state: self.state.clone(),
            put_off: self.put_off.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<RaftTypes>,
        snapshot: PartitionSnapshot,
    ) -> Result<(), io::Error> {
        // Appends are queued to the store one after the other and awaited at the end (the
        // store writes them in order, in as few transactions as it can): what a replica lacks
        // is judged against its store before the snapshot, which queued appends only extend.
        let (mut written, mut refused) = (0usize, 0usize);
        let mut queued = Vec::new();
        let proposals = snapshot
            .proposals
            .iter()
            .map(|encoded| codec::decode::<Proposal>(encoded))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io::Error::other)?;
        let listed = Self::listed_in(&proposals);
        for proposal in proposals {
            let Some(lacking) = still_lacking(&self.store, proposal).map_err(io::Error::other)?
            else {
                continue;
            };
            written += 1;
            match lacking {
                Proposal::Append(ProposedAppend(request)) => queued.push(
                    self.store
                        .queue_unsynced(request)
                        .await
                        .map_err(io::Error::other)?,
                ),
                fence => {
                    if let Applied::Refused(_) = self.apply_proposal(fence).await? {
                        refused += 1;
                    }
                }
            }
        }
        for answer in queued {
            let outcome = answer
                .await
                .map_err(|_| io::Error::other(StoreError::WriterStopped))?;
            if let Applied::Refused(_) = answered(outcome.map(Applied::Appended))? {
                refused += 1;
            }
        }
        if refused > 0 {
            tracing::warn!(
                partition = self.shape.partition,
                refused,
                "appends of a snapshot were refused here: this replica held something the snapshot does not"
            );
        }
        self.state = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let applied = self.applied_record()?;
        self.forget_what_the_snapshot_forgot(&listed, vec![applied])
            .await
            .map_err(io::Error::other)?;
        // Current now: a build put off for space has nothing left to catch up.
        self.put_off.clear();
        // Durable before openraft drops the log this snapshot replaces.
        self.store.sync().await.map_err(io::Error::other)?;
        tracing::info!(
            partition = self.shape.partition,
            proposals = snapshot.proposals.len(),
            written,
            last = ?meta.last_log_id,
            "installed a snapshot of the partition"
        );
        let snapshot = SnapshotOf::<RaftTypes, PartitionSnapshot> {
            meta: meta.clone(),
            snapshot,
        };
        // Kept: openraft drops the log the snapshot covers, and what this replica sends a
        // replica behind it later starts from this snapshot.
        self.log.save_snapshot(&snapshot).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<RaftTypes, PartitionSnapshot>>, io::Error> {
        self.log.load_snapshot().await
    }
}

/// What applying answered: the store's outcome, or its refusal (the same on every replica).
/// Any other store error means the store failed: this replica cannot go on applying, so Raft
/// stops it; its log is intact, and it resumes from its last recorded entry on restart.
fn answered(outcome: Result<Applied, StoreError>) -> Result<Applied, io::Error> {
    outcome.or_else(|error| match Refusal::of(&error) {
        Some(refusal) => Ok(Applied::Refused(refusal)),
        None => Err(io::Error::other(error)),
    })
}

/// An append handed to the store, and who waits for what applying it answered.
type QueuedAppend = (
    tokio::sync::oneshot::Receiver<Result<crate::store::AppendOutcome, StoreError>>,
    Option<openraft::storage::ApplyResponder<RaftTypes>>,
);

/// Waits for the queued appends' answers, in order, and passes each to its responder. Says
/// whether the last one wrote nothing (refused, or a repeated command id), its applied record
/// included.
async fn answer_queued(queued: &mut Vec<QueuedAppend>) -> Result<bool, io::Error> {
    let mut last_refused = false;
    for (answer, responder) in queued.drain(..) {
        let outcome = answer
            .await
            .map_err(|_| io::Error::other(StoreError::WriterStopped))?;
        // A repeated command id writes nothing either.
        last_refused = outcome
            .as_ref()
            .map_or(true, |outcome| outcome.deduplicated);
        let applied = answered(outcome.map(Applied::Appended))?;
        if let Some(responder) = responder {
            responder.send(applied);
        }
    }
    Ok(last_refused)
}

/// Builds a snapshot of what was applied when it was made, from the store's view opened then.
pub struct SnapshotBuilder {
    view: Option<Result<StoreView, StoreError>>,
    store: EventStore,
    shape: PartitionShape,
    log: GroupLog,
    state: AppliedState,
    put_off: PutOff,
}

impl std::fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder")
            .field("partition", &self.shape.partition)
            .field("last_applied", &self.state.last_applied)
            .finish()
    }
}

impl RaftSnapshotBuilder<RaftTypes> for SnapshotBuilder {
    type SnapshotData = PartitionSnapshot;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<RaftTypes, PartitionSnapshot>, io::Error> {
        let base = self.log.load_snapshot().await?;
        let covered = |base: &SnapshotOf<RaftTypes, PartitionSnapshot>| {
            base.meta.last_log_id.as_ref().map(|id| id.index())
                >= self.state.last_applied.as_ref().map(|id| id.index())
        };
        if let Some(base) = base.as_ref().filter(|base| covered(base)) {
            // A snapshot installed since this builder was made already covers it.
            return Ok(base.clone());
        }
        let view = self
            .view
            .take()
            .ok_or_else(|| io::Error::other("a snapshot builder is used once"))?
            .map_err(io::Error::other)?;
        // What the view holds is durable before openraft drops the log behind it.
        self.store.sync().await.map_err(io::Error::other)?;
        let shape = self.shape.clone();
        // On the store's blocking pool (inline on a simulated disk, so that a seed decides
        // when it ends).
        let proposals = self
            .store
            .blocking(
                "building a snapshot",
                move || -> Result<Vec<Vec<u8>>, io::Error> {
                    proposals_of(&view, &shape)
                        .map_err(io::Error::other)?
                        .iter()
                        .map(|proposal| codec::encode(proposal).map_err(io::Error::other))
                        .collect()
                },
            )
            .await
            .map_err(io::Error::other)??;
        let snapshot = SnapshotOf::<RaftTypes, PartitionSnapshot> {
            meta: SnapshotMetaOf::<RaftTypes> {
                last_log_id: self.state.last_applied,
                last_membership: self.state.membership.clone(),
            },
            snapshot: PartitionSnapshot { proposals },
        };
        let bytes = snapshot_room::bytes_of(&snapshot.snapshot);
        // Held until the snapshot is down (the first is saved without: see `snapshot_room`).
        let mut _claimed = None;
        if let Some(earlier) = base {
            match self
                .put_off
                .keep_built(&self.store, self.shape.partition, bytes)
            {
                Some(claimed) => _claimed = Some(claimed),
                // openraft keeps the log behind the earlier snapshot, which stays current.
                None => return Ok(earlier),
            }
        }
        tracing::debug!(
            partition = self.shape.partition,
            proposals = snapshot.snapshot.proposals.len(),
            last = ?snapshot.meta.last_log_id,
            "built a snapshot of the partition"
        );
        self.log.save_snapshot(&snapshot).await?;
        Ok(snapshot)
    }
}
