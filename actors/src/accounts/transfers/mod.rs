//! Money transfers: a saga that debits the source account, then credits the target; if the
//! credit is refused, the source is credited back. The saga's stream (`transfer-{id}`) is the
//! transfer: its status is the saga's.

pub mod http;

pub use http::transfer_id_for;

use playhouse_runtime::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Account, AccountCommand, AccountError};

/// What a transfer moves: `amount` minor units from one account to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInput {
    pub from: String,
    pub to: String,
    pub amount: i64,
}

/// The transfer saga's steps.
#[derive(Debug, Clone)]
pub struct TransferSaga {
    pub accounts: Aggregates<Account>,
}

const DEBIT: usize = 0;
const CREDIT: usize = 1;

impl TransferSaga {
    async fn run(&self, account: &str, command: AccountCommand, step: StepContext) -> StepOutcome {
        StepOutcome::of(
            self.accounts.execute(account, step.envelope(command)).await,
            |e| refused(account, e),
        )
    }
}

fn refused(account: &str, error: AccountError) -> String {
    match error {
        AccountError::NotOpen => format!("account {account} does not exist"),
        other => other.to_string(),
    }
}

impl SagaKind for TransferSaga {
    const KIND: &'static str = "transfer";
    const SERVICE: &'static str = crate::accounts::SERVICE;
    type Input = TransferInput;

    fn steps(&self, input: &TransferInput) -> Vec<Step> {
        vec![
            Step {
                name: format!("debit {}", input.from),
                target: Account::SERVICE,
                kind: StepKind::Compensable,
            },
            Step {
                name: format!("credit {}", input.to),
                target: Account::SERVICE,
                kind: StepKind::Pivot,
            },
        ]
    }

    async fn act(&self, input: &TransferInput, step: usize, context: StepContext) -> StepOutcome {
        let amount = input.amount;
        match step {
            DEBIT => {
                let debit = AccountCommand::Debit { amount };
                self.run(&input.from, debit, context).await
            }
            CREDIT => {
                let credit = AccountCommand::Credit { amount };
                self.run(&input.to, credit, context).await
            }
            other => StepOutcome::Refused(format!("a transfer has no step {other}")),
        }
    }

    async fn fence(&self, input: &TransferInput, step: usize, context: StepContext) -> Fence {
        let account = if step == DEBIT {
            &input.from
        } else {
            &input.to
        };
        Fence::of(
            self.accounts.fence(account, &context.command_id).await,
            |e| refused(account, e),
        )
    }

    async fn compensate(
        &self,
        input: &TransferInput,
        step: usize,
        _reason: &str,
        context: StepContext,
    ) -> StepOutcome {
        match step {
            // The money goes back where it came from. A refusal (the source account can no
            // longer take it) leaves the saga stuck, for someone to look at: money is never
            // dropped silently.
            DEBIT => {
                let credit_back = AccountCommand::Credit {
                    amount: input.amount,
                };
                self.run(&input.from, credit_back, context).await
            }
            _ => StepOutcome::Done,
        }
    }
}
