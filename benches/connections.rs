//! Connection-limit benchmark, one run against a release node on the default config:
//! - idle and slow connections (half a request head) opened in growing numbers, past the
//!   connection cap: how long a new client waits for `GET /health/live`, how many of the held
//!   connections the node closed to make room, and its RSS;
//! - RSS after all of them are closed, to see whether the memory comes back;
//! - how long a request head trickling in one line every second is held open;
//! - 500 requests carrying 100 KB tokens, and the RSS after them.
//!
//! `cargo bench --bench connections [-- --steps 1000,2000,4000,8000]`

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Process, free_port, memory_mib};

/// A new client's `GET /health/live`: its status line and how long the answer took.
fn new_client(address: &str) -> (String, Duration) {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(address) else {
        return ("connect failed".into(), started.elapsed());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.lines().next().unwrap_or("no answer").to_owned();
    (status, started.elapsed())
}

/// Counts the streams the server has closed (a read sees end of file or an error at once).
fn closed_by_server(streams: &[TcpStream]) -> usize {
    streams
        .iter()
        .filter(|stream| {
            stream.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            let mut reader: &TcpStream = stream;
            let closed = match reader.read(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            stream.set_nonblocking(false).unwrap();
            closed
        })
        .count()
}

fn main() {
    let mut steps = vec![1000usize, 2000, 4000, 8000];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--steps" {
            steps = args
                .next()
                .expect("--steps N,N,...")
                .split(',')
                .map(|n| n.parse().expect("--steps takes numbers"))
                .collect();
        }
    }
    // This process holds every connection too.
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let node = Process(
        Command::new(env!("CARGO_BIN_EXE_playhouse"))
            .env("PLAYHOUSE_EDGE__LISTEN", &address)
            .env("PLAYHOUSE_DATA_DIR", dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let pid = node.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !new_client(&address).0.contains("200") {
        assert!(Instant::now() < deadline, "the node did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let node_log = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    let limits = node_log
        .lines()
        .find(|l| l.contains("edge connection limits"))
        .unwrap_or("");
    println!("connections benchmark: release node, default config (single.toml)");
    println!("node: {}", limits.trim());
    let idle_rss = memory_mib(pid, "VmRSS:");
    println!("RSS idle: {idle_rss:.1} MiB");
    println!(
        "{:>8} {:>10} {:>14} {:>12} {:>10}",
        "held", "closed", "new client", "status", "RSS MiB"
    );
    let mut held: Vec<TcpStream> = Vec::new();
    for &step in &steps {
        while held.len() < step {
            let Ok(mut stream) = TcpStream::connect(&address) else {
                break;
            };
            // Half of them idle, half a slow request head.
            if held.len() % 2 == 1 {
                let _ = stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: slow\r\n");
            }
            held.push(stream);
        }
        let (status, took) = new_client(&address);
        let closed = closed_by_server(&held);
        println!(
            "{:>8} {:>10} {:>11.1} ms {:>12} {:>10.1}",
            held.len(),
            closed,
            took.as_secs_f64() * 1e3,
            status.trim_start_matches("HTTP/1.1 "),
            memory_mib(pid, "VmRSS:")
        );
    }
    let peak = memory_mib(pid, "VmHWM:");
    drop(held);
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "RSS after closing them all: {:.1} MiB (peak {peak:.1} MiB, idle {idle_rss:.1} MiB)",
        memory_mib(pid, "VmRSS:")
    );

    // A request head that never ends, one more header line every second.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let held_for = loop {
        let mut buffer = [0u8; 512];
        match slow.read(&mut buffer) {
            Ok(_) => break started.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break started.elapsed(),
        }
        if slow.write_all(b"X-Trickle: 1\r\n").is_err() || started.elapsed().as_secs() > 120 {
            break started.elapsed();
        }
    };
    println!(
        "a request head trickling one line per second was closed after {:.1} s",
        held_for.as_secs_f64()
    );

    // Oversized tokens: refused before they are decoded or remembered.
    let before = memory_mib(pid, "VmRSS:");
    let token = "a".repeat(100 * 1024);
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..500 {
        let mut stream = TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /api/v1/accounts/01234567-89ab-7def-8123-456789abcdef HTTP/1.1\r\nHost: t\r\n\
             Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let status = answer
            .split_whitespace()
            .nth(1)
            .unwrap_or("none")
            .to_owned();
        *statuses.entry(status).or_default() += 1;
    }
    std::thread::sleep(Duration::from_secs(1));
    // 401 for the token; 429 once the per-address limit of requests without a valid token
    // (default burst 200) is spent.
    println!(
        "500 requests with 100 KB tokens: statuses {statuses:?}; RSS {before:.1} MiB before, {:.1} MiB after",
        memory_mib(pid, "VmRSS:")
    );
}
