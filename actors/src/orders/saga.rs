//! The order saga (the seed's): place the order, reserve stock for every line, authorize the
//! payment, confirm the order (the point of no return), then commit the reserved stock. A
//! refusal or a step that keeps failing undoes the completed steps in reverse: refund, release
//! each line, and cancel the order with the reason (`out of stock: <product>`, `payment
//! declined: <reason>`).

use playhouse_runtime::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Order, OrderCommand, OrderError, OrderLine, OrderState, OrderStatus};
use crate::customers::{Customer, CustomerState};
use crate::inventory::{Stock, StockCommand, StockError};
use crate::payments::{
    Payment, PaymentCommand, PaymentError, PaymentState, PaymentStatus, payment_id_for,
};

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

    /// Authorizes the payment, unless the order was cancelled meanwhile (by its customer):
    /// then nothing is charged, and the saga compensates.
    async fn authorize(&self, input: &OrderSagaInput, step: StepContext) -> StepOutcome {
        let order = match self.orders.get(&input.order_id).await {
            Ok(order) => order,
            Err(error) => return StepOutcome::of::<(), _>(Err(error), |e| e.to_string()),
        };
        if let OrderState::Placed {
            status: OrderStatus::Cancelled,
            ..
        } = order.state
        {
            return self.cancelled_before_authorizing(input, &step).await;
        }
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
            .execute(&payment, step.envelope(command))
            .await
        {
            // A retried authorization gets the first answer: declined stays declined.
            Ok(outcome) => match outcome.state.state {
                PaymentState::Decided {
                    status: PaymentStatus::Declined,
                    reason,
                    ..
                } => StepOutcome::Refused(declined(reason)),
                _ => StepOutcome::Done,
            },
            Err(error) => {
                StepOutcome::of::<(), _>(Err(error), |e| format!("payment declined: {e}"))
            }
        }
    }

    /// The order was cancelled: the step is refused, unless an earlier attempt of it, whose
    /// answer was lost, authorized the payment already. Its command id is fenced first, so that
    /// the answer is final (a late authorization is refused): a step that may still apply is
    /// never taken for refused, or the payment would never be refunded.
    async fn cancelled_before_authorizing(
        &self,
        input: &OrderSagaInput,
        step: &StepContext,
    ) -> StepOutcome {
        let payment = payment_id_for(&input.order_id);
        let settled = match self.payments.fence(&payment, &step.command_id).await {
            Ok(Fenced::Applied) => self.authorized(input).await,
            other => Fence::of(other, |e: PaymentError| format!("payment declined: {e}")),
        };
        match settled {
            Fence::NeverApplied => StepOutcome::Refused(CANCELLED.into()),
            Fence::Applied => StepOutcome::Done,
            Fence::Refused(reason) => StepOutcome::Refused(reason),
            Fence::Failed(error) => StepOutcome::Failed(error),
        }
    }

    /// The outcome of an authorization that was applied: authorized, or declined (a decline is
    /// an event, not a refusal, so that it is part of the payment's history).
    async fn authorized(&self, input: &OrderSagaInput) -> Fence {
        match self.payments.get(&payment_id_for(&input.order_id)).await {
            Ok(payment) => match payment.state {
                PaymentState::Decided {
                    status: PaymentStatus::Declined,
                    reason,
                    ..
                } => Fence::Refused(declined(reason)),
                _ => Fence::Applied,
            },
            Err(error) => Fence::Failed(error.to_string()),
        }
    }
}

/// The reason an order is cancelled with when its customer cancelled it first.
const CANCELLED: &str = "the order was cancelled";

fn declined(reason: Option<String>) -> String {
    format!("payment declined: {}", reason.unwrap_or_default())
}

/// A compensation's answer: done, also when `nothing_to_undo` says the step is undone already
/// (released, refunded, cancelled: a compensation retried after its answer was lost).
fn undone<T, E: DomainError>(
    result: Result<T, CommandError<E>>,
    nothing_to_undo: impl FnOnce(&E) -> bool,
) -> StepOutcome {
    match result {
        Err(CommandError::Refused(error)) if nothing_to_undo(&error) => StepOutcome::Done,
        other => StepOutcome::of(other, |e| e.to_string()),
    }
}

impl SagaKind for OrderSaga {
    const KIND: &'static str = "order_saga";
    const SERVICE: &'static str = super::SERVICE;
    type Input = OrderSagaInput;
    // The route places the order itself (see `OrderSaga::place`).
    const STARTER_SENDS_FIRST_STEP: bool = true;

    fn steps(&self, input: &OrderSagaInput) -> Vec<Step> {
        let line = |verb: &str, l: &OrderLine| format!("{verb} {} x {}", l.quantity, l.product_id);
        let mut steps = vec![Step {
            name: "place the order".into(),
            target: Order::SERVICE,
            kind: StepKind::Compensable,
        }];
        steps.extend(input.lines.iter().map(|l| Step {
            name: line("reserve", l),
            target: Stock::SERVICE,
            kind: StepKind::Compensable,
        }));
        steps.push(Step {
            name: "authorize the payment".into(),
            target: Payment::SERVICE,
            kind: StepKind::Compensable,
        });
        steps.push(Step {
            name: "confirm the order".into(),
            target: Order::SERVICE,
            kind: StepKind::Pivot,
        });
        steps.extend(input.lines.iter().map(|l| Step {
            name: line("commit", l),
            target: Stock::SERVICE,
            kind: StepKind::Retriable,
        }));
        steps
    }

    async fn act(&self, input: &OrderSagaInput, step: usize, context: StepContext) -> StepOutcome {
        match stage(input.lines.len(), step) {
            Stage::Place => StepOutcome::of(
                self.orders
                    .execute(&input.order_id, context.envelope(Self::place(input)))
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
                        .execute(&line.product_id, context.envelope(command))
                        .await,
                    |e| reserve_refused(line, e),
                )
            }
            Stage::Authorize => self.authorize(input, context).await,
            Stage::Confirm => StepOutcome::of(
                self.orders
                    .execute(&input.order_id, context.envelope(OrderCommand::Confirm))
                    .await,
                confirm_refused,
            ),
            Stage::Commit(line) => {
                let command = StockCommand::Commit {
                    order_id: input.order_id.clone(),
                };
                StepOutcome::of(
                    self.stock
                        .execute(&input.lines[line].product_id, context.envelope(command))
                        .await,
                    |e: StockError| e.to_string(),
                )
            }
        }
    }

    async fn fence(&self, input: &OrderSagaInput, step: usize, context: StepContext) -> Fence {
        let id = &context.command_id;
        match stage(input.lines.len(), step) {
            Stage::Place => Fence::of(
                self.orders.fence(&input.order_id, id).await,
                |e: OrderError| e.to_string(),
            ),
            Stage::Reserve(line) => {
                let line = &input.lines[line];
                Fence::of(self.stock.fence(&line.product_id, id).await, |e| {
                    reserve_refused(line, e)
                })
            }
            Stage::Authorize => {
                let payment = payment_id_for(&input.order_id);
                match self.payments.fence(&payment, id).await {
                    Ok(Fenced::Applied) => self.authorized(input).await,
                    other => Fence::of(other, |e| format!("payment declined: {e}")),
                }
            }
            Stage::Confirm => Fence::of(
                self.orders.fence(&input.order_id, id).await,
                confirm_refused,
            ),
            // Past the pivot steps are retried until they succeed, never settled.
            Stage::Commit(line) => Fence::Failed(format!(
                "committing line {line} is retried until it succeeds, not fenced"
            )),
        }
    }

    async fn compensate(
        &self,
        input: &OrderSagaInput,
        step: usize,
        reason: &str,
        context: StepContext,
    ) -> StepOutcome {
        match stage(input.lines.len(), step) {
            Stage::Place => {
                let command = OrderCommand::Cancel {
                    reason: reason.to_owned(),
                };
                undone(
                    self.orders
                        .execute(&input.order_id, context.envelope(command))
                        .await,
                    |e| matches!(e, OrderError::AlreadyCancelled),
                )
            }
            Stage::Reserve(line) => {
                let command = StockCommand::Release {
                    order_id: input.order_id.clone(),
                };
                undone(
                    self.stock
                        .execute(&input.lines[line].product_id, context.envelope(command))
                        .await,
                    |e| matches!(e, StockError::NoReservation { .. }),
                )
            }
            Stage::Authorize => {
                let command = PaymentCommand::Refund {
                    reason: reason.to_owned(),
                };
                let payment = payment_id_for(&input.order_id);
                // Declined (not authorized), never authorized, or refunded: nothing was taken.
                undone(
                    self.payments
                        .execute(&payment, context.envelope(command))
                        .await,
                    |e| {
                        matches!(
                            e,
                            PaymentError::NotAuthorized
                                | PaymentError::NoPayment
                                | PaymentError::AlreadyRefunded
                        )
                    },
                )
            }
            // Nothing after the pivot is ever compensated.
            Stage::Confirm | Stage::Commit(_) => StepOutcome::Done,
        }
    }
}

fn reserve_refused(line: &OrderLine, error: StockError) -> String {
    match error {
        StockError::OutOfStock { .. } | StockError::NoStock => {
            format!("out of stock: {}", line.product_id)
        }
        other => other.to_string(),
    }
}

fn confirm_refused(error: OrderError) -> String {
    match error {
        OrderError::AlreadyCancelled => CANCELLED.to_owned(),
        other => other.to_string(),
    }
}
