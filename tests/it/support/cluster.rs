//! Multi-process clusters for tests: the shipped `config/local-cluster/node-N.toml` files, each
//! node in its own process with its own data directory, on free ports (given through the
//! `PLAYHOUSE_*` overrides a deployment would use). Every process is killed when the cluster is
//! dropped, also when a test fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use playhouse_runtime::config::Member;
use playhouse_runtime::placement::Placement;

use super::{Node, NodeOptions, client, token};

/// The services every node hosts (a member that lists none hosts every one of the build's).
pub fn services() -> Vec<String> {
    playhouse_actors::SERVICES
        .iter()
        .map(|service| service.name.to_owned())
        .collect()
}

/// How a test cluster differs from the shipped local cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Extra `PLAYHOUSE_*` variables for every node.
    pub env: Vec<(String, String)>,
    /// Extra variables for one node: `node_env[n]` for node `n` (0-based), when present.
    pub node_env: Vec<Vec<(String, String)>>,
    pub log_level: &'static str,
    /// Start every node with this open-file limit, as `ulimit -n` would.
    pub file_limit: Option<u32>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            // A shorter heartbeat timeout than the shipped 1.5 s, so that "seen down within 2 s"
            // holds with room to spare on a loaded test machine.
            env: vec![
                (
                    "PLAYHOUSE_CLUSTER__HEARTBEAT_INTERVAL_MS".into(),
                    "200".into(),
                ),
                (
                    "PLAYHOUSE_CLUSTER__HEARTBEAT_TIMEOUT_MS".into(),
                    "1000".into(),
                ),
            ],
            node_env: Vec::new(),
            log_level: "info",
            file_limit: None,
        }
    }
}

/// One test cluster at a time per test binary: three debug nodes per test, times the tests
/// the harness runs at once, would starve a 2-core machine until heartbeats time out.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this binary's turn to run a cluster; the turn lasts while the guard lives.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding the turn poisons it; the next may still go.
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running cluster of `config/local-cluster` nodes.
pub struct TestCluster {
    pub nodes: Vec<Node>,
    /// Each node's cluster port.
    pub ports: Vec<u16>,
    pub placement: Placement,
    pub dir: tempfile::TempDir,
    /// Held until the nodes are gone (fields drop in order: `nodes` first).
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// `GET /admin/cluster` on `node` (a node outside a `TestCluster`), as an admin: 200.
pub async fn admin_view(node: &Node) -> serde_json::Value {
    let answer = super::get_as(node, "/admin/cluster", &token("ops", &["admin"])).await;
    super::json_of(answer, reqwest::StatusCode::OK).await
}

/// A port nothing listens on now (the OS's choice for a socket bound to port 0).
/// A port free now, for a node to bind later. Taken below the kernel's ephemeral range
/// (32768 and up by default): a port the kernel picked would be free again once checked, and
/// any connection made meanwhile (a client's, a node's dial) could take it before the node
/// binds it, which failed a CI run ("Address already in use"). Each call in this process
/// tries the port after the last one given.
pub fn free_port() -> u16 {
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    // A start of its own per process, so runs side by side rarely meet.
    let start = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = LOW + start.wrapping_add(offset) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// The TOML array of the members, on `ports`.
pub fn members_toml(ports: &[u16]) -> String {
    let members = ports
        .iter()
        .enumerate()
        .map(|(n, port)| {
            // Node 3 by name: member addresses are resolved when dialled.
            let host = if n == 2 { "localhost" } else { "127.0.0.1" };
            format!(
                "{{ name = \"node-{}\", address = \"{host}:{port}\" }}",
                n + 1
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("[{members}]")
}

/// The shipped config of node `n` (1-based).
pub fn shipped_config(n: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/local-cluster")
        .join(format!("node-{n}.toml"))
}

impl TestCluster {
    /// Starts three nodes and waits until each sees the other two up.
    pub async fn start(options: &ClusterOptions) -> TestCluster {
        let cluster = Self::start_unjoined(3, options);
        cluster.wait_all_up(Duration::from_secs(20)).await;
        cluster
    }

    /// Starts `size` nodes without waiting for them to see each other.
    pub fn start_unjoined(size: usize, options: &ClusterOptions) -> TestCluster {
        let turn = one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(n, port)| Member {
                name: format!("node-{}", n + 1),
                address: format!("127.0.0.1:{port}"),
                edge: None,
                services: services(),
            })
            .collect();
        let placement = Placement::of(64, &members);
        let nodes = (1..=size)
            .map(|n| {
                let env = node_env(&dir, n, &ports, options);
                Node::launch(
                    shipped_config(n),
                    env,
                    dir.path().join(format!("node-{n}.log")),
                    &NodeOptions {
                        log_level: options.log_level,
                        file_limit: options.file_limit,
                        ..NodeOptions::default()
                    },
                )
            })
            .collect();
        TestCluster {
            nodes,
            ports,
            placement,
            dir,
            _turn: turn,
        }
    }

    /// Node `n`, 0-based.
    pub fn node(&self, n: usize) -> &Node {
        &self.nodes[n]
    }

    /// The index of the node owning the aggregate whose stream is `stream`, in `service`.
    pub fn owner_of(&self, service: &str, stream: &str) -> usize {
        let owner = self.placement.owner_of(service, stream).unwrap();
        owner.trim_start_matches("node-").parse::<usize>().unwrap() - 1
    }

    /// `GET /admin/cluster` on node `n`.
    pub async fn view(&self, n: usize) -> serde_json::Value {
        client()
            .get(self.node(n).url("/admin/cluster"))
            .bearer_auth(token("ops", &["admin"]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The status node `n` gives `peer` (0-based), or `None` if it does not answer.
    pub async fn status_seen(&self, n: usize, peer: usize) -> Option<String> {
        let response = client()
            .get(self.node(n).url("/admin/cluster"))
            .bearer_auth(token("ops", &["admin"]))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        let view: serde_json::Value = response.json().await.ok()?;
        let name = format!("node-{}", peer + 1);
        view["members"]
            .as_array()?
            .iter()
            .find(|member| member["name"] == name.as_str())
            .map(|member| member["status"].as_str().unwrap_or("").to_owned())
    }

    /// Waits until every running node sees every other running node up.
    pub async fn wait_all_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all_up = true;
            for n in 0..self.nodes.len() {
                for peer in 0..self.nodes.len() {
                    if n != peer
                        && self.nodes[n].is_running()
                        && self.nodes[peer].is_running()
                        && self.status_seen(n, peer).await.as_deref() != Some("up")
                    {
                        all_up = false;
                    }
                }
            }
            if all_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not come up within {timeout:?}: {:?}",
                self.logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node sees the others up and serves its own partitions (a
    /// restarted node serves only once a peer has confirmed its store).
    pub async fn wait_settled(&self, timeout: Duration) {
        let started = Instant::now();
        self.wait_all_up(timeout).await;
        for n in 0..self.nodes.len() {
            if !self.nodes[n].is_running() {
                continue;
            }
            while self.view(n).await["serving"] != true {
                assert!(
                    started.elapsed() < timeout,
                    "node-{} not serving within {timeout:?}: {:?}",
                    n + 1,
                    self.logs_tail()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// With replication: waits until the running nodes together lead every partition, so
    /// that a first write need not wait out a fresh cluster's elections.
    pub async fn wait_for_leaders(&self, timeout: Duration) {
        let started = Instant::now();
        loop {
            let mut led = 0;
            for n in (0..self.nodes.len()).filter(|n| self.nodes[*n].is_running()) {
                led += self.view(n).await["replication"]["leading"]
                    .as_u64()
                    .unwrap_or(0);
            }
            if led == u64::from(self.placement.partitions()) {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{led} of {} partitions led after {timeout:?}: {:?}",
                self.placement.partitions(),
                self.logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `n` sees `peer` with `status`; returns how long that took, or panics
    /// after `timeout`.
    pub async fn wait_status(
        &self,
        n: usize,
        peer: usize,
        status: &str,
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            if self.status_seen(n, peer).await.as_deref() == Some(status) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "node-{} did not see node-{} {status} within {timeout:?}: {:?}",
                n + 1,
                peer + 1,
                self.logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs_tail(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| {
                let text = node.log_text();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(15)..].join("\n")
            })
            .collect()
    }

    /// Node `n`'s data directory.
    pub fn data_dir(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("node-{}", n + 1))
    }
}

impl Drop for TestCluster {
    /// A failing test's nodes say what they were doing: the end of each log goes to stderr
    /// (the harness shows it with the failure) before the nodes and their files are gone;
    /// with `KEEP_NODE_LOGS=<dir>`, each whole log is copied there too.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = std::env::var_os("KEEP_NODE_LOGS").map(std::path::PathBuf::from);
            for (n, node) in self.nodes.iter_mut().enumerate() {
                let text = node.log_text();
                if let Some(keep) = &keep {
                    let path = keep.join(format!("node-{}.log", n + 1));
                    if let Err(error) =
                        std::fs::create_dir_all(keep).and_then(|()| std::fs::write(&path, &text))
                    {
                        eprintln!("could not keep {}: {error}", path.display());
                    }
                }
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- node-{} ({}) log, last lines ---\n{}",
                    n + 1,
                    match node.exited() {
                        Some(status) => format!("exited: {status}"),
                        None => "running".to_owned(),
                    },
                    lines[lines.len().saturating_sub(60)..].join("\n")
                );
            }
        }
    }
}

/// The environment node `n` (1-based) starts with: its data directory, a free edge port, its
/// cluster port, and the members on their ports.
pub fn node_env(
    dir: &tempfile::TempDir,
    n: usize,
    ports: &[u16],
    options: &ClusterOptions,
) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PLAYHOUSE_DATA_DIR".to_owned(),
            dir.path().join(format!("node-{n}")).display().to_string(),
        ),
        ("PLAYHOUSE_EDGE__LISTEN".into(), "127.0.0.1:0".into()),
        (
            "PLAYHOUSE_CLUSTER__LISTEN".into(),
            format!("127.0.0.1:{}", ports[n - 1]),
        ),
        ("PLAYHOUSE_CLUSTER__MEMBERS".into(), members_toml(ports)),
        // The shipped files' dev_key is what signs; the tests' tokens use TEST_KEY.
        ("PLAYHOUSE_JWT_KEY".into(), super::TEST_KEY.into()),
    ];
    env.extend(options.env.iter().cloned());
    env.extend(options.node_env.get(n - 1).into_iter().flatten().cloned());
    env
}
