//! The guestbook entry: pure rules, no actors, no I/O.

use playhouse_runtime::aggregate::{Access, Aggregate};
use serde::{Deserialize, Serialize};

use super::messages::{EntryCommand, EntryError, EntryEvent};

#[derive(Debug, Clone, Copy)]
pub struct Entry;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryState {
    #[default]
    Blank,
    Signed {
        text: String,
        subject: String,
    },
}

impl Aggregate for Entry {
    const KIND: &'static str = "entry";
    const SERVICE: &'static str = super::SERVICE;
    const ACCESS: Access = Access::PublicRead;
    type State = EntryState;
    type Command = EntryCommand;
    type Event = EntryEvent;
    type Error = EntryError;

    fn event_type(_: &EntryEvent) -> &'static str {
        "EntrySigned"
    }

    fn owner(state: &EntryState) -> Option<&str> {
        match state {
            EntryState::Blank => None,
            EntryState::Signed { subject, .. } => Some(subject),
        }
    }

    fn decide(state: &EntryState, command: &EntryCommand) -> Result<Vec<EntryEvent>, EntryError> {
        let EntryCommand::Sign { text, subject } = command;
        if !matches!(state, EntryState::Blank) {
            return Err(EntryError::Signed);
        }
        if text.trim().is_empty() || text.chars().count() > 140 {
            return Err(EntryError::BadText);
        }
        Ok(vec![EntryEvent::Signed {
            text: text.clone(),
            subject: subject.clone(),
        }])
    }

    fn apply(state: &mut EntryState, EntryEvent::Signed { text, subject }: &EntryEvent) {
        *state = EntryState::Signed {
            text: text.clone(),
            subject: subject.clone(),
        };
    }
}
