//! Disk space for snapshots: a partition's snapshot is built, or taken from a leader, only
//! into the space beyond the store's reserve (`store.min_free_mib`).
//!
//! A snapshot is a copy of its partition, and it is written while the one it replaces is still
//! on disk (redb frees the old pages only once the new ones are committed), so building one
//! takes about its size again for a while. Taking one from a leader writes the partition's
//! events and keeps the snapshot beside them: about twice its size. Written blindly, either
//! could spend the reserve that commits in flight rely on, and a commit that fails on a full
//! disk stops the whole store. So:
//! - **building** one (openraft asks every `cluster.raft_snapshot_every` entries) is put off
//!   while the reserve itself is short, or the spare space is less than the last one put off
//!   needed; one already encoded that does not fit is dropped and the previous snapshot stays
//!   current (openraft keeps the log behind it, so nothing is lost: the log grows instead,
//!   and openraft asks again `raft_snapshot_every` entries later);
//! - **taking** one is refused while it does not fit: the leader's send fails and openraft
//!   sends it again later, so a replica short of space catches up once space is freed. The
//!   parts are counted as they arrive, so a snapshot that cannot fit is refused at the part
//!   that shows it, not only at its last.
//!
//! Each snapshot written claims its space beyond the reserve until it is down
//! (`EventStore::claim_spare`), so snapshots built or taken at once each see what the others
//! will take. What taking one needs is reckoned on the whole partition, also for a replica
//! that holds most of it already: more than it writes, never less.
//!
//! The first snapshot of a partition is kept whatever the spare space (once the reserve holds):
//! there is no earlier one to keep current, and it holds about `raft_snapshot_every` entries.
//! A snapshot openraft needs at once (a follower behind a dropped log) is built the same way:
//! when it is put off, the follower is sent the earlier one, which the kept log follows.

use std::sync::{Arc, Mutex, PoisonError};

use super::state_machine::PartitionSnapshot;
use super::types::PartitionId;
use crate::store::{EventStore, SpareClaim};

/// Bytes a snapshot's proposals take, encoded: about what it takes on disk.
pub(crate) fn bytes_of(snapshot: &PartitionSnapshot) -> u64 {
    snapshot
        .proposals
        .iter()
        .map(|proposal| proposal.len() as u64)
        .sum()
}

/// What taking a snapshot of `bytes` from a leader needs beyond the reserve: the partition's
/// events it writes, and the snapshot kept beside them.
pub(crate) fn needed_to_take(bytes: u64) -> u64 {
    bytes.saturating_mul(2)
}

/// Why a snapshot was not taken here: it does not fit beyond the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoRoom {
    pub needed: u64,
    pub spare: u64,
}

/// `Ok` when `needed` bytes fit beyond `store`'s reserve and what is claimed, or its free
/// space cannot be read (the writes will say what is wrong with the volume).
pub(crate) fn fits(store: &EventStore, needed: u64) -> Result<(), NoRoom> {
    match store.spare_bytes() {
        Some(spare) if spare < needed => Err(NoRoom { needed, spare }),
        _ => Ok(()),
    }
}

/// Claims `needed` bytes beyond `store`'s reserve for a snapshot written now.
pub(crate) fn claim(store: &EventStore, needed: u64) -> Result<SpareClaim, NoRoom> {
    store
        .claim_spare(needed)
        .map_err(|spare| NoRoom { needed, spare })
}

/// `bytes` in MiB for a person, rounded up (so that a need is never shown as 0).
pub(crate) fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

/// One partition's snapshot builds put off for want of space: the size the last one needed,
/// shared by the state machine (which decides whether to build) and its builders.
#[derive(Debug, Clone, Default)]
pub(crate) struct PutOff(Arc<Mutex<Option<u64>>>);

impl PutOff {
    fn needed(&self) -> Option<u64> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, needed: Option<u64>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = needed;
    }

    /// Whether a snapshot openraft may defer is worth building now: the reserve holds, and
    /// the last build put off (if any) would fit. Reading the partition again only to put it
    /// off again is what this saves.
    pub(crate) fn may_build(&self, store: &EventStore) -> bool {
        if store.ensure_room().is_err() {
            return false;
        }
        self.needed()
            .is_none_or(|needed| fits(store, needed).is_ok())
    }

    /// The space a snapshot of `bytes`, just built while an earlier one is current, is saved
    /// into (it is then made current), or `None`: it does not fit beyond the reserve and is
    /// put off until space is freed, which the log says.
    pub(crate) fn keep_built(
        &self,
        store: &EventStore,
        partition: PartitionId,
        bytes: u64,
    ) -> Option<SpareClaim> {
        match claim(store, bytes) {
            Err(NoRoom { needed, spare }) => {
                if self.needed().is_none() {
                    tracing::warn!(
                        partition,
                        needed_mib = mib(needed),
                        spare_mib = spare / MIB,
                        "a snapshot of the partition is put off: it needs more space than is free \
                         beyond the store.min_free_mib reserve; the partition's Raft log is kept \
                         (and grows) until space is freed, then the snapshot is built"
                    );
                }
                self.set(Some(needed));
                None
            }
            Ok(claimed) => {
                if self.needed().is_some() {
                    tracing::info!(
                        partition,
                        "space was freed: the partition's snapshot is built"
                    );
                }
                self.set(None);
                Some(claimed)
            }
        }
    }

    /// A snapshot was installed from the leader: no build is put off any more.
    pub(crate) fn clear(&self) {
        self.set(None);
    }

    /// The size the last build put off needed, if one is put off now.
    pub(crate) fn waiting_for(&self) -> Option<u64> {
        self.needed()
    }
}

/// A mebibyte, the unit snapshot sizes are reported in.
pub(crate) const MIB: u64 = 1024 * 1024;
