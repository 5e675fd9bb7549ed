//! Running a node: telemetry, store, supervision tree, HTTP edge; then a graceful shutdown.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use playhouse_runtime::bus::Bus;
use playhouse_runtime::cluster::{Cluster, MemberStatus};
use playhouse_runtime::config::NodeConfig;
use playhouse_runtime::edge::admin_cluster::ClusterInfo;
use playhouse_runtime::edge::health::{Check, HealthStatus};
use playhouse_runtime::edge::server::{self, ServerSettings};
use playhouse_runtime::edge::{EdgeSettings, Guard, Health, JwtAuth, Limiter};
use playhouse_runtime::ops::{Ops, OverviewSource};
use playhouse_runtime::store::{EventStore, GroupCommitOptions, StoreOptions};
use playhouse_runtime::supervision::{Backoff, Intensity, Strategy, Supervisor, SupervisorSpec};
use playhouse_runtime::telemetry;

/// How long the supervision tree gets to stop after the edge has drained.
const TREE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(config: NodeConfig) -> anyhow::Result<ExitCode> {
    crate::services::check(&config)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config))
}

/// `playhouse projections rebuild`: on a stopped node's store, empties projection `name` and
/// applies the whole log to it again.
pub fn rebuild_projection(config: NodeConfig, name: &str) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let store = open_store(&config).await.context(
                "is the node still running? Stop it first, or use POST /admin/projections/{name}/rebuild",
            )?;
            let bus = Bus::new(store.clone());
            let hosted = crate::services::host(&config, &store, &bus, None)?;
            let Some(projection) = hosted.projections.iter().find(|p| p.name() == name) else {
                let known: Vec<&str> = hosted.projections.iter().map(|p| p.name()).collect();
                anyhow::bail!(
                    "no projection named `{name}` in this node's services (known: {})",
                    known.join(", ")
                );
            };
            let started = std::time::Instant::now();
            let events = playhouse_runtime::bus::rebuild_offline(&store, projection.clone())
                .await
                .with_context(|| format!("rebuilding {name}"))?;
            store.close().await.context("closing the store")?;
            println!(
                "{name}: rebuilt from {events} log events in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        })
}

/// Checks that the data dir is this node's, then opens its store.
async fn open_store(config: &NodeConfig) -> anyhow::Result<EventStore> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("data_dir: cannot create {}", config.data_dir.display()))?;
    let placement = playhouse_runtime::placement::Placement::new(&config.cluster);
    playhouse_runtime::cluster::identity::claim(
        &config.data_dir,
        &config.node_name,
        placement.fingerprint(),
    )?;
    let store_path = config.data_dir.join("events.redb");
    EventStore::open(
        &store_path,
        StoreOptions {
            group_commit: GroupCommitOptions {
                max_batch_events: config.store.max_batch_events,
                max_linger: config.store.max_linger,
                ..GroupCommitOptions::default()
            },
            cache_size_bytes: Some(config.store.cache_bytes),
        },
    )
    .await
    .with_context(|| format!("opening the store {}", store_path.display()))
}

async fn serve(config: NodeConfig) -> anyhow::Result<ExitCode> {
    telemetry::init_logging(&config.telemetry).map_err(anyhow::Error::msg)?;
    let (metrics, series) = telemetry::install_metrics().map_err(anyhow::Error::msg)?;
    let node = config.node_name.as_str();
    tracing::info!(
        node,
        config = %config.source.display(),
        environment = ?config.environment,
        data_dir = %config.data_dir.display(),
        services = ?config.services,
        auth_key = %config.auth.key_source,
        "starting node"
    );

    let file_limit = match playhouse_runtime::net::raise_file_limit() {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(node, %error, "cannot raise the open-file limit; keeping it");
            None
        }
    };
    // The cluster port's share is taken out first, so that neither port can run the other out
    // of file descriptors.
    let files = playhouse_runtime::net::share_files(
        file_limit,
        config.edge.max_connections,
        config.cluster.file_budget(),
    )
    .map_err(anyhow::Error::msg)?;

    let store = open_store(&config).await?;
    // Before any saga runs: a store from before the finished-saga counters gets them filled.
    if let Some(counted) = playhouse_runtime::saga::fill_saga_counts(&store)
        .await
        .context("counting the finished sagas in the store")?
    {
        tracing::info!(
            node,
            counted,
            "finished sagas counted for the operations page"
        );
    }

    if playhouse_runtime::store::FORGETS_COMMAND_IDS {
        tracing::error!(
            node,
            "this build forgets command ids (feature chaos-forget-command-ids): retried commands apply again; for checker experiments only"
        );
    }
    // With peers, the cluster is made first, so that the services' handles route through it
    // and register what other nodes may call; its links start once the services run.
    let cluster = config.cluster.has_peers().then(|| {
        Cluster::new(
            node,
            &config.cluster,
            store.clone(),
            &config.data_dir,
            playhouse_runtime::cluster::transport::tcp(node, &config.cluster),
        )
    });
    let bus = Bus::new(store.clone());
    let hosted = crate::services::host(&config, &store, &bus, cluster.clone())?;
    let ops = Ops::start(node, series, bus.clone(), hosted.services_of_kinds.clone());
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
    .context("starting the services")?;
    if let Some(cluster) = &cluster {
        playhouse_runtime::bus::gather::serve(cluster, &bus);
        cluster.serve_ops(&ops);
        cluster.start().await.map_err(anyhow::Error::msg)?;
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
    guard.spawn_housekeeping();
    let cluster_check = {
        let cluster = cluster.clone();
        Arc::new(move || cluster_health(cluster.as_ref()))
    };
    let health = Health::new(
        store.clone(),
        config.data_dir.clone(),
        config.health,
        cluster_check,
    );
    let (app, _openapi) = playhouse_runtime::edge::assemble(
        &EdgeSettings {
            node_name: config.node_name.clone(),
            body_limit_bytes: config.edge.body_limit_bytes,
            request_timeout: config.edge.request_timeout,
        },
        hosted
            .routes
            .merge(playhouse_runtime::edge::admin::routes(bus.clone()))
            .merge(playhouse_runtime::edge::admin_cluster::routes(
                ClusterInfo {
                    node: config.node_name.clone(),
                    services: config.services.clone(),
                    cluster: cluster.clone(),
                },
            ))
            .merge(playhouse_runtime::edge::ui::admin_routes(
                OverviewSource::new(ops, cluster.clone(), config.services.clone()),
            )),
        guard,
        health,
        metrics,
    );

    let max_connections = files.edge_connections;
    tracing::info!(
        node,
        max_connections,
        configured = config.edge.max_connections,
        open_file_limit = file_limit,
        cluster_files = files.cluster_files,
        header_read_timeout_ms = config.edge.header_read_timeout.as_millis() as u64,
        keep_alive_timeout_ms = config.edge.keep_alive_timeout.as_millis() as u64,
        "edge connection limits"
    );
    let listener = server::bind(config.edge.listen)
        .with_context(|| format!("edge.listen: cannot listen on {}", config.edge.listen))?;
    let address = listener.local_addr()?;
    // With `edge.listen` on port 0 this line is the only place the port shows; the test
    // harness (tests/support) reads it, so keep its wording.
    tracing::info!(node, %address, "HTTP edge listening on http://{address}");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(server::serve(
        listener,
        app,
        ServerSettings {
            max_connections,
            header_read_timeout: config.edge.header_read_timeout,
            keep_alive_timeout: config.edge.keep_alive_timeout,
        },
        async {
            let _ = stopped.await;
        },
    ));

    let mut exit = ExitCode::SUCCESS;
    tokio::select! {
        signal = crate::shutdown::signal() => {
            tracing::info!(node, signal, "shutting down: no new connections, finishing in-flight requests");
        }
        _ = root.wait(None) => {
            tracing::error!(node, "the supervision tree failed beyond its restart limits; shutting down");
            exit = ExitCode::FAILURE;
        }
        result = &mut server => {
            tracing::error!(node, ?result, "the HTTP server stopped on its own; shutting down");
            exit = ExitCode::FAILURE;
        }
    }
    let _ = stop.send(());
    if !server.is_finished() {
        match tokio::time::timeout(config.edge.shutdown_grace, &mut server).await {
            Ok(_) => tracing::info!(node, "in-flight requests finished"),
            Err(_) => {
                tracing::warn!(
                    node,
                    grace_ms = config.edge.shutdown_grace.as_millis() as u64,
                    "in-flight requests did not finish in time; closing them"
                );
                server.abort();
            }
        }
    }
    if let Err(error) = root
        .stop_and_wait(Some("node shutdown".into()), Some(TREE_STOP_TIMEOUT))
        .await
    {
        tracing::warn!(node, %error, "services did not stop in time");
    }
    if let Some(cluster) = &cluster {
        cluster.remember_peers();
    }
    match store.close().await {
        Ok(()) => tracing::info!(node, "store closed; goodbye"),
        Err(error) => {
            tracing::error!(node, %error, "store did not close cleanly; it recovers on next start");
            exit = ExitCode::FAILURE;
        }
    }
    Ok(exit)
}

/// The cluster's part of `/health`: unhealthy when this node may not serve its partitions,
/// degraded while a peer is not up (its partitions answer 503), healthy otherwise.
fn cluster_health(cluster: Option<&Cluster>) -> Check {
    let Some(cluster) = cluster else {
        return Check {
            name: "cluster".into(),
            status: HealthStatus::Healthy,
            message: "single node: no peers configured".into(),
        };
    };
    if let Err(reason) = cluster.serving() {
        return Check {
            name: "cluster".into(),
            status: HealthStatus::Unhealthy,
            message: format!("not serving this node's partitions: {reason}"),
        };
    }
    let members = cluster.members();
    let not_up: Vec<String> = members
        .iter()
        .filter(|member| member.status != MemberStatus::Up)
        .map(|member| format!("{} {}", member.name, member.status.as_str()))
        .collect();
    Check {
        name: "cluster".into(),
        status: if not_up.is_empty() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        },
        message: if not_up.is_empty() {
            format!("all {} peers up", members.len())
        } else {
            format!(
                "{} of {} peers not up: {}",
                not_up.len(),
                members.len(),
                not_up.join(", ")
            )
        },
    }
}
