//! `/admin` routes for operators (admin role): the projections (and rebuilding one), and the
//! sagas.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Routes;
use super::auth::Admin;
use super::json::ApiJson;
use super::kit::{ApiQuery, Page};
use super::problem::{Problem, ProblemCode, quote_id};
use crate::bus::{Bus, key};
use crate::saga::{SAGAS_OPEN_TABLE, SAGAS_TABLE, SagaStatus, SagaSummary};

/// The admin routes, to be put behind the edge's guard.
pub fn routes(bus: Bus) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(list_projections))
        .routes(routes!(rebuild_projection))
        .routes(routes!(list_sagas))
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

/// Problems of an admin route that reads, without parameters.
#[derive(Debug, utoipa::IntoResponses)]
pub enum AdminProblems {
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Not an admin token
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
}

/// Problems of an admin route with query parameters.
#[derive(Debug, utoipa::IntoResponses)]
pub enum AdminQueryProblems {
    /// A query parameter is malformed
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Not an admin token
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// A query parameter has an invalid value
    #[response(status = 422, content_type = "application/problem+json")]
    InvalidField(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
}

/// Problems of rebuilding a projection.
#[derive(Debug, utoipa::IntoResponses)]
pub enum RebuildProblems {
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
    responses((status = 202, description = "Rebuilding"), RebuildProblems))]
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

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SagaFilter {
    /// Only this kind: `order_saga` or `transfer`.
    #[param(max_length = 64)]
    pub kind: Option<String>,
    /// Only this status.
    #[param(inline)]
    pub status: Option<SagaStatus>,
}

/// A page of a saga list.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SagaCursor {
    /// Items per page, 1 to 100 (20 when absent).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    #[param(max_length = 200)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SagaPage {
    pub items: Vec<SagaSummary>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// Most summaries read to fill one page, so that a filter matching few sagas costs a bounded
/// scan: a page may then hold fewer items than asked, with a cursor to go on. (Only a list of
/// finished sagas of one status meets this: open ones are listed from the open-saga table.)
const MAX_SCANNED: usize = 10_000;

/// Sagas with their status, step, attempts and last error, by kind then id (ids are
/// time-ordered for sagas started without an Idempotency-Key), filtered by kind and status.
#[utoipa::path(get, path = "/admin/sagas", tag = "admin",
    security(("bearer" = [])), params(SagaFilter, SagaCursor),
    responses((status = 200, description = "A page of sagas", body = SagaPage), AdminQueryProblems))]
async fn list_sagas(
    State(bus): State<Bus>,
    _: Admin,
    ApiQuery(filter): ApiQuery<SagaFilter>,
    ApiQuery(page): ApiQuery<SagaCursor>,
) -> Result<ApiJson<SagaPage>, Problem> {
    let page = Page {
        limit: page.limit,
        cursor: page.cursor,
        min_position: None,
    };
    let limit = page.size()?;
    if filter
        .kind
        .as_ref()
        .is_some_and(|kind| kind.chars().count() > 64)
    {
        return Err(Problem::invalid_field(
            "kind",
            "a saga kind is at most 64 characters",
        ));
    }
    let prefix = filter
        .kind
        .as_deref()
        .map_or_else(Vec::new, |kind| key(&[kind]));
    let snapshot = bus.read_models().map_err(|e| Problem::internal(&e))?;
    let mut after = page.cursor.as_deref().map(|cursor| {
        let mut after = prefix.clone();
        after.extend_from_slice(cursor.as_bytes());
        after
    });
    // An open status (running, compensating, stuck) is looked for among the open sagas only,
    // which the node keeps apart: a page fills however many sagas have finished.
    let open = filter
        .status
        .is_some_and(|status| !matches!(status, SagaStatus::Completed | SagaStatus::Compensated));
    let table = if open { SAGAS_OPEN_TABLE } else { SAGAS_TABLE };
    let (mut items, mut scanned, mut next_cursor) = (Vec::new(), 0, None);
    'scan: loop {
        let batch = snapshot
            .scan(table, &prefix, after.as_deref(), 256)
            .map_err(|e| Problem::internal(&e))?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        after = Some(last.clone());
        for (entry, value) in &batch {
            scanned += 1;
            let value = if open {
                // Finished between the two reads of one snapshot cannot happen; a missing
                // summary would be a bug, skipped rather than failing the page.
                match snapshot
                    .get(SAGAS_TABLE, entry)
                    .map_err(|e| Problem::internal(&e))?
                {
                    Some(value) => value,
                    None => continue,
                }
            } else {
                value.clone()
            };
            let summary: SagaSummary =
                crate::codec::decode(&value).map_err(|e| Problem::internal(&e))?;
            if filter
                .status
                .is_none_or(|status| summary.status == status.as_str())
            {
                items.push(summary);
            }
            if items.len() == limit || scanned >= MAX_SCANNED {
                next_cursor = Some(String::from_utf8_lossy(&entry[prefix.len()..]).into_owned());
                break 'scan;
            }
        }
    }
    Ok(ApiJson(SagaPage { items, next_cursor }))
}
