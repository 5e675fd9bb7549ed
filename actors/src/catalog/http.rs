//! The catalog routes: create a product, read one, list them.

use axum::extract::State;
use playhouse_runtime::prelude::*;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::read_model::{PRODUCTS, ProductView};
use super::{Product, ProductCommand, ProductState, product_id_for};
use crate::money::minor_units;
use crate::text::Name;

#[derive(Clone)]
struct Catalog {
    products: Aggregates<Product>,
    read_models: ReadModels,
}

pub fn routes(products: Aggregates<Product>, read_models: ReadModels) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(create_product, list_products))
        .routes(routes!(get_product))
        .with_state(Catalog {
            products: products.clone(),
            read_models,
        })
        .merge(history_routes(
            "/api/v1/products",
            Product::NOUN,
            Product::SERVICE,
            products,
        ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    pub name: Name,
    /// Unique across the catalog.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        example = "TEA-001"
    )]
    pub sku: String,
    /// Price in minor units (cents).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64, example = 1999)]
    #[serde(deserialize_with = "minor_units")]
    pub price: i64,
}

fn view(id: String, state: ProductState) -> Result<ProductView, Problem> {
    match state {
        ProductState::Listed {
            name, sku, price, ..
        } => Ok(ProductView {
            id,
            name,
            sku,
            price,
        }),
        ProductState::Absent => Err(not_found(Product::NOUN, &id)),
    }
}

/// Adds a product to the catalog. Its SKU must be unique: the product's id is derived from it.
#[utoipa::path(post, path = "/api/v1/products", tag = "catalog",
    security(("bearer" = [])), params(IdempotencyKeyHeader),
    request_body = CreateProductRequest,
    responses((status = 201, description = "Created", body = ProductView), CreateProblems))]
async fn create_product(
    State(catalog): State<Catalog>,
    context: CommandContext,
    ApiJson(body): ApiJson<CreateProductRequest>,
) -> Result<CommandAnswer<ProductView>, Problem> {
    // The SKU names the product: a second product with this SKU is this one, and refused.
    let id = product_id_for(&body.sku).to_string();
    let command = ProductCommand::Create {
        name: body.name.into_string(),
        sku: body.sku,
        price: body.price,
        subject: context.subject(),
    };
    let created = |id, current: Versioned<ProductState>| view(id, current.state);
    let base = "/api/v1/products";
    context
        .create(&catalog.products, id, base, command, created)
        .await
}

/// One product (any reader may read the catalog).
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "catalog",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Product id")),
    responses((status = 200, description = "The product", body = ProductView), ReadProblems))]
async fn get_product(
    State(catalog): State<Catalog>,
    Reader(principal): Reader,
    PathId(id): PathId,
) -> Result<ApiJson<ProductView>, Problem> {
    let id = id.to_string();
    let current = catalog.products.visible_to(&principal, &id, false).await?;
    view(id, current.state).map(ApiJson)
}

/// The catalog, a page at a time, in id order (from the products read model).
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog",
    security(("bearer" = [])), params(Page),
    responses((status = 200, description = "A page of products", body = Listed<ProductView>), QueryProblems))]
async fn list_products(
    State(catalog): State<Catalog>,
    _: Reader,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<ApiJson<Listed<ProductView>>, Problem> {
    let listed = catalog.read_models.list(PRODUCTS, b"", &page).await?;
    Ok(ApiJson(listed))
}
