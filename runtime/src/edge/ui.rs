//! The operations page: `GET /ui` and its script and style, compiled into the binary (no CDN,
//! no build step), and `GET /admin/overview` (admin role), the JSON it polls.
//!
//! The page itself holds no data, so it is public; it asks for an admin token once and keeps it
//! in the tab's `sessionStorage`. Its Content-Security-Policy allows nothing but this node:
//! no inline script, no other origin, no framing.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Routes;
use super::admin::AdminQueryProblems;
use super::auth::Admin;
use super::json::ApiJson;
use super::kit::ApiQuery;
use super::problem::Problem;
use crate::ops::{Overview, OverviewSource};

/// A file of the page, with its entity tag (a hash of its bytes, computed at compile time):
/// browsers revalidate with `If-None-Match` and get a bodiless 304 while it is unchanged.
struct Asset {
    content_type: &'static str,
    body: &'static str,
    tag: u64,
}

impl Asset {
    const fn new(content_type: &'static str, body: &'static str) -> Self {
        // FNV-1a, as a const fn.
        let (bytes, mut tag, mut at) = (body.as_bytes(), 0xcbf2_9ce4_8422_2325_u64, 0);
        while at < bytes.len() {
            tag = (tag ^ bytes[at] as u64).wrapping_mul(0x0100_0000_01b3);
            at += 1;
        }
        Self {
            content_type,
            body,
            tag,
        }
    }
}

const PAGE: Asset = Asset::new("text/html; charset=utf-8", include_str!("ui/index.html"));
const SCRIPT: Asset = Asset::new("text/javascript; charset=utf-8", include_str!("ui/app.js"));
const STYLE: Asset = Asset::new("text/css; charset=utf-8", include_str!("ui/app.css"));
const ICON: Asset = Asset::new("image/svg+xml", include_str!("ui/icon.svg"));

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

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let tag = format!("\"{:016x}\"", asset.tag);
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let tag = HeaderValue::from_str(&tag).expect("a hex entity tag is a header value");
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, tag),
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
        asset.body,
    )
        .into_response()
}

/// The live operations page (HTML; its data comes from `/admin/overview` with an admin token).
#[utoipa::path(get, path = "/ui", tag = "ui",
    responses((status = 200, description = "The operations page", body = String,
        content_type = "text/html")))]
async fn page(request: HeaderMap) -> Response {
    serve(&PAGE, &request)
}

async fn script(request: HeaderMap) -> Response {
    serve(&SCRIPT, &request)
}

async fn style(request: HeaderMap) -> Response {
    serve(&STYLE, &request)
}

async fn icon(request: HeaderMap) -> Response {
    serve(&ICON, &request)
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
    responses((status = 200, description = "The overview", body = Overview), AdminQueryProblems))]
async fn overview(
    State(source): State<OverviewSource>,
    _: Admin,
    ApiQuery(query): ApiQuery<OverviewQuery>,
) -> Result<impl IntoResponse, Problem> {
    let since = u64::try_from(query.since.unwrap_or(0))
        .map_err(|_| Problem::invalid_field("since", "a time in Unix milliseconds: 0 or more"))?;
    let overview = source.overview(since).await;
    // Live figures about the whole cluster: no cache keeps them.
    Ok((
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        ApiJson(overview),
    ))
}
