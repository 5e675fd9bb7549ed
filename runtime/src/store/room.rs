//! Free space kept in reserve on the store's volume: while less than `store.min_free_mib` is
//! free, writes are refused (nothing is written, so a caller may retry later) and reads go on.
//!
//! Stopping before the disk is full is the point: a commit that fails halfway on a full disk
//! leaves redb refusing every later write until the database is opened again, and a Raft
//! replica whose log cannot be written stops its group. The reserve is what a node still needs
//! once writes stop: the commits in flight, Raft entries followers take from a leader whose
//! disk is not full. Snapshots are not written into it: they claim space beyond it
//! ([`Room::claim`], see `replication::snapshot_room`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

// tokio's clock, so that a test on paused time sees a new reading when it says time passed.
use tokio::time::Instant;

use super::StoreError;
use super::disk::Disk;

/// How long one reading of the free space answers for: appends come in thousands a second,
/// and the free space moves slower than that matters.
const READING_REUSE: Duration = Duration::from_millis(200);

/// The reserve of one store: where it lives and how much must stay free there.
#[derive(Debug)]
pub(crate) struct Room {
    dir: PathBuf,
    disk: Disk,
    min_free_bytes: u64,
    last: Mutex<Option<(Instant, u64)>>,
    /// Bytes beyond the reserve claimed by writes under way that no one asked for (snapshots).
    claimed: Mutex<u64>,
}

/// Space beyond the reserve set aside for one write no one asked for (a snapshot built or
/// taken), given back when dropped: two at once each see what the other will take.
#[derive(Debug)]
pub struct SpareClaim {
    room: Arc<Room>,
    bytes: u64,
}

impl Drop for SpareClaim {
    fn drop(&mut self) {
        let mut claimed = self
            .room
            .claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *claimed = claimed.saturating_sub(self.bytes);
    }
}

impl Room {
    /// The reserve of the store whose log file is `log_path`.
    pub(crate) fn new(log_path: &Path, disk: Disk, min_free_bytes: u64) -> Self {
        let dir = match log_path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        Self {
            dir,
            disk,
            min_free_bytes,
            last: Mutex::new(None),
            claimed: Mutex::new(0),
        }
    }

    /// `Ok` while at least the reserve is free; [`StoreError::DiskFull`] once less is. A volume
    /// whose free space cannot be read is not refused: the writes themselves will say what is
    /// wrong with it.
    pub(crate) fn ensure(&self) -> Result<(), StoreError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let Some(free_bytes) = self.free_bytes() else {
            return Ok(());
        };
        if free_bytes >= self.min_free_bytes {
            return Ok(());
        }
        Err(StoreError::DiskFull {
            dir: self.dir.clone(),
            free_bytes,
            min_free_bytes: self.min_free_bytes,
        })
    }

    /// Bytes free beyond the reserve (0 below it) and not claimed; `None` when the free space
    /// cannot be read. What a node may still spend on what is not a write it was asked for.
    pub(crate) fn spare_bytes(&self) -> Option<u64> {
        let claimed = *self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        self.free_bytes().map(|free| {
            free.saturating_sub(self.min_free_bytes)
                .saturating_sub(claimed)
        })
    }

    /// Sets `bytes` aside beyond the reserve, or says how much is spare when they do not fit.
    /// A volume whose free space cannot be read grants every claim.
    pub(crate) fn claim(self: &Arc<Self>, bytes: u64) -> Result<SpareClaim, u64> {
        let free = self.free_bytes();
        let mut claimed = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(free) = free {
            let spare = free
                .saturating_sub(self.min_free_bytes)
                .saturating_sub(*claimed);
            if spare < bytes {
                return Err(spare);
            }
        }
        *claimed += bytes;
        Ok(SpareClaim {
            room: self.clone(),
            bytes,
        })
    }

    fn free_bytes(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, free)) = *last
            && at.elapsed() < READING_REUSE
        {
            return Some(free);
        }
        let free = self.disk.free_bytes(&self.dir)?;
        *last = Some((Instant::now(), free));
        Some(free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_below_the_reserve_naming_the_directory_and_both_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.redb");
        assert!(Room::new(&log, Disk::Files, 0).ensure().is_ok());
        assert!(Room::new(&log, Disk::Files, 1).ensure().is_ok());
        let refused = Room::new(&log, Disk::Files, u64::MAX).ensure().unwrap_err();
        let text = refused.to_string();
        assert!(
            matches!(&refused, StoreError::DiskFull { dir: d, free_bytes, min_free_bytes: u64::MAX } if d == dir.path() && *free_bytes > 0),
            "{refused:?}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("store.min_free_mib"), "{text}");
    }
}
