//! [`StateView`]: the latest state of every live aggregate of a kind, readable without a
//! message to its actor.
//!
//! Entities publish their state here after loading and after every durable command, before
//! they reply, so a read that follows a write sees it. The host removes an entity's entry when
//! the entity stops (passivation, crash), before any new entity for that id can start.
//!
//! Entries are stamped with the host incarnation (generation) whose entity wrote them. When a
//! host dies, ractor kills its entities without the host hearing of each one; the next host
//! starts a new generation, which empties the view, and anything a killed entity of the old
//! generation still publishes is ignored. So the view never serves the state of an entity that
//! is gone. Only the entity writes its entry: the single-writer rule is untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::{Aggregate, Versioned};

/// A published state and the host generation of the entity that published it.
type Stamped<S> = (u64, Versioned<S>);

pub struct StateView<A: Aggregate> {
    generation: Arc<AtomicU64>,
    states: Arc<DashMap<String, Stamped<A::State>>>,
}

impl<A: Aggregate> Clone for StateView<A> {
    fn clone(&self) -> Self {
        Self {
            generation: self.generation.clone(),
            states: self.states.clone(),
        }
    }
}

impl<A: Aggregate> Default for StateView<A> {
    fn default() -> Self {
        Self {
            generation: Arc::new(AtomicU64::new(0)),
            states: Arc::new(DashMap::new()),
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for StateView<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("kind", &A::KIND)
            .field("generation", &self.generation.load(Ordering::Acquire))
            .field("entries", &self.states.len())
            .finish()
    }
}

impl<A: Aggregate> StateView<A> {
    /// The published state of aggregate `id`, if an entity of the current host has it.
    pub fn get(&self, id: &str) -> Option<Versioned<A::State>> {
        let current = self.generation.load(Ordering::Acquire);
        self.states
            .get(id)
            .filter(|entry| entry.value().0 == current)
            .map(|entry| entry.value().1.clone())
    }

    /// Starts a new host incarnation: forgets every entry and returns the new generation.
    pub(crate) fn begin_generation(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.states.clear();
        generation
    }

    /// Publishes `state` for `id`, written by an entity of host `generation`.
    pub(crate) fn publish(&self, generation: u64, id: &str, state: &Versioned<A::State>) {
        // A stale publisher may slip past this check while a new generation begins; its entry
        // then carries the old generation, which `get` ignores.
        if generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        match self.states.get_mut(id) {
            Some(mut entry) => *entry = (generation, state.clone()),
            None => {
                self.states
                    .insert(id.to_owned(), (generation, state.clone()));
            }
        }
    }

    pub(crate) fn withdraw(&self, id: &str) {
        self.states.remove(id);
    }

    /// Entries held, including stale ones not yet replaced.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::Counter;

    #[test]
    fn a_new_host_generation_hides_what_the_old_entities_published() {
        let view = StateView::<Counter>::default();
        let first = view.begin_generation();
        view.publish(
            first,
            "a",
            &Versioned {
                state: 5,
                version: 1,
            },
        );
        assert_eq!(view.get("a").map(|v| v.state), Some(5));

        let second = view.begin_generation();
        assert_eq!(view.get("a"), None, "the old host's entry is gone");
        // A killed entity of the old host publishing late changes nothing.
        view.publish(
            first,
            "a",
            &Versioned {
                state: 6,
                version: 2,
            },
        );
        assert_eq!(view.get("a"), None);
        view.publish(
            second,
            "a",
            &Versioned {
                state: 7,
                version: 2,
            },
        );
        assert_eq!(view.get("a").map(|v| v.state), Some(7));
    }
}
