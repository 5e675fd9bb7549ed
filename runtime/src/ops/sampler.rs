//! Rates and percentiles over time, from the tracked series: every [`SAMPLE_EVERY`] the
//! sampler reads them, keeps the last readings for the live figures (the last
//! [`WINDOW_READINGS`] readings, 10 s) and one [`Sample`] per period for the charts (5 min).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::histogram::Buckets;
use super::series::{Labels, Series};
use crate::metrics as names;

/// How often the sampler reads the series.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept for the charts: 5 minutes.
pub const HISTORY_SAMPLES: usize = 150;
/// Readings the live figures span (the newest and the ones before it): 10 s.
pub const WINDOW_READINGS: usize = 6;

/// The cumulative counts at one moment.
#[derive(Debug, Clone, Default)]
struct Reading {
    /// When, as a label: Unix milliseconds, never going back.
    at_ms: u64,
    /// When, for rates: milliseconds since the sampler started, by the monotonic clock (the
    /// wall clock may be stepped).
    monotonic_ms: u64,
    requests: u64,
    client_errors: u64,
    server_errors: u64,
    latency: Buckets,
    /// By aggregate kind.
    aggregates: BTreeMap<String, AggregateReading>,
    commits: u64,
    batch_ops: Buckets,
    batch_events: Buckets,
    commit_seconds: Buckets,
}

#[derive(Debug, Clone, Default)]
struct AggregateReading {
    outcomes: BTreeMap<String, u64>,
    latency: Buckets,
    live: f64,
}

fn label<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels
        .iter()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value.as_str())
}

/// Requests for the operations page itself (its files, its polls): left out of the traffic it
/// shows, which would otherwise be the page watching itself on a quiet node.
fn is_the_pages_own(labels: &Labels) -> bool {
    let route = label(labels, "route");
    route == "/admin/overview" || route == "/ui" || route.starts_with("/ui/")
}

impl Reading {
    fn take(series: &Series, at_ms: u64, monotonic_ms: u64) -> Self {
        let mut reading = Reading {
            at_ms,
            monotonic_ms,
            ..Reading::default()
        };
        for (labels, count) in series.counters(names::HTTP_REQUESTS) {
            if is_the_pages_own(&labels) {
                continue;
            }
            reading.requests += count;
            match label(&labels, "status").as_bytes().first() {
                Some(b'4') => reading.client_errors += count,
                Some(b'5') => reading.server_errors += count,
                _ => {}
            }
        }
        for (labels, buckets) in series.histograms(names::HTTP_DURATION) {
            if !is_the_pages_own(&labels) {
                reading.latency.add(&buckets);
            }
        }
        for (labels, count) in series.counters(names::COMMANDS) {
            let kind = reading
                .aggregates
                .entry(label(&labels, "aggregate").to_owned())
                .or_default();
            *kind
                .outcomes
                .entry(label(&labels, "outcome").to_owned())
                .or_default() += count;
        }
        for (labels, buckets) in series.histograms(names::COMMAND_SECONDS) {
            let kind = reading
                .aggregates
                .entry(label(&labels, "aggregate").to_owned())
                .or_default();
            kind.latency.add(&buckets);
        }
        for (labels, live) in series.gauges(names::LIVE_ACTORS) {
            let kind = reading
                .aggregates
                .entry(label(&labels, "aggregate").to_owned())
                .or_default();
            kind.live += live;
        }
        reading.commits = series
            .counters(names::STORE_COMMITS)
            .iter()
            .map(|(_, count)| count)
            .sum();
        for (_, buckets) in series.histograms(names::STORE_BATCH_OPS) {
            reading.batch_ops.add(&buckets);
        }
        for (_, buckets) in series.histograms(names::STORE_BATCH_EVENTS) {
            reading.batch_events.add(&buckets);
        }
        for (_, buckets) in series.histograms(names::STORE_COMMIT_SECONDS) {
            reading.commit_seconds.add(&buckets);
        }
        reading
    }
}

/// One chart point: the period that ended at `at_ms` (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    pub at_ms: u64,
    pub requests_per_s: f64,
    /// 4xx answers per second.
    pub client_errors_per_s: f64,
    /// 5xx answers per second.
    pub server_errors_per_s: f64,
    /// HTTP latency percentiles, absent when no request ended in the period.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub commands_per_s: f64,
    pub commits_per_s: f64,
}

/// An aggregate kind's figures over the live window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AggregateStats {
    pub kind: String,
    /// The service hosting the kind (absent for a kind no service of this node declares).
    pub service: Option<String>,
    /// Live aggregates in memory now.
    pub live: u64,
    pub commands_per_s: f64,
    /// Commands per second by outcome: ok, duplicate, rejected, conflict, error.
    pub outcomes: BTreeMap<String, f64>,
    /// Command latency percentiles (decide, durable append, apply), absent when none ran.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The store's figures over the live window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoreStats {
    /// Durable transactions (group commits) per second.
    pub commits_per_s: f64,
    /// Mean write operations (appends, projection batches) per group commit: the batch size.
    pub operations_per_commit: Option<f64>,
    /// Mean events per group commit (projection batches carry none).
    pub events_per_commit: Option<f64>,
    /// Time to write and fsync one group commit.
    pub fsync_p50_ms: Option<f64>,
    pub fsync_p99_ms: Option<f64>,
}

/// The live figures: the last 10 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Live {
    /// The window's length, in seconds (shorter just after start).
    pub window_s: f64,
    pub http: Sample,
    pub aggregates: Vec<AggregateStats>,
    pub store: StoreStats,
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn millis(seconds: Option<f64>) -> Option<f64> {
    seconds.map(|s| s * 1000.0)
}

/// Seconds between two readings, by the monotonic clock.
fn seconds_between(earlier: &Reading, later: &Reading) -> f64 {
    later.monotonic_ms.saturating_sub(earlier.monotonic_ms) as f64 / 1000.0
}

fn sample(earlier: &Reading, later: &Reading) -> Sample {
    let seconds = seconds_between(earlier, later);
    let latency = later.latency.since(&earlier.latency);
    let commands = |reading: &Reading| -> u64 {
        reading
            .aggregates
            .values()
            .flat_map(|kind| kind.outcomes.values())
            .sum()
    };
    Sample {
        at_ms: later.at_ms,
        requests_per_s: per_second(later.requests.saturating_sub(earlier.requests), seconds),
        client_errors_per_s: per_second(
            later.client_errors.saturating_sub(earlier.client_errors),
            seconds,
        ),
        server_errors_per_s: per_second(
            later.server_errors.saturating_sub(earlier.server_errors),
            seconds,
        ),
        p50_ms: millis(latency.quantile(0.5)),
        p99_ms: millis(latency.quantile(0.99)),
        commands_per_s: per_second(commands(later).saturating_sub(commands(earlier)), seconds),
        commits_per_s: per_second(later.commits.saturating_sub(earlier.commits), seconds),
    }
}

fn live(earlier: &Reading, later: &Reading) -> Live {
    let seconds = seconds_between(earlier, later);
    let empty = AggregateReading::default();
    let aggregates = later
        .aggregates
        .iter()
        .map(|(kind, now)| {
            let before = earlier.aggregates.get(kind).unwrap_or(&empty);
            let outcomes: BTreeMap<String, f64> = now
                .outcomes
                .iter()
                .map(|(outcome, count)| {
                    let before = before.outcomes.get(outcome).copied().unwrap_or(0);
                    (
                        outcome.clone(),
                        per_second(count.saturating_sub(before), seconds),
                    )
                })
                .collect();
            let latency = now.latency.since(&before.latency);
            AggregateStats {
                kind: kind.clone(),
                service: None,
                live: now.live.max(0.0) as u64,
                commands_per_s: outcomes.values().sum(),
                outcomes,
                p50_ms: millis(latency.quantile(0.5)),
                p99_ms: millis(latency.quantile(0.99)),
            }
        })
        .collect();
    let fsync = later.commit_seconds.since(&earlier.commit_seconds);
    Live {
        window_s: seconds,
        http: sample(earlier, later),
        aggregates,
        store: StoreStats {
            commits_per_s: per_second(later.commits.saturating_sub(earlier.commits), seconds),
            operations_per_commit: later.batch_ops.since(&earlier.batch_ops).mean(),
            events_per_commit: later.batch_events.since(&earlier.batch_events).mean(),
            fsync_p50_ms: millis(fsync.quantile(0.5)),
            fsync_p99_ms: millis(fsync.quantile(0.99)),
        },
    }
}

#[derive(Debug, Default)]
struct History {
    readings: VecDeque<Reading>,
    samples: VecDeque<Sample>,
}

/// Reads the tracked series on a timer and keeps what the page shows. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sampler {
    series: Series,
    started: std::time::Instant,
    history: Arc<Mutex<History>>,
}

impl Sampler {
    pub fn new(series: Series) -> Self {
        Self {
            series,
            started: std::time::Instant::now(),
            history: Arc::default(),
        }
    }

    /// Takes a first reading now and one every [`SAMPLE_EVERY`] on a task of the current
    /// runtime, for as long as the runtime runs.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let sampler = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                sampler.tick();
            }
        })
    }

    /// Reads the series now.
    pub fn tick(&self) {
        let monotonic_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.tick_at(crate::time::unix_millis(), monotonic_ms);
    }

    /// Reads the series as of `wall_ms` (Unix milliseconds) and `monotonic_ms`.
    fn tick_at(&self, wall_ms: u64, monotonic_ms: u64) {
        let mut history = self.lock();
        // Labels never go back, also when the wall clock is stepped back: the page keeps only
        // points newer than the last it has.
        let at_ms = history
            .readings
            .back()
            .map_or(wall_ms, |previous| wall_ms.max(previous.at_ms + 1));
        let reading = Reading::take(&self.series, at_ms, monotonic_ms);
        if let Some(previous) = history.readings.back() {
            let sample = sample(previous, &reading);
            if history.samples.len() == HISTORY_SAMPLES {
                history.samples.pop_front();
            }
            history.samples.push_back(sample);
        }
        if history.readings.len() == WINDOW_READINGS {
            history.readings.pop_front();
        }
        history.readings.push_back(reading);
    }

    /// The live figures: from the oldest reading kept to the newest; `None` until there are
    /// two readings.
    pub fn live(&self) -> Option<Live> {
        let history = self.lock();
        if history.readings.len() < 2 {
            return None;
        }
        let (first, last) = (history.readings.front()?, history.readings.back()?);
        Some(live(first, last))
    }

    /// The history, also after a panic elsewhere while it was locked (each change to it is
    /// whole before the next statement).
    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The chart samples of periods that ended after `since_ms`.
    pub fn samples_since(&self, since_ms: u64) -> Vec<Sample> {
        let history = self.lock();
        history
            .samples
            .iter()
            .filter(|sample| sample.at_ms > since_ms)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::series::NodeRecorder;
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn recorder() -> (NodeRecorder, Sampler) {
        let series = Series::default();
        let recorder = NodeRecorder::new(PrometheusBuilder::new().build_recorder(), series.clone());
        (recorder, Sampler::new(series))
    }

    fn request_to(route: &'static str, status: &'static str, seconds: f64) {
        let method = "GET";
        metrics::counter!(names::HTTP_REQUESTS,
            "route" => route, "method" => method, "status" => status)
        .increment(1);
        metrics::histogram!(names::HTTP_DURATION, "route" => route, "method" => method)
            .record(seconds);
    }

    fn request(status: &'static str, seconds: f64) {
        request_to("/x", status, seconds);
    }

    #[test]
    fn samples_hold_the_rates_and_latency_of_their_period() {
        let (recorder, sampler) = recorder();
        metrics::with_local_recorder(&recorder, || {
            request("200", 0.001);
            sampler.tick_at(1_000, 1_000);
            for _ in 0..18 {
                request("200", 0.002);
            }
            request("404", 0.002);
            request("503", 0.100);
            // The page's own polls are not traffic it shows.
            for _ in 0..50 {
                request_to("/admin/overview", "200", 9.0);
            }
            request_to("/ui/app.js", "200", 9.0);
            sampler.tick_at(3_000, 3_000);
        });
        let samples = sampler.samples_since(0);
        assert_eq!(samples.len(), 1, "the first reading only starts the count");
        let sample = &samples[0];
        assert_eq!(sample.at_ms, 3_000);
        assert_eq!(sample.requests_per_s, 10.0);
        assert_eq!(sample.client_errors_per_s, 0.5);
        assert_eq!(sample.server_errors_per_s, 0.5);
        let p50 = sample.p50_ms.unwrap();
        assert!((1.8..2.2).contains(&p50), "p50 {p50}");
        let p99 = sample.p99_ms.unwrap();
        assert!((90.0..110.0).contains(&p99), "p99 {p99}");
        assert!(sampler.samples_since(3_000).is_empty());
    }

    #[test]
    fn live_figures_span_the_window_and_split_by_aggregate_kind() {
        let (recorder, sampler) = recorder();
        metrics::with_local_recorder(&recorder, || {
            sampler.tick_at(0, 0);
            for _ in 0..20 {
                metrics::counter!(names::COMMANDS, "aggregate" => "account", "outcome" => "ok")
                    .increment(1);
                metrics::histogram!(names::COMMAND_SECONDS, "aggregate" => "account").record(0.003);
            }
            metrics::counter!(names::COMMANDS, "aggregate" => "account", "outcome" => "rejected")
                .increment(4);
            metrics::gauge!(names::LIVE_ACTORS, "aggregate" => "account").set(12.0);
            metrics::histogram!(names::STORE_BATCH_EVENTS).record(3.0);
            metrics::histogram!(names::STORE_BATCH_EVENTS).record(5.0);
            metrics::histogram!(names::STORE_BATCH_OPS).record(2.0);
            metrics::histogram!(names::STORE_BATCH_OPS).record(2.0);
            metrics::counter!(names::STORE_COMMITS).increment(2);
            metrics::histogram!(names::STORE_COMMIT_SECONDS).record(0.004);
            sampler.tick_at(2_000, 2_000);
            sampler.tick_at(4_000, 4_000);
        });
        let live = sampler.live().unwrap();
        assert_eq!(live.window_s, 4.0);
        assert_eq!(live.aggregates.len(), 1);
        let account = &live.aggregates[0];
        assert_eq!(account.kind, "account");
        assert_eq!(account.live, 12);
        assert_eq!(account.commands_per_s, 6.0);
        assert_eq!(account.outcomes["ok"], 5.0);
        assert_eq!(account.outcomes["rejected"], 1.0);
        assert!((2.7..3.3).contains(&account.p99_ms.unwrap()));
        assert_eq!(live.store.commits_per_s, 0.5);
        assert_eq!(live.store.events_per_commit, Some(4.0));
        assert_eq!(live.store.operations_per_commit, Some(2.0));
        assert!((3.6..4.4).contains(&live.store.fsync_p50_ms.unwrap()));
        assert_eq!(sampler.samples_since(0).len(), 2);
    }

    #[test]
    fn rates_follow_the_monotonic_clock_and_labels_never_go_back() {
        let (recorder, sampler) = recorder();
        metrics::with_local_recorder(&recorder, || {
            sampler.tick_at(7_200_000, 0);
            assert_eq!(sampler.live(), None, "one reading is no window");
            request("200", 0.001);
            request("200", 0.001);
            // The wall clock was stepped back an hour; two seconds passed.
            sampler.tick_at(7_200_000 - 3_600_000, 2_000);
        });
        let samples = sampler.samples_since(0);
        assert_eq!(samples[0].requests_per_s, 1.0);
        assert_eq!(samples[0].at_ms, 7_200_001, "after the last label");
        assert_eq!(sampler.live().unwrap().window_s, 2.0);
    }

    #[test]
    fn history_and_window_are_bounded() {
        let sampler = Sampler::new(Series::default());
        for tick in 0..(HISTORY_SAMPLES as u64 + 10) {
            sampler.tick_at(tick * 2_000, tick * 2_000);
        }
        assert_eq!(sampler.samples_since(0).len(), HISTORY_SAMPLES);
        let live = sampler.live().unwrap();
        assert_eq!(live.window_s, (WINDOW_READINGS as f64 - 1.0) * 2.0);
        assert!(live.aggregates.is_empty());
        assert_eq!(live.http.p99_ms, None);
    }
}
