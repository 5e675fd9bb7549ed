//! The accounts routes: parse, check, send the command, answer. Thin: the kit does the rest.

use axum::extract::State;
use playhouse_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Account, AccountCommand, AccountState};
use crate::money::{MAX_AMOUNT, in_range, minor_units};
use crate::text::Name;

/// Namespace of account ids derived from an Idempotency-Key (UUID v5), so a retried create
/// names the same account.
const ACCOUNT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c1f_3f0e_8d2a_4b8e_9a51_2d7c_0e4b_a11c);

/// The accounts routes, to be put behind the edge's guard.
pub fn routes(accounts: Aggregates<Account>) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(open_account))
        .routes(routes!(get_account))
        .routes(routes!(credit_account))
        .routes(routes!(debit_account))
        .with_state(accounts.clone())
        .merge(history_routes(
            "/api/v1/accounts",
            Account::NOUN,
            Account::SERVICE,
            accounts,
        ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountRequest {
    /// Who holds the account (a name; the account belongs to the token's subject).
    pub owner: Name,
    /// Opening balance in minor units (cents), at most 10^15.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64, example = 10000)]
    #[serde(deserialize_with = "minor_units")]
    pub initial_balance: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// Amount in minor units (cents), from 1 to 10^15.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64, example = 2500)]
    #[serde(deserialize_with = "minor_units")]
    pub amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub owner: String,
    /// Balance in minor units (cents).
    pub balance: i64,
    /// Number of events in the account's history.
    pub version: u64,
}

impl AccountView {
    fn of(id: String, current: Versioned<AccountState>) -> Result<Self, Problem> {
        match current.state {
            AccountState::Open { owner, balance, .. } => Ok(Self {
                id,
                owner,
                balance,
                version: current.version,
            }),
            AccountState::Unopened => Err(not_found(Account::NOUN, &id)),
        }
    }
}

/// Opens an account, which belongs to the caller. With an `Idempotency-Key`, a retry returns
/// the same account.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts",
    security(("bearer" = [])),
    params(IdempotencyKeyHeader),
    request_body = OpenAccountRequest,
    responses(
        (status = 201, description = "Opened", body = AccountView),
        CreateProblems))]
async fn open_account(
    State(accounts): State<Aggregates<Account>>,
    context: CommandContext,
    ApiJson(body): ApiJson<OpenAccountRequest>,
) -> Result<CommandAnswer<AccountView>, Problem> {
    // The request's own ranges (the schema's) are checked before anything else, so that a
    // retry carrying an Idempotency-Key cannot slip an invalid body past them.
    in_range("initial_balance", body.initial_balance, 0, MAX_AMOUNT)?;
    let id = context.new_resource_id(ACCOUNT_ID_NAMESPACE).to_string();
    let command = AccountCommand::Open {
        owner: body.owner.into_string(),
        initial_balance: body.initial_balance,
        subject: context.subject(),
    };
    let base = "/api/v1/accounts";
    context
        .create(&accounts, id, base, command, AccountView::of)
        .await
}

/// The account's owner, balance and version.
#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "accounts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = AccountView),
        ReadProblems))]
async fn get_account(
    State(accounts): State<Aggregates<Account>>,
    Reader(principal): Reader,
    PathId(id): PathId,
) -> Result<ApiJson<AccountView>, Problem> {
    let id = id.to_string();
    let current = accounts.visible_to(&principal, &id, false).await?;
    AccountView::of(id, current).map(ApiJson)
}

/// Adds money to the account.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/credit", tag = "accounts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Account id"), IdempotencyKeyHeader),
    request_body = AmountRequest,
    responses(
        (status = 200, description = "Credited; the account after it", body = AccountView),
        CommandProblems))]
async fn credit_account(
    State(accounts): State<Aggregates<Account>>,
    context: CommandContext,
    PathId(id): PathId,
    ApiJson(body): ApiJson<AmountRequest>,
) -> Result<CommandAnswer<AccountView>, Problem> {
    let command = AccountCommand::Credit {
        amount: body.amount,
    };
    move_money(&accounts, &context, id, body.amount, command).await
}

/// Takes money from the account; refused (409 insufficient-funds) beyond the balance.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/debit", tag = "accounts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Account id"), IdempotencyKeyHeader),
    request_body = AmountRequest,
    responses(
        (status = 200, description = "Debited; the account after it", body = AccountView),
        CommandProblems))]
async fn debit_account(
    State(accounts): State<Aggregates<Account>>,
    context: CommandContext,
    PathId(id): PathId,
    ApiJson(body): ApiJson<AmountRequest>,
) -> Result<CommandAnswer<AccountView>, Problem> {
    let command = AccountCommand::Debit {
        amount: body.amount,
    };
    move_money(&accounts, &context, id, body.amount, command).await
}

async fn move_money(
    accounts: &Aggregates<Account>,
    context: &CommandContext,
    id: uuid::Uuid,
    amount: i64,
    command: AccountCommand,
) -> Result<CommandAnswer<AccountView>, Problem> {
    in_range("amount", amount, 1, MAX_AMOUNT)?;
    let id = id.to_string();
    // Unknown ids and others' accounts are refused here, so that probing them starts no
    // actor. The owner never changes once open, so the check holds for the command below.
    accounts.visible_to(&context.principal, &id, true).await?;
    let outcome = accounts.command(&id, context.envelope(command)).await?;
    let account = AccountView::of(id, outcome.state)?;
    Ok(CommandAnswer::ok(account, outcome.position))
}
