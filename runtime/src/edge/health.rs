//! Health: `/health/live` (the process answers), `/health/ready` (it can take writes) and
//! `/health` (every check: store, disk, memory, cluster). 503 when unhealthy.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::HealthConfig;
use crate::store::{EventStore, StoreError};

const MEMORY_DEGRADED_BELOW: f64 = 0.10;
const MEMORY_UNHEALTHY_BELOW: f64 = 0.05;
/// A store that cannot make one tiny write durable within this is unhealthy.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The store probe's answer is reused for this long: health routes are public, and each probe
/// is a durable write.
const STORE_PROBE_REUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub status: HealthStatus,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthReport {
    /// The worst status of the checks.
    pub status: HealthStatus,
    pub checks: Vec<Check>,
}

impl HealthReport {
    fn of(checks: Vec<Check>) -> Self {
        let status = checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(HealthStatus::Healthy);
        Self { status, checks }
    }
}

impl IntoResponse for HealthReport {
    fn into_response(self) -> Response {
        let status = if self.status == HealthStatus::Unhealthy {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        (status, axum::Json(self)).into_response()
    }
}

/// Reports the cluster's state for `/health` (single node until the cluster module says more).
pub type ClusterCheck = Arc<dyn Fn() -> Check + Send + Sync>;

/// What the health routes look at.
#[derive(Clone)]
pub struct Health {
    pub store: EventStore,
    pub data_dir: PathBuf,
    /// Free-disk shares below which the node is degraded, then unhealthy.
    pub disk: HealthConfig,
    pub cluster: ClusterCheck,
    probes: Arc<AtomicU64>,
    /// The last store probe and when it ran. The lock also makes concurrent probes wait for
    /// one write instead of each making its own.
    last_probe: Arc<tokio::sync::Mutex<Option<(tokio::time::Instant, Check)>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Health {
    pub fn new(
        store: EventStore,
        data_dir: PathBuf,
        disk: HealthConfig,
        cluster: ClusterCheck,
    ) -> Self {
        Self {
            store,
            data_dir,
            disk,
            cluster,
            probes: Arc::new(AtomicU64::new(0)),
            last_probe: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Makes one tiny durable write (a checkpoint), as any command would; at most one a second.
    async fn store_check(&self) -> Check {
        let mut last = self.last_probe.lock().await;
        if let Some((at, check)) = last.as_ref()
            && at.elapsed() < STORE_PROBE_REUSE
        {
            return check.clone();
        }
        let probe = self.probes.fetch_add(1, Ordering::Relaxed);
        let write = async {
            // Under the disk's reserve the node refuses writes: it is not ready for them.
            self.store.ensure_room()?;
            self.store
                .save_checkpoint("playhouse.health-probe", probe)
                .await
        };
        let (status, message) = match tokio::time::timeout(STORE_PROBE_TIMEOUT, write).await {
            Ok(Err(error @ StoreError::DiskFull { .. })) => {
                (HealthStatus::Unhealthy, format!("writes refused: {error}"))
            }
            Ok(Ok(())) => (HealthStatus::Healthy, "durable write succeeded".to_owned()),
            Ok(Err(error)) => {
                // The details are for operators, not for whoever asks /health.
                tracing::error!(%error, "health probe: durable write failed");
                (
                    HealthStatus::Unhealthy,
                    "durable write failed; see the node's log".to_owned(),
                )
            }
            Err(_) => (
                HealthStatus::Unhealthy,
                format!(
                    "no durable write within {} ms",
                    STORE_PROBE_TIMEOUT.as_millis()
                ),
            ),
        };
        let check = Check {
            name: "store".into(),
            status,
            message,
        };
        *last = Some((tokio::time::Instant::now(), check.clone()));
        check
    }

    fn disk_check(&self) -> Check {
        let (status, message) = match rustix::fs::statvfs(&self.data_dir) {
            Ok(stats) if stats.f_blocks > 0 => {
                let free = stats.f_bavail as f64 / stats.f_blocks as f64;
                let free_bytes = stats.f_bavail.saturating_mul(stats.f_frsize);
                let free_mib = free_bytes / (1024 * 1024);
                let status = if free < self.disk.disk_unhealthy_below
                    || free_bytes < self.disk.disk_unhealthy_below_bytes
                {
                    HealthStatus::Unhealthy
                } else if free < self.disk.disk_degraded_below {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Healthy
                };
                (
                    status,
                    format!(
                        "{:.1}% free ({free_mib} MiB) on the volume of {}",
                        free * 100.0,
                        self.data_dir.display()
                    ),
                )
            }
            Ok(_) => (HealthStatus::Degraded, "volume reports no size".into()),
            Err(error) => (
                HealthStatus::Unhealthy,
                format!(
                    "cannot read free space of {}: {error}",
                    self.data_dir.display()
                ),
            ),
        };
        Check {
            name: "disk".into(),
            status,
            message,
        }
    }

    fn memory_check() -> Check {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| -> Option<f64> {
            meminfo
                .lines()
                .find(|line| line.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        let rss_kib = process_rss_kib();
        let (status, message) = match (field("MemAvailable:"), field("MemTotal:")) {
            (Some(available), Some(total)) if total > 0.0 => {
                let share = available / total;
                let status = if share < MEMORY_UNHEALTHY_BELOW {
                    HealthStatus::Unhealthy
                } else if share < MEMORY_DEGRADED_BELOW {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Healthy
                };
                (
                    status,
                    format!(
                        "{:.1}% of memory available; this process uses {} MiB",
                        share * 100.0,
                        rss_kib.unwrap_or(0) / 1024
                    ),
                )
            }
            _ => (
                HealthStatus::Healthy,
                "memory figures unavailable on this platform".into(),
            ),
        };
        Check {
            name: "memory".into(),
            status,
            message,
        }
    }
}

/// The resident set size of this process, in KiB (Linux).
pub fn process_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|line| line.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The process answers.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process is alive", body = HealthReport)))]
pub async fn live() -> HealthReport {
    HealthReport::of(Vec::new())
}

/// The node can take writes: its store makes a durable write, and its disk is not full.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready (healthy or degraded)", body = HealthReport),
        (status = 503, description = "Not ready", body = HealthReport)))]
pub async fn ready(State(health): State<Health>) -> HealthReport {
    HealthReport::of(vec![health.store_check().await, health.disk_check()])
}

/// Every check: store, disk (by default degraded under 20% free, unhealthy under 10%), memory,
/// cluster.
#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Healthy or degraded", body = HealthReport),
        (status = 503, description = "Unhealthy", body = HealthReport)))]
pub async fn full(State(health): State<Health>) -> HealthReport {
    HealthReport::of(vec![
        health.store_check().await,
        health.disk_check(),
        Health::memory_check(),
        (health.cluster)(),
    ])
}
