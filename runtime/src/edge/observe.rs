//! The per-request middleware: request and trace ids, the request span, HTTP metrics, the time
//! limit (408 while the body is still arriving, 503 after), `Connection: close` when the answer
//! comes before the body was read, and problem+json bodies for errors produced outside handlers.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;

use super::problem::{Problem, ProblemCode, shorten};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Longest client request id kept; longer ones are replaced by a fresh id.
const MAX_REQUEST_ID_LEN: usize = 64;

/// The ids of the request being handled, for handlers to pass on (as correlation ids).
#[derive(Debug, Clone)]
pub struct RequestIds {
    pub request_id: String,
    pub trace_id: String,
}

/// The client's `x-request-id` when it is short and made of `[A-Za-z0-9._:-]` only: it is
/// echoed, logged and stored as a correlation id, so it must not carry spaces, quotes or
/// anything a log reader could take for another field.
fn client_request_id(request: &Request) -> Option<&str> {
    let id = request.headers().get(REQUEST_ID)?.to_str().ok()?;
    let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
    (!id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(safe)).then_some(id)
}

/// The trace id of a valid W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`, lowercase,
/// ids not all zeros, version not `ff`); later versions may append fields after the flags.
fn traceparent_trace_id(value: &str) -> Option<&str> {
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let mut parts = value.split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = lower_hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2);
    valid.then_some(trace_id)
}

/// The request's ids: the client's request id when safe, else a fresh UUID (v7, time-ordered);
/// the trace id of a valid `traceparent`, else the request id's hex digits (a UUID has 32, as
/// a trace id does).
fn request_ids(request: &Request) -> RequestIds {
    let request_id =
        client_request_id(request).map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let trace_id = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(traceparent_trace_id)
        .map_or_else(|| request_id.replace('-', ""), str::to_owned);
    RequestIds {
        request_id,
        trace_id,
    }
}

/// What the per-request middleware needs.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    /// The node's name, for request spans.
    pub node: std::sync::Arc<str>,
    /// A request still running after this long is answered 503.
    pub request_timeout: Duration,
    /// Bodies announced larger than this are refused before a byte of them is read.
    pub body_limit_bytes: usize,
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
    let ids = request_ids(&request);
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "request",
        node = %layer.node,
        service,
        method,
        route = %route,
        request_id = %ids.request_id,
        trace_id = %ids.trace_id,
        subject = tracing::field::Empty,
    );
    let echoed_id = HeaderValue::from_str(&ids.request_id).ok();
    request.extensions_mut().insert(ids);
    let body_read = track_body(&mut request);
    let announced = request.body().size_hint().exact();
    let handled = async {
        match announced {
            // No need to read 1 GB to know it is over the limit.
            Some(length) if length > layer.body_limit_bytes as u64 => Problem::new(
                ProblemCode::BodyTooLarge,
                format!(
                    "the request body is {length} bytes; at most {} are accepted",
                    layer.body_limit_bytes
                ),
            )
            .into_response(),
            _ => next.run(request).await,
        }
    };
    let handled = tracing::Instrument::instrument(handled, span.clone());
    let mut response = match tokio::time::timeout(layer.request_timeout, handled).await {
        Ok(response) => problem_body(response).await,
        // The body is still arriving: the client is slow, not the server.
        Err(_) if body_read.as_ref().is_some_and(|read| !read.finished()) => Problem::new(
            ProblemCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} ms",
                layer.request_timeout.as_millis()
            ),
        )
        .into_response(),
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
    if body_read.is_some_and(|read| !read.finished()) {
        // Answered before the body was read (401, 413, 429...): the rest of the body is still
        // on the connection, so it cannot carry another request. Say so, or the client's next
        // request on it fails.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
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
        ("method", method.to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!(crate::metrics::HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(crate::metrics::HTTP_DURATION, &labels[..2]).record(elapsed.as_secs_f64());
    response
}

/// Whether a request's body has been read to its end.
#[derive(Debug, Clone)]
struct BodyRead(Arc<AtomicBool>);

impl BodyRead {
    fn finished(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Wraps the body of a request that has one, to learn whether it was read to its end.
fn track_body(request: &mut Request) -> Option<BodyRead> {
    if request.body().size_hint().exact() == Some(0) {
        return None;
    }
    let read = BodyRead(Arc::new(AtomicBool::new(false)));
    let body = std::mem::take(request.body_mut());
    *request.body_mut() = Body::new(TrackedBody {
        inner: body,
        read: read.clone(),
    });
    Some(read)
}

struct TrackedBody {
    inner: Body,
    read: BodyRead,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.read.0.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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

/// `/api/v1/accounts/{id}` belongs to `accounts`; `/health` to `edge`.
fn service_of(route: &str) -> &str {
    route
        .strip_prefix("/api/v1/")
        .and_then(|rest| rest.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("edge")
}

/// Longest text of a non-problem error body kept as the problem's detail.
const MAX_FOREIGN_DETAIL: usize = 200;

/// Gives every error response that is not problem+json yet (unknown route, wrong method, a
/// framework rejection in text/plain) a problem+json body, keeping its status and headers
/// (`Allow` on 405).
async fn problem_body(response: Response) -> Response {
    let status = response.status();
    // Handlers answer errors in problem+json, or JSON by design (an unhealthy /health); the
    // framework's own rejections come as text/plain or without a body.
    let foreign = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|value| value.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !foreign {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => (
            ProblemCode::NotFound,
            "no route matches this path".to_owned(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            ProblemCode::MethodNotAllowed,
            "this method is not allowed here; the Allow header lists the ones that are".to_owned(),
        ),
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
            ProblemCode::BadRequest,
            if text.trim().is_empty() {
                format!("the request was refused ({other})")
            } else {
                shorten(text.trim(), MAX_FOREIGN_DETAIL).into_owned()
            },
        ),
    };
    let mut problem = Problem::new(code, detail).into_response();
    *problem.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
            problem.headers_mut().append(name, value.clone());
        }
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_traceparents_give_a_trace_id() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent_trace_id(valid),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        // A later version may carry more fields.
        assert!(
            traceparent_trace_id(&format!("01-{}-00f067aa0ba902b7-01-extra", "a".repeat(32)))
                .is_some()
        );
        for invalid in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "junk",
        ] {
            assert_eq!(traceparent_trace_id(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn only_short_safe_request_ids_are_kept() {
        let with_id = |id: &str| {
            let request = Request::builder()
                .header(REQUEST_ID, id)
                .body(Body::empty())
                .unwrap();
            request_ids(&request).request_id
        };
        assert_eq!(with_id("req-42_a.b:c"), "req-42_a.b:c");
        for hostile in [
            r#"abc status=200 msg="request ok""#,
            "a\tb",
            &"x".repeat(65),
            "",
        ] {
            let id = with_id(hostile);
            assert_ne!(id, hostile);
            assert_eq!(id.len(), 36, "a fresh UUID: {id}");
        }
    }
}
