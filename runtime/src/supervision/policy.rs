//! Restart policy pieces shared by every supervisor: the strategy, restart intensity, backoff.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Which children restart when one of them fails (Erlang/OTP semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the failed child restarts.
    OneForOne,
    /// Every child stops and restarts, in start order: for children that only work together.
    OneForAll,
    /// The failed child and the ones started after it (which may depend on it) restart.
    RestForOne,
}

impl Strategy {
    /// Indices of the children to restart when child `failed` of `count` fails.
    pub fn affected(self, failed: usize, count: usize) -> std::ops::Range<usize> {
        match self {
            Strategy::OneForOne => failed..failed + 1,
            Strategy::OneForAll => 0..count,
            Strategy::RestForOne => failed..count,
        }
    }
}

/// When a child is restarted after it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always, also after a normal stop: a service that must keep running.
    Permanent,
    /// Only after a failure: a worker that may finish its job and stop.
    Transient,
    /// Never.
    Temporary,
}

impl Restart {
    pub fn should_restart(self, failed: bool) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => failed,
            Restart::Temporary => false,
        }
    }
}

/// At most `max_restarts` restarts within `within`; one more and the supervisor gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub within: Duration,
}

impl Default for Intensity {
    /// OTP's default: 3 restarts in 5 seconds.
    fn default() -> Self {
        Self {
            max_restarts: 3,
            within: Duration::from_secs(5),
        }
    }
}

/// Remembers recent restarts to enforce an [`Intensity`].
#[derive(Debug)]
pub struct RestartWindow {
    intensity: Intensity,
    recent: VecDeque<Instant>,
}

impl RestartWindow {
    pub fn new(intensity: Intensity) -> Self {
        Self {
            intensity,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart now. `Err` carries the number of restarts in the window when that is
    /// more than the intensity allows: the caller must escalate instead of restarting.
    pub fn record(&mut self, now: Instant) -> Result<u32, u32> {
        while let Some(&oldest) = self.recent.front() {
            if now.duration_since(oldest) > self.intensity.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        let count = self.recent.len() as u32;
        if count > self.intensity.max_restarts {
            Err(count)
        } else {
            Ok(count)
        }
    }

    pub fn intensity(&self) -> Intensity {
        self.intensity
    }
}

/// Exponential backoff between restarts: `initial`, doubled for each restart already in the
/// window, capped at `max`. The first restart after a quiet period waits `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// No wait at all: restart at once.
    pub const NONE: Backoff = Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// The delay before the `nth` restart in the current window (1-based).
    pub fn delay(&self, nth: u32) -> Duration {
        let doublings = nth.saturating_sub(1).min(20);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_pick_the_right_children() {
        assert_eq!(Strategy::OneForOne.affected(1, 4), 1..2);
        assert_eq!(Strategy::OneForAll.affected(1, 4), 0..4);
        assert_eq!(Strategy::RestForOne.affected(1, 4), 1..4);
    }

    #[test]
    fn the_window_forgets_old_restarts() {
        let mut window = RestartWindow::new(Intensity {
            max_restarts: 2,
            within: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        assert_eq!(window.record(t0), Ok(1));
        assert_eq!(window.record(t0 + Duration::from_secs(1)), Ok(2));
        assert_eq!(window.record(t0 + Duration::from_secs(2)), Err(3));
        // Long after, the old ones no longer count.
        let mut window = RestartWindow::new(window.intensity());
        window.record(t0).unwrap();
        window.record(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(window.record(t0 + Duration::from_secs(30)), Ok(1));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        assert_eq!(backoff.delay(1), Duration::from_millis(100));
        assert_eq!(backoff.delay(2), Duration::from_millis(200));
        assert_eq!(backoff.delay(3), Duration::from_millis(350));
        assert_eq!(backoff.delay(40), Duration::from_millis(350));
        assert_eq!(Backoff::NONE.delay(5), Duration::ZERO);
    }

    #[test]
    fn restart_types_follow_otp() {
        assert!(Restart::Permanent.should_restart(false));
        assert!(!Restart::Transient.should_restart(false));
        assert!(Restart::Transient.should_restart(true));
        assert!(!Restart::Temporary.should_restart(true));
    }
}
