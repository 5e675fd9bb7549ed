//! `GET {base}/{id}/events`: any aggregate's stored events, oldest first, with the route's
//! OpenAPI description built here rather than written again by every service.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ComponentsBuilder, OpenApiBuilder, PathsBuilder, Ref, Required};
use utoipa_axum::router::OpenApiRouter;

use super::command::{read_problem, visible};
use super::problems::QueryProblems;
use super::query::ApiQuery;
use crate::aggregate::{Aggregate, Aggregates, HistoryEntry};
use crate::edge::auth::Reader;
use crate::edge::json::ApiJson;
use crate::edge::path::PathId;
use crate::edge::problem::Problem;

/// One stored event as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub version: u64,
    /// The event's stable type name, e.g. `AccountCredited`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Commit time, RFC 3339.
    pub recorded_at: String,
    /// The request (or saga) that caused it.
    pub correlation_id: Option<String>,
    /// The command id it was written under (an Idempotency-Key's, or a saga step's).
    pub causation_id: Option<String>,
    /// The event's own fields.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// An aggregate's events, oldest first, a page at a time.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventHistoryView {
    pub id: String,
    pub events: Vec<EventView>,
    /// Pass as `from_version` for the next page; absent on the last one.
    pub next_from_version: Option<u64>,
}

/// Most events one answer carries: a long history is read a page at a time, so that no answer
/// (nor what the node holds to build it) grows with the history.
const MAX_EVENTS_PER_PAGE: u64 = 1000;

/// Which page of a history.
#[derive(Debug, Default, Deserialize)]
struct HistoryPage {
    from_version: Option<u64>,
    limit: Option<u64>,
}

struct HistoryRoute<A: Aggregate> {
    aggregates: Aggregates<A>,
    noun: &'static str,
}

impl<A: Aggregate> Clone for HistoryRoute<A> {
    fn clone(&self) -> Self {
        Self {
            aggregates: self.aggregates.clone(),
            noun: self.noun,
        }
    }
}

/// `GET {base}/{id}/events` for the aggregates of `A`, readable by the aggregate's owner and
/// admins only, also for kinds every reader may see: the events say who did what and when, with
/// the request ids behind them, which is more than the resource itself shows. `noun` names one aggregate in messages
/// ("account"), `tag` groups the route in the OpenAPI document.
pub fn history_routes<A: Aggregate>(
    base: &str,
    noun: &'static str,
    tag: &'static str,
    aggregates: Aggregates<A>,
) -> OpenApiRouter {
    let path = format!("{base}/{{id}}/events");
    let operation = OperationBuilder::new()
        .tag(tag)
        .summary(Some(format!("The {noun}'s events, oldest first")))
        .operation_id(Some(format!("{tag}_events")))
        .parameter(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(format!("{noun} id")))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                )),
        )
        .parameter(
            ParameterBuilder::new()
                .name("from_version")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some("The first event's version (1 when absent)"))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1))
                        .maximum(Some(i64::MAX)),
                )),
        )
        .parameter(
            ParameterBuilder::new()
                .name("limit")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some("Events per page, 1 to 1000 (1000 when absent)"))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1))
                        .maximum(Some(MAX_EVENTS_PER_PAGE)),
                )),
        )
        .security(SecurityRequirement::new(
            crate::edge::BEARER,
            Vec::<String>::new(),
        ))
        .responses(
            ResponsesBuilder::new()
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description(format!("The {noun}'s history"))
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("EventHistoryView")))
                                .build(),
                        ),
                )
                .responses_from_into_responses::<QueryProblems>()
                .build(),
        )
        .build();
    let document = OpenApiBuilder::new()
        .paths(
            PathsBuilder::new()
                .path(path.clone(), PathItem::new(HttpMethod::Get, operation))
                .build(),
        )
        .components(Some(
            ComponentsBuilder::new()
                .schema_from::<EventHistoryView>()
                .schema_from::<EventView>()
                .build(),
        ))
        .build();
    OpenApiRouter::with_openapi(document)
        .route(&path, axum::routing::get(events::<A>))
        .with_state(HistoryRoute { aggregates, noun })
}

async fn events<A: Aggregate>(
    State(route): State<HistoryRoute<A>>,
    Reader(principal): Reader,
    PathId(id): PathId,
    ApiQuery(page): ApiQuery<HistoryPage>,
) -> Result<ApiJson<EventHistoryView>, Problem> {
    let from = page.from_version.unwrap_or(1);
    let limit = page.limit.unwrap_or(MAX_EVENTS_PER_PAGE);
    if from == 0 || from > i64::MAX as u64 {
        return Err(Problem::invalid_field(
            "from_version",
            format!("from_version must be from 1 to {}", i64::MAX),
        ));
    }
    if !(1..=MAX_EVENTS_PER_PAGE).contains(&limit) {
        return Err(Problem::invalid_field(
            "limit",
            format!("limit must be from 1 to {MAX_EVENTS_PER_PAGE}, got {limit}"),
        ));
    }
    let id = id.to_string();
    visible(&route.aggregates, &principal, route.noun, &id, true).await?;
    // One more than asked for, to know whether there is a next page.
    let mut history = route
        .aggregates
        .history_range(&id, from, from.saturating_add(limit))
        .await
        .map_err(|error| read_problem(route.noun, &id, error))?;
    let next_from_version = (history.len() as u64 > limit).then(|| from + limit);
    history.truncate(limit as usize);
    let events = history.into_iter().map(event_view::<A>).collect();
    Ok(ApiJson(EventHistoryView {
        id,
        events,
        next_from_version,
    }))
}

fn event_view<A: Aggregate>(entry: HistoryEntry<A::Event>) -> EventView {
    EventView {
        version: entry.version,
        event_type: entry.event_type,
        recorded_at: crate::time::rfc3339_micros(entry.recorded_at_micros),
        correlation_id: entry.correlation_id,
        causation_id: entry.causation_id,
        data: event_data(&entry.event),
    }
}

/// The JSON face of an event: for an enum (every event type here), the variant's fields, as
/// the type name is said beside it; `{}` for a variant without fields.
fn event_data(event: &impl Serialize) -> serde_json::Value {
    match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(variant)) if variant.len() == 1 => variant
            .into_iter()
            .next()
            .map_or(serde_json::Value::Null, |(_, fields)| fields),
        Ok(serde_json::Value::String(_)) => serde_json::json!({}),
        Ok(other) => other,
        Err(error) => serde_json::json!({ "unrenderable": error.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    enum Event {
        Opened { owner: String },
        Closed,
    }

    #[test]
    fn an_event_shows_its_fields() {
        assert_eq!(
            event_data(&Event::Opened { owner: "a".into() }),
            serde_json::json!({"owner": "a"})
        );
        assert_eq!(event_data(&Event::Closed), serde_json::json!({}));
    }
}
