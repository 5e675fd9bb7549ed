//! Backups and restores (admin role), on a node whose writes go through Raft groups:
//!
//! - `GET /admin/backup` streams a backup of every partition, each at a Raft index at or past
//!   the moment it was asked (see `replication::backup`); `playhouse backup` writes it to a
//!   file.
//! - `POST /admin/restore/partitions/{partition}?partitions=N[&last=true][&cluster=ID]` proposes a batch of
//!   a backup's entries (the body: each a 4-byte big-endian length and the entry) to the
//!   partition's leader in a new cluster; `playhouse restore` sends a backup file this way.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Routes;
use super::admin_members::{MemberProblems, MembersInfo};
use super::auth::Admin;
use super::json::ApiJson;
use super::problem::{Problem, ProblemCode};
use crate::replication::{Groups, RestoredBatch, restore_batch};

pub fn routes(info: MembersInfo) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(backup))
        .routes(routes!(restore))
        .with_state(info)
}

fn raft_groups(info: &MembersInfo) -> Result<&Groups, Problem> {
    info.groups.as_ref().ok_or_else(|| {
        Problem::new(
            ProblemCode::NotFound,
            "backups are taken of partitions replicated by Raft: this node runs with store.journal = \"direct\"; copy its stopped data directory instead",
        )
    })
}

/// A backup of every partition, streamed as it is made (`application/octet-stream`; see
/// `playhouse backup`). Each partition is at a Raft index at or past the moment it was asked:
/// every write acknowledged before is in it. A backup cut short has no end record, and a
/// restore refuses it.
#[utoipa::path(get, path = "/admin/backup", tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "The backup file", content_type = "application/octet-stream"), MemberProblems))]
async fn backup(State(info): State<MembersInfo>, _: Admin) -> Result<Response, Problem> {
    let groups = raft_groups(&info)?.clone();
    let partitions = groups.partitions();
    let (sender, mut records) = tokio::sync::mpsc::channel(64);
    tokio::spawn(crate::replication::take_backup(
        groups,
        info.cluster.clone(),
        partitions,
        sender,
    ));
    let Some(first) = records.recv().await else {
        return Err(Problem::new(
            ProblemCode::Internal,
            "the backup ended before it began",
        ));
    };
    let mut head = crate::replication::BACKUP_MAGIC.to_vec();
    crate::replication::write_record(&mut head, &first)
        .map_err(|error| Problem::new(ProblemCode::Internal, error.to_string()))?;
    let rest = futures::stream::unfold(records, |mut records| async move {
        let record = records.recv().await?;
        let mut bytes = Vec::new();
        let chunk =
            crate::replication::write_record(&mut bytes, &record).map(|()| Bytes::from(bytes));
        Some((chunk, records))
    });
    let body = futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(head))]),
        rest,
    );
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Where a batch of restored entries goes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// The backed-up cluster's partition count, which must be this cluster's.
    pub partitions: u32,
    /// The partition's last batch: its aggregates and sagas start again from what it holds.
    #[serde(default)]
    pub last: bool,
    /// The backed-up cluster's formation (its id and when it formed), in hex: a restore into
    /// that same cluster is refused.
    pub cluster: Option<String>,
}

/// Proposes a batch of a backup's entries for one partition to its leader (this member or
/// another), in order, each applied through the store's checks; answers how many were applied
/// and refused. A refusal means this cluster held something the backup does not: restore
/// into a new cluster that has taken no writes.
#[utoipa::path(post, path = "/admin/restore/partitions/{partition}", tag = "admin",
    security(("bearer" = [])),
    params(("partition" = u32, Path, description = "The partition"), RestoreParams),
    request_body(content_type = "application/octet-stream", description = "Entries, each a 4-byte big-endian length and the entry as the backup holds it"),
    responses((status = 200, description = "Applied", body = RestoredBatch), MemberProblems))]
async fn restore(
    State(info): State<MembersInfo>,
    _: Admin,
    Path(partition): Path<u32>,
    Query(params): Query<RestoreParams>,
    body: Bytes,
) -> Result<ApiJson<RestoredBatch>, Problem> {
    let groups = raft_groups(&info)?;
    let partitions = groups.partitions();
    if params.partitions != partitions {
        return Err(Problem::new(
            ProblemCode::Conflict,
            format!(
                "the backup has {} partitions and this cluster {partitions}: restore into a cluster made with cluster.partitions = {}",
                params.partitions, params.partitions
            ),
        ));
    }
    let this_cluster = Some(crate::replication::cluster_formation(
        groups,
        info.cluster.as_ref(),
    ))
    .filter(|formation| *formation != 0);
    let backed_up = params
        .cluster
        .as_deref()
        .map(|id| u64::from_str_radix(id, 16))
        .transpose()
        .map_err(|_| Problem::invalid_field("cluster", "expected a cluster id in hex"))?;
    if backed_up.is_some() && backed_up == this_cluster {
        return Err(Problem::new(
            ProblemCode::Conflict,
            "this is the cluster the backup was taken of: a restore starts a new cluster, never goes back into the old one (README, \"Backup and restore\")",
        ));
    }
    if partition >= partitions {
        return Err(Problem::invalid_field(
            "partition",
            format!("partitions are 0 to {}; got {partition}", partitions - 1),
        ));
    }
    let proposals = split_entries(&body)?;
    restore_batch(
        groups,
        info.cluster.as_ref(),
        partition,
        proposals,
        params.last,
    )
    .await
    .map(ApiJson)
    .map_err(|reason| Problem::new(ProblemCode::Unavailable, reason).with_retry_after(1))
}

/// The entries of a restore batch's body.
fn split_entries(mut body: &[u8]) -> Result<Vec<Vec<u8>>, Problem> {
    let malformed = |what: &str| {
        Problem::new(
            ProblemCode::BadRequest,
            format!("the body is not a batch of entries: {what}"),
        )
    };
    let mut entries = Vec::new();
    while !body.is_empty() {
        let (length, rest) = body
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("a length cut short"))?;
        let length = u32::from_be_bytes(*length) as usize;
        if rest.len() < length {
            return Err(malformed("an entry cut short"));
        }
        let (entry, rest) = rest.split_at(length);
        entries.push(entry.to_vec());
        body = rest;
    }
    Ok(entries)
}

/// The records a backup holds, for a restore batch's body: each entry length-prefixed.
pub fn batch_body(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for entry in entries {
        body.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        body.extend_from_slice(entry);
    }
    body
}
