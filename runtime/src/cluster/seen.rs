//! How far each peer's log has come, as this node has heard in heartbeats, kept in the data
//! directory: a peer that comes back holding less than that has lost its disk, and is told so
//! even if this node restarted in between.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file in the data directory holding the peers' log ends.
pub const SEEN_FILE: &str = "cluster-seen.toml";

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SeenFile {
    /// Peer name -> the largest log end it reported.
    log_ends: BTreeMap<String, u64>,
}

/// The peers' log ends, and whether they changed since last written.
#[derive(Debug)]
pub(crate) struct SeenLogEnds {
    file: PathBuf,
    log_ends: BTreeMap<String, u64>,
    dirty: bool,
}

impl SeenLogEnds {
    /// Loads what `data_dir` remembers (nothing if it remembers nothing, or cannot be read: the
    /// check is a safety net, and a missing memory only makes it look later).
    pub(crate) fn load(data_dir: &Path) -> Self {
        let file = data_dir.join(SEEN_FILE);
        let log_ends = match std::fs::read_to_string(&file) {
            Ok(text) => match toml::from_str::<SeenFile>(&text) {
                Ok(seen) => seen.log_ends,
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "peers' log ends unreadable; starting without them");
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        Self {
            file,
            log_ends,
            dirty: false,
        }
    }

    pub(crate) fn get(&self, peer: &str) -> Option<u64> {
        self.log_ends.get(peer).copied()
    }

    /// Records that `peer` reported `log_end` (only ever moves forward).
    pub(crate) fn saw(&mut self, peer: &str, log_end: u64) {
        let entry = self.log_ends.entry(peer.to_owned()).or_insert(0);
        if log_end > *entry {
            *entry = log_end;
            self.dirty = true;
        }
    }

    /// Writes the file if something changed.
    pub(crate) fn flush(&mut self) {
        if let Some(pending) = self.changes()
            && let Err(error) = pending.write()
        {
            tracing::warn!(%error, "cannot record the peers' log ends; retrying");
            self.unwritten();
        }
    }

    /// What to write, if something changed since it was last taken. Taken under the lock and
    /// written outside it, so that a slow disk never holds up heartbeats (which read this).
    pub(crate) fn changes(&mut self) -> Option<PendingWrite> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(PendingWrite {
            file: self.file.clone(),
            seen: SeenFile {
                log_ends: self.log_ends.clone(),
            },
        })
    }

    /// A write taken by [`SeenLogEnds::changes`] failed: try again next time.
    pub(crate) fn unwritten(&mut self) {
        self.dirty = true;
    }
}

/// The file's next contents.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    file: PathBuf,
    seen: SeenFile,
}

impl PendingWrite {
    /// Writes the whole file, through a temporary file and a rename.
    pub(crate) fn write(&self) -> Result<(), String> {
        let text = toml::to_string(&self.seen).map_err(|e| e.to_string())?;
        let temporary = self.file.with_extension("toml.tmp");
        std::fs::write(&temporary, text).map_err(|e| format!("{}: {e}", temporary.display()))?;
        std::fs::rename(&temporary, &self.file).map_err(|e| format!("{}: {e}", self.file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ends_only_move_forward_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenLogEnds::load(dir.path());
        assert_eq!(seen.get("node-2"), None);
        seen.saw("node-2", 10);
        seen.saw("node-2", 7);
        seen.flush();
        let again = SeenLogEnds::load(dir.path());
        assert_eq!(again.get("node-2"), Some(10));
    }
}
