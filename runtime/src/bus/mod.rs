//! The event bus: projections (read models) fed by durable subscriptions to the global log.
//!
//! Each projection has a runner actor under its service's supervisor. The runner reads the
//! log after its checkpoint, in log order, applies a batch, and commits the projection's
//! table changes together with the new checkpoint in one durable transaction; then it waits
//! for the log to grow. Delivery is at least once (a crash re-delivers the batch that was not
//! committed), and since changes and checkpoint commit together, nothing is counted twice.
//!
//! Reads are eventually consistent; a query can wait, bounded, for a projection to pass a
//! command's position ([`Bus::wait_for`]) to read its own write. In a cluster, a list is
//! gathered from every member's read models ([`gather`]).

pub mod gather;
mod projection;
mod runner;

#[cfg(test)]
mod tests;

pub use projection::{
    Delivered, Projection, ProjectionError, Tables, check_projections, decode, decode_entries, key,
    read_page, scan_page, scan_page_where,
};
pub use runner::rebuild_offline;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::rpc::CallResult;
use tokio::sync::watch;

use crate::store::EventStore;
use crate::supervision::{ChildSpec, Current, Restart};
use runner::{Runner, RunnerArgs, RunnerMsg};

/// A projection has not reached the position a query asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("projection {projection} has applied the log up to {applied:?}, not yet {wanted}")]
pub struct Behind {
    pub projection: &'static str,
    pub applied: Option<u64>,
    pub wanted: u64,
}

/// Each projection's last applied log position, as its runner reports it.
type Progress = HashMap<&'static str, watch::Sender<Option<u64>>>;

/// Which streams' rows a node lists (see [`Bus::list_only`]).
type StreamsListed = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The node's bus: where projections report their progress. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    store: EventStore,
    progress: Arc<Mutex<Progress>>,
    /// Each projection's runner, by projection name.
    runners: Arc<Mutex<HashMap<&'static str, Current<RunnerMsg>>>>,
    /// Each projection started here, by name: which stream keeps a row up to date.
    started: Arc<Mutex<HashMap<&'static str, Arc<dyn Projection>>>>,
    /// The streams whose rows this node lists, when not all (set once, at start).
    listing: Arc<std::sync::OnceLock<StreamsListed>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            progress: Arc::default(),
            runners: Arc::default(),
            started: Arc::default(),
            listing: Arc::default(),
        }
    }

    /// Lists only the rows kept up to date by streams `streams` keeps (rows whose
    /// [`Projection::stream_of`] names a stream), not every row: with replicated partitions,
    /// the streams of the partitions this node votes in.
    pub fn list_only(&self, streams: impl Fn(&str) -> bool + Send + Sync + 'static) {
        if self.listing.set(Arc::new(streams)).is_err() {
            tracing::warn!("the streams a node lists were set twice; the first setting stays");
        }
    }

    /// Whether this node lists the row under `key` of `projection`'s table named like it.
    pub(crate) fn lister(&self, projection: &str) -> impl Fn(&[u8]) -> bool + use<> {
        let started = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(projection)
            .cloned();
        let filter = started.zip(self.listing.get().cloned());
        let table = projection.to_owned();
        move |key| {
            filter.as_ref().is_none_or(|(projection, streams)| {
                projection
                    .stream_of(&table, key)
                    .is_none_or(|stream| streams(&stream))
            })
        }
    }

    fn progress(&self, name: &'static str) -> watch::Sender<Option<u64>> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name)
            .or_insert_with(|| watch::channel(self.store.checkpoint(name).ok().flatten()).0)
            .clone()
    }

    /// A supervisor child that runs `projection` (restarted, from its checkpoint, if it fails).
    pub fn runner(&self, projection: Arc<dyn Projection>) -> ChildSpec {
        let (store, progress) = (self.store.clone(), self.progress(projection.name()));
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(projection.name(), projection.clone());
        let current = Current::default();
        self.runners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(projection.name(), current.clone());
        ChildSpec::published(
            format!("projection-{}", projection.name()),
            Restart::Permanent,
            current,
            move || {
                (
                    Runner,
                    RunnerArgs {
                        projection: projection.clone(),
                        store: store.clone(),
                        progress: progress.clone(),
                    },
                )
            },
        )
    }

    /// The last log position `projection` has applied, if any.
    pub fn applied(&self, projection: &'static str) -> Option<u64> {
        *self.progress(projection).borrow()
    }

    /// Waits until `projection` has applied the log up to `position`, for at most `timeout`.
    pub async fn wait_for(
        &self,
        projection: &'static str,
        position: u64,
        timeout: Duration,
    ) -> Result<(), Behind> {
        let mut progress = self.progress(projection).subscribe();
        let reached = tokio::time::timeout(
            timeout,
            progress.wait_for(|applied| applied.is_some_and(|applied| applied >= position)),
        )
        .await
        .is_ok_and(|waited| waited.is_ok());
        match reached {
            true => Ok(()),
            false => Err(Behind {
                projection,
                applied: *progress.borrow(),
                wanted: position,
            }),
        }
    }

    /// Empties `projection`'s tables and has its runner apply the log again from position 0.
    pub async fn rebuild(&self, projection: &str) -> Result<(), String> {
        let runner = self
            .runners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(projection)
            .and_then(Current::get)
            .ok_or_else(|| format!("no projection named `{projection}` runs on this node"))?;
        match runner
            .call(RunnerMsg::Rebuild, Some(Duration::from_secs(10)))
            .await
        {
            Ok(CallResult::Success(result)) => result,
            Ok(_) => Err(format!("projection `{projection}` did not answer")),
            Err(error) => Err(format!("projection `{projection}`: {error}")),
        }
    }

    /// Every projection this node has started, with the last position each has applied.
    pub fn projections(&self) -> Vec<(&'static str, Option<u64>)> {
        let progress = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<_> = progress
            .iter()
            .map(|(name, sender)| (*name, *sender.borrow()))
            .collect();
        all.sort_unstable();
        all
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// A consistent view of every read-model table, as last committed.
    pub fn read_models(&self) -> Result<crate::store::ReadModelSnapshot, ProjectionError> {
        Ok(self.store.read_models()?)
    }
}
