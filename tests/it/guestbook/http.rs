//! The guestbook routes, on the kit: sign an entry, read one, its events.

use axum::extract::State;
use playhouse_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Entry;
use super::aggregate::EntryState;
use super::messages::EntryCommand;

const ENTRY_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x51e9_04b2_7d6a_4c3f_a8e0_1b2c_3d4e_5f60);

pub fn routes(entries: Aggregates<Entry>) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(sign))
        .routes(routes!(read))
        .with_state(entries.clone())
        .merge(history_routes(
            "/api/v1/guestbook",
            Entry::NOUN,
            Entry::SERVICE,
            entries,
        ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    pub id: String,
    pub text: String,
    pub author: String,
}

fn view(id: String, current: Versioned<EntryState>) -> Result<EntryView, Problem> {
    match current.state {
        EntryState::Signed { text, subject } => Ok(EntryView {
            id,
            text,
            author: subject,
        }),
        EntryState::Blank => Err(not_found(Entry::NOUN, &id)),
    }
}

/// Signs a new entry.
#[utoipa::path(post, path = "/api/v1/guestbook", tag = "guestbook",
    security(("bearer" = [])), params(IdempotencyKeyHeader), request_body = SignRequest,
    responses((status = 201, description = "Signed", body = EntryView), CreateProblems))]
async fn sign(
    State(entries): State<Aggregates<Entry>>,
    context: CommandContext,
    ApiJson(body): ApiJson<SignRequest>,
) -> Result<CommandAnswer<EntryView>, Problem> {
    let id = context.new_resource_id(ENTRY_ID_NAMESPACE).to_string();
    let command = EntryCommand::Sign {
        text: body.text,
        subject: context.subject(),
    };
    context
        .create(&entries, id, "/api/v1/guestbook", command, view)
        .await
}

/// One entry (anyone may read the guestbook).
#[utoipa::path(get, path = "/api/v1/guestbook/{id}", tag = "guestbook",
    security(("bearer" = [])), params(("id" = uuid::Uuid, Path, description = "Entry id")),
    responses((status = 200, description = "The entry", body = EntryView), ReadProblems))]
async fn read(
    State(entries): State<Aggregates<Entry>>,
    Reader(principal): Reader,
    PathId(id): PathId,
) -> Result<ApiJson<EntryView>, Problem> {
    let id = id.to_string();
    let current = entries.visible_to(&principal, &id, false).await?;
    view(id, current).map(ApiJson)
}
