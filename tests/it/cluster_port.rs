//! The cluster port against peers that never show the cookie, on real nodes: a silent socket,
//! part-sent frames, idle connections past the port's file budget, and a flood of garbage
//! frames. Each test prints the node's memory, open files and log size before and after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::tls::TestCa;
use crate::support::{Node, post_as, token};
use reqwest::StatusCode;
use serde_json::json;

/// What a node holds, read from /proc and its log.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    rss_mib: f64,
    open_files: usize,
    log_bytes: u64,
    log_lines: usize,
}

impl Footprint {
    fn of(node: &Node) -> Footprint {
        let pid = node.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss_kib: f64 = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap();
        let log = node.log_text();
        Footprint {
            rss_mib: rss_kib / 1024.0,
            open_files: std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count(),
            log_bytes: log.len() as u64,
            log_lines: log.lines().count(),
        }
    }

    fn print(attack: &str, before: Footprint, after: Footprint) {
        println!(
            "{attack}: RSS {:.1} -> {:.1} MiB, open files {} -> {}, log {} -> {} bytes ({} lines added)",
            before.rss_mib,
            after.rss_mib,
            before.open_files,
            after.open_files,
            before.log_bytes,
            after.log_bytes,
            after.log_lines - before.log_lines,
        );
    }
}

fn cluster_port(cluster: &TestCluster, n: usize) -> String {
    format!("127.0.0.1:{}", cluster.ports[n])
}

/// Whether the node closed `stream` within `wait` (reading and discarding what it sent).
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// The environment variable setting a cluster key for every node.
fn cluster_setting(key: &str, value: &str) -> (String, String) {
    (
        format!("PLAYHOUSE_CLUSTER__{}", key.to_uppercase()),
        value.to_owned(),
    )
}

#[tokio::test]
async fn a_silent_socket_on_a_tls_nodes_cluster_port_does_not_delay_a_restarted_members_rejoin() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("playhouse test CA");
    let mut options = ClusterOptions {
        node_env: (1..=3)
            .map(|n| ca.node_files(certs.path(), &format!("node-{n}")))
            .collect(),
        ..ClusterOptions::default()
    };
    // A deadline far past the test: only a handshake that does not wait on others can pass.
    options
        .env
        .push(cluster_setting("handshake_timeout_ms", "60000"));
    let mut cluster = TestCluster::start(&options).await;

    // Without the silent socket first, for comparison.
    cluster.nodes[0].kill9();
    cluster.nodes[0].restart();
    let restarted = Instant::now();
    cluster.wait_all_up(Duration::from_secs(20)).await;
    let without = restarted.elapsed();

    let before = Footprint::of(cluster.node(2));
    let mut silent = TcpStream::connect(cluster_port(&cluster, 2)).unwrap();
    cluster.nodes[0].kill9();
    cluster.nodes[0].restart();
    let restarted = Instant::now();
    cluster.wait_all_up(Duration::from_secs(20)).await;
    let with = restarted.elapsed();
    Footprint::print("silent socket", before, Footprint::of(cluster.node(2)));
    println!("rejoin after a restart: {without:?} without the silent socket, {with:?} with it");
    assert!(
        with < Duration::from_secs(2),
        "node 1 and node 3 took {with:?} to see each other up again (without the socket: {without:?})"
    );
    assert!(
        !closed_within(&mut silent, Duration::from_millis(10)),
        "the silent socket was closed: the test proves nothing"
    );
}

#[tokio::test]
async fn part_sent_frames_pin_no_memory_and_are_closed_by_the_handshake_deadline() {
    let deadline_ms = 2000;
    let options = ClusterOptions {
        env: [
            ClusterOptions::default().env,
            vec![cluster_setting(
                "handshake_timeout_ms",
                &deadline_ms.to_string(),
            )],
        ]
        .concat(),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(&options).await;
    let target = cluster_port(&cluster, 2);
    let before = Footprint::of(cluster.node(2));
    // 250 connections, each sending the length of a 4 MiB frame (the default frame limit)
    // and all but its last byte, then nothing.
    let attackers: Vec<_> = (0..250)
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&target).unwrap();
                let started = Instant::now();
                let length: u64 = 4 * 1024 * 1024;
                let _ = stream.write_all(&length.to_be_bytes());
                let _ = stream.write_all(&vec![0x0a; length as usize - 1]);
                let closed = closed_within(&mut stream, Duration::from_millis(deadline_ms + 3000));
                (closed, started.elapsed(), stream)
            })
        })
        .collect();
    let mut held = Vec::new();
    for attacker in attackers {
        let (closed, after, stream) = attacker.join().unwrap();
        assert!(closed, "a part-sent frame was still open after {after:?}");
        held.push(stream);
    }
    // Hellos that start right and stop short are closed at the deadline: fewer of them than
    // the handshake cap (32), so that none is evicted for another.
    let started = Instant::now();
    let mut hellos: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut stream = TcpStream::connect(&target).unwrap();
            stream.write_all(b"PLAYHOUSE-LINK/2").unwrap();
            stream.write_all(&[7; 40]).unwrap();
            stream
        })
        .collect();
    for stream in &mut hellos {
        assert!(closed_within(
            stream,
            Duration::from_millis(deadline_ms + 3000)
        ));
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(deadline_ms - 100),
        "part-sent hellos were closed after {waited:?}, before the {deadline_ms} ms deadline"
    );
    let after = Footprint::of(cluster.node(2));
    Footprint::print(
        "250 part-sent 4 MiB frames, 24 part-sent hellos",
        before,
        after,
    );
    assert!(
        after.rss_mib - before.rss_mib < 50.0,
        "RSS grew from {:.1} to {:.1} MiB",
        before.rss_mib,
        after.rss_mib
    );
    cluster.wait_all_up(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn idle_connections_filling_the_cluster_ports_budget_leave_the_edge_answering() {
    let options = ClusterOptions {
        file_limit: Some(1024),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(&options).await;
    let node = cluster.node(2);
    let writer = token("alice", &["writer"]);
    let before = Footprint::of(node);
    // Far more idle connections than the cluster port's budget (128) or the node's whole file
    // limit, each left open by this side.
    let target = cluster_port(&cluster, 2);
    let mut idle = Vec::new();
    for _ in 0..3000 {
        match TcpStream::connect(&target) {
            Ok(stream) => idle.push(stream),
            // The kernel's accept queue is full: the node is not taking more.
            Err(_) => break,
        }
    }
    let during = Footprint::of(node);
    // The port's budget: cluster.max_connections (128) by default.
    assert!(
        during.open_files <= before.open_files + 128,
        "the node went from {} to {} open files",
        before.open_files,
        during.open_files
    );
    let live = support::client()
        .get(node.url("/health/live"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/health/live did not answer");
    assert_eq!(live.status(), StatusCode::OK);
    let opened = post_as(
        node,
        "/api/v1/accounts",
        &writer,
        json!({"owner": "alice", "initial_balance": 100}),
    )
    .await;
    assert_eq!(opened.status(), StatusCode::CREATED);
    cluster.wait_all_up(Duration::from_secs(5)).await;
    let after = Footprint::of(node);
    Footprint::print("3000 idle connections", before, after);
    println!(
        "  while held: {} open files, RSS {:.1} MiB; this side holds {} connections",
        during.open_files,
        during.rss_mib,
        idle.len()
    );
    assert!(
        after.log_bytes - before.log_bytes < 10 * 1024 * 1024,
        "the log grew by {} bytes",
        after.log_bytes - before.log_bytes
    );
}

#[tokio::test]
async fn a_garbage_frame_before_the_cookie_closes_its_connection_and_50_000_log_little() {
    let cluster = TestCluster::start(&ClusterOptions::default()).await;
    let target = cluster_port(&cluster, 2);
    // An empty inter-node message, as ractor_cluster frames it: an 8-byte length, then 2 bytes.
    let frame: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 2, 0x12, 0];
    let mut first = TcpStream::connect(&target).unwrap();
    first.write_all(&frame).unwrap();
    assert!(
        closed_within(&mut first, Duration::from_secs(1)),
        "a garbage frame left its connection open"
    );

    let before = Footprint::of(cluster.node(2));
    let senders: Vec<_> = (0..16)
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || {
                let mut left_open = 0;
                for _ in 0..50_000 / 16 {
                    let mut stream = TcpStream::connect(&target).unwrap();
                    let _ = stream.write_all(&frame);
                    if !closed_within(&mut stream, Duration::from_secs(2)) {
                        left_open += 1;
                    }
                }
                left_open
            })
        })
        .collect();
    let left_open: usize = senders.into_iter().map(|s| s.join().unwrap()).sum();
    let after = Footprint::of(cluster.node(2));
    Footprint::print("50,000 garbage frames", before, after);
    assert_eq!(left_open, 0, "connections left open after a garbage frame");
    let lines = after.log_lines - before.log_lines;
    assert!(
        lines < 100,
        "{lines} log lines for 50,000 garbage frames:\n{}",
        &cluster.node(2).log_text()[before.log_bytes as usize..]
    );
    cluster.wait_all_up(Duration::from_secs(5)).await;
}
