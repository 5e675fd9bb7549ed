//! Changing a replicated cluster's members (admin role), on any member:
//!
//! - `POST /admin/cluster/members {"name", "address"?, "edge"?}` admits a node (its address
//!   may be left out when it has asked to join lately: the address it asked from is used);
//! - `POST /admin/cluster/members/{name}/drain` moves a member's replicas and leads away,
//!   after which it leaves on its own;
//! - `DELETE /admin/cluster/members/{name}` removes a member lost for good, by force: its
//!   replicas are made again on the others from what the survivors hold.
//!
//! - `POST /admin/cluster/recover {"lost": [names]}`, on a survivor, restarts the groups that
//!   lost a majority of their voters with members lost for good on what it holds (the worst
//!   day: see `replication::recovery`).
//!
//! The first three answer 202 once the change is recorded in the cluster's metadata: the
//! moves it starts show in `GET /admin/cluster` (`replication.moves`) and on `/ui`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Routes;
use super::auth::Admin;
use super::json::ApiJson;
use super::problem::{Problem, ProblemCode, quote_id};
use crate::cluster::Cluster;
use crate::replication::{
    ChangeOutcome, Groups, MemberChange, Recovery, RecoveryError, change_members,
};

/// What the member routes work with: a member of a replicated cluster.
#[derive(Debug, Clone)]
pub struct MembersInfo {
    pub cluster: Option<Cluster>,
    pub groups: Option<Groups>,
}

pub fn routes(info: MembersInfo) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(admit))
        .routes(routes!(drain))
        .routes(routes!(remove))
        .routes(routes!(recover))
        .with_state(info)
}

/// A node to admit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    /// Its `node_name`.
    #[schema(max_length = 64)]
    pub name: String,
    /// Its cluster address (`host:port`), as the members will dial it; may be left out when
    /// the node has asked to join within the last minute.
    #[schema(max_length = 255)]
    pub address: Option<String>,
    /// Its edge (`host:port`), for clients and tools.
    #[schema(max_length = 255)]
    pub edge: Option<String>,
}

/// A change recorded in the cluster's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberChanged {
    pub member: String,
    /// `admitted`, `draining` or `removed`.
    pub change: String,
    /// The metadata stream's version after the change.
    pub version: u64,
}

/// Problems of the member routes.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum MemberProblems {
    /// Malformed body
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Body too large
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body is not application/json
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field has an invalid value (`field` names it)
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Not an admin token
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such member, or this node is not a member of a replicated cluster
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The members as they are now refuse the change (the detail says why)
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// The metadata group's leader could not be reached; retry
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The longest member name taken (node names are short identifiers).
const MAX_NAME: usize = 64;

fn replicated(info: &MembersInfo) -> Result<(&Cluster, &Groups), Problem> {
    match (&info.cluster, &info.groups) {
        (Some(cluster), Some(groups)) => Ok((cluster, groups)),
        _ => Err(Problem::new(
            ProblemCode::NotFound,
            "members change only in a cluster with store.journal = \"raft\"; this node's member list is its config's",
        )),
    }
}

fn checked_name(name: &str) -> Result<(), Problem> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(plain) {
        return Err(Problem::invalid_field(
            "name",
            format!(
                "a node name is 1 to {MAX_NAME} letters, digits, '-', '_' or '.'; got `{}`",
                quote_id(name)
            ),
        ));
    }
    Ok(())
}

fn checked_address(field: &str, address: &str) -> Result<(), Problem> {
    let valid = address.len() <= 255
        && address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
    if !valid {
        return Err(Problem::invalid_field(
            field,
            format!("expected host:port, got `{}`", quote_id(address)),
        ));
    }
    Ok(())
}

async fn apply(
    cluster: &Cluster,
    groups: &Groups,
    member: String,
    change: MemberChange,
    what: &str,
) -> Result<(StatusCode, ApiJson<MemberChanged>), Problem> {
    match change_members(groups, cluster, change).await {
        ChangeOutcome::Done { version } => Ok((
            StatusCode::ACCEPTED,
            ApiJson(MemberChanged {
                member,
                change: what.to_owned(),
                version,
            }),
        )),
        ChangeOutcome::Refused(reason) if reason.ends_with("is not a member") => {
            Err(Problem::new(ProblemCode::NotFound, reason))
        }
        ChangeOutcome::Refused(reason) if reason.contains("try again") => {
            Err(Problem::new(ProblemCode::Unavailable, reason).with_retry_after(1))
        }
        ChangeOutcome::Refused(reason) => Err(Problem::new(ProblemCode::Conflict, reason)),
        ChangeOutcome::NotLeader { .. } => Err(Problem::new(
            ProblemCode::Unavailable,
            "no member leads the cluster's metadata now (an election may be under way); retry",
        )
        .with_retry_after(1)),
    }
}

/// Admits a node to the cluster: partitions placement now gives it gain it as a learner,
/// which catches up and then votes (joint consensus); leads move to it as placement prefers.
#[utoipa::path(post, path = "/admin/cluster/members", tag = "admin",
    security(("bearer" = [])),
    request_body = Admission,
    responses((status = 202, description = "Admitted; its replicas are being moved", body = MemberChanged), MemberProblems))]
async fn admit(
    State(info): State<MembersInfo>,
    _: Admin,
    ApiJson(admission): ApiJson<Admission>,
) -> Result<(StatusCode, ApiJson<MemberChanged>), Problem> {
    let (cluster, groups) = replicated(&info)?;
    checked_name(&admission.name)?;
    let asked = groups.asked(&admission.name);
    let address = match (admission.address, &asked) {
        (Some(address), _) => address,
        (None, Some(asked)) => asked.address.clone(),
        (None, None) => {
            return Err(Problem::invalid_field(
                "address",
                format!(
                    "`{}` has not asked to join lately: give its cluster address (host:port)",
                    admission.name
                ),
            ));
        }
    };
    checked_address("address", &address)?;
    let edge = admission.edge.or(asked.and_then(|asked| asked.edge));
    if let Some(edge) = &edge {
        checked_address("edge", edge)?;
    }
    let change = MemberChange::Admit {
        name: admission.name.clone(),
        address,
        edge,
    };
    apply(cluster, groups, admission.name, change, "admitted").await
}

/// Drains a member: its replicas and leads move to the others (at most
/// `cluster.max_moves` partitions at once across the cluster), then it leaves the cluster on its own
/// and may be stopped (`GET /admin/cluster` no longer lists it).
#[utoipa::path(post, path = "/admin/cluster/members/{name}/drain", tag = "admin",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The member to drain")),
    responses((status = 202, description = "Draining", body = MemberChanged), MemberProblems))]
async fn drain(
    State(info): State<MembersInfo>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<(StatusCode, ApiJson<MemberChanged>), Problem> {
    let (cluster, groups) = replicated(&info)?;
    checked_name(&name)?;
    let change = MemberChange::Drain { name: name.clone() };
    apply(cluster, groups, name, change, "draining").await
}

/// Removes a member lost for good, by force: it is dropped from every group, whose leaders
/// make its replicas again on the other members from what the survivors hold. A partition
/// that lost a majority of its replicas with it cannot change its voters this way.
#[utoipa::path(delete, path = "/admin/cluster/members/{name}", tag = "admin",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The member to remove")),
    responses((status = 202, description = "Removed; its replicas are being made again", body = MemberChanged), MemberProblems))]
async fn remove(
    State(info): State<MembersInfo>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<(StatusCode, ApiJson<MemberChanged>), Problem> {
    let (cluster, groups) = replicated(&info)?;
    checked_name(&name)?;
    let change = MemberChange::Remove { name: name.clone() };
    apply(cluster, groups, name, change, "removed").await
}

/// The members lost for good, to recover without.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LostMembers {
    /// Their names; none of them may be up, nor the member asked.
    #[schema(max_items = 64)]
    pub lost: Vec<String>,
}

/// The worst day: on a survivor, restarts every group that lost a majority of its voters
/// with the `lost` members on the voters that survive, from what this member holds, and
/// records the lost members as removed. Entries only the lost members held are gone, even
/// acknowledged ones: the answer names, per group, the last entry kept. Admit new members
/// afterwards to make the other replicas. Only for members that will never return: one
/// that does must be wiped and join as a new node.
#[utoipa::path(post, path = "/admin/cluster/recover", tag = "admin",
    security(("bearer" = [])),
    request_body = LostMembers,
    responses((status = 200, description = "What was recovered, what was left as it was and why", body = Recovery), MemberProblems))]
async fn recover(
    State(info): State<MembersInfo>,
    _: Admin,
    ApiJson(body): ApiJson<LostMembers>,
) -> Result<ApiJson<Recovery>, Problem> {
    let (cluster, groups) = replicated(&info)?;
    if body.lost.len() > 64 {
        return Err(Problem::invalid_field(
            "lost",
            format!("at most 64 members; got {}", body.lost.len()),
        ));
    }
    for name in &body.lost {
        checked_name(name).map_err(|_| {
            Problem::invalid_field(
                "lost",
                format!(
                    "a node name is 1 to {MAX_NAME} letters, digits, '-', '_' or '.'; got `{}`",
                    quote_id(name)
                ),
            )
        })?;
    }
    match crate::replication::recover(groups, cluster, body.lost).await {
        Ok(recovery) => Ok(ApiJson(recovery)),
        Err(error @ RecoveryError::Invalid(_)) => {
            Err(Problem::invalid_field("lost", error.to_string()))
        }
        Err(error @ RecoveryError::NotMember(_)) => {
            Err(Problem::new(ProblemCode::NotFound, error.to_string()))
        }
        Err(error @ RecoveryError::StillUp(_)) => {
            Err(Problem::new(ProblemCode::Conflict, error.to_string()))
        }
        Err(error @ RecoveryError::Failed(_)) => {
            Err(Problem::new(ProblemCode::Unavailable, error.to_string()).with_retry_after(1))
        }
    }
}
