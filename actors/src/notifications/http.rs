//! The notifications route: a customer's notifications, a page at a time.

use axum::extract::State;
use playhouse_runtime::bus::key;
use playhouse_runtime::prelude::*;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::read_model::{NOTIFICATIONS, Notification};
use crate::customers::Customer;

#[derive(Clone)]
struct Notifications {
    customers: Aggregates<Customer>,
    read_models: ReadModels,
}

pub fn routes(customers: Aggregates<Customer>, read_models: ReadModels) -> Routes {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .with_state(Notifications {
            customers,
            read_models,
        })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// Whose notifications.
    pub customer_id: uuid::Uuid,
}

/// What a customer has been told about its orders and payments, oldest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications",
    security(("bearer" = [])), params(CustomerQuery, Page),
    responses((status = 200, description = "A page of the customer's notifications", body = Listed<Notification>), QueryProblems))]
async fn list_notifications(
    State(notifications): State<Notifications>,
    Reader(principal): Reader,
    ApiQuery(customer): ApiQuery<CustomerQuery>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<ApiJson<Listed<Notification>>, Problem> {
    page.size()?; // a malformed page is 400 before anything is read
    let customer_id = customer.customer_id.to_string();
    notifications
        .customers
        .visible_to(&principal, &customer_id, false)
        .await?;
    let listed = notifications
        .read_models
        .list(NOTIFICATIONS, &key(&[&customer_id]), &page)
        .await?;
    Ok(ApiJson(listed))
}
