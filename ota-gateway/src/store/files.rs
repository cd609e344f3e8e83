//! Reading the store: downloads (Range, ETag = SHA-256, HEAD) on the gateway's
//! zero-copy path, deletions, and filuxe's file listing.
//!
//! A downloaded file is memory-mapped once and its mapping kept while the file stays
//! the same (inode, size, time), so a download costs one `stat` and its body leaves
//! through `sendfile` like a firmware payload.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;

use super::error::StoreError;
use super::layout::Dirs;
use super::path::{self, StorePath, RESERVED};
use super::sums::{self, Stamp};
use crate::http::Download;

/// Mappings kept at most; beyond, the whole set is dropped and rebuilt on demand.
const MAX_MAPPED: usize = 512;

/// One version of a file, mapped, with its headers precomputed.
pub struct Mapped {
    stamp: Stamp,
    download: Download,
    last_modified: HeaderValue,
}

/// The mappings of recently downloaded files, by path.
#[derive(Default)]
pub struct Mappings(Mutex<HashMap<StorePath, Arc<Mapped>>>);

impl Mappings {
    /// The mapping of `path`'s current version, mapping (and hashing, if no checksum
    /// is recorded) it when needed.
    pub async fn get(&self, dirs: &Dirs, path: &StorePath) -> Result<Arc<Mapped>, StoreError> {
        let full = path.under(&dirs.root);
        let not_found = || StoreError::NotFound(path.as_str().to_owned());
        let meta = match std::fs::metadata(&full) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Err(not_found()),
            // `a/x` with `a` a file (ENOTDIR) names no file either.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                return Err(not_found())
            }
            Err(e) => return Err(StoreError::Io(e)),
        };
        let stamp = Stamp::of(&meta);
        if let Some(hit) = self.lock().get(path).filter(|m| m.stamp == stamp) {
            return Ok(hit.clone());
        }
        let (dirs, path2) = (dirs.clone(), path.clone());
        let mapped = tokio::task::spawn_blocking(move || map(&dirs, &path2))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        let mapped = Arc::new(mapped);
        let mut entries = self.lock();
        if entries.len() >= MAX_MAPPED {
            entries.clear();
        }
        entries.insert(path.clone(), mapped.clone());
        Ok(mapped)
    }

    /// Drops the mapping of `path` (after a delete or a replace).
    pub fn forget(&self, path: &StorePath) {
        self.lock().remove(path);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StorePath, Arc<Mapped>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Opens, checks, hashes (if needed) and maps the file at `path`. Blocking.
fn map(dirs: &Dirs, path: &StorePath) -> Result<Mapped, StoreError> {
    let full = path::resolve(&dirs.root, path)?;
    let file = File::open(&full).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(path.as_str().to_owned()),
        _ => StoreError::Io(e),
    })?;
    if !file.metadata()?.is_file() {
        return Err(StoreError::NotFound(path.as_str().to_owned()));
    }
    let (stamp, sha256) = sums::of_file(&dirs.state, path, &file)?;
    let nanos = u64::try_from(stamp.mtime_ns.max(0)).unwrap_or(u64::MAX);
    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
    let disposition = format!("attachment; filename=\"{}\"", path.file_name().replace(['"', '\\'], "_"));
    let download = Download {
        body: map_file(file)?,
        etag: HeaderValue::from_str(&format!("\"{sha256}\"")).expect("hex is a valid header"),
        content_type: HeaderValue::from_static("application/octet-stream"),
        disposition: Some(HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment"))),
    };
    Ok(Mapped {
        stamp,
        download,
        last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(modified)).expect("ascii date"),
    })
}

#[allow(unsafe_code)] // The store's one call of `map_payload`: the promise below is the store's to make.
fn map_file(file: File) -> std::io::Result<Bytes> {
    // SAFETY: store files are never written in place. Uploads are assembled in the
    // store's state (`layout`) and renamed (or linked) into place, deletions unlink: a mapped inode
    // keeps its bytes. The store's contract (module docs) is that files change only
    // through the store or by rename.
    unsafe { crate::sendfile::map_payload(file) }
}

/// The answer to `GET`/`HEAD /download/<path>` (axum drops the body of a HEAD):
/// Range, ETag, If-None-Match from the shared download path, plus Last-Modified.
pub fn respond(headers: &HeaderMap, mapped: &Mapped) -> Result<Response, StoreError> {
    let mut response = mapped.download.respond(headers)?;
    response.headers_mut().insert(header::LAST_MODIFIED, mapped.last_modified.clone());
    Ok(response)
}

/// Removes the file at `path` (not a directory). Blocking.
pub fn delete(dirs: &Dirs, path: &StorePath) -> Result<(), StoreError> {
    let full = path::resolve(&dirs.root, path)?;
    match std::fs::symlink_metadata(&full) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(StoreError::NotFound(path.as_str().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotFound(path.as_str().to_owned()))
        }
        Err(e) => return Err(StoreError::Io(e)),
    }
    std::fs::remove_file(&full).map_err(StoreError::io)?;
    sums::remove(&dirs.state, path);
    Ok(())
}

/// filuxe's `/filelist` answer. The store's root is never named (filuxe puts it in
/// `info.fileroot`; this store leaves that key out).
#[derive(Serialize)]
pub struct Listing {
    pub info: ListingInfo,
    /// Directory (relative to the store's root, `.` for the root) → file → entry.
    pub filelist: BTreeMap<String, BTreeMap<String, FileEntry>>,
    /// Directories found, relative to the store's root.
    pub dirlist: Vec<String>,
}

#[derive(Serialize)]
pub struct ListingInfo {
    pub files: usize,
    pub dirs: usize,
}

/// One file of a listing: filuxe's `size` and `time`, plus its `sha256` when known.
#[derive(Serialize)]
pub struct FileEntry {
    pub size: u64,
    pub time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Lists the directory `path`, and below it when `recursive`. Symlinks are not
/// followed or listed, nor is the store's own directory when it lives inside (see
/// `layout`). Blocking.
pub fn list(dirs: &Dirs, path: &StorePath, recursive: bool) -> Result<Listing, StoreError> {
    let root = &dirs.root;
    let start = path::resolve(root, path)?;
    if !start.is_dir() {
        return Err(StoreError::NotFound(path.as_str().to_owned()));
    }
    let mut listing =
        Listing { info: ListingInfo { files: 0, dirs: 0 }, filelist: BTreeMap::new(), dirlist: Vec::new() };
    let mut pending = vec![path.as_str().to_owned()];
    while let Some(rel) = pending.pop() {
        let dir = if rel.is_empty() { root.to_owned() } else { root.join(&rel) };
        let key = if rel.is_empty() { ".".to_owned() } else { rel.clone() };
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let kind = entry.file_type()?;
            let child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            if kind.is_dir() {
                if rel.is_empty() && name == RESERVED {
                    continue;
                }
                listing.dirlist.push(child.clone());
                if recursive {
                    pending.push(child);
                }
            } else if kind.is_file() {
                let Ok(meta) = entry.metadata() else { continue };
                let stamp = Stamp::of(&meta);
                let sha256 = StorePath::parse(&child, false).ok().and_then(|p| sums::read(&dirs.state, &p, stamp));
                let file = FileEntry { size: stamp.size, time: stamp.time(), sha256 };
                listing.filelist.entry(key.clone()).or_default().insert(name, file);
                listing.info.files += 1;
            }
        }
    }
    listing.info.dirs = listing.dirlist.len();
    Ok(listing)
}
