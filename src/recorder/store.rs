//! The recording on disk (`state_dir`): segments of at most a minute under
//! `STATE_DIR/recording/`, written atomically by a thread of their own (temporary file, fsync,
//! rename, fsync of the directory) so neither the engine nor the API ever waits for a disk;
//! the oldest dropped first beyond `recorder.keep` or `recorder.max_disk`. A file that cannot
//! be read back (truncated, corrupt, from a newer agent, not owned by the agent's user) is
//! refused with a log line, counted, and moved aside to `STATE_DIR/refused/`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::segment::{self, Segment};

/// The recording's directory under the state directory.
pub const RECORDING_DIR: &str = "recording";
/// Where refused files are moved.
pub const REFUSED_DIR: &str = crate::sys::REFUSED_DIR;
/// A segment file's name ends so.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Segments waiting for the writer at most; beyond that a segment is dropped (counted) rather
/// than the engine made to wait.
const QUEUE: usize = 8;

/// What the store has seen go wrong, for `/health` and the log.
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// Files refused at start (and moved aside).
    pub refused: AtomicU64,
    /// Segments that could not be written (disk full, I/O error) or were dropped because the
    /// writer was behind.
    pub failed_writes: AtomicU64,
    /// The last write failed because the disk is full: recording goes on in memory only.
    pub disk_full: AtomicBool,
}

/// A state directory: where the recording's segments are.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    keep: Duration,
    max_disk: u64,
}

impl Store {
    /// The store in `dir` (created 0700 with its `recording/` when missing), keeping
    /// segments for `keep` and within `max_disk` bytes.
    pub fn open(dir: &Path, keep: Duration, max_disk: u64) -> io::Result<Store> {
        for sub in [dir.to_path_buf(), dir.join(RECORDING_DIR)] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&sub)?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            keep,
            max_disk,
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn recording(&self) -> PathBuf {
        self.dir.join(RECORDING_DIR)
    }

    /// Every segment file, oldest first, with its first sample's time (from its name).
    pub fn list(&self) -> io::Result<Vec<(i64, PathBuf)>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(self.recording())? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(first) = name
                .strip_suffix(SEGMENT_SUFFIX)
                .and_then(|stem| stem.parse::<i64>().ok())
            {
                files.push((first, path));
            }
        }
        files.sort();
        Ok(files)
    }

    /// Writes a segment whose first sample is at `first` (ms): to a temporary file (0600),
    /// synced, renamed into place, and the directory synced.
    pub fn write(&self, first: i64, bytes: &[u8]) -> io::Result<()> {
        let dir = self.recording();
        let path = dir.join(format!("{first:016}{SEGMENT_SUFFIX}"));
        let temporary = dir.join(format!(".{first:016}{SEGMENT_SUFFIX}.tmp"));
        crate::sys::write_atomically(&dir, &path, &temporary, bytes)
    }

    /// Drops segments older than `keep` before `now_ms`, then the oldest until the rest fit
    /// in `max_disk`. Returns how many were dropped.
    pub fn prune(&self, now_ms: i64) -> io::Result<usize> {
        let files = self.list()?;
        let oldest_kept = now_ms - self.keep.as_millis() as i64;
        let mut sizes: Vec<(PathBuf, u64, i64)> = files
            .into_iter()
            .map(|(first, path)| {
                let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                (path, size, first)
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|(_, size, _)| size).sum();
        let mut dropped = 0;
        // A segment's first sample is at most a minute before its last.
        while let Some((path, size, first)) = sizes.first().cloned() {
            if first + 60_000 >= oldest_kept && total <= self.max_disk {
                break;
            }
            fs::remove_file(&path)?;
            total -= size;
            dropped += 1;
            sizes.remove(0);
        }
        Ok(dropped)
    }

    /// Reads every segment with samples at or after `since` (ms), oldest first. A file that
    /// cannot be read back is refused: logged with why, counted in `health`, and moved to
    /// `refused/`.
    pub fn read_since(&self, since: i64, health: &StoreHealth) -> Vec<Segment> {
        let files = match self.list() {
            Ok(files) => files,
            Err(error) => {
                warn!(dir = %self.recording().display(), %error, "cannot list the recording");
                return Vec::new();
            }
        };
        let mut segments = Vec::new();
        for (first, path) in files {
            if first + 60_000 < since {
                continue;
            }
            match read(&path) {
                Ok(segment) => segments.push(segment),
                Err(why) => self.refuse(&path, &why, health),
            }
        }
        segments
    }

    /// Moves a file that cannot be used to `refused/`, says why, and counts it.
    pub fn refuse(&self, path: &Path, why: &str, health: &StoreHealth) {
        health.refused.fetch_add(1, Ordering::Relaxed);
        crate::sys::move_aside(&self.dir, path, why);
    }
}

/// A segment file read back, or why it cannot be used.
pub fn read(path: &Path) -> Result<Segment, String> {
    let metadata = fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    let uid = crate::sys::effective_uid();
    if metadata.uid() != uid {
        return Err(format!(
            "owned by uid {}, not the agent's user (uid {uid})",
            metadata.uid()
        ));
    }
    if metadata.len() > segment::MAX_SEGMENT_BYTES as u64 {
        return Err(format!("{} bytes: too large", metadata.len()));
    }
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    segment::decode(&bytes).map_err(|e| e.to_string())
}

/// The writer thread's handle: segments go in without waiting.
#[derive(Debug)]
pub struct Writer {
    queue: mpsc::SyncSender<Job>,
    health: Arc<StoreHealth>,
}

enum Job {
    Segment {
        first: i64,
        last: i64,
        bytes: Vec<u8>,
    },
    Flush(mpsc::Sender<()>),
}

impl Writer {
    /// Starts the writer thread of `store`; it ends when the writer is dropped.
    pub fn start(store: Store, health: Arc<StoreHealth>) -> io::Result<Writer> {
        let (queue, jobs) = mpsc::sync_channel(QUEUE);
        let thread_health = Arc::clone(&health);
        std::thread::Builder::new()
            .name("perfpilot-recorder".into())
            .spawn(move || write_jobs(&store, &jobs, &thread_health))?;
        Ok(Writer { queue, health })
    }

    /// Hands a segment to the thread; when it is behind, the segment is dropped and counted
    /// (it stays in memory for the window).
    pub fn send(&self, first: i64, last: i64, bytes: Vec<u8>) {
        if self
            .queue
            .try_send(Job::Segment { first, last, bytes })
            .is_err()
        {
            self.health.failed_writes.fetch_add(1, Ordering::Relaxed);
            warn!("the recorder's disk writer is behind: a segment was not written");
        }
    }

    /// Waits (at most `timeout`) until every segment handed over so far is written.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = mpsc::channel();
        self.queue.send(Job::Flush(done)).is_ok() && wait.recv_timeout(timeout).is_ok()
    }
}

fn write_jobs(store: &Store, jobs: &mpsc::Receiver<Job>, health: &StoreHealth) {
    while let Ok(job) = jobs.recv() {
        let (first, last, bytes) = match job {
            Job::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Job::Segment { first, last, bytes } => (first, last, bytes),
        };
        let started = std::time::Instant::now();
        match store.write(first, &bytes) {
            Ok(()) => {
                // What a segment costs: scripts/bench-recorder.sh reads this line.
                debug!(
                    bytes = bytes.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "recording segment written (write, fsync, rename, directory fsync)"
                );
                if health.disk_full.swap(false, Ordering::Relaxed) {
                    info!("the state directory takes writes again: recording to disk resumed");
                }
            }
            Err(error) => {
                health.failed_writes.fetch_add(1, Ordering::Relaxed);
                let full = error.kind() == io::ErrorKind::StorageFull;
                if full && !health.disk_full.swap(true, Ordering::Relaxed) {
                    warn!(dir = %store.dir().display(), "the state directory's disk is full: recording goes on in memory only");
                } else if !full {
                    warn!(dir = %store.dir().display(), %error, "could not write a recording segment");
                }
            }
        }
        if let Err(error) = store.prune(last) {
            warn!(%error, "could not drop old recording segments");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_written_0600_in_a_0700_directory_and_pruned_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = Store::open(&state, Duration::from_secs(600), 250).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        for minute in 0..5i64 {
            store.write(minute * 60_000, &[7u8; 100]).unwrap();
        }
        let files = store.list().unwrap();
        assert_eq!(files.len(), 5);
        assert_eq!(mode(&files[0].1), 0o600);
        assert!(fs::read_dir(store.recording()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
        // 500 bytes in all against max_disk 250: the three oldest go.
        assert_eq!(store.prune(5 * 60_000).unwrap(), 3);
        let left: Vec<i64> = store
            .list()
            .unwrap()
            .iter()
            .map(|(first, _)| *first)
            .collect();
        assert_eq!(left, [180_000, 240_000]);
        // Older than keep (10 minutes) goes too.
        assert_eq!(store.prune(180_000 + 60_000 + 600_001).unwrap(), 1);
    }

    #[test]
    fn a_truncated_segment_is_refused_counted_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(3600), u64::MAX).unwrap();
        store.write(1_000, b"PPREC\0\0\n\x01\0\x10\0\0").unwrap();
        let health = StoreHealth::default();
        assert!(store.read_since(0, &health).is_empty());
        assert_eq!(health.refused.load(Ordering::Relaxed), 1);
        assert!(store.list().unwrap().is_empty());
        assert!(dir
            .path()
            .join(REFUSED_DIR)
            .join(format!("{:016}{SEGMENT_SUFFIX}", 1_000))
            .exists());
    }
}
