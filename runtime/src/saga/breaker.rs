//! The seed's circuit breaker, per target service: after `failure_threshold` failures in a
//! row it opens (calls fail at once, without reaching the target); after `reset_delay` it lets
//! one call through (half-open): a success closes it, a failure opens it again.

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
    /// In half-open, whether the one trial call is out.
    trial_out: bool,
}

impl CircuitBreaker {
    pub fn new(target: impl Into<String>, settings: BreakerSettings) -> Self {
        let breaker = Self {
            target: target.into(),
            settings,
            state: CircuitState::Closed,
            failures: 0,
            opened_at: None,
            trial_out: false,
        };
        breaker.report();
        breaker
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Whether a call may go to the target now. Open turns half-open once the reset delay has
    /// passed, and then lets exactly one call through until it is recorded.
    pub fn allow(&mut self) -> bool {
        match self.state {
            CircuitState::Closed => true,
            CircuitState::Open => {
                let waited = self
                    .opened_at
                    .is_some_and(|at| at.elapsed() >= self.settings.reset_delay);
                if waited {
                    self.move_to(CircuitState::HalfOpen);
                    self.trial_out = true;
                }
                waited
            }
            CircuitState::HalfOpen => !std::mem::replace(&mut self.trial_out, true),
        }
    }

    /// Records the answer of a call that `allow` let through: whether the target worked (a
    /// refusal is the target working).
    pub fn record(&mut self, worked: bool) {
        self.trial_out = false;
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
    }
}
