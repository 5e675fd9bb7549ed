//! The guard in front of `/api` and `/admin`: rate limit, then authentication.
//!
//! The token is verified first only to choose the rate-limit key (a verified subject, or the
//! client address otherwise, so forged subjects cannot dodge the limit); the limit is applied
//! before a bad token is refused, so floods of bad tokens are limited too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::JwtAuth;
use super::rate_limit::{Limiter, RateKey};

#[derive(Debug, Clone)]
pub struct Guard {
    auth: Arc<JwtAuth>,
    limiter: Arc<Limiter>,
}

impl Guard {
    pub fn new(auth: JwtAuth, limiter: Limiter) -> Self {
        Self {
            auth: Arc::new(auth),
            limiter: Arc::new(limiter),
        }
    }

    /// Periodically forgets idle callers; runs until the runtime stops.
    pub fn spawn_housekeeping(&self) -> tokio::task::JoinHandle<()> {
        let limiter = self.limiter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limiter.forget_idle();
            }
        })
    }
}

/// Middleware: see the module docs.
pub async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let verified = guard.auth.verify_header(header);
    let key = match &verified {
        Ok(principal) => RateKey::Subject(principal.subject.clone()),
        Err(_) => client_key(&request),
    };
    let allowance = match guard.limiter.check(&key) {
        Ok(allowance) => allowance,
        Err(refused) => {
            // `?`: the key may hold a token's subject, which is the client's text.
            tracing::debug!(key = ?key, "rate limited");
            return refused.into_response();
        }
    };
    let mut response = match verified {
        Ok(principal) => {
            tracing::Span::current().record("subject", &*principal.subject);
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(problem) => problem.into_response(),
    };
    allowance.write(response.headers_mut());
    response
}

fn client_key(request: &Request) -> RateKey {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(RateKey::Unknown, |info| RateKey::Client(info.0.ip()))
}
