//! What crosses an actor or node boundary for the guestbook: its command, event and refusals.

use playhouse_runtime::aggregate::{DomainError, Refusal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryCommand {
    Sign { text: String, subject: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryEvent {
    Signed { text: String, subject: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum EntryError {
    #[error("the text must be 1 to 140 characters")]
    BadText,
    #[error("this entry is signed already")]
    Signed,
}

impl DomainError for EntryError {
    fn refusal(&self) -> Refusal {
        match self {
            EntryError::BadText => Refusal::invalid_field("text"),
            EntryError::Signed => Refusal::conflict("conflict", "The entry is signed already"),
        }
    }
}
