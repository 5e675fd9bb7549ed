//! When to try a failed step again: exponential backoff with jitter, a bounded number of
//! times.
//!
//! A saga's retries are scheduled by its actor (a timer message per attempt) and each attempt
//! is recorded in its stream, so a crash does not restart the count: this is the schedule, not
//! a retry loop around one call, which is why it is not `backon`.

use std::time::Duration;

/// Exponential backoff with jitter, for at most `max_attempts` attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The wait after the first failure.
    pub initial: Duration,
    /// Each further failure multiplies the wait by this.
    pub factor: f64,
    /// The longest wait.
    pub max_delay: Duration,
    /// Attempts in all, the first included; then the step gives up.
    pub max_attempts: u32,
    /// Each wait is moved by up to this share of itself, either way (0.25: ±25%), so that
    /// sagas failing together do not retry together.
    pub jitter: f64,
}

impl RetryPolicy {
    /// For a saga's forward steps: 5 attempts over about 1.5 s, then compensate.
    pub const ACTIONS: RetryPolicy = RetryPolicy {
        initial: Duration::from_millis(100),
        factor: 2.0,
        max_delay: Duration::from_secs(2),
        max_attempts: 5,
        jitter: 0.25,
    };

    /// For compensations, which must succeed: 10 attempts over about 20 s, then stuck.
    pub const COMPENSATIONS: RetryPolicy = RetryPolicy {
        initial: Duration::from_millis(100),
        factor: 2.0,
        max_delay: Duration::from_secs(5),
        max_attempts: 10,
        jitter: 0.25,
    };

    /// The wait after failed attempt number `attempt` (1 for the first), jittered by `noise`
    /// (any value; the same noise gives the same wait).
    pub fn delay(&self, attempt: u32, noise: u64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self.initial.as_secs_f64() * self.factor.powi(exponent as i32);
        let base = base.min(self.max_delay.as_secs_f64());
        // noise -> a fraction in [-1, 1).
        let unit = (noise % 2001) as f64 / 1000.0 - 1.0;
        Duration::from_secs_f64((base * (1.0 + self.jitter * unit)).max(0.0))
    }

    /// Whether attempt number `attempt` (1 for the first) was the last allowed.
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }
}

/// A cheap pseudo-random number from `seed` and `attempt` (splitmix64): jitter needs spread,
/// not secrecy.
pub fn noise(seed: u64, attempt: u32) -> u64 {
    let mut z = seed ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_within_the_jitter() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::ACTIONS
        };
        let waits: Vec<u128> = (1..=6).map(|a| policy.delay(a, 0).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000]);
        for attempt in 1..=6 {
            for seed in 0..50 {
                let jittered = RetryPolicy::ACTIONS.delay(attempt, noise(seed, attempt));
                let plain = policy.delay(attempt, 0).as_secs_f64();
                assert!((jittered.as_secs_f64() - plain).abs() <= plain * 0.25 + 1e-9);
            }
        }
        assert!(!policy.exhausted(4) && policy.exhausted(5));
    }
}
