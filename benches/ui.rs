//! What the operations page costs the node it polls, in one run: the node's CPU (user + system,
//! from /proc) in alternating windows with the page closed (the browser on `about:blank`) and
//! open (headless Chromium on `/ui`, polling every 2 s as it does), first idle, then under the
//! edge benchmark's GET load held at a fixed rate by wrk (so the node is not saturated and the
//! page's cost shows as CPU, not as lost throughput). The browser runs in both kinds of window.
//!
//! `cargo bench --bench ui [-- --window-seconds N --rate REQ_PER_S --rounds N]`
//! Needs wrk, chromium and chromium-driver (scripts/setup.sh).

mod support;
#[allow(dead_code)] // the benchmark drives the page; the tests use the rest
#[path = "../tests/it/support/webdriver.rs"]
mod webdriver;

use support::{BenchNode, Process, open_accounts, script};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Keep-alive connections wrk holds; each waits between requests to keep the rate.
const CONNECTIONS: u32 = 20;
const ACCOUNTS: usize = 200;

/// The node's CPU time so far, in seconds (utime + stime of /proc/<pid>/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let per_second = rustix::param::clock_ticks_per_second() as f64;
    ticks / per_second
}

/// Requests the node has answered, from its own counter.
fn requests_served(base: &str) -> f64 {
    let text = Command::new("curl")
        .args(["-fs", &format!("{base}/metrics")])
        .output()
        .unwrap()
        .stdout;
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|line| line.starts_with("playhouse_http_requests_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Window {
    open: bool,
    cpu_percent: f64,
    requests_per_s: f64,
}

async fn measure(pid: u32, base: &str, open: bool, seconds: u64) -> Window {
    let (cpu, served, started) = (cpu_seconds(pid), requests_served(base), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    Window {
        open,
        cpu_percent: (cpu_seconds(pid) - cpu) / elapsed * 100.0,
        requests_per_s: (requests_served(base) - served) / elapsed,
    }
}

fn summary(label: &str, windows: &[Window]) {
    let mean = |open: bool| {
        let picked: Vec<f64> = windows
            .iter()
            .filter(|w| w.open == open)
            .map(|w| w.cpu_percent)
            .collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    };
    let rate = windows.iter().map(|w| w.requests_per_s).sum::<f64>() / windows.len() as f64;
    let (closed, open) = (mean(false), mean(true));
    println!(
        "{label:<34} closed {closed:>6.2}%  open {open:>6.2}%  page costs {:>+6.2}% of a core  ({rate:.0} req/s)",
        open - closed
    );
}

#[tokio::main]
async fn main() {
    let (mut window_seconds, mut rate, mut rounds) = (15u64, 2000u32, 3usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|s| s.parse().ok());
        match arg.as_str() {
            "--window-seconds" => window_seconds = value().expect("--window-seconds N"),
            "--rate" => rate = value().map(|v: u64| v as u32).expect("--rate N"),
            "--rounds" => rounds = value().map(|v: u64| v as usize).expect("--rounds N"),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let node = BenchNode::start(dir.path());
    let (pid, base) = (node.pid(), node.base.clone());
    let (writer, admin) = (node.token("writer"), node.token("admin"));
    let client = reqwest::Client::new();
    let paths: Vec<String> = open_accounts(&base, &writer, ACCOUNTS, 100)
        .await
        .iter()
        .map(|id| format!("/api/v1/accounts/{id}"))
        .collect();
    let auth = format!("Bearer {writer}");
    let get = script(
        dir.path(),
        "get",
        "GET",
        &paths,
        &[("Authorization", auth.as_str())],
        None,
    );
    // wrk's `delay` hook: each connection waits this long after an answer, which holds the
    // rate near CONNECTIONS / delay (answers take well under a millisecond here).
    let delay_ms = f64::from(CONNECTIONS) * 1000.0 / f64::from(rate);
    let mut text = std::fs::read_to_string(&get).unwrap();
    text.push_str(&format!(
        "delay = function()\n  return {delay_ms:.1}\nend\n"
    ));
    std::fs::write(&get, text).unwrap();

    let browser = webdriver::Browser::start(1440, 1000).await;
    browser.goto(&format!("{base}/ui")).await;
    browser.type_into("#token", &admin).await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_for(
            "the page connected",
            "return document.querySelectorAll('#members tr[data-member]').length === 1;",
            Duration::from_secs(10),
        )
        .await;
    browser.goto("about:blank").await;

    println!(
        "operations page cost: node CPU in alternating {window_seconds} s windows, page closed \
         (about:blank) vs open (/ui); {rounds} rounds each; node and browser on this machine"
    );
    let mut idle = Vec::new();
    let mut loaded = Vec::new();
    for phase in ["idle", "load"] {
        let _load = (phase == "load").then(|| {
            let total = window_seconds * 2 * rounds as u64 + 10;
            Process(
                Command::new("wrk")
                    .args([
                        "-t1",
                        &format!("-c{CONNECTIONS}"),
                        &format!("-d{total}s"),
                        "-s",
                    ])
                    .arg(&get)
                    .arg(&base)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("wrk is missing: run scripts/setup.sh"),
            )
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        for _ in 0..rounds {
            for open in [false, true] {
                if open {
                    browser.goto(&format!("{base}/ui")).await;
                } else {
                    browser.goto("about:blank").await;
                }
                // Let the page load (or unload) before the window starts.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let window = measure(pid, &base, open, window_seconds).await;
                println!(
                    "  {phase} page {:<6} node CPU {:>6.2}% of a core, {:>7.0} req/s",
                    if open { "open" } else { "closed" },
                    window.cpu_percent,
                    window.requests_per_s
                );
                if phase == "idle" {
                    idle.push(window);
                } else {
                    loaded.push(window);
                }
            }
        }
    }
    summary("idle", &idle);
    summary(&format!("GET load at {rate} req/s"), &loaded);

    // The windows above cannot resolve less than one clock tick (10 ms) per window, so the
    // cost of one answer is also measured directly: many in a row, as the page asks them
    // (only the points it lacks) and as it asks on opening (everything kept).
    browser.goto("about:blank").await;
    for (label, since) in [("a poll", "recent"), ("an opening", "0")] {
        const ANSWERS: u32 = 2000;
        let (cpu, started) = (cpu_seconds(pid), Instant::now());
        let mut bytes = 0;
        for _ in 0..ANSWERS {
            let since = if since == "0" {
                0
            } else {
                playhouse_runtime::time::unix_millis() - 2000
            };
            let body = client
                .get(format!("{base}/admin/overview?since={since}"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            bytes += body.len();
        }
        let per_answer_us = (cpu_seconds(pid) - cpu) / f64::from(ANSWERS) * 1e6;
        println!(
            "{:<34} {per_answer_us:>6.0} us of node CPU per answer ({} bytes; {ANSWERS} in {:.1} s): \
             one page polling every 2 s costs {:.3}% of a core",
            format!("/admin/overview, {label}"),
            bytes / ANSWERS as usize,
            started.elapsed().as_secs_f64(),
            per_answer_us / 2.0 / 1e4
        );
    }
}
