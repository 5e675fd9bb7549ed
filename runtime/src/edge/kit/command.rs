//! Commands at the edge: the request's context, the answer, errors as problems, and ownership.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::aggregate::{
    Access, Aggregate, Aggregates, CommandEnvelope, CommandError, CommandOutcome, DomainError,
    Versioned,
};
use crate::edge::auth::{Principal, Writer};
use crate::edge::idempotency::IdempotencyKey;
use crate::edge::problem::{Problem, ProblemCode, quote_id};
use crate::edge::request_ids::RequestIds;
use crate::position::Position;
use crate::saga::SagaError;

/// Retry-After of a write refused for lack of disk space, in seconds.
const DISK_FULL_RETRY_AFTER_S: u64 = 30;

/// The header carrying where a command's write landed (see [`crate::position`]): pass it as
/// `min_position` to a read-model query to read your own write.
pub const POSITION_HEADER: HeaderName = HeaderName::from_static("x-playhouse-position");

/// What a command request brings besides its body: the caller (checked to be a writer before
/// the body is read), the request's ids, and its Idempotency-Key.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub principal: Principal,
    pub ids: RequestIds,
    pub key: IdempotencyKey,
}

impl<S: Send + Sync> FromRequestParts<S> for CommandContext {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Writer(principal) = Writer::from_request_parts(parts, state).await?;
        let key = IdempotencyKey::from_request_parts(parts, state).await?;
        let ids = parts
            .extensions
            .get::<RequestIds>()
            .cloned()
            .ok_or_else(|| Problem::internal(&"the edge middleware set no request ids"))?;
        Ok(Self {
            principal,
            ids,
            key,
        })
    }
}

impl CommandContext {
    /// The command id of this request: its Idempotency-Key, made unique to the caller.
    pub fn command_id(&self) -> Option<String> {
        self.key.command_id(&self.principal.subject)
    }

    /// `command` with this request's command id, and its request id as correlation id.
    pub fn envelope<C>(&self, command: C) -> CommandEnvelope<C> {
        let mut envelope =
            CommandEnvelope::new(command).with_correlation_id(self.ids.request_id.to_string());
        envelope.command_id = self.command_id();
        envelope
    }

    /// `command` as one of several commands this request sends (`part` names which): its
    /// command id is this request's with `part` appended, so that each is applied once.
    pub fn part_envelope<C>(&self, part: &str, command: C) -> CommandEnvelope<C> {
        let mut envelope = self.envelope(command);
        envelope.command_id = envelope.command_id.map(|id| format!("{id}:{part}"));
        envelope
    }

    /// An id for a resource this request creates: derived from the command id (UUID v5 in
    /// `namespace`), so that a retried create names the same resource, or a fresh time-ordered
    /// UUID (v7) without an Idempotency-Key.
    pub fn new_resource_id(&self, namespace: uuid::Uuid) -> uuid::Uuid {
        match self.command_id() {
            Some(command_id) => uuid::Uuid::new_v5(&namespace, command_id.as_bytes()),
            None => uuid::Uuid::now_v7(),
        }
    }

    /// The create skeleton: `command` creates aggregate `id`; the answer is 201 with
    /// `Location: {base}/{id}` and `view` of what it created (or its problem).
    pub async fn create<A: Aggregate, V: Serialize>(
        &self,
        aggregates: &Aggregates<A>,
        id: String,
        base: &str,
        command: A::Command,
        view: impl FnOnce(String, Versioned<A::State>) -> Result<V, Problem>,
    ) -> Result<CommandAnswer<V>, Problem> {
        let outcome = aggregates.command(&id, self.envelope(command)).await?;
        let location = format!("{base}/{id}");
        let body = view(id, outcome.state)?;
        Ok(CommandAnswer::created(location, body, outcome.position))
    }

    /// The caller's subject, to record as a new resource's owner.
    pub fn subject(&self) -> String {
        self.principal.subject.to_string()
    }
}

/// The answer to a command: a status, the body, and where the command's events are in the log.
#[derive(Debug)]
pub struct CommandAnswer<T> {
    status: StatusCode,
    location: Option<String>,
    position: Option<Position>,
    body: T,
}

impl<T: Serialize> CommandAnswer<T> {
    /// 200 with `body`.
    pub fn ok(body: T, position: Option<Position>) -> Self {
        Self {
            status: StatusCode::OK,
            location: None,
            position,
            body,
        }
    }

    /// 201 with `Location` and `body`.
    pub fn created(location: String, body: T, position: Option<Position>) -> Self {
        Self {
            status: StatusCode::CREATED,
            location: Some(location),
            position,
            body,
        }
    }

    /// 202 (the work goes on after the answer) with `Location` and `body`.
    pub fn accepted(location: String, body: T, position: Option<Position>) -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            location: Some(location),
            position,
            body,
        }
    }
}

impl<T: Serialize> IntoResponse for CommandAnswer<T> {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if let Some(position) = self.position
            && let Ok(value) = HeaderValue::from_str(&position.to_string())
        {
            headers.insert(POSITION_HEADER, value);
        }
        response
    }
}

/// "no {noun} with id `{id}`", the answer for a missing resource and for someone else's.
pub fn not_found(noun: &str, id: &str) -> Problem {
    Problem::new(
        ProblemCode::NotFound,
        format!("no {noun} with id `{}`", quote_id(id)),
    )
}

/// How a command's failure on `noun` `id` is reported: a refusal as its domain says, the rest
/// by what a client can do about it.
pub fn command_problem<E: DomainError>(noun: &str, id: &str, error: CommandError<E>) -> Problem {
    match error {
        CommandError::Refused(refusal) => {
            let kind = refusal.refusal();
            if kind.status == 404 {
                return not_found(noun, id);
            }
            Problem::from_refusal(kind, refusal.to_string())
        }
        CommandError::CommandIdReused { .. } => idempotency_key_reused(),
        CommandError::Conflict { .. } => Problem::new(
            ProblemCode::Conflict,
            format!("the {noun} changed while this command ran; retry it"),
        ),
        CommandError::Unavailable {
            ref what,
            retry_after_ms,
        } => Problem::new(
            ProblemCode::Unavailable,
            format!(
                "the {noun} cannot be reached now and nothing was applied; retry later (with the \
                 same Idempotency-Key)"
            ),
        )
        .with_retry_after(retry_after_ms.div_ceil(1000).max(1))
        .with_cause(format!("{noun} {id}: {what}")),
        CommandError::DiskFull { .. } => Problem::new(
            ProblemCode::Unavailable,
            format!(
                "the {noun} takes no writes now: {error}; nothing was applied, retry later (with \
                 the same Idempotency-Key)"
            ),
        )
        // Freeing disk space takes a person.
        .with_retry_after(DISK_FULL_RETRY_AFTER_S),
        CommandError::TimedOut { .. }
        | CommandError::Interrupted { .. }
        | CommandError::Crashed { .. } => outcome_unknown(noun, id, &error),
        // Damaged data does not heal by retrying: a 500, logged in full.
        CommandError::Internal { .. } => Problem::internal(&format!("{noun} {id}: {error}")),
    }
}

/// The answer for a command that may or may not have been applied.
fn outcome_unknown(noun: &str, id: &str, error: &dyn std::fmt::Display) -> Problem {
    Problem::new(
        ProblemCode::OutcomeUnknown,
        format!(
            "the {noun} may or may not have applied this command; resend it with the same \
             Idempotency-Key: it is applied at most once, and the answer says what it did"
        ),
    )
    .with_retry_after(1)
    .with_cause(format!("{noun} {id}: {error}"))
}

/// How a failed read is reported: a read changes nothing, so a timeout or a crash is only
/// "not now"; other errors as for commands.
pub fn read_problem<E: DomainError>(noun: &str, id: &str, error: CommandError<E>) -> Problem {
    match error {
        CommandError::TimedOut { .. }
        | CommandError::Interrupted { .. }
        | CommandError::Crashed { .. } => Problem::new(
            ProblemCode::Unavailable,
            format!("the {noun} could not be read now; retry"),
        )
        .with_retry_after(1)
        .with_cause(format!("{noun} {id}: {error}")),
        other => command_problem(noun, id, other),
    }
}

/// The answer for "this Idempotency-Key was used for another request".
fn idempotency_key_reused() -> Problem {
    Problem::new(
        ProblemCode::IdempotencyKeyReused,
        "this Idempotency-Key was already used for a different request; use a new key for a new request",
    )
    .with_field("Idempotency-Key")
}

/// How a saga that could not be started (or read) is reported: a retried request with other
/// input is a reused Idempotency-Key; a store failure is retried.
pub fn saga_problem(noun: &str, error: SagaError) -> Problem {
    match error {
        SagaError::StartedDifferently(_) => idempotency_key_reused(),
        SagaError::OutcomeUnknown(_) => Problem::new(
            ProblemCode::OutcomeUnknown,
            format!(
                "the {noun} may or may not have been started; resend the request with the same \
                 Idempotency-Key: it starts at most once, and the answer says where it stands"
            ),
        )
        .with_retry_after(1)
        .with_cause(error),
        SagaError::Store(_) | SagaError::Unavailable(_) => Problem::new(
            ProblemCode::Unavailable,
            format!(
                "the {noun} could not be started or read now; retry with the same Idempotency-Key"
            ),
        )
        .with_retry_after(1)
        .with_cause(error),
    }
}

/// Aggregate `id` as `principal` may see it, for reading (`write: false`) or acting on it: one
/// that does not exist, or belongs to another subject (for a non-admin; for reading, unless it
/// is public), is not found, so that others' ids do not leak.
pub async fn visible<A: Aggregate>(
    aggregates: &Aggregates<A>,
    principal: &Principal,
    noun: &str,
    id: &str,
    write: bool,
) -> Result<Versioned<A::State>, Problem> {
    let current = aggregates
        .get(id)
        .await
        .map_err(|error| read_problem(noun, id, error))?;
    let allowed = match A::owner(&current.state) {
        None => false,
        Some(owner) => principal.may_access(owner) || (!write && A::ACCESS == Access::PublicRead),
    };
    if allowed {
        Ok(current)
    } else {
        Err(not_found(noun, id))
    }
}

/// An aggregate kind as routes use it: every failure already the problem the client sees,
/// with the kind's [`Aggregate::NOUN`] in its words, so that a route writes `?`.
pub trait Routed<A: Aggregate> {
    /// Runs `envelope` on aggregate `id`: what it did, or the problem to answer.
    fn command(
        &self,
        id: &str,
        envelope: CommandEnvelope<A::Command>,
    ) -> impl Future<Output = Result<CommandOutcome<A>, Problem>> + Send;

    /// Aggregate `id`'s state, whoever owns it (its default state, version 0, if it has no
    /// events).
    fn current(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Versioned<A::State>, Problem>> + Send;

    /// Aggregate `id` as `principal` may see it, for reading (`write: false`) or acting on it
    /// (see [`visible`]).
    fn visible_to(
        &self,
        principal: &Principal,
        id: &str,
        write: bool,
    ) -> impl Future<Output = Result<Versioned<A::State>, Problem>> + Send;
}

impl<A: Aggregate> Routed<A> for Aggregates<A> {
    async fn command(
        &self,
        id: &str,
        envelope: CommandEnvelope<A::Command>,
    ) -> Result<CommandOutcome<A>, Problem> {
        self.execute(id, envelope)
            .await
            .map_err(|error| command_problem(A::NOUN, id, error))
    }

    async fn current(&self, id: &str) -> Result<Versioned<A::State>, Problem> {
        self.get(id)
            .await
            .map_err(|error| read_problem(A::NOUN, id, error))
    }

    async fn visible_to(
        &self,
        principal: &Principal,
        id: &str,
        write: bool,
    ) -> Result<Versioned<A::State>, Problem> {
        visible(self, principal, A::NOUN, id, write).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Refusal;

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl DomainError for Never {
        fn refusal(&self) -> Refusal {
            Refusal::invalid_field("x")
        }
    }

    fn unknown_ones() -> Vec<CommandError<Never>> {
        vec![
            CommandError::TimedOut {
                stream: "account-1".into(),
                after_ms: 5000,
            },
            CommandError::Interrupted {
                stream: "account-1".into(),
                reason: "link closed".into(),
            },
            CommandError::Crashed {
                stream: "account-1".into(),
            },
        ]
    }

    #[test]
    fn a_command_that_may_have_applied_is_outcome_unknown_and_says_to_resend_with_the_key() {
        for error in unknown_ones() {
            let problem = command_problem("account", "1", error);
            assert_eq!(problem.slug, "outcome-unknown");
            assert_eq!(problem.status, 503);
            assert_eq!(problem.retry_after, Some(1));
            assert!(
                problem.detail.contains("same Idempotency-Key"),
                "{}",
                problem.detail
            );
        }
    }

    #[test]
    fn a_command_never_applied_is_unavailable_and_a_read_is_never_outcome_unknown() {
        let unavailable = CommandError::<Never>::Unavailable {
            what: "node node-3".into(),
            retry_after_ms: 2500,
        };
        let problem = command_problem("account", "1", unavailable);
        assert_eq!(
            (problem.slug, problem.retry_after),
            ("unavailable", Some(3))
        );
        assert!(
            problem.detail.contains("nothing was applied"),
            "{}",
            problem.detail
        );
        for error in unknown_ones() {
            assert_eq!(read_problem("account", "1", error).slug, "unavailable");
        }
    }

    #[test]
    fn a_saga_start_that_may_have_happened_is_outcome_unknown() {
        let problem = saga_problem("transfer", SagaError::OutcomeUnknown("timed out".into()));
        assert_eq!(problem.slug, "outcome-unknown");
        let problem = saga_problem("transfer", SagaError::Unavailable("node down".into()));
        assert_eq!(problem.slug, "unavailable");
    }
}
