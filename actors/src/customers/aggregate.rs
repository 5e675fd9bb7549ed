//! The customer aggregate: who buys, how to reach them, and how much credit they have. Pure
//! rules, no actors, no I/O.

use playhouse_runtime::aggregate::Aggregate;
use serde::{Deserialize, Serialize};

use super::messages::{CustomerCommand, CustomerError, CustomerEvent};
use crate::money::MAX_AMOUNT;
use crate::text::{MAX_NAME_CHARS, is_plain};

/// Longest email address accepted (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// An email address as this shop takes it: `local@domain`, the local part 1 to 64 printable
/// ASCII characters other than `@`, the domain two or more dot-separated labels of letters,
/// digits and `-` (no label starting or ending with `-`). Quoted local parts and address
/// literals, legal but rare, are refused.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    email.len() <= MAX_EMAIL_CHARS
        && (1..=64).contains(&local.len())
        && local.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
        && domain.split('.').count() >= 2
        && domain.split('.').all(label_ok)
}

/// Marker type naming the customer aggregate kind.
#[derive(Debug, Clone, Copy)]
pub struct Customer;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerState {
    #[default]
    Unregistered,
    Registered {
        name: String,
        email: String,
        /// The most one order may cost, in minor units; payments above it are declined.
        credit_limit: i64,
        subject: String,
    },
}

impl Aggregate for Customer {
    const KIND: &'static str = "customer";
    const SERVICE: &'static str = super::SERVICE;
    type State = CustomerState;
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;

    fn event_type(_: &CustomerEvent) -> &'static str {
        "CustomerRegistered"
    }

    fn owner(state: &CustomerState) -> Option<&str> {
        match state {
            CustomerState::Unregistered => None,
            CustomerState::Registered { subject, .. } => Some(subject),
        }
    }

    fn decide(
        state: &CustomerState,
        command: &CustomerCommand,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        let CustomerCommand::Register {
            name,
            email,
            credit_limit,
            subject,
        } = command;
        if *state != CustomerState::Unregistered {
            return Err(CustomerError::AlreadyRegistered);
        }
        if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS || !is_plain(name) {
            return Err(CustomerError::InvalidName {
                max: MAX_NAME_CHARS,
            });
        }
        if !valid_email(email) {
            return Err(CustomerError::InvalidEmail {
                email: email.clone(),
            });
        }
        if !(0..=MAX_AMOUNT).contains(credit_limit) {
            return Err(CustomerError::CreditLimitOutOfRange {
                credit_limit: *credit_limit,
                max: MAX_AMOUNT,
            });
        }
        Ok(vec![CustomerEvent::Registered {
            name: name.clone(),
            email: email.clone(),
            credit_limit: *credit_limit,
            subject: subject.clone(),
        }])
    }

    fn apply(state: &mut CustomerState, event: &CustomerEvent) {
        let CustomerEvent::Registered {
            name,
            email,
            credit_limit,
            subject,
        } = event;
        *state = CustomerState::Registered {
            name: name.clone(),
            email: email.clone(),
            credit_limit: *credit_limit,
            subject: subject.clone(),
        };
    }
}
