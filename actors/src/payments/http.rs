//! The payments route: read one (its customer's subject, or an admin). Payments are made and
//! refunded by the order saga, not over HTTP.

use axum::extract::State;
use playhouse_runtime::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Payment, PaymentState};

pub fn routes(payments: Aggregates<Payment>) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(get_payment))
        .with_state(payments.clone())
        .merge(history_routes(
            "/api/v1/payments",
            Payment::NOUN,
            Payment::SERVICE,
            payments,
        ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub id: String,
    pub order_id: String,
    pub customer_id: String,
    /// In minor units (cents).
    pub amount: i64,
    #[schema(example = "authorized")]
    pub status: String,
    /// Why it was declined or refunded.
    pub reason: Option<String>,
}

/// A payment: authorized, declined (and why) or refunded.
#[utoipa::path(get, path = "/api/v1/payments/{id}", tag = "payments",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Payment id")),
    responses((status = 200, description = "The payment", body = PaymentView), ReadProblems))]
async fn get_payment(
    State(payments): State<Aggregates<Payment>>,
    Reader(principal): Reader,
    PathId(id): PathId,
) -> Result<ApiJson<PaymentView>, Problem> {
    let id = id.to_string();
    let current = payments.visible_to(&principal, &id, false).await?;
    match current.state {
        PaymentState::Decided {
            order_id,
            customer_id,
            amount,
            status,
            reason,
            ..
        } => Ok(ApiJson(PaymentView {
            id,
            order_id,
            customer_id,
            amount,
            status: status.as_str().to_owned(),
            reason,
        })),
        PaymentState::None => Err(not_found(Payment::NOUN, &id)),
    }
}
