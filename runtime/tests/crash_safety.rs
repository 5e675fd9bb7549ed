//! Crash safety: a writer process is SIGKILLed in the middle of a stream of appends; the reopened
//! store must hold every acknowledged append, and no batch only in part.
//!
//! The writer is this same test binary, started again with an environment variable telling it
//! to play the writer. It prints one `ACK` line per acknowledged append.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use playhouse_runtime::store::{
    AppendRequest, EventMetadata, EventStore, NewEvent, StoreError, StoreOptions,
};

const WRITER_DIR_VAR: &str = "PLAYHOUSE_CRASH_WRITER_DIR";
const TEST_NAME: &str = "sigkill_during_appends_loses_no_acknowledged_append";
const EVENTS_PER_APPEND: u64 = 3;
const WRITERS: u64 = 32;
const KILL_AFTER_ACKS: usize = 400;

/// Kills the writer if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_during_appends_loses_no_acknowledged_append() {
    if let Ok(dir) = std::env::var(WRITER_DIR_VAR) {
        return play_writer(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut writer = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(WRITER_DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(writer.0.stdout.take().unwrap());
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut killed = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some(ack) = line.strip_prefix("ACK ") else {
            continue;
        };
        let (stream, version) = ack.split_once(' ').unwrap();
        acked.push((stream.to_owned(), version.parse().unwrap()));
        if acked.len() == KILL_AFTER_ACKS && !killed {
            // SIGKILL: no destructor, no flush, no clean close of the database.
            writer.0.kill().unwrap();
            killed = true;
        }
        // Lines already written before the kill still arrive: they were acknowledged too.
    }
    assert!(killed, "the writer stopped before it could be killed");
    writer.0.wait().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EventStore::open(dir.path().join("events.redb"), StoreOptions::default())
            .await
            .expect("the store must reopen after a SIGKILL");
        for (stream, version) in &acked {
            let stored = store.stream_version(stream).unwrap();
            assert!(
                stored >= *version,
                "acknowledged append {stream}@{version} lost: stream is at {stored}"
            );
        }
        // Every stream holds whole appends only, with contiguous versions and its own payloads.
        let mut total = 0;
        for writer in 0..WRITERS {
            let stream = format!("crash-{writer}");
            let events = store.read_stream(&stream).unwrap();
            assert_eq!(
                events.len() as u64 % EVENTS_PER_APPEND,
                0,
                "partial append in {stream}"
            );
            for (index, event) in events.iter().enumerate() {
                assert_eq!(event.version, index as u64 + 1);
                let append = index as u64 / EVENTS_PER_APPEND;
                let part = index as u64 % EVENTS_PER_APPEND;
                assert_eq!(
                    event.payload,
                    format!("{stream}/{append}/{part}").into_bytes()
                );
            }
            total += events.len() as u64;
        }
        // The global log has exactly those events at positions 0..total, no gap, no extra.
        let log = store.read_all_from(0, usize::MAX).unwrap();
        assert_eq!(log.len() as u64, total);
        assert!(log.iter().enumerate().all(|(i, e)| e.position == i as u64));
        assert!(
            acked.len() >= KILL_AFTER_ACKS,
            "only {} acknowledgements seen",
            acked.len()
        );
    });
}

/// The child: appends forever from many tasks, printing each acknowledgement as it arrives.
fn play_writer(dir: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EventStore::open(format!("{dir}/events.redb"), StoreOptions::default())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("crash-{writer}");
                let mut version = 0;
                // Bounded: if the parent never kills us, stop on our own.
                while Instant::now() < deadline {
                    let append = version / EVENTS_PER_APPEND;
                    let events = (0..EVENTS_PER_APPEND)
                        .map(|part| NewEvent {
                            event_type: "Written".into(),
                            schema_version: 1,
                            payload: format!("{stream}/{append}/{part}").into_bytes(),
                        })
                        .collect();
                    let request = AppendRequest {
                        stream: stream.clone(),
                        expected_version: version,
                        events,
                        command_id: None,
                        fingerprint: 0,
                        table_changes: Vec::new(),
                        rejection: None,
                        metadata: EventMetadata::default(),
                    };
                    match store.append(request).await {
                        Ok(outcome) => {
                            version = outcome.last_version;
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "ACK {stream} {version}").unwrap();
                            out.flush().unwrap();
                        }
                        Err(StoreError::WriterStopped) => return,
                        Err(other) => panic!("append failed: {other}"),
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}
