//! `.vcdiff` items for the newest version of each product (issue #23): the VCDIFF that
//! turns the previous version's squashfs (or `disk-kvm.img`) into the newest one's, so a
//! client that holds the previous image downloads the difference only.
//!
//! Deltas are built in the background, never on a request path: each sync round asks
//! [`Stream::deltas_ready`] which deltas the index may list. A pair whose delta is not
//! built yet starts a build (one at a time per stream) and is left out; the round the
//! build ends wakes lists it. So the index is published without the delta item first
//! and gains it a round later: a client that reads the index in between downloads the
//! full file, as it would from a server without deltas.
//!
//! A delta is a pure function of its two files ([`updraft_delta::vcdiff::encode`] is
//! deterministic), so it is kept content-addressed in the cache under its own digest,
//! like every other file of the stream, and pinned while the index lists it; what is
//! remembered here is only which pair gave which digest. A delta the cache lost (a
//! restart, an eviction before it was listed) is built again. Replicas build their own
//! and arrive at the same bytes, so the same index.
//!
//! Mirrors (`upstream` sources) list what their upstream lists and build nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write as _};
use std::sync::{Arc, Mutex};

use super::index::{blob_key, Delta, FileEntry, FileRef, Index, ProductKey, Serial};
use super::stream::Stream;
use super::StreamError;
use crate::unpack::Digesting;

/// What is known about the delta between two files (by their sha256).
#[derive(Debug, Clone)]
enum Built {
    Building,
    /// The delta's sha256 and size.
    Ready(String, u64),
    /// When a build failed (the log says why); tried again when the pair is asked for after
    /// [`RETRY_AFTER`].
    Failed(std::time::Instant),
}

const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// The deltas of one stream: built, being built, failed.
pub(crate) struct Deltas {
    by_pair: Mutex<HashMap<(String, String), Built>>,
    /// One build at a time: it maps both files and writes a third.
    build: tokio::sync::Semaphore,
}

impl Deltas {
    pub(crate) fn new() -> Self {
        Self { by_pair: Mutex::new(HashMap::new()), build: tokio::sync::Semaphore::new(1) }
    }
}

impl Stream {
    /// The delta items each product may list now (by product and version), starting
    /// the builds still missing.
    pub(super) fn deltas_ready(self: &Arc<Self>, index: &Index) -> Vec<(ProductKey, BTreeMap<Serial, Vec<Delta>>)> {
        let mut out = Vec::new();
        for (key, base, target) in index.newest_pairs() {
            let mut listed = Vec::new();
            for kind in Delta::KINDS {
                let (Some(from), Some(to)) = (base.rootfs.get(&kind), target.rootfs.get(&kind)) else { continue };
                if let Some((sha256, size)) = self.delta(&from.file, &to.file) {
                    let path = Delta::path(&to.file, &base.serial);
                    listed.push(Delta { kind, base: base.serial.clone(), file: FileRef { path, sha256, size } });
                }
            }
            out.push((key.clone(), BTreeMap::from([(target.serial.clone(), listed)])));
        }
        out
    }

    /// The delta from `base` to `target` when it is built and cached; otherwise starts
    /// building it (unless a build runs or failed recently) and says `None`.
    fn delta(self: &Arc<Self>, base: &FileRef, target: &FileRef) -> Option<(String, u64)> {
        let pair = (base.sha256.clone(), target.sha256.clone());
        let mut by_pair = self.deltas.by_pair.lock().unwrap_or_else(|e| e.into_inner());
        match by_pair.get(&pair) {
            Some(Built::Ready(sha256, size)) => {
                if matches!(self.cache.lookup(&blob_key(&format!("sha256:{sha256}"))), Ok(Some(_))) {
                    return Some((sha256.clone(), *size));
                }
            }
            Some(Built::Building) => return None,
            Some(Built::Failed(at)) if at.elapsed() < RETRY_AFTER => return None,
            _ => {}
        }
        by_pair.insert(pair.clone(), Built::Building);
        drop(by_pair);
        let this = self.clone();
        let (base, target) = (entry(base), entry(target));
        tokio::spawn(async move {
            let built = match this.build_delta(&base, &target).await {
                Ok((sha256, size)) => {
                    tracing::info!(stream = %this.name, base = %base.digest, target = %target.digest,
                        size, target_size = target.size, "delta built");
                    Built::Ready(sha256, size)
                }
                Err(e) => {
                    tracing::warn!(stream = %this.name, base = %base.digest, target = %target.digest,
                        error = %e, "delta not built; the full file is served");
                    Built::Failed(std::time::Instant::now())
                }
            };
            let ready = matches!(built, Built::Ready(..));
            this.deltas.by_pair.lock().unwrap_or_else(|e| e.into_inner()).insert(pair, built);
            if ready {
                this.wake.notify_one();
            }
        });
        None
    }

    /// Fetches both files (verified, into the cache) and writes their delta into the
    /// cache under its digest; the delta's sha256 and size.
    async fn build_delta(self: &Arc<Self>, base: &FileEntry, target: &FileEntry) -> Result<(String, u64), StreamError> {
        let _one = self.deltas.build.acquire().await.expect("the semaphore is never closed");
        let base = self.file_blob(base).await?;
        let target = self.file_blob(target).await?;
        let cache = self.cache.clone();
        let started = std::time::Instant::now();
        let (sha256, size) = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            let mut out = Digesting::new(BufWriter::with_capacity(1 << 20, cache.temp_file()?));
            updraft_delta::vcdiff::encode(&base.bytes, &target.bytes, &mut out)?;
            out.flush()?;
            let (summary, writer) = out.finish()?;
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            let (sha256, size) = (summary.sha256.clone(), summary.size);
            cache.commit(&blob_key(&format!("sha256:{sha256}")), file, summary)?;
            Ok((sha256, size))
        })
        .await
        .map_err(|e| StreamError::Io(std::io::Error::other(e)))??;
        tracing::debug!(stream = %self.name, elapsed_ms = started.elapsed().as_millis() as u64, "delta encoded");
        Ok((sha256, size))
    }
}

/// The blob of the stream's repository behind a file of the index.
fn entry(file: &FileRef) -> FileEntry {
    FileEntry { digest: format!("sha256:{}", file.sha256), size: file.size, url: None }
}
