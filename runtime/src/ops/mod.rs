//! The operations view behind `/ui`: what each node reports about itself (traffic, commands,
//! store, sagas, projections, and their recent history), and the cluster-wide overview the
//! page polls, gathered from every member that is up.
//!
//! - `histogram.rs`: log-bucketed atomic histograms, for percentiles over a window;
//! - `series.rs`: the node's metrics recorder, which tees the series the page needs off the
//!   Prometheus recorder;
//! - `sampler.rs`: rates and percentiles from those series, every 2 s, kept for 5 minutes;
//! - `gather.rs`: a member's report served to, and gathered by, the other members;
//! - `overview.rs`: the overview the page shows (members, partitions, reports).

mod gather;
mod histogram;
mod overview;
mod sampler;
mod series;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use gather::{NodeReport, gather};
pub use histogram::{Buckets, LogHistogram};
pub use overview::{MemberOverview, Overview, OverviewSource, ServicePartitions, members_of};
pub use sampler::{AggregateStats, Live, SAMPLE_EVERY, Sample, Sampler, StoreStats};
pub use series::{NodeRecorder, Series, TRACKED};

use crate::bus::Bus;
use crate::replication::{Groups, PartitionReport};
use crate::saga::{SagaCounts, saga_counts};

/// A projection's progress, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProjectionLag {
    pub name: String,
    /// The last log position it applied (absent before the first).
    pub applied: Option<u64>,
    /// Events in this node's log it has not applied yet.
    pub lag: u64,
}

/// What one node reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeStats {
    pub node: String,
    pub uptime_s: u64,
    /// The position the next event in this node's log will get.
    pub log_end: u64,
    /// The last 10 s; absent until the sampler has two readings (2 s after start).
    pub live: Option<Live>,
    /// Chart points newer than the `since` asked for, oldest first.
    pub history: Vec<Sample>,
    pub sagas: SagaCounts,
    pub projections: Vec<ProjectionLag>,
    /// Why this node does not serve its partitions (absent while it does).
    pub not_serving_reason: Option<String>,
    /// With replicated partitions, the groups this node leads, with each replica's lag as
    /// only their leader knows it (empty otherwise).
    pub replication: Vec<PartitionReport>,
    /// Moves of replicas under way in the groups this node leads (a member joined, is being
    /// drained or was removed).
    #[serde(default)]
    pub moves: Vec<crate::replication::MoveReport>,
}

/// The source of this node's report. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ops {
    node: String,
    started: Instant,
    sampler: Sampler,
    bus: Bus,
    /// Aggregate kind -> the service hosting it.
    services_of_kinds: Arc<BTreeMap<String, String>>,
    /// The node's partition groups, with replication.
    groups: Option<Groups>,
}

impl Ops {
    /// This source reporting the partition groups `groups` leads.
    pub fn with_groups(self, groups: Option<Groups>) -> Self {
        Self { groups, ..self }
    }

    /// Where this node's log ends now.
    pub fn log_end(&self) -> u64 {
        *self.bus.store().watch_log_end().borrow()
    }

    /// The report of node `node`, sampling `series` (start it with [`Ops::spawn_sampler`]).
    /// `services_of_kinds` names the service of each aggregate kind the node hosts.
    pub fn new(
        node: &str,
        series: Series,
        bus: Bus,
        services_of_kinds: BTreeMap<String, String>,
    ) -> Self {
        let sampler = Sampler::new(series);
        Self {
            node: node.to_owned(),
            started: Instant::now(),
            sampler,
            bus,
            services_of_kinds: Arc::new(services_of_kinds),
            groups: None,
        }
    }

    /// Samples the series every 2 s on the current runtime, until the task is aborted.
    pub fn spawn_sampler(&self) -> tokio::task::JoinHandle<()> {
        self.sampler.spawn()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// This node's report, with the chart points that ended after `since_ms` (Unix ms).
    pub async fn report(&self, since_ms: u64) -> Result<NodeStats, String> {
        let log_end = *self.bus.store().watch_log_end().borrow();
        let projections = self
            .bus
            .projections()
            .into_iter()
            .map(|(name, applied)| ProjectionLag {
                name: name.to_owned(),
                applied,
                lag: log_end.saturating_sub(applied.map_or(0, |p| p + 1)),
            })
            .collect();
        // Up to thousands of reads from the store's file: off the async workers.
        let store = self.bus.store().clone();
        let sagas: SagaCounts = self
            .bus
            .store()
            .blocking("counting sagas", move || saga_counts(&store))
            .await
            .map_err(|error| format!("reading the saga counts stopped: {error}"))?
            .map_err(|error| {
                format!(
                    "the saga tables could not be read ({error}); the node's log says more, \
                     and /admin/sagas reads the same tables"
                )
            })?;
        let mut live = self.sampler.live();
        for kind in live.iter_mut().flat_map(|live| live.aggregates.iter_mut()) {
            kind.service = self.services_of_kinds.get(&kind.kind).cloned();
        }
        Ok(NodeStats {
            node: self.node.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            log_end,
            live,
            history: self.sampler.samples_since(since_ms),
            sagas,
            projections,
            not_serving_reason: None,
            replication: self
                .groups
                .iter()
                .flat_map(Groups::report)
                .filter(|group| group.role == "leader")
                .collect(),
            moves: self.groups.iter().flat_map(Groups::moves).collect(),
        })
    }
}
