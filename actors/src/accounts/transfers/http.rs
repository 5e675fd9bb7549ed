//! The transfers routes: start a transfer (202), and see how it went.

use axum::extract::State;
use playhouse_runtime::edge::IdempotencyKey;
use playhouse_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{TransferInput, TransferSaga};
use crate::accounts::Account;
use crate::money::{MAX_AMOUNT, in_range, minor_units};

/// Namespace of transfer ids derived from an Idempotency-Key (UUID v5).
const TRANSFER_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x3b8e_5d21_c7f4_49a0_8e16_4a9d_2c5b_7f03);

const NOUN: &str = "transfer";

/// The id of the transfer that `subject` starts with `Idempotency-Key: key`: a client that lost
/// the answer can look the transfer up (`GET /api/v1/transfers/{id}`) instead of guessing.
pub fn transfer_id_for(subject: &str, key: &str) -> String {
    let command_id = IdempotencyKey(Some(key.to_owned()))
        .command_id(subject)
        .unwrap_or_default();
    uuid::Uuid::new_v5(&TRANSFER_ID_NAMESPACE, command_id.as_bytes()).to_string()
}

#[derive(Clone)]
struct Transfers {
    sagas: Sagas<TransferSaga>,
    accounts: Aggregates<Account>,
}

pub fn routes(sagas: Sagas<TransferSaga>, accounts: Aggregates<Account>) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(start_transfer))
        .routes(routes!(get_transfer))
        .with_state(Transfers { sagas, accounts })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The caller's account the money leaves.
    pub from: uuid::Uuid,
    /// The account it goes to (anyone's).
    pub to: uuid::Uuid,
    /// Minor units (cents), 1 to 10^15.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64, example = 2500)]
    #[serde(deserialize_with = "minor_units")]
    pub amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: i64,
    /// `pending`, `completed` or `failed`.
    #[schema(example = "pending")]
    pub status: String,
    /// Why it failed.
    pub reason: Option<String>,
}

fn view(id: String, saga: SagaState<TransferInput>) -> TransferView {
    // While it is pending, what went wrong inside (a timeout, a store error) is for operators
    // (`/admin/sagas`), not for the client.
    let (status, reason) = match saga.status() {
        SagaStatus::Completed => ("completed", None),
        SagaStatus::Compensated => ("failed", saga.reason),
        _ => ("pending", None),
    };
    TransferView {
        id,
        from: saga.input.from,
        to: saga.input.to,
        amount: saga.input.amount,
        status: status.to_owned(),
        reason,
    }
}

/// Moves money from one of the caller's accounts to another account. Answers 202 at once: the
/// transfer saga debits, then credits (or credits back if the credit is refused).
#[utoipa::path(post, path = "/api/v1/transfers", tag = "transfers",
    security(("bearer" = [])), params(IdempotencyKeyHeader),
    request_body = TransferRequest,
    responses((status = 202, description = "Started; follow Location for its status", body = TransferView), CreateProblems))]
async fn start_transfer(
    State(transfers): State<Transfers>,
    context: CommandContext,
    ApiJson(body): ApiJson<TransferRequest>,
) -> Result<CommandAnswer<TransferView>, Problem> {
    // A transfer to the same account is allowed: its debit and credit cancel out.
    in_range("amount", body.amount, 1, MAX_AMOUNT)?;
    let from = body.from.to_string();
    transfers
        .accounts
        .visible_to(&context.principal, &from, true)
        .await?;
    let id = context.new_resource_id(TRANSFER_ID_NAMESPACE).to_string();
    let input = TransferInput {
        from,
        to: body.to.to_string(),
        amount: body.amount,
    };
    // A retried request (same Idempotency-Key) names the transfer it started the first time.
    let saga = transfers
        .sagas
        .start(&id, input, &context.subject(), &context.ids.request_id)
        .await
        .map_err(|error| saga_problem(NOUN, error))?;
    let location = format!("/api/v1/transfers/{id}");
    Ok(CommandAnswer::accepted(location, view(id, saga), None))
}

/// A transfer: pending, completed, or failed with the reason.
#[utoipa::path(get, path = "/api/v1/transfers/{id}", tag = "transfers",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Transfer id")),
    responses((status = 200, description = "The transfer", body = TransferView), ReadProblems))]
async fn get_transfer(
    State(transfers): State<Transfers>,
    Reader(principal): Reader,
    PathId(id): PathId,
) -> Result<ApiJson<TransferView>, Problem> {
    let id = id.to_string();
    let saga = transfers
        .sagas
        .get(&id)
        .await
        .map_err(|error| saga_problem(NOUN, error))?
        .filter(|saga| principal.may_access(&saga.subject))
        .ok_or_else(|| not_found(NOUN, &id))?;
    Ok(ApiJson(view(id, saga)))
}
