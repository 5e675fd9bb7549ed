//! Helpers the benchmarks share: free ports, child processes that die with the benchmark,
//! waiting for a node, a bench node on the default services with its tokens and accounts, and
//! wrk runs with their figures.

#![allow(dead_code)] // each benchmark uses its own part

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the benchmark ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::process::Command::new("curl")
            .args(["-fs", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url} did not answer within 30 s");
}

/// The bare axum server: the same path shape and JSON as the account route, from a map.
pub struct WrkFigures {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
}

pub fn parse_latency(text: &str) -> f64 {
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}

pub fn wrk(url: &str, script: &Path, seconds: u64, connections: u32) -> WrkFigures {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk is missing: run scripts/setup.sh (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let find = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or("nan")
            .to_owned()
    };
    let non_2xx = text
        .lines()
        .find(|line| line.contains("Non-2xx or 3xx responses"))
        .and_then(|line| line.rsplit(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    WrkFigures {
        requests_per_second: find("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50_ms: parse_latency(&find("50%")),
        p99_ms: parse_latency(&find("99%")),
        non_2xx,
    }
}

/// A wrk script sending `method` to a random one of `paths`.
pub fn script(
    dir: &Path,
    name: &str,
    method: &str,
    paths: &[String],
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::path::PathBuf {
    let list = paths
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(",");
    let headers = headers
        .iter()
        .map(|(k, v)| format!("[{k:?}]={v:?}"))
        .collect::<Vec<_>>()
        .join(",");
    let body = body.map_or("nil".to_owned(), |b| format!("{b:?}"));
    let text = format!(
        "local paths = {{{list}}}\nlocal headers = {{{headers}}}\nlocal body = {body}\n\
         request = function()\n  return wrk.format({method:?}, paths[math.random(#paths)], headers, body)\nend\n"
    );
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A memory figure of `pid` from /proc, in MiB: `VmRSS:` now, `VmHWM:` the peak.
pub fn memory_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// A release node with every service and its rate limit out of the way, on a free port, with
/// its config and data in `dir`; killed when dropped.
pub struct BenchNode {
    pub process: Process,
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    pub config: std::path::PathBuf,
}

impl BenchNode {
    /// Starts it and waits until it answers.
    pub fn start(dir: &Path) -> BenchNode {
        let port = free_port();
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "environment = \"development\"\nnode_name = \"bench\"\ndata_dir = \"{}\"\n\
                 services = [\"accounts\", \"catalog\", \"customers\", \"inventory\", \"orders\", \"payments\", \"notifications\"]\n\
                 [edge]\nlisten = \"127.0.0.1:{port}\"\n\
                 [auth]\nissuer = \"playhouse\"\naudience = \"playhouse-api\"\nkey_env = \"PLAYHOUSE_BENCH_UNSET\"\ndev_key = \"bench-key-0123456789abcdef\"\n\
                 [rate_limit]\nrequests_per_second = 10000000\nburst = 10000000\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let process = Process(
            Command::new(env!("CARGO_BIN_EXE_playhouse"))
                .args(["node", "--config"])
                .arg(&config)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        wait_for(&format!("{base}/health/live"));
        BenchNode {
            process,
            base,
            config,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// A token for subject `bench` with `role`, signed with the node's key.
    pub fn token(&self, role: &str) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_playhouse"))
            .args(["token", "--sub", "bench", "--role", role, "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
}

/// Opens `count` accounts of `balance` as `token`'s subject; their ids.
pub async fn open_accounts(base: &str, token: &str, count: usize, balance: i64) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let body: serde_json::Value = client
            .post(format!("{base}/api/v1/accounts"))
            .bearer_auth(token)
            .json(&serde_json::json!({"owner": "bench", "initial_balance": balance}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    ids
}
