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
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;

use super::http_metrics::HttpMetrics;
use super::problem::{FailureCause, Problem, ProblemCode, shorten};
use super::request_ids::{REQUEST_ID, RequestIds};

/// What the per-request middleware needs.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    /// The node's name, for request spans and error lines.
    pub node: Arc<str>,
    /// A request still running after this long is answered 503.
    pub request_timeout: Duration,
    /// Bodies announced larger than this are refused before a byte of them is read.
    pub body_limit_bytes: usize,
    pub(crate) metrics: Arc<HttpMetrics>,
}

/// Longest request target (path and query) answered; a longer one is 414 with a body.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names, values and separators) answered; more is 431 with a body.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most header fields answered; more is 431 with a body (hyper parses up to twice this).
pub const MAX_HEADER_FIELDS: usize = 100;

/// 414 or 431 for a head over the edge's own limits. They sit below hyper's (a 128 KiB head,
/// 200 fields, a 64 KiB target), so that a client is told in problem+json; only a head past
/// those gets hyper's bare answer.
fn oversized_head(request: &Request) -> Option<Problem> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(Problem::new(
            ProblemCode::UriTooLong,
            format!("the request target is {target} bytes; at most {MAX_URI_BYTES} are accepted"),
        ));
    }
    let fields = request.headers().len();
    if fields > MAX_HEADER_FIELDS {
        return Some(Problem::new(
            ProblemCode::HeadersTooLarge,
            format!(
                "the request has {fields} header fields; at most {MAX_HEADER_FIELDS} are accepted"
            ),
        ));
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (headers > MAX_HEADER_BYTES).then(|| {
        Problem::new(
            ProblemCode::HeadersTooLarge,
            format!(
                "the request headers are {headers} bytes; at most {MAX_HEADER_BYTES} are accepted"
            ),
        )
    })
}

/// Middleware around every request, in one layer (each axum layer costs an allocation and a
/// service clone per request): it takes or makes the request ids, opens the request span,
/// applies the time limit, gives errors made outside handlers a problem+json body, echoes
/// `x-request-id`, logs failures and records the HTTP metrics.
///
/// The request span (node, service, method, route, request and trace ids, subject) is at
/// DEBUG, as tower-http's is: at INFO, formatting it for every request cost a quarter of the
/// edge's throughput. What a failure needs is in its own ERROR line instead, with the ids and
/// the cause (see [`super::problem::Problem::internal`]).
pub async fn edge(State(layer): State<EdgeLayer>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let ids = RequestIds::of(request.headers());
    let method = method_label(request.method());
    // A request that changes nothing times out plainly; any other may have done its work.
    let changes_nothing = request.method().is_safe();
    let span = tracing::debug_span!(
        "request",
        node = %layer.node,
        service = service_of(route),
        method,
        route,
        request_id = %ids.request_id,
        trace_id = %ids.trace_id,
        subject = tracing::field::Empty,
    );
    request.extensions_mut().insert(ids.clone());
    let body_read = track_body(&mut request);
    let announced = request.body().size_hint().exact();
    let oversized_head = oversized_head(&request);
    let handled = async {
        if let Some(problem) = oversized_head {
            return problem.into_response();
        }
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
    let handled = crate::trace::traced(
        ids.trace_id.clone(),
        tracing::Instrument::instrument(handled, span.clone()),
    );
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
        Err(_) if changes_nothing => Problem::new(
            ProblemCode::Timeout,
            format!(
                "no answer within {} ms; retry",
                layer.request_timeout.as_millis()
            ),
        )
        .with_retry_after(1)
        .with_cause("the request timeout passed while the handler was still running")
        .into_response(),
        Err(_) => Problem::new(
            ProblemCode::OutcomeUnknown,
            format!(
                "no answer within {} ms: the command may still complete; resend it with the same \
                 Idempotency-Key, which applies it at most once and answers what it did",
                layer.request_timeout.as_millis()
            ),
        )
        .with_retry_after(1)
        .with_cause("the request timeout passed while the handler was still running")
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
    if let Ok(id) = HeaderValue::from_str(&ids.request_id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    let status = response.status();
    let elapsed = started.elapsed();
    if status.is_server_error() {
        // Every field spelled out: this line must stand alone when the span is not recorded.
        let cause = response.extensions().get::<FailureCause>();
        tracing::error!(
            node = %layer.node,
            method,
            route,
            status = status.as_u16(),
            request_id = %ids.request_id,
            trace_id = %ids.trace_id,
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            cause = cause.map(|c| c.0.as_str()),
            "request failed"
        );
    } else {
        span.in_scope(|| {
            tracing::debug!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                "request done"
            );
        });
    }
    layer
        .metrics
        .record(route, method, status.as_u16(), elapsed.as_secs_f64());
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
