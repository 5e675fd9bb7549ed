//! RFC 9457 problem details: every error the edge returns, with a stable `type` per code.
//!
//! The edge's own problems are [`ProblemCode`]s, generic to every service; a domain's refusals
//! bring their own slug, title and status (a [`Refusal`]). Either way a client can rely on
//! `type` while `detail` stays human.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::aggregate::Refusal;

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every kind of problem the API reports. The `type` URI of each is part of the API contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemCode {
    /// A request the framework refused before any handler (a bad path, a bad query).
    BadRequest,
    MalformedBody,
    InvalidField,
    InvalidHeader,
    UnsupportedMediaType,
    BodyTooLarge,
    /// The request target (path and query) is over the edge's limit.
    UriTooLong,
    /// The request's headers are over the edge's limit.
    HeadersTooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The client sent its request too slowly.
    RequestTimeout,
    Conflict,
    IdempotencyKeyReused,
    RateLimited,
    /// A read (or a request that changes nothing) took too long.
    Timeout,
    /// Not applied, and nothing was done: the service cannot take the request now.
    Unavailable,
    /// A command may or may not have been applied (its node stopped answering, it timed out,
    /// its aggregate crashed mid-command): resending it with the same Idempotency-Key applies
    /// it at most once and answers what it did.
    OutcomeUnknown,
    Internal,
}

impl ProblemCode {
    pub fn status(self) -> StatusCode {
        match self {
            ProblemCode::BadRequest | ProblemCode::MalformedBody | ProblemCode::InvalidHeader => {
                StatusCode::BAD_REQUEST
            }
            ProblemCode::InvalidField => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ProblemCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProblemCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemCode::Forbidden => StatusCode::FORBIDDEN,
            ProblemCode::NotFound => StatusCode::NOT_FOUND,
            ProblemCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            // The request is valid; the resource's current state refuses it.
            ProblemCode::Conflict | ProblemCode::IdempotencyKeyReused => StatusCode::CONFLICT,
            ProblemCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemCode::Timeout | ProblemCode::Unavailable | ProblemCode::OutcomeUnknown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProblemCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable slug in the `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemCode::BadRequest => "bad-request",
            ProblemCode::MalformedBody => "malformed-body",
            ProblemCode::InvalidField => "invalid-field",
            ProblemCode::InvalidHeader => "invalid-header",
            ProblemCode::UnsupportedMediaType => "unsupported-media-type",
            ProblemCode::BodyTooLarge => "body-too-large",
            ProblemCode::UriTooLong => "uri-too-long",
            ProblemCode::HeadersTooLarge => "headers-too-large",
            ProblemCode::Unauthorized => "unauthorized",
            ProblemCode::Forbidden => "forbidden",
            ProblemCode::NotFound => "not-found",
            ProblemCode::MethodNotAllowed => "method-not-allowed",
            ProblemCode::RequestTimeout => "request-timeout",
            ProblemCode::Conflict => "conflict",
            ProblemCode::IdempotencyKeyReused => "idempotency-key-reused",
            ProblemCode::RateLimited => "rate-limited",
            ProblemCode::Timeout => "timeout",
            ProblemCode::Unavailable => "unavailable",
            ProblemCode::OutcomeUnknown => "outcome-unknown",
            ProblemCode::Internal => "internal",
        }
    }

    fn title(self) -> &'static str {
        match self {
            ProblemCode::BadRequest => "The request is malformed",
            ProblemCode::MalformedBody => "The request body is not valid JSON for this operation",
            ProblemCode::InvalidField => "A field has an invalid value",
            ProblemCode::InvalidHeader => "A header has an invalid value",
            ProblemCode::UnsupportedMediaType => "The request body must be application/json",
            ProblemCode::BodyTooLarge => "The request body is too large",
            ProblemCode::UriTooLong => "The request target is too long",
            ProblemCode::HeadersTooLarge => "The request headers are too large",
            ProblemCode::Unauthorized => "A valid bearer token is required",
            ProblemCode::Forbidden => "The token lacks the role this operation needs",
            ProblemCode::NotFound => "No such resource",
            ProblemCode::MethodNotAllowed => "This method is not allowed on this resource",
            ProblemCode::RequestTimeout => "The request arrived too slowly",
            ProblemCode::Conflict => "The request conflicts with the resource's state",
            ProblemCode::IdempotencyKeyReused => "The Idempotency-Key was used for another request",
            ProblemCode::RateLimited => "Too many requests",
            ProblemCode::Timeout => "The request took too long",
            ProblemCode::Unavailable => "The service is temporarily unavailable",
            ProblemCode::OutcomeUnknown => "The command may or may not have been applied",
            ProblemCode::Internal => "Internal error",
        }
    }
}

/// A problem details body (RFC 9457).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem, e.g. `urn:playhouse:problem:insufficient-funds`.
    /// Held as its slug (`insufficient-funds`), written out as the URI.
    #[serde(rename = "type", serialize_with = "type_uri")]
    #[schema(value_type = String, rename = "type")]
    pub slug: &'static str,
    #[schema(value_type = String)]
    pub title: &'static str,
    pub status: u16,
    /// What went wrong this time, in words.
    pub detail: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds until a retry may succeed (rate limits, unavailability).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// What went wrong inside, for the log line of a failed request; never sent.
    #[serde(skip)]
    pub cause: Option<Box<str>>,
}

/// The prefix of every problem `type`.
pub const TYPE_PREFIX: &str = "urn:playhouse:problem:";

fn type_uri<S: serde::Serializer>(slug: &&'static str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{TYPE_PREFIX}{slug}"))
}

/// The cause of a 5xx answer, carried on the response to the edge's "request failed" log line
/// (which has the request's ids), and never to the client.
#[derive(Debug, Clone)]
pub struct FailureCause(pub String);

/// Longest `detail` sent: whatever a detail quotes (a field's value in a parser's message), an
/// answer never grows with the request.
const MAX_DETAIL_CHARS: usize = 500;

/// Longest id quoted in a detail.
const MAX_QUOTED_ID_CHARS: usize = 40;

/// `text` cut to `max` characters, marked with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// An id as quoted in a problem's detail: cut short, so that a 60 KB id is not echoed back.
pub fn quote_id(id: &str) -> std::borrow::Cow<'_, str> {
    shorten(id, MAX_QUOTED_ID_CHARS)
}

impl Problem {
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if let Some((end, _)) = detail.char_indices().nth(MAX_DETAIL_CHARS) {
            detail.truncate(end);
            detail.push('…');
        }
        Self {
            slug: code.slug(),
            title: code.title(),
            status: code.status().as_u16(),
            detail,
            field: None,
            retry_after: None,
            cause: None,
        }
    }

    /// A domain's refusal, as it says to report it.
    pub fn from_refusal(refusal: Refusal, detail: impl Into<String>) -> Self {
        let mut problem = Self::new(ProblemCode::Conflict, detail);
        problem.slug = refusal.slug;
        problem.title = refusal.title;
        problem.status = refusal.status;
        problem.field = refusal.field.map(str::to_owned);
        problem
    }

    /// An invalid-field problem naming `field`.
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::InvalidField, detail).with_field(field)
    }

    /// Names the field at fault (cut short: it may come from the request, as an unknown field
    /// does).
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.field = Some(shorten(&field, MAX_QUOTED_ID_CHARS * 2).into_owned());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Records what went wrong inside: logged with the request's ids, never sent.
    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string().into());
        self
    }

    /// An internal failure: logged in full by the edge, reported to the client without
    /// internals.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        Self::new(
            ProblemCode::Internal,
            "the request failed inside the service; it has been logged",
        )
        .with_cause(error)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let cause = self.cause;
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(cause) = cause {
            response.extensions_mut().insert(FailureCause(cause.into()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_and_quoted_ids_are_bounded() {
        assert_eq!(quote_id("short"), "short");
        let quoted = quote_id(&"é".repeat(60_000)).into_owned();
        assert_eq!(quoted.chars().count(), MAX_QUOTED_ID_CHARS + 1);
        assert!(quoted.ends_with('…'));
        let problem = Problem::new(ProblemCode::NotFound, "x".repeat(100_000));
        assert_eq!(problem.detail.chars().count(), MAX_DETAIL_CHARS + 1);
        let problem = problem.with_field("k".repeat(60_000));
        assert_eq!(
            problem.field.unwrap().chars().count(),
            MAX_QUOTED_ID_CHARS * 2 + 1
        );
    }
}
