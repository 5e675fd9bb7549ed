//! The accounts routes: parse, check the role, send the command, map the outcome. Thin.

use std::time::{Duration, UNIX_EPOCH};

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use playhouse_runtime::aggregate::{Aggregates, CommandEnvelope, CommandError, Versioned};
use playhouse_runtime::edge::{
    ApiJson, IdempotencyKey, PathId, Principal, Problem, ProblemCode, Reader, RequestIds, Writer,
    quote_id,
};
use playhouse_runtime::store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::aggregate::{MAX_AMOUNT, MAX_OWNER_CHARS};
use super::{Account, AccountCommand, AccountError, AccountEvent, AccountState};

/// Namespace of account ids derived from an Idempotency-Key (UUID v5), so a retried create
/// names the same account.
const ACCOUNT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c1f_3f0e_8d2a_4b8e_9a51_2d7c_0e4b_a11c);

/// The accounts routes, to be put behind the edge's guard.
pub fn routes(accounts: Aggregates<Account>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(open_account))
        .routes(routes!(get_account))
        .routes(routes!(credit_account))
        .routes(routes!(debit_account))
        .routes(routes!(account_events))
        .with_state(accounts)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountRequest {
    /// Who owns the account.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S", example = "alice")]
    pub owner: String,
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

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountEventView {
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Commit time, RFC 3339.
    pub recorded_at: String,
    /// The request that caused it.
    pub correlation_id: Option<String>,
    /// The event's own fields.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountHistoryView {
    pub id: String,
    pub events: Vec<AccountEventView>,
}

/// An amount in minor units: any JSON integer, including integral numbers written with a
/// fraction (`2500.0`, which JSON Schema counts as an integer too). `2500.5` is refused.
fn minor_units<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    match serde_json::Number::deserialize(deserializer)? {
        n if n.is_i64() => Ok(n.as_i64().expect("checked is_i64")),
        n => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
            _ => Err(D::Error::custom(format!(
                "expected a whole number of minor units (cents) up to {MAX_AMOUNT}, got {n}"
            ))),
        },
    }
}

fn view(id: &str, current: &Versioned<AccountState>) -> Option<AccountView> {
    match &current.state {
        AccountState::Unopened => None,
        AccountState::Open { owner, balance, .. } => Some(AccountView {
            id: id.to_owned(),
            owner: owner.clone(),
            balance: *balance,
            version: current.version,
        }),
    }
}

// The problem responses of the routes, for the OpenAPI document only: handlers answer with
// `Problem`, and these enums say which statuses each kind of route can give.

/// Problems a route that opens an account can answer with.
#[derive(utoipa::IntoResponses)]
#[expect(
    dead_code,
    reason = "describes responses in the OpenAPI document; never built"
)]
enum CreateProblems {
    /// Malformed body or Idempotency-Key header
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token lacks the role
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The Idempotency-Key was used for a different request
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// Body too large
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body is not application/json
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field has an invalid value (`field` names it)
    #[response(status = 422, content_type = "application/problem+json")]
    InvalidField(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// Temporarily unavailable or too slow; retry with the same Idempotency-Key
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Problems a route that sends a command to an existing account can answer with.
#[derive(utoipa::IntoResponses)]
#[expect(
    dead_code,
    reason = "describes responses in the OpenAPI document; never built"
)]
enum CommandProblems {
    /// Malformed body or Idempotency-Key header
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token lacks the role
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such account
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The account's state refuses it (insufficient funds), or the Idempotency-Key was used for a different request
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// Body too large
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body is not application/json
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field has an invalid value (`field` names it)
    #[response(status = 422, content_type = "application/problem+json")]
    InvalidField(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// Temporarily unavailable or too slow; retry with the same Idempotency-Key
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Problems a read route can answer with.
#[derive(utoipa::IntoResponses)]
#[expect(
    dead_code,
    reason = "describes responses in the OpenAPI document; never built"
)]
enum ReadProblems {
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token lacks the role
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such account
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Rate limited; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// Temporarily unavailable
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        ProblemCode::NotFound,
        format!("no account with id `{}`", quote_id(id)),
    )
}

/// The account `id` as `principal` may see it: an account that is not open, or belongs to
/// another subject (for a non-admin), is not found, so that ids of others' accounts do not leak.
async fn accessible(
    accounts: &Aggregates<Account>,
    principal: &Principal,
    id: &str,
) -> Result<Versioned<AccountState>, Problem> {
    let current = accounts
        .get(id)
        .await
        .map_err(|error| problem(id, false, error))?;
    match current.state.subject() {
        Some(subject) if principal.may_access(subject) => Ok(current),
        _ => Err(not_found(id)),
    }
}

fn envelope(
    command: AccountCommand,
    principal: &Principal,
    key: &IdempotencyKey,
    ids: &RequestIds,
) -> CommandEnvelope<AccountCommand> {
    let mut envelope =
        CommandEnvelope::new(command).with_correlation_id(ids.request_id.to_string());
    envelope.command_id = key.command_id(&principal.subject);
    envelope
}

/// Maps a command's failure to the problem the client sees.
fn problem(id: &str, is_open: bool, error: CommandError<AccountError>) -> Problem {
    match error {
        CommandError::Rejected(rejection) => {
            let detail = rejection.to_string();
            match rejection {
                AccountError::NonPositiveAmount { .. } => Problem::invalid_field("amount", detail),
                AccountError::AmountTooLarge { .. } => {
                    let field = if is_open { "initial_balance" } else { "amount" };
                    Problem::invalid_field(field, detail)
                }
                AccountError::NegativeInitialBalance { .. } => {
                    Problem::invalid_field("initial_balance", detail)
                }
                // A valid request the account's current state cannot take: 409, like any
                // conflict with the resource's state.
                AccountError::BalanceOverflow { .. } => Problem::new(ProblemCode::Conflict, detail),
                AccountError::EmptyOwner | AccountError::OwnerTooLong { .. } => {
                    Problem::invalid_field("owner", detail)
                }
                AccountError::InsufficientFunds { .. } => {
                    Problem::new(ProblemCode::InsufficientFunds, detail)
                }
                AccountError::AlreadyOpen => Problem::new(ProblemCode::Conflict, detail),
                AccountError::NotOpen => not_found(id),
            }
        }
        CommandError::Store(StoreError::CommandIdReused { .. }) => Problem::new(
            ProblemCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used for a different request; use a new key for a new request",
        )
        .with_field("Idempotency-Key"),
        CommandError::Store(StoreError::Conflict { .. }) => Problem::new(
            ProblemCode::Conflict,
            "the account changed while this command ran; retry it",
        ),
        // Damaged data does not heal by retrying: a 500, logged in full.
        CommandError::Store(
            error @ (StoreError::Corrupt { .. }
            | StoreError::CorruptLog { .. }
            | StoreError::CorruptCommand { .. }),
        ) => Problem::internal(&error),
        CommandError::Timeout { .. } => Problem::new(
            ProblemCode::Timeout,
            "the account did not answer in time; retry with the same Idempotency-Key",
        )
        .with_retry_after(1),
        other => Problem::new(
            ProblemCode::Unavailable,
            "the account service could not complete the command; retry with the same Idempotency-Key",
        )
        .with_retry_after(1)
        .with_cause(format!("account {id}: {other}")),
    }
}

/// Opens an account. With an `Idempotency-Key`, a retry returns the same account.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key returns the first result", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")),
    request_body = OpenAccountRequest,
    responses(
        (status = 201, description = "Opened", body = AccountView),
        CreateProblems))]
async fn open_account(
    State(accounts): State<Aggregates<Account>>,
    Writer(principal): Writer,
    Extension(ids): Extension<RequestIds>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<OpenAccountRequest>,
) -> Result<impl IntoResponse, Problem> {
    // The request's own ranges (the schema's) are checked before anything else, so that a
    // retry carrying an Idempotency-Key cannot slip an invalid body past them.
    if body.owner.trim().is_empty() || body.owner.chars().count() > MAX_OWNER_CHARS {
        return Err(Problem::invalid_field(
            "owner",
            format!("owner must be 1 to {MAX_OWNER_CHARS} characters, not only spaces"),
        ));
    }
    in_range("initial_balance", body.initial_balance, 0)?;
    let id = match key.command_id(&principal.subject) {
        Some(command_id) => uuid::Uuid::new_v5(&ACCOUNT_ID_NAMESPACE, command_id.as_bytes()),
        None => uuid::Uuid::now_v7(),
    }
    .to_string();
    let command = AccountCommand::Open {
        owner: body.owner,
        initial_balance: body.initial_balance,
        subject: principal.subject.to_string(),
    };
    let outcome = accounts
        .execute(&id, envelope(command, &principal, &key, &ids))
        .await
        .map_err(|error| problem(&id, true, error))?;
    let account = view(&id, &outcome.state)
        .ok_or_else(|| Problem::internal(&format!("account {id} has no state after opening")))?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/accounts/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, ApiJson(account)))
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
    // Served from the state view when the account is live; an account never opened is
    // answered from the store without starting an actor.
    let current = accessible(&accounts, &principal, &id).await?;
    view(&id, &current)
        .map(ApiJson)
        .ok_or_else(|| not_found(&id))
}

/// Checks a request amount against the schema's range `min..=MAX_AMOUNT`.
fn in_range(field: &str, value: i64, min: i64) -> Result<(), Problem> {
    if (min..=MAX_AMOUNT).contains(&value) {
        Ok(())
    } else {
        Err(Problem::invalid_field(
            field,
            format!("{field} must be from {min} to {MAX_AMOUNT} minor units, got {value}"),
        ))
    }
}

async fn move_money(
    accounts: Aggregates<Account>,
    principal: Principal,
    ids: RequestIds,
    key: IdempotencyKey,
    id: uuid::Uuid,
    amount: i64,
    command: fn(i64) -> AccountCommand,
) -> Result<ApiJson<AccountView>, Problem> {
    in_range("amount", amount, 1)?;
    let command = command(amount);
    let id = id.to_string();
    // Unknown ids and others' accounts are refused here, so that probing them starts no
    // actor. The owner never changes once open, so the check holds for the command below.
    accessible(&accounts, &principal, &id).await?;
    let outcome = accounts
        .execute(&id, envelope(command, &principal, &key, &ids))
        .await
        .map_err(|error| problem(&id, false, error))?;
    view(&id, &outcome.state)
        .map(ApiJson)
        .ok_or_else(|| not_found(&id))
}

/// Adds money to the account.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/credit", tag = "accounts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Account id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key returns the first result", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")),
    request_body = AmountRequest,
    responses(
        (status = 200, description = "Credited; the account after it", body = AccountView),
        CommandProblems))]
async fn credit_account(
    State(accounts): State<Aggregates<Account>>,
    Writer(principal): Writer,
    Extension(ids): Extension<RequestIds>,
    key: IdempotencyKey,
    PathId(id): PathId,
    ApiJson(body): ApiJson<AmountRequest>,
) -> Result<ApiJson<AccountView>, Problem> {
    let credit = |amount| AccountCommand::Credit { amount };
    move_money(accounts, principal, ids, key, id, body.amount, credit).await
}

/// Takes money from the account; refused (409 insufficient-funds) beyond the balance.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/debit", tag = "accounts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Account id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key returns the first result", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")),
    request_body = AmountRequest,
    responses(
        (status = 200, description = "Debited; the account after it", body = AccountView),
        CommandProblems))]
async fn debit_account(
    State(accounts): State<Aggregates<Account>>,
    Writer(principal): Writer,
    Extension(ids): Extension<RequestIds>,
    key: IdempotencyKey,
    PathId(id): PathId,
    ApiJson(body): ApiJson<AmountRequest>,
) -> Result<ApiJson<AccountView>, Problem> {
    let debit = |amount| AccountCommand::Debit { amount };
    move_money(accounts, principal, ids, key, id, body.amount, debit).await
}

/// The account's events, oldest first.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/events", tag = "accounts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account's history", body = AccountHistoryView),
        ReadProblems))]
async fn account_events(
    State(accounts): State<Aggregates<Account>>,
    Reader(principal): Reader,
    PathId(id): PathId,
) -> Result<ApiJson<AccountHistoryView>, Problem> {
    let id = id.to_string();
    accessible(&accounts, &principal, &id).await?;
    let history = accounts
        .history(&id)
        .await
        .map_err(|e| Problem::internal(&e))?;
    if history.is_empty() {
        return Err(not_found(&id));
    }
    let events = history
        .into_iter()
        .map(|entry| AccountEventView {
            version: entry.version,
            event_type: entry.event_type,
            recorded_at: rfc3339(entry.recorded_at_micros),
            correlation_id: entry.correlation_id,
            data: event_data(&entry.event),
        })
        .collect();
    Ok(ApiJson(AccountHistoryView { id, events }))
}

/// The JSON face of an event (the stored form is the codec's, not this).
fn event_data(event: &AccountEvent) -> serde_json::Value {
    match event {
        AccountEvent::Opened {
            owner,
            initial_balance,
            subject,
        } => serde_json::json!({
            "owner": owner, "initial_balance": initial_balance, "subject": subject
        }),
        AccountEvent::Credited { amount } | AccountEvent::Debited { amount } => {
            serde_json::json!({ "amount": amount })
        }
    }
}

fn rfc3339(micros: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    humantime::format_rfc3339_micros(at).to_string()
}
