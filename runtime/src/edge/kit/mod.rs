//! The service kit's edge pieces: what every service's `http.rs` would otherwise write again.
//!
//! - [`CommandContext`]: the writer role, request ids and Idempotency-Key of a command request,
//!   and the envelope built from them;
//! - [`CommandAnswer`]: 200, 201 + `Location` or 202, with the command's log position in
//!   `X-Playhouse-Position` (read your writes);
//! - [`command_problem`]: any [`CommandError`] as the problem the client sees (`unavailable`
//!   when nothing was applied, `outcome-unknown` when it may have been), [`read_problem`] the
//!   same for a read, and [`saga_problem`] any [`SagaError`](crate::saga::SagaError);
//! - [`visible`]: an aggregate as a principal may see it (ownership: someone else's resource is
//!   not found); [`Routed`]: the same, and commands, on an `Aggregates<A>` handle, with every
//!   failure already a problem (so routes write `?`);
//! - [`problems`]: the problem responses of each kind of route, declared once for OpenAPI;
//! - [`history_routes`]: `GET {base}/{id}/events` for any aggregate;
//! - [`ApiQuery`], [`Page`] and [`ReadModels`]: read-model lists, with `min_position` waits,
//!   gathered from every member in a cluster.

mod command;
mod history;
pub mod problems;
mod query;

pub use command::{
    CommandAnswer, CommandContext, POSITION_HEADER, Routed, command_problem, not_found,
    read_problem, saga_problem, visible,
};
pub use history::{EventHistoryView, EventView, history_routes};
pub use query::{ApiQuery, Listed, MAX_PAGE, Page, ReadModels};

/// The `Idempotency-Key` header parameter, for a command route's OpenAPI `params(...)`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// Makes retries safe: the same key returns the first result.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$"
    )]
    pub idempotency_key: Option<String>,
}
