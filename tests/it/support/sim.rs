//! A whole cluster in this process, for the simulation: three nodes (or more) of the real build
//! (`runtime::node`, every service) on the in-memory network, each with a simulated disk that
//! loses what was not synced when its node crashes, all on tokio's paused clock. Requests go
//! to a node's app in process ([`SimApi`]), as they would to its edge.
//!
//! Faults: a crash drops the node at once (nothing graceful) and crashes its disk; a restart
//! starts it again on what the disk kept. A pause holds the node's messages and its clients'
//! requests (its own timers go on, unlike under SIGSTOP: a pause here is a full, silent
//! partition of the node). Cuts, partitions, delays and drops are the network's.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use futures::future::BoxFuture;
use playhouse_runtime::cluster::transport::memory::MemoryNetwork;
use playhouse_runtime::config::{Member, NodeConfig};
use playhouse_runtime::node::{Launch, Node, Telemetry};
use playhouse_runtime::placement::{METADATA_GROUP, Placement};
use playhouse_runtime::store::{Disk, DiskImage, SimulatedDisk, StoreOptions};
use reqwest::StatusCode;
use serde_json::Value;
use tower::ServiceExt;

use super::api::{Answer, Api, Call};
use super::{TEST_KEY, token};

pub const NODES: usize = 3;
/// Few partitions keep a simulated cluster small and fast.
pub const PARTITIONS: u32 = 4;
/// How long a client waits for an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

struct SimNode {
    config: NodeConfig,
    disk: SimulatedDisk,
    node: Option<Node>,
}

/// With `SIM_LOG=<file>`, the nodes' logs go to that file, filtered by `SIM_FILTER` (a
/// `RUST_LOG` directive, `info` when unset): a failing seed's story, run by run.
pub fn log_if_asked() {
    let Ok(path) = std::env::var("SIM_LOG") else {
        return;
    };
    // Once per process: every seed's run appends to the one file (created again, it would be
    // cut short under the writer of the first run, which keeps its offset).
    static STARTED: std::sync::Once = std::sync::Once::new();
    let mut first = false;
    STARTED.call_once(|| first = true);
    if !first {
        return;
    }
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("SIM_LOG={path}: {e}"));
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIM_FILTER")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Already set by an earlier run in this process: that one keeps writing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init();
}

/// The simulated cluster.
pub struct SimCluster {
    pub network: MemoryNetwork,
    nodes: Vec<SimNode>,
    pub placement: Placement,
    /// What the clients reach: each node's app while it runs, and whether it is paused.
    reach: Arc<RwLock<Vec<Reach>>>,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Default)]
struct Reach {
    app: Option<Router>,
    paused: bool,
    /// Left the cluster and stopped for good: clients no longer count it.
    retired: bool,
}

fn name(n: usize) -> String {
    format!("node-{}", n + 1)
}

impl SimCluster {
    /// Starts three nodes on a network seeded with `seed`, and waits until each serves.
    /// `late_syncs` plants a fault in every disk ([`SimulatedDisk::acknowledge_syncs_late`]).
    pub async fn start(seed: u64, late_syncs: bool) -> SimCluster {
        Self::start_with(seed, late_syncs, false, NODES).await
    }

    /// Starts three nodes whose partitions are Raft groups replicated on all three
    /// (`store.journal = "raft"`), and waits until each serves and every partition has a
    /// leader all of them know.
    pub async fn start_replicated(seed: u64) -> SimCluster {
        Self::start_replicated_on(seed, NODES).await
    }

    /// Starts `size` nodes whose partitions are Raft groups on three of them (all of them
    /// when fewer), and waits as [`SimCluster::start_replicated`] does.
    pub async fn start_replicated_on(seed: u64, size: usize) -> SimCluster {
        let cluster = Self::start_with(seed, false, true, size).await;
        cluster
            .wait_for_leaders(Duration::from_secs(30))
            .await
            .unwrap();
        cluster
    }

    async fn start_with(seed: u64, late_syncs: bool, replicated: bool, size: usize) -> SimCluster {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..size)
            .map(|n| Member {
                name: name(n),
                address: format!("{}:4600", name(n)),
                edge: None,
                services: Vec::new(),
            })
            .collect();
        let members_toml = members
            .iter()
            .map(|m| format!("{{ name = \"{}\", address = \"{}\" }}", m.name, m.address))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes: Vec<SimNode> = (0..size)
            .map(|n| {
                let disk = SimulatedDisk::new();
                if late_syncs {
                    disk.acknowledge_syncs_late(Duration::from_millis(500));
                }
                SimNode {
                    config: config(&dir, n, &members_toml, replicated),
                    disk,
                    node: None,
                }
            })
            .collect();
        // Placement as the nodes compute it, with the lists left out resolved.
        let resolved =
            playhouse_runtime::node::prepare(nodes[0].config.clone(), playhouse_actors::SERVICES)
                .unwrap();
        let placement = Placement::new(&resolved.cluster);
        let mut cluster = SimCluster {
            network: MemoryNetwork::new(seed),
            nodes,
            placement,
            reach: Arc::new(RwLock::new(vec![Reach::default(); size])),
            _dir: dir,
        };
        cluster
            .network
            .set_delay(Duration::from_micros(100), Duration::from_millis(2));
        for n in 0..size {
            cluster.restart(n).await;
        }
        cluster.wait_settled(Duration::from_secs(30)).await.unwrap();
        cluster
    }

    /// How many nodes the cluster has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The nodes `partition` is placed on (all of them without replication).
    pub fn replicas_of(&self, partition: u32) -> Vec<usize> {
        let names = self.placement_now().replicas(partition);
        (0..self.size())
            .filter(|n| names.is_empty() || names.contains(&name(*n)))
            .collect()
    }

    /// The node leading `partition`, as every running node sees it, once they agree.
    pub fn leader_of(&self, partition: u32) -> Option<usize> {
        let mut seen = (0..self.size()).filter(|n| self.is_running(*n)).map(|n| {
            let groups = self.nodes[n].node.as_ref().unwrap().groups()?;
            let leader = groups.leader_of(partition)?;
            (0..self.size()).find(|m| name(*m) == leader)
        });
        let first = seen.next()??;
        seen.all(|other| other == Some(first))
            .then_some(first)
            .filter(|leader| self.is_running(*leader))
    }

    /// Waits until every partition has a running leader every running node agrees on; how
    /// long that took.
    pub async fn wait_for_leaders(&self, patience: Duration) -> Result<Duration, String> {
        let started = tokio::time::Instant::now();
        loop {
            let leaderless: Vec<u32> = (0..PARTITIONS)
                .filter(|p| self.leader_of(*p).is_none())
                .collect();
            if leaderless.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > patience {
                return Err(format!(
                    "partitions without an agreed leader: {leaderless:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every partition is led by its preferred member (the first its placement
    /// proposes), as the balancer leaves it once every node is up: a test that picks a
    /// leader to fault then sees no hand-over under way.
    pub async fn wait_balanced(&self, patience: Duration) -> Result<Duration, String> {
        let started = tokio::time::Instant::now();
        let preferred = |partition: u32| {
            let first = self.placement_now().replicas(partition).first()?.clone();
            (0..self.size()).find(|n| name(*n) == first)
        };
        loop {
            let off: Vec<u32> = (0..PARTITIONS)
                .filter(|p| self.leader_of(*p).is_none() || self.leader_of(*p) != preferred(*p))
                .collect();
            if off.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > patience {
                return Err(format!(
                    "partitions not led by their preferred member: {off:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every node runs, no replica of any group has stopped, and every group's
    /// leader (each partition's and the metadata group's) counts each of its nodes' current
    /// incarnation among its voters: a replica back on a wiped disk has been caught up and
    /// promoted, so that losing another disk loses no majority. How long that took.
    pub async fn wait_whole(&self, patience: Duration) -> Result<Duration, String> {
        let started = tokio::time::Instant::now();
        loop {
            let broken: Vec<u32> = (0..PARTITIONS)
                .chain([METADATA_GROUP])
                .filter(|p| !self.is_whole(*p))
                .collect();
            if broken.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > patience {
                let views: Vec<String> = broken.iter().map(|p| self.describe(*p)).collect();
                // Whether each node's new incarnation got recorded at all tells a record
                // that never happened from a swap that never finished.
                let recorded: Vec<String> = (0..self.size())
                    .filter_map(|n| {
                        let node = self.node(n)?;
                        let membership =
                            playhouse_runtime::replication::Membership::read(node.store()).ok()?;
                        Some(format!("node {n} holds {:x?}", membership.incarnations))
                    })
                    .collect();
                return Err(format!(
                    "partitions whose voters are not every node's current incarnation: {}; incarnations recorded: {}",
                    views.join("; "),
                    recorded.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `partition` as each running node sees it: its incarnation, the leader it knows and the
    /// voters.
    fn describe(&self, partition: u32) -> String {
        let views: Vec<String> = (0..self.size())
            .filter_map(|n| {
                let groups = self.node(n)?.groups()?;
                let stopped = groups
                    .stopped(partition)
                    .map(|why| format!(" (stopped: {why})"))
                    .unwrap_or_default();
                Some(format!(
                    "node {n} (incarnation {:x}) sees leader {:?}, voters {:x?}{stopped}",
                    groups.replica_id(),
                    groups.leader_of(partition),
                    groups.voters_of(partition).unwrap_or_default()
                ))
            })
            .collect();
        format!("partition {partition}: {}", views.join(", "))
    }

    fn is_whole(&self, partition: u32) -> bool {
        let Some(leader) = self.leader_of(partition) else {
            return false;
        };
        let voters = self.nodes[leader]
            .node
            .as_ref()
            .and_then(|node| node.groups()?.voters_of(partition))
            .unwrap_or_default();
        let replicas = self.replicas_of(partition);
        let current: Option<Vec<u64>> = replicas
            .iter()
            .map(|n| Some(self.node(*n)?.groups()?.replica_id()))
            .collect();
        let running = replicas.iter().all(|n| {
            self.node(*n)
                .and_then(|node| node.groups()?.stopped(partition))
                .is_none()
        });
        running
            && current.is_some_and(|ids| {
                ids.len() == voters.len() && ids.iter().all(|id| voters.contains_key(id))
            })
    }

    /// The moves under way now, as (node, partition), across the running nodes (each lists
    /// the moves it leads; a partition whose lead has just passed on may be listed by both
    /// leaders for a moment).
    pub fn moves_now(&self) -> Vec<(String, u32)> {
        (0..self.size())
            .filter_map(|n| Some((self.name(n), self.node(n)?.groups()?)))
            .flat_map(|(name, groups)| {
                groups
                    .moves()
                    .into_iter()
                    .map(move |moving| (name.clone(), moving.partition))
            })
            .collect()
    }

    /// Placement over the members as they are now: as the node leading the metadata group
    /// sees them (members may have joined or left since the start), else as configured.
    pub fn placement_now(&self) -> Placement {
        self.metadata_leader()
            .and_then(|n| self.node(n)?.cluster())
            .map_or_else(
                || self.placement.clone(),
                |cluster| (*cluster.placement()).clone(),
            )
    }

    /// The members as the metadata group's leader knows them now (a drained member is
    /// listed until it has left).
    pub fn members_now(&self) -> Vec<String> {
        self.metadata_leader()
            .and_then(|n| self.node(n)?.cluster())
            .map(|cluster| cluster.member_names())
            .unwrap_or_default()
    }

    /// The running node whose replica leads the metadata group now (a node moved off it may
    /// still believe another leads).
    fn metadata_leader(&self) -> Option<usize> {
        (0..self.size()).find(|n| {
            self.node(*n)
                .and_then(|node| node.groups()?.held(METADATA_GROUP))
                .is_some_and(|raft| raft.is_leader())
        })
    }

    /// Adds a node that asks to join the running cluster (`cluster.join`), listing node 0
    /// and node 1 to contact; started by [`SimCluster::join`]. Its index.
    pub fn add_joining_node(&mut self) -> usize {
        let n = self.nodes.len();
        let contacts = [n, 0, 1]
            .iter()
            .map(|m| {
                format!(
                    "{{ name = \"{}\", address = \"{}:4600\" }}",
                    name(*m),
                    name(*m)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut config = config(&self._dir, n, &contacts, true);
        config.cluster.join = true;
        self.nodes.push(SimNode {
            config,
            disk: SimulatedDisk::new(),
            node: None,
        });
        self.reach.write().unwrap().push(Reach::default());
        n
    }

    /// Starts node `n`, which asks to join, while `admit` runs (an admin admitting it): it
    /// returns once admitted and started, or says why it did not start.
    pub async fn join(
        &mut self,
        n: usize,
        admit: impl std::future::Future<Output = ()>,
    ) -> Result<(), String> {
        self.join_with(n, |_| {}, admit).await
    }

    /// [`SimCluster::join`] with node `n`'s config changed by `change` first.
    pub async fn join_with(
        &mut self,
        n: usize,
        change: impl FnOnce(&mut NodeConfig),
        admit: impl std::future::Future<Output = ()>,
    ) -> Result<(), String> {
        assert!(self.nodes[n].node.is_none(), "node {n} is running");
        change(&mut self.nodes[n].config);
        let start = Node::start(self.launch(n));
        let (started, ()) = tokio::join!(start, admit);
        let node = started?;
        self.reach.write().unwrap()[n].app = Some(node.edge());
        self.nodes[n].node = Some(node);
        Ok(())
    }

    /// Node `n`'s HTTP app, while it runs.
    pub fn app(&self, n: usize) -> Option<Router> {
        self.reach.read().unwrap()[n].app.clone()
    }

    /// Node `n` as it runs.
    pub fn node(&self, n: usize) -> Option<&Node> {
        self.nodes[n].node.as_ref()
    }

    /// Node `n`'s index of the owner of `stream` in `service`.
    pub fn owner_of(&self, service: &str, stream: &str) -> usize {
        let owner = self.placement.owner_of(service, stream).unwrap();
        (0..self.size()).find(|n| name(*n) == owner).unwrap()
    }

    pub fn api(&self) -> SimApi {
        SimApi {
            reach: self.reach.clone(),
        }
    }

    pub fn is_running(&self, n: usize) -> bool {
        self.nodes[n].node.is_some()
    }

    /// Crashes node `n`: everything dropped at once, its disk back to what it had synced.
    pub fn crash(&mut self, n: usize) {
        self.reach.write().unwrap()[n].app = None;
        if let Some(node) = self.nodes[n].node.take() {
            node.crash();
        }
        self.nodes[n].disk.crash();
    }

    /// Crashes node `n` and loses its disk: the store's files and the rest of its data
    /// directory (its identity, what it heard of its peers), as a replaced machine would.
    pub fn crash_and_wipe(&mut self, n: usize) {
        self.crash(n);
        self.nodes[n].disk.wipe();
        let _ = std::fs::remove_dir_all(&self.nodes[n].config.data_dir);
    }

    /// What node `n`'s disk holds durably now: a backup to roll it back to.
    pub fn image(&self, n: usize) -> DiskImage {
        self.nodes[n].disk.image()
    }

    /// Crashes node `n` and puts its disk back as `image` held it, as a machine restored
    /// from an older backup (its identity file, the same in any backup, stays).
    pub fn crash_and_roll_back(&mut self, n: usize, image: &DiskImage) {
        self.crash(n);
        self.nodes[n].disk.restore(image);
    }

    /// Starts node `n` (again) on its disk.
    pub async fn restart(&mut self, n: usize) {
        self.try_restart_with(n, |_| {})
            .await
            .unwrap_or_else(|error| panic!("node {n} did not start: {error}"));
    }

    /// Starts node `n` again with its config changed by `change` (kept for its later
    /// starts), or says why it did not start.
    pub async fn try_restart_with(
        &mut self,
        n: usize,
        change: impl FnOnce(&mut NodeConfig),
    ) -> Result<(), String> {
        assert!(self.nodes[n].node.is_none(), "node {n} is running");
        change(&mut self.nodes[n].config);
        let node = Node::start(self.launch(n))
            .await
            .map_err(|error| error.to_string())?;
        self.reach.write().unwrap()[n].app = Some(node.edge());
        self.nodes[n].node = Some(node);
        Ok(())
    }

    /// Stops node `n` for good (it left the cluster): clients and checkers no longer reach
    /// it, and the nodes after it are renumbered for them (not for this value).
    pub fn retire(&mut self, n: usize) {
        self.crash(n);
        self.reach.write().unwrap()[n].retired = true;
    }

    /// Whether node `n` was retired.
    pub fn is_retired(&self, n: usize) -> bool {
        self.reach.read().unwrap()[n].retired
    }

    /// What starts node `n` on its config and disk, on the simulated network.
    fn launch(&self, n: usize) -> Launch {
        let slot = &self.nodes[n];
        Launch {
            config: slot.config.clone(),
            services: playhouse_actors::SERVICES,
            transport: Some(self.network.transport(&name(n))),
            telemetry: Telemetry::detached(),
            listen: false,
            store: StoreOptions {
                disk: Disk::Simulated(slot.disk.clone()),
                ..StoreOptions::default()
            },
        }
    }

    /// Holds node `n`'s messages and requests until [`SimCluster::resume`].
    pub fn pause(&self, n: usize) {
        self.network.pause(&name(n));
        self.reach.write().unwrap()[n].paused = true;
    }

    pub fn resume(&self, n: usize) {
        self.network.resume(&name(n));
        self.reach.write().unwrap()[n].paused = false;
    }

    pub fn name(&self, n: usize) -> String {
        name(n)
    }

    /// Waits until every running node sees the other running ones up and serves; says who
    /// is not when `patience` runs out.
    pub async fn wait_settled(&self, patience: Duration) -> Result<(), String> {
        let admin = token("ops", &["admin"]);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let mut unsettled = Vec::new();
            for n in (0..self.size()).filter(|n| self.is_running(*n)) {
                let view = match self.app(n) {
                    Some(app) => in_process(app, &Call::get("/admin/cluster", &admin)).await,
                    None => Answer::Unreached("not running".into()),
                };
                match view {
                    Answer::Status(StatusCode::OK, view) => {
                        let up = view["members"].as_array().is_some_and(|members| {
                            members.iter().all(|member| {
                                member["this_node"] == true
                                    || member["status"] == "up"
                                    || !self.is_running(
                                        (0..self.size())
                                            .find(|m| name(*m) == member["name"])
                                            .unwrap(),
                                    )
                            })
                        });
                        if view["serving"] != true || !up {
                            unsettled.push(format!("node {n}: {view}"));
                        }
                    }
                    other => unsettled.push(format!("node {n}: {other:?}")),
                }
            }
            if unsettled.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(unsettled.join("; "));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every node at once (a crash: the test is over), so that nothing outlives it.
    pub fn tear_down(&mut self) {
        for n in 0..self.size() {
            self.crash(n);
        }
    }
}

/// Node `n`'s config: every service (a member lists none: all of them), the test key, no rate
/// limit to speak of, a small cluster.
fn config(dir: &tempfile::TempDir, n: usize, members: &str, replicated: bool) -> NodeConfig {
    let data = dir.path().join(name(n));
    let journal = if replicated { "raft" } else { "direct" };
    let text = format!(
        r#"
environment = "development"
node_name = "{name}"
data_dir = "{data}"

[store]
journal = "{journal}"

[edge]
listen = "127.0.0.1:0"
request_timeout_ms = 8000

[auth]
issuer = "playhouse"
audience = "playhouse-api"
key_env = "PLAYHOUSE_SIM_UNSET_KEY_VARIABLE"
dev_key = "{TEST_KEY}"

[rate_limit]
requests_per_second = 1000000
burst = 1000000

[health]
disk_degraded_below_percent = 0.1
disk_unhealthy_below_percent = 0.05
disk_unhealthy_below_mib = 0

[cluster]
listen = "127.0.0.1:{port}"
cookie_env = "PLAYHOUSE_SIM_UNSET_COOKIE_VARIABLE"
dev_cookie = "a-simulated-cluster-cookie"
partitions = {PARTITIONS}
# Snapshots every few entries, so that the log is dropped behind them all the time and a
# replica back from a fault is often sent a snapshot rather than entries.
raft_snapshot_every = 25
heartbeat_interval_ms = 200
heartbeat_timeout_ms = 1000
call_timeout_ms = 2000
members = [{members}]
"#,
        name = name(n),
        data = data.display(),
        port = 4601 + n,
    );
    NodeConfig::parse(
        &dir.path().join(format!("{}.toml", name(n))),
        &text,
        Vec::new(),
    )
    .unwrap_or_else(|error| panic!("the simulated node's config: {error:#}"))
}

/// Requests to the simulated nodes' apps, in process.
#[derive(Clone)]
pub struct SimApi {
    reach: Arc<RwLock<Vec<Reach>>>,
}

impl Api for SimApi {
    /// The nodes not retired.
    fn nodes(&self) -> usize {
        self.reach
            .read()
            .unwrap()
            .iter()
            .filter(|r| !r.retired)
            .count()
    }

    /// Sends to the `node`-th node not retired.
    fn send(&self, node: usize, call: Call) -> BoxFuture<'_, Answer> {
        Box::pin(async move {
            let Some(node) = self
                .reach
                .read()
                .unwrap()
                .iter()
                .enumerate()
                .filter(|(_, reach)| !reach.retired)
                .nth(node)
                .map(|(n, _)| n)
            else {
                return Answer::Unreached("no such node".into());
            };
            let deadline = tokio::time::Instant::now() + CLIENT_TIMEOUT;
            // A paused node answers nothing: wait, as a client would, until it resumes or the
            // client gives up.
            while self.reach.read().unwrap()[node].paused {
                if tokio::time::Instant::now() >= deadline {
                    return Answer::Unreached("timed out (node paused)".into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let Some(app) = self.reach.read().unwrap()[node].app.clone() else {
                return Answer::Unreached("connection refused (node down)".into());
            };
            match tokio::time::timeout_at(deadline, in_process(app, &call)).await {
                Err(_) => Answer::Nothing("timed out".into()),
                Ok(answer) => answer,
            }
        })
    }
}

/// Sends `call` to `app`, a node's HTTP app, in this process: what its edge would answer.
pub async fn in_process(app: Router, call: &Call) -> Answer {
    let (status, _, body) = in_process_with_headers(app, call).await;
    Answer::Status(status, body)
}

/// [`in_process`], with the answer's headers.
pub async fn in_process_with_headers(
    app: Router,
    call: &Call,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let Ok(response) = app.oneshot(request(call)).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (
        StatusCode::from_u16(status.as_u16()).unwrap(),
        headers,
        body,
    )
}

fn request(call: &Call) -> axum::http::Request<axum::body::Body> {
    let method = axum::http::Method::from_bytes(call.method.as_str().as_bytes()).unwrap();
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(&call.path)
        .header("authorization", format!("Bearer {}", call.token));
    if let Some(key) = &call.key {
        request = request.header("idempotency-key", key);
    }
    if let Some(id) = &call.request_id {
        // Both the request id and the trace id come from the client, so that nothing the node
        // names depends on a random draw.
        let trace = format!(
            "{:032x}",
            playhouse_runtime::store::fingerprint(id.as_bytes())
        );
        request = request
            .header("x-request-id", id)
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"));
    }
    let body = match &call.body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            axum::body::Body::from(body.to_string())
        }
        None => axum::body::Body::empty(),
    };
    request.body(body).unwrap()
}
