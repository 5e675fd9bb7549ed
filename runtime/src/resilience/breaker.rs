//! The seed's circuit breaker, per target service: after `failure_threshold` failures in a
//! row it opens (calls fail at once, without reaching the target); after `reset_delay` it lets
//! one call through (half-open): a success closes it, a failure opens it again. A trial that
//! never reports back (its caller died) expires after another reset delay, so a lost trial
//! cannot hold the breaker half-open for ever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{CIRCUIT_STATE, CIRCUIT_TRANSITIONS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    fn label(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// The gauge's value: 0 closed, 1 half-open, 2 open.
    fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub reset_delay: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            reset_delay: Duration::from_secs(2),
        }
    }
}

/// One target's breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    target: String,
    settings: BreakerSettings,
    state: CircuitState,
    failures: u32,
    opened_at: Option<Instant>,
    /// In half-open, when the one trial call went out (none: no trial is out).
    trial_since: Option<Instant>,
}

impl CircuitBreaker {
    pub fn new(target: impl Into<String>, settings: BreakerSettings) -> Self {
        let breaker = Self {
            target: target.into(),
            settings,
            state: CircuitState::Closed,
            failures: 0,
            opened_at: None,
            trial_since: None,
        };
        breaker.report();
        breaker
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Whether a call may go to the target now. Open turns half-open once the reset delay has
    /// passed, and then lets one call through until it is recorded (or the reset delay passes
    /// again without it).
    pub fn allow(&mut self) -> bool {
        if !self.retry_in().is_zero() {
            return false;
        }
        if self.state == CircuitState::Open {
            self.move_to(CircuitState::HalfOpen);
        }
        if self.state == CircuitState::HalfOpen {
            self.trial_since = Some(Instant::now());
        }
        true
    }

    /// How long until [`allow`](Self::allow) may let a call through: zero when closed, or when
    /// the reset delay has passed since the breaker opened or since the out trial went out.
    pub fn retry_in(&self) -> Duration {
        let since = match self.state {
            CircuitState::Closed => None,
            CircuitState::Open => self.opened_at,
            CircuitState::HalfOpen => self.trial_since,
        };
        since.map_or(Duration::ZERO, |at| {
            self.settings.reset_delay.saturating_sub(at.elapsed())
        })
    }

    /// Records the answer of a call that `allow` let through: whether the target worked (a
    /// refusal is the target working).
    pub fn record(&mut self, worked: bool) {
        self.trial_since = None;
        if worked {
            self.failures = 0;
            if self.state != CircuitState::Closed {
                self.move_to(CircuitState::Closed);
            }
            return;
        }
        self.failures += 1;
        let open = match self.state {
            CircuitState::HalfOpen => true,
            CircuitState::Closed => self.failures >= self.settings.failure_threshold,
            CircuitState::Open => false,
        };
        if open {
            self.opened_at = Some(Instant::now());
            self.move_to(CircuitState::Open);
        }
    }

    fn move_to(&mut self, state: CircuitState) {
        tracing::info!(target_service = %self.target, from = self.state.label(), to = state.label(), "circuit breaker");
        self.state = state;
        metrics::counter!(CIRCUIT_TRANSITIONS, "target" => self.target.clone(), "to" => state.label())
            .increment(1);
        self.report();
    }

    fn report(&self) {
        metrics::gauge!(CIRCUIT_STATE, "target" => self.target.clone()).set(self.state.gauge());
    }
}

/// The breakers of a node, one per target service, shared by every saga.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    settings: BreakerSettings,
    by_target: Arc<Mutex<HashMap<String, CircuitBreaker>>>,
}

impl Breakers {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            by_target: Arc::default(),
        }
    }

    /// Runs `f` on `target`'s breaker.
    pub fn with<T>(&self, target: &str, f: impl FnOnce(&mut CircuitBreaker) -> T) -> T {
        let mut breakers = self
            .by_target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let breaker = breakers
            .entry(target.to_owned())
            .or_insert_with(|| CircuitBreaker::new(target, self.settings));
        f(breaker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_half_opens_and_closes() {
        let mut breaker = CircuitBreaker::new(
            "payments",
            BreakerSettings {
                failure_threshold: 3,
                reset_delay: Duration::from_secs(2),
            },
        );
        for _ in 0..2 {
            assert!(breaker.allow());
            breaker.record(false);
        }
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "two failures are not three"
        );
        assert!(breaker.allow());
        breaker.record(false);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(!breaker.allow(), "open: calls fail at once");
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(breaker.allow(), "after the reset delay, one trial call");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(!breaker.allow(), "only one while it is out");
        assert_eq!(breaker.retry_in(), Duration::from_secs(2));
        breaker.record(false);
        assert_eq!(
            breaker.state(),
            CircuitState::Open,
            "a failed trial opens it again"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(breaker.allow());
        breaker.record(true);
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "a good trial closes it"
        );
        assert!(breaker.allow() && breaker.allow());
        assert_eq!(breaker.retry_in(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_that_never_reports_back_expires() {
        let settings = BreakerSettings {
            failure_threshold: 1,
            reset_delay: Duration::from_secs(2),
        };
        let mut breaker = CircuitBreaker::new("inventory", settings);
        assert!(breaker.allow());
        breaker.record(false);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(breaker.allow(), "the trial goes out, and its caller dies");
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            breaker.allow(),
            "a lost trial is replaced after the reset delay"
        );
        breaker.record(true);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
