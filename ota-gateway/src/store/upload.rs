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

/// Body bytes gathered (as the frames hyper hands over, never copied) before they
/// are written. One such piece is written on a blocking thread while the next one
/// arrives, so receiving and writing overlap.
const PIECE: usize = 256 << 10;

/// A long body (or the chunks of one upload) starts a background `fdatasync` each
/// time this much more arrived.
const FLUSH_EVERY: u64 = 32 << 20;

/// Partial uploads untouched for this long are removed.
pub const ABANDONED: Duration = Duration::from_secs(24 * 3600);

/// `Content-Range: bytes FROM-TO/SIZE` of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub from: u64,
    pub to: u64,
    pub size: u64,
}

impl Chunk {
    /// Parses a Content-Range header value of an upload.
    pub fn parse(value: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::BadRequest(format!("Content-Range {value:?} is not `bytes FROM-TO/SIZE`"));
        let spec = value.trim().strip_prefix("bytes ").ok_or_else(bad)?;
        let (span, size) = spec.split_once('/').ok_or_else(bad)?;
        let (from, to) = span.split_once('-').ok_or_else(bad)?;
        let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
        let chunk = Chunk { from: num(from)?, to: num(to)?, size: num(size)? };
        if chunk.from > chunk.to || chunk.to >= chunk.size {
            return Err(StoreError::BadRequest(format!("Content-Range {value:?} does not lie inside the file")));
        }
        Ok(chunk)
    }

    fn len(&self) -> u64 {
        self.to - self.from + 1
    }
}

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

/// Which file a partial assembles, in `info.json`. Every chunk's request is compared
/// with it for equality, so every field is a string or an integer (exact through JSON
/// whatever the parser): the time is the float's bit pattern ([`time::bits`]), never a
/// JSON float. A float read back by a parser that rounds differently (serde_json's
/// default one misreads about 1 in 10 of Python's `time.time()` values) made the
/// completing chunk see "a different file" and answer 201 for a file never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Info {
    path: String,
    size: u64,
    /// `f64::to_bits` of the time asked for; `None` for none. (A partial begun by an
    /// earlier version kept `time` as a float: read as `None`, so it matches only an
    /// upload without a time; the others restart it from byte 0.)
    time_bits: Option<u64>,
}

impl Info {
    fn new(path: &StorePath, size: u64, options: &Options) -> Self {
        Self { path: path.as_str().to_owned(), size, time_bits: time::bits(options.time) }
    }

    /// The time asked for, for messages.
    fn time(&self) -> Option<f64> {
        self.time_bits.map(f64::from_bits)
    }
}

/// What this process knows of one partial (a cache of the records, plus the hash of
/// the bytes received in order so far, and its data file and range log kept open
/// across chunks).
struct Tracked {
    info: Info,
    /// The partial's data file and its inode, and this process's range log in the same
    /// partial, opened by the first chunk this process wrote and kept until the upload
    /// ends here.
    data: Option<Open>,
    /// from → to (inclusive).
    ranges: BTreeMap<u64, u64>,
    /// SHA-256 of bytes `0..n` (being computed) when this process saw them in order.
    hashed: Option<(u64, HashPipe)>,
    /// Set while a background `fdatasync` of the partial runs: written chunks reach
    /// the disk while later ones arrive, so the sync before the rename has little left.
    flushing: Arc<AtomicBool>,
}

impl Tracked {
    fn new(info: Info, ranges: BTreeMap<u64, u64>, hashed: Option<(u64, HashPipe)>) -> Self {
        Self { info, data: None, ranges, hashed, flushing: Arc::default() }
    }

    /// The partial's data file in `dir` and its inode, opened once per upload (with
    /// this process's range log beside it).
    fn data_file(&mut self, dir: &Path, writer: &str) -> Result<(Arc<File>, u64), StoreError> {
        if let Some(open) = &self.data {
            return Ok((open.file.clone(), open.ino));
        }
        let file = OpenOptions::new().write(true).open(dir.join("data")).map_err(StoreError::io)?;
        let ino = file.metadata()?.ino();
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("ranges").join(format!("{writer}.log")))
            .map_err(StoreError::io)?;
        let open = Open { file: Arc::new(file), ino, log };
        let found = (open.file.clone(), ino);
        self.data = Some(open);
        Ok(found)
    }

    /// Records `chunk` as written, in the log [`Tracked::data_file`] opened. One
    /// write of one record on a file opened for appending: a reader sees the whole
    /// record or none of it, and a torn one (a crash mid-write) fails its check.
    fn record(&mut self, chunk: &Chunk) -> Result<(), StoreError> {
        let open = self.data.as_mut().expect("the data file is opened before a chunk is written");
        open.log.write_all(&Record { from: chunk.from, to: chunk.to }.encode()).map_err(StoreError::io)?;
        self.ranges.insert(chunk.from, chunk.to);
        Ok(())
    }

    fn covers(&self, size: u64) -> bool {
        let mut next = 0;
        for (&from, &to) in &self.ranges {
            if from > next {
                return false;
            }
            next = next.max(to + 1);
        }
        next >= size
    }

    fn contiguous_before(&self, offset: u64) -> bool {
        let mut next = 0;
        for (&from, &to) in self.ranges.range(..offset) {
            if from > next {
                return false;
            }
            next = next.max(to + 1);
        }
        next >= offset
    }

    /// Exactly this range is recorded (a retry), some other overlaps it (a conflict),
    /// or it is new.
    fn overlap(&self, chunk: &Chunk) -> Overlap {
        if self.ranges.get(&chunk.from) == Some(&chunk.to) {
            return Overlap::Same;
        }
        let clash = self.ranges.range(..=chunk.to).next_back().is_some_and(|(_, &to)| to >= chunk.from);
        if clash {
            Overlap::Conflict
        } else {
            Overlap::None
        }
    }
}

/// SHA-256 computed beside the writes, in order, on a blocking thread of its own, for
/// an upload whose client announced a checksum (which the commit must check): a
/// request waits for its bytes to be written, not hashed; only the commit waits for
/// the hash. At most [`HASH_QUEUE`] pieces wait, so memory stays bounded.
struct HashPipe {
    tx: tokio::sync::mpsc::Sender<Arc<Vec<Bytes>>>,
    done: tokio::task::JoinHandle<Sha256>,
}

/// Uploads whose partial this process keeps open (its data file and range log) and
/// cached between chunks. Past this many, the uploads nobody is sending to at that
/// moment are forgotten: their next chunk reads the partial back from disk. Without
/// it every abandoned upload kept two descriptors until the sweep, and clients that
/// gave up (or one client with the write key) could exhaust the process's descriptors,
/// failing every upload and download with "Too many open files".
const MAX_TRACKED: usize = 256;

/// Checksums of committed files computed after the answer, at once at most.
const MAX_LATE_SUMS: usize = 4;
static LATE_SUMS: Semaphore = Semaphore::const_new(MAX_LATE_SUMS);

/// Pieces (of about [`PIECE`] bytes) queued for hashing per upload.
const HASH_QUEUE: usize = 32;

/// Hashing threads alive at once in the process. Each holds a blocking thread until
/// its upload completes or is swept; past this many, an upload is hashed by reading
/// the file at commit instead, so unfinished uploads never take tokio's blocking pool
/// (which every write, download and listing needs).
const MAX_HASH_PIPES: usize = 32;
static HASH_PIPES: Semaphore = Semaphore::const_new(MAX_HASH_PIPES);

impl HashPipe {
    /// A hashing thread, or `None` when [`MAX_HASH_PIPES`] are alive.
    fn start() -> Option<Self> {
        let alive = HASH_PIPES.try_acquire().ok()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Vec<Bytes>>>(HASH_QUEUE);
        let done = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(piece) = rx.blocking_recv() {
                for bytes in piece.iter() {
                    hasher.update(bytes);
                }
            }
            drop(alive);
            hasher
        });
        Some(Self { tx, done })
    }

    /// The hex digest of everything fed.
    async fn finish(self) -> Option<String> {
        drop(self.tx);
        self.done.await.ok().map(|h| hex::encode(h.finalize()))
    }
}

/// A partial's data file, opened once per upload, and this process's range log.
struct Open {
    file: Arc<File>,
    ino: u64,
    log: File,
}

/// One written chunk in a range log: `from`, `to` and a check word, little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    from: u64,
    to: u64,
}

impl Record {
    const LEN: usize = 24;
    /// Mixed into the check word, so zeros (a hole, a torn write) never read as a chunk.
    const SALT: u64 = u64::from_le_bytes(*b"updraft1");

    fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..8].copy_from_slice(&self.from.to_le_bytes());
        out[8..16].copy_from_slice(&self.to.to_le_bytes());
        out[16..].copy_from_slice(&(self.from ^ self.to.rotate_left(17) ^ Self::SALT).to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let record = Self { from: word(0), to: word(8) };
        (record.from <= record.to && record.encode()[16..] == bytes[16..]).then_some(record)
    }
}

/// A name for one [`Uploads`]' range logs, unique among the replicas sharing a volume
/// (the pod's name, the process, the time it started).
fn new_writer() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    format!("{host}-{}-{}", std::process::id(), unique())
}

enum Overlap {
    None,
    Same,
    Conflict,
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

    /// Stores a whole body at `path`.
    pub async fn whole(
        &self,
        path: &StorePath,
        declared: Option<u64>,
        options: &Options,
        body: Body,
    ) -> Result<Stored, StoreError> {
        if let Some(len) = declared {
            self.check_size(len)?;
        }
        let target = self.target(path, options)?;
        let tmp = self.own("tmp").join(format!("{}-{}", std::process::id(), unique()));
        let file = OpenOptions::new().create_new(true).read(true).write(true).open(&tmp).map_err(StoreError::io)?;
        let file = Arc::new(file);
        let _cleanup = RemoveOnDrop(tmp.clone());
        let max_bytes = self.max_bytes();
        let limit = declared.unwrap_or(max_bytes).min(max_bytes);
        let pipe = if options.sha256.is_some() { HashPipe::start() } else { None };
        let written = write_body(&file, 0, body, limit, pipe.as_ref(), &Arc::default()).await.map_err(|e| {
            if matches!(e, StoreError::TooLarge { .. }) {
                StoreError::TooLarge { size: limit + 1, limit: max_bytes }
            } else {
                e
            }
        })?;
        if declared.is_some_and(|len| len != written) {
            return Err(StoreError::BadRequest(format!("body has {written} bytes, Content-Length said {declared:?}")));
        }
        let hashed = match pipe {
            Some(pipe) => pipe.finish().await,
            None => None,
        };
        let dirs = self.dirs.clone();
        let (path2, options) = (path.clone(), options.clone());
        let announced = options.sha256.is_some();
        let stored = blocking(move || commit(&dirs, &path2, &target, &tmp, &file, hashed, &options)).await?;
        if !announced {
            self.record_sum_later(path);
        }
        Ok(stored)
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

    /// Stores one chunk of the file at `path`.
    pub async fn chunk(
        &self,
        path: &StorePath,
        chunk: Chunk,
        options: &Options,
        body: Body,
    ) -> Result<Stored, StoreError> {
        self.check_size(chunk.size)?;
        self.target(path, options)?;
        let id = hex::encode(&Sha256::digest(path.as_str().as_bytes())[..20]);
        let slot = {
            let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
            if tracked.len() >= MAX_TRACKED && !tracked.contains_key(&id) {
                // A slot only the map holds has no request in flight (requests clone
                // it under this lock).
                tracked.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            tracked.entry(id.clone()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        let dir = self.own("partial").join(&id);
        let info = Info::new(path, chunk.size, options);
        let tracked = match guard.take() {
            Some(t) if t.info == info => t,
            _ => {
                blocking({
                    let (dir, info) = (dir.clone(), info.clone());
                    let hash = options.sha256.is_some();
                    move || load_or_start(&dir, &info, chunk.from == 0, hash)
                })
                .await?
            }
        };
        let tracked = guard.insert(tracked);
        match tracked.overlap(&chunk) {
            Overlap::Conflict => {
                return Err(StoreError::Conflict(format!(
                    "bytes {}-{} overlap a different chunk already received for {}",
                    chunk.from,
                    chunk.to,
                    path.as_str()
                )))
            }
            Overlap::Same => drain(body).await,
            Overlap::None => {
                let (file, ino) = tracked.data_file(&dir, &self.writer)?;
                let pipe = match tracked.hashed.take() {
                    Some((n, pipe)) if n == chunk.from => Some(pipe),
                    other => {
                        tracked.hashed = other;
                        None
                    }
                };
                let written =
                    write_body(&file, chunk.from, body, chunk.len(), pipe.as_ref(), &tracked.flushing).await?;
                if written != chunk.len() {
                    return Err(StoreError::BadRequest(format!(
                        "chunk body has {written} bytes, Content-Range says {}",
                        chunk.len()
                    )));
                }
                tracked.hashed = pipe.map(|pipe| (chunk.to + 1, pipe));
                // Another replica may have restarted the partial (a different file from
                // byte 0) while this chunk was written: then its bytes are not in it.
                let still_ours = fs::metadata(dir.join("data")).map(|m| m.ino()).ok() == Some(ino);
                if !still_ours {
                    tracked.hashed = None;
                    tracked.data = None;
                    return Err(StoreError::Conflict(format!(
                        "the upload of {} was restarted with another file while this chunk was written",
                        path.as_str()
                    )));
                }
                tracked.record(&chunk)?;
            }
        }
        if !tracked.covers(chunk.size) && (chunk.to + 1 == chunk.size || !tracked.contiguous_before(chunk.from)) {
            // Other replicas may have written the missing chunks.
            tracked.ranges = read_ranges(&dir)?;
        }
        if !tracked.covers(chunk.size) {
            return Ok(Stored::Partial);
        }
        let hashed = match tracked.hashed.take() {
            Some((n, pipe)) if n == chunk.size => pipe.finish().await,
            _ => None,
        };
        let held = tracked.data.take().map(|open| (open.file, open.ino));
        let target = self.target(path, options);
        let (dirs, path2, options2) = (self.dirs.clone(), path.clone(), options.clone());
        let committing = self.own("committing");
        let result = match target {
            Ok(target) => {
                let take = Takeover { dir, committing, id: id.clone(), info, held };
                blocking(move || take.commit(&dirs, &path2, &target, hashed, &options2)).await
            }
            Err(e) => Err(e),
        };
        if matches!(result, Ok(Stored::Committed)) && options.sha256.is_none() {
            self.record_sum_later(path);
        }
        *guard = None;
        drop(guard);
        self.tracked.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        result
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

/// The partial at `dir` if it assembles `info`; otherwise a fresh one when `restart`
/// (the chunk starts at byte 0), else a conflict. A fresh one hashes its bytes as they
/// arrive in order when `hash` (the client announced a SHA-256). Blocking.
fn load_or_start(dir: &Path, info: &Info, restart: bool, hash: bool) -> Result<Tracked, StoreError> {
    let existing: Option<Info> = fs::read(dir.join("info.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    match existing {
        Some(found) if found == *info => {
            return Ok(Tracked::new(found, read_ranges(dir)?, None));
        }
        Some(found) if !restart => {
            return Err(StoreError::Conflict(format!(
                "an upload of {} with size {} and time {:?} is under way; a different file must start at byte 0",
                found.path,
                found.size,
                found.time()
            )))
        }
        _ => {}
    }
    // Start over: move the old partial aside first, so a replica still writing into
    // it cannot touch the new one.
    if dir.exists() {
        let aside =
            dir.with_file_name(format!("{}.old-{}", dir.file_name().unwrap_or_default().to_string_lossy(), unique()));
        if fs::rename(dir, &aside).is_ok() {
            let _ = fs::remove_dir_all(aside);
        }
    }
    let staging =
        dir.with_file_name(format!("{}.new-{}", dir.file_name().unwrap_or_default().to_string_lossy(), unique()));
    fs::create_dir_all(staging.join("ranges")).map_err(StoreError::io)?;
    fs::write(staging.join("info.json"), serde_json::to_vec(info).expect("info serializes")).map_err(StoreError::io)?;
    File::create(staging.join("data")).map_err(StoreError::io)?;
    match fs::rename(&staging, dir) {
        Ok(()) => {
            let hashed = if hash { HashPipe::start().map(|pipe| (0, pipe)) } else { None };
            Ok(Tracked::new(info.clone(), BTreeMap::new(), hashed))
        }
        // Another replica started the same partial at the same moment: use theirs.
        Err(_) => {
            let _ = fs::remove_dir_all(&staging);
            Ok(Tracked::new(info.clone(), read_ranges(dir)?, None))
        }
    }
}

/// The chunks recorded in the partial at `dir`: every process's range log (and the
/// one-file-per-chunk markers, `FROM-TO`, of partials begun by earlier versions).
fn read_ranges(dir: &Path) -> Result<BTreeMap<u64, u64>, StoreError> {
    let mut ranges = BTreeMap::new();
    let entries = match fs::read_dir(dir.join("ranges")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ranges),
        Err(e) => return Err(StoreError::Io(e)),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".log") {
            let bytes = match fs::read(entry.path()) {
                Ok(bytes) => bytes,
                // A partial being restarted by another replica.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Io(e)),
            };
            for record in bytes.chunks(Record::LEN).filter_map(Record::decode) {
                ranges.insert(record.from, record.to);
            }
        } else if let Some((from, to)) =
            name.split_once('-').and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        {
            ranges.insert(from, to);
        }
    }
    Ok(ranges)
}

/// Whether the partial at `dir` still assembles `info` and its records cover it all.
fn covers_on_disk(dir: &Path, info: &Info) -> Result<bool, StoreError> {
    let on_disk: Option<Info> = fs::read(dir.join("info.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    if on_disk.as_ref() != Some(info) {
        return Ok(false);
    }
    let tracked = Tracked::new(info.clone(), read_ranges(dir)?, None);
    Ok(tracked.covers(info.size))
}

/// How long a request whose partial another replica took over waits for that replica
/// to finish committing it before answering that it cannot tell.
const WINNER_WAIT: Duration = Duration::from_secs(60);

/// The commit of a partial by the request whose records cover it. It answers
/// [`Stored::Committed`] only when the file is in place: committed by this request, or
/// by a replica that took the partial over first (the file at the target is then the
/// partial's own inode, which this request holds open so it cannot be reused).
/// Whenever the records cover the file but it cannot be committed, the answer is an
/// error ([`StoreError::NotCommitted`], or why the commit failed), never a success.
struct Takeover {
    /// The partial.
    dir: PathBuf,
    /// `committing/` of the state, where a partial is taken to be committed.
    committing: PathBuf,
    /// The partial's name (the same for every replica).
    id: String,
    info: Info,
    /// The partial's data file and its inode, if this process has it open.
    held: Option<(Arc<File>, u64)>,
}

impl Takeover {
    fn not_committed(&self, why: &str) -> StoreError {
        StoreError::NotCommitted(format!(
            "every chunk of {} arrived, but {why}; nothing is stored, upload the file again",
            self.info.path
        ))
    }

    /// Blocking.
    fn commit(
        self,
        dirs: &Dirs,
        path: &StorePath,
        target: &Path,
        hashed: Option<String>,
        options: &Options,
    ) -> Result<Stored, StoreError> {
        let (_held, ino) = match self.held.clone() {
            Some((file, ino)) => (file, ino),
            None => match File::open(self.dir.join("data")) {
                Ok(file) => {
                    let ino = file.metadata()?.ino();
                    (Arc::new(file), ino)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(self.not_committed("the upload was taken over or restarted meanwhile"))
                }
                Err(e) => return Err(StoreError::io(e)),
            },
        };
        // Records on disk are the truth: another replica may have restarted the partial.
        let same = |dir: &Path| -> Result<bool, StoreError> {
            let data = fs::metadata(dir.join("data")).map(|m| m.ino()).ok();
            Ok(data == Some(ino) && covers_on_disk(dir, &self.info)?)
        };
        if !same(&self.dir)? {
            return Err(self.not_committed("another upload of the same path restarted it meanwhile"));
        }
        let taken = self.committing.join(format!("{}-{}", self.id, unique()));
        match fs::rename(&self.dir, &taken) {
            Ok(()) => {}
            // Another request (another replica) took it over first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.after_winner(target, ino, options),
            Err(e) => return Err(StoreError::io(e)),
        }
        let _cleanup = RemoveOnDrop(taken.clone());
        // Checked again now that nobody else can change it: a restart between the
        // check and the rename would have put another file's partial here.
        if !same(&taken)? {
            let _ = fs::rename(&taken, &self.dir);
            return Err(self.not_committed("another upload of the same path restarted it meanwhile"));
        }
        let data = taken.join("data");
        let file = OpenOptions::new().read(true).write(true).open(&data).map_err(StoreError::io)?;
        commit(dirs, path, target, &data, &file, hashed, options)
    }

    /// The answer of a request that lost the takeover to another: waits until no
    /// replica is committing this partial any more, then looks at what is in place.
    fn after_winner(&self, target: &Path, ino: u64, options: &Options) -> Result<Stored, StoreError> {
        self.wait_for_winner(WINNER_WAIT)?;
        match fs::metadata(target) {
            Ok(meta) if meta.ino() == ino => Ok(Stored::Committed),
            Ok(_) if !options.force => Err(StoreError::Exists(self.info.path.clone())),
            _ => Err(self.not_committed("the replica that took it over to commit it did not")),
        }
    }

    fn wait_for_winner(&self, patience: Duration) -> Result<(), StoreError> {
        let prefix = format!("{}-", self.id);
        let deadline = std::time::Instant::now() + patience;
        loop {
            let busy = fs::read_dir(&self.committing)?
                .flatten()
                .any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)));
            if !busy {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(self.not_committed("another replica is still committing it"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Checks, syncs, times and renames the complete file `data` into `target`. `hashed`
/// is the SHA-256 computed as the bytes arrived, if it was; when the client announced
/// one and none was computed, it is read back from `file` here. Blocking.
fn commit(
    dirs: &Dirs,
    path: &StorePath,
    target: &Path,
    data: &Path,
    file: &File,
    hashed: Option<String>,
    options: &Options,
) -> Result<Stored, StoreError> {
    let sha256 = match (hashed, &options.sha256) {
        (Some(sum), _) => Some(sum),
        (None, Some(_)) => Some(sums::hash(file.try_clone()?)?),
        (None, None) => None,
    };
    if let (Some(expected), Some(sha256)) = (&options.sha256, &sha256) {
        if !expected.eq_ignore_ascii_case(sha256) {
            return Err(StoreError::Mismatch(format!(
                "{} has sha256 {sha256}, the client announced {expected}; nothing stored",
                path.as_str()
            )));
        }
    }
    if let Some(time) = options.time.filter(|t| *t > 0.0) {
        file.set_modified(time::to_system_time(time)).map_err(StoreError::io)?;
    }
    file.sync_all().map_err(StoreError::io)?;
    // Recorded before the file appears, so a listing never shows it without its
    // checksum (rename and link keep the inode the record names).
    let stamp = Stamp::of(&file.metadata()?);
    if let Some(sha256) = &sha256 {
        if let Err(e) = sums::write(&dirs.state, path, stamp, sha256) {
            tracing::debug!(error = %e, "cannot record a checksum");
        }
    }
    let parent = target.parent().expect("a file path has a parent");
    // Re-resolved now: directories may have changed while the upload ran.
    path::resolve(&dirs.root, path)?;
    fs::create_dir_all(parent).map_err(StoreError::io)?;
    path::resolve(&dirs.root, path)?;
    if options.force {
        fs::rename(data, target).map_err(StoreError::io)?;
    } else {
        match fs::hard_link(data, target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists(path.as_str().to_owned()))
            }
            Err(e) => return Err(StoreError::io(e)),
        }
        let _ = fs::remove_file(data);
    }
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    tracing::info!(
        path = path.as_str(),
        size = stamp.size,
        sha256 = sha256.as_deref().unwrap_or("(computed next)"),
        "stored"
    );
    Ok(Stored::Committed)
}

/// Writes `body` into `file` from `offset`, at most `limit` bytes (more is an error),
/// feeding `hash`. The frames of about [`PIECE`] bytes are written together on a
/// blocking thread while the next piece arrives (one write in flight at a time);
/// nothing is copied in user space. Returns the bytes written.
async fn write_body(
    file: &Arc<File>,
    offset: u64,
    body: Body,
    limit: u64,
    hash: Option<&HashPipe>,
    flushing: &Arc<AtomicBool>,
) -> Result<u64, StoreError> {
    let mut stream = body.into_data_stream();
    let mut piece: Vec<Bytes> = Vec::new();
    let mut gathered = 0usize;
    // Bytes received so far, and bytes whose write has been started.
    let (mut received, mut started) = (0u64, 0u64);
    let mut in_flight: Option<tokio::task::JoinHandle<Result<(), StoreError>>> = None;
    loop {
        let next = stream.next().await;
        let end = next.is_none();
        if let Some(frame) = next {
            let refused = match frame {
                Ok(frame) => {
                    received += frame.len() as u64;
                    gathered += frame.len();
                    if !frame.is_empty() {
                        piece.push(frame);
                    }
                    (received > limit).then_some(StoreError::TooLarge { size: received, limit })
                }
                Err(e) => Some(StoreError::BadRequest(format!("upload body: {e}"))),
            };
            if let Some(refused) = refused {
                // Nothing of this body is written after the answer.
                if let Some(write) = in_flight.take() {
                    let _ = write.await;
                }
                return Err(refused);
            }
        }
        if gathered >= PIECE || (end && gathered > 0) {
            if let Some(write) = in_flight.take() {
                write.await.map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
            }
            let piece = Arc::new(std::mem::take(&mut piece));
            let at = offset + started;
            started += gathered as u64;
            let crossed = at / FLUSH_EVERY != (offset + started) / FLUSH_EVERY;
            gathered = 0;
            let (to_write, writer) = (piece.clone(), file.clone());
            in_flight = Some(tokio::task::spawn_blocking(move || {
                let mut at = at;
                for bytes in to_write.iter() {
                    writer.write_all_at(bytes, at).map_err(StoreError::io)?;
                    at += bytes.len() as u64;
                }
                Ok(())
            }));
            if let Some(pipe) = hash {
                // The hashing thread only ends when the pipe is dropped.
                let _ = pipe.tx.send(piece).await;
            }
            // Large files: start writing back what arrived while the rest comes in, so
            // the sync before the rename has little left to do.
            if crossed {
                flush_behind(file, flushing);
            }
        }
        if end {
            break;
        }
    }
    if let Some(write) = in_flight.take() {
        write.await.map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
    }
    Ok(received)
}

/// Starts an `fdatasync` of `file` in the background unless one is under way.
fn flush_behind(file: &Arc<File>, flushing: &Arc<AtomicBool>) {
    if flushing.swap(true, Ordering::AcqRel) {
        return;
    }
    let (file, flushing) = (file.clone(), flushing.clone());
    tokio::task::spawn_blocking(move || {
        let _ = file.sync_data();
        flushing.store(false, Ordering::Release);
    });
}

async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}

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
mod tests {
    use super::*;

    /// A store at `<tmp>/store`, its state beside it.
    fn setup() -> (tempfile::TempDir, Dirs) {
        let dir = tempfile::tempdir().unwrap();
        let dirs = super::super::layout::open(&dir.path().join("store")).unwrap();
        (dir, dirs)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    fn p(s: &str) -> StorePath {
        StorePath::parse(s, false).unwrap()
    }

    async fn send(
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

    fn visible(root: &Path, path: &str) -> Option<Vec<u8>> {
        fs::read(root.join(path)).ok()
    }

    #[test]
    fn range_records_round_trip_and_reject_torn_or_empty_bytes() {
        let record = Record { from: 1 << 20, to: (2 << 20) - 1 };
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Some(record));
        assert_eq!(Record::decode(&[0; Record::LEN]), None, "a hole is not a chunk");
        assert_eq!(Record::decode(&bytes[..Record::LEN - 1]), None, "a torn record is not a chunk");
        assert_eq!(Record::decode(&bytes[..10]), None, "a torn record is not a chunk");
        let mut flipped = bytes;
        flipped[3] ^= 1;
        assert_eq!(Record::decode(&flipped), None, "a changed offset fails the check");
    }

    /// Two writers' logs (one ending in a torn record) and an old-style marker all
    /// count; nothing else in the directory does.
    #[test]
    fn ranges_are_read_from_every_writers_log_and_old_markers() {
        let (_tmp, dirs) = setup();
        let root = dirs.root.clone();
        let ranges = root.join("ranges");
        fs::create_dir_all(&ranges).unwrap();
        let mut a = Record { from: 0, to: 9 }.encode().to_vec();
        a.extend(Record { from: 20, to: 29 }.encode());
        a.extend(&Record { from: 40, to: 49 }.encode()[..10]);
        fs::write(ranges.join("pod-a-1-x.log"), a).unwrap();
        fs::write(ranges.join("pod-b-1-y.log"), Record { from: 10, to: 19 }.encode()).unwrap();
        File::create(ranges.join("30-39")).unwrap();
        File::create(ranges.join("junk")).unwrap();
        let found: Vec<_> = read_ranges(&root).unwrap().into_iter().collect();
        assert_eq!(found, vec![(0, 9), (10, 19), (20, 29), (30, 39)]);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(Chunk::parse("bytes 0-9/10").unwrap(), Chunk { from: 0, to: 9, size: 10 });
        for bad in ["bytes 5-4/10", "bytes 0-10/10", "bytes 0-9", "items 0-9/10", "bytes -1-9/10", "bytes 0-9/*"] {
            assert!(Chunk::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn chunks_in_any_order_assemble_and_appear_only_when_complete() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 1 << 30);
        let bytes = data(300_000);
        let o = Options { time: Some(1_600_000_000.5), ..Default::default() };
        assert_eq!(send(&u, "a/f.bin", &bytes, 200_000, 299_999, &o).await.unwrap(), Stored::Partial);
        assert_eq!(visible(&root, "a/f.bin"), None);
        assert_eq!(send(&u, "a/f.bin", &bytes, 0, 99_999, &o).await.unwrap(), Stored::Partial);
        // The same chunk again is a retry.
        assert_eq!(send(&u, "a/f.bin", &bytes, 0, 99_999, &o).await.unwrap(), Stored::Partial);
        // A chunk overlapping another differently is refused.
        assert!(matches!(send(&u, "a/f.bin", &bytes, 50_000, 150_000, &o).await, Err(StoreError::Conflict(_))));
        assert_eq!(visible(&root, "a/f.bin"), None);
        assert_eq!(send(&u, "a/f.bin", &bytes, 100_000, 199_999, &o).await.unwrap(), Stored::Committed);
        assert_eq!(visible(&root, "a/f.bin").unwrap(), bytes);
        let meta = fs::metadata(root.join("a/f.bin")).unwrap();
        let stamp = Stamp::of(&meta);
        assert_eq!(stamp.time(), 1_600_000_000.5);
        // No checksum was announced: it is recorded after the answer.
        let expected = hex::encode(Sha256::digest(&bytes));
        for _ in 0..100 {
            if sums::read(&dirs.state, &p("a/f.bin"), stamp).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sums::read(&dirs.state, &p("a/f.bin"), stamp), Some(expected));
        assert_eq!(fs::read_dir(dirs.own("partial")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn chunks_reaching_two_replicas_assemble() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let (a, b) = (Uploads::new(&dirs, 1 << 30), Uploads::new(&dirs, 1 << 30));
        let bytes = data(1_000_000);
        let o = Options::default();
        let step = 100_000;
        for (i, from) in (0..bytes.len()).step_by(step).enumerate() {
            let replica = if i % 3 == 1 { &b } else { &a };
            let result = send(replica, "f", &bytes, from, from + step - 1, &o).await.unwrap();
            assert_eq!(result == Stored::Committed, from + step == bytes.len(), "chunk {i}");
        }
        assert_eq!(visible(&root, "f").unwrap(), bytes);
    }

    #[tokio::test]
    async fn a_different_file_restarts_from_byte_zero_only() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 1 << 30);
        let old = data(1000);
        let o = Options { time: Some(100.0), ..Default::default() };
        send(&u, "f", &old, 0, 499, &o).await.unwrap();
        let new: Vec<u8> = data(1200).into_iter().rev().collect();
        let o2 = Options { time: Some(200.0), ..Default::default() };
        assert!(matches!(send(&u, "f", &new, 600, 1199, &o2).await, Err(StoreError::Conflict(_))));
        send(&u, "f", &new, 0, 599, &o2).await.unwrap();
        assert_eq!(send(&u, "f", &new, 600, 1199, &o2).await.unwrap(), Stored::Committed);
        assert_eq!(visible(&root, "f").unwrap(), new);
    }

    #[tokio::test]
    async fn force_checksums_and_limits() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 10_000);
        let bytes = data(5000);
        let o = Options::default();
        send(&u, "f", &bytes, 0, 4999, &o).await.unwrap();
        assert!(matches!(send(&u, "f", &bytes, 0, 4999, &o).await, Err(StoreError::Exists(_))));
        assert!(matches!(u.whole(&p("f"), None, &o, Body::from(vec![1u8; 10])).await, Err(StoreError::Exists(_))));
        let replacement = data(3000);
        let forced = Options { force: true, sha256: Some("00".repeat(32)), ..Default::default() };
        assert!(matches!(
            u.whole(&p("f"), None, &forced, Body::from(replacement.clone())).await,
            Err(StoreError::Mismatch(_))
        ));
        assert_eq!(visible(&root, "f").unwrap(), bytes);
        let forced =
            Options { force: true, sha256: Some(hex::encode(Sha256::digest(&replacement))), ..Default::default() };
        u.whole(&p("f"), None, &forced, Body::from(replacement.clone())).await.unwrap();
        assert_eq!(visible(&root, "f").unwrap(), replacement);
        let big = data(20_000);
        assert!(matches!(u.whole(&p("g"), None, &o, Body::from(big.clone())).await, Err(StoreError::TooLarge { .. })));
        assert!(matches!(send(&u, "g", &big, 0, 999, &o).await, Err(StoreError::TooLarge { .. })));
        assert_eq!(visible(&root, "g"), None);
        assert_eq!(fs::read_dir(dirs.own("tmp")).unwrap().count(), 0);
    }

    /// Times Python's `repr(time.time())` prints, among them values serde_json's
    /// default parser reads back as a neighbouring float.
    const PYTHON_TIMES: [&str; 5] =
        ["1796555001.0810335", "1765432109.9999998", "1700000000.0000002", "1733333333.3333333", "1.5"];

    fn numbers_are_integers(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::Number(n) => n.is_u64(),
            serde_json::Value::Array(items) => items.iter().all(numbers_are_integers),
            serde_json::Value::Object(fields) => fields.values().all(numbers_are_integers),
            _ => true,
        }
    }

    /// `info.json` is compared for equality with each chunk's request, so it holds no
    /// float: whatever parser reads it back (exact or not), it reads the same record.
    #[test]
    fn partial_records_hold_no_floats_and_compare_exactly() {
        for text in PYTHON_TIMES {
            let time: f64 = text.parse().unwrap();
            let info = Info::new(&p("a/f.bin"), 3 << 20, &Options { time: Some(time), ..Default::default() });
            let json = serde_json::to_vec(&info).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert!(numbers_are_integers(&value), "{text}: {value}");
            let back: Info = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, info, "{text}");
            assert_eq!(back.time().map(f64::to_bits), Some(time.to_bits()));
            // The neighbouring float (what an inexact parse yields) is another file.
            let next = Info { time_bits: Some(time.to_bits() + 1), ..info.clone() };
            assert_ne!(next, info);
        }
    }

    /// filuxe's upload with Python's float times: the chunk that completes the file
    /// answers Committed, the bytes are there, and the listing's time is the float sent.
    #[tokio::test]
    async fn uploads_with_python_float_times_commit_with_their_last_chunk() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 1 << 30);
        let bytes = data(250_000);
        for (i, text) in PYTHON_TIMES.iter().enumerate() {
            let time: f64 = text.parse().unwrap();
            let o = Options { time: Some(time), force: i % 2 == 1, ..Default::default() };
            let name = format!("t/{i}.bin");
            assert_eq!(send(&u, &name, &bytes, 100_000, 199_999, &o).await.unwrap(), Stored::Partial);
            assert_eq!(send(&u, &name, &bytes, 0, 99_999, &o).await.unwrap(), Stored::Partial);
            assert_eq!(send(&u, &name, &bytes, 200_000, 249_999, &o).await.unwrap(), Stored::Committed, "{text}");
            assert_eq!(visible(&root, &name).unwrap(), bytes, "{text}");
            let stamp = Stamp::of(&fs::metadata(root.join(&name)).unwrap());
            if time > 8_388_608.0 {
                assert_eq!(stamp.time().to_bits(), time.to_bits(), "{text}");
            }
        }
    }

    /// The request whose chunk completes the records never answers "kept, not complete
    /// yet" (a 201 to filuxe's client) when the record on disk disagrees with it: that
    /// is how a time read back inexactly lost 1 upload in 10. It is an error the client
    /// retries on, and nothing appears.
    #[tokio::test]
    async fn covering_records_that_disagree_with_the_partial_on_disk_are_an_error() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 1 << 30);
        let bytes = data(300_000);
        let time: f64 = "1796555001.0810335".parse().unwrap();
        let o = Options { time: Some(time), ..Default::default() };
        send(&u, "f", &bytes, 0, 99_999, &o).await.unwrap();
        send(&u, "f", &bytes, 100_000, 199_999, &o).await.unwrap();
        // What a parser that reads the time back as its neighbour would see.
        let id = hex::encode(&Sha256::digest(b"f")[..20]);
        let info = dirs.own("partial").join(&id).join("info.json");
        let misread = Info { time_bits: Some(time.to_bits() + 1), ..Info::new(&p("f"), 300_000, &o) };
        fs::write(&info, serde_json::to_vec(&misread).unwrap()).unwrap();
        let last = send(&u, "f", &bytes, 200_000, 299_999, &o).await;
        assert!(matches!(last, Err(StoreError::NotCommitted(_))), "{last:?}");
        assert_eq!(visible(&root, "f"), None);
        // The client's retry from byte 0 stores the file.
        send(&u, "f", &bytes, 0, 99_999, &o).await.unwrap();
        send(&u, "f", &bytes, 100_000, 199_999, &o).await.unwrap();
        assert_eq!(send(&u, "f", &bytes, 200_000, 299_999, &o).await.unwrap(), Stored::Committed);
        assert_eq!(visible(&root, "f").unwrap(), bytes);
    }

    /// A request that lost the takeover to another replica answers what that replica
    /// did: Committed only when the partial's own inode is in place.
    #[test]
    fn the_loser_of_a_takeover_answers_what_the_winner_did() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let committing = root.join("committing");
        fs::create_dir_all(&committing).unwrap();
        let data = root.join("data");
        fs::write(&data, b"partial").unwrap();
        let held = File::open(&data).unwrap();
        let ino = held.metadata().unwrap().ino();
        let info = Info::new(&p("f"), 7, &Options::default());
        let take = Takeover {
            dir: root.join("partial"),
            committing: committing.clone(),
            id: "0123".into(),
            info,
            held: Some((Arc::new(held), ino)),
        };
        let target = root.join("f");
        let (keep, force) = (Options::default(), Options { force: true, ..Default::default() });
        // Nothing in place: the winner failed.
        assert!(matches!(take.after_winner(&target, ino, &force), Err(StoreError::NotCommitted(_))));
        // Another file in place.
        fs::write(&target, b"other").unwrap();
        assert!(matches!(take.after_winner(&target, ino, &keep), Err(StoreError::Exists(_))));
        assert!(matches!(take.after_winner(&target, ino, &force), Err(StoreError::NotCommitted(_))));
        fs::remove_file(&target).unwrap();
        // The winner is still committing: the loser waits for it, then sees its file.
        let busy = committing.join("0123-winner");
        fs::create_dir(&busy).unwrap();
        let winner = std::thread::spawn({
            let (data, target) = (data.clone(), target.clone());
            move || {
                std::thread::sleep(Duration::from_millis(200));
                fs::hard_link(&data, &target).unwrap();
                fs::remove_dir(&busy).unwrap();
            }
        });
        assert_eq!(take.after_winner(&target, ino, &keep).unwrap(), Stored::Committed);
        winner.join().unwrap();
        // A winner that never finishes: an error after the wait, never a success.
        fs::create_dir(committing.join("0123-stuck")).unwrap();
        assert!(matches!(take.wait_for_winner(Duration::from_millis(100)), Err(StoreError::NotCommitted(_))));
    }

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
