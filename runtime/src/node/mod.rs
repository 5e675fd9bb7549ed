//! The node as a value: [`Node::start`] runs one node from its config, the build's services
//! and a transport; the [`Node`] it answers stops it gracefully ([`Node::stop`]) or crashes it
//! ([`Node::crash`]: everything dropped at once, as `kill -9` would). Any number run side by
//! side in one process; the `playhouse` binary is a thin command line over one.
//!
//! Start order: store (its directory's identity checked) -> cluster handle -> bus -> services
//! -> operations sampler -> supervision tree -> cluster links -> edge. A graceful stop goes the
//! other way: edge drained, tree stopped, peers' log ends written, links closed, store synced.
//!
//! - `services`: which of the build's services a node hosts, and starting them;
//! - `files`: the data directory: its identity, the store's files, offline rebuilds;
//! - `health`: the cluster's part of `/health`;
//! - [`signal`]: waiting for SIGTERM or Ctrl-C; [`probe`]: the container health check.

mod files;
mod health;
pub mod probe;
mod services;
pub mod signal;

pub use files::{
    Claim, open_store, rebuild_projection, shared_settings, start_groups_alone,
    start_groups_in_cluster,
};
pub use services::{Hosted, check, host, prepare};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;
use tokio::task::JoinHandle;

use crate::bus::Bus;
use crate::cluster::{Cluster, Transport};
use crate::config::NodeConfig;
use crate::edge::admin_cluster::ClusterInfo;
use crate::edge::server::{self, ServerSettings};
use crate::edge::{EdgeSettings, Guard, Health, JwtAuth, Limiter};
use crate::ops::{Ops, OverviewSource, Series};
use crate::replication::Groups;
use crate::service::ServiceDef;
use crate::store::EventStore;
use crate::supervision::{Backoff, Intensity, Strategy, Supervisor, SupervisorMsg, SupervisorSpec};

/// How long the supervision tree gets to stop after the edge has drained.
const TREE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a node's metrics go: the process's recorder (installed once, by the binary), or a
/// recorder of its own that nothing reads (nodes side by side in tests).
#[derive(Clone)]
pub struct Telemetry {
    pub prometheus: PrometheusHandle,
    pub series: Series,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Installs the process's metrics recorder (once per process; see
    /// [`crate::telemetry::install_metrics`]).
    pub fn install() -> Result<Self, String> {
        let (prometheus, series) = crate::telemetry::install_metrics()?;
        Ok(Self { prometheus, series })
    }

    /// A recorder for this node alone, not installed: `/metrics` answers it (empty), and the
    /// process's metrics, if any, go where they go.
    pub fn detached() -> Self {
        Self {
            prometheus: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            series: Series::default(),
        }
    }
}

/// What a node is started from.
pub struct Launch {
    pub config: NodeConfig,
    /// The build's services; the node hosts those its config lists.
    pub services: &'static [ServiceDef],
    /// How it reaches the other members; `None`: ractor_cluster over TCP, as configured.
    pub transport: Option<Arc<dyn Transport>>,
    pub telemetry: Telemetry,
    /// Whether the edge listens on `edge.listen` (and the open-file limit is shared between
    /// the edge and the cluster port). Without, requests reach it through [`Node::edge`].
    pub listen: bool,
    /// The store's options beyond the config's (a simulated disk, say).
    pub store: crate::store::StoreOptions,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("node", &self.config.node_name)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Runs the node of `config` as this process's one node (as `playhouse node` does): logs and
/// metrics installed for the process, the edge listening, ractor_cluster links; until SIGTERM
/// or Ctrl-C, then a graceful stop.
pub async fn run_process(
    config: NodeConfig,
    services: &'static [ServiceDef],
) -> Result<(), String> {
    crate::telemetry::init_logging(&config.telemetry)?;
    let shutdown = signal::Shutdown::listen();
    let node = Node::start(Launch {
        config,
        services,
        transport: None,
        telemetry: Telemetry::install()?,
        listen: true,
        store: crate::store::StoreOptions::default(),
    })
    .await?;
    node.run_until_shutdown(shutdown).await
}

/// A running node.
pub struct Node {
    name: String,
    store: EventStore,
    /// The partition groups this node runs (a node alone: its groups of one).
    groups: Option<Groups>,
    cluster: Option<Cluster>,
    root: ActorRef<SupervisorMsg>,
    app: Router,
    edge: Option<Edge>,
    /// The node's own background tasks (sampler, housekeeping), aborted when it stops.
    tasks: Vec<JoinHandle<()>>,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.name).finish()
    }
}

/// The edge's HTTP server, when the node listens.
struct Edge {
    address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Node {
    /// Starts a node. Fails, saying what to change, when its config, data directory, files
    /// or addresses cannot be used.
    pub async fn start(launch: Launch) -> Result<Node, String> {
        let Launch {
            config,
            services,
            transport,
            telemetry,
            listen,
            store: store_options,
        } = launch;
        let config = prepare(config, services)?;
        let node = config.node_name.clone();
        let files = if listen {
            Some(share_files(&config)?)
        } else {
            None
        };
        let store_options_disk = store_options.disk.clone();
        let (store, claim) = open_store(&config, store_options).await?;
        // Before any saga runs: a store from before the finished-saga counters gets them filled.
        if let Some(counted) = crate::saga::fill_saga_counts(&store)
            .await
            .map_err(|e| format!("counting the finished sagas in the store: {e}"))?
        {
            tracing::info!(
                node,
                counted,
                "finished sagas counted for the operations page"
            );
        }
        if crate::store::FORGETS_COMMAND_IDS {
            tracing::error!(
                node,
                "this build forgets command ids (feature chaos-forget-command-ids): retried commands apply again; for checker experiments only"
            );
        }
        // With peers, the cluster is made first, so that the services' handles route through
        // it and register what other nodes may call; its links start once the services run.
        let cluster = config.cluster.has_peers().then(|| {
            let transport =
                transport.unwrap_or_else(|| crate::cluster::transport::tcp(&node, &config.cluster));
            Cluster::new(
                &node,
                &config.cluster,
                store.clone(),
                &config.data_dir,
                transport,
            )
        });
        let mut cluster_started = false;
        if let Some(cluster) = &cluster {
            match claim {
                Claim::Replicated(id) => cluster.adopt_cluster_id(id),
                Claim::Joining => {
                    // Its links must be up to ask; the handlers they need come once admitted.
                    cluster.start().await?;
                    cluster_started = true;
                    if let Err(refused) = join(&config, cluster).await {
                        // Nothing of this node may stay on the network (a node is a value:
                        // its caller may start another in this process).
                        cluster.stop();
                        return Err(refused);
                    }
                }
                Claim::Placement => {}
            }
        }
        // With `store.journal = "raft"` a node writes through its partitions' groups (a node
        // alone: groups of one); otherwise straight to its store (the partitions it owns are
        // its own).
        let (groups, journal) = match (config.cluster.replicated, &cluster) {
            (true, None) => {
                let (groups, journal) =
                    start_groups_alone(&config, &store, store_options_disk.clone()).await?;
                (Some(groups), journal)
            }
            (true, Some(cluster)) => {
                let (groups, journal) =
                    start_groups_in_cluster(&config, &store, store_options_disk.clone(), cluster)
                        .await?;
                (Some(groups), journal)
            }
            (false, _) => (None, crate::replication::Journal::Direct(store.clone())),
        };
        let bus = Bus::new(store.clone());
        if journal.is_replicated() {
            // A list shows a changing row only from the replicas keeping it up to date.
            let journal = journal.clone();
            bus.list_only(move |stream| journal.keeps_up(stream));
        }
        let hosted = host(&config, services, &store, &journal, &bus, cluster.clone())?;
        let ops = Ops::new(
            &node,
            telemetry.series.clone(),
            bus.clone(),
            hosted.services_of_kinds.clone(),
        )
        .with_groups(groups.clone());
        let mut tasks = vec![ops.spawn_sampler()];
        // Retention came with cluster format 2: the build of format 1 keeps every id.
        #[cfg(not(feature = "previous-format"))]
        if let Some(retention) = config.store.command_retention {
            match &groups {
                Some(groups) => groups.keep_commands_for(retention),
                None => tasks.push(tokio::spawn(crate::store::retention::keep_commands_for(
                    store.clone(),
                    retention,
                ))),
            }
        }
        let root = Supervisor::start(
            SupervisorSpec {
                name: format!("node-{node}"),
                strategy: Strategy::OneForOne,
                intensity: Intensity {
                    max_restarts: 5,
                    within: Duration::from_secs(30),
                },
                backoff: Backoff::default(),
                children: hosted.groups,
            },
            None,
        )
        .await
        .map_err(|e| format!("starting the services: {e}"))?;
        if let Some(cluster) = &cluster {
            crate::bus::gather::serve(cluster, &bus);
            cluster.serve_ops(&ops);
            if !cluster_started && let Err(error) = cluster.start().await {
                root.kill();
                return Err(error);
            }
            tracing::info!(
                node,
                listen = %config.cluster.listen,
                members = config.cluster.members.len(),
                cookie = %config.cluster.cookie_source,
                tls = config.cluster.tls.is_some(),
                "cluster transport started"
            );
        }

        let guard = Guard::new(JwtAuth::new(&config.auth), Limiter::new(config.rate_limit));
        tasks.push(guard.spawn_housekeeping());
        let cluster_check = {
            let cluster = cluster.clone();
            Arc::new(move || health::cluster(cluster.as_ref()))
        };
        let health = Health::new(
            store.clone(),
            config.data_dir.clone(),
            config.health,
            cluster_check,
        );
        let (app, _openapi) = crate::edge::assemble(
            &EdgeSettings {
                node_name: node.clone(),
                body_limit_bytes: config.edge.body_limit_bytes,
                request_timeout: config.edge.request_timeout,
            },
            hosted
                .routes
                .merge(crate::edge::admin::routes(bus.clone()))
                .merge(crate::edge::admin_members::routes(
                    crate::edge::admin_members::MembersInfo {
                        cluster: cluster.clone(),
                        groups: groups.clone(),
                    },
                ))
                .merge(crate::edge::admin_backup::routes(
                    crate::edge::admin_members::MembersInfo {
                        cluster: cluster.clone(),
                        groups: groups.clone(),
                    },
                ))
                .merge(crate::edge::admin_cluster::routes(ClusterInfo {
                    node: node.clone(),
                    services: config.services.clone(),
                    cluster: cluster.clone(),
                    store: store.clone(),
                    groups: groups.clone(),
                }))
                .merge(crate::edge::ui::admin_routes(OverviewSource::new(
                    ops,
                    cluster.clone(),
                    config.services.clone(),
                ))),
            guard,
            health,
            telemetry.prometheus,
        );
        let mut node_value = Node {
            name: node,
            store,
            groups,
            cluster,
            root,
            app,
            edge: None,
            tasks,
            shutdown_grace: config.edge.shutdown_grace,
        };
        if let Some(max_connections) = files {
            match node_value.listen(&config, max_connections) {
                Ok(edge) => node_value.edge = Some(edge),
                Err(error) => {
                    node_value.crash();
                    return Err(error);
                }
            }
        }
        Ok(node_value)
    }

    fn listen(&self, config: &NodeConfig, max_connections: usize) -> Result<Edge, String> {
        let node = self.name.as_str();
        tracing::info!(
            node,
            max_connections,
            configured = config.edge.max_connections,
            header_read_timeout_ms = config.edge.header_read_timeout.as_millis() as u64,
            keep_alive_timeout_ms = config.edge.keep_alive_timeout.as_millis() as u64,
            "edge connection limits"
        );
        let listener = server::bind(config.edge.listen)
            .map_err(|e| format!("edge.listen: cannot listen on {}: {e}", config.edge.listen))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("edge.listen: {e}"))?;
        // With `edge.listen` on port 0 this line is the only place the port shows; the test
        // harness (tests/it/support) reads it, so keep its wording.
        tracing::info!(node, %address, "HTTP edge listening on http://{address}");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(
            listener,
            self.app.clone(),
            ServerSettings {
                max_connections,
                header_read_timeout: config.edge.header_read_timeout,
                keep_alive_timeout: config.edge.keep_alive_timeout,
            },
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Edge {
            address,
            stop,
            server,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's HTTP app, for requests made in process (`tower::ServiceExt::oneshot`).
    pub fn edge(&self) -> Router {
        self.app.clone()
    }

    /// Where the edge listens, when it does.
    pub fn address(&self) -> Option<SocketAddr> {
        self.edge.as_ref().map(|edge| edge.address)
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The partition groups it runs (with `store.journal = "raft"`).
    pub fn groups(&self) -> Option<&Groups> {
        self.groups.as_ref()
    }

    /// Resolves when the node fails on its own: its supervision tree gave up beyond its
    /// restart limits, its HTTP server stopped, or its partition groups could not start. Says
    /// which.
    pub async fn failed(&mut self) -> String {
        let server = async {
            match self.edge.as_mut() {
                Some(edge) => {
                    let result = (&mut edge.server).await;
                    format!("the HTTP server stopped on its own: {result:?}")
                }
                None => std::future::pending().await,
            }
        };
        let groups = self.groups.clone();
        let groups_failed = async move {
            match groups {
                Some(groups) => groups.failed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.root.wait(None) => {
                "the supervision tree failed beyond its restart limits".to_owned()
            }
            reason = server => reason,
            reason = groups_failed => format!("the partition groups failed: {reason}"),
        }
    }

    /// Runs until `shutdown` hears SIGTERM or Ctrl-C (then stops gracefully; one that came while
    /// the node was starting counts), or until the node fails on its own (then stops what is
    /// left). `Ok` after a clean stop on a signal.
    pub async fn run_until_shutdown(
        mut self,
        mut shutdown: signal::Shutdown,
    ) -> Result<(), String> {
        let name = self.name.clone();
        let failure = tokio::select! {
            signal = shutdown.recv() => {
                tracing::info!(node = name, signal, "shutting down: no new connections, finishing in-flight requests");
                None
            }
            reason = self.failed() => {
                tracing::error!(node = name, reason, "shutting down");
                Some(reason)
            }
        };
        let stopped = self.stop().await;
        match failure {
            Some(reason) => Err(reason),
            None => stopped,
        }
    }

    /// Stops gracefully: no new connections, in-flight requests finished (for at most
    /// `edge.shutdown_grace_ms`), actors stopped, peers' log ends written, links closed, the
    /// store synced and closed. Fails if the store did not close cleanly (it recovers on the
    /// next start).
    pub async fn stop(mut self) -> Result<(), String> {
        let node = self.name.clone();
        if let Some(mut edge) = self.edge.take() {
            let _ = edge.stop.send(());
            if !edge.server.is_finished() {
                match tokio::time::timeout(self.shutdown_grace, &mut edge.server).await {
                    Ok(_) => tracing::info!(node, "in-flight requests finished"),
                    Err(_) => {
                        tracing::warn!(
                            node,
                            grace_ms = self.shutdown_grace.as_millis() as u64,
                            "in-flight requests did not finish in time; closing them"
                        );
                        edge.server.abort();
                    }
                }
            }
        }
        if let Err(error) = self
            .root
            .stop_and_wait(Some("node shutdown".into()), Some(TREE_STOP_TIMEOUT))
            .await
        {
            tracing::warn!(node, %error, "services did not stop in time");
        }
        if let Some(cluster) = &self.cluster {
            cluster.remember_peers();
            cluster.stop();
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(groups) = &self.groups {
            groups.shutdown().await;
        }
        match self.store.close().await {
            Ok(()) => {
                tracing::info!(node, "store closed; goodbye");
                Ok(())
            }
            Err(error) => Err(format!(
                "the store did not close cleanly ({error}); it recovers on the next start"
            )),
        }
    }

    /// Drops everything at once, as `kill -9` would: no request finished, nothing flushed,
    /// links cut (peers hear them close). What the store had not synced is lost only on a disk
    /// that loses it (a simulated one, crashed with it).
    pub fn crash(mut self) {
        tracing::warn!(node = %self.name, "node crashed (on purpose)");
        if let Some(edge) = self.edge.take() {
            edge.server.abort();
        }
        self.root.kill();
        if let Some(cluster) = &self.cluster {
            cluster.stop();
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(groups) = self.groups.take() {
            groups.crash();
        }
    }
}

/// Raises the open-file limit and shares it between the cluster port and the edge: the
/// edge's connection cap.
fn share_files(config: &NodeConfig) -> Result<usize, String> {
    let file_limit = match crate::net::raise_file_limit() {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(node = %config.node_name, %error, "cannot raise the open-file limit; keeping it");
            None
        }
    };
    let budget = crate::net::share_files(
        file_limit,
        config.edge.max_connections,
        config.cluster.file_budget(),
    )?;
    tracing::info!(
        node = %config.node_name,
        open_file_limit = file_limit,
        cluster_files = budget.cluster_files,
        "open files shared"
    );
    Ok(budget.edge_connections)
}

/// A node joining a replicated cluster: asks the members its config lists until an admin
/// admits it, then claims its data directory for the cluster and takes in its members.
async fn join(config: &NodeConfig, cluster: &Cluster) -> Result<(), String> {
    let me = cluster
        .member(&config.node_name)
        .ok_or("cluster.members: this node is not listed")?;
    let settings = shared_settings(config);
    let request = crate::replication::JoinRequest {
        name: config.node_name.clone(),
        address: me.address.clone(),
        edge: me.edge.clone(),
        settings,
    };
    let (id, members, draining) = crate::replication::wait_until_admitted(cluster, request).await?;
    crate::cluster::identity::claim_replicated(&config.data_dir, &config.node_name, id, settings)
        .map_err(|e| format!("{e:#}"))?;
    cluster.adopt_cluster_id(id);
    cluster.set_roster(members, draining);
    Ok(())
}
