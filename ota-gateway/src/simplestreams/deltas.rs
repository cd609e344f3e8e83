//! `.vcdiff` items for the newest version of each product (issue #23): the VCDIFF that
//! turns the previous version's squashfs (or `disk-kvm.img`) into the newest one's, so a
//! client that holds the previous image downloads the difference only.
//!
//! Deltas are built in the background, never on a request path: each sync round asks
//! [`Stream::deltas_ready`] which deltas the index may list. A pair whose delta is not
//! built yet starts a build (one at a time per stream) and is left out; the round the
//! build ends wakes lists it. So the index is published without the delta item first
//! and gains it a round later: a client that reads the index in between downloads the
//! full file, as it would from a server without deltas. A queued build whose pair the
//! last round no longer asked for (its version removed, a newer one arrived) is dropped
//! before it fetches or encodes anything.
//!
//! Memory: both files are the cache's read-only memory maps (fetched, verified, into the
//! cache first when missing), so a multi-GB image is paged in by the kernel, not copied;
//! the encoder adds its block table (at most 64 MiB) and one 8 MiB window
//! ([`updraft_delta::vcdiff`]), and the delta streams through a 1 MiB buffer into a temp
//! file of the cache.
//!
//! A delta is listed only once it decodes ([`updraft_delta::vcdiff::verify`], one window
//! in memory at a time) to the target's size and SHA-256, only when it is smaller than
//! the file it rebuilds, and a
//! `disk-kvm.img.vcdiff` only where no client can mistake its base ([`Delta::offered`]).
//! Builds are counted in `updraft_gateway_stream_delta_builds_total{stream,result}` and
//! their bytes in `updraft_gateway_stream_delta_bytes_total{stream}`.
//!
//! A delta is a pure function of its two files ([`updraft_delta::vcdiff::encode`] is
//! deterministic), so it is kept content-addressed in the cache under its own digest,
//! like every other file of the stream, and pinned while the index lists it; what is
//! remembered here is only which pair gave which digest. A delta the cache lost (a
//! restart, an eviction before it was listed) is built again. Replicas build their own
//! and arrive at the same bytes, so the same index.
//!
//! Mirrors (`upstream` sources) list what their upstream lists and build nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufWriter, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::index::{blob_key, Delta, FileEntry, FileRef, ImageVersion, Index, ProductKey, RootKind, Serial};
use super::stream::Stream;
use super::StreamError;
use crate::unpack::Digesting;

/// Two files by their sha256: the base, then the target.
type Pair = (String, String);

/// What is known about the delta between two files.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Built {
    Building,
    /// The delta's sha256 and size.
    Ready(String, u64),
    /// The delta is not smaller than the target (unrelated files): never listed, not
    /// built again (the encoder is deterministic).
    NotSmaller,
    /// When a build failed (the log says why); tried again when the pair is asked for after
    /// [`RETRY_AFTER`].
    Failed(Instant),
}

const RETRY_AFTER: Duration = Duration::from_secs(600);

/// The deltas of one stream: built, being built, failed.
pub(crate) struct Deltas {
    by_pair: Mutex<HashMap<Pair, Built>>,
    /// The pairs the last round asked for.
    wanted: Mutex<HashSet<Pair>>,
    /// One build at a time: it maps both files and writes a third.
    build: tokio::sync::Semaphore,
}

impl Deltas {
    pub(crate) fn new() -> Self {
        Self {
            by_pair: Mutex::new(HashMap::new()),
            wanted: Mutex::new(HashSet::new()),
            build: tokio::sync::Semaphore::new(1),
        }
    }

    fn wanted(&self, pair: &Pair) -> bool {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner()).contains(pair)
    }

    /// Makes `wanted` the pairs asked for, and forgets what is known of any other pair.
    fn want(&self, wanted: HashSet<Pair>) {
        self.by_pair.lock().unwrap_or_else(|e| e.into_inner()).retain(|pair, _| wanted.contains(pair));
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = wanted;
    }

    /// Records how a build ended (`None`: it did not run), unless its pair is no longer
    /// wanted; says whether it recorded a delta to list.
    fn finish(&self, pair: Pair, built: Option<Built>) -> bool {
        let mut by_pair = self.by_pair.lock().unwrap_or_else(|e| e.into_inner());
        match built {
            Some(built) if self.wanted(&pair) => {
                let ready = matches!(built, Built::Ready(..));
                by_pair.insert(pair, built);
                ready
            }
            _ => {
                by_pair.remove(&pair);
                false
            }
        }
    }
}

/// The deltas a version pair may have: the kinds both versions hold that
/// [`Delta::offered`] allows, with the base's file and the target's.
fn candidates<'a>(
    base: &'a ImageVersion,
    target: &'a ImageVersion,
) -> impl Iterator<Item = (RootKind, &'a FileRef, &'a FileRef)> {
    Delta::KINDS.into_iter().filter(|&kind| Delta::offered(kind, base)).filter_map(|kind| {
        let (from, to) = (base.rootfs.get(&kind)?, target.rootfs.get(&kind)?);
        Some((kind, &from.file, &to.file))
    })
}

impl Stream {
    /// The delta items each product may list now (by product and version), starting
    /// the builds still missing.
    pub(super) fn deltas_ready(self: &Arc<Self>, index: &Index) -> Vec<(ProductKey, BTreeMap<Serial, Vec<Delta>>)> {
        let wanted = index
            .newest_pairs()
            .flat_map(|(_, base, target)| candidates(base, target))
            .map(|(_, from, to)| (from.sha256.clone(), to.sha256.clone()))
            .collect();
        self.deltas.want(wanted);
        let mut out = Vec::new();
        for (key, base, target) in index.newest_pairs() {
            let mut listed = Vec::new();
            for (kind, from, to) in candidates(base, target) {
                if let Some((sha256, size)) = self.delta(from, to) {
                    let path = Delta::path(to, &base.serial);
                    listed.push(Delta { kind, base: base.serial.clone(), file: FileRef { path, sha256, size } });
                }
            }
            out.push((key.clone(), BTreeMap::from([(target.serial.clone(), listed)])));
        }
        out
    }

    /// The delta from `base` to `target` when it is built, cached and worth listing;
    /// otherwise starts building it (unless a build runs, failed recently or showed it
    /// is not worth it) and says `None`.
    fn delta(self: &Arc<Self>, base: &FileRef, target: &FileRef) -> Option<(String, u64)> {
        let pair = (base.sha256.clone(), target.sha256.clone());
        let mut by_pair = self.deltas.by_pair.lock().unwrap_or_else(|e| e.into_inner());
        match by_pair.get(&pair) {
            Some(Built::Ready(sha256, size)) => {
                if matches!(self.cache.lookup(&blob_key(&format!("sha256:{sha256}"))), Ok(Some(_))) {
                    return Some((sha256.clone(), *size));
                }
                tracing::info!(stream = %self.name, delta = %sha256, "delta no longer cached; building it again");
            }
            Some(Built::Building | Built::NotSmaller) => return None,
            Some(Built::Failed(at)) if at.elapsed() < RETRY_AFTER => return None,
            _ => {}
        }
        by_pair.insert(pair.clone(), Built::Building);
        drop(by_pair);
        let this = self.clone();
        let (base, target) = (entry(base), entry(target));
        tokio::spawn(async move {
            let started = Instant::now();
            let built = match this.build_delta(&pair, &base, &target).await {
                Ok(None) => {
                    tracing::debug!(stream = %this.name, target = %target.digest, "delta no longer wanted; not built");
                    None
                }
                Ok(Some((sha256, size))) => {
                    this.metrics.delta_built.inc();
                    this.metrics.delta_bytes.inc_by(size);
                    let listed = size < target.size;
                    tracing::info!(stream = %this.name, base = %base.digest, target = %target.digest,
                        size, target_size = target.size, elapsed_ms = started.elapsed().as_millis() as u64,
                        listed, "delta built");
                    Some(if listed { Built::Ready(sha256, size) } else { Built::NotSmaller })
                }
                Err(e) => {
                    this.metrics.delta_failed.inc();
                    tracing::warn!(stream = %this.name, base = %base.digest, target = %target.digest,
                        error = %e, "delta not built; the full file is served");
                    Some(Built::Failed(Instant::now()))
                }
            };
            if this.deltas.finish(pair, built) {
                this.wake.notify_one();
            }
            // The encoder's table and buffers were freed on a blocking thread.
            crate::memory::release_freed();
        });
        None
    }

    /// Fetches both files (verified, into the cache) and writes their delta into the
    /// cache under its digest; the delta's sha256 and size, or `None` when the pair was
    /// no longer wanted by the time its turn came.
    async fn build_delta(
        self: &Arc<Self>,
        pair: &Pair,
        base: &FileEntry,
        target: &FileEntry,
    ) -> Result<Option<(String, u64)>, StreamError> {
        let _one = self.deltas.build.acquire().await.expect("the semaphore is never closed");
        if !self.deltas.wanted(pair) {
            return Ok(None);
        }
        let base = self.file_blob(base).await?;
        let target = self.file_blob(target).await?;
        if !self.deltas.wanted(pair) {
            return Ok(None);
        }
        let cache = self.cache.clone();
        let built = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            let mut out = Digesting::new(BufWriter::with_capacity(1 << 20, cache.temp_file()?));
            updraft_delta::vcdiff::encode(&base.bytes, &target.bytes, &mut out)?;
            out.flush()?;
            let (summary, writer) = out.finish()?;
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            let (sha256, size) = (summary.sha256.clone(), summary.size);
            let delta = cache.commit(&blob_key(&format!("sha256:{sha256}")), file, summary)?;
            // Decoded before it is listed: a client has no fallback when xdelta3 fails.
            // A delta that does not decode to the target stays unlisted (and unpinned).
            let made = updraft_delta::vcdiff::verify(&base.bytes, &delta.bytes)
                .map_err(|e| std::io::Error::other(format!("the delta {sha256} does not decode: {e}")))?;
            let wanted = &target.summary;
            if made.len != wanted.size || hex::encode(made.sha256) != wanted.sha256 {
                return Err(std::io::Error::other(format!(
                    "the delta {sha256} decodes to {} bytes with SHA-256 {}, not the target's {} bytes, {}",
                    made.len,
                    hex::encode(made.sha256),
                    wanted.size,
                    wanted.sha256
                )));
            }
            Ok((sha256, size))
        })
        .await
        .map_err(|e| StreamError::Io(std::io::Error::other(e)))??;
        Ok(Some(built))
    }
}

/// The blob of the stream's repository behind a file of the index.
fn entry(file: &FileRef) -> FileEntry {
    FileEntry { digest: format!("sha256:{}", file.sha256), size: file.size, url: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_core::simplestreams::Rootfs;

    fn version(serial: &str, kinds: &[RootKind]) -> ImageVersion {
        let file =
            |name: &str| FileRef { path: format!("{serial}/{name}"), sha256: format!("{serial}{name}"), size: 10 };
        ImageVersion {
            serial: Serial::parse(serial).unwrap(),
            metadata: file("incus.tar.xz"),
            rootfs: kinds
                .iter()
                .map(|&k| (k, Rootfs { file: file(k.ftype()), combined_sha256: String::new() }))
                .collect(),
        }
    }

    #[test]
    fn a_vm_disk_gets_a_delta_only_where_incus_cannot_mistake_its_base() {
        let all = [RootKind::Squashfs, RootKind::DiskKvmImg, RootKind::RootTarXz];
        let kinds = |base: &ImageVersion, target: &ImageVersion| -> Vec<RootKind> {
            candidates(base, target).map(|(k, _, _)| k).collect()
        };
        let (old, new) = ("20260101_00:00", "20260102_00:00");
        // Container and VM in one product: the squashfs only (Incus would label the disk's
        // delta with the base container's fingerprint).
        assert_eq!(kinds(&version(old, &all), &version(new, &all)), [RootKind::Squashfs]);
        // A VM-only product: the disk.
        let vm = [RootKind::DiskKvmImg];
        let (base, target) = (version(old, &vm), version(new, &vm));
        let got: Vec<_> = candidates(&base, &target).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].1.path.as_str(), got[0].2.path.as_str()),
            ("20260101_00:00/disk-kvm.img", "20260102_00:00/disk-kvm.img")
        );
        // Only kinds both versions hold; never a root.tar.xz.
        assert!(kinds(&version(old, &[RootKind::RootTarXz]), &version(new, &all)).is_empty());
        assert!(kinds(&version(old, &[RootKind::Squashfs]), &version(new, &vm)).is_empty());
    }

    #[test]
    fn a_build_of_a_pair_no_longer_wanted_is_forgotten() {
        let deltas = Deltas::new();
        let (a, b, c) =
            (("1".to_owned(), "2".to_owned()), ("2".to_owned(), "3".to_owned()), ("3".to_owned(), "4".to_owned()));
        deltas.want(HashSet::from([a.clone(), b.clone()]));
        for pair in [&a, &b] {
            deltas.by_pair.lock().unwrap().insert(pair.clone(), Built::Building);
        }
        assert!(deltas.finish(a.clone(), Some(Built::Ready("d".into(), 3))), "a delta to list: wake the loop");
        assert!(!deltas.finish(b.clone(), Some(Built::NotSmaller)), "nothing to list");
        assert_eq!(deltas.by_pair.lock().unwrap().get(&b), Some(&Built::NotSmaller), "not built again");
        // A newer version arrived: only its pair is wanted; what was known of the others goes.
        deltas.want(HashSet::from([c.clone()]));
        assert!(deltas.by_pair.lock().unwrap().is_empty());
        assert!(!deltas.finish(a.clone(), Some(Built::Ready("d".into(), 3))), "a late build is not recorded");
        assert!(deltas.by_pair.lock().unwrap().is_empty());
        // A build that did not run (its pair left while it queued) leaves nothing behind.
        deltas.by_pair.lock().unwrap().insert(c.clone(), Built::Building);
        assert!(!deltas.finish(c.clone(), None));
        assert!(deltas.by_pair.lock().unwrap().is_empty(), "asked for again, it is built again");
    }
}
