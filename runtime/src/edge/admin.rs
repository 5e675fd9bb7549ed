//! `/admin` routes for operators (admin role): the projections, and rebuilding one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Routes;
use super::auth::Admin;
use super::json::ApiJson;
use super::problem::{Problem, ProblemCode, quote_id};
use crate::bus::Bus;

/// The admin routes, to be put behind the edge's guard.
pub fn routes(bus: Bus) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(list_projections))
        .routes(routes!(rebuild_projection))
        .with_state(bus)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionView {
    pub name: String,
    /// The last log position it has applied (absent before the first).
    pub applied: Option<u64>,
    /// Events in the log it has not applied yet.
    pub lag: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionsView {
    /// The log's end: the position the next event will get.
    pub log_end: u64,
    pub projections: Vec<ProjectionView>,
}

/// Problems of the admin routes.
#[derive(Debug, utoipa::IntoResponses)]
pub enum AdminProblems {
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Not an admin token
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such projection on this node
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// The projection could not be reset now
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The projections this node runs, how far each has applied the log, and its lag.
#[utoipa::path(get, path = "/admin/projections", tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "The projections", body = ProjectionsView), AdminProblems))]
async fn list_projections(State(bus): State<Bus>, _: Admin) -> ApiJson<ProjectionsView> {
    let log_end = *bus.store().watch_log_end().borrow();
    let projections = bus
        .projections()
        .into_iter()
        .map(|(name, applied)| ProjectionView {
            name: name.to_owned(),
            applied,
            lag: log_end.saturating_sub(applied.map_or(0, |p| p + 1)),
        })
        .collect();
    ApiJson(ProjectionsView {
        log_end,
        projections,
    })
}

/// Empties a projection's tables and has it apply the whole log again, in the background:
/// 202 at once; `GET /admin/projections` shows it catching up.
#[utoipa::path(post, path = "/admin/projections/{name}/rebuild", tag = "admin",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Projection name, e.g. products")),
    responses((status = 202, description = "Rebuilding"), AdminProblems))]
async fn rebuild_projection(
    State(bus): State<Bus>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    if !bus.projections().iter().any(|(known, _)| *known == name) {
        return Err(Problem::new(
            ProblemCode::NotFound,
            format!(
                "no projection named `{}` runs on this node",
                quote_id(&name)
            ),
        ));
    }
    bus.rebuild(&name).await.map_err(|error| {
        Problem::new(
            ProblemCode::Unavailable,
            "the projection could not be reset; retry",
        )
        .with_retry_after(1)
        .with_cause(error)
    })?;
    Ok(StatusCode::ACCEPTED)
}
