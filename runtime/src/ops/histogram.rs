//! A lock-free histogram with log-scaled buckets, for live percentiles.
//!
//! The Prometheus histograms behind `/metrics` have a dozen fixed buckets (good for dashboards
//! that sum them across nodes, too coarse to read a p99 from). This one has four buckets per
//! power of two from 1 µs (or 1 unit) up, so a percentile read from it is within 10% of the
//! true value, and recording is one `log2` and two relaxed atomic adds. Percentiles over a
//! window come from the difference of two [`Buckets`] readings.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets per power of two.
const PER_OCTAVE: f64 = 4.0;
/// Enough buckets for values up to 2^41.75 scaled units (about 3.7e12: 43 days in µs).
const BUCKETS: usize = 168;
/// Values are recorded scaled by this, so that seconds resolve to microseconds. Counts (batch
/// sizes) are scaled the same way; only their resolution near 1 matters less.
const SCALE: f64 = 1e6;

/// Live counts per bucket, written by any thread.
#[derive(Debug)]
pub struct LogHistogram {
    counts: Box<[AtomicU64]>,
    /// Sum of recorded values, scaled by [`SCALE`] and rounded.
    scaled_sum: AtomicU64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            scaled_sum: AtomicU64::new(0),
        }
    }
}

impl LogHistogram {
    pub fn record(&self, value: f64) {
        self.counts[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        if value.is_finite() && value > 0.0 {
            // The sum wraps (atomics do) rather than panic; only differences between two
            // readings are used, which a wrap between them does not disturb.
            self.scaled_sum
                .fetch_add((value * SCALE).round() as u64, Ordering::Relaxed);
        }
    }

    /// The counts so far (not a consistent cut across buckets, which a live view does not need).
    pub fn read(&self) -> Buckets {
        Buckets {
            counts: self
                .counts
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
            scaled_sum: self.scaled_sum.load(Ordering::Relaxed),
        }
    }
}

impl metrics::HistogramFn for LogHistogram {
    fn record(&self, value: f64) {
        LogHistogram::record(self, value);
    }
}

fn bucket_of(value: f64) -> usize {
    let scaled = value * SCALE;
    // NaN, negatives and values under one unit share bucket 0.
    if scaled.is_nan() || scaled < 1.0 {
        return 0;
    }
    let index = 1.0 + (scaled.log2() * PER_OCTAVE).floor();
    (index as usize).min(BUCKETS - 1)
}

/// A representative value of bucket `index`: its geometric middle, unscaled.
fn value_of(index: usize) -> f64 {
    if index == 0 {
        return 0.0;
    }
    ((index as f64 - 0.5) / PER_OCTAVE).exp2() / SCALE
}

/// A reading of a histogram's counts, or the difference of two readings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buckets {
    counts: Vec<u64>,
    scaled_sum: u64,
}

impl Buckets {
    /// What was recorded after `earlier` (a reading of the same histogram) up to this one.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(index, count)| {
                    count.saturating_sub(earlier.counts.get(index).copied().unwrap_or(0))
                })
                .collect(),
            scaled_sum: self.scaled_sum.wrapping_sub(earlier.scaled_sum),
        }
    }

    /// Adds `other`'s counts to these (series of one metric with different labels).
    pub fn add(&mut self, other: &Buckets) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.scaled_sum = self.scaled_sum.wrapping_add(other.scaled_sum);
    }

    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .fold(0, |sum, count| sum.saturating_add(*count))
    }

    /// The mean of the recorded values; `None` when nothing was recorded.
    pub fn mean(&self) -> Option<f64> {
        let count = self.count();
        (count > 0).then(|| self.scaled_sum as f64 / SCALE / count as f64)
    }

    /// The value below which a fraction `q` (0 to 1) of the recorded values fall, to within a
    /// bucket; `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the wanted value, 1-based: the smallest one for q = 0.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, bucket) in self.counts.iter().enumerate() {
            seen += bucket;
            if seen >= rank {
                return Some(value_of(index));
            }
        }
        Some(value_of(self.counts.len() - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= expected * tolerance
    }

    #[test]
    fn percentiles_come_within_a_bucket_of_the_truth() {
        let histogram = LogHistogram::default();
        // 1 ms to 1000 ms, one value per millisecond: p50 is 500 ms, p99 990 ms.
        for ms in 1..=1000 {
            histogram.record(f64::from(ms) / 1000.0);
        }
        let read = histogram.read();
        assert_eq!(read.count(), 1000);
        let p50 = read.quantile(0.5).unwrap();
        let p99 = read.quantile(0.99).unwrap();
        assert!(within(p50, 0.5, 0.10), "p50 {p50}");
        assert!(within(p99, 0.99, 0.10), "p99 {p99}");
        assert!(within(read.mean().unwrap(), 0.5005, 0.001));
        assert!(within(read.quantile(0.0).unwrap(), 0.001, 0.10));
    }

    #[test]
    fn a_window_holds_only_what_was_recorded_in_it() {
        let histogram = LogHistogram::default();
        for _ in 0..100 {
            histogram.record(0.000_1);
        }
        let before = histogram.read();
        for _ in 0..10 {
            histogram.record(2.0);
        }
        let window = histogram.read().since(&before);
        assert_eq!(window.count(), 10);
        assert!(within(window.quantile(0.5).unwrap(), 2.0, 0.10));
        assert!(within(window.mean().unwrap(), 2.0, 0.001));
        assert_eq!(Buckets::default().quantile(0.5), None);
        assert_eq!(Buckets::default().mean(), None);
    }

    #[test]
    fn odd_values_land_in_the_edge_buckets() {
        let histogram = LogHistogram::default();
        for value in [f64::NAN, -1.0, 0.0, 1e-9, f64::INFINITY, 1e30] {
            histogram.record(value);
        }
        let read = histogram.read();
        assert_eq!(read.count(), 6);
        assert_eq!(read.quantile(0.5), Some(0.0));
        assert!(read.quantile(1.0).unwrap() > 1e6);
    }

    #[test]
    fn a_sum_that_wraps_still_gives_the_window_its_mean() {
        let histogram = LogHistogram::default();
        histogram
            .scaled_sum
            .store(u64::MAX - 1_000_000, Ordering::Relaxed);
        let before = histogram.read();
        histogram.record(3.0);
        histogram.record(5.0);
        let window = histogram.read().since(&before);
        assert_eq!(window.mean(), Some(4.0));
    }

    #[test]
    fn readings_of_several_series_add_up() {
        let (a, b) = (LogHistogram::default(), LogHistogram::default());
        a.record(0.010);
        b.record(0.010);
        b.record(0.020);
        let mut sum = a.read();
        sum.add(&b.read());
        assert_eq!(sum.count(), 3);
        assert!(within(sum.mean().unwrap(), 0.040 / 3.0, 0.001));
    }
}
