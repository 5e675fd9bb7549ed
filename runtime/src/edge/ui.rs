//! The operations page: `GET /ui` and its script and style, compiled into the binary (no CDN,
//! no build step), and `GET /admin/overview` (admin role), the JSON it polls.
//!
//! The page itself holds no data, so it is public; it asks for an admin token once and keeps it
//! in the tab's `sessionStorage`. Its Content-Security-Policy allows nothing but this node:
//! no inline script, no other origin, no framing.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Routes;
use super::admin::AdminProblems;
use super::auth::Admin;
use super::json::ApiJson;
use super::kit::ApiQuery;
use super::problem::Problem;
use crate::ops::{Overview, OverviewSource};

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
const ICON: &str = include_str!("ui/icon.svg");

/// Only this node's own script, style and JSON; nothing inline, nothing framed.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The page and its assets (public: they carry no data).
pub fn page_routes() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(page))
        .route("/ui/app.js", axum::routing::get(script))
        .route("/ui/app.css", axum::routing::get(style))
        .route("/ui/icon.svg", axum::routing::get(icon))
}

/// The page's data route, to be put behind the edge's guard.
pub fn admin_routes(source: OverviewSource) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .with_state(source)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // Revalidated on each load, so a new binary's page is never mixed with an old
            // script.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

/// The live operations page (HTML; its data comes from `/admin/overview` with an admin token).
#[utoipa::path(get, path = "/ui", tag = "health",
    responses((status = 200, description = "The operations page", body = String, content_type = "text/html")))]
async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

async fn icon() -> impl IntoResponse {
    asset("image/svg+xml", ICON)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// Only chart points of periods that ended after this time (Unix milliseconds): what the
    /// page has not seen yet. Absent or 0: every point kept (5 minutes).
    #[param(minimum = 0)]
    pub since: Option<i64>,
}

/// The cluster as this node sees it (members, partition owners) and every member's figures:
/// traffic, commands, store, sagas, projections, and their last minutes.
#[utoipa::path(get, path = "/admin/overview", tag = "admin",
    security(("bearer" = [])), params(OverviewQuery),
    responses((status = 200, description = "The overview", body = Overview), AdminProblems))]
async fn overview(
    State(source): State<OverviewSource>,
    _: Admin,
    ApiQuery(query): ApiQuery<OverviewQuery>,
) -> Result<ApiJson<Overview>, Problem> {
    let since = u64::try_from(query.since.unwrap_or(0))
        .map_err(|_| Problem::invalid_field("since", "a time in Unix milliseconds: 0 or more"))?;
    Ok(ApiJson(source.overview(since).await))
}
