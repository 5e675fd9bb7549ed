//! The problem responses each kind of route can give, declared once for the OpenAPI document.
//! Handlers answer with [`Problem`]; these enums are never built, they only describe.

use crate::edge::problem::Problem;

/// A route that creates a resource.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CreateProblems {
    /// Malformed body or Idempotency-Key header
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token lacks the role
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// A resource the request names does not exist (or is not the caller's)
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The request conflicts with existing state, or the Idempotency-Key was used for a different request
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// Body too large
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body is not application/json
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field has an invalid value (`field` names it)
    #[response(status = 422, content_type = "application/problem+json")]
    InvalidField(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// `unavailable`: nothing was applied, retry later; `outcome-unknown`: it may or may not
    /// have been applied, resend with the same Idempotency-Key (applied at most once). Both with
    /// Retry-After
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// A route that sends a command to an existing resource.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CommandProblems {
    /// Malformed body or Idempotency-Key header
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token lacks the role
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such resource (or not the caller's)
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The resource's state refuses it, or the Idempotency-Key was used for a different request
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// Body too large
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body is not application/json
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field has an invalid value (`field` names it)
    #[response(status = 422, content_type = "application/problem+json")]
    InvalidField(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// `unavailable`: nothing was applied, retry later; `outcome-unknown`: it may or may not
    /// have been applied, resend with the same Idempotency-Key (applied at most once). Both with
    /// Retry-After
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// A route that reads one resource.
#[derive(Debug, utoipa::IntoResponses)]
pub enum ReadProblems {
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token lacks the role
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such resource (or not the caller's)
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// Temporarily unavailable
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// A route that queries a read model (lists, with `min_position` and a cursor).
#[derive(Debug, utoipa::IntoResponses)]
pub enum QueryProblems {
    /// A query parameter is malformed
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token lacks the role
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// What the query names does not exist (or is not the caller's)
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// `min_position` is beyond the end of the log
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// A query parameter has an invalid value
    #[response(status = 422, content_type = "application/problem+json")]
    InvalidField(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// The read model has not reached `min_position` yet; retry after Retry-After
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}
