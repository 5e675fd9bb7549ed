//! Where the store keeps its files: the filesystem, or a simulated disk for tests that loses
//! what was not synced when its node crashes.
//!
//! The simulated disk is the storage layer under redb ([`redb::StorageBackend`]) that a
//! simulation needs to catch a write acknowledged before it was durable: every write lands in
//! the file's unsynced pages; `sync_data` (redb calls it when a durable commit ends) makes
//! them part of what survives; [`SimulatedDisk::crash`] throws every unsynced page away and
//! fences the handles opened before, so that whatever a crashed node left running cannot
//! write after the crash. On a simulated disk the store also does its work inline rather than
//! on the blocking pool: memory is fast, and one thread keeps a simulation's order the same
//! from run to run.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redb::{Builder, Database, DatabaseError};

/// The storage under a store.
#[derive(Clone, Debug, Default)]
pub enum Disk {
    /// Files in the filesystem, at the paths the store is given; IO on the blocking pool.
    #[default]
    Files,
    /// A simulated disk; IO inline.
    Simulated(SimulatedDisk),
}

impl Disk {
    /// Creates (or opens) the database at `path` with `builder`'s settings.
    pub(crate) fn create(&self, builder: &Builder, path: &Path) -> Result<Database, DatabaseError> {
        match self {
            Disk::Files => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| DatabaseError::Storage(redb::StorageError::from(e)))?;
                }
                builder.create(path)
            }
            Disk::Simulated(disk) => builder.create_with_backend(disk.open(path)),
        }
    }

    /// Bytes an unprivileged writer may still use on the volume holding `dir`; `None` when
    /// that cannot be read, and for a simulated disk that was given no free space to report
    /// (see [`SimulatedDisk::report_free_bytes`]).
    pub(crate) fn free_bytes(&self, dir: &Path) -> Option<u64> {
        match self {
            Disk::Files => {
                let stats = rustix::fs::statvfs(dir).ok()?;
                Some(stats.f_bavail.saturating_mul(stats.f_frsize))
            }
            Disk::Simulated(disk) => disk.lock().free_bytes,
        }
    }

    pub(crate) fn exists(&self, path: &Path) -> bool {
        match self {
            Disk::Files => path.exists(),
            Disk::Simulated(disk) => disk.lock().files.contains_key(path),
        }
    }

    /// Whether `path` exists and holds at least one byte.
    pub(crate) fn holds_data(&self, path: &Path) -> bool {
        match self {
            Disk::Files => std::fs::metadata(path).is_ok_and(|m| m.len() > 0),
            Disk::Simulated(disk) => disk.lock().files.get(path).is_some_and(|f| f.len > 0),
        }
    }

    pub(crate) fn remove(&self, path: &Path) -> std::io::Result<()> {
        match self {
            Disk::Files => std::fs::remove_file(path),
            Disk::Simulated(disk) => {
                disk.lock().files.remove(path);
                Ok(())
            }
        }
    }

    /// Runs `work`, which reads or writes the disk: on the blocking pool for files, inline on
    /// a simulated disk. `Err` if it panicked.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, String>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Disk::Files => tokio::task::spawn_blocking(work)
                .await
                .map_err(|error| error.to_string()),
            Disk::Simulated(_) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .map_err(|panic| {
                    panic
                        .downcast_ref::<&str>()
                        .map(|text| (*text).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_owned())
                }),
        }
    }
}

/// Bytes a simulated file tracks unsynced writes in.
const PAGE: u64 = 4096;

/// A simulated disk: files in memory that keep only what was synced across a crash. Cheap to
/// clone; clones are the same disk.
#[derive(Clone, Default)]
pub struct SimulatedDisk {
    state: Arc<Mutex<DiskState>>,
}

impl std::fmt::Debug for SimulatedDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("SimulatedDisk")
            .field("files", &state.files.keys().collect::<Vec<_>>())
            .field("crashes", &state.generation)
            .finish()
    }
}

/// What a simulated disk held durably at one moment (see [`SimulatedDisk::image`]).
#[derive(Debug, Clone, Default)]
pub struct DiskImage(BTreeMap<PathBuf, Vec<u8>>);

#[derive(Default)]
struct DiskState {
    /// Bumped by every crash: handles opened before it are fenced.
    generation: u64,
    files: BTreeMap<PathBuf, SimFile>,
    /// A planted fault: a sync makes durable only what was synced this long before.
    syncs_late: Option<Duration>,
    /// The free space the disk reports, if any: a reading, not a limit (writes still succeed).
    free_bytes: Option<u64>,
}

/// One file: what a crash keeps, and what was written since the last sync.
#[derive(Default, Clone)]
struct SimFile {
    durable: Vec<u8>,
    /// How much of `durable` the file still shows: a file shrunk since the last sync reads
    /// zeros where it grows back, not its old bytes.
    shown: u64,
    /// Whole pages written since the last sync, by page number.
    unsynced: BTreeMap<u64, Vec<u8>>,
    /// The file's length now (the durable one is `durable.len()`).
    len: u64,
    /// Under the late-sync fault: the file as of each recent sync, made durable once old
    /// enough.
    held: VecDeque<(tokio::time::Instant, SimFile)>,
}

impl SimulatedDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A backend for the file at `path`, created empty if missing.
    fn open(&self, path: &Path) -> SimBackend {
        let mut state = self.lock();
        state.files.entry(path.to_owned()).or_default();
        SimBackend {
            disk: self.clone(),
            path: path.to_owned(),
            generation: state.generation,
        }
    }

    /// The machine died: every file goes back to what was last synced, and everything opened
    /// before now is fenced (its reads and writes fail).
    pub fn crash(&self) {
        let mut state = self.lock();
        state.generation += 1;
        for file in state.files.values_mut() {
            file.unsynced.clear();
            file.held.clear();
            file.len = file.durable.len() as u64;
            file.shown = file.len;
        }
    }

    /// A planted fault, to show that a simulation catches it: from now on every sync answers
    /// at once but makes durable only what was synced `lag` before (on tokio's clock), as a
    /// disk whose cache acknowledges flushes and writes them back later would. A crash then
    /// loses what was acknowledged in the last `lag`.
    pub fn acknowledge_syncs_late(&self, lag: Duration) {
        self.lock().syncs_late = Some(lag);
    }

    /// From now on the disk reports `free` bytes free (`None`: no reading), as a volume
    /// filling up or freed would; writes are not limited by it. Lets a test drive what a
    /// node does short of space (refused writes, put-off snapshots) without filling a disk.
    pub fn report_free_bytes(&self, free: Option<u64>) {
        self.lock().free_bytes = free;
    }

    /// The disk is lost: no file survives, and everything opened before is fenced.
    pub fn wipe(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.files.clear();
    }

    /// A copy of what the disk holds durably now (what a crash would leave): a backup taken
    /// at this moment, to put back with [`SimulatedDisk::restore`].
    pub fn image(&self) -> DiskImage {
        let state = self.lock();
        DiskImage(
            state
                .files
                .iter()
                .map(|(path, file)| (path.clone(), file.durable.clone()))
                .collect(),
        )
    }

    /// The machine is put back on an older copy of its disk: every file is as `image` holds
    /// it (files made since are gone), and everything opened before is fenced.
    pub fn restore(&self, image: &DiskImage) {
        let mut state = self.lock();
        state.generation += 1;
        state.files = image
            .0
            .iter()
            .map(|(path, durable)| {
                let len = durable.len() as u64;
                let file = SimFile {
                    durable: durable.clone(),
                    shown: len,
                    len,
                    ..SimFile::default()
                };
                (path.clone(), file)
            })
            .collect();
    }

    /// How many bytes each file holds now (synced or not), by path.
    pub fn sizes(&self) -> BTreeMap<PathBuf, u64> {
        self.lock()
            .files
            .iter()
            .map(|(path, file)| (path.clone(), file.len))
            .collect()
    }
}

impl SimFile {
    /// Copies the durable bytes from `at` into `out`, as the file shows them (zeros past what
    /// it shows).
    fn durable_into(&self, at: u64, out: &mut [u8]) {
        let visible = (self.shown as usize).min(self.durable.len());
        let start = (at as usize).min(visible);
        let end = (at as usize + out.len()).min(visible);
        let copied = end - start;
        out[..copied].copy_from_slice(&self.durable[start..end]);
        out[copied..].fill(0);
    }

    /// The bytes of page `number` as they are now.
    fn page(&self, number: u64) -> Vec<u8> {
        if let Some(page) = self.unsynced.get(&number) {
            return page.clone();
        }
        let mut page = vec![0; PAGE as usize];
        self.durable_into(number * PAGE, &mut page);
        page
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = offset + done as u64;
            let (number, within) = (at / PAGE, (at % PAGE) as usize);
            let take = (PAGE as usize - within).min(out.len() - done);
            match self.unsynced.get(&number) {
                Some(page) => out[done..done + take].copy_from_slice(&page[within..within + take]),
                None => self.durable_into(at, &mut out[done..done + take]),
            }
            done += take;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (number, within) = (at / PAGE, (at % PAGE) as usize);
            let take = (PAGE as usize - within).min(data.len() - done);
            let mut page = self.page(number);
            page[within..within + take].copy_from_slice(&data[done..done + take]);
            self.unsynced.insert(number, page);
            done += take;
        }
        self.len = self.len.max(offset + data.len() as u64);
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            // Bytes past the new end read as zeros if the file grows again.
            let last = len / PAGE;
            self.unsynced.retain(|number, _| *number <= last);
            if let Some(page) = self.unsynced.get_mut(&last) {
                page[(len % PAGE) as usize..].fill(0);
            }
            self.shown = self.shown.min(len);
        }
        self.len = len;
    }

    /// The late-sync fault's sync: this sync's view of the file is held; the latest held view
    /// at least `lag` old becomes durable, and what was written since stays unsynced.
    fn sync_late(&mut self, lag: Duration) {
        let now = tokio::time::Instant::now();
        let mut view = self.clone();
        view.held.clear();
        self.held.push_back((now, view));
        let mut ready = None;
        while let Some((at, _)) = self.held.front()
            && now.saturating_duration_since(*at) >= lag
        {
            ready = self.held.pop_front().map(|(_, view)| view);
        }
        if let Some(mut ready) = ready {
            ready.sync();
            let current = self.all_pages();
            self.durable = ready.durable;
            self.shown = self.durable.len() as u64;
            self.unsynced = current;
        }
    }

    /// Every page of the file as it is now, as unsynced pages.
    fn all_pages(&self) -> BTreeMap<u64, Vec<u8>> {
        (0..self.len.div_ceil(PAGE))
            .map(|number| (number, self.page(number)))
            .collect()
    }

    fn sync(&mut self) {
        let len = self.len as usize;
        self.durable.truncate(self.shown as usize);
        self.durable.resize(len, 0);
        self.shown = self.len;
        for (number, page) in std::mem::take(&mut self.unsynced) {
            let start = (number * PAGE) as usize;
            if start >= len {
                continue;
            }
            let end = (start + PAGE as usize).min(len);
            self.durable[start..end].copy_from_slice(&page[..end - start]);
        }
    }
}

/// redb's view of one simulated file, as of the disk's generation when it was opened.
#[derive(Debug)]
struct SimBackend {
    disk: SimulatedDisk,
    path: PathBuf,
    generation: u64,
}

impl SimBackend {
    fn with<T>(&self, work: impl FnOnce(&mut SimFile) -> T) -> std::io::Result<T> {
        let mut state = self.disk.lock();
        if state.generation != self.generation {
            return Err(std::io::Error::other(
                "the simulated disk crashed since this file was opened",
            ));
        }
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| std::io::Error::other("the simulated file is gone"))?;
        Ok(work(file))
    }
}

impl redb::StorageBackend for SimBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.with(|file| file.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.with(|file| {
            if offset + out.len() as u64 > file.len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "read past the end of a simulated file",
                ));
            }
            file.read(offset, out);
            Ok(())
        })?
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.with(|file| file.set_len(len))
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let late = self.disk.lock().syncs_late;
        self.with(|file| match late {
            Some(lag) => file.sync_late(lag),
            None => file.sync(),
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.with(|file| file.write(offset, data))
    }
}

#[cfg(test)]
mod tests {
    use redb::StorageBackend;

    use super::*;

    fn contents(backend: &SimBackend) -> Vec<u8> {
        let mut out = vec![0; backend.len().unwrap() as usize];
        backend.read(0, &mut out).unwrap();
        out
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_loses_the_rest() {
        let disk = SimulatedDisk::new();
        let file = disk.open(Path::new("f"));
        file.write(0, b"synced").unwrap();
        file.write(PAGE * 2 - 3, b"across pages").unwrap();
        file.sync_data().unwrap();
        file.write(0, b"SYNCED").unwrap();
        file.write(PAGE * 5, b"unsynced tail").unwrap();
        assert_eq!(&contents(&file)[..6], b"SYNCED");
        disk.crash();
        assert!(
            file.len().is_err(),
            "a handle from before the crash is fenced"
        );
        assert!(file.write(0, b"late").is_err());
        let reopened = disk.open(Path::new("f"));
        let kept = contents(&reopened);
        assert_eq!(kept.len() as u64, PAGE * 2 - 3 + 12);
        assert_eq!(&kept[..6], b"synced");
        assert_eq!(&kept[(PAGE * 2 - 3) as usize..], b"across pages");
    }

    #[test]
    fn shrinking_a_file_zeroes_what_it_grows_back_into() {
        let disk = SimulatedDisk::new();
        let file = disk.open(Path::new("f"));
        file.write(0, &[7; 100]).unwrap();
        file.sync_data().unwrap();
        file.set_len(10).unwrap();
        file.set_len(100).unwrap();
        let now = contents(&file);
        assert_eq!(&now[..10], &[7; 10]);
        assert!(now[10..].iter().all(|byte| *byte == 0));
        file.sync_data().unwrap();
        disk.crash();
        assert_eq!(contents(&disk.open(Path::new("f")))[50], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_disk_that_syncs_late_loses_what_was_synced_in_the_last_lag() {
        let disk = SimulatedDisk::new();
        disk.acknowledge_syncs_late(Duration::from_millis(100));
        let file = disk.open(Path::new("f"));
        file.write(0, b"first").unwrap();
        file.sync_data().unwrap();
        tokio::time::advance(Duration::from_millis(150)).await;
        file.write(0, b"second").unwrap();
        file.sync_data().unwrap();
        tokio::time::advance(Duration::from_millis(50)).await;
        file.write(0, b"third!").unwrap();
        file.sync_data().unwrap();
        assert_eq!(&contents(&file)[..6], b"third!");
        disk.crash();
        assert_eq!(&contents(&disk.open(Path::new("f")))[..5], b"first");
    }

    #[test]
    fn a_wiped_disk_has_no_files() {
        let disk = SimulatedDisk::new();
        disk.open(Path::new("f")).write(0, b"x").unwrap();
        disk.wipe();
        assert!(!Disk::Simulated(disk.clone()).exists(Path::new("f")));
        assert!(disk.sizes().is_empty());
    }

    #[test]
    fn a_restored_disk_holds_what_its_image_held_durably_and_nothing_since() {
        let disk = SimulatedDisk::new();
        let file = disk.open(Path::new("f"));
        file.write(0, b"backed up").unwrap();
        file.sync_data().unwrap();
        file.write(0, b"not synced").unwrap();
        let image = disk.image();
        file.write(0, b"written later").unwrap();
        file.sync_data().unwrap();
        disk.open(Path::new("g")).write(0, b"new file").unwrap();
        disk.restore(&image);
        assert!(file.len().is_err(), "a handle from before is fenced");
        assert_eq!(contents(&disk.open(Path::new("f"))), b"backed up");
        assert!(
            !Disk::Simulated(disk.clone()).exists(Path::new("g")),
            "a file made after the image is gone"
        );
    }
}
