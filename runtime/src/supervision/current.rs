//! [`Current`]: the running incarnation of a supervised actor, for the handles that call it.
//!
//! A supervisor restarts a child as a new actor with a new reference. Rather than look the
//! child up by name in ractor's registry (process-global: two nodes in one process would share
//! it), the child's spec publishes every incarnation into a `Current` that its handles hold.

use std::sync::{Arc, PoisonError, RwLock};

use ractor::{ActorRef, Message};

/// The latest incarnation of one actor, or none before it first started. Cheap to clone;
/// clones share it.
pub struct Current<M: Message> {
    actor: Arc<RwLock<Option<ActorRef<M>>>>,
}

impl<M: Message> Clone for Current<M> {
    fn clone(&self) -> Self {
        Self {
            actor: self.actor.clone(),
        }
    }
}

impl<M: Message> Default for Current<M> {
    fn default() -> Self {
        Self {
            actor: Arc::default(),
        }
    }
}

impl<M: Message> std::fmt::Debug for Current<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Current")
            .field(&self.get().map(|actor| actor.get_id()))
            .finish()
    }
}

impl<M: Message> Current<M> {
    /// The latest incarnation, if one has started. It may have stopped since: sending to it
    /// then fails, as sending to any stopped actor does.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.actor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records `actor` as the latest incarnation.
    pub fn set(&self, actor: ActorRef<M>) {
        *self.actor.write().unwrap_or_else(PoisonError::into_inner) = Some(actor);
    }
}
