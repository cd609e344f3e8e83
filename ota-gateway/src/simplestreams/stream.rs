//! One stream's live state: the published documents and file table, the loop that
//! keeps them in step with the registry, and the verified, cached blobs behind the
//! files.
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
//! (`sha256-<hex>.sig`, the referrers tag schema's `sha256-<hex>`) are not versions.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write as _};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt as _, StreamExt as _};
use oci_client::manifest::{OciDescriptor, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use super::index::{validate_props, validate_version, FileEntry, Index, ProductKey, Serial};
use super::registry::{self, StoredVersion};
use super::upstream::Upstream;
use super::StreamError;
use crate::cache::{Cache, Payload};
use crate::http::auth::Secret;
use crate::metrics::Metrics;
use crate::unpack::Digesting;
use prometheus::{IntCounter, IntGauge};
use updraft_core::config::{SourceConfig, StreamConfig, UploadStreamSource};
use updraft_core::cosign::Verifier;
use updraft_core::oci;
use updraft_core::version::parse_duration;

/// Every this many rounds, all manifests are read again (overwrites, deletes).
pub const FULL_EVERY: u64 = 12;

/// The documents and the file table one index render produced.
pub struct Published {
    pub index_json: Bytes,
    pub images_json: Bytes,
    pub index_etag: HeaderValue,
    pub images_etag: HeaderValue,
    gzip: OnceLock<(Bytes, Bytes)>,
    /// Item path (relative to the base URL) → the blob behind it.
    pub files: HashMap<String, FileEntry>,
    pub products: usize,
    pub versions: usize,
    /// The files of each product's newest version: fetched ahead of the first
    /// request (the clients give a response 30 s before they give up).
    pub newest: Vec<FileEntry>,
}

impl Published {
    fn new(
        index_json: String,
        images_json: String,
        files: HashMap<String, FileEntry>,
        newest: Vec<FileEntry>,
        index: &Index,
    ) -> Self {
        let etag = |b: &[u8]| {
            HeaderValue::from_str(&format!("\"{}\"", &hex::encode(Sha256::digest(b))[..32])).expect("hex is ascii")
        };
        Self {
            index_etag: etag(index_json.as_bytes()),
            images_etag: etag(images_json.as_bytes()),
            index_json: Bytes::from(index_json),
            images_json: Bytes::from(images_json),
            gzip: OnceLock::new(),
            files,
            products: index.product_count(),
            versions: index.version_count(),
            newest,
        }
    }

    /// The two documents gzip-compressed, made on first request.
    pub fn gzipped(&self) -> &(Bytes, Bytes) {
        self.gzip.get_or_init(|| {
            let gz = |b: &[u8]| {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(b).expect("writing to memory");
                Bytes::from(enc.finish().expect("writing to memory"))
            };
            (gz(&self.index_json), gz(&self.images_json))
        })
    }
}

/// What a stream reports about itself (for status and metrics).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    pub products: usize,
    pub versions: usize,
    /// Why the last render or listing was not published; `None` when it was.
    pub error: Option<String>,
    /// Versions left out of the index, by tag, with the reason.
    pub rejected: BTreeMap<String, String>,
    /// Rounds completed since start.
    pub rounds: u64,
}

/// A stream's metrics, bound to its name.
#[derive(Clone)]
pub struct StreamMetrics {
    valid: IntGauge,
    failures: IntCounter,
    versions: IntGauge,
    unverified: prometheus::IntCounterVec,
    stream: String,
}

impl StreamMetrics {
    pub fn new(metrics: &Metrics, stream: &str) -> Self {
        Self {
            valid: metrics.stream_index_valid.with_label_values(&[stream]),
            failures: metrics.stream_index_failures.with_label_values(&[stream]),
            versions: metrics.stream_versions.with_label_values(&[stream]),
            unverified: metrics.stream_unverified.clone(),
            stream: stream.to_owned(),
        }
    }

    /// Drops the series of a stream that is gone.
    pub fn forget(metrics: &Metrics, stream: &str) {
        let _ = metrics.stream_index_valid.remove_label_values(&[stream]);
        let _ = metrics.stream_index_failures.remove_label_values(&[stream]);
        let _ = metrics.stream_versions.remove_label_values(&[stream]);
        for reason in UNVERIFIED_REASONS {
            let _ = metrics.stream_unverified.remove_label_values(&[stream, reason]);
        }
    }

    /// One digest newly refused by verification, for `reason`.
    fn unverified(&self, reason: &str) {
        self.unverified.with_label_values(&[self.stream.as_str(), reason]).inc();
    }
}

/// The `reason` label values of `updraft_gateway_stream_unverified_total`
/// (`updraft_core::cosign::VerifyError::reason`).
const UNVERIFIED_REASONS: [&str; 6] =
    ["NoSignature", "WrongKey", "OtherDigest", "Tampered", "RegistryError", "InvalidDigest"];

/// What verification said about one manifest digest.
struct Verdict {
    /// `None` when verified; otherwise why not.
    refused: Option<String>,
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

type BlobFuture = Shared<BoxFuture<'static, Result<Arc<Payload>, String>>>;

/// One stream.
pub struct Stream {
    pub name: String,
    /// The config it was made from (a reload with the same config keeps the stream).
    pub config: StreamConfig,
    /// The signature check of `verify`, when set.
    verifier: Option<Verifier>,
    pub keep_versions: u32,
    pub source: SourceConfig,
    pub upload: Option<UploadStreamSource>,
    pub upstream: Option<Upstream>,
    pub interval: Duration,
    /// The upload token, when uploads are on.
    pub token: Option<Secret>,
    pub(super) client: Client,
    pub(super) auth: RegistryAuth,
    pub(super) cache: Arc<Cache>,
    published: RwLock<Arc<Published>>,
    status: RwLock<StreamStatus>,
    sync: tokio::sync::Mutex<SyncState>,
    /// Serialises this replica's writes to the repository.
    pub(super) writes: tokio::sync::Mutex<()>,
    wake: Notify,
    rounds: watch::Sender<u64>,
    inflight: Mutex<HashMap<String, BlobFuture>>,
    /// Tags this replica wrote since the last round: read again whatever they held.
    dirty: Mutex<std::collections::HashSet<String>>,
    metrics: StreamMetrics,
}

impl Stream {
    /// A stream from its config; nothing is contacted yet.
    pub fn new(
        config: &StreamConfig,
        client: Client,
        cache: Arc<Cache>,
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
        let interval = parse_duration(&interval).map_err(StreamError::Config)?;
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
            client,
            auth,
            cache,
            published: RwLock::new(Arc::new(published)),
            status: RwLock::new(StreamStatus::default()),
            sync: tokio::sync::Mutex::new(SyncState::default()),
            writes: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            rounds: watch::channel(0).0,
            inflight: Mutex::new(HashMap::new()),
            dirty: Mutex::new(std::collections::HashSet::new()),
            metrics,
        }))
    }

    pub fn published(&self) -> Arc<Published> {
        self.published.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn status(&self) -> StreamStatus {
        self.status.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs the sync loop until the stream is dropped.
    pub fn spawn(self: &Arc<Self>) {
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
    pub async fn sync_now(&self) {
        let mut rounds = self.rounds.subscribe();
        let target = *rounds.borrow_and_update() + 2;
        self.wake.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(30), rounds.wait_for(|r| *r >= target)).await;
    }

    /// One round; errors land in the status.
    pub async fn round(self: &Arc<Self>) {
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
                *self.published.write().unwrap_or_else(|e| e.into_inner()) = published;
            }
            Ok(None) => {
                status.error = None;
                self.metrics.valid.set(1);
            }
            Err(reason) => {
                self.metrics.valid.set(0);
                self.metrics.failures.inc();
                if status.error.as_ref() != Some(&reason) {
                    tracing::warn!(stream = %self.name, %reason, "index not published; the previous one keeps serving");
                }
                status.error = Some(reason);
            }
        }
        drop(status);
        tracing::debug!(stream = %self.name, elapsed_ms = started.elapsed().as_millis() as u64, "sync round");
        self.rounds.send_replace(rounds);
    }

    /// Lists, reads what is new, renders; `Ok(None)` when nothing changed.
    async fn sync_once(self: &Arc<Self>, st: &mut SyncState, full: bool) -> Result<Option<Arc<Published>>, String> {
        if let Some(upstream) = &self.upstream {
            return self.sync_upstream(upstream).await;
        }
        let repo = oci::tag_reference(&self.source.registry, &self.source.repository, "latest");
        let tags = match oci::list_repository_tags(&self.client, &repo, self.source.insecure, &self.auth).await {
            Ok(tags) => tags,
            Err(e) if oci::is_unknown_repository(&e) => Vec::new(),
            Err(e) => return Err(format!("listing {}/{}: {e}", self.source.registry, self.source.repository)),
        };
        // Cosign's signatures and referrer indexes live beside the versions.
        let tags: Vec<String> = tags.into_iter().filter(|t| !is_signature_tag(t)).collect();
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
            let (manifest, digest) = match self.client.pull_manifest(&reference, &self.auth).await {
                Ok(m) => m,
                Err(e) => return Err(format!("manifest {tag}: {e}")),
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
                rejected.insert(tag.clone(), reason);
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
                validate_props(&props).and(validate_version(&entry)).map(|()| Some(entry)).map_err(|e| e.to_string())
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
        st.index.extend(batch).map_err(|e| format!("validated versions refused: {e}"))?;
        self.status.write().unwrap_or_else(|e| e.into_inner()).rejected = rejected;
        if !changed && st.round > 1 && !st.refused {
            return Ok(None);
        }
        if self.keep_versions > 0 {
            st.index.retain_newest(self.keep_versions as usize);
        }
        let docs = st.index.render().map_err(|e| e.to_string());
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
        let newest = newest.into_values().flat_map(|(_, files)| files).collect();
        Ok(Some(Arc::new(Published::new(docs.index_json, docs.images_json, files, newest, &st.index))))
    }

    /// Under `verify`, whether `digest` (held by `tag`) is signed by a trusted key:
    /// `Err` with the reason the status shows when not. Kept per digest (see the module
    /// docs); logged and counted once per digest and reason.
    async fn check_signature(&self, st: &mut SyncState, tag: &str, digest: &str, full: bool) -> Result<(), String> {
        let Some(verifier) = &self.verifier else { return Ok(()) };
        if let Some(v) = st.verdicts.get(digest) {
            let ask_again = v.refused.is_some() && (v.transient || full);
            if !ask_again {
                return v.refused.clone().map_or(Ok(()), Err);
            }
        }
        let result =
            verifier.verify(&self.client, &self.source.registry, &self.source.repository, &self.auth, digest).await;
        let verdict = match &result {
            Ok(verified) => {
                tracing::info!(stream = %self.name, %tag, %digest, key = %verified.key, scheme = %verified.scheme, "signature verified");
                Verdict { refused: None, transient: false }
            }
            Err(e) => {
                let reason = format!("not verified ({}): {e}", e.reason());
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
    async fn sync_upstream(&self, upstream: &Upstream) -> Result<Option<Arc<Published>>, String> {
        let mirrored = upstream.read().await?;
        self.status.write().unwrap_or_else(|e| e.into_inner()).rejected = mirrored.rejected.clone();
        let (index, files) = mirrored.build(self.keep_versions)?;
        let docs = index.render().map_err(|e| e.to_string())?;
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

    /// Fetches `files` into the cache in the background, two at a time; failures are
    /// left for the first request to retry.
    fn prefetch(self: &Arc<Self>, files: Vec<FileEntry>) {
        let missing: Vec<FileEntry> =
            files.into_iter().filter(|f| !matches!(self.cache.lookup(&blob_key(&f.digest)), Ok(Some(_)))).collect();
        if missing.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let fetches = futures::stream::iter(missing).map(|f| {
                let this = this.clone();
                async move {
                    if let Err(e) = this.file_blob(&f).await {
                        tracing::warn!(stream = %this.name, digest = %f.digest, error = %e, "prefetch failed");
                    }
                }
            });
            fetches.buffer_unordered(2).collect::<()>().await;
        });
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
        match self.client.pull_manifest(&reference, &self.auth).await {
            Ok((OciManifest::Image(image), _)) => {
                StoredVersion::from_manifest(&image).map(Some).map_err(|e| StreamError::upstream(e.to_string()))
            }
            Ok((OciManifest::ImageIndex(_), _)) => Err(StreamError::upstream(format!("{tag} is an image index"))),
            Err(e) if is_unknown_manifest(&e) => Ok(None),
            Err(e) => Err(StreamError::upstream(format!("manifest {tag}: {e}"))),
        }
    }

    /// The verified file behind an index entry (see [`Stream::blob`]).
    pub async fn file_blob(self: &Arc<Self>, entry: &FileEntry) -> Result<Arc<Payload>, StreamError> {
        self.blob_at(&entry.digest, entry.size, entry.url.clone()).await
    }

    /// The verified blob `digest` from the cache, fetched from the registry first
    /// when needed (one fetch per blob however many requests wait for it).
    pub async fn blob(self: &Arc<Self>, digest: &str, size: u64) -> Result<Arc<Payload>, StreamError> {
        self.blob_at(digest, size, None).await
    }

    async fn blob_at(
        self: &Arc<Self>,
        digest: &str,
        size: u64,
        url: Option<String>,
    ) -> Result<Arc<Payload>, StreamError> {
        let key = blob_key(digest);
        if let Ok(Some(payload)) = self.cache.lookup(&key) {
            return Ok(payload);
        }
        let fetch = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key) {
                Some(running) => running.clone(),
                None => {
                    let this = self.clone();
                    let digest = digest.to_owned();
                    let task = tokio::spawn(async move {
                        let result = match &url {
                            Some(url) => this.fetch_url(url, &digest, size).await,
                            None => this.fetch_blob(&digest, size).await,
                        }
                        .map_err(|e| e.to_string());
                        this.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(&blob_key(&digest));
                        result
                    });
                    let shared =
                        async move { task.await.unwrap_or_else(|e| Err(format!("fetch task: {e}"))) }.boxed().shared();
                    inflight.insert(key, shared.clone());
                    shared
                }
            }
        };
        fetch.await.map_err(StreamError::upstream)
    }

    /// A mirrored file from its upstream URL, verified against the upstream's sha256.
    async fn fetch_url(&self, url: &str, digest: &str, size: u64) -> Result<Arc<Payload>, StreamError> {
        let upstream = self.upstream.as_ref().ok_or_else(|| StreamError::upstream("not a mirror"))?;
        let mut response =
            upstream.http.get(url).send().await.map_err(|e| StreamError::upstream(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(StreamError::upstream(format!("{url}: HTTP {}", response.status())));
        }
        let file = self.cache.temp_file()?;
        let mut out = Digesting::new(BufWriter::with_capacity(256 * 1024, file));
        let mut received = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| StreamError::upstream(format!("{url}: {e}")))? {
            received += chunk.len() as u64;
            if received > size {
                return Err(StreamError::upstream(format!("{url} is longer than the {size} bytes the index says")));
            }
            out.write_all(&chunk)?;
        }
        self.commit_verified(out, digest, size).await
    }

    /// Checks a received file against `digest` and `size` and makes it a cache entry.
    async fn commit_verified(
        &self,
        out: Digesting<BufWriter<tempfile::NamedTempFile>>,
        digest: &str,
        size: u64,
    ) -> Result<Arc<Payload>, StreamError> {
        let (summary, buffered) = out.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        if summary.size != size || format!("sha256:{}", summary.sha256) != digest {
            return Err(StreamError::upstream(format!(
                "{digest} failed verification: got sha256:{} ({} bytes)",
                summary.sha256, summary.size
            )));
        }
        let cache = self.cache.clone();
        let key = blob_key(digest);
        Ok(tokio::task::spawn_blocking(move || cache.commit(&key, file, summary)).await.map_err(io_join)??)
    }

    async fn fetch_blob(&self, digest: &str, size: u64) -> Result<Arc<Payload>, StreamError> {
        let reference = oci::digest_reference(&self.source.registry, &self.source.repository, digest);
        let layer = OciDescriptor {
            media_type: "application/octet-stream".into(),
            digest: digest.to_owned(),
            size: size as i64,
            urls: None,
            artifact_type: None,
            annotations: None,
        };
        self.client.store_auth_if_needed(&self.source.registry, &self.auth).await;
        let mut stream = self
            .client
            .pull_blob_stream(&reference, &layer)
            .await
            .map_err(|e| StreamError::upstream(format!("blob {digest}: {e}")))?;
        let file = self.cache.temp_file()?;
        let mut out = Digesting::new(BufWriter::with_capacity(256 * 1024, file));
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StreamError::upstream(format!("blob {digest}: {e}")))?;
            // Writes land in the page cache; a chunk at a time keeps them short.
            out.write_all(&chunk)?;
            received += chunk.len() as u64;
            if received > size {
                return Err(StreamError::upstream(format!("blob {digest} is longer than {size} bytes")));
            }
        }
        self.commit_verified(out, digest, size).await
    }
}

fn io_join(e: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(e)
}

/// Whether `tag` is one cosign or the referrers tag schema made: `sha256-<64 hex>`,
/// alone or with a `.sig`, `.att` or `.sbom` suffix.
fn is_signature_tag(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix("sha256-") else { return false };
    let hex =
        rest.split_once('.').map_or(rest, |(h, suffix)| if matches!(suffix, "sig" | "att" | "sbom") { h } else { "" });
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cache key of a stream blob.
pub fn blob_key(digest: &str) -> String {
    format!("simplestreams-blob {digest}")
}

fn is_unknown_manifest(e: &oci_client::errors::OciDistributionError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    ["manifest_unknown", "manifest unknown", "name_unknown", "name unknown", "404", "not found"]
        .iter()
        .any(|s| text.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_tags_are_not_versions() {
        let hex = "ab".repeat(32);
        for tag in [format!("sha256-{hex}"), format!("sha256-{hex}.sig"), format!("sha256-{hex}.att")] {
            assert!(is_signature_tag(&tag), "{tag}");
        }
        for tag in [
            "debian-12".to_owned(),
            format!("sha256-{}", &hex[..63]),
            format!("sha256-{hex}.tar"),
            format!("sha256-{}z", &hex[..63]),
            "sha256-".to_owned(),
        ] {
            assert!(!is_signature_tag(&tag), "{tag}");
        }
    }
}
