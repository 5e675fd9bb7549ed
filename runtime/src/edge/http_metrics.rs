//! The HTTP request metrics, with their handles cached per (route, method, status).
//!
//! `metrics::counter!` with labels builds a key (a label vector and three strings) and looks it
//! up in the recorder's registry on every call; on the hot path that cost as much as a cheap
//! handler. The handles are registered once per series and kept here, keyed by a hash of the
//! labels and checked against them, so a request records with two atomic operations.

use std::hash::BuildHasher;

use dashmap::DashMap;
use metrics::{Counter, Histogram};

use crate::metrics::{HTTP_DURATION, HTTP_REQUESTS};

/// The cached series. Routes are the router's templates and methods a fixed set, so the map
/// stays small.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    series: DashMap<u64, Series>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics")
            .field("series", &self.series.len())
            .finish()
    }
}

struct Series {
    route: Box<str>,
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl HttpMetrics {
    /// Counts one request and records its latency.
    pub(crate) fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        let key = self.hasher.hash_one((route, method, status));
        if let Some(series) = self.series.get(&key)
            && &*series.route == route
            && series.method == method
            && series.status == status
        {
            series.requests.increment(1);
            series.duration.record(seconds);
            return;
        }
        let series = Series {
            route: route.into(),
            method,
            status,
            requests: metrics::counter!(HTTP_REQUESTS,
                "route" => route.to_owned(), "method" => method, "status" => status.to_string()),
            duration: metrics::histogram!(HTTP_DURATION,
                "route" => route.to_owned(), "method" => method),
        };
        series.requests.increment(1);
        series.duration.record(seconds);
        // On a hash collision the first series keeps the slot; the other takes the slow path.
        self.series.entry(key).or_insert(series);
    }
}
