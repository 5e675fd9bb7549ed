//! The node's metrics recorder: Prometheus for `/metrics`, and beside it the few series the
//! operations page reads, kept where the sampler can read them without rendering and parsing
//! the Prometheus text.
//!
//! Every metric goes to Prometheus. A metric whose name is in [`TRACKED`] also goes to an
//! atomic of its own here (a counter, a gauge, or a [`LogHistogram`]), keyed by name and
//! labels: recording it costs one more atomic add.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName};
use metrics::{Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::histogram::{Buckets, LogHistogram};
use crate::metrics as names;

/// The metrics the operations page shows.
pub const TRACKED: &[&str] = &[
    names::HTTP_REQUESTS,
    names::HTTP_DURATION,
    names::COMMANDS,
    names::COMMAND_SECONDS,
    names::LIVE_ACTORS,
    names::STORE_COMMITS,
    names::STORE_BATCH_OPS,
    names::STORE_BATCH_EVENTS,
    names::STORE_COMMIT_SECONDS,
];

/// The tracked series, by name and labels. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Series {
    inner: Arc<Registered>,
}

#[derive(Debug, Default)]
struct Registered {
    counters: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    gauges: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    histograms: RwLock<HashMap<Key, Arc<LogHistogram>>>,
}

/// One series' labels, as (name, value) pairs.
pub type Labels = Vec<(String, String)>;

fn labels_of(key: &Key) -> Labels {
    key.labels()
        .map(|label| (label.key().to_owned(), label.value().to_owned()))
        .collect()
}

/// Finds or makes the atomic of `key` in `map`: a read lock on the hot path (the series
/// exists), the write lock once per series.
fn entry<T: Default>(map: &RwLock<HashMap<Key, Arc<T>>>, key: &Key) -> Arc<T> {
    if let Some(found) = read(map).get(key) {
        return found.clone();
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.clone())
        .or_default()
        .clone()
}

/// The map, also after a panic elsewhere while it was locked: it is only ever inserted into,
/// so it is whole, and this runs inside every metric call of the process, which must not fail.
fn read<T>(map: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    map.read().unwrap_or_else(PoisonError::into_inner)
}

impl Series {
    fn tracks(key: &Key) -> bool {
        TRACKED.contains(&key.name())
    }

    /// Every counter named `name`: its labels and its count.
    pub fn counters(&self, name: &str) -> Vec<(Labels, u64)> {
        let counters = read(&self.inner.counters);
        counters
            .iter()
            .filter(|(key, _)| key.name() == name)
            .map(|(key, value)| (labels_of(key), value.load(Ordering::Relaxed)))
            .collect()
    }

    /// Every gauge named `name`: its labels and its value.
    pub fn gauges(&self, name: &str) -> Vec<(Labels, f64)> {
        let gauges = read(&self.inner.gauges);
        gauges
            .iter()
            .filter(|(key, _)| key.name() == name)
            .map(|(key, value)| {
                (
                    labels_of(key),
                    f64::from_bits(value.load(Ordering::Relaxed)),
                )
            })
            .collect()
    }

    /// Every histogram named `name`: its labels and a reading of its buckets.
    pub fn histograms(&self, name: &str) -> Vec<(Labels, Buckets)> {
        let histograms = read(&self.inner.histograms);
        histograms
            .iter()
            .filter(|(key, _)| key.name() == name)
            .map(|(key, histogram)| (labels_of(key), histogram.read()))
            .collect()
    }
}

/// The node's global recorder: Prometheus, with the tracked series teed off into [`Series`].
#[derive(Debug)]
pub struct NodeRecorder {
    prometheus: PrometheusRecorder,
    series: Series,
}

impl NodeRecorder {
    pub fn new(prometheus: PrometheusRecorder, series: Series) -> Self {
        Self { prometheus, series }
    }
}

/// Both sides of a teed metric.
#[derive(Debug)]
struct Tee<A, B>(A, B);

impl CounterFn for Tee<Counter, Arc<AtomicU64>> {
    fn increment(&self, value: u64) {
        self.0.increment(value);
        self.1.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.absolute(value);
        self.1.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Tee<Gauge, Arc<AtomicU64>> {
    fn increment(&self, value: f64) {
        self.0.increment(value);
        GaugeFn::increment(&*self.1, value);
    }

    fn decrement(&self, value: f64) {
        self.0.decrement(value);
        GaugeFn::decrement(&*self.1, value);
    }

    fn set(&self, value: f64) {
        self.0.set(value);
        GaugeFn::set(&*self.1, value);
    }
}

impl HistogramFn for Tee<Histogram, Arc<LogHistogram>> {
    fn record(&self, value: f64) {
        self.0.record(value);
        self.1.record(value);
    }
}

impl Recorder for NodeRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let exported = self.prometheus.register_counter(key, metadata);
        if !Series::tracks(key) {
            return exported;
        }
        let kept = entry(&self.series.inner.counters, key);
        Counter::from_arc(Arc::new(Tee(exported, kept)))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        let exported = self.prometheus.register_gauge(key, metadata);
        if !Series::tracks(key) {
            return exported;
        }
        let kept = entry(&self.series.inner.gauges, key);
        Gauge::from_arc(Arc::new(Tee(exported, kept)))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let exported = self.prometheus.register_histogram(key, metadata);
        if !Series::tracks(key) {
            return exported;
        }
        let kept = entry(&self.series.inner.histograms, key);
        Histogram::from_arc(Arc::new(Tee(exported, kept)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn tracked_metrics_reach_both_sides_and_others_only_prometheus() {
        let prometheus = PrometheusBuilder::new().build_recorder();
        let handle = prometheus.handle();
        let series = Series::default();
        let recorder = NodeRecorder::new(prometheus, series.clone());
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(names::COMMANDS, "aggregate" => "account", "outcome" => "ok")
                .increment(2);
            metrics::counter!(names::COMMANDS, "aggregate" => "account", "outcome" => "ok")
                .increment(1);
            metrics::gauge!(names::LIVE_ACTORS, "aggregate" => "account").set(7.0);
            metrics::histogram!(names::STORE_COMMIT_SECONDS).record(0.004);
            metrics::counter!(names::SAGAS, "kind" => "transfer").increment(1);
        });
        let commands = series.counters(names::COMMANDS);
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].1, 3);
        assert!(commands[0].0.contains(&("outcome".into(), "ok".into())));
        assert_eq!(series.gauges(names::LIVE_ACTORS)[0].1, 7.0);
        assert_eq!(
            series.histograms(names::STORE_COMMIT_SECONDS)[0].1.count(),
            1
        );
        assert!(series.counters(names::SAGAS).is_empty(), "not tracked");
        let text = handle.render();
        assert!(text.contains("playhouse_commands_total{aggregate=\"account\",outcome=\"ok\"} 3"));
        assert!(
            text.contains("playhouse_sagas_total{kind=\"transfer\"} 1"),
            "{text}"
        );
    }
}
