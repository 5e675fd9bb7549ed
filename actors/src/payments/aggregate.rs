//! The payment aggregate: one per order, authorized against the customer's credit limit or
//! declined with a reason, and refunded when its order is cancelled. Pure rules, no actors.

use playhouse_runtime::aggregate::Aggregate;
use serde::{Deserialize, Serialize};

use super::messages::{PaymentCommand, PaymentError, PaymentEvent};
use crate::money::MAX_AMOUNT;

/// Namespace of payment ids: an order's payment is `uuid_v5(namespace, order id)`, so that
/// whoever knows the order finds its payment.
const PAYMENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x94a2_6f1d_0c3b_4e88_a7d5_1b60_ce2f_8a49);

/// The id of `order_id`'s payment.
pub fn payment_id_for(order_id: &str) -> String {
    uuid::Uuid::new_v5(&PAYMENT_ID_NAMESPACE, order_id.as_bytes()).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    Authorized,
    Declined,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

/// Marker type naming the payment aggregate kind.
#[derive(Debug, Clone, Copy)]
pub struct Payment;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    #[default]
    None,
    Decided {
        order_id: String,
        customer_id: String,
        amount: i64,
        status: PaymentStatus,
        /// Why it was declined or refunded.
        reason: Option<String>,
        subject: String,
    },
}

impl Aggregate for Payment {
    const KIND: &'static str = "payment";
    const SERVICE: &'static str = super::SERVICE;
    type State = PaymentState;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;

    fn event_type(event: &PaymentEvent) -> &'static str {
        match event {
            PaymentEvent::Authorized { .. } => "PaymentAuthorized",
            PaymentEvent::Declined { .. } => "PaymentDeclined",
            PaymentEvent::Refunded { .. } => "PaymentRefunded",
        }
    }

    fn owner(state: &PaymentState) -> Option<&str> {
        match state {
            PaymentState::None => None,
            PaymentState::Decided { subject, .. } => Some(subject),
        }
    }

    fn decide(
        state: &PaymentState,
        command: &PaymentCommand,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        match (state, command) {
            (
                PaymentState::None,
                PaymentCommand::Authorize {
                    order_id,
                    customer_id,
                    amount,
                    credit_limit,
                    subject,
                },
            ) => {
                if !(1..=MAX_AMOUNT).contains(amount) {
                    return Err(PaymentError::AmountOutOfRange {
                        amount: *amount,
                        max: MAX_AMOUNT,
                    });
                }
                let (order_id, customer_id, subject) =
                    (order_id.clone(), customer_id.clone(), subject.clone());
                // Deterministic: the same amount and limit always decide the same way.
                Ok(vec![if amount <= credit_limit {
                    PaymentEvent::Authorized {
                        order_id,
                        customer_id,
                        amount: *amount,
                        subject,
                    }
                } else {
                    PaymentEvent::Declined {
                        order_id,
                        customer_id,
                        amount: *amount,
                        reason: format!("amount {amount} is over the credit limit {credit_limit}"),
                        subject,
                    }
                }])
            }
            (PaymentState::Decided { .. }, PaymentCommand::Authorize { .. }) => {
                Err(PaymentError::AlreadyDecided)
            }
            (PaymentState::None, PaymentCommand::Refund { .. }) => Err(PaymentError::NoPayment),
            (PaymentState::Decided { status, .. }, PaymentCommand::Refund { reason }) => {
                match status {
                    PaymentStatus::Authorized => Ok(vec![PaymentEvent::Refunded {
                        reason: reason.clone(),
                    }]),
                    PaymentStatus::Declined => Err(PaymentError::NotAuthorized),
                    PaymentStatus::Refunded => Err(PaymentError::AlreadyRefunded),
                }
            }
        }
    }

    fn apply(state: &mut PaymentState, event: &PaymentEvent) {
        match (state, event) {
            (
                state @ PaymentState::None,
                PaymentEvent::Authorized {
                    order_id,
                    customer_id,
                    amount,
                    subject,
                },
            ) => {
                *state = PaymentState::Decided {
                    order_id: order_id.clone(),
                    customer_id: customer_id.clone(),
                    amount: *amount,
                    status: PaymentStatus::Authorized,
                    reason: None,
                    subject: subject.clone(),
                };
            }
            (
                state @ PaymentState::None,
                PaymentEvent::Declined {
                    order_id,
                    customer_id,
                    amount,
                    reason,
                    subject,
                },
            ) => {
                *state = PaymentState::Decided {
                    order_id: order_id.clone(),
                    customer_id: customer_id.clone(),
                    amount: *amount,
                    status: PaymentStatus::Declined,
                    reason: Some(reason.clone()),
                    subject: subject.clone(),
                };
            }
            (
                PaymentState::Decided { status, reason, .. },
                PaymentEvent::Refunded { reason: why },
            ) => {
                *status = PaymentStatus::Refunded;
                *reason = Some(why.clone());
            }
            (state, event) => {
                tracing::error!(
                    ?state,
                    ?event,
                    "payment event does not apply to this state; ignored"
                );
            }
        }
    }
}
