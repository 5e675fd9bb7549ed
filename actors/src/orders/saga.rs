//! The order saga (the seed's): place the order, reserve stock for every line, authorize the
//! payment, confirm the order (the point of no return), then commit the reserved stock. A
//! refusal or a step that keeps failing undoes the completed steps in reverse: refund, release
//! each line, and cancel the order with the reason (`out of stock: <product>`, `payment
//! declined: <reason>`).

use playhouse_runtime::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Order, OrderCommand, OrderError, OrderLine};
use crate::customers::{Customer, CustomerState};
use crate::inventory::{Stock, StockCommand, StockError};
use crate::payments::{Payment, PaymentCommand, PaymentState, PaymentStatus, payment_id_for};

/// What an order saga works on: the order as it is to be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSagaInput {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total: i64,
    /// The customer's owner, to whom the order and its payment belong.
    pub subject: String,
}

/// The order saga's steps, run against the aggregates wherever they live.
#[derive(Debug, Clone)]
pub struct OrderSaga {
    pub orders: Aggregates<Order>,
    pub stock: Aggregates<Stock>,
    pub payments: Aggregates<Payment>,
    pub customers: Aggregates<Customer>,
}

/// Where each step is, for an order of `lines` lines.
enum Stage {
    Place,
    Reserve(usize),
    Authorize,
    Confirm,
    Commit(usize),
}

fn stage(lines: usize, step: usize) -> Stage {
    match step {
        0 => Stage::Place,
        n if n <= lines => Stage::Reserve(n - 1),
        n if n == lines + 1 => Stage::Authorize,
        n if n == lines + 2 => Stage::Confirm,
        n => Stage::Commit(n - lines - 3),
    }
}

fn envelope<C>(command: C, command_id: String) -> CommandEnvelope<C> {
    CommandEnvelope::new(command)
        .with_correlation_id(command_id.clone())
        .with_command_id(command_id)
}

impl OrderSaga {
    /// The first step's command: what the route sends too (with the same command id), so that
    /// the order exists when the route answers, and the saga's step finds it done.
    pub fn place(input: &OrderSagaInput) -> OrderCommand {
        OrderCommand::Place {
            customer_id: input.customer_id.clone(),
            lines: input.lines.clone(),
            subject: input.subject.clone(),
        }
    }

    async fn authorize(&self, input: &OrderSagaInput, command_id: String) -> StepOutcome {
        let customer = match self.customers.get(&input.customer_id).await {
            Ok(customer) => customer,
            Err(error) => return StepOutcome::of::<(), _>(Err(error), |e| e.to_string()),
        };
        let CustomerState::Registered { credit_limit, .. } = customer.state else {
            return StepOutcome::Refused("payment declined: no such customer".into());
        };
        let command = PaymentCommand::Authorize {
            order_id: input.order_id.clone(),
            customer_id: input.customer_id.clone(),
            amount: input.total,
            credit_limit,
            subject: input.subject.clone(),
        };
        let payment = payment_id_for(&input.order_id);
        match self
            .payments
            .execute(&payment, envelope(command, command_id))
            .await
        {
            // A retried authorization gets the first answer: declined stays declined.
            Ok(outcome) => match outcome.state.state {
                PaymentState::Decided {
                    status: PaymentStatus::Declined,
                    reason,
                    ..
                } => StepOutcome::Refused(format!(
                    "payment declined: {}",
                    reason.unwrap_or_default()
                )),
                _ => StepOutcome::Done,
            },
            Err(error) => {
                StepOutcome::of::<(), _>(Err(error), |e| format!("payment declined: {e}"))
            }
        }
    }
}

impl SagaKind for OrderSaga {
    const KIND: &'static str = "order_saga";
    type Input = OrderSagaInput;

    fn steps(&self, input: &OrderSagaInput) -> Vec<Step> {
        let line = |verb: &str, l: &OrderLine| format!("{verb} {} x {}", l.quantity, l.product_id);
        let mut steps = vec![Step {
            name: "place the order".into(),
            target: "orders",
            kind: StepKind::Compensable,
        }];
        steps.extend(input.lines.iter().map(|l| Step {
            name: line("reserve", l),
            target: "inventory",
            kind: StepKind::Compensable,
        }));
        steps.push(Step {
            name: "authorize the payment".into(),
            target: "payments",
            kind: StepKind::Compensable,
        });
        steps.push(Step {
            name: "confirm the order".into(),
            target: "orders",
            kind: StepKind::Pivot,
        });
        steps.extend(input.lines.iter().map(|l| Step {
            name: line("commit", l),
            target: "inventory",
            kind: StepKind::Retriable,
        }));
        steps
    }

    async fn act(&self, input: &OrderSagaInput, step: usize, command_id: String) -> StepOutcome {
        match stage(input.lines.len(), step) {
            Stage::Place => StepOutcome::of(
                self.orders
                    .execute(&input.order_id, envelope(Self::place(input), command_id))
                    .await,
                |e: OrderError| e.to_string(),
            ),
            Stage::Reserve(line) => {
                let line = &input.lines[line];
                let command = StockCommand::Reserve {
                    order_id: input.order_id.clone(),
                    quantity: u64::from(line.quantity),
                };
                StepOutcome::of(
                    self.stock
                        .execute(&line.product_id, envelope(command, command_id))
                        .await,
                    |e: StockError| match e {
                        StockError::OutOfStock { .. } | StockError::NoStock => {
                            format!("out of stock: {}", line.product_id)
                        }
                        other => other.to_string(),
                    },
                )
            }
            Stage::Authorize => self.authorize(input, command_id).await,
            Stage::Confirm => StepOutcome::of(
                self.orders
                    .execute(&input.order_id, envelope(OrderCommand::Confirm, command_id))
                    .await,
                |e: OrderError| match e {
                    OrderError::AlreadyCancelled => "the order was cancelled".to_owned(),
                    other => other.to_string(),
                },
            ),
            Stage::Commit(line) => {
                let command = StockCommand::Commit {
                    order_id: input.order_id.clone(),
                };
                StepOutcome::of(
                    self.stock
                        .execute(&input.lines[line].product_id, envelope(command, command_id))
                        .await,
                    |e: StockError| e.to_string(),
                )
            }
        }
    }

    async fn compensate(
        &self,
        input: &OrderSagaInput,
        step: usize,
        reason: &str,
        command_id: String,
    ) -> StepOutcome {
        match stage(input.lines.len(), step) {
            Stage::Place => {
                let command = OrderCommand::Cancel {
                    reason: reason.to_owned(),
                };
                StepOutcome::of(
                    self.orders
                        .execute(&input.order_id, envelope(command, command_id))
                        .await,
                    |e: OrderError| e.to_string(),
                )
            }
            Stage::Reserve(line) => {
                let command = StockCommand::Release {
                    order_id: input.order_id.clone(),
                };
                StepOutcome::of(
                    self.stock
                        .execute(&input.lines[line].product_id, envelope(command, command_id))
                        .await,
                    |e: StockError| e.to_string(),
                )
            }
            Stage::Authorize => {
                let command = PaymentCommand::Refund {
                    reason: reason.to_owned(),
                };
                StepOutcome::of(
                    self.payments
                        .execute(
                            &payment_id_for(&input.order_id),
                            envelope(command, command_id),
                        )
                        .await,
                    |e| e.to_string(),
                )
            }
            // Nothing after the pivot is ever compensated.
            Stage::Confirm | Stage::Commit(_) => StepOutcome::Done,
        }
    }
}
