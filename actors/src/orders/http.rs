//! The orders routes: place an order (at the catalog's prices), read it, cancel it, and list a
//! customer's orders.

use axum::extract::State;
use playhouse_runtime::bus::key;
use playhouse_runtime::prelude::*;
use playhouse_runtime::saga;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::aggregate::{MAX_LINE_QUANTITY, MAX_LINES};
use super::read_model::{ORDERS_BY_CUSTOMER, OrderSummary};
use super::saga::{OrderSaga, OrderSagaInput};
use super::{Order, OrderCommand, OrderError, OrderLine, OrderState, PlacedLine, total_of};
use crate::catalog::{Product, ProductState};
use crate::customers::Customer;
use crate::payments::payment_id_for;

/// Namespace of order ids derived from an Idempotency-Key (UUID v5).
const ORDER_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x0e8c_44d1_6b2f_4a37_9d05_c2f1_5e7a_b983);

/// The id of the order that `subject` places with `Idempotency-Key: key`: a client that lost
/// the answer can look the order up (`GET /api/v1/orders/{id}`) instead of guessing.
pub fn order_id_for(subject: &str, key: &str) -> String {
    let command_id = playhouse_runtime::edge::IdempotencyKey(Some(key.to_owned()))
        .command_id(subject)
        .unwrap_or_default();
    uuid::Uuid::new_v5(&ORDER_ID_NAMESPACE, command_id.as_bytes()).to_string()
}

#[derive(Clone)]
struct Orders {
    orders: Aggregates<Order>,
    customers: Aggregates<Customer>,
    products: Aggregates<Product>,
    sagas: Sagas<OrderSaga>,
    read_models: ReadModels,
}

pub fn routes(
    orders: Aggregates<Order>,
    customers: Aggregates<Customer>,
    products: Aggregates<Product>,
    sagas: Sagas<OrderSaga>,
    read_models: ReadModels,
) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .with_state(Orders {
            orders: orders.clone(),
            customers,
            products,
            sagas,
            read_models,
        })
        .merge(history_routes(
            "/api/v1/orders",
            Order::NOUN,
            Order::SERVICE,
            orders,
        ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub product_id: uuid::Uuid,
    #[schema(minimum = 1, maximum = 10000, example = 2)]
    #[serde(deserialize_with = "crate::money::whole")]
    pub quantity: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    pub customer_id: uuid::Uuid,
    /// What to buy; a product named twice counts once, with the quantities added.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlacedView {
    pub order_id: String,
    #[schema(example = "pending")]
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub id: String,
    pub customer_id: String,
    /// The order's payment (`GET /api/v1/payments/{id}`), once the saga has asked for it.
    pub payment_id: String,
    pub lines: Vec<PlacedLine>,
    /// In minor units (cents).
    pub total: i64,
    #[schema(example = "pending")]
    pub status: String,
    /// Why it was cancelled.
    pub reason: Option<String>,
}

fn view(id: String, state: OrderState) -> Result<OrderView, Problem> {
    match state {
        OrderState::Placed {
            customer_id,
            lines,
            total,
            status,
            reason,
            ..
        } => Ok(OrderView {
            payment_id: payment_id_for(&id),
            id,
            customer_id,
            lines,
            total,
            status: status.as_str().to_owned(),
            reason,
        }),
        OrderState::Unplaced => Err(not_found(Order::NOUN, &id)),
    }
}

/// The request's lines with a product named twice merged, each at the catalog's price now.
async fn priced_lines(
    orders: &Orders,
    principal: &Principal,
    requested: Vec<LineRequest>,
) -> Result<Vec<OrderLine>, Problem> {
    if requested.is_empty() || requested.len() > MAX_LINES {
        return Err(Problem::invalid_field(
            "lines",
            format!(
                "an order has 1 to {MAX_LINES} lines, got {}",
                requested.len()
            ),
        ));
    }
    let mut lines: Vec<OrderLine> = Vec::new();
    // Where each merged line was first named, for refusals that name what the client sent.
    let mut named_at: Vec<Vec<usize>> = Vec::new();
    for (at, line) in requested.into_iter().enumerate() {
        // Each line as sent, before any merging hides it.
        if !(1..=MAX_LINE_QUANTITY).contains(&line.quantity) {
            return Err(Problem::invalid_field(
                "lines",
                format!(
                    "lines[{at}].quantity must be 1 to {MAX_LINE_QUANTITY}, got {}",
                    line.quantity
                ),
            ));
        }
        let product_id = line.product_id.to_string();
        if let Some(same) = lines.iter().position(|l| l.product_id == product_id) {
            named_at[same].push(at);
            let merged = lines[same].quantity.saturating_add(line.quantity);
            if merged > MAX_LINE_QUANTITY {
                let places: Vec<String> = named_at[same]
                    .iter()
                    .map(|n| format!("lines[{n}]"))
                    .collect();
                return Err(Problem::invalid_field(
                    "lines",
                    format!(
                        "{} all order product `{product_id}`: {merged} units together, more than \
                         the {MAX_LINE_QUANTITY} one product may have in an order",
                        places.join(", ")
                    ),
                ));
            }
            lines[same].quantity = merged;
            continue;
        }
        named_at.push(vec![at]);
        let product = orders
            .products
            .visible_to(principal, &product_id, false)
            .await
            .map_err(|_| {
                Problem::invalid_field(
                    "lines",
                    format!("lines[{at}].product_id: no product with id `{product_id}`"),
                )
            })?;
        let ProductState::Listed { price, .. } = product.state else {
            unreachable!("visible returns only products that exist");
        };
        lines.push(OrderLine {
            product_id,
            quantity: line.quantity,
            unit_price: price,
        });
    }
    Ok(lines)
}

/// Places an order for one of the caller's customers, at the catalog's prices. Answers 202 at
/// once: the order is `pending` until the order saga confirms it or cancels it (and says why).
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])), params(IdempotencyKeyHeader),
    request_body = PlaceOrderRequest,
    responses((status = 202, description = "Placed; follow Location for its status", body = PlacedView), CreateProblems))]
async fn place_order(
    State(orders): State<Orders>,
    context: CommandContext,
    ApiJson(body): ApiJson<PlaceOrderRequest>,
) -> Result<CommandAnswer<PlacedView>, Problem> {
    let customer_id = body.customer_id.to_string();
    let customer = orders
        .customers
        .visible_to(&context.principal, &customer_id, true)
        .await?;
    let subject = Customer::owner(&customer.state)
        .ok_or_else(|| not_found(Customer::NOUN, &customer_id))?
        .to_owned();
    let lines = priced_lines(&orders, &context.principal, body.lines).await?;
    let id = context.new_resource_id(ORDER_ID_NAMESPACE).to_string();
    let total = total_of(&lines).map_err(|refusal| {
        command_problem(
            Order::NOUN,
            &id,
            CommandError::<OrderError>::Refused(refusal),
        )
    })?;
    let input = OrderSagaInput {
        order_id: id.clone(),
        customer_id,
        lines,
        total,
        subject,
    };
    // The saga first (durable), then its first step's command, sent here with the step's
    // command id: the order exists when this answers, and whatever happens next, the saga
    // drives it to confirmed or cancelled.
    let saga = orders
        .sagas
        .start(
            &id,
            input.clone(),
            &context.subject(),
            &context.ids.request_id,
        )
        .await
        .map_err(|error| saga_problem(Order::NOUN, error))?;
    let place = StepContext {
        command_id: saga::command_id(OrderSaga::KIND, &id, 0, "act"),
        correlation_id: saga.correlation_id,
    }
    .envelope(OrderSaga::place(&input));
    let outcome = orders.orders.execute(&id, place).await.map_err(|error| {
        if error.is_transient() {
            // The saga is started, durably, and places the order itself: this attempt failing
            // does not mean nothing will happen, so "unavailable" would be a lie.
            saga_will_place(&id, &error)
        } else {
            command_problem(Order::NOUN, &id, error)
        }
    })?;
    let placed = PlacedView {
        status: view(id.clone(), outcome.state.state)?.status,
        order_id: id.clone(),
    };
    Ok(CommandAnswer::accepted(
        format!("/api/v1/orders/{id}"),
        placed,
        outcome.position,
    ))
}

/// The answer when the order's saga is started but its first step (placing the order) could
/// not be done or confirmed now: the saga will place it; the client learns how it stands by
/// resending with the same Idempotency-Key.
fn saga_will_place(id: &str, error: &CommandError<OrderError>) -> Problem {
    Problem::new(
        ProblemCode::OutcomeUnknown,
        "the order is accepted and its saga will place it, but it could not be confirmed now; \
         resend the request with the same Idempotency-Key to get its answer",
    )
    .with_retry_after(1)
    .with_cause(format!("order {id}: {error}"))
}

/// An order: its lines, total, status, and why it was cancelled.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses((status = 200, description = "The order", body = OrderView), ReadProblems))]
async fn get_order(
    State(orders): State<Orders>,
    Reader(principal): Reader,
    PathId(id): PathId,
) -> Result<ApiJson<OrderView>, Problem> {
    let id = id.to_string();
    let current = orders.orders.visible_to(&principal, &id, false).await?;
    view(id, current.state).map(ApiJson)
}

/// Cancels a pending order.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Order id"), IdempotencyKeyHeader),
    responses((status = 200, description = "Cancelled; the order after it", body = OrderView), CommandProblems))]
async fn cancel_order(
    State(orders): State<Orders>,
    context: CommandContext,
    PathId(id): PathId,
) -> Result<CommandAnswer<OrderView>, Problem> {
    let id = id.to_string();
    orders
        .orders
        .visible_to(&context.principal, &id, true)
        .await?;
    let command = OrderCommand::Cancel {
        reason: "cancelled by the customer".into(),
    };
    let outcome = orders
        .orders
        .command(&id, context.envelope(command))
        .await?;
    let order = view(id, outcome.state.state)?;
    Ok(CommandAnswer::ok(order, outcome.position))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// Whose orders.
    pub customer_id: uuid::Uuid,
}

/// A customer's orders, a page at a time (from the orders-by-customer read model).
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])), params(CustomerQuery, Page),
    responses((status = 200, description = "A page of the customer's orders", body = Listed<OrderSummary>), QueryProblems))]
async fn list_orders(
    State(orders): State<Orders>,
    Reader(principal): Reader,
    ApiQuery(customer): ApiQuery<CustomerQuery>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<ApiJson<Listed<OrderSummary>>, Problem> {
    page.size()?; // a malformed page is 400 before anything is read
    let customer_id = customer.customer_id.to_string();
    orders
        .customers
        .visible_to(&principal, &customer_id, false)
        .await?;
    let listed = orders
        .read_models
        .list(ORDERS_BY_CUSTOMER, &key(&[&customer_id]), &page)
        .await?;
    Ok(ApiJson(listed))
}
