//! Per-caller rate limits (GCRA, by governor): keyed by token subject, or by client address for
//! requests without a valid token. Every answer carries the `X-RateLimit-*` headers.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::problem::{Problem, ProblemCode};
use crate::config::RateLimitConfig;

/// Whom a limit applies to: a verified token's subject, or the client address of a request
/// without one (so that forged subjects cannot dodge the limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    Subject(std::sync::Arc<str>),
    Client(std::net::IpAddr),
    /// A request whose client address is unknown (not over TCP): they share one allowance.
    Unknown,
}

type KeyedLimiter =
    RateLimiter<RateKey, DefaultKeyedStateStore<RateKey>, DefaultClock, StateInformationMiddleware>;

#[derive(Debug)]
pub struct Limiter {
    limiter: KeyedLimiter,
    burst: NonZeroU32,
    per_second: NonZeroU32,
}

/// The headers of a request that was let through.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    limit: u32,
    remaining: u32,
    reset_seconds: u64,
}

impl Allowance {
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset_seconds));
    }
}

/// A request over the limit.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub retry_after: u64,
    per_second: u32,
    pub allowance: Allowance,
}

impl Refused {
    /// The 429 answer: problem+json with `Retry-After` and the rate-limit headers.
    pub fn into_response(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let mut response = Problem::new(
            ProblemCode::RateLimited,
            format!(
                "more than {} requests per second (bursts of {}); retry in {} s",
                self.per_second, self.allowance.limit, self.retry_after
            ),
        )
        .with_retry_after(self.retry_after)
        .into_response();
        self.allowance.write(response.headers_mut());
        response
    }
}

impl Limiter {
    pub fn new(config: RateLimitConfig) -> Self {
        let quota = Quota::per_second(config.per_second).allow_burst(config.burst);
        Self {
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            burst: config.burst,
            per_second: config.per_second,
        }
    }

    /// Takes one request from `key`'s allowance, or says when to come back.
    pub fn check(&self, key: &RateKey) -> Result<Allowance, Refused> {
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Allowance {
                    limit: self.burst.get(),
                    remaining,
                    reset_seconds: self.seconds_to_refill(self.burst.get() - remaining),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let retry_after = ceil_seconds(wait).max(1);
                Err(Refused {
                    retry_after,
                    per_second: self.per_second.get(),
                    allowance: Allowance {
                        limit: self.burst.get(),
                        remaining: 0,
                        reset_seconds: self.seconds_to_refill(self.burst.get()),
                    },
                })
            }
        }
    }

    /// Forgets callers whose allowance is full again, so the key map does not grow forever.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }

    fn seconds_to_refill(&self, used: u32) -> u64 {
        ceil_seconds(Duration::from_secs_f64(
            f64::from(used) / f64::from(self.per_second.get()),
        ))
    }
}

fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_burst_then_429_with_retry_after() {
        let limiter = Limiter::new(RateLimitConfig {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        });
        let alice = RateKey::Subject("alice".into());
        let remaining: Vec<u32> = (0..3)
            .map(|_| limiter.check(&alice).unwrap().remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(&alice).unwrap_err();
        assert_eq!(refused.retry_after, 1);
        assert_eq!(refused.allowance.remaining, 0);
        let response = refused.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
        // Another caller has its own allowance.
        assert_eq!(
            limiter
                .check(&RateKey::Subject("bob".into()))
                .unwrap()
                .remaining,
            2
        );
        // A client address is another key again, even one that spells a subject.
        let address = RateKey::Client("127.0.0.1".parse().unwrap());
        assert_eq!(limiter.check(&address).unwrap().remaining, 2);
    }
}
