//! Tests of a partition group's storage: openraft's own conformance suite over the shared log
//! file and the state machine, then what the suite does not know: group commit across groups,
//! what survives a reopen, and apply's checks.

use openraft::StorageError;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::vote::RaftLeaderId;
use tempfile::TempDir;

use super::*;
use crate::store::{AppendRequest, Disk, EventMetadata, EventStore, NewEvent, StoreOptions};

type Entry = EntryOf<RaftTypes>;

/// A node's files for one group: the event store, the Raft log file, the group's log.
struct Files {
    dir: TempDir,
    store: EventStore,
    logs: RaftLogs,
}

impl Files {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::open(dir).await
    }

    async fn open(dir: TempDir) -> Self {
        let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
            .await
            .unwrap();
        let logs = RaftLogs::open(dir.path().join("raft.redb"), Disk::Files)
            .await
            .unwrap();
        Self { dir, store, logs }
    }

    async fn group(&self, partition: PartitionId) -> (GroupLog, PartitionMachine) {
        let log = self.logs.group(partition).await.unwrap();
        let machine = PartitionMachine::open(partition, self.store.clone(), log.clone())
            .await
            .unwrap();
        (log, machine)
    }

    /// Closes everything and opens it again, as a restarted node would. The caller drops
    /// its group handles first (they hold the files open).
    async fn reopen(self) -> Self {
        self.store.close().await.unwrap();
        self.logs.close().await;
        let dir = self.dir;
        drop((self.store, self.logs));
        Self::open(dir).await
    }
}

struct Builder;

impl StoreBuilder<RaftTypes, GroupLog, PartitionMachine, Files> for Builder {
    async fn build(&self) -> Result<(Files, GroupLog, PartitionMachine), StorageError<RaftTypes>> {
        let files = Files::new().await;
        let (log, machine) = files.group(7).await;
        Ok((files, log, machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_log_and_state_machine_pass_openraft_s_storage_suite() {
    Suite::test_all(Builder).await.unwrap();
}

fn log_id(term: u64, index: u64) -> LogIdOf<RaftTypes> {
    LogIdOf::<RaftTypes>::new(
        openraft::impls::leader_id_std::LeaderId::<u64, ReplicaId>::new(term, 1).to_committed(),
        index,
    )
}

/// A credit proposed with command id `command`, its time stamped `recorded_at_micros`.
pub(super) fn credit(
    stream: &str,
    expected: u64,
    command: &str,
    recorded_at_micros: i64,
) -> Proposal {
    Proposal::Append(ProposedAppend(AppendRequest {
        stream: stream.to_owned(),
        expected_version: expected,
        events: vec![NewEvent {
            event_type: "Credited".to_owned(),
            schema_version: 1,
            payload: command.as_bytes().to_vec(),
        }],
        rejection: None,
        command_id: Some(command.to_owned()),
        fingerprint: crate::store::fingerprint(command.as_bytes()),
        metadata: EventMetadata {
            recorded_at_micros: Some(recorded_at_micros),
            ..EventMetadata::default()
        },
        table_changes: Vec::new(),
    }))
}

fn append_entry(term: u64, index: u64, stream: &str, expected: u64, command: &str) -> Entry {
    let proposal = credit(stream, expected, command, 1_000 + index as i64);
    Entry::new_normal(log_id(term, index), proposal)
}

async fn append(log: &mut GroupLog, entries: Vec<Entry>) {
    let (done, flushed) = RaftTypes::oneshot();
    log.append(entries, IOFlushed::signal(done)).await.unwrap();
    flushed.await.unwrap().unwrap();
}

/// Applies `entries` (without responders) and returns nothing; the store shows the effect.
async fn apply(machine: &mut PartitionMachine, entries: Vec<Entry>) {
    let stream = futures::stream::iter(entries.into_iter().map(|entry| Ok((entry, None))));
    machine.apply(stream).await.unwrap();
}

#[tokio::test]
async fn groups_keep_their_own_entries_and_votes_in_the_shared_file_across_a_reopen() {
    let files = Files::new().await;
    let (mut first, _) = files.group(1).await;
    let (mut second, _) = files.group(2).await;
    // Both groups append at once: one writer, one file, group-committed.
    let first_entries = (1..=3)
        .map(|i| append_entry(1, i, "account-a", i - 1, &format!("a{i}")))
        .collect();
    let second_entries = (1..=2)
        .map(|i| append_entry(4, i, "account-b", i - 1, &format!("b{i}")))
        .collect();
    tokio::join!(
        append(&mut first, first_entries),
        append(&mut second, second_entries)
    );
    let vote = VoteOf::<RaftTypes>::new(4, 9);
    second.save_vote(&vote).await.unwrap();
    second.truncate_after(Some(log_id(4, 1))).await.unwrap();

    drop((first, second));
    let files = files.reopen().await;
    let (mut first, _) = files.group(1).await;
    let (mut second, _) = files.group(2).await;
    let first_ids: Vec<_> = first
        .try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|entry| entry.log_id())
        .collect();
    assert_eq!(first_ids, [log_id(1, 1), log_id(1, 2), log_id(1, 3)]);
    assert_eq!(first.read_vote().await.unwrap(), None);
    assert_eq!(second.read_vote().await.unwrap(), Some(vote));
    let state = second.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(4, 1)));
    assert_eq!(second.try_get_log_entries(2..).await.unwrap().len(), 0);

    first.purge(log_id(1, 2)).await.unwrap();
    drop((first, second));
    let files = files.reopen().await;
    let (mut first, _) = files.group(1).await;
    let state = first.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    assert_eq!(first.try_get_log_entries(..).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_entry_applied_again_changes_nothing_and_a_reopened_machine_resumes_after_it() {
    let files = Files::new().await;
    let (_, mut machine) = files.group(3).await;
    let first = append_entry(1, 1, "account-c", 0, "c1");
    // The same command proposed twice (a retry across a leader change): one event.
    let again = append_entry(2, 2, "account-c", 0, "c1");
    apply(&mut machine, vec![first, again]).await;
    assert_eq!(files.store.read_stream("account-c").unwrap().len(), 1);
    // Another command at a version the stream has passed is refused, the same everywhere.
    apply(&mut machine, vec![append_entry(2, 3, "account-c", 0, "c2")]).await;
    let events = files.store.read_stream("account-c").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].recorded_at_micros, 1_001,
        "the leader's stamp, not a clock here"
    );

    drop(machine);
    let files = files.reopen().await;
    let (_, mut machine) = files.group(3).await;
    let (applied, _) = machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 3)));
}

#[tokio::test]
async fn a_snapshot_carries_the_partition_to_an_empty_replica() {
    let leader = Files::new().await;
    let (mut log, mut machine) = leader.group(5).await;
    let entries: Vec<_> = (1..=4)
        .map(|i| append_entry(1, i, "account-d", i - 1, &format!("d{i}")))
        .collect();
    append(&mut log, entries.clone()).await;
    apply(&mut machine, entries).await;
    let mut builder = machine.get_snapshot_builder().await;
    let snapshot = openraft::storage::RaftSnapshotBuilder::build_snapshot(&mut builder)
        .await
        .unwrap();
    assert_eq!(snapshot.snapshot.proposals.len(), 4);

    let replica = Files::new().await;
    let (_, mut fresh) = replica.group(5).await;
    fresh
        .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .unwrap();
    assert_eq!(
        replica.store.read_stream("account-d").unwrap(),
        leader.store.read_stream("account-d").unwrap(),
        "the replica's events are the leader's, times and all"
    );
    assert_eq!(
        replica
            .store
            .processed_command("d3")
            .unwrap()
            .map(|c| c.last_version),
        Some(3)
    );
    // The installed snapshot is kept: it is what this replica would send on.
    drop(fresh);
    let replica = replica.reopen().await;
    let (_, mut fresh) = replica.group(5).await;
    let kept = fresh.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(kept.meta.last_log_id, Some(log_id(1, 4)));
}
