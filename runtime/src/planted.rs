//! Bugs planted on purpose, so that a test can show the simulation catches each one: a
//! checker that never fails proves nothing. Every bug is off unless a test plants it on its
//! own thread; a simulated cluster runs every node on one thread (a current-thread runtime,
//! its disks inline), so a planted bug reaches that cluster's nodes and nothing else: not the
//! tests running beside it, and never a real node, whose runtime threads plant nothing.

use std::cell::Cell;

/// A bug a test can plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// A node started on an emptied data directory takes its old Raft id again, so it votes
    /// as the replica that promised what it no longer holds.
    WipedNodeKeepsItsId,
    /// A node that believes it leads a partition answers reads without the read barrier
    /// (no quorum check, nothing committed waited for).
    ReadsWithoutBarrier,
    /// A command id is looked up only when the leader's host decides the command, not again
    /// when its entry is applied, so a proposal that raced its first run applies twice.
    DedupOnlyAtDecide,
}

thread_local! {
    static PLANTED: Cell<Option<Bug>> = const { Cell::new(None) };
}

/// Plants `bug` on this thread until the guard is dropped.
#[must_use = "the bug is planted only while the guard lives"]
pub fn plant(bug: Bug) -> Planted {
    PLANTED.with(|planted| planted.set(Some(bug)));
    Planted(())
}

/// Whether `bug` is planted on this thread.
pub(crate) fn is_planted(bug: Bug) -> bool {
    PLANTED.with(|planted| planted.get() == Some(bug))
}

/// Keeps a bug planted; dropping it removes the bug.
#[derive(Debug)]
pub struct Planted(());

impl Drop for Planted {
    fn drop(&mut self) {
        PLANTED.with(|planted| planted.set(None));
    }
}
