//! Reading the store: downloads (Range, ETag = SHA-256, HEAD) on the gateway's
//! zero-copy path, deletions, and filuxe's file listing.
//!
//! A downloaded file is memory-mapped once and its mapping kept while the file stays
//! the same (inode, size, time), so a download costs one `stat` and its body leaves
//! through `sendfile` like a firmware payload.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;

use super::error::StoreError;
use super::path::{self, StorePath, RESERVED};
use super::sums::{self, Stamp};
use crate::download::{etag_matches, parse_range, RangeRequest};

/// Mappings kept at most; beyond, the whole set is dropped and rebuilt on demand.
const MAX_MAPPED: usize = 512;

/// One version of a file, mapped, with its headers precomputed.
pub struct Mapped {
    stamp: Stamp,
    bytes: Bytes,
    etag: HeaderValue,
    last_modified: HeaderValue,
    disposition: HeaderValue,
}

/// The mappings of recently downloaded files, by path.
#[derive(Default)]
pub struct Mappings(Mutex<HashMap<StorePath, Arc<Mapped>>>);

impl Mappings {
    /// The mapping of `path`'s current version, mapping (and hashing, if no checksum
    /// is recorded) it when needed.
    pub async fn get(&self, root: &Path, path: &StorePath) -> Result<Arc<Mapped>, StoreError> {
        let full = path.under(root);
        let not_found = || StoreError::NotFound(path.as_str().to_owned());
        let meta = match std::fs::metadata(&full) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Err(not_found()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(StoreError::Io(e)),
        };
        let stamp = Stamp::of(&meta);
        if let Some(hit) = self.lock().get(path).filter(|m| m.stamp == stamp) {
            return Ok(hit.clone());
        }
        let (root, path2) = (root.to_owned(), path.clone());
        let mapped = tokio::task::spawn_blocking(move || map(&root, &path2))
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
fn map(root: &Path, path: &StorePath) -> Result<Mapped, StoreError> {
    let full = path::resolve(root, path)?;
    let file = File::open(&full).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(path.as_str().to_owned()),
        _ => StoreError::Io(e),
    })?;
    if !file.metadata()?.is_file() {
        return Err(StoreError::NotFound(path.as_str().to_owned()));
    }
    let (stamp, sha256) = sums::of_file(root, path, &file)?;
    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(stamp.mtime_ns.max(0) as u64);
    let disposition = format!("attachment; filename=\"{}\"", path.file_name().replace(['"', '\\'], "_"));
    Ok(Mapped {
        stamp,
        // Store files are only ever replaced by rename and removed by unlink (never
        // written in place), which is what map_payload requires.
        bytes: crate::sendfile::map_payload(file)?,
        etag: HeaderValue::from_str(&format!("\"{sha256}\"")).expect("hex is a valid header"),
        last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(modified)).expect("ascii date"),
        disposition: HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
    })
}

/// The answer to `GET`/`HEAD /download/<path>` (axum drops the body of a HEAD).
pub fn respond(headers: &HeaderMap, mapped: &Mapped) -> Result<Response, StoreError> {
    let common = |b: axum::http::response::Builder| {
        b.header(header::ETAG, mapped.etag.clone())
            .header(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"))
            .header(header::LAST_MODIFIED, mapped.last_modified.clone())
    };
    let etag = mapped.etag.to_str().unwrap_or_default();
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|inm| etag_matches(inm, etag)) {
        return Ok(common(Response::builder().status(StatusCode::NOT_MODIFIED)).body(Body::empty()).expect("valid"));
    }
    let size = mapped.bytes.len() as u64;
    let if_range_ok = headers.get(header::IF_RANGE).is_none_or(|v| v.as_bytes() == mapped.etag.as_bytes());
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if if_range_ok => parse_range(value, size),
        _ => RangeRequest::Full,
    };
    let builder = common(Response::builder())
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_DISPOSITION, mapped.disposition.clone());
    let response = match range {
        RangeRequest::Full => {
            builder.status(StatusCode::OK).header(header::CONTENT_LENGTH, size).body(Body::from(mapped.bytes.clone()))
        }
        RangeRequest::Partial { start, end } => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, end - start + 1)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
            .body(Body::from(mapped.bytes.slice(start as usize..=end as usize))),
        RangeRequest::Unsatisfiable => return Err(StoreError::RangeNotSatisfiable { size }),
    };
    Ok(response.expect("valid response"))
}

/// Removes the file at `path` (not a directory). Blocking.
pub fn delete(root: &Path, path: &StorePath) -> Result<(), StoreError> {
    let full = path::resolve(root, path)?;
    match std::fs::symlink_metadata(&full) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(StoreError::NotFound(path.as_str().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotFound(path.as_str().to_owned()))
        }
        Err(e) => return Err(StoreError::Io(e)),
    }
    std::fs::remove_file(&full).map_err(StoreError::io)?;
    sums::remove(root, path);
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
/// followed or listed, nor is the store's own directory. Blocking.
pub fn list(root: &Path, path: &StorePath, recursive: bool) -> Result<Listing, StoreError> {
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
                let sha256 = StorePath::parse(&child, false).ok().and_then(|p| sums::read(root, &p, stamp));
                let file = FileEntry { size: stamp.size, time: stamp.time(), sha256 };
                listing.filelist.entry(key.clone()).or_default().insert(name, file);
                listing.info.files += 1;
            }
        }
    }
    listing.info.dirs = listing.dirlist.len();
    Ok(listing)
}
