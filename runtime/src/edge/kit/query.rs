//! Read-model queries at the edge: the query string (page size, cursor, `min_position`), and
//! [`ReadModels`], which reads a page of a list once its projection has passed `min_position`
//! (read your writes): from this node, or in a cluster gathered from every member.

use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::bus::gather::{MemberPage, PageRequest, gather};
use crate::bus::{Bus, decode_entries, read_page};
use crate::cluster::Cluster;
use crate::edge::problem::{Problem, ProblemCode};
use crate::position::PositionToken;
use crate::replication::Journal;

/// How long a query waits for its projection to reach `min_position` before answering 503.
const POSITION_WAIT: Duration = crate::bus::gather::POSITION_WAIT;

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
    /// Wait (up to 2 s) until the list reflects the commands answered with these
    /// `X-Playhouse-Position`s: a log position (`1234`, a cluster without replication), or
    /// partition@index pairs (`3@88,17@4021`, with replication; several answers' pairs merged,
    /// the highest index of each partition kept).
    #[param(
        value_type = Option<String>,
        pattern = r"^([0-9]{1,18}|[0-9]{1,9}@[0-9]{1,18}(,[0-9]{1,9}@[0-9]{1,18})*)$",
        example = "3@88,17@4021"
    )]
    pub min_position: Option<PositionToken>,
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

/// A page of a list read from a read model, as routes answer it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Listed<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    /// Cluster members whose part of the list is missing (down or not serving): the page is
    /// incomplete while this is present.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_members: Vec<String>,
}

/// A service's read models, as its routes query them.
#[derive(Debug, Clone)]
pub struct ReadModels {
    bus: Bus,
    cluster: Option<Cluster>,
    /// Where the node's writes go: with replication, what partition positions wait on.
    journal: Journal,
    /// The service whose members hold parts of its lists.
    service: &'static str,
}

impl ReadModels {
    pub fn new(
        bus: Bus,
        cluster: Option<Cluster>,
        journal: Journal,
        service: &'static str,
    ) -> Self {
        Self {
            bus,
            cluster,
            journal,
            service,
        }
    }

    /// A page of `projection`'s list under `prefix` (the projection's table is named like it).
    /// On a node alone it is read here. In a cluster each member's log holds only its own
    /// partitions' events, so each member hosting the service reads its part and the parts
    /// are merged by cursor; a member that is down is listed in `missing_members`, and 503
    /// only if no member could answer, or if `min_position` is given (the write it names may
    /// be in the missing part).
    pub async fn list<T: DeserializeOwned>(
        &self,
        projection: &'static str,
        prefix: &[u8],
        page: &Page,
    ) -> Result<Listed<T>, Problem> {
        let limit = page.size()?;
        // With replication a node holding every partition has every item: it answers alone,
        // once its replicas have applied the writes the token names.
        let answers_alone = self.cluster.is_none()
            || (self.journal.is_replicated() && self.journal.holds_every_partition());
        let min_position = match &page.min_position {
            Some(PositionToken::Partitions(partitions)) => {
                applied_here(&self.journal, partitions).await?;
                // What this node applied by now is where its log ends.
                let end = *self.bus.store().watch_log_end().borrow();
                end.checked_sub(1)
            }
            Some(PositionToken::Log(position)) => Some(*position),
            None => None,
        };
        let Some(cluster) = self.cluster.as_ref().filter(|_| !answers_alone) else {
            caught_up(&self.bus, projection, min_position).await?;
            let snapshot = self.bus.read_models().map_err(|e| Problem::internal(&e))?;
            let (items, next_cursor) =
                read_page(&snapshot, projection, prefix, page.cursor.as_deref(), limit)
                    .map_err(|e| Problem::internal(&e))?;
            return Ok(Listed {
                items,
                next_cursor,
                missing_members: Vec::new(),
            });
        };
        // Partition positions were waited for above, on the partitions this node holds; the
        // members are asked without a position (a list through a node that does not hold
        // every partition may miss a write to one it does not hold).
        let min_position = match page.min_position {
            Some(PositionToken::Log(position)) => Some(position),
            _ => None,
        };
        checked_position(min_position)?;
        let request = PageRequest {
            projection: projection.to_owned(),
            prefix: prefix.to_vec(),
            cursor: page.cursor.clone(),
            // One more than a page: whether there is a next page.
            limit: limit as u32 + 1,
            min_position,
        };
        let gathered = gather(cluster, &self.bus, self.service, request).await;
        if let Some((member, MemberPage::Behind { applied, wanted })) = gathered.behind.first() {
            return Err(behind_problem(projection, Some(member), *applied, *wanted));
        }
        if gathered.answered == 0 {
            let why: Vec<String> = gathered
                .missing
                .iter()
                .map(|(member, reason)| format!("{member}: {reason}"))
                .collect();
            return Err(Problem::new(
                ProblemCode::Unavailable,
                format!(
                    "no member hosting {} can answer now ({})",
                    self.service,
                    why.join("; ")
                ),
            )
            .with_retry_after(1));
        }
        if min_position.is_some() && !gathered.missing.is_empty() {
            // The write asked for may be in a missing member's part: no page can show it.
            let missing: Vec<&str> = gathered.missing.iter().map(|(m, _)| m.as_str()).collect();
            return Err(Problem::new(
                ProblemCode::Unavailable,
                format!(
                    "min_position asks for a write that may be on {}, which cannot answer now; retry shortly",
                    missing.join(", ")
                ),
            )
            .with_retry_after(1));
        }
        if let Some(position) = min_position
            && position >= gathered.furthest_log_end
        {
            return Err(Problem::new(
                ProblemCode::Conflict,
                format!(
                    "min_position {position} is beyond the log of every member, the longest of which ends before {}",
                    gathered.furthest_log_end
                ),
            )
            .with_field("min_position"));
        }
        let mut entries = gathered.entries;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = match entries.last() {
            Some((cursor, _)) if more => Some(cursor.clone()),
            _ => None,
        };
        let items = decode_entries(projection, &entries).map_err(|e| Problem::internal(&e))?;
        if !gathered.missing.is_empty() {
            tracing::debug!(projection, missing = ?gathered.missing, "a list without some members' parts");
        }
        Ok(Listed {
            items,
            next_cursor,
            missing_members: gathered
                .missing
                .into_iter()
                .map(|(member, _)| member)
                .collect(),
        })
    }
}

/// Waits until this node's replica of each partition named that it holds has applied its log
/// through the index named. 503 with Retry-After when one has not within the wait; 409 for
/// partition positions on a node without replication (a valid request its log cannot
/// satisfy, as a position beyond it is).
async fn applied_here(
    journal: &Journal,
    partitions: &std::collections::BTreeMap<u32, u64>,
) -> Result<(), Problem> {
    if !journal.is_replicated() {
        return Err(Problem::new(
            ProblemCode::Conflict,
            "partition@index positions name writes of a cluster with replication; this one writes each partition on one node: pass the log position a command's X-Playhouse-Position named",
        )
        .with_field("min_position"));
    }
    // One wait for the whole token, not one per partition.
    let deadline = tokio::time::Instant::now() + POSITION_WAIT;
    for (partition, index) in partitions {
        if !journal.holds(*partition) {
            continue;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Err(reason) = journal.wait_applied(*partition, *index, left).await {
            return Err(Problem::new(
                ProblemCode::Unavailable,
                format!("min_position: {reason}; retry shortly"),
            )
            .with_retry_after(1));
        }
    }
    Ok(())
}

fn checked_position(min_position: Option<u64>) -> Result<(), Problem> {
    match min_position {
        Some(position) if position > i64::MAX as u64 => Err(Problem::invalid_field(
            "min_position",
            format!("min_position is at most {}", i64::MAX),
        )),
        _ => Ok(()),
    }
}

fn behind_problem(
    projection: &str,
    node: Option<&str>,
    applied: Option<u64>,
    wanted: u64,
) -> Problem {
    let on = node
        .map(|node| format!(" on node {node}"))
        .unwrap_or_default();
    Problem::new(
        ProblemCode::Unavailable,
        format!(
            "the {projection} read model{on} has not reached position {wanted} yet (it is at {}); retry shortly",
            applied.map_or_else(|| "the start".to_owned(), |p| p.to_string())
        ),
    )
    .with_retry_after(1)
}

/// Waits until `projection` has applied this node's log up to `min_position` (when given);
/// answers 503 with `Retry-After` if it does not within two seconds.
async fn caught_up(
    bus: &Bus,
    projection: &'static str,
    min_position: Option<u64>,
) -> Result<(), Problem> {
    checked_position(min_position)?;
    let Some(position) = min_position else {
        return Ok(());
    };
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
        .map_err(|behind| behind_problem(projection, None, behind.applied, position))
}
