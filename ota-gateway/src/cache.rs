//! The disk cache of unpacked, verified payloads.
//!
//! Content-addressed by the payload's SHA-256, with an index from an artifact key
//! (manifest digest + artifact config) to the payload:
//!
//! ```text
//! <dir>/blobs/<sha256>        the payload, never modified once renamed here
//! <dir>/blobs/<sha256>.meta   {"size", "crc32"} (written before the payload)
//! <dir>/index/<sha256(key)>   {"key", "sha256"}
//! <dir>/tmp/                  payloads being written; emptied at start
//! ```
//!
//! A payload becomes visible only by `rename` after `fsync`, so a crash leaves at
//! most a stray temp file, which the next start removes. Payloads are served from
//! a read-only memory map, shared by every response. Beyond the byte budget the
//! least recently used payloads are evicted, except those the live config uses.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::unpack::Summary;
use updraft_core::config::ArtifactConfig;

/// A cached payload, ready to serve.
#[derive(Debug)]
pub struct Payload {
    pub summary: Summary,
    /// The whole payload, memory-mapped (cheap to clone and slice).
    pub bytes: Bytes,
}

/// The index key of an artifact: its manifest digest and how the payload is
/// taken out of it (same manifest, other layer or path → other payload).
pub fn artifact_key(manifest_digest: &str, artifact: &ArtifactConfig) -> String {
    let how = serde_json::to_string(artifact).expect("artifact config serializes");
    format!("{manifest_digest} {how}")
}

#[derive(Serialize, Deserialize)]
struct Meta {
    size: u64,
    crc32: u32,
}

#[derive(Serialize, Deserialize)]
struct IndexEntry {
    key: String,
    sha256: String,
}

struct Entry {
    summary: Summary,
    last_used: u64,
    mapped: Option<Arc<Payload>>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    index: HashMap<String, String>,
    total: u64,
    clock: u64,
    /// Artifact keys in use, by who pins them (a surface, or one stream).
    protected: HashMap<String, HashSet<String>>,
}

/// The cache; one per process, shared.
pub struct Cache {
    dir: PathBuf,
    max_bytes: AtomicU64,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl Cache {
    /// Opens (creating) the cache at `dir`: removes stray temp files and re-indexes
    /// what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> io::Result<Self> {
        for sub in ["blobs", "index", "tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        for stray in fs::read_dir(dir.join("tmp"))? {
            let path = stray?.path();
            tracing::info!(path = %path.display(), "removing a partial payload left by an earlier run");
            remove_any(&path)?;
        }
        let cache =
            Self { dir: dir.to_owned(), max_bytes: AtomicU64::new(max_bytes), state: Mutex::default(), metrics };
        cache.scan()?;
        Ok(cache)
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(sha256)
    }

    fn index_path(&self, key: &str) -> PathBuf {
        self.dir.join("index").join(hex::encode(Sha256::digest(key.as_bytes())))
    }

    fn scan(&self) -> io::Result<()> {
        let mut found: Vec<(std::time::SystemTime, String, Summary)> = Vec::new();
        for item in fs::read_dir(self.dir.join("blobs"))? {
            let path = item?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if !updraft_core::config::is_sha256_hex(&name) {
                if !name.strip_suffix(".meta").is_some_and(|b| self.blob_path(b).exists()) {
                    remove_any(&path)?;
                }
                continue;
            }
            match read_meta(&path) {
                Some((summary, mtime)) => found.push((mtime, name.clone(), Summary { sha256: name, ..summary })),
                None => {
                    tracing::warn!(path = %path.display(), "dropping a cached payload without valid metadata");
                    remove_any(&path)?;
                }
            }
        }
        found.sort_by_key(|(mtime, _, _)| *mtime);
        let mut state = self.state.lock().expect("cache lock");
        for (_, sha, summary) in found {
            state.clock += 1;
            state.total += summary.size;
            let entry = Entry { summary, last_used: state.clock, mapped: None };
            state.entries.insert(sha, entry);
        }
        for item in fs::read_dir(self.dir.join("index"))? {
            let path = item?.path();
            let parsed: Option<IndexEntry> = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
            match parsed {
                Some(e) if state.entries.contains_key(&e.sha256) => {
                    state.index.insert(e.key, e.sha256);
                }
                _ => remove_any(&path)?,
            }
        }
        self.metrics.cache_bytes.set(state.total as i64);
        tracing::info!(payloads = state.entries.len(), bytes = state.total, "cache indexed");
        Ok(())
    }

    /// The payload cached for `key`, memory-mapped on first use.
    pub fn lookup(&self, key: &str) -> io::Result<Option<Arc<Payload>>> {
        let mut state = self.state.lock().expect("cache lock");
        let Some(sha) = state.index.get(key).cloned() else { return Ok(None) };
        state.clock += 1;
        let clock = state.clock;
        let entry = state.entries.get_mut(&sha).expect("index points at an entry");
        entry.last_used = clock;
        if let Some(payload) = &entry.mapped {
            return Ok(Some(payload.clone()));
        }
        let bytes = map_file(&self.blob_path(&sha))?;
        let payload = Arc::new(Payload { summary: entry.summary.clone(), bytes });
        entry.mapped = Some(payload.clone());
        Ok(Some(payload))
    }

    /// Marks a payload as just used (for LRU order).
    pub fn touch(&self, sha256: &str) {
        let mut state = self.state.lock().expect("cache lock");
        state.clock += 1;
        let clock = state.clock;
        if let Some(entry) = state.entries.get_mut(sha256) {
            entry.last_used = clock;
        }
    }

    /// A new temp file inside the cache (same filesystem, so the final rename is atomic).
    pub fn temp_file(&self) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new().prefix("fetch-").tempfile_in(self.dir.join("tmp"))
    }

    /// Makes a fully written temp file the payload of `key`: fsync, metadata, rename,
    /// index; then evicts beyond the budget. Blocking I/O.
    pub fn commit(&self, key: &str, file: tempfile::NamedTempFile, summary: Summary) -> io::Result<Arc<Payload>> {
        let blob = self.blob_path(&summary.sha256);
        if self.sha256_cached(&summary.sha256) {
            // Same payload under another key: the file is already there.
            drop(file);
            return self.commit_index(key, summary);
        }
        file.as_file().sync_all()?;
        let meta = Meta { size: summary.size, crc32: summary.crc32 };
        write_atomically(&self.dir.join("tmp"), &meta_path(&blob), &serde_json::to_vec(&meta)?)?;
        file.persist(&blob).map_err(|e| e.error)?;
        File::open(self.dir.join("blobs"))?.sync_all()?;
        self.commit_index(key, summary)
    }

    fn commit_index(&self, key: &str, summary: Summary) -> io::Result<Arc<Payload>> {
        let entry = IndexEntry { key: key.to_owned(), sha256: summary.sha256.clone() };
        write_atomically(&self.dir.join("tmp"), &self.index_path(key), &serde_json::to_vec(&entry)?)?;
        File::open(self.dir.join("index"))?.sync_all()?;
        self.insert(key, summary);
        self.evict();
        self.lookup(key)?.ok_or_else(|| io::Error::other("payload evicted right after caching: budget too small"))
    }

    fn sha256_cached(&self, sha256: &str) -> bool {
        self.state.lock().expect("cache lock").entries.contains_key(sha256)
    }

    fn insert(&self, key: &str, summary: Summary) {
        let mut state = self.state.lock().expect("cache lock");
        state.clock += 1;
        let clock = state.clock;
        let sha = summary.sha256.clone();
        if !state.entries.contains_key(&sha) {
            state.total += summary.size;
            state.entries.insert(sha.clone(), Entry { summary, last_used: clock, mapped: None });
        }
        state.index.insert(key.to_owned(), sha);
        self.metrics.cache_bytes.set(state.total as i64);
    }

    /// The artifact keys `owner` (a surface, or one stream) serves, replacing what it
    /// pinned before. Eviction spares the payloads of every owner's keys.
    pub fn protect(&self, owner: &str, keys: HashSet<String>) {
        self.state.lock().expect("cache lock").protected.insert(owner.to_owned(), keys);
        self.evict();
    }

    /// Forgets what `owner` pinned (it serves nothing any more).
    pub fn unprotect(&self, owner: &str) {
        self.state.lock().expect("cache lock").protected.remove(owner);
        self.evict();
    }

    /// The byte budget (`cache.maxBytes`); also the cap on one payload's unpacked size.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    pub fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.evict();
    }

    /// Total bytes of cached payloads.
    #[cfg(test)]
    fn total_bytes(&self) -> u64 {
        self.state.lock().expect("cache lock").total
    }

    /// Evicts least recently used, unprotected payloads until within budget.
    fn evict(&self) {
        let max = self.max_bytes.load(Ordering::Relaxed);
        let mut state = self.state.lock().expect("cache lock");
        while state.total > max {
            let spared: HashSet<&String> =
                state.protected.values().flatten().filter_map(|k| state.index.get(k)).collect();
            let victim = state
                .entries
                .iter()
                .filter(|(sha, _)| !spared.contains(sha))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(sha, _)| sha.clone());
            let Some(sha) = victim else {
                tracing::warn!(total = state.total, max, "cache over budget with payloads the config still uses");
                break;
            };
            let entry = state.entries.remove(&sha).expect("victim exists");
            state.total -= entry.summary.size;
            let keys: Vec<String> = state.index.iter().filter(|(_, s)| **s == sha).map(|(k, _)| k.clone()).collect();
            for key in keys {
                state.index.remove(&key);
                log_err(fs::remove_file(self.index_path(&key)));
            }
            let blob = self.blob_path(&sha);
            log_err(fs::remove_file(&blob));
            log_err(fs::remove_file(meta_path(&blob)));
            self.metrics.cache_evictions.inc();
            tracing::info!(sha256 = %sha, size = entry.summary.size, "evicted from cache");
        }
        self.metrics.cache_bytes.set(state.total as i64);
    }

    /// Whether the cache directory is usable: a file can be created in it.
    pub fn usable(&self) -> bool {
        self.temp_file().is_ok()
    }
}

fn log_err(result: io::Result<()>) {
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(error = %e, "cache cleanup failed");
        }
    }
}

fn meta_path(blob: &Path) -> PathBuf {
    blob.with_extension("meta")
}

fn read_meta(blob: &Path) -> Option<(Summary, std::time::SystemTime)> {
    let meta: Meta = serde_json::from_slice(&fs::read(meta_path(blob)).ok()?).ok()?;
    let stat = fs::metadata(blob).ok()?;
    if stat.len() != meta.size {
        return None;
    }
    let summary = Summary { size: meta.size, crc32: meta.crc32, sha256: String::new() };
    Some((summary, stat.modified().ok()?))
}

/// Writes `data` to `path` via a synced temp file and a rename.
fn write_atomically(tmp_dir: &Path, path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix("meta-").tempfile_in(tmp_dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Maps a payload file read-only; device connections send its slices with `sendfile`.
#[allow(unsafe_code)] // The one call of `map_payload`: the promise it needs is the cache's to make.
fn map_file(path: &Path) -> io::Result<Bytes> {
    let file = File::open(path)?;
    // SAFETY: files under blobs/ are written once, to a temp file that is synced and
    // then renamed into place, and never opened for writing again: a payload is never
    // modified or truncated while mapped. Eviction only unlinks, which leaves the
    // mapping (and the descriptor kept with it) valid.
    unsafe { crate::sendfile::map_payload(file) }
}

fn remove_any(path: &Path) -> io::Result<()> {
    let result = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::Digesting;

    fn put(cache: &Cache, key: &str, data: &[u8]) -> Arc<Payload> {
        let file = cache.temp_file().unwrap();
        let mut w = Digesting::new(file);
        w.write_all(data).unwrap();
        let (summary, file) = w.finish().unwrap();
        cache.commit(key, file, summary).unwrap()
    }

    fn open(dir: &Path, max: u64) -> Cache {
        Cache::open(dir, max, Arc::new(Metrics::new())).unwrap()
    }

    #[test]
    fn survives_restart_and_drops_strays() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20);
        let p = put(&cache, "k1", b"hello");
        assert_eq!(&p.bytes[..], b"hello");
        fs::write(dir.path().join("tmp/fetch-partial"), b"half").unwrap();
        drop(cache);
        let cache = open(dir.path(), 1 << 20);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let again = cache.lookup("k1").unwrap().unwrap();
        assert_eq!(again.summary, p.summary);
        assert_eq!(&again.bytes[..], b"hello");
    }

    #[test]
    fn evicts_least_recently_used_but_not_protected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 10);
        put(&cache, "a", b"aaaa");
        put(&cache, "b", b"bbbb");
        cache.lookup("a").unwrap();
        put(&cache, "c", b"cccc");
        assert!(cache.lookup("b").unwrap().is_none(), "b was least recently used");
        assert!(cache.lookup("a").unwrap().is_some());
        cache.protect("firmware", HashSet::from(["a".to_string()]));
        put(&cache, "d", b"dddd");
        assert!(cache.lookup("a").unwrap().is_some(), "protected");
        assert!(cache.lookup("c").unwrap().is_none());
        assert_eq!(cache.total_bytes(), 8);
    }

    #[test]
    fn spares_the_union_of_what_each_owner_pins() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 8);
        put(&cache, "a", b"aaaa");
        put(&cache, "b", b"bbbb");
        cache.protect("firmware", HashSet::from(["a".to_string()]));
        cache.protect("streams", HashSet::from(["b".to_string()]));
        cache.lookup("b").unwrap();
        cache.set_max_bytes(4);
        assert!(cache.lookup("a").unwrap().is_some() && cache.lookup("b").unwrap().is_some(), "both pinned");
        cache.protect("firmware", HashSet::new());
        assert!(cache.lookup("a").unwrap().is_none(), "unpinned by its owner, then evicted");
        assert!(cache.lookup("b").unwrap().is_some(), "still pinned by the other owner");
        cache.unprotect("streams");
        cache.set_max_bytes(2);
        assert!(cache.lookup("b").unwrap().is_none(), "its owner is gone");
    }

    #[test]
    fn empty_payloads_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 10);
        assert!(put(&cache, "e", b"").bytes.is_empty());
    }
}
