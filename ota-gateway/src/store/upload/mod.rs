//! Uploads: a whole body, or filuxe's chunks (`Content-Range: bytes FROM-TO/SIZE`).
//!
//! Nothing is visible at a file's path until it is complete and checked. A whole body
//! streams into `tmp/` of the store's state (beside the served directory, see
//! `layout`). Chunks are written at their offsets into one partial file per target,
//! `partial/<id>/data` of the state, and each chunk, once written, is
//! recorded beside it: each process appends a fixed-size record (from, to, check) to
//! its own log, `ranges/<writer>.log`, so no two processes write the same file and no
//! chunk costs a new inode. `info.json` says which file (path, size, time) the partial
//! assembles. Because all of it lives on the store volume, chunks that reach different
//! replicas sharing the volume still assemble. When the records cover the whole size,
//! the request that completed it takes the partial over (one atomic rename, so only
//! one replica commits), checks the size and the SHA-256 the client announced
//! (`?sha256=` or `X-Checksum-Sha256`), syncs the data, sets its time, and renames it
//! into place (or hard-links it, refusing an existing file, without `force`). When the
//! client announced no checksum, the file's SHA-256 (its ETag, its `sha256` in listings)
//! is computed after the answer, off the request's path. A crash at any point leaves
//! the old file or the new one, never a part.
//!
//! Chunks may come in any order. The same chunk sent again is accepted without
//! rewriting (a retry, or a restarted upload of the same file); a chunk that
//! overlaps another differently is refused; a chunk for a different file (other size
//! or time) restarts the partial when it starts at byte 0 and is refused otherwise.
//!
//! By what they hold: [`partial`] (the partial on disk: `info.json`, range logs),
//! [`tracked`] (what this process keeps of the partials it receives), [`hashing`] (the
//! SHA-256 computed as bytes arrive), [`body`] (a request body into a file), [`whole`]
//! and [`chunked`] (the two kinds of upload request), [`commit`] (the takeover and the
//! rename into place).

mod body;
mod chunked;
mod commit;
mod hashing;
mod partial;
mod tracked;
mod whole;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::error::StoreError;
use super::layout::Dirs;
use super::path::{self, StorePath};
use super::sums::{self, Stamp};
use super::time;
use body::{drain, write_body};
use commit::{commit, Takeover};
use hashing::HashPipe;
use partial::{covers_on_disk, load_or_start, new_writer, read_ranges, Info, Record};
use tracked::{Overlap, Tracked, MAX_TRACKED};

pub use chunked::Chunk;

/// Partial uploads untouched for this long are removed.
pub const ABANDONED: Duration = Duration::from_secs(24 * 3600);

/// What the client asked besides the bytes.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// File time (seconds since the epoch) to set; 0 or absent leaves the upload time.
    pub time: Option<f64>,
    /// Replace an existing file.
    pub force: bool,
    /// Expected SHA-256 (hex) of the whole file.
    pub sha256: Option<String>,
}

/// Uploads into one store.
pub struct Uploads {
    dirs: Dirs,
    /// The store's `maxUploadBytes`, live (a config reload sets it).
    max_bytes: AtomicU64,
    /// The name of this instance's range log in each partial.
    writer: String,
    tracked: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Tracked>>>>>,
}

/// The result of a successful upload request.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// The file is complete and in place.
    Committed,
    /// The chunk is kept; the file is not complete yet.
    Partial,
}

impl Uploads {
    /// Uploads into the store whose directories `layout::open` made.
    pub fn new(dirs: &Dirs, max_bytes: u64) -> Self {
        Self {
            dirs: dirs.clone(),
            max_bytes: AtomicU64::new(max_bytes),
            writer: new_writer(),
            tracked: Mutex::default(),
        }
    }

    /// The largest file an upload may create from now on.
    pub fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    fn own(&self, sub: &str) -> PathBuf {
        self.dirs.own(sub)
    }

    /// Removes partial uploads and temp files nobody touched for `older_than` (other
    /// replicas may be writing younger ones). Returns how many were removed.
    pub fn sweep(&self, older_than: Duration) -> usize {
        let mut removed = 0;
        let now = SystemTime::now();
        for sub in ["partial", "tmp", "committing"] {
            let Ok(entries) = fs::read_dir(self.own(sub)) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let touched = newest_mtime(&path);
                if now.duration_since(touched).unwrap_or_default() >= older_than {
                    tracing::info!(path = %path.display(), "removing an abandoned upload");
                    let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
                    removed += 1;
                }
            }
        }
        self.tracked.lock().unwrap_or_else(|e| e.into_inner()).clear();
        removed
    }

    /// Computes and records the SHA-256 of the file just committed at `path` when the
    /// upload did not (the client announced none), after the answer has gone out. At
    /// most [`MAX_LATE_SUMS`] run at once; past that, the first download computes it.
    fn record_sum_later(&self, path: &StorePath) {
        let Ok(running) = LATE_SUMS.try_acquire() else { return };
        let (dirs, path) = (self.dirs.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            if let Ok(target) = path::resolve(&dirs.root, &path) {
                if let Ok(file) = File::open(target) {
                    let _ = sums::of_file(&dirs.state, &path, &file);
                }
            }
            drop(running);
        });
    }

    fn check_size(&self, size: u64) -> Result<(), StoreError> {
        let limit = self.max_bytes();
        if size > limit {
            return Err(StoreError::TooLarge { size, limit });
        }
        Ok(())
    }

    /// The target path of an upload, after the path and `force` checks.
    fn target(&self, path: &StorePath, options: &Options) -> Result<PathBuf, StoreError> {
        let target = path::resolve(&self.dirs.root, path)?;
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => Err(StoreError::Conflict(format!("{} is a directory", path.as_str()))),
            Ok(_) if !options.force => Err(StoreError::Exists(path.as_str().to_owned())),
            _ => Ok(target),
        }
    }
}

/// Checksums of committed files computed after the answer, at once at most.
const MAX_LATE_SUMS: usize = 4;
static LATE_SUMS: Semaphore = Semaphore::const_new(MAX_LATE_SUMS);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Io(std::io::Error::other(e)))?
}

/// A name no other upload uses.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{nanos:x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The newest modification time of `path` and, for a directory, of what it holds.
fn newest_mtime(path: &Path) -> SystemTime {
    let own = fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    let Ok(entries) = fs::read_dir(path) else { return own };
    entries.flatten().map(|e| newest_mtime(&e.path())).fold(own, SystemTime::max)
}

/// Removes a file or directory when dropped (temp files of a failed upload).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0).or_else(|_| fs::remove_file(&self.0));
    }
}

#[cfg(test)]
pub(super) mod test_support {
    use super::*;

    /// A store at `<tmp>/store`, its state beside it.
    pub(super) fn setup() -> (tempfile::TempDir, Dirs) {
        let dir = tempfile::tempdir().unwrap();
        let dirs = super::super::layout::open(&dir.path().join("store")).unwrap();
        (dir, dirs)
    }

    pub(super) fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    pub(super) fn p(s: &str) -> StorePath {
        StorePath::parse(s, false).unwrap()
    }

    pub(super) async fn send(
        u: &Uploads,
        path: &str,
        bytes: &[u8],
        from: usize,
        to: usize,
        o: &Options,
    ) -> Result<Stored, StoreError> {
        let chunk = Chunk { from: from as u64, to: to as u64, size: bytes.len() as u64 };
        u.chunk(&p(path), chunk, o, Body::from(bytes[from..=to].to_vec())).await
    }

    pub(super) fn visible(root: &Path, path: &str) -> Option<Vec<u8>> {
        fs::read(root.join(path)).ok()
    }

    /// Times Python's `repr(time.time())` prints, among them values serde_json's
    /// default parser reads back as a neighbouring float.
    pub(super) const PYTHON_TIMES: [&str; 5] =
        ["1796555001.0810335", "1765432109.9999998", "1700000000.0000002", "1733333333.3333333", "1.5"];
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[tokio::test]
    async fn abandoned_partials_are_swept() {
        let (_d, dirs) = setup();
        let u = Uploads::new(&dirs, 1 << 30);
        send(&u, "f", &data(1000), 0, 99, &Options::default()).await.unwrap();
        assert_eq!(u.sweep(Duration::from_secs(3600)), 0);
        assert_eq!(u.sweep(Duration::ZERO), 1);
        assert_eq!(fs::read_dir(dirs.own("partial")).unwrap().count(), 0);
    }
}
