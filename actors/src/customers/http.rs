//! The customers routes: register one, read one (its own subject's, or any for an admin).

use axum::extract::State;
use playhouse_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Customer, CustomerCommand, CustomerState};
use crate::money::minor_units;
use crate::text::Name;

/// Namespace of customer ids derived from an Idempotency-Key (UUID v5).
const CUSTOMER_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7d3e_1c55_2a90_4f61_b3c8_0e6d_91a4_57f2);

pub fn routes(customers: Aggregates<Customer>) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(register_customer))
        .routes(routes!(get_customer))
        .with_state(customers.clone())
        .merge(history_routes(
            "/api/v1/customers",
            Customer::NOUN,
            Customer::SERVICE,
            customers,
        ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCustomerRequest {
    pub name: Name,
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = "^[!-?A-~]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$",
        example = "ada@example.com"
    )]
    pub email: String,
    /// The most one order may cost, in minor units (cents).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64, example = 50000)]
    #[serde(deserialize_with = "minor_units")]
    pub credit_limit: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerView {
    pub id: String,
    pub name: String,
    pub email: String,
    /// In minor units (cents).
    pub credit_limit: i64,
}

fn view(id: String, state: CustomerState) -> Result<CustomerView, Problem> {
    match state {
        CustomerState::Registered {
            name,
            email,
            credit_limit,
            ..
        } => Ok(CustomerView {
            id,
            name,
            email,
            credit_limit,
        }),
        CustomerState::Unregistered => Err(not_found(Customer::NOUN, &id)),
    }
}

/// Registers a customer, who belongs to the caller's subject.
#[utoipa::path(post, path = "/api/v1/customers", tag = "customers",
    security(("bearer" = [])), params(IdempotencyKeyHeader),
    request_body = RegisterCustomerRequest,
    responses((status = 201, description = "Registered", body = CustomerView), CreateProblems))]
async fn register_customer(
    State(customers): State<Aggregates<Customer>>,
    context: CommandContext,
    ApiJson(body): ApiJson<RegisterCustomerRequest>,
) -> Result<CommandAnswer<CustomerView>, Problem> {
    let id = context.new_resource_id(CUSTOMER_ID_NAMESPACE).to_string();
    let command = CustomerCommand::Register {
        name: body.name.into_string(),
        email: body.email,
        credit_limit: body.credit_limit,
        subject: context.subject(),
    };
    let created = |id, current: Versioned<CustomerState>| view(id, current.state);
    let base = "/api/v1/customers";
    context.create(&customers, id, base, command, created).await
}

/// A customer.
#[utoipa::path(get, path = "/api/v1/customers/{id}", tag = "customers",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Customer id")),
    responses((status = 200, description = "The customer", body = CustomerView), ReadProblems))]
async fn get_customer(
    State(customers): State<Aggregates<Customer>>,
    Reader(principal): Reader,
    PathId(id): PathId,
) -> Result<ApiJson<CustomerView>, Problem> {
    let id = id.to_string();
    let current = customers.visible_to(&principal, &id, false).await?;
    view(id, current.state).map(ApiJson)
}
