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
        // One partition in all: every stream a test writes is partition 0's (the other
        // partition ids keep groups' logs apart; their snapshots hold nothing).
        let shape = super::PartitionShape {
            partition,
            layout: super::PartitionLayout {
                partitions: 1,
                tables: Vec::new().into(),
            },
        };
        let machine = PartitionMachine::open(shape, self.store.clone(), log.clone())
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
    let (mut log, mut machine) = leader.group(0).await;
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
    let (_, mut fresh) = replica.group(0).await;
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
    let (_, mut fresh) = replica.group(0).await;
    let kept = fresh.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(kept.meta.last_log_id, Some(log_id(1, 4)));
}

/// An entry of `proposal` at `index`.
fn entry(index: u64, proposal: Proposal) -> Entry {
    Entry::new_normal(log_id(1, index), proposal)
}

/// Events written without a command id (a saga's transition), with a row of a table that
/// proposals write.
fn transition(stream: &str, expected: u64, names: &[&str], at: i64, row: &str) -> Proposal {
    Proposal::Append(ProposedAppend(AppendRequest {
        stream: stream.to_owned(),
        expected_version: expected,
        events: names
            .iter()
            .map(|name| NewEvent {
                event_type: (*name).to_owned(),
                schema_version: 1,
                payload: name.as_bytes().to_vec(),
            })
            .collect(),
        rejection: None,
        command_id: None,
        fingerprint: 0,
        metadata: EventMetadata {
            correlation_id: Some("saga".into()),
            recorded_at_micros: Some(at),
            ..EventMetadata::default()
        },
        table_changes: vec![crate::store::TableChange::Put {
            table: "saga_rows".into(),
            key: format!("kind/{stream}/").into_bytes(),
            value: row.as_bytes().to_vec(),
        }],
    }))
}

/// A refusal recorded under `command` when `stream` stood at `expected`.
fn refusal(stream: &str, expected: u64, command: &str) -> Proposal {
    Proposal::Append(ProposedAppend(AppendRequest {
        stream: stream.to_owned(),
        expected_version: expected,
        events: Vec::new(),
        rejection: Some(b"no".to_vec()),
        command_id: Some(command.to_owned()),
        fingerprint: 9,
        metadata: EventMetadata::default(),
        table_changes: Vec::new(),
    }))
}

fn stream_of_row(key: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(key).ok()?;
    Some(text.strip_prefix("kind/")?.strip_suffix('/')?.to_owned())
}

#[tokio::test]
async fn a_snapshot_brings_a_replica_behind_level_with_its_leader_without_writing_anything_twice() {
    let tables: std::sync::Arc<[super::ReplicatedTable]> = vec![super::ReplicatedTable {
        table: "saga_rows",
        stream_of: stream_of_row,
        with_row: |_, _| Vec::new(),
    }]
    .into();
    let open = |files: &Files| {
        let tables = tables.clone();
        let (store, logs) = (files.store.clone(), files.logs.clone());
        async move {
            let log = logs.group(0).await.unwrap();
            let shape = super::PartitionShape {
                partition: 0,
                layout: super::PartitionLayout {
                    partitions: 1,
                    tables,
                },
            };
            PartitionMachine::open(shape, store, log).await.unwrap()
        }
    };
    let proposals = vec![
        credit("account-e", 0, "e1", 1_001),
        // A saga's transitions, two commits of two events and one.
        transition("saga-s", 0, &["Started", "Stepped"], 2_000, "running"),
        credit("account-e", 1, "e2", 1_002),
        transition("saga-s", 2, &["Done"], 3_000, "completed"),
        refusal("account-e", 2, "e3"),
        credit("account-e", 2, "e4", 1_004),
        Proposal::Fence {
            stream: "account-e".into(),
            command_id: "e5".into(),
        },
    ];
    let entries: Vec<Entry> = proposals
        .into_iter()
        .enumerate()
        .map(|(i, proposal)| entry(i as u64 + 1, proposal))
        .collect();
    let leader = Files::new().await;
    let mut machine = open(&leader).await;
    apply(&mut machine, entries.clone()).await;
    let mut builder = machine.get_snapshot_builder().await;
    // Applied after the builder was made: not in the snapshot, which holds what was applied
    // when it was asked for.
    apply(
        &mut machine,
        vec![entry(8, credit("account-e", 3, "e6", 1_006))],
    )
    .await;
    let snapshot = openraft::storage::RaftSnapshotBuilder::build_snapshot(&mut builder)
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 7)));

    // A replica that applied the first three entries only.
    let replica = Files::new().await;
    let mut behind = open(&replica).await;
    apply(&mut behind, entries[..3].to_vec()).await;
    behind
        .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .unwrap();
    assert_eq!(behind.applied_state().await.unwrap().0, Some(log_id(1, 7)));
    // Level with the leader as it stood at entry 7: the leader without entry 8.
    let level = Files::new().await;
    let mut reference = open(&level).await;
    apply(&mut reference, entries.clone()).await;
    let (mine, theirs) = (
        replica.store.digest().unwrap(),
        level.store.digest().unwrap(),
    );
    assert_eq!(
        mine.differences(&theirs, 10),
        Vec::<String>::new(),
        "{mine:?}"
    );
    assert_eq!(mine.streams["account-e"].rows, 3);
    assert_eq!(mine.streams["saga-s"].rows, 3);
    let refused = replica.store.processed_command("e3").unwrap().unwrap();
    assert_eq!(refused.rejection, Some(b"no".to_vec()));
    assert!(
        replica
            .store
            .processed_command("e5")
            .unwrap()
            .unwrap()
            .is_fence()
    );
    // Installed twice (sent again), it writes nothing more.
    behind
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert_eq!(replica.store.digest().unwrap(), mine);
}

#[cfg(not(feature = "previous-format"))]
#[tokio::test]
async fn a_retention_cut_forgets_the_same_ids_on_every_replica_and_a_snapshot_carries_it() {
    let open = |files: &Files| {
        let (store, logs) = (files.store.clone(), files.logs.clone());
        async move {
            let log = logs.group(0).await.unwrap();
            let shape = super::PartitionShape {
                partition: 0,
                layout: super::PartitionLayout {
                    partitions: 1,
                    tables: Vec::new().into(),
                },
            };
            PartitionMachine::open(shape, store, log).await.unwrap()
        }
    };
    let entries: Vec<Entry> = [
        credit("account-r", 0, "r1", 1_001),
        credit("account-r", 1, "r2", 1_002),
        refusal("account-r", 2, "r3"),
        credit("account-r", 2, "r4", 1_004),
        // Forgets r1 and r2 (recorded before 1,003 µs), never the refusal.
        Proposal::ForgetCommands {
            before_micros: 1_003,
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, proposal)| entry(i as u64 + 1, proposal))
    .collect();
    let leader = Files::new().await;
    let mut machine = open(&leader).await;
    apply(&mut machine, entries.clone()).await;
    assert_eq!(leader.store.processed_command("r1").unwrap(), None);
    assert_eq!(leader.store.processed_command("r2").unwrap(), None);
    assert!(leader.store.processed_command("r3").unwrap().is_some());
    assert!(leader.store.processed_command("r4").unwrap().is_some());

    // A follower applying the same log forgets the same ids.
    let follower = Files::new().await;
    let mut following = open(&follower).await;
    apply(&mut following, entries.clone()).await;
    let leader_digest = leader.store.digest().unwrap();
    assert_eq!(
        follower
            .store
            .digest()
            .unwrap()
            .differences(&leader_digest, 10),
        Vec::<String>::new()
    );

    // A replica that applied the credits but not the cut, brought level by a snapshot taken
    // after it: the ids the leader forgot are forgotten there too, so that r1 sent again
    // would apply on both rather than on the leader alone.
    let mut builder = machine.get_snapshot_builder().await;
    let snapshot = openraft::storage::RaftSnapshotBuilder::build_snapshot(&mut builder)
        .await
        .unwrap();
    let replica = Files::new().await;
    let mut behind = open(&replica).await;
    apply(&mut behind, entries[..4].to_vec()).await;
    assert!(replica.store.processed_command("r1").unwrap().is_some());
    behind
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert_eq!(replica.store.processed_command("r1").unwrap(), None);
    assert_eq!(
        replica
            .store
            .digest()
            .unwrap()
            .differences(&leader_digest, 10),
        Vec::<String>::new()
    );

    // Sent again after the cut, r1 applies as new everywhere.
    let again = vec![entry(6, credit("account-r", 3, "r1", 2_000))];
    for (files, machine) in [(&leader, &mut machine), (&replica, &mut behind)] {
        apply(machine, again.clone()).await;
        assert_eq!(files.store.stream_version("account-r").unwrap(), 4);
    }
}
