//! The inventory routes: receive stock of a product, and see what is in stock.

use axum::extract::State;
use playhouse_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::aggregate::MAX_QUANTITY;
use super::{Stock, StockCommand, StockState};
use crate::catalog::Product;

#[derive(Clone)]
struct Inventory {
    stock: Aggregates<Stock>,
    products: Aggregates<Product>,
}

pub fn routes(stock: Aggregates<Stock>, products: Aggregates<Product>) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(receive_stock))
        .routes(routes!(get_stock))
        .with_state(Inventory {
            stock: stock.clone(),
            products,
        })
        .merge(history_routes(
            "/api/v1/inventory",
            "stock record",
            Stock::SERVICE,
            stock,
        ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    /// Units received, 1 to 10^9.
    #[schema(minimum = 1, maximum = 1_000_000_000, example = 10)]
    #[serde(deserialize_with = "crate::money::whole")]
    pub quantity: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockView {
    pub product_id: String,
    /// Units on the shelf, free to reserve.
    pub available: u64,
    /// Units set aside for orders not yet confirmed.
    pub reserved: u64,
    /// Units gone with confirmed orders.
    pub committed: u64,
}

fn view(product_id: String, state: &StockState) -> StockView {
    StockView {
        product_id,
        available: state.available,
        reserved: state.reserved_total(),
        committed: state.committed,
    }
}

/// Stock arrives for a product (its owner, or an admin, receives it).
#[utoipa::path(post, path = "/api/v1/inventory/{product_id}/receive", tag = "inventory",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path, description = "Product id"), IdempotencyKeyHeader),
    request_body = ReceiveRequest,
    responses((status = 200, description = "Received; the stock after it", body = StockView), CommandProblems))]
async fn receive_stock(
    State(inventory): State<Inventory>,
    context: CommandContext,
    PathId(product_id): PathId,
    ApiJson(body): ApiJson<ReceiveRequest>,
) -> Result<CommandAnswer<StockView>, Problem> {
    if !(1..=MAX_QUANTITY).contains(&body.quantity) {
        return Err(Problem::invalid_field(
            "quantity",
            format!(
                "quantity must be from 1 to {MAX_QUANTITY}, got {}",
                body.quantity
            ),
        ));
    }
    let product_id = product_id.to_string();
    let product = inventory
        .products
        .visible_to(&context.principal, &product_id, true)
        .await?;
    let owner = Product::owner(&product.state)
        .ok_or_else(|| not_found(Product::NOUN, &product_id))?
        .to_owned();
    let command = StockCommand::Receive {
        quantity: body.quantity,
        subject: owner,
    };
    let outcome = inventory
        .stock
        .command(&product_id, context.envelope(command))
        .await?;
    let stock = view(product_id, &outcome.state.state);
    Ok(CommandAnswer::ok(stock, outcome.position))
}

/// What is in stock for a product (any reader).
#[utoipa::path(get, path = "/api/v1/inventory/{product_id}", tag = "inventory",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path, description = "Product id")),
    responses((status = 200, description = "The product's stock", body = StockView), ReadProblems))]
async fn get_stock(
    State(inventory): State<Inventory>,
    Reader(principal): Reader,
    PathId(product_id): PathId,
) -> Result<ApiJson<StockView>, Problem> {
    let product_id = product_id.to_string();
    // A product that exists has stock (perhaps none yet); another id is not found.
    inventory
        .products
        .visible_to(&principal, &product_id, false)
        .await?;
    let current = inventory.stock.current(&product_id).await?;
    Ok(ApiJson(view(product_id, &current.state)))
}
