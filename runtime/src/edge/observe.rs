//! The per-request middleware: request and trace ids, the request span, HTTP metrics, the time
//! limit, and problem+json bodies for errors produced outside handlers.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::{Problem, ProblemCode};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The ids of the request being handled, for handlers to pass on (as correlation ids).
#[derive(Debug, Clone)]
pub struct RequestIds {
    pub request_id: String,
    pub trace_id: String,
}

/// The trace id of a W3C `traceparent` header; otherwise this request starts a trace, named by
/// its request id's hex digits (a UUID is 32 of them, as a trace id is).
fn trace_id(request: &Request, request_id: &str) -> String {
    request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split('-').nth(1))
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(|| request_id.replace('-', ""), str::to_owned)
}

/// What the per-request middleware needs.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    /// The node's name, for request spans.
    pub node: std::sync::Arc<str>,
    /// A request still running after this long is answered 503.
    pub request_timeout: Duration,
}

/// Middleware around every request, in one layer (each axum layer costs an allocation and a
/// service clone per request): it takes or makes the request id, opens the request span (node,
/// service, route, request and trace ids), applies the time limit, gives errors made outside
/// handlers a problem+json body, echoes `x-request-id`, and records the HTTP metrics.
pub async fn edge(State(layer): State<EdgeLayer>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let service = service_of(&route);
    let request_id = request_id(&request);
    let ids = RequestIds {
        trace_id: trace_id(&request, &request_id),
        request_id,
    };
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        node = %layer.node,
        service,
        method = %method,
        route = %route,
        request_id = %ids.request_id,
        trace_id = %ids.trace_id,
        subject = tracing::field::Empty,
    );
    let echoed_id = HeaderValue::from_str(&ids.request_id).ok();
    request.extensions_mut().insert(ids);
    let handled = tracing::Instrument::instrument(next.run(request), span.clone());
    let mut response = match tokio::time::timeout(layer.request_timeout, handled).await {
        Ok(response) => problem_body(response),
        Err(_) => Problem::new(
            ProblemCode::Timeout,
            format!(
                "no answer within {} ms; a command may still complete, retry with the same Idempotency-Key",
                layer.request_timeout.as_millis()
            ),
        )
        .with_retry_after(1)
        .into_response(),
    };
    if let Some(id) = echoed_id {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    let status = response.status();
    let elapsed = started.elapsed();
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::error!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                "request done"
            );
        }
    });
    let labels = [
        ("route", route),
        ("method", method_label(&method).to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!(crate::metrics::HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(crate::metrics::HTTP_DURATION, &labels[..2]).record(elapsed.as_secs_f64());
    response
}

/// The method as a metric label: a fixed set, so that invented methods cannot grow the series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The client's `x-request-id` when it is a reasonable id, or a fresh UUID (v7: time-ordered).
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// `/api/v1/accounts/{id}` belongs to `accounts`; `/health` to `edge`.
fn service_of(route: &str) -> &str {
    route
        .strip_prefix("/api/v1/")
        .and_then(|rest| rest.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("edge")
}

/// Gives error responses made outside handlers (unknown route, wrong method, body too large) a
/// problem+json body, keeping their headers (`Allow` on 405).
fn problem_body(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => (
            ProblemCode::NotFound,
            "no route matches this path".to_owned(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = response
                .headers()
                .get_all(header::ALLOW)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(",");
            (
                ProblemCode::MethodNotAllowed,
                format!("allowed methods: {allowed}"),
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE => (
            ProblemCode::BodyTooLarge,
            "the request body exceeds the configured limit".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ProblemCode::UnsupportedMediaType,
            "send the body as application/json".to_owned(),
        ),
        other if other.is_server_error() => (ProblemCode::Internal, "internal error".to_owned()),
        other => (
            ProblemCode::MalformedBody,
            format!("the request was refused ({other})"),
        ),
    };
    let (parts, _) = response.into_parts();
    let mut problem = Problem::new(code, detail).into_response();
    *problem.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        let empty_allow = name == header::ALLOW && value.is_empty();
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE && !empty_allow {
            problem.headers_mut().append(name, value.clone());
        }
    }
    problem
}
