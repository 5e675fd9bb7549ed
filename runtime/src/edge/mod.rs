//! The HTTP edge's building blocks (axum): problem+json errors, JSON bodies, JWT auth, rate
//! limits, request ids and tracing, HTTP metrics, time and body limits, health, `/metrics` and
//! `/openapi.json`. Services bring their own routes; [`assemble`] puts them behind all this.

pub mod admin;
pub mod admin_backup;
pub mod admin_cluster;
pub mod admin_members;
pub mod auth;
pub mod guard;
pub mod health;
mod http_metrics;
pub mod idempotency;
pub mod json;
pub mod kit;
pub mod observe;
pub mod path;
pub mod problem;
pub mod rate_limit;
pub mod request_ids;
pub mod server;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Admin, JwtAuth, MAX_TOKEN_BYTES, Principal, Reader, Role, Writer, check_subject};
pub use guard::Guard;
pub use health::Health;
pub use idempotency::IdempotencyKey;
pub use json::ApiJson;
pub use path::PathId;
pub use problem::{Problem, ProblemCode, quote_id};
pub use rate_limit::Limiter;
pub use request_ids::RequestIds;

/// A service's routes, with their OpenAPI descriptions.
pub type Routes = OpenApiRouter;

/// The name of the security scheme handlers refer to in `security(("bearer" = []))`.
pub const BEARER: &str = "bearer";

/// How the edge wraps routes.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    pub node_name: String,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
}

/// Puts the services' `api` routes behind the guard, adds the public routes (health, metrics,
/// OpenAPI, the operations page) and the layers every request goes through. Returns the app
/// and its OpenAPI document.
pub fn assemble(
    settings: &EdgeSettings,
    api: OpenApiRouter,
    guard: Guard,
    health: Health,
    metrics: PrometheusHandle,
) -> (Router, OpenApi) {
    // route_layer: only requests that match an /api route meet the guard; an unknown path is
    // a plain 404, with or without a token.
    let guarded = api.route_layer(axum::middleware::from_fn_with_state(guard, guard::guard));
    let health_routes = OpenApiRouter::new()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::full))
        .with_state(health);
    let metrics_routes = OpenApiRouter::new()
        .routes(routes!(prometheus_metrics))
        .with_state(metrics);
    let (router, mut openapi) = OpenApiRouter::with_openapi(base_document())
        .merge(health_routes)
        .merge(metrics_routes)
        .merge(ui::page_routes())
        .merge(guarded)
        .split_for_parts();
    openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let spec = Arc::new(serde_json::to_vec(&openapi).expect("an OpenAPI document serializes"));
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let spec = spec.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        spec.as_ref().clone(),
                    )
                }
            }),
        )
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(
            observe::EdgeLayer {
                node: settings.node_name.as_str().into(),
                request_timeout: settings.request_timeout,
                body_limit_bytes: settings.body_limit_bytes,
                metrics: Default::default(),
            },
            observe::edge,
        ));
    (router, openapi)
}

fn base_document() -> OpenApi {
    let mut openapi = OpenApi::new(
        InfoBuilder::new()
            .title("playhouse")
            .description(Some(
                "The playhouse shop-and-bank API. Every /api route needs `Authorization: Bearer \
                 <JWT>` (HS256; `playhouse token` makes one). Errors are RFC 9457 problem+json.",
            ))
            .version(env!("CARGO_PKG_VERSION"))
            .build(),
        utoipa::openapi::Paths::new(),
    );
    openapi.components = Some(
        ComponentsBuilder::new()
            // Referenced by every route's problem responses (declared with IntoResponses, whose
            // schemas utoipa-axum does not collect on its own).
            .schema_from::<Problem>()
            .security_scheme(
                BEARER,
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            )
            .build(),
    );
    openapi
}

/// Prometheus text exposition of every metric.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Metrics in Prometheus text format", body = String, content_type = "text/plain")))]
async fn prometheus_metrics(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        handle.render(),
    )
}
