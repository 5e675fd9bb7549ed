//! Store tests: concurrency control, idempotency, reads, snapshots, checkpoints, corruption.

use super::*;
use crate::codec::CodecError;

pub(crate) async fn temp_store() -> (tempfile::TempDir, EventStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
        .await
        .unwrap();
    (dir, store)
}

fn event(name: &str) -> NewEvent {
    NewEvent {
        event_type: name.to_owned(),
        schema_version: 1,
        payload: name.as_bytes().to_vec(),
    }
}

pub(crate) fn append_request(stream: &str, expected: u64, names: &[&str]) -> AppendRequest {
    AppendRequest {
        stream: stream.to_owned(),
        expected_version: expected,
        events: names.iter().map(|n| event(n)).collect(),
        command_id: None,
        fingerprint: 0,
        table_changes: Vec::new(),
        rejection: None,
        metadata: EventMetadata::default(),
    }
}

#[tokio::test]
async fn appends_get_contiguous_versions_and_metadata() {
    let (_dir, store) = temp_store().await;
    let mut request = append_request("account-1", 0, &["Opened", "Credited"]);
    request.metadata = EventMetadata {
        correlation_id: Some("req-7".into()),
        causation_id: Some("cmd-1".into()),
        // A stamped time (a replicated append's leader clock) is stored as it is.
        recorded_at_micros: Some(1_700_000_000_000_007),
    };
    let outcome = store.append(request).await.unwrap();
    assert_eq!((outcome.first_version, outcome.last_version), (1, 2));
    assert!(!outcome.deduplicated);
    store
        .append(append_request("account-1", 2, &["Debited"]))
        .await
        .unwrap();

    let events = store.read_stream("account-1").unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(events[0].event_type, "Opened");
    assert_eq!(events[0].schema_version, 1);
    assert_eq!(events[0].correlation_id.as_deref(), Some("req-7"));
    assert_eq!(events[0].causation_id.as_deref(), Some("cmd-1"));
    assert_eq!(events[2].correlation_id, None);
    assert_eq!(events[0].recorded_at_micros, 1_700_000_000_000_007);
    assert!(events[2].recorded_at_micros > events[0].recorded_at_micros);
    assert_eq!(events[2].payload, b"Debited");
    assert_eq!(store.stream_version("account-1").unwrap(), 3);
    assert_eq!(store.stream_version("account-unknown").unwrap(), 0);
}

#[tokio::test]
async fn a_wrong_expected_version_is_a_conflict_and_writes_nothing() {
    let (_dir, store) = temp_store().await;
    store
        .append(append_request("s", 0, &["a", "b"]))
        .await
        .unwrap();
    let error = store
        .append(append_request("s", 1, &["c"]))
        .await
        .unwrap_err();
    match error {
        StoreError::Conflict {
            stream,
            expected,
            actual,
        } => assert_eq!((stream.as_str(), expected, actual), ("s", 1, 2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Ahead of the stream is a conflict too, not a gap.
    assert!(matches!(
        store.append(append_request("s", 5, &["c"])).await,
        Err(StoreError::Conflict { actual: 2, .. })
    ));
    assert_eq!(store.read_stream("s").unwrap().len(), 2);
    assert_eq!(store.next_position().unwrap(), 2);
}

#[tokio::test]
async fn an_empty_append_is_refused_unless_it_records_a_command() {
    let (_dir, store) = temp_store().await;
    assert!(matches!(
        store.append(append_request("s", 0, &[])).await,
        Err(StoreError::EmptyAppend { .. })
    ));
    // A refused command is recorded, with no events, and its refusal comes back on a retry.
    let mut refused = append_request("s", 0, &[]);
    refused.command_id = Some("cmd-refused".into());
    refused.rejection = Some(b"no".to_vec());
    let first = store.append(refused.clone()).await.unwrap();
    assert!(
        first.last_version < first.first_version,
        "no events were written"
    );
    let again = store.append(refused).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.rejection.as_deref(), Some(b"no".as_slice()));
    assert_eq!(store.stream_version("s").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_appending_to_one_stream_get_contiguous_versions() {
    let (_dir, store) = temp_store().await;
    let tasks = 32;
    let appends_per_task = 10;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            let mut done = 0;
            while done < appends_per_task {
                let expected = store.stream_version("hot").unwrap();
                let name = format!("t{task}-{done}");
                match store
                    .append(append_request("hot", expected, &[&name]))
                    .await
                {
                    Ok(_) => done += 1,
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for handle in handles {
        conflicts += handle.await.unwrap();
    }
    let events = store.read_stream("hot").unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    let expected: Vec<u64> = (1..=(tasks * appends_per_task) as u64).collect();
    assert_eq!(
        versions, expected,
        "versions must be 1..=N with no gap or repeat"
    );
    // Every task's own appends are all there, each exactly once.
    let mut payloads: Vec<Vec<u8>> = events.into_iter().map(|e| e.payload).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), tasks * appends_per_task);
    // With 32 racers on one stream, optimistic concurrency must actually have been exercised.
    assert!(conflicts > 0, "the race produced no conflicts");
}

#[tokio::test]
async fn a_repeated_command_id_returns_the_first_outcome_and_writes_nothing() {
    let (_dir, store) = temp_store().await;
    let mut first = append_request("s", 0, &["a", "b"]);
    first.command_id = Some("cmd-1".into());
    let outcome = store.append(first.clone()).await.unwrap();
    // The retry carries a stale expected version: it must still be recognised, not conflict.
    let again = store.append(first).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!(
        (
            again.first_version,
            again.last_version,
            again.first_position
        ),
        (
            outcome.first_version,
            outcome.last_version,
            outcome.first_position
        )
    );
    assert_eq!(store.read_stream("s").unwrap().len(), 2);
    let processed = store.processed_command("cmd-1").unwrap().unwrap();
    assert_eq!((processed.first_version, processed.last_version), (1, 2));
    assert_eq!(store.processed_command("cmd-2").unwrap(), None);

    let mut elsewhere = append_request("other", 0, &["x"]);
    elsewhere.command_id = Some("cmd-1".into());
    assert!(matches!(
        store.append(elsewhere).await,
        Err(StoreError::CommandIdReused { .. })
    ));
    // Same id, same stream, another command: refused too, not answered with the first result.
    let mut different = append_request("s", 2, &["c"]);
    different.command_id = Some("cmd-1".into());
    different.fingerprint = fingerprint(b"another command");
    assert!(matches!(
        store.append(different).await,
        Err(StoreError::CommandIdReused { .. })
    ));
    assert_eq!(store.read_stream("s").unwrap().len(), 2);
}

#[tokio::test]
async fn a_fenced_command_id_is_never_applied_and_an_applied_one_is_reported() {
    let (_dir, store) = temp_store().await;
    let mut applied = append_request("s", 0, &["a"]);
    applied.command_id = Some("applied".into());
    applied.fingerprint = fingerprint(b"command");
    store.append(applied).await.unwrap();
    let found = store.fence_command("s", "applied").await.unwrap().unwrap();
    assert_eq!((found.first_version, found.last_version), (1, 1));

    assert_eq!(store.fence_command("s", "late").await.unwrap(), None);
    assert_eq!(
        store.fence_command("s", "late").await.unwrap(),
        None,
        "fencing twice settles the same way"
    );
    let mut late = append_request("s", 1, &["b"]);
    late.command_id = Some("late".into());
    late.fingerprint = fingerprint(b"command");
    assert!(
        matches!(
            store.append(late).await,
            Err(StoreError::CommandIdReused { .. })
        ),
        "a command arriving after its fence is refused"
    );
    assert_eq!(store.read_stream("s").unwrap().len(), 1);
}

#[tokio::test]
async fn a_fence_and_its_command_in_one_batch_settle_one_way() {
    let (_dir, store) = temp_store().await;
    let mut request = append_request("s", 0, &["a"]);
    request.command_id = Some("raced".into());
    // Both are queued before the writer runs: whichever goes first decides, and they agree.
    let (appended, fenced) = tokio::join!(store.append(request), store.fence_command("s", "raced"));
    match (appended, fenced.unwrap()) {
        (Ok(outcome), Some(processed)) => {
            assert_eq!(outcome.first_position, processed.first_position);
            assert_eq!(store.read_stream("s").unwrap().len(), 1);
        }
        (Err(StoreError::CommandIdReused { .. }), None) => {
            assert!(store.read_stream("s").unwrap().is_empty());
        }
        other => panic!("the fence and the append disagree: {other:?}"),
    }
}

#[tokio::test]
async fn the_same_command_id_twice_in_one_batch_is_applied_once() {
    let (_dir, store) = temp_store().await;
    let mut request = append_request("s", 0, &["a"]);
    request.command_id = Some("dup".into());
    // Both are queued before the writer runs, so they share a batch.
    let (a, b) = tokio::join!(store.append(request.clone()), store.append(request));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.deduplicated, b.deduplicated);
    assert_eq!(store.read_stream("s").unwrap().len(), 1);
}

#[tokio::test]
async fn range_reads_follow_min_and_max_versions() {
    let (_dir, store) = temp_store().await;
    let names: Vec<String> = (1..=10).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    store.append(append_request("s", 0, &refs)).await.unwrap();
    store
        .append(append_request("t", 0, &["other"]))
        .await
        .unwrap();

    let versions =
        |events: Vec<RecordedEvent>| -> Vec<u64> { events.iter().map(|e| e.version).collect() };
    assert_eq!(
        versions(store.read_stream_range("s", 3, 5).unwrap()),
        [3, 4, 5]
    );
    assert_eq!(versions(store.read_stream_from("s", 9).unwrap()), [9, 10]);
    assert!(store.read_stream_range("s", 6, 2).unwrap().is_empty());
    assert!(store.read_stream_from("s", 11).unwrap().is_empty());
    assert!(store.read_stream("nobody").unwrap().is_empty());
}

#[tokio::test]
async fn the_global_log_is_in_commit_order_across_streams() {
    let (_dir, store) = temp_store().await;
    store.append(append_request("a", 0, &["a1"])).await.unwrap();
    store
        .append(append_request("b", 0, &["b1", "b2"]))
        .await
        .unwrap();
    store.append(append_request("a", 1, &["a2"])).await.unwrap();
    let all = store.read_all_from(0, 100).unwrap();
    let seen: Vec<(u64, &str, u64)> = all
        .iter()
        .map(|e| (e.position, e.stream.as_str(), e.version))
        .collect();
    assert_eq!(seen, [(0, "a", 1), (1, "b", 1), (2, "b", 2), (3, "a", 2)]);
    let tail = store.read_all_from(2, 1).unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].position, 2);
}

#[tokio::test]
async fn snapshots_and_checkpoints_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    {
        let store = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap();
        store
            .append(append_request("s", 0, &["a", "b"]))
            .await
            .unwrap();
        assert_eq!(store.load_snapshot("s").unwrap(), None);
        let snapshot = Snapshot {
            version: 2,
            schema_version: 3,
            state: vec![1, 2, 3],
        };
        store.save_snapshot("s", snapshot.clone()).await.unwrap();
        assert_eq!(store.load_snapshot("s").unwrap(), Some(snapshot));
        assert_eq!(store.checkpoint("projection").unwrap(), None);
        store.save_checkpoint("projection", 1).await.unwrap();
        store.save_checkpoint("projection", 2).await.unwrap();
    }
    let store = reopen(&path).await;
    assert_eq!(store.checkpoint("projection").unwrap(), Some(2));
    assert_eq!(store.load_snapshot("s").unwrap().unwrap().version, 2);
    assert_eq!(store.next_position().unwrap(), 2);
    // Positions continue after the reopen instead of restarting at 0.
    let outcome = store.append(append_request("s", 2, &["c"])).await.unwrap();
    assert_eq!(outcome.first_position, 2);
}

/// Overwrites the stored log record of `stream` at `version`, as disk damage would.
pub(crate) fn corrupt_event(store: &EventStore, stream: &str, version: u64, bytes: &[u8]) {
    let (log_db, index_db) = store.databases();
    let position = {
        let txn = index_db.begin_read().unwrap();
        let index = txn.open_table(STREAM_INDEX).unwrap();
        index.get((stream, version)).unwrap().unwrap().value()
    };
    let txn = log_db.begin_write().unwrap();
    {
        let mut log = txn.open_table(LOG).unwrap();
        log.insert(position, bytes).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_corrupt_record_is_reported_with_its_stream_and_version() {
    let (_dir, store) = temp_store().await;
    store
        .append(append_request("s", 0, &["a", "b", "c"]))
        .await
        .unwrap();
    corrupt_event(&store, "s", 2, &[codec::FORMAT_VERSION, 0xFF, 0xFF]);
    match store.read_stream("s").unwrap_err() {
        StoreError::Corrupt {
            stream,
            version,
            source: CodecError::Malformed { .. },
        } => assert_eq!((stream.as_str(), version), ("s", 2)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Reads that avoid the damaged record still work.
    assert_eq!(store.read_stream_range("s", 3, 3).unwrap().len(), 1);

    corrupt_event(&store, "s", 3, &[42, 0]);
    match store.read_stream_from("s", 3).unwrap_err() {
        StoreError::Corrupt {
            version: 3,
            source: CodecError::UnknownVersion { found: 42 },
            ..
        } => {}
        other => panic!("expected an unknown codec version, got {other:?}"),
    }
    assert!(matches!(
        store.read_all_from(0, 10),
        Err(StoreError::CorruptLog { position: 1, .. })
    ));
}

async fn reopen(path: &std::path::Path) -> EventStore {
    // The previous writer drops its file handles once its last store handle is gone.
    for _ in 0..10_000 {
        match EventStore::open(path, StoreOptions::default()).await {
            Ok(store) => return store,
            Err(StoreError::Storage(_)) => tokio::task::yield_now().await,
            Err(other) => panic!("reopen failed: {other}"),
        }
    }
    panic!("the store could not be reopened");
}

/// Runs `body` on a runtime of its own; dropping the runtime closes the store's files.
fn on_own_runtime<T>(body: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(body)
}

#[test]
fn a_lost_or_damaged_index_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let index_file = dir.path().join("events.index.redb");
    on_own_runtime(async {
        let store = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap();
        store
            .append(append_request("a", 0, &["a1", "a2"]))
            .await
            .unwrap();
        store.append(append_request("b", 0, &["b1"])).await.unwrap();
    });
    assert!(index_file.exists(), "the index lives in its own file");

    // An index from a longer log (as beside a log restored from an older backup).
    let longer = dir.path().join("longer.redb");
    on_own_runtime(async {
        let store = EventStore::open(&longer, StoreOptions::default())
            .await
            .unwrap();
        let names: Vec<String> = (0..10).map(|i| format!("x{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        store.append(append_request("a", 0, &refs)).await.unwrap();
    });
    std::fs::copy(dir.path().join("longer.index.redb"), &index_file).unwrap();
    on_own_runtime(async {
        // The log looks as if it lost events: refused, not silently re-indexed.
        let refused = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                StoreError::LogBehindIndex {
                    indexed_up_to: 10,
                    log_end: 3
                }
            ),
            "{refused}"
        );
    });
    // Keeping this log on purpose: the index goes, and is rebuilt from the log.
    std::fs::remove_file(&index_file).unwrap();
    on_own_runtime(async {
        let store = EventStore::open(&path, StoreOptions::default())
            .await
            .unwrap();
        assert_eq!(store.stream_version("a").unwrap(), 2);
        assert_eq!(store.read_stream("a").unwrap().len(), 2);
    });

    for damage in [None, Some(b"not a redb file at all".as_slice())] {
        match damage {
            None => std::fs::remove_file(&index_file).unwrap(),
            Some(bytes) => std::fs::write(&index_file, bytes).unwrap(),
        }
        on_own_runtime(async {
            let store = EventStore::open(&path, StoreOptions::default())
                .await
                .unwrap();
            let a: Vec<u64> = store
                .read_stream("a")
                .unwrap()
                .iter()
                .map(|e| e.version)
                .collect();
            assert_eq!(a, [1, 2], "after {damage:?}");
            assert_eq!(store.stream_version("b").unwrap(), 1);
            // Expected versions are checked against the rebuilt index: no second version 2.
            assert!(matches!(
                store.append(append_request("a", 1, &["dup"])).await,
                Err(StoreError::Conflict { actual: 2, .. })
            ));
        });
    }
}

#[tokio::test]
async fn close_commits_what_was_queued_then_refuses_writes() {
    let (_dir, store) = temp_store().await;
    let queued = store.append(append_request("s", 0, &["a"]));
    let (appended, closed) = tokio::join!(queued, store.close());
    appended.unwrap();
    closed.unwrap();
    assert!(matches!(
        store.append(append_request("s", 1, &["b"])).await,
        Err(StoreError::WriterStopped)
    ));
    assert_eq!(store.read_stream("s").unwrap().len(), 1, "reads still work");
    store.close().await.unwrap();
}

#[tokio::test]
async fn table_changes_commit_with_their_append_or_not_at_all() {
    let (_dir, store) = temp_store().await;
    let put = |value: &[u8]| TableChange::Put {
        table: "test_side".into(),
        key: b"k".to_vec(),
        value: value.to_vec(),
    };
    let mut first = append_request("saga-1", 0, &["Started"]);
    first.table_changes = vec![put(b"started")];
    store.append(first).await.unwrap();
    assert_eq!(
        store.read_models().unwrap().get("test_side", b"k").unwrap(),
        Some(b"started".to_vec())
    );
    // A conflicting append writes neither its events nor its table changes.
    let mut stale = append_request("saga-1", 0, &["Again"]);
    stale.table_changes = vec![put(b"again")];
    assert!(matches!(
        store.append(stale).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.read_models().unwrap().get("test_side", b"k").unwrap(),
        Some(b"started".to_vec())
    );
}

#[tokio::test]
async fn counters_add_up_across_concurrent_appends_and_skip_refused_ones() {
    let (_dir, store) = temp_store().await;
    let add = |delta: i64| TableChange::Add {
        table: "test_counts".into(),
        key: b"done".to_vec(),
        delta,
    };
    // Many appends in flight at once land in shared group commits: each adds its own one.
    let appends = (0..50u64).map(|n| {
        let store = store.clone();
        let mut request = append_request(&format!("c-{n}"), 0, &["Done"]);
        request.table_changes = vec![add(1)];
        async move { store.append(request).await.unwrap() }
    });
    futures::future::join_all(appends).await;
    let mut refused = append_request("c-0", 0, &["Again"]);
    refused.table_changes = vec![add(100)];
    assert!(matches!(
        store.append(refused).await,
        Err(StoreError::Conflict { .. })
    ));
    let mut back = append_request("c-0", 1, &["Undone"]);
    back.table_changes = vec![add(-2)];
    store.append(back).await.unwrap();
    let stored = store
        .read_models()
        .unwrap()
        .get("test_counts", b"done")
        .unwrap()
        .unwrap();
    assert_eq!(crate::store::decode_counter(&stored), Some(48));
}

#[tokio::test]
async fn the_log_end_has_passed_an_append_when_its_caller_is_answered() {
    // A client reads with `min_position` = its command's position right after the answer; the
    // log's end must already be past it.
    let (_dir, store) = temp_store().await;
    let end = store.watch_log_end();
    for n in 0..300u64 {
        let outcome = store
            .append(append_request(&format!("s-{}", n % 7), n / 7, &["E"]))
            .await
            .unwrap();
        assert!(
            *end.borrow() > outcome.first_position,
            "answered for position {} with the log's end at {}",
            outcome.first_position,
            *end.borrow()
        );
    }
}

async fn simulated_store(disk: &SimulatedDisk) -> EventStore {
    let options = StoreOptions {
        disk: Disk::Simulated(disk.clone()),
        ..StoreOptions::default()
    };
    EventStore::open("/simulated/events.redb", options)
        .await
        .unwrap()
}

#[tokio::test]
async fn on_a_simulated_disk_an_acknowledged_append_survives_a_crash() {
    let disk = SimulatedDisk::new();
    let store = simulated_store(&disk).await;
    store.append(append_request("s", 0, &["A"])).await.unwrap();
    store.append(append_request("s", 1, &["B"])).await.unwrap();
    // No close: the machine dies with the store open.
    disk.crash();
    drop(store);
    let reopened = simulated_store(&disk).await;
    assert_eq!(reopened.read_stream("s").unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_disk_that_acknowledges_syncs_late_loses_an_acknowledged_append_in_a_crash() {
    let disk = SimulatedDisk::new();
    disk.acknowledge_syncs_late(std::time::Duration::from_secs(1));
    let store = simulated_store(&disk).await;
    store.append(append_request("s", 0, &["A"])).await.unwrap();
    store.append(append_request("s", 1, &["B"])).await.unwrap();
    disk.crash();
    drop(store);
    let reopened = simulated_store(&disk).await;
    assert!(
        reopened.read_stream("s").unwrap().len() < 2,
        "the fault planted in the disk lost nothing"
    );
}

/// An unsynced append (a replicated log's entry, re-applied after a crash) is answered before
/// it is on disk, and a crash may lose it, with what came after it, never part of it; any
/// durable write makes it durable; the index is never left on disk ahead of the log.
#[tokio::test(start_paused = true)]
async fn an_unsynced_append_is_lost_in_a_crash_unless_a_durable_write_followed() {
    let disk = SimulatedDisk::new();
    let store = simulated_store(&disk).await;
    store.append(append_request("s", 0, &["A"])).await.unwrap();
    store
        .append_unsynced(append_request("s", 1, &["B"]))
        .await
        .unwrap();
    assert_eq!(store.read_stream("s").unwrap().len(), 2, "readable at once");
    disk.crash();
    drop(store);
    let reopened = simulated_store(&disk).await;
    assert_eq!(
        reopened.read_stream("s").unwrap().len(),
        1,
        "B was not synced"
    );

    reopened
        .append_unsynced(append_request("s", 1, &["B"]))
        .await
        .unwrap();
    reopened
        .append(append_request("t", 0, &["C"]))
        .await
        .unwrap();
    disk.crash();
    drop(reopened);
    let again = simulated_store(&disk).await;
    assert_eq!(
        again.read_stream("s").unwrap().len(),
        2,
        "the durable write carried B"
    );

    // Left alone, the writer makes an unsynced append durable within its interval.
    again
        .append_unsynced(append_request("s", 2, &["D"]))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    disk.crash();
    drop(again);
    let last = simulated_store(&disk).await;
    assert_eq!(last.read_stream("s").unwrap().len(), 3, "synced while idle");
}

/// A log file emptied (or restored alone from an older backup) beside its index: the store
/// refuses to open, naming both ends, rather than rebuild the index and serve what is left.
#[tokio::test]
async fn a_log_that_lost_events_beside_its_index_is_refused() {
    let (dir, store) = temp_store().await;
    store
        .append(append_request("account-1", 0, &["Opened", "Credited"]))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let log = dir.path().join("events.redb");
    std::fs::remove_file(&log).unwrap();
    let refused = EventStore::open(&log, StoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::LogBehindIndex {
                indexed_up_to: 2,
                log_end: 0
            }
        ),
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .contains("Restore the whole data directory")
    );
}

/// An append of `names` to `stream` by command `id`, its events stamped at `at_micros`.
fn command_at(
    stream: &str,
    expected: u64,
    names: &[&str],
    id: &str,
    at_micros: i64,
) -> AppendRequest {
    let mut request = append_request(stream, expected, names);
    request.command_id = Some(id.to_owned());
    request.metadata.recorded_at_micros = Some(at_micros);
    request
}

#[tokio::test]
async fn a_retention_cut_forgets_commands_written_before_it_and_keeps_refusals_and_fences() {
    let (_dir, store) = temp_store().await;
    store
        .append(command_at("a", 0, &["x"], "old", 1_000))
        .await
        .unwrap();
    store
        .append(command_at("b", 0, &["x"], "other-stream", 1_000))
        .await
        .unwrap();
    store
        .append(command_at("a", 1, &["y"], "new", 5_000))
        .await
        .unwrap();
    let mut refused = command_at("a", 2, &[], "refused", 1_000);
    refused.rejection = Some(b"no".to_vec());
    store.append(refused).await.unwrap();
    assert_eq!(store.fence_command("a", "fenced").await.unwrap(), None);

    // Only stream `a` is covered, and only what was written before 5,000 µs.
    let forgotten = store
        .forget_commands_before(5_000, |stream| stream == "a", Vec::new())
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    assert_eq!(store.processed_command("old").unwrap(), None);
    for kept in ["other-stream", "new", "refused", "fenced"] {
        assert!(
            store.processed_command(kept).unwrap().is_some(),
            "{kept} is kept"
        );
    }
    // Forgotten: the same command sent again applies as new; a kept one is answered as before.
    let again = store
        .append(command_at("a", 2, &["x"], "old", 9_000))
        .await
        .unwrap();
    assert!(!again.deduplicated);
    assert_eq!(again.first_version, 3);
    let repeat = store
        .append(command_at("a", 1, &["y"], "new", 9_000))
        .await
        .unwrap();
    assert!(repeat.deduplicated);
    assert_eq!(store.read_stream("a").unwrap().len(), 3);
    // A cut forgets nothing twice, and a cut in the past nothing at all.
    assert_eq!(
        store
            .forget_commands_before(5_000, |_| true, Vec::new())
            .await
            .unwrap(),
        1,
        "other-stream"
    );
    assert_eq!(
        store
            .forget_commands_before(0, |_| true, Vec::new())
            .await
            .unwrap(),
        0
    );
}
