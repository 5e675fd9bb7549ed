//! [`StateView`]: the latest state of every live aggregate of a kind, readable without a
//! message to its actor.
//!
//! Entities publish their state here after loading and after every durable command, before
//! they reply, so a read that follows a write sees it. The host removes an entity's entry when
//! the entity stops (passivation, crash), before any new entity for that id can start; so the
//! view never serves the state of an entity that is gone. Only the entity writes its entry:
//! the single-writer rule is untouched.

use std::sync::Arc;

use dashmap::DashMap;

use super::{Aggregate, Versioned};

pub struct StateView<A: Aggregate> {
    states: Arc<DashMap<String, Versioned<A::State>>>,
}

impl<A: Aggregate> Clone for StateView<A> {
    fn clone(&self) -> Self {
        Self {
            states: self.states.clone(),
        }
    }
}

impl<A: Aggregate> Default for StateView<A> {
    fn default() -> Self {
        Self {
            states: Arc::new(DashMap::new()),
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for StateView<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("kind", &A::KIND)
            .field("live", &self.states.len())
            .finish()
    }
}

impl<A: Aggregate> StateView<A> {
    /// The published state of aggregate `id`, if its entity is live.
    pub fn get(&self, id: &str) -> Option<Versioned<A::State>> {
        self.states.get(id).map(|entry| entry.value().clone())
    }

    pub(crate) fn publish(&self, id: &str, state: &Versioned<A::State>) {
        match self.states.get_mut(id) {
            Some(mut entry) => *entry = state.clone(),
            None => {
                self.states.insert(id.to_owned(), state.clone());
            }
        }
    }

    pub(crate) fn withdraw(&self, id: &str) {
        self.states.remove(id);
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}
