//! Read-model queries at the edge: the query string (page size, cursor, `min_position`), and
//! waiting, bounded, for a projection to pass `min_position` (read your writes).

use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::bus::Bus;
use crate::edge::problem::{Problem, ProblemCode};

/// How long a query waits for its projection to reach `min_position` before answering 503.
const POSITION_WAIT: Duration = Duration::from_secs(2);

/// Most items a page holds, and how many when the query does not say.
pub const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 20;

/// A query string deserialized into `T`; a malformed one is a 400 problem naming what is wrong.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                Problem::new(
                    ProblemCode::BadRequest,
                    format!("the query string is malformed: {detail}"),
                )
            })
    }
}

/// A page of a list: `limit` items after `cursor`, once the projection has passed
/// `min_position`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page, 1 to 100 (20 when absent).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    #[param(max_length = 200)]
    pub cursor: Option<String>,
    /// Wait (up to 2 s) until the list reflects the command answered with this
    /// `X-Playhouse-Position`.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub min_position: Option<u64>,
}

/// Longest cursor accepted.
const MAX_CURSOR_CHARS: usize = 200;

impl Page {
    /// The page size, checked (and the cursor's length with it).
    pub fn size(&self) -> Result<usize, Problem> {
        if let Some(cursor) = &self.cursor
            && cursor.chars().count() > MAX_CURSOR_CHARS
        {
            return Err(Problem::invalid_field(
                "cursor",
                format!(
                    "a cursor is at most {MAX_CURSOR_CHARS} characters; pass back a next_cursor"
                ),
            ));
        }
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(limit) if (1..=MAX_PAGE as u32).contains(&limit) => Ok(limit as usize),
            Some(limit) => Err(Problem::invalid_field(
                "limit",
                format!("limit must be from 1 to {MAX_PAGE}, got {limit}"),
            )),
        }
    }
}

/// Waits until `projection` has applied the log up to `min_position` (when given); answers
/// 503 with `Retry-After` if it does not within two seconds.
pub async fn caught_up(
    bus: &Bus,
    projection: &'static str,
    min_position: Option<u64>,
) -> Result<(), Problem> {
    let Some(position) = min_position else {
        return Ok(());
    };
    if position > i64::MAX as u64 {
        return Err(Problem::invalid_field(
            "min_position",
            format!("min_position is at most {}", i64::MAX),
        ));
    }
    // A position the log has not reached names no command that was answered: waiting for it
    // would only time out. 409: the request is valid, the log's state cannot satisfy it.
    let end = *bus.store().watch_log_end().borrow();
    if position >= end {
        return Err(Problem::new(
            ProblemCode::Conflict,
            format!("min_position {position} is beyond the log, which ends before {end}"),
        )
        .with_field("min_position"));
    }
    bus.wait_for(projection, position, POSITION_WAIT)
        .await
        .map_err(|behind| {
            Problem::new(
                ProblemCode::Unavailable,
                format!(
                    "the {projection} read model has not reached position {position} yet (it is at {}); retry shortly",
                    behind
                        .applied
                        .map_or_else(|| "the start".to_owned(), |p| p.to_string())
                ),
            )
            .with_retry_after(1)
        })
}
