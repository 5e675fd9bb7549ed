//! Logs and metrics for a node: JSON or readable logs through tracing, and the Prometheus
//! recorder behind `/metrics`.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};
use crate::ops::{NodeRecorder, Series};

/// Installs the global log subscriber. `RUST_LOG`, when set, replaces the configured level.
/// Logs go to stderr, so that commands printing results (like `playhouse token`) keep stdout clean.
pub fn init_logging(config: &TelemetryConfig) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(quiet_dependencies(&config.level)))
        .map_err(|e| format!("telemetry.log_level `{}`: {e}", config.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

/// The configured level, with openraft held to errors unless the level names it: at `info`
/// it logs every step of every group's start and elections (about 30 lines per group, 64
/// groups per node), and at `warn` every failed heartbeat to a peer that is down (about 3,000
/// lines in the first seconds after a kill), which would bury the node's own log. Ours say
/// what matters: peers seen down, leaderships gained and lost, replicas brought back.
fn quiet_dependencies(level: &str) -> String {
    if level.contains("openraft") {
        level.to_owned()
    } else {
        format!("{level},openraft=error")
    }
}

/// Latency buckets (seconds) for every `*_seconds` histogram: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets for batch sizes.
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Installs the node's metrics recorder (Prometheus, with the operations page's series teed
/// off) and starts the Prometheus upkeep task on the current runtime.
pub fn install_metrics() -> Result<(PrometheusHandle, Series), String> {
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".into()), SIZE_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_operations".into()), SIZE_BUCKETS))
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = prometheus.handle();
    let series = Series::default();
    metrics::set_global_recorder(NodeRecorder::new(prometheus, series.clone()))
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    crate::metrics::describe();
    // The process's own figures (CPU seconds, resident memory, open files, threads), as every
    // Prometheus client gives them; read from /proc every upkeep, so at most 5 s old.
    let process = metrics_process::Collector::default();
    process.describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            process.collect();
            upkeep.run_upkeep();
        }
    });
    Ok((handle, series))
}
