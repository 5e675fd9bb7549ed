//! [`PathId`]: the id in a resource's path, parsed as a UUID; anything else cannot name a
//! resource and answers 404 problem+json (never the framework's text/plain 400, and never the
//! whole id echoed back).

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::problem::{Problem, ProblemCode, quote_id};

/// The first path parameter of the route (`{id}` in `/api/v1/accounts/{id}/credit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        // A segment that is not UTF-8 once percent-decoded (`%ff%fe`) cannot be an id either.
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| not_a_resource("the path's id is not valid UTF-8"))?;
        let (_, raw) = params
            .iter()
            .next()
            .ok_or_else(|| Problem::internal(&"PathId used on a route without a parameter"))?;
        uuid::Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| not_a_resource(&format!("no resource has the id `{}`", quote_id(raw))))
    }
}

fn not_a_resource(detail: &str) -> Problem {
    Problem::new(ProblemCode::NotFound, detail)
}
