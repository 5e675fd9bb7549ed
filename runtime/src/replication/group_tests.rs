//! A partition group on three nodes over the in-memory network, on paused time: replication,
//! a leader paused and replaced, a command retried across the change applied once, a
//! follower far behind large entries sent them in calls that fit a frame, and snapshots that
//! wait for disk space.

use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver;

use super::*;
use crate::cluster::Cluster;
use crate::cluster::transport::memory::MemoryNetwork;
use crate::config::{ClusterConfig, Member};
use crate::store::{Disk, EventStore, SimulatedDisk, StoreOptions};

const NAMES: [&str; 3] = ["raft-a", "raft-b", "raft-c"];

struct TestNode {
    name: &'static str,
    _dir: tempfile::TempDir,
    disk: SimulatedDisk,
    store: EventStore,
    groups: Groups,
    cluster: Cluster,
}

/// What the nodes of a test group are started with.
#[derive(Debug, Clone, Copy)]
struct Setup {
    max_frame_bytes: u64,
    snapshot_every: u64,
    min_free_bytes: u64,
}

impl Setup {
    /// Frames of `max_frame_bytes`, openraft's usual snapshots, no disk reserve.
    fn frames(max_frame_bytes: u64) -> Self {
        Self {
            max_frame_bytes,
            snapshot_every: RaftSettings::default().snapshot_every,
            min_free_bytes: 0,
        }
    }
}

fn config(max_frame_bytes: u64) -> ClusterConfig {
    let member = |name: &str, port: u16| Member {
        name: name.into(),
        address: format!("{name}:{port}"),
        edge: None,
        services: vec!["accounts".into()],
    };
    ClusterConfig {
        listen: "127.0.0.1:1".parse().unwrap(),
        cookie: None,
        cookie_source: "none".into(),
        members: NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| member(name, 1 + i as u16))
            .collect(),
        join: false,
        max_moves: 2,
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(1000),
        partitions: 4,
        replicated: false,
        replication_factor: 3,
        raft_snapshot_every: 10_000,
        call_timeout: Duration::from_secs(1),
        max_frame_bytes,
        handshake_timeout: Duration::from_secs(5),
        max_connections: 64,
        max_handshakes: 16,
        max_clock_skew: Duration::from_secs(30),
        tls: None,
    }
}

async fn start_node(
    network: &MemoryNetwork,
    name: &'static str,
    replica: ReplicaId,
    setup: Setup,
) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    // A simulated disk works inline: on paused time, waiting for the blocking pool would let
    // the clock leap ahead and expire every lease.
    let simulated = SimulatedDisk::new();
    let disk = Disk::Simulated(simulated.clone());
    let options = StoreOptions {
        disk: disk.clone(),
        min_free_bytes: setup.min_free_bytes,
        ..StoreOptions::default()
    };
    let store = EventStore::open(dir.path().join("events.redb"), options)
        .await
        .unwrap();
    let logs = RaftLogs::open(dir.path().join("raft.redb"), disk)
        .await
        .unwrap();
    let cluster = Cluster::new(
        name,
        &config(setup.max_frame_bytes),
        store.clone(),
        dir.path(),
        network.transport(name),
    );
    let groups = Groups::new(
        name,
        super::Incarnation {
            id: replica,
            drawn_now: true,
        },
        Some(cluster.clone()),
        store.clone(),
        logs,
        &RaftSettings {
            snapshot_every: setup.snapshot_every,
            ..RaftSettings::default()
        },
        super::PartitionLayout {
            partitions: 1,
            tables: Vec::new().into(),
        },
    )
    .unwrap();
    cluster.start().await.unwrap();
    TestNode {
        name,
        _dir: dir,
        disk: simulated,
        store,
        groups,
        cluster,
    }
}

/// A credit as a leader proposes it, stamped at 42.
fn credit(stream: &str, expected: u64, command: &str) -> Proposal {
    super::tests::credit(stream, expected, command, 42)
}

const WAIT: Option<Duration> = Some(Duration::from_secs(30));

/// The replica that leads with a majority behind it (so that it takes proposals), once one
/// does, other than `not`.
async fn leading(rafts: &[PartitionRaft], not: Option<usize>) -> usize {
    for _ in 0..3000 {
        let found = (0..rafts.len()).find(|&i| {
            let metrics = rafts[i].metrics().borrow_watched().clone();
            Some(i) != not
                && metrics.state == openraft::ServerState::Leader
                && metrics.last_quorum_acked.is_some()
        });
        if let Some(found) = found {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader with a quorum within 30 s (not {not:?})");
}

fn appended(applied: Applied) -> crate::store::AppendOutcome {
    match applied {
        Applied::Appended(outcome) => outcome,
        other => panic!("expected an append's outcome, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_group_replicates_to_every_replica_and_survives_its_leader_pausing() {
    let network = MemoryNetwork::new(18);
    let (nodes, rafts) = formed_group(&network, Setup::frames(1 << 20)).await;

    let (leader, new_leader, retried) = retried_at_a_new_leader(&network, &nodes, &rafts).await;
    let outcome = appended(retried);
    assert!(outcome.deduplicated, "{outcome:?}");
    assert_eq!(outcome.first_version, 1);
    let next = rafts[new_leader]
        .client_write(credit("account-1", 1, "cmd-2"))
        .await
        .unwrap();
    assert_eq!(appended(next.data).first_version, 2);

    // The paused leader still believes it leads, but its lease ran out: it refuses at once
    // rather than proposing what could never commit (or worse, answering from old state).
    let stale = rafts[leader]
        .client_write(credit("account-1", 1, "cmd-stale"))
        .await;
    assert!(
        matches!(
            stale,
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_)
            ))
        ),
        "{stale:?}"
    );

    // The old leader comes back, learns of the new term and catches up.
    network.resume(nodes[leader].name);
    rafts[leader]
        .wait(WAIT)
        .applied_index_at_least(Some(next.log_id.index), "the old leader caught up")
        .await
        .unwrap();
    for node in &nodes {
        let versions: Vec<u64> = node
            .store
            .read_stream("account-1")
            .unwrap()
            .iter()
            .map(|event| event.version)
            .collect();
        assert_eq!(
            versions,
            [1, 2],
            "{} holds both events once, and no stale one",
            node.name
        );
    }
    for node in &nodes {
        node.groups.shutdown().await;
        node.cluster.stop();
    }
}

/// Three replicas of partition 0 on `network`, their group formed with every replica a voter.
async fn formed_group(
    network: &MemoryNetwork,
    setup: Setup,
) -> (Vec<TestNode>, Vec<PartitionRaft>) {
    let mut nodes = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        nodes.push(start_node(network, name, 100 + i as u64, setup).await);
    }
    let mut rafts = Vec::new();
    for node in &nodes {
        rafts.push(node.groups.open(0).await.unwrap());
    }
    let members: std::collections::BTreeMap<ReplicaId, Replica> = nodes
        .iter()
        .map(|node| {
            (
                node.groups.replica_id(),
                Replica {
                    member: node.name.to_owned(),
                },
            )
        })
        .collect();
    rafts[0].initialize(members).await.unwrap();
    (nodes, rafts)
}

#[tokio::test(start_paused = true)]
async fn a_follower_far_behind_large_entries_is_sent_them_in_calls_that_fit_a_frame() {
    // Frames of 64 KiB (48 KiB for a call's operation): the 60 entries of 4 KiB the follower
    // misses are 240 KiB, which openraft would send in one append.
    let network = MemoryNetwork::new(19);
    let (nodes, rafts) = formed_group(&network, Setup::frames(64 * 1024)).await;
    let leader = leading(&rafts, None).await;
    let behind = (leader + 1) % rafts.len();
    network.pause(nodes[behind].name);

    let mut last = None;
    for i in 0..60u64 {
        let mut proposal = credit("account-big", i, &format!("cmd-{i}"));
        let Proposal::Append(ProposedAppend(request)) = &mut proposal else {
            unreachable!("a credit is an append")
        };
        request.events[0].payload = vec![b'x'; 4096];
        let written = rafts[leader].client_write(proposal).await.unwrap();
        last = Some(written.log_id.index);
    }

    network.resume(nodes[behind].name);
    rafts[behind]
        .wait(WAIT)
        .applied_index_at_least(last, "the follower caught up through small calls")
        .await
        .unwrap();
    let events = nodes[behind].store.read_stream("account-big").unwrap();
    assert_eq!(events.len(), 60, "every large event reached the follower");
    assert!(events.iter().all(|event| event.payload.len() == 4096));
    for node in &nodes {
        node.groups.shutdown().await;
        node.cluster.stop();
    }
}

/// Writes `cmd-1` through the group's leader, checks every replica holds it, pauses the
/// leader (a SIGSTOP) and proposes `cmd-1` again to the new leader, as a client that never
/// heard the first answer would: the leaders, and what applying the retry answered.
async fn retried_at_a_new_leader(
    network: &MemoryNetwork,
    nodes: &[TestNode],
    rafts: &[PartitionRaft],
) -> (usize, usize, Applied) {
    let leader = leading(rafts, None).await;
    let written = rafts[leader]
        .client_write(credit("account-1", 0, "cmd-1"))
        .await
        .unwrap();
    let outcome = appended(written.data);
    assert_eq!((outcome.first_version, outcome.deduplicated), (1, false));
    for raft in rafts {
        raft.wait(WAIT)
            .applied_index_at_least(Some(written.log_id.index), "applied everywhere")
            .await
            .unwrap();
    }
    for node in nodes {
        let events = node.store.read_stream("account-1").unwrap();
        assert_eq!(events.len(), 1, "{} holds the event", node.name);
        assert_eq!(
            events[0].recorded_at_micros, 42,
            "the leader's stamp everywhere"
        );
    }

    // The leader stops answering (a SIGSTOP): the other two elect one of themselves.
    network.pause(nodes[leader].name);
    let new_leader = leading(rafts, Some(leader)).await;
    assert_ne!(new_leader, leader);

    // The client never heard whether cmd-1 applied and sends it again, to the new leader:
    // applying it answers what it did the first time, and writes nothing.
    let retried = rafts[new_leader]
        .client_write(credit("account-1", 0, "cmd-1"))
        .await
        .unwrap();
    (leader, new_leader, retried.data)
}

#[tokio::test(start_paused = true)]
async fn dedup_only_at_decide_time_is_caught_by_a_retry_across_a_change_of_leader() {
    // Planted: applying no longer looks the command id up. The retry above then fails its
    // expected version instead of answering what the first run did, which the test above
    // holds against.
    let _planted = crate::planted::plant(crate::planted::Bug::DedupOnlyAtDecide);
    let network = MemoryNetwork::new(18);
    let (nodes, rafts) = formed_group(&network, Setup::frames(1 << 20)).await;
    let (_, _, retried) = retried_at_a_new_leader(&network, &nodes, &rafts).await;
    assert!(
        !matches!(&retried, Applied::Appended(outcome) if outcome.deduplicated),
        "with the bug planted the retry is not recognised: {retried:?}"
    );
    for node in &nodes {
        node.groups.shutdown().await;
        node.cluster.stop();
    }
}

/// The snapshot `raft` holds now: the index of its last entry.
fn snapshot_index(raft: &PartitionRaft) -> Option<u64> {
    raft.metrics().borrow_watched().snapshot.map(|id| id.index)
}

/// Writes `count` credits of 4 KiB each to `account` through `leader`, from version `from`:
/// the last entry's index.
async fn credits_of_4_kib(leader: &PartitionRaft, account: &str, from: u64, count: u64) -> u64 {
    let mut last = 0;
    for version in from..from + count {
        let mut proposal = credit(account, version, &format!("{account}-{version}"));
        let Proposal::Append(ProposedAppend(request)) = &mut proposal else {
            unreachable!("a credit is an append")
        };
        request.events[0].payload = vec![b'x'; 4096];
        last = leader.client_write(proposal).await.unwrap().log_id.index;
    }
    last
}

/// How long a reading of the free space is reused (`store::room`), and then some.
const NEW_READING: Duration = Duration::from_millis(300);

#[tokio::test(start_paused = true)]
async fn a_snapshot_waits_for_disk_space_beyond_the_reserve_on_its_builder_and_its_taker() {
    const RESERVE: u64 = 1 << 20;
    let network = MemoryNetwork::new(23);
    let setup = Setup {
        snapshot_every: 20,
        min_free_bytes: RESERVE,
        ..Setup::frames(1 << 20)
    };
    let (nodes, rafts) = formed_group(&network, setup).await;
    let leader = leading(&rafts, None).await;
    let behind = (leader + 1) % rafts.len();
    let settled = Duration::from_secs(5);

    // With room, a first snapshot.
    credits_of_4_kib(&rafts[leader], "account-1", 0, 25).await;
    tokio::time::sleep(settled).await;
    let first = snapshot_index(&rafts[leader]).expect("a first snapshot with room to spare");

    // The leader's disk has 16 KiB beyond its reserve: its next snapshot (over 100 KiB) is
    // put off, and the log behind the first one is kept. A follower stops hearing meanwhile.
    network.pause(nodes[behind].name);
    nodes[leader]
        .disk
        .report_free_bytes(Some(RESERVE + 16 * 1024));
    tokio::time::sleep(NEW_READING).await;
    let written = credits_of_4_kib(&rafts[leader], "account-1", 25, 50).await;
    tokio::time::sleep(settled).await;
    assert_eq!(
        snapshot_index(&rafts[leader]),
        Some(first),
        "no snapshot kept without room for it"
    );
    assert_eq!(nodes[leader].groups.stopped(0), None, "the group goes on");

    // Space freed on the leader: openraft asks again within `snapshot_every` entries, the
    // snapshot is built, and the log behind it dropped, so the follower that was away needs
    // it. Its disk is short now.
    nodes[leader].disk.report_free_bytes(None);
    nodes[behind]
        .disk
        .report_free_bytes(Some(RESERVE + 16 * 1024));
    tokio::time::sleep(NEW_READING).await;
    let last = credits_of_4_kib(&rafts[leader], "account-1", 75, 25).await;
    assert!(last > written);
    tokio::time::sleep(settled).await;
    let built = snapshot_index(&rafts[leader]).expect("a snapshot");
    assert!(
        built > first + 40,
        "built once space was freed: {built} after {first}"
    );
    network.resume(nodes[behind].name);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let applied = rafts[behind]
        .metrics()
        .borrow_watched()
        .last_applied
        .map(|id| id.index);
    assert!(
        applied < Some(built),
        "a replica without room for the snapshot does not take it (applied {applied:?}, snapshot {built})"
    );
    assert_eq!(
        nodes[behind].groups.stopped(0),
        None,
        "the short replica's group goes on"
    );

    // Space freed there too: the leader's next send is taken, and nothing was lost.
    nodes[behind].disk.report_free_bytes(None);
    rafts[behind]
        .wait(WAIT)
        .applied_index_at_least(Some(last), "the replica took the snapshot once it had room")
        .await
        .unwrap();
    for node in &nodes {
        let events = node.store.read_stream("account-1").unwrap();
        assert_eq!(events.len(), 100, "{} holds every credit", node.name);
    }
    for node in &nodes {
        node.groups.shutdown().await;
        node.cluster.stop();
    }
}
