//! [`StateView`]: the live aggregates of one kind, partition by partition: each one's state,
//! readable without a message to any actor, and what its partition host keeps about it.
//!
//! This table is where a live aggregate lives: one entry (its id, state, version, the version
//! of its last snapshot and when it was last used), no actor, no task. A partition host owns
//! its partition's entries: it adds one when it loads an aggregate, lets the one command task
//! running for an aggregate replace its entry, and removes entries when it passivates them.
//! A command task publishes the new state before it replies, so a read that follows a write
//! sees it.
//!
//! Each partition carries the generation of the host incarnation that owns it. A host that
//! starts begins a new generation, which empties its partition; a command task of a failed
//! incarnation that publishes late carries the old generation and is ignored. So the view never
//! serves a state that no running host stands behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::time::Instant;

use super::{Aggregate, Versioned};
use crate::placement;

/// One live aggregate.
#[derive(Debug, Clone)]
pub(crate) struct Live<S> {
    pub current: Versioned<S>,
    /// The version of its latest snapshot (0 for none).
    pub snapshot_version: u64,
    /// When a command or a read through its host last reached it (reads from the view do not
    /// count: they cost nothing to keep serving).
    pub last_active: Instant,
    /// The partition's leadership epoch it was loaded in (see [`StateView::epoch`]).
    pub epoch: u64,
}

/// One partition's live aggregates, the host generation that owns them, and the leadership
/// epoch they were loaded in.
struct Shelf<S> {
    generation: u64,
    /// Moves on whenever this node comes to lead the partition or stops (with replication):
    /// state loaded before may be behind what another leader wrote since.
    epoch: u64,
    live: HashMap<Box<str>, Live<S>>,
}

struct Shelves<A: Aggregate> {
    shelves: Box<[RwLock<Shelf<A::State>>]>,
    /// Entries over all partitions: read on every metrics update, so kept rather than summed.
    count: AtomicUsize,
}

pub struct StateView<A: Aggregate> {
    inner: Arc<Shelves<A>>,
}

impl<A: Aggregate> Clone for StateView<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for StateView<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("kind", &A::KIND)
            .field("partitions", &self.inner.shelves.len())
            .field("live", &self.len())
            .finish()
    }
}

impl<A: Aggregate> StateView<A> {
    /// An empty view of `partitions` partitions (at least one).
    pub(crate) fn new(partitions: u32) -> Self {
        let shelves = (0..partitions.max(1))
            .map(|_| {
                RwLock::new(Shelf {
                    generation: 0,
                    epoch: 0,
                    live: HashMap::new(),
                })
            })
            .collect();
        Self {
            inner: Arc::new(Shelves {
                shelves,
                count: AtomicUsize::new(0),
            }),
        }
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.inner.shelves.len() as u32
    }

    /// The partition aggregate `id` belongs to: the placement's partition of its stream.
    pub(crate) fn partition_of(&self, id: &str) -> u32 {
        let stream = [A::KIND.as_bytes(), b"-", id.as_bytes()];
        placement::partition_of_parts(stream, self.partitions())
    }

    fn read(&self, partition: u32) -> RwLockReadGuard<'_, Shelf<A::State>> {
        self.inner.shelves[partition as usize]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, partition: u32) -> RwLockWriteGuard<'_, Shelf<A::State>> {
        self.inner.shelves[partition as usize]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of aggregate `id`, if it is live.
    pub fn get(&self, id: &str) -> Option<Versioned<A::State>> {
        self.read(self.partition_of(id))
            .live
            .get(id)
            .map(|live| live.current.clone())
    }

    /// Everything kept about aggregate `id` of `partition`, if it is live.
    pub(crate) fn live(&self, partition: u32, id: &str) -> Option<Live<A::State>> {
        self.read(partition).live.get(id).cloned()
    }

    /// Starts a new host incarnation for `partition`: forgets its entries and returns the new
    /// generation and how many entries were dropped.
    pub(crate) fn begin_generation(&self, partition: u32) -> (u64, usize) {
        let mut shelf = self.write(partition);
        shelf.generation += 1;
        let dropped = shelf.live.len();
        shelf.live = HashMap::new();
        self.inner.count.fetch_sub(dropped, Ordering::Relaxed);
        (shelf.generation, dropped)
    }

    /// Forgets `partition`'s entries, keeping its generation (its host goes on), so that each
    /// is loaded again from the store on its next use; returns how many went. For a change
    /// of who leads the partition: what was kept may be behind what another leader wrote.
    pub(crate) fn forget_partition(&self, partition: u32) -> usize {
        let mut shelf = self.write(partition);
        shelf.epoch += 1;
        let dropped = shelf.live.len();
        shelf.live = HashMap::new();
        self.inner.count.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// `partition`'s leadership epoch: a state loaded in an earlier one may be behind the
    /// store, and is loaded again before it serves.
    pub(crate) fn epoch(&self, partition: u32) -> u64 {
        self.read(partition).epoch
    }

    /// Sets aggregate `id`'s entry, written by a task of host `generation` (ignored when that
    /// incarnation is gone, or when `live` was loaded in an earlier leadership epoch: a task
    /// that ran across a change of leader must not put back what may be stale). Returns
    /// whether the entry is new.
    pub(crate) fn publish(
        &self,
        partition: u32,
        generation: u64,
        id: &str,
        live: Live<A::State>,
    ) -> bool {
        let mut shelf = self.write(partition);
        if shelf.generation != generation || shelf.epoch != live.epoch {
            return false;
        }
        match shelf.live.get_mut(id) {
            Some(entry) => {
                *entry = live;
                false
            }
            None => {
                shelf.live.insert(id.into(), live);
                self.inner.count.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Records that a snapshot at `version` was saved for aggregate `id`.
    pub(crate) fn snapshot_saved(&self, partition: u32, generation: u64, id: &str, version: u64) {
        let mut shelf = self.write(partition);
        if shelf.generation != generation {
            return;
        }
        if let Some(live) = shelf.live.get_mut(id) {
            live.snapshot_version = live.snapshot_version.max(version);
        }
    }

    /// Marks aggregate `id` as used now.
    pub(crate) fn touch(&self, partition: u32, id: &str) {
        if let Some(live) = self.write(partition).live.get_mut(id) {
            live.last_active = Instant::now();
        }
    }

    /// Removes aggregate `id`'s entry; returns whether there was one.
    pub(crate) fn withdraw(&self, partition: u32, id: &str) -> bool {
        let removed = self.write(partition).live.remove(id).is_some();
        if removed {
            self.inner.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes the entries of `partition` unused since `idle_since`, except those `busy` names
    /// (an aggregate with a command in flight); returns how many went.
    pub(crate) fn passivate_idle(
        &self,
        partition: u32,
        idle_since: Instant,
        busy: impl Fn(&str) -> bool,
    ) -> usize {
        let mut shelf = self.write(partition);
        let before = shelf.live.len();
        shelf
            .live
            .retain(|id, live| live.last_active > idle_since || busy(id));
        let removed = before - shelf.live.len();
        if removed > 0 {
            // Give the memory of a partition that emptied back, not just its entries.
            if shelf.live.len() < shelf.live.capacity() / 4 {
                shelf.live.shrink_to_fit();
            }
            self.inner.count.fetch_sub(removed, Ordering::Relaxed);
        }
        removed
    }

    /// Live aggregates over all partitions.
    pub fn len(&self) -> usize {
        self.inner.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::Counter;

    fn live(state: i64, version: u64) -> Live<i64> {
        Live {
            current: Versioned { state, version },
            snapshot_version: 0,
            last_active: Instant::now(),
            epoch: 0,
        }
    }

    #[test]
    fn an_aggregate_is_in_its_streams_placement_partition() {
        let view = StateView::<Counter>::new(64);
        for id in ["a", "b", "0195a3c4-0000-7000-8000-000000000000"] {
            let stream = crate::aggregate::stream_name::<Counter>(id);
            assert_eq!(view.partition_of(id), placement::partition_of(&stream, 64));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_host_generation_hides_what_the_old_tasks_published() {
        let view = StateView::<Counter>::new(4);
        let p = view.partition_of("a");
        let (first, _) = view.begin_generation(p);
        assert!(view.publish(p, first, "a", live(5, 1)));
        assert_eq!(view.get("a").map(|v| v.state), Some(5));
        assert_eq!(view.len(), 1);

        let (second, dropped) = view.begin_generation(p);
        assert_eq!(dropped, 1);
        assert_eq!(view.get("a"), None, "the old host's entry is gone");
        assert_eq!(view.len(), 0);
        // A command task of the old host publishing late changes nothing.
        assert!(!view.publish(p, first, "a", live(6, 2)));
        assert_eq!(view.get("a"), None);
        assert!(view.publish(p, second, "a", live(7, 2)));
        assert_eq!(view.get("a").map(|v| v.state), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn passivation_keeps_busy_and_recently_used_aggregates() {
        let view = StateView::<Counter>::new(1);
        let (generation, _) = view.begin_generation(0);
        for id in ["idle", "busy", "recent"] {
            view.publish(0, generation, id, live(1, 1));
        }
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        let cutoff = Instant::now();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        view.touch(0, "recent");
        assert_eq!(view.passivate_idle(0, cutoff, |id| id == "busy"), 1);
        assert_eq!(view.get("idle"), None);
        assert!(view.get("busy").is_some() && view.get("recent").is_some());
        assert_eq!(view.len(), 2);
    }

    #[tokio::test]
    async fn a_change_of_leader_forgets_the_partition_and_refuses_what_was_loaded_before() {
        let view = StateView::<Counter>::new(4);
        let partition = view.partition_of("a");
        let (generation, _) = view.begin_generation(partition);
        let before = live(5, 5);
        assert!(view.publish(partition, generation, "a", before.clone()));
        assert_eq!(view.forget_partition(partition), 1);
        assert!(view.get("a").is_none());
        // A task that loaded "a" before the change publishes late: refused, it may be stale.
        assert!(!view.publish(partition, generation, "a", before));
        assert!(view.get("a").is_none());
        // Loaded again in the new epoch, it is kept.
        let mut again = live(7, 7);
        again.epoch = view.epoch(partition);
        assert!(view.publish(partition, generation, "a", again));
        assert_eq!(view.get("a").unwrap().version, 7);
    }
}
