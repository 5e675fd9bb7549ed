//! Cluster benchmark, one run, release nodes from `config/local-cluster/` on loopback:
//! 1. remote calls between two nodes (the in-process node 1 calls node 2's `echo` handler
//!    through the whole path: envelope, ractor_cluster link, gateway, handler task):
//!    sequential p50/p99 and pipelined calls/s, beside a raw TCP echo on the same loopback;
//! 2. HTTP credits/s through a non-owner edge (forwarded to the owner) beside the owner's edge;
//! 3. failure detection with the shipped heartbeats (250 ms, 1.5 s timeout): from kill -9,
//!    SIGSTOP and a cut-off link (iptables) of node 3 to node 1 seeing it down and to node 1's
//!    first 503 for node 3's account, over N tries each: median and worst;
//! 4. a soak: wrk GETs through all three edges while each node's view of the others is polled;
//!    any member seen not up is a false "down".
//!
//! With `--replicated` it runs instead on a cluster with `store.journal = "raft"` (every
//! partition a Raft group on all three nodes): leaders per node, then for each fault on node 3
//! (kill -9, SIGSTOP, cut off both ways, deaf and mute one way) the time until every account
//! whose partition node 3 led takes a credit again through node 1's edge, and leaders per node
//! once node 3 is back.
//!
//! It re-runs itself inside `unshare -rn` (its own network namespace, loopback only), where
//! iptables rules can cut a node's links without touching the machine's network.
//!
//! With `--cost` it compares the two journals instead (`cost.rs`): credits/s and latency
//! through the serving edges, runs alternated, and idle CPU. With `--lost-disk` it loads a
//! replicated cluster with `--events N` events, empties node 3's data directory and times its
//! return to a caught-up voter, then compares the stores (`lost_disk.rs`). With `--join` it
//! loads one with `--events N` events and times a fourth node's join under load
//! (`join.rs`).
//!
//! `cargo bench --bench cluster [-- --seconds N --tries N --soak-seconds N --only-calls
//! --replicated --cost --lost-disk --join --events N]`

#[path = "cluster/cost.rs"]
mod cost;
#[path = "cluster/join.rs"]
mod join;
#[path = "cluster/lost_disk.rs"]
mod lost_disk;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use playhouse_runtime::cluster::{Cluster, ECHO, Route};
use playhouse_runtime::config::{Member, NodeConfig};
use playhouse_runtime::placement::Placement;
use playhouse_runtime::store::{EventStore, StoreOptions};
use support::{Process, free_port, script, wait_for, wrk};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Set when the benchmark runs inside its own network namespace.
const INSIDE: &str = "BENCH_IN_OWN_NETWORK_NAMESPACE";
/// Bytes of each echoed message, in both the remote calls and the raw TCP echo.
const MESSAGE_BYTES: usize = 64;

struct Settings {
    /// Run only part 1 (remote calls), as for profiling it.
    only_calls: bool,
    seconds: u64,
    tries: usize,
    soak_seconds: u64,
    /// Run part 5 (replicated failover) only.
    replicated: bool,
    /// Run part 6 (the cost of replication) only.
    cost: bool,
    /// Run part 7 (a lost disk) only.
    lost_disk: bool,
    /// Events part 7 loads before the disk is lost (part 8: before node 4 joins).
    events: u64,
    /// Run part 8 (a member joins) only.
    join: bool,
}

fn shipped(n: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/local-cluster/node-{n}.toml"))
}

fn members_toml(names: &[&str], ports: &[u16]) -> String {
    let members: Vec<String> = names
        .iter()
        .zip(ports)
        .map(|(name, port)| format!("{{ name = \"{name}\", address = \"127.0.0.1:{port}\" }}"))
        .collect();
    format!("[{}]", members.join(", "))
}

/// The `PLAYHOUSE_*` variables that put node `name` on its ports and data directory.
fn node_env(
    dir: &Path,
    name: &str,
    cluster_port: u16,
    edge_port: u16,
    members: &str,
) -> Vec<(String, String)> {
    vec![
        (
            "PLAYHOUSE_DATA_DIR".into(),
            dir.join(name).display().to_string(),
        ),
        (
            "PLAYHOUSE_EDGE__LISTEN".into(),
            format!("127.0.0.1:{edge_port}"),
        ),
        (
            "PLAYHOUSE_CLUSTER__LISTEN".into(),
            format!("127.0.0.1:{cluster_port}"),
        ),
        ("PLAYHOUSE_CLUSTER__MEMBERS".into(), members.to_owned()),
        (
            "PLAYHOUSE_RATE_LIMIT__REQUESTS_PER_SECOND".into(),
            "10000000".into(),
        ),
        ("PLAYHOUSE_RATE_LIMIT__BURST".into(), "10000000".into()),
        ("PLAYHOUSE_TELEMETRY__LOG_LEVEL".into(), "warn".into()),
    ]
}

/// A release node in its own process (killed when dropped).
struct BenchNode {
    n: usize,
    env: Vec<(String, String)>,
    log: PathBuf,
    edge: String,
    cluster_port: u16,
    process: Option<Process>,
}

impl BenchNode {
    fn start(
        dir: &Path,
        n: usize,
        cluster_port: u16,
        members: &str,
        extra: &[(String, String)],
    ) -> BenchNode {
        let edge_port = free_port();
        let mut env = node_env(dir, &format!("node-{n}"), cluster_port, edge_port, members);
        env.extend(extra.iter().cloned());
        let mut node = BenchNode {
            n,
            env,
            log: dir.join(format!("node-{n}.log")),
            edge: format!("http://127.0.0.1:{edge_port}"),
            cluster_port,
            process: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // Node 4 (part 8) has no shipped file: node 3's, renamed by its variables.
        let child = Command::new(env!("CARGO_BIN_EXE_playhouse"))
            .args(["node", "--config"])
            .arg(shipped(self.n.min(3)))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.process = Some(Process(child));
        wait_for(&format!("{}/health/live", self.edge));
    }

    fn pid(&self) -> i32 {
        self.process.as_ref().unwrap().0.id() as i32
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stops the node as an operator would (SIGTERM) and waits until it has exited.
    fn stop(&mut self) {
        if self.process.is_some() {
            self.signal("-TERM");
        }
        if let Some(mut process) = self.process.take() {
            let _ = process.0.wait();
        }
    }

    fn kill9(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.0.kill();
            let _ = process.0.wait();
        }
    }
}

fn token(sub: &str, roles: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_playhouse"));
    command
        .args(["token", "--config"])
        .arg(shipped(1))
        .args(["--sub", sub]);
    for role in roles {
        command.args(["--role", role]);
    }
    let output = command.output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// ---- 1. remote calls vs raw TCP ---------------------------------------------------------

struct LinkFigures {
    p50: Duration,
    p99: Duration,
    pipelined_per_second: f64,
}

async fn remote_calls(dir: &Path, settings: &Settings) -> LinkFigures {
    let ports = [free_port(), free_port()];
    let members = members_toml(&["node-1", "node-2"], &ports);
    let _peer = BenchNode::start(dir, 2, ports[1], &members, &[]);
    let env = node_env(dir, "node-1", ports[0], free_port(), &members);
    let text = std::fs::read_to_string(shipped(1)).unwrap();
    let config = NodeConfig::parse(&shipped(1), &text, env).unwrap();
    let data = dir.join("node-1");
    std::fs::create_dir_all(&data).unwrap();
    let store = EventStore::open(data.join("events.redb"), StoreOptions::default())
        .await
        .unwrap();
    let transport = playhouse_runtime::cluster::transport::tcp("node-1", &config.cluster);
    let cluster = Cluster::new("node-1", &config.cluster, store, &data, transport);
    cluster.start().await.unwrap();
    let payload = vec![7u8; MESSAGE_BYTES];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(cluster.route_to("node-2"), Route::Remote(_))
            && cluster.call("node-2", ECHO, payload.clone()).await.is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-2 did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm up, then one call at a time.
    for _ in 0..1000 {
        cluster.call("node-2", ECHO, payload.clone()).await.unwrap();
    }
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(settings.seconds);
    while Instant::now() < until {
        let started = Instant::now();
        let answer = cluster.call("node-2", ECHO, payload.clone()).await.unwrap();
        latencies.push(started.elapsed());
        assert_eq!(answer, payload);
    }
    latencies.sort_unstable();
    // Many callers at once: calls in flight overlap on the one link.
    let started = Instant::now();
    let until = started + Duration::from_secs(settings.seconds);
    let callers: Vec<_> = (0..256)
        .map(|_| {
            let (cluster, payload) = (cluster.clone(), payload.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    cluster.call("node-2", ECHO, payload.clone()).await.unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for caller in callers {
        total += caller.await.unwrap();
    }
    LinkFigures {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        pipelined_per_second: total as f64 / started.elapsed().as_secs_f64(),
    }
}

/// An actor in this process that answers what it is sent.
struct EchoActor;

struct Echo(Vec<u8>, ractor::RpcReplyPort<Vec<u8>>);

// Local only: never sent over a link.
impl ractor::Message for Echo {}

impl ractor::Actor for EchoActor {
    type Msg = Echo;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        Echo(bytes, reply): Echo,
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        let _ = reply.send(bytes);
        Ok(())
    }
}

/// One mailbox hop and back, in one process: what each of the link's actor hops costs.
async fn local_actor_calls(settings: &Settings) -> LinkFigures {
    let (actor, _) = ractor::Actor::spawn(None, EchoActor, ()).await.unwrap();
    let payload = vec![7u8; MESSAGE_BYTES];
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(settings.seconds);
    while Instant::now() < until {
        let started = Instant::now();
        let answer = actor
            .call(|reply| Echo(payload.clone(), reply), None)
            .await
            .unwrap();
        latencies.push(started.elapsed());
        assert!(answer.is_success());
    }
    latencies.sort_unstable();
    let started = Instant::now();
    let until = started + Duration::from_secs(settings.seconds);
    let callers: Vec<_> = (0..256)
        .map(|_| {
            let (actor, payload) = (actor.clone(), payload.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    actor
                        .call(|reply| Echo(payload.clone(), reply), None)
                        .await
                        .unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for caller in callers {
        total += caller.await.unwrap();
    }
    actor.stop(None);
    LinkFigures {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        pipelined_per_second: total as f64 / started.elapsed().as_secs_f64(),
    }
}

async fn raw_tcp_echo(settings: &Settings) -> LinkFigures {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            socket.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(read) = socket.read(&mut buffer).await {
                    if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let message = [7u8; MESSAGE_BYTES];
    let mut answer = [0u8; MESSAGE_BYTES];
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(settings.seconds);
    while Instant::now() < until {
        let started = Instant::now();
        stream.write_all(&message).await.unwrap();
        stream.read_exact(&mut answer).await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    // Pipelined: one writer keeps messages flowing, one reader counts what comes back.
    let (mut reader, mut writer) = tokio::net::TcpStream::connect(address)
        .await
        .unwrap()
        .into_split();
    let started = Instant::now();
    let until = started + Duration::from_secs(settings.seconds);
    let write = tokio::spawn(async move {
        let batch = [7u8; MESSAGE_BYTES * 64];
        while Instant::now() < until {
            if writer.write_all(&batch).await.is_err() {
                break;
            }
        }
    });
    let mut received = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(100), reader.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(read)) => received += read as u64,
            Err(_) => {}
        }
    }
    let elapsed = started.elapsed();
    write.abort();
    LinkFigures {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        pipelined_per_second: (received / MESSAGE_BYTES as u64) as f64 / elapsed.as_secs_f64(),
    }
}

// ---- the three-node cluster ------------------------------------------------------------

struct Three {
    nodes: Vec<BenchNode>,
    placement: Placement,
    http: reqwest::Client,
    admin: String,
}

impl Three {
    /// Three nodes, each with `extra` variables besides its own.
    fn start(dir: &Path, extra: &[(String, String)]) -> Three {
        // Its own directory: node 1's data from the first part belongs to another cluster.
        let dir = &dir.join("three");
        std::fs::create_dir_all(dir).unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let names = ["node-1", "node-2", "node-3"];
        let members = members_toml(&names, &ports);
        let nodes = (0..3)
            .map(|i| BenchNode::start(dir, i + 1, ports[i], &members, extra))
            .collect();
        let placement = Placement::of(
            64,
            &names
                .iter()
                .zip(&ports)
                .map(|(name, port)| Member {
                    name: (*name).to_owned(),
                    address: format!("127.0.0.1:{port}"),
                    edge: None,
                    services: vec!["accounts".into()],
                })
                .collect::<Vec<_>>(),
        );
        Three {
            nodes,
            placement,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            admin: token("bench", &["admin"]),
        }
    }

    /// How node `n` (0-based) sees `peer`: its status, and its last heartbeat's age.
    async fn seen(&self, n: usize, peer: usize) -> Option<(String, u64)> {
        let view: serde_json::Value = self
            .http
            .get(format!("{}/admin/cluster", self.nodes[n].edge))
            .bearer_auth(&self.admin)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let name = format!("node-{}", peer + 1);
        let member = view["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name.as_str())?
            .clone();
        Some((
            member["status"].as_str()?.to_owned(),
            member["last_heartbeat_ms_ago"].as_u64().unwrap_or(0),
        ))
    }

    async fn all_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        'again: loop {
            assert!(Instant::now() < deadline, "the cluster did not come up");
            for n in 0..3 {
                for peer in 0..3 {
                    if n != peer && self.seen(n, peer).await.map(|s| s.0).as_deref() != Some("up") {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue 'again;
                    }
                }
            }
            return;
        }
    }

    /// Opens `count` accounts through node 1's edge; (id, owner index) of each.
    async fn open_accounts(&self, count: usize) -> Vec<(String, usize)> {
        let writer = token("bench", &["writer"]);
        let mut accounts = Vec::new();
        for _ in 0..count {
            let opened: serde_json::Value = self
                .http
                .post(format!("{}/api/v1/accounts", self.nodes[0].edge))
                .bearer_auth(&writer)
                .json(&serde_json::json!({"owner": "bench", "initial_balance": 1_000_000}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = opened["id"].as_str().unwrap().to_owned();
            let owner = self
                .placement
                .owner_of("accounts", &format!("account-{id}"))
                .unwrap();
            let owner = owner.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
            accounts.push((id, owner));
        }
        accounts
    }

    async fn status_of_account(&self, via: usize, id: &str, reader: &str) -> Option<u16> {
        self.http
            .get(format!("{}/api/v1/accounts/{id}", self.nodes[via].edge))
            .bearer_auth(reader)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }
}

// ---- 3. failure detection ----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Kill9,
    Stop,
    CutOff,
}

fn iptables(action: &str, port: u16) -> bool {
    iptables_on(action, port, &["--dport", "--sport"])
}

/// Drops (`-A`) or stops dropping (`-D`) loopback packets to (`--dport`) and/or from
/// (`--sport`) `port`.
fn iptables_on(action: &str, port: u16, directions: &[&str]) -> bool {
    directions.iter().all(|direction| {
        Command::new("iptables")
            .args([
                action,
                "INPUT",
                "-p",
                "tcp",
                direction,
                &port.to_string(),
                "-j",
                "DROP",
            ])
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// One try: the fault on node 3, then how long until node 1 saw it down and answered 503 for
/// its account; then the fault is healed and the cluster waited for.
async fn detect(
    three: &mut Three,
    fault: Fault,
    account: &str,
    reader: &str,
) -> (Duration, Duration) {
    let port = three.nodes[2].cluster_port;
    let started = Instant::now();
    match fault {
        Fault::Kill9 => three.nodes[2].kill9(),
        Fault::Stop => three.nodes[2].signal("-STOP"),
        Fault::CutOff => assert!(iptables("-A", port), "iptables -A failed"),
    }
    // Requests start every 10 ms, each on its own: one sent just before the fault waits for
    // its answer, and must not hold up the next.
    let first_503 = std::sync::Arc::new(std::sync::Mutex::new(None::<Duration>));
    let mut probes = tokio::task::JoinSet::new();
    let mut down = None;
    let mut last_probe = Instant::now() - Duration::from_secs(1);
    while down.is_none() || first_503.lock().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{fault:?} not seen in 15 s"
        );
        if down.is_none()
            && three
                .seen(0, 2)
                .await
                .is_some_and(|(status, _)| status == "down")
        {
            down = Some(started.elapsed());
        }
        if last_probe.elapsed() >= Duration::from_millis(10) {
            last_probe = Instant::now();
            let (http, url, reader, first) = (
                three.http.clone(),
                format!("{}/api/v1/accounts/{account}", three.nodes[0].edge),
                reader.to_owned(),
                first_503.clone(),
            );
            probes.spawn(async move {
                let answer = http.get(url).bearer_auth(reader).send().await;
                if answer.is_ok_and(|r| r.status() == 503) {
                    let at = started.elapsed();
                    let mut first = first.lock().unwrap();
                    *first = Some(first.map_or(at, |earlier| earlier.min(at)));
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    probes.abort_all();
    let first_503 = first_503.lock().unwrap().unwrap();
    match fault {
        Fault::Kill9 => three.nodes[2].spawn(),
        Fault::Stop => three.nodes[2].signal("-CONT"),
        Fault::CutOff => assert!(iptables("-D", port), "iptables -D failed"),
    }
    three.all_up(Duration::from_secs(30)).await;
    // Serving again before the next try.
    while three.status_of_account(0, account, reader).await != Some(200) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (down.unwrap(), first_503)
}

fn summary(times: &mut [Duration]) -> String {
    times.sort_unstable();
    format!(
        "median {:>5.0} ms, worst {:>5.0} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    )
}

// ---- main --------------------------------------------------------------------------------

fn rerun_in_own_network_namespace() -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return false;
    }
    let status = Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env(INSIDE, "1")
        .status();
    match status {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(error) => {
            eprintln!("cannot make a network namespace ({error}); the cut-off rows are skipped");
            false
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut settings = Settings {
        only_calls: false,
        seconds: 5,
        tries: 10,
        soak_seconds: 120,
        replicated: false,
        cost: false,
        lost_disk: false,
        events: 1_000_000,
        join: false,
    };
    while let Some(arg) = args.next() {
        let mut number = || {
            args.next()
                .and_then(|s| s.parse::<u64>().ok())
                .expect("a number")
        };
        match arg.as_str() {
            "--seconds" => settings.seconds = number(),
            "--tries" => settings.tries = number() as usize,
            "--soak-seconds" => settings.soak_seconds = number(),
            "--only-calls" => settings.only_calls = true,
            "--replicated" => settings.replicated = true,
            "--cost" => settings.cost = true,
            "--lost-disk" => settings.lost_disk = true,
            "--join" => settings.join = true,
            "--events" => settings.events = number(),
            _ => {}
        }
    }
    rerun_in_own_network_namespace();
    let can_cut = std::env::var_os(INSIDE).is_some();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run(settings, can_cut));
}

async fn run(settings: Settings, can_cut: bool) {
    let dir = tempfile::tempdir().unwrap();
    println!(
        "cluster benchmark: release nodes on loopback{}",
        if can_cut {
            ", in the benchmark's own network namespace"
        } else {
            ""
        }
    );

    if settings.replicated {
        replicated_failover(dir.path(), &settings, can_cut).await;
        return;
    }
    if settings.cost {
        cost::replication_cost(dir.path(), &settings).await;
        return;
    }
    if settings.lost_disk {
        lost_disk::lost_disk(dir.path(), &settings).await;
        return;
    }
    if settings.join {
        join::join(dir.path(), &settings).await;
        return;
    }
    let tcp = raw_tcp_echo(&settings).await;
    let local = local_actor_calls(&settings).await;
    let remote = remote_calls(dir.path(), &settings).await;
    println!(
        "\n1. {MESSAGE_BYTES}-byte messages, {} s per row",
        settings.seconds
    );
    println!("| link | sequential p50 us | p99 us | pipelined msgs/s |");
    println!("|---|---:|---:|---:|");
    for (name, figures) in [
        ("raw TCP echo, loopback", &tcp),
        ("ractor call to an actor in the same process", &local),
        ("remote call, node 1 -> node 2 (echo)", &remote),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            micros(figures.p50),
            micros(figures.p99),
            figures.pipelined_per_second
        );
    }

    if settings.only_calls {
        return;
    }
    let mut three = Three::start(dir.path(), &[]);
    three.all_up(Duration::from_secs(30)).await;
    let accounts = three.open_accounts(300).await;
    let writer = token("bench", &["writer"]);
    let on_two: Vec<String> = accounts
        .iter()
        .filter(|(_, owner)| *owner == 1)
        .map(|(id, _)| format!("/api/v1/accounts/{id}/credit"))
        .collect();
    let auth = format!("Bearer {writer}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let credits = script(
        dir.path(),
        "credit",
        "POST",
        &on_two,
        &headers,
        Some(r#"{"amount":1}"#),
    );
    println!(
        "\n2. credits (durable) to {} accounts owned by node 2: wrk -t2 -c64 -d{}s",
        on_two.len(),
        settings.seconds
    );
    println!("| edge | credits/s | p50 ms | p99 ms | non-2xx |");
    println!("|---|---:|---:|---:|---:|");
    for (name, via) in [("node 2 (owner)", 1), ("node 1 (forwards to node 2)", 0)] {
        let figures = wrk(&three.nodes[via].edge, &credits, settings.seconds, 64);
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            figures.requests_per_second, figures.p50_ms, figures.p99_ms, figures.non_2xx
        );
    }

    let reader = token("bench", &["reader"]);
    let on_three = accounts
        .iter()
        .find(|(_, owner)| *owner == 2)
        .unwrap()
        .0
        .clone();
    println!(
        "\n3. failure detection of node 3 by node 1 (heartbeat 250 ms, timeout 1.5 s), {} tries each",
        settings.tries
    );
    println!("| fault | seen down | first 503 |");
    println!("|---|---|---|");
    let faults: &[Fault] = if can_cut {
        &[Fault::Kill9, Fault::Stop, Fault::CutOff]
    } else {
        &[Fault::Kill9, Fault::Stop]
    };
    for fault in faults {
        let (mut downs, mut first) = (Vec::new(), Vec::new());
        for _ in 0..settings.tries {
            let (down, unavailable) = detect(&mut three, *fault, &on_three, &reader).await;
            downs.push(down);
            first.push(unavailable);
        }
        println!(
            "| {fault:?} | {} | {} |",
            summary(&mut downs),
            summary(&mut first)
        );
    }

    // 4. The soak: GETs through every edge, every node's view polled.
    let gets: Vec<String> = accounts
        .iter()
        .map(|(id, _)| format!("/api/v1/accounts/{id}"))
        .collect();
    let auth = format!("Bearer {reader}");
    let get_script = script(
        dir.path(),
        "get",
        "GET",
        &gets,
        &[("Authorization", auth.as_str())],
        None,
    );
    let loads: Vec<_> = (0..3)
        .map(|n| {
            let (edge, get_script, seconds) = (
                three.nodes[n].edge.clone(),
                get_script.clone(),
                settings.soak_seconds,
            );
            std::thread::spawn(move || wrk(&edge, &get_script, seconds, 32))
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(settings.soak_seconds);
    let (mut polls, mut false_downs, mut oldest) = (0u64, Vec::new(), 0u64);
    while Instant::now() < until {
        for n in 0..3 {
            for peer in (0..3).filter(|peer| *peer != n) {
                polls += 1;
                match three.seen(n, peer).await {
                    Some((status, age)) => {
                        oldest = oldest.max(age);
                        if status != "up" {
                            false_downs.push(format!(
                                "node-{} saw node-{} {status}",
                                n + 1,
                                peer + 1
                            ));
                        }
                    }
                    None => false_downs.push(format!("node-{} did not answer its view", n + 1)),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served: f64 = loads
        .into_iter()
        .map(|load| load.join().unwrap().requests_per_second)
        .sum();
    println!(
        "\n4. soak: wrk GET through all three edges for {} s ({served:.0} req/s in all): {} false \"down\" in {polls} views polled; oldest heartbeat seen {oldest} ms",
        settings.soak_seconds,
        false_downs.len()
    );
    for line in false_downs.iter().take(10) {
        println!("   {line}");
    }
}

// ---- 5. replicated failover --------------------------------------------------------------

/// A fault on a replicated cluster's node 3.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LeaderFault {
    Kill9,
    Stop,
    CutBothWays,
    /// Node 3 hears nothing (packets to its cluster port dropped); what it sends arrives.
    Deaf,
    /// Node 3's packets from its cluster port are dropped; it hears the others.
    Mute,
}

impl Three {
    async fn cluster_view(&self, n: usize) -> Option<serde_json::Value> {
        self.http
            .get(format!("{}/admin/cluster", self.nodes[n].edge))
            .bearer_auth(&self.admin)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Partitions each node leads, as each says.
    async fn leading(&self) -> Vec<Option<u64>> {
        let mut leading = Vec::new();
        for n in 0..3 {
            let view = self.cluster_view(n).await;
            leading.push(view.and_then(|v| v["replication"]["leading"].as_u64()));
        }
        leading
    }

    /// The partitions node `n` leads, as node 1 sees it.
    async fn led_by(&self, n: usize) -> Vec<u32> {
        let name = format!("node-{}", n + 1);
        let Some(view) = self.cluster_view(0).await else {
            return Vec::new();
        };
        view["replication"]["partitions"]
            .as_array()
            .map(|partitions| {
                partitions
                    .iter()
                    .filter(|p| p["leader"] == name.as_str())
                    .filter_map(|p| p["partition"].as_u64().map(|p| p as u32))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the three together lead all 64 partitions and node 3 leads its share
    /// (leaders go back to their preferred members once caught up).
    async fn leaders_settled(&self, timeout: Duration) -> Vec<Option<u64>> {
        let deadline = Instant::now() + timeout;
        loop {
            let leading = self.leading().await;
            let total: u64 = leading.iter().flatten().sum();
            if total == 64 && leading.iter().all(|l| l.is_some_and(|l| l >= 15)) {
                return leading;
            }
            assert!(
                Instant::now() < deadline,
                "leaders did not settle: {leading:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One try: `fault` on node 3, then the time until every account of `accounts` (partition,
/// id) whose partition node 3 led takes a credit through node 1's edge; then healed.
async fn fail_over(three: &mut Three, fault: LeaderFault, accounts: &[(u32, String)]) -> Duration {
    let led = three.led_by(2).await;
    let mut pending: Vec<String> = accounts
        .iter()
        .filter(|(partition, _)| led.contains(partition))
        .map(|(_, id)| id.clone())
        .collect();
    assert!(!pending.is_empty(), "node 3 leads none of the accounts");
    let port = three.nodes[2].cluster_port;
    let started = Instant::now();
    match fault {
        LeaderFault::Kill9 => three.nodes[2].kill9(),
        LeaderFault::Stop => three.nodes[2].signal("-STOP"),
        LeaderFault::CutBothWays => assert!(iptables_on("-A", port, &["--dport", "--sport"])),
        LeaderFault::Deaf => assert!(iptables_on("-A", port, &["--dport"])),
        LeaderFault::Mute => assert!(iptables_on("-A", port, &["--sport"])),
    }
    let writer = token("bench", &["writer"]);
    let mut round = 0;
    while !pending.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{fault:?}: {} accounts still refuse writes after 30 s",
            pending.len()
        );
        round += 1;
        let mut credits = tokio::task::JoinSet::new();
        for id in pending.clone() {
            let (http, edge, writer) = (
                three.http.clone(),
                three.nodes[0].edge.clone(),
                writer.clone(),
            );
            credits.spawn(async move {
                let answer = http
                    .post(format!("{edge}/api/v1/accounts/{id}/credit"))
                    .bearer_auth(writer)
                    .header(
                        "Idempotency-Key",
                        format!("failover-{}-{id}-{round}", std::process::id()),
                    )
                    .json(&serde_json::json!({"amount": 1}))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await;
                (id, answer.is_ok_and(|r| r.status().is_success()))
            });
        }
        while let Some(done) = credits.join_next().await {
            if let Ok((id, true)) = done {
                pending.retain(|p| *p != id);
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let took = started.elapsed();
    match fault {
        LeaderFault::Kill9 => three.nodes[2].spawn(),
        LeaderFault::Stop => three.nodes[2].signal("-CONT"),
        LeaderFault::CutBothWays => assert!(iptables_on("-D", port, &["--dport", "--sport"])),
        LeaderFault::Deaf => assert!(iptables_on("-D", port, &["--dport"])),
        LeaderFault::Mute => assert!(iptables_on("-D", port, &["--sport"])),
    }
    three.all_up(Duration::from_secs(60)).await;
    took
}

async fn replicated_failover(dir: &Path, settings: &Settings, can_cut: bool) {
    let raft = [("PLAYHOUSE_STORE__JOURNAL".to_owned(), "raft".to_owned())];
    let mut three = Three::start(dir, &raft);
    three.all_up(Duration::from_secs(30)).await;
    let leading = three.leaders_settled(Duration::from_secs(60)).await;
    let accounts: Vec<(u32, String)> = three
        .open_accounts(300)
        .await
        .into_iter()
        .map(|(id, _)| (three.placement.partition(&format!("account-{id}")), id))
        .collect();
    println!(
        "\n5. replicated partitions (store.journal = raft, 64 partitions on all three nodes): leaders per node when all are up: {leading:?}"
    );
    println!(
        "   failover of node 3's partitions, {} tries each: until every account node 3 led takes a credit through node 1 (elections after 0.5-1 s without a leader; lease 1 s; quorum-loss probe 2 s)",
        settings.tries
    );
    println!("| fault on node 3 | median | worst | leaders per node after it returned |");
    println!("|---|---|---|---|");
    let faults: &[LeaderFault] = if can_cut {
        &[
            LeaderFault::Kill9,
            LeaderFault::Stop,
            LeaderFault::CutBothWays,
            LeaderFault::Deaf,
            LeaderFault::Mute,
        ]
    } else {
        &[LeaderFault::Kill9, LeaderFault::Stop]
    };
    for fault in faults {
        let mut times = Vec::new();
        let mut after = Vec::new();
        for _ in 0..settings.tries {
            times.push(fail_over(&mut three, *fault, &accounts).await);
            after = three.leaders_settled(Duration::from_secs(60)).await;
        }
        println!(
            "| {fault:?} | {} | {after:?} |",
            summary(&mut times).replace(", ", " | ")
        );
    }
    no_false_failover(&three, &accounts, settings.soak_seconds).await;
}

/// Times the lead of a partition moved (or was lost sight of), and the partitions' terms,
/// each summed over the partitions, as node `n` counts them.
async fn leader_changes(three: &Three, n: usize) -> (u64, u64) {
    let view = three.cluster_view(n).await.expect("the node answers");
    let partitions = view["replication"]["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sum = |field: &str| -> u64 { partitions.iter().filter_map(|p| p[field].as_u64()).sum() };
    (sum("leader_changes"), sum("term"))
}

/// How many lines of node `n`'s log contain `text`.
fn log_lines(three: &Three, n: usize, text: &str) -> usize {
    std::fs::read_to_string(&three.nodes[n].log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(text))
        .count()
}

/// With every node up, credits through all three edges for `seconds` (16 clients, each
/// sending the next as soon as one is answered): no lead may move meanwhile.
async fn no_false_failover(three: &Three, accounts: &[(u32, String)], seconds: u64) {
    let before = futures::future::join_all((0..3).map(|n| leader_changes(three, n))).await;
    let standing = |three: &Three| -> Vec<usize> {
        (0..3)
            .map(|n| log_lines(three, n, "standing for election"))
            .collect()
    };
    let stood_before = standing(three);
    let writer = token("bench", &["writer"]);
    let until = Instant::now() + Duration::from_secs(seconds);
    let clients = (0..16).map(|client| {
        let (http, writer) = (three.http.clone(), writer.clone());
        let edges: Vec<String> = three.nodes.iter().map(|n| n.edge.clone()).collect();
        let accounts: Vec<String> = accounts.iter().map(|(_, id)| id.clone()).collect();
        async move {
            let (mut ok, mut sent) = (0u64, 0u64);
            while Instant::now() < until {
                let id = &accounts[(client * 7 + sent as usize) % accounts.len()];
                let edge = &edges[(client + sent as usize) % edges.len()];
                let answer = http
                    .post(format!("{edge}/api/v1/accounts/{id}/credit"))
                    .bearer_auth(&writer)
                    .json(&serde_json::json!({"amount": 1}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                sent += 1;
                if answer.is_ok_and(|r| r.status().is_success()) {
                    ok += 1;
                }
            }
            (ok, sent)
        }
    });
    let answers = futures::future::join_all(clients).await;
    let (ok, sent) = answers
        .iter()
        .fold((0, 0), |(ok, sent), (o, s)| (ok + o, sent + s));
    let after = futures::future::join_all((0..3).map(|n| leader_changes(three, n))).await;
    let moved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).collect();
    let new_terms: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).collect();
    let stood: Vec<usize> = standing(three)
        .iter()
        .zip(&stood_before)
        .map(|(a, b)| a - b)
        .collect();
    println!(
        "   no false failover: {seconds} s of credits through all three edges, {ok} of {sent} answered 2xx ({:.0}/s); meanwhile, as each node counts: leads moved or lost sight of {moved:?}, new terms {new_terms:?}, early elections stood for {stood:?}",
        ok as f64 / seconds as f64
    );
}
