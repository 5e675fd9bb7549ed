//! Resilience: retrying with backoff and jitter ([`RetryPolicy`]), and circuit breakers
//! ([`Breakers`]). Beneath the cluster (redialling, breakers per member) and the sagas (steps'
//! retries, breakers per target service), so that neither depends on the other for them.

mod breaker;
mod retry;

pub use breaker::{BreakerSettings, Breakers, CircuitBreaker, CircuitState};
pub use retry::{RetryPolicy, noise};
