//! SHA-256 of stored files, computed once and kept beside them.
//!
//! Each file's checksum lives in the store's state (`layout`), `sums/<sha256 of its
//! path>`, together with
//! the file's inode, size and modification time. A checksum is trusted only while all
//! three still match, so a file replaced or touched behind the store's back is hashed
//! again instead of being announced with a stale ETag.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::path::StorePath;

/// What identifies one version of a file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub ino: u64,
    pub size: u64,
    /// Nanoseconds since the epoch. i128: an i64 of nanoseconds ends in 2262, and an
    /// upload may ask for a later time (the fuzzer's 46818641042.0446 overflowed it).
    pub mtime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Self {
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        Self { ino: meta.ino(), size: meta.len(), mtime_ns }
    }

    /// The modification time as filuxe reports it: float seconds since the epoch (the
    /// float nearest to it, so the time an upload set comes back exactly).
    pub fn time(&self) -> f64 {
        super::time::seconds(self.mtime_ns)
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    path: String,
    stamp: Stamp,
    sha256: String,
}

fn record_path(state: &Path, path: &StorePath) -> PathBuf {
    let name = hex::encode(Sha256::digest(path.as_str().as_bytes()));
    state.join("sums").join(name)
}

/// The recorded checksum of `path`, if it was recorded for exactly this `stamp`.
pub fn read(state: &Path, path: &StorePath, stamp: Stamp) -> Option<String> {
    let record: Record = serde_json::from_slice(&fs::read(record_path(state, path)).ok()?).ok()?;
    (record.stamp == stamp && record.path == path.as_str()).then_some(record.sha256)
}

/// Records the checksum of `path` at `stamp` (a cache: written without fsync, checked
/// against the stamp when read).
pub fn write(state: &Path, path: &StorePath, stamp: Stamp, sha256: &str) -> io::Result<()> {
    let target = record_path(state, path);
    let tmp = target.with_extension(format!("tmp{}", std::process::id()));
    let record = Record { path: path.as_str().to_owned(), stamp, sha256: sha256.to_owned() };
    fs::write(&tmp, serde_json::to_vec(&record).expect("record serializes"))?;
    fs::rename(tmp, target)
}

/// Forgets the checksum of `path`.
pub fn remove(state: &Path, path: &StorePath) {
    let _ = fs::remove_file(record_path(state, path));
}

/// SHA-256 (hex) of everything `file` holds from its current position.
pub fn hash(mut file: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// The checksum of the open `file` found at `path`, from the record or computed (and
/// then recorded). Blocking.
pub fn of_file(state: &Path, path: &StorePath, file: &File) -> io::Result<(Stamp, String)> {
    let stamp = Stamp::of(&file.metadata()?);
    if let Some(sum) = read(state, path, stamp) {
        return Ok((stamp, sum));
    }
    let sum = hash(file.try_clone()?)?;
    if let Err(e) = write(state, path, stamp, &sum) {
        tracing::debug!(error = %e, "cannot record a checksum");
    }
    Ok((stamp, sum))
}
