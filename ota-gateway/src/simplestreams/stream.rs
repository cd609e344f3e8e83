//! One stream's live state and the loop that keeps it in step with its source: what
//! it publishes is [`super::published`], the files behind it [`super::blobs`].
//!
//! Every replica runs the same loop over the same repository: it lists the tags,
//! reads the manifests of tags it has not seen (and, every [`FULL_EVERY`] rounds,
//! re-reads them all, to see overwrites and deletes made through another replica),
//! updates the [`Index`] product by product, renders it and publishes the result. An
//! index that fails validation is not published: the previous documents keep serving
//! and [`Stream::status`] says why. A version whose manifest is unusable is left out
//! and reported the same way.
//!
//! Under `verify`, a version of an OCI or upload stream enters the index only when its
//! manifest digest carries a cosign signature by one of the keys, checked by the
//! verifier firmware uses ([`updraft_core::cosign`]: tag scheme and sigstore bundles).
//! Verdicts are kept per digest: a verified digest is never asked about again; a
//! refused one is left out, logged once, counted in `updraft_gateway_stream_unverified_total`
//! and named in the status, and asked about again on the next full round (a signature
//! pushed later is seen within [`FULL_EVERY`] intervals; a new signed version at once).
//! Registry errors are not kept: the next round asks again. Cosign's own tags
//! (`sha256-<hex>.sig`, `.att`, `.sbom`, the referrers tag schema's `sha256-<hex>`:
//! [`oci::tags`]) are not versions.
//!
//! Every file the published index lists is pinned in the cache under this stream's
//! name (`Cache::protect`), like firmware's releases: cache pressure evicts what no
//! surface lists, never a file a client was just told about. A new index replaces the
//! pins; a stream removed by a reload drops them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use tokio::sync::{watch, Notify};

use super::index::{blob_key, FileEntry, Index, IndexError, ProductKey, Serial};
use super::published::{Published, StreamMetrics, StreamStatus};
use super::registry::{self, StoredVersion};
use super::upstream::{Upstream, UpstreamError};
use super::StreamError;
use crate::cache::Cache;
use crate::fetch::Fetcher;
use crate::http::auth::Secret;
use updraft_core::config::{SourceConfig, StreamConfig, UploadStreamSource};
use updraft_core::cosign::Verifier;
use updraft_core::oci;
use updraft_core::version::parse_duration;

/// Numbers the streams made in this process (see `Stream::pin_owner`).
static NEXT_STREAM: AtomicU64 = AtomicU64::new(0);

/// Every this many rounds, all manifests are read again (overwrites, deletes).
pub(crate) const FULL_EVERY: u64 = 12;

/// Why a round published nothing (the previous index keeps serving); the status shows
/// the message, [`SyncError::reason`] names the kind.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// The repository's tags could not be listed.
    #[error("listing {repository}: {source}")]
    List { repository: String, source: oci::OciError },
    /// A tag's manifest could not be read.
    #[error("manifest {tag}: {source}")]
    Manifest { tag: String, source: OciDistributionError },
    /// A mirror's upstream could not be read.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Versions that passed validation were refused by the index (a bug if ever seen).
    #[error("validated versions refused: {0}")]
    Versions(IndexError),
    /// The index must not be published (an alias claimed twice, …).
    #[error(transparent)]
    Index(IndexError),
}

impl SyncError {
    /// A short label for the kind of failure.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            SyncError::List { .. } => "ListFailed",
            SyncError::Manifest { .. } => "ManifestFailed",
            SyncError::Upstream(e) => e.reason(),
            SyncError::Versions(_) => "VersionsRefused",
            SyncError::Index(_) => "IndexRefused",
        }
    }
}

/// Why `verify` leaves a manifest digest out: the kind is the verifier's own label
/// ([`updraft_core::cosign::VerifyError::reason`], so it is named in one place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not verified ({reason}): {detail}")]
pub(crate) struct Unverified {
    pub(crate) reason: &'static str,
    pub(crate) detail: String,
}

/// What verification said about one manifest digest.
struct Verdict {
    /// `None` when verified; otherwise why not.
    refused: Option<Unverified>,
    /// Ask again next round (a registry error), rather than on the next full round.
    transient: bool,
}

/// What the sync loop keeps between rounds.
#[derive(Default)]
struct SyncState {
    /// Tag → manifest digest and the version it holds.
    known: HashMap<String, (String, StoredVersion)>,
    index: Index,
    round: u64,
    /// The last render was refused: render again even when nothing changed, so the
    /// reason stays in the status until it is fixed.
    refused: bool,
    /// Manifest digest → verification verdict (under `verify`).
    verdicts: HashMap<String, Verdict>,
    /// Manifest digest → why its artifact is not a version, when what it holds decides
    /// (a refused metadata tarball…): not read again before the next full round.
    unreadable: HashMap<String, String>,
}

/// One stream.
pub(crate) struct Stream {
    pub(crate) name: String,
    /// The config it was made from (a reload with the same config keeps the stream).
    pub(crate) config: StreamConfig,
    /// The signature check of `verify`, when set.
    verifier: Option<Verifier>,
    pub(crate) keep_versions: u32,
    pub(crate) source: SourceConfig,
    pub(crate) upload: Option<UploadStreamSource>,
    pub(crate) upstream: Option<Upstream>,
    pub(crate) interval: Duration,
    /// The upload token, when uploads are on.
    pub(crate) token: Option<Secret>,
    /// The gateway's fetcher: its registry client, and the one way files are fetched.
    pub(super) fetcher: Arc<Fetcher>,
    pub(super) auth: RegistryAuth,
    pub(super) cache: Arc<Cache>,
    published: RwLock<Arc<Published>>,
    status: RwLock<StreamStatus>,
    sync: tokio::sync::Mutex<SyncState>,
    /// Serialises this replica's writes to the repository.
    pub(super) writes: tokio::sync::Mutex<()>,
    /// Wakes the sync loop for a round now (a delta was built, …).
    pub(super) wake: Notify,
    /// The `.vcdiff` items of the newest versions ([`super::deltas`]).
    pub(super) deltas: super::deltas::Deltas,
    rounds: watch::Sender<u64>,
    /// Tags this replica wrote since the last round: read again whatever they held.
    dirty: Mutex<std::collections::HashSet<String>>,
    pub(super) metrics: StreamMetrics,
    /// The name this stream pins its listed files under in the cache (unique per
    /// stream object: a replaced stream's late round cannot unpin its successor's).
    pin_owner: String,
}

impl Drop for Stream {
    /// A stream that is gone serves nothing: its files may be evicted.
    fn drop(&mut self) {
        self.cache.unprotect(&self.pin_owner);
    }
}

impl Stream {
    /// A stream from its config; nothing is contacted yet.
    pub(crate) fn new(
        config: &StreamConfig,
        fetcher: Arc<Fetcher>,
        metrics: StreamMetrics,
    ) -> Result<Arc<Self>, StreamError> {
        // A mirror has no repository; its `source` stays empty and unused.
        let no_repository = || SourceConfig {
            registry: String::new(),
            repository: String::new(),
            insecure: false,
            docker_config: None,
        };
        let (source, interval, upload, upstream) =
            match (&config.source.oci, &config.source.upload, &config.source.upstream) {
                (Some(o), None, None) => (o.repository.clone(), o.interval.clone(), None, None),
                (None, Some(u), None) => (u.repository.clone(), u.interval.clone(), Some(u.clone()), None),
                (None, None, Some(u)) => (no_repository(), u.interval.clone(), None, Some(Upstream::new(u)?)),
                _ => return Err(StreamError::Config(format!("stream {:?}: needs exactly one source", config.name))),
            };
        let interval = parse_duration(&interval).map_err(|e| StreamError::Config(e.to_string()))?;
        // An empty token file leaves uploads closed: an empty secret matches nothing.
        let token = match &upload {
            Some(u) => Some(
                Secret::from_file(&u.token_file)
                    .map_err(|e| StreamError::Config(format!("upload token {}: {e}", u.token_file.display())))?,
            ),
            None => None,
        };
        let auth = oci::registry_auth(&source).map_err(|e| StreamError::Config(e.to_string()))?;
        let verifier = match &config.verify {
            Some(v) => {
                Some(v.verifier().map_err(|e| StreamError::Config(format!("stream {:?}: verify: {e}", config.name)))?)
            }
            None => None,
        };
        let empty = Index::new().render().expect("an empty index is valid");
        let published = Published::new(empty.index_json, empty.images_json, HashMap::new(), Vec::new(), &Index::new());
        Ok(Arc::new(Self {
            name: config.name.clone(),
            config: config.clone(),
            verifier,
            keep_versions: config.keep_versions,
            source,
            upload,
            upstream,
            interval,
            token,
            auth,
            cache: fetcher.cache().clone(),
            fetcher,
            published: RwLock::new(Arc::new(published)),
            status: RwLock::new(StreamStatus::default()),
            sync: tokio::sync::Mutex::new(SyncState::default()),
            writes: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            deltas: super::deltas::Deltas::new(),
            rounds: watch::channel(0).0,
            dirty: Mutex::new(std::collections::HashSet::new()),
            metrics,
            pin_owner: format!("simplestreams {} #{}", config.name, NEXT_STREAM.fetch_add(1, Ordering::Relaxed)),
        }))
    }

    /// The gateway's registry client ([`Fetcher::client`]).
    pub(super) fn client(&self) -> Client {
        self.fetcher.client()
    }

    /// Serves `published` from now on, its files pinned in the cache: what the index
    /// lists is never evicted while it is listed, as firmware pins its releases.
    fn publish(&self, published: Arc<Published>) {
        let listed = published.files.values().map(|f| blob_key(&f.digest)).collect();
        self.cache.protect(&self.pin_owner, listed);
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = published;
    }

    pub(crate) fn published(&self) -> Arc<Published> {
        self.published.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn status(&self) -> StreamStatus {
        self.status.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs the sync loop until the stream is dropped.
    pub(crate) fn spawn(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(stream) = weak.upgrade() else { return };
                stream.round().await;
                let interval = stream.interval;
                let woken = async {
                    stream.wake.notified().await;
                };
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
    }

    /// Asks for a round now and waits until one that started after this call ends.
    pub(crate) async fn sync_now(&self) {
        let mut rounds = self.rounds.subscribe();
        let target = *rounds.borrow_and_update() + 2;
        self.wake.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(30), rounds.wait_for(|r| *r >= target)).await;
    }

    /// One round; errors land in the status.
    pub(crate) async fn round(self: &Arc<Self>) {
        let mut st = self.sync.lock().await;
        let full = st.round % FULL_EVERY == 0;
        st.round += 1;
        let started = Instant::now();
        let outcome = self.sync_once(&mut st, full).await;
        let rounds = st.round;
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.rounds = rounds;
        match outcome {
            Ok(Some(published)) => {
                status.products = published.products;
                status.versions = published.versions;
                status.error = None;
                self.metrics.valid.set(1);
                self.metrics.versions.set(published.versions as i64);
                self.prefetch(published.newest.clone());
                self.publish(published);
                // The round's parse and render buffers are garbage now.
                crate::memory::release_freed();
            }
            Ok(None) => {
                status.error = None;
                self.metrics.valid.set(1);
            }
            Err(error) => {
                self.metrics.valid.set(0);
                self.metrics.failures.inc();
                let message = error.to_string();
                if status.error.as_ref() != Some(&message) {
                    tracing::warn!(stream = %self.name, reason = error.reason(), error = %message,
                        "index not published; the previous one keeps serving");
                }
                status.error = Some(message);
            }
        }
        drop(status);
        tracing::debug!(stream = %self.name, elapsed_ms = started.elapsed().as_millis() as u64, "sync round");
        self.rounds.send_replace(rounds);
    }

    /// Lists, reads what is new, renders; `Ok(None)` when nothing changed.
    async fn sync_once(self: &Arc<Self>, st: &mut SyncState, full: bool) -> Result<Option<Arc<Published>>, SyncError> {
        if let Some(upstream) = &self.upstream {
            return self.sync_upstream(upstream).await;
        }
        let repo = oci::tag_reference(&self.source.registry, &self.source.repository, "latest");
        let tags = match oci::list_repository_tags(&self.client(), &repo, self.source.insecure, &self.auth).await {
            Ok(tags) => tags,
            Err(e) if oci::is_unknown_repository(&e) => Vec::new(),
            Err(source) => {
                let repository = format!("{}/{}", self.source.registry, self.source.repository);
                return Err(SyncError::List { repository, source });
            }
        };
        // Cosign's signatures and referrer indexes live beside the versions.
        let tags = version_tags(tags);
        let mut changed = false;
        let listed: std::collections::HashSet<&String> = tags.iter().collect();
        let gone: Vec<String> = st.known.keys().filter(|t| !listed.contains(t)).cloned().collect();
        for tag in gone {
            if let Some((_, old)) = st.known.remove(&tag) {
                st.index.remove(&old.product, &old.serial);
                changed = true;
            }
        }
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        let mut rejected = self.status().rejected;
        let mut batch = Vec::new();
        let mut pulled = std::collections::HashSet::new();
        rejected.retain(|t, _| listed.contains(t));
        for tag in &tags {
            // A version still missing parts is read every round: its next part is
            // usually uploaded through another replica within seconds.
            let complete =
                st.known.get(tag).is_some_and(|(_, v)| v.deleted || matches!(v.to_index_version(), Ok(Some(_))));
            if !full && complete && !dirty.contains(tag) {
                continue;
            }
            let reference = oci::tag_reference(&self.source.registry, &self.source.repository, tag);
            let (manifest, digest) = match self.client().pull_manifest(&reference, &self.auth).await {
                Ok(m) => m,
                Err(source) => return Err(SyncError::Manifest { tag: tag.clone(), source }),
            };
            pulled.insert(digest.clone());
            if st.known.get(tag).is_some_and(|(d, _)| *d == digest) {
                continue;
            }
            if let Err(reason) = self.check_signature(st, tag, &digest, full).await {
                // Never served: a tag moved to an unverified digest leaves the index.
                if let Some((_, old)) = st.known.remove(tag) {
                    st.index.remove(&old.product, &old.serial);
                    changed = true;
                }
                rejected.insert(tag.clone(), reason.to_string());
                continue;
            }
            if full {
                st.unreadable.remove(&digest);
            }
            let version = match manifest {
                OciManifest::Image(image) if self.upload.is_some() => {
                    StoredVersion::from_manifest(&image).map_err(|e| e.to_string())
                }
                OciManifest::Image(_) if st.unreadable.contains_key(&digest) => Err(st.unreadable[&digest].clone()),
                OciManifest::Image(image) => self.read_artifact(&image).await.map_err(|e| {
                    if e.lasting {
                        st.unreadable.insert(digest.clone(), e.reason.clone());
                    }
                    e.reason
                }),
                OciManifest::ImageIndex(_) => Err("an image index, not a version manifest".to_owned()),
            };
            if let Some((_, old)) = st.known.remove(tag) {
                st.index.remove(&old.product, &old.serial);
                changed = true;
            }
            let version = match version {
                Ok(v) => v,
                Err(reason) => {
                    rejected.insert(tag.clone(), reason);
                    continue;
                }
            };
            let props = version.index_props();
            let checked = version.to_index_version().map_err(|e| e.to_string()).and_then(|entry| {
                let Some(entry) = entry else { return Ok(None) };
                props.validate().and(entry.validate()).map(|()| Some(entry)).map_err(|e| e.to_string())
            });
            match checked {
                Ok(Some(entry)) => {
                    rejected.remove(tag);
                    batch.push((version.product.clone(), props, entry));
                    changed = true;
                }
                Ok(None) => {
                    rejected.remove(tag);
                }
                Err(reason) => {
                    rejected.insert(tag.clone(), reason);
                }
            }
            st.known.insert(tag.clone(), (digest, version));
        }
        // Verdicts of digests no tag holds any more are dropped.
        let held: std::collections::HashSet<&String> = st.known.values().map(|(d, _)| d).chain(&pulled).collect();
        let stale: Vec<String> = st.verdicts.keys().filter(|d| !held.contains(d)).cloned().collect();
        for digest in stale {
            st.verdicts.remove(&digest);
        }
        st.unreadable.retain(|d, _| held.contains(d));
        // Each touched product is rendered once, however many of its versions are new.
        st.index.extend(batch).map_err(SyncError::Versions)?;
        self.status.write().unwrap_or_else(|e| e.into_inner()).rejected = rejected;
        if self.keep_versions > 0 {
            st.index.retain_newest(self.keep_versions as usize);
        }
        // The deltas built so far are listed; the missing ones start building and are
        // listed by the round their build wakes (`super::deltas`).
        let mut deltas: HashMap<ProductKey, _> = self.deltas_ready(&st.index).into_iter().collect();
        let keys: Vec<ProductKey> = st.index.products_newest().map(|(k, _)| k.clone()).collect();
        for key in keys {
            let listed = deltas.remove(&key).unwrap_or_default();
            changed |= st.index.set_deltas(&key, listed);
        }
        if !changed && st.round > 1 && !st.refused {
            return Ok(None);
        }
        let docs = st.index.render().map_err(SyncError::Index);
        st.refused = docs.is_err();
        let docs = docs?;
        let mut files = HashMap::new();
        let mut newest: HashMap<&ProductKey, (&Serial, Vec<FileEntry>)> = HashMap::new();
        for (_, (_, v)) in st.known.iter() {
            if st.index.version(&v.product, &v.serial).is_none() {
                continue;
            }
            let Ok(Some(entry)) = v.to_index_version() else { continue };
            let file = |r: &super::index::FileRef| {
                (r.path.clone(), FileEntry { digest: format!("sha256:{}", r.sha256), size: r.size, url: None })
            };
            let entries: Vec<(String, FileEntry)> =
                std::iter::once(file(&entry.metadata)).chain(entry.rootfs.values().map(|r| file(&r.file))).collect();
            let slot = newest.entry(&v.product).or_insert((&v.serial, Vec::new()));
            if slot.1.is_empty() || *slot.0 <= v.serial {
                *slot = (&v.serial, entries.iter().map(|(_, e)| e.clone()).collect());
            }
            files.extend(entries);
        }
        for delta in st.index.deltas() {
            let entry = FileEntry { digest: format!("sha256:{}", delta.file.sha256), size: delta.file.size, url: None };
            files.insert(delta.file.path.clone(), entry);
        }
        let newest = newest.into_values().flat_map(|(_, files)| files).collect();
        Ok(Some(Arc::new(Published::new(docs.index_json, docs.images_json, files, newest, &st.index))))
    }

    /// Under `verify`, whether `digest` (held by `tag`) is signed by a trusted key:
    /// `Err` with the reason the status shows when not. Kept per digest (see the module
    /// docs); logged and counted once per digest and reason.
    async fn check_signature(&self, st: &mut SyncState, tag: &str, digest: &str, full: bool) -> Result<(), Unverified> {
        let Some(verifier) = &self.verifier else { return Ok(()) };
        if let Some(v) = st.verdicts.get(digest) {
            let ask_again = v.refused.is_some() && (v.transient || full);
            if !ask_again {
                return v.refused.clone().map_or(Ok(()), Err);
            }
        }
        let result =
            verifier.verify(&self.client(), &self.source.registry, &self.source.repository, &self.auth, digest).await;
        let verdict = match &result {
            Ok(verified) => {
                tracing::info!(stream = %self.name, %tag, %digest, key = %verified.key, scheme = %verified.scheme, "signature verified");
                Verdict { refused: None, transient: false }
            }
            Err(e) => {
                let reason = Unverified { reason: e.reason(), detail: e.to_string() };
                let before = st.verdicts.get(digest).and_then(|v| v.refused.as_ref());
                if before != Some(&reason) {
                    tracing::warn!(stream = %self.name, %tag, %digest, reason = %e.reason(), error = %e, "version left out: its signature does not verify");
                    self.metrics.unverified(e.reason());
                }
                Verdict { refused: Some(reason), transient: e.is_transient() }
            }
        };
        let refused = verdict.refused.clone();
        st.verdicts.insert(digest.to_owned(), verdict);
        refused.map_or(Ok(()), Err)
    }

    /// One round of a mirror: the whole upstream index is read and rebuilt (it is one
    /// document anyway); published when it differs from what is served.
    async fn sync_upstream(&self, upstream: &Upstream) -> Result<Option<Arc<Published>>, SyncError> {
        let mirrored = upstream.read().await?;
        self.status.write().unwrap_or_else(|e| e.into_inner()).rejected = mirrored.rejected.clone();
        let (index, files) = mirrored.build(self.keep_versions)?;
        let docs = index.render().map_err(SyncError::Index)?;
        if self.published().images_json == docs.images_json.as_bytes() {
            return Ok(None);
        }
        let mut newest: HashMap<&ProductKey, &super::index::ImageVersion> = HashMap::new();
        for (key, v) in index.products_newest() {
            newest.insert(key, v);
        }
        let newest_files = newest
            .values()
            .flat_map(|v| std::iter::once(&v.metadata).chain(v.rootfs.values().map(|r| &r.file)))
            .filter_map(|f| files.get(&f.path).cloned())
            .collect();
        Ok(Some(Arc::new(Published::new(docs.index_json, docs.images_json, files, newest_files, &index))))
    }

    /// Marks a tag this replica rewrote, for the next round to read again.
    pub(super) fn mark_dirty(&self, tag: &str) {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).insert(tag.to_owned());
    }

    /// The stored version under its tag, if any (for uploads).
    pub(super) async fn stored(
        &self,
        product: &ProductKey,
        serial: &Serial,
    ) -> Result<Option<StoredVersion>, StreamError> {
        let tag = registry::version_tag(product, serial);
        let reference = oci::tag_reference(&self.source.registry, &self.source.repository, &tag);
        match self.client().pull_manifest(&reference, &self.auth).await {
            Ok((OciManifest::Image(image), _)) => {
                StoredVersion::from_manifest(&image).map(Some).map_err(|e| StreamError::upstream(e.to_string()))
            }
            Ok((OciManifest::ImageIndex(_), _)) => Err(StreamError::upstream(format!("{tag} is an image index"))),
            Err(e) if oci::is_not_found(&e) => Ok(None),
            Err(e) => Err(StreamError::upstream(format!("manifest {tag}: {e}"))),
        }
    }
}

/// The tags that may hold versions: every tag but cosign's and the referrers fallback's
/// ([`oci::tags::attached_to`], the rule the operator counts with).
fn version_tags(tags: Vec<String>) -> Vec<String> {
    tags.into_iter().filter(|t| !oci::tags::is_attached(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_tags_are_not_versions_and_a_tar_suffixed_digest_tag_is_one() {
        let hex = "ab".repeat(32);
        let tags = ["sig", "att", "sbom", "tar"].map(|suffix| format!("sha256-{hex}.{suffix}"));
        let listed = [vec![format!("sha256-{hex}"), "debian-12".to_owned()], tags.to_vec()].concat();
        assert_eq!(version_tags(listed), vec!["debian-12".to_owned(), format!("sha256-{hex}.tar")]);
    }
}
