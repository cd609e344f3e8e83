//! Fetching into the cache: the one way any surface gets bytes from a registry (or
//! from a mirrored simplestreams server) onto this gateway's disk. Firmware asks for
//! artifacts ([`Job`]: a manifest by digest, one layer of it, unpacked); simplestreams
//! asks for raw files by digest ([`File`]: from its repository, or from its upstream's
//! URL). Both go through one [`Fetcher`], which promises, whatever was asked:
//!
//! - **One fetch per cache key.** However many requests want the same payload at the
//!   same time, one fetch runs and all of them get its result. A payload already in
//!   the cache is never fetched.
//! - **At most [`MAX_CONCURRENT_FETCHES`] fetches at once**, for every surface
//!   together, so that prefetching a large config does not flood a registry. A fetch
//!   whose body stalls gives its place to the next one
//!   ([`verified::RELEASE_SLOT_AFTER`]).
//! - **A failure is held.** A fetch that failed is not tried again for
//!   [`RETRY_FAILED_AFTER`], or for as long as the registry's `Retry-After` asked (on a
//!   429 or a 5xx, capped at [`oci::MAX_RETRY_AFTER`]); meanwhile every request gets
//!   that failure at once, and how long it has left ([`Status::Failed`]). A registry
//!   that asked us to wait is not asked again before then, however many clients ask us.
//! - **Nothing unverified reaches the cache.** Every byte goes through
//!   [`verified::temp_file`] (size, digest, decoder limits) and is committed to the
//!   cache only after it passed.
//!
//! The fetcher also owns the gateway's one registry [`Client`] (it caches bearer
//! tokens): every surface uses [`Fetcher::client`]. It is rebuilt only when the set
//! of plain-HTTP registries the config names changes ([`Fetcher::client_for`]).

pub(crate) mod verified;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::StreamExt as _;
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use tokio::sync::Semaphore;

use crate::cache::{artifact_key, Cache, Payload};
use crate::metrics::Metrics;
use updraft_core::config::{ArtifactConfig, PinnedArtifact, SourceConfig};
use updraft_core::oci::{self, OciError};
use verified::{Expected, Slot, Written};

/// How long a failed fetch is reported before the next request retries it, unless
/// the registry's `Retry-After` asked for longer.
pub(crate) const RETRY_FAILED_AFTER: Duration = Duration::from_secs(5);
/// Concurrent fetches (prefetch of a large config must not starve the registry).
pub(crate) const MAX_CONCURRENT_FETCHES: usize = 4;

/// One artifact to fetch: where, which manifest, and how to take the payload out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Job {
    pub(crate) source: SourceConfig,
    pub(crate) digest: String,
    pub(crate) artifact: ArtifactConfig,
}

impl Job {
    pub(crate) fn new(source: &SourceConfig, pinned: &PinnedArtifact, artifact: &ArtifactConfig) -> Self {
        Self { source: source.clone(), digest: pinned.digest.clone(), artifact: artifact.clone() }
    }

    /// The cache index key.
    pub fn key(&self) -> String {
        artifact_key(&self.digest, &self.artifact)
    }
}

/// One raw file to fetch by its digest, cached under `key` as it is.
#[derive(Clone, Debug)]
pub(crate) struct File {
    pub(crate) key: String,
    /// `sha256:<hex>`.
    pub(crate) digest: String,
    pub(crate) size: u64,
    pub(crate) from: Origin,
}

/// Where a [`File`] comes from.
#[derive(Clone, Debug)]
pub(crate) enum Origin {
    /// The blob `digest` of this repository.
    Registry(SourceConfig),
    /// This URL, over the given client (a mirrored server's CA and timeouts).
    Url { http: reqwest::Client, url: String },
}

/// Anything a fetcher fetches.
#[derive(Clone, Debug)]
pub(crate) enum Work {
    Artifact(Job),
    File(File),
}

impl From<Job> for Work {
    fn from(job: Job) -> Self {
        Work::Artifact(job)
    }
}

impl From<&Job> for Work {
    fn from(job: &Job) -> Self {
        Work::Artifact(job.clone())
    }
}

impl From<File> for Work {
    fn from(file: File) -> Self {
        Work::File(file)
    }
}

impl Work {
    fn key(&self) -> String {
        match self {
            Work::Artifact(job) => job.key(),
            Work::File(file) => file.key.clone(),
        }
    }

    fn digest(&self) -> &str {
        match self {
            Work::Artifact(job) => &job.digest,
            Work::File(file) => &file.digest,
        }
    }

    /// The registry asked, when it is one (the label of the registry metrics).
    fn registry(&self) -> Option<&SourceConfig> {
        match self {
            Work::Artifact(job) => Some(&job.source),
            Work::File(File { from: Origin::Registry(source), .. }) => Some(source),
            Work::File(File { from: Origin::Url { .. }, .. }) => None,
        }
    }
}

/// Where a payload stands.
pub(crate) enum Status {
    Ready(Arc<Payload>),
    Fetching,
    /// The last fetch failed, recently: why, and how long until a request retries it.
    Failed(Arc<FetchError>, Duration),
}

/// [`Status`] with the running fetch itself, to wait on.
enum Stage {
    Ready(Arc<Payload>),
    Running(FetchFuture),
    Held(Arc<FetchError>, Duration),
}

type FetchFuture = Shared<BoxFuture<'static, Result<Arc<Payload>, Arc<FetchError>>>>;

/// How the gateway introduces itself to registries.
const USER_AGENT: &str = concat!("updraft-ota-gateway/", env!("CARGO_PKG_VERSION"));

/// Fetches into the cache, sharing one client and one fetch per key (see the module
/// docs for what it promises).
pub(crate) struct Fetcher {
    client: RwLock<(Vec<String>, Client)>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    inflight: Mutex<HashMap<String, FetchFuture>>,
    /// Failed fetches: until when they stay failed, and why.
    failures: Mutex<HashMap<String, (Instant, Arc<FetchError>)>>,
    permits: Arc<Semaphore>,
}

impl Fetcher {
    pub(crate) fn new(cache: Arc<Cache>, metrics: Arc<Metrics>) -> Self {
        Self {
            client: RwLock::new((Vec::new(), oci::build_client(USER_AGENT, oci::protocol_for(Vec::new())))),
            cache,
            metrics,
            inflight: Mutex::default(),
            failures: Mutex::default(),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_FETCHES)),
        }
    }

    pub(crate) fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The shared client, rebuilt only when the set of plain-HTTP registries changes
    /// (a reload that adds one), so tokens and connections survive reloads.
    pub(crate) fn client_for<'a>(&self, sources: impl IntoIterator<Item = &'a SourceConfig>) -> Client {
        let insecure = oci::insecure_registries(sources);
        if let Some(client) = self.client.read().ok().filter(|c| c.0 == insecure).map(|c| c.1.clone()) {
            return client;
        }
        let mut guard = self.client.write().expect("client lock");
        if guard.0 != insecure {
            *guard = (insecure.clone(), oci::build_client(USER_AGENT, oci::protocol_for(insecure)));
        }
        guard.1.clone()
    }

    /// The shared client as last built.
    pub(crate) fn client(&self) -> Client {
        self.client.read().expect("client lock").1.clone()
    }

    /// Where the payload stands, starting a fetch when it is neither cached, nor
    /// being fetched, nor recently failed. Never waits.
    pub(crate) fn status(self: &Arc<Self>, work: impl Into<Work>) -> Status {
        match self.stage(work.into()) {
            Stage::Ready(payload) => Status::Ready(payload),
            Stage::Running(_) => Status::Fetching,
            Stage::Held(reason, left) => Status::Failed(reason, left),
        }
    }

    /// The payload, fetched first (or the fetch under way joined) when it is not
    /// cached; a failure still held is returned at once, without asking again.
    pub(crate) async fn fetch(self: &Arc<Self>, work: impl Into<Work>) -> Result<Arc<Payload>, Arc<FetchError>> {
        match self.stage(work.into()) {
            Stage::Ready(payload) => Ok(payload),
            Stage::Running(fetch) => fetch.await,
            Stage::Held(reason, _) => Err(reason),
        }
    }

    fn stage(self: &Arc<Self>, work: Work) -> Stage {
        let key = work.key();
        match self.cache.lookup(&key) {
            Ok(Some(payload)) => return Stage::Ready(payload),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot map a cached payload; fetching it again"),
        }
        if let Some(running) = self.inflight.lock().expect("inflight lock").get(&key) {
            return Stage::Running(running.clone());
        }
        if let Some((until, reason)) = self.failures.lock().expect("failures lock").get(&key) {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Stage::Held(reason.clone(), left);
            }
        }
        Stage::Running(self.start(key, work))
    }

    fn start(self: &Arc<Self>, key: String, work: Work) -> FetchFuture {
        let mut inflight = self.inflight.lock().expect("inflight lock");
        if let Some(running) = inflight.get(&key) {
            return running.clone();
        }
        let this = self.clone();
        let task = tokio::spawn(async move { this.run(work).await });
        let shared = async move { task.await.unwrap_or_else(|e| Err(Arc::new(e.into()))) }.boxed().shared();
        inflight.insert(key, shared.clone());
        shared
    }

    /// The fetch task: fetch, record the outcome (hold a failure), leave the in-flight map.
    async fn run(self: Arc<Self>, work: Work) -> Result<Arc<Payload>, Arc<FetchError>> {
        let key = work.key();
        let permit = self.permits.clone().acquire_owned().await.expect("semaphore never closed");
        let mut slot = Slot(Some(permit));
        let started = Instant::now();
        let result = self.fetch_verified(&work, &mut slot).await.map_err(Arc::new);
        drop(slot);
        let from = match &work {
            Work::File(File { from: Origin::Url { url, .. }, .. }) => url.clone(),
            _ => work.registry().map(|s| format!("{}/{}", s.registry, s.repository)).unwrap_or_default(),
        };
        match &result {
            Ok(p) => {
                tracing::info!(digest = %work.digest(), %from, sha256 = %p.summary.sha256, size = p.summary.size,
                    elapsed_ms = started.elapsed().as_millis() as u64, "fetched and cached");
                self.failures.lock().expect("failures lock").remove(&key);
            }
            Err(reason) => {
                tracing::error!(digest = %work.digest(), %from, %reason, "fetch failed");
                let hold = reason.retry_after().map_or(RETRY_FAILED_AFTER, |asked| {
                    tracing::warn!(%from, retry_after_s = asked.as_secs(), "the registry asked to wait before retrying");
                    asked.clamp(RETRY_FAILED_AFTER, oci::MAX_RETRY_AFTER)
                });
                self.failures
                    .lock()
                    .expect("failures lock")
                    .insert(key.clone(), (Instant::now() + hold, reason.clone()));
            }
        }
        if let Some(source) = work.registry() {
            self.metrics.registry_result(&source.registry, result.is_ok());
        }
        self.inflight.lock().expect("inflight lock").remove(&key);
        result
    }

    /// Fetches into a verified temp file and commits it to the cache.
    async fn fetch_verified(&self, work: &Work, slot: &mut Slot) -> Result<Arc<Payload>, FetchError> {
        let (file, summary) = match work {
            Work::Artifact(job) => self.artifact(job, slot).await?,
            Work::File(file) => self.file(file, slot).await?,
        };
        let cache = self.cache.clone();
        let key = work.key();
        Ok(tokio::task::spawn_blocking(move || cache.commit(&key, file, summary)).await??)
    }

    /// An artifact's layer, unpacked.
    async fn artifact(&self, job: &Job, slot: &mut Slot) -> Result<Written, FetchError> {
        let client = self.client();
        let auth = oci::registry_auth(&job.source)?;
        let reference = oci::digest_reference(&job.source.registry, &job.source.repository, &job.digest);
        // HEAD first: a missing manifest fails before anything is downloaded, and a
        // throttling registry's Retry-After is seen.
        oci::probe().manifest_digest(&client, &reference, job.source.insecure, &auth).await?;
        let manifest = oci::pull_image_manifest(&client, &reference, &auth, &job.artifact).await?;
        let layer = oci::select_layer(&manifest, &job.artifact)?.clone();
        let expected = Expected { size: u64::try_from(layer.size).unwrap_or(0), digest: None };
        self.blob(&client, &reference, &layer, expected, &job.artifact, slot).await
    }

    /// A raw file, from its repository or its URL.
    async fn file(&self, file: &File, slot: &mut Slot) -> Result<Written, FetchError> {
        let raw = ArtifactConfig::default();
        let expected = Expected { size: file.size, digest: Some(&file.digest) };
        match &file.from {
            Origin::Registry(source) => {
                let client = self.client();
                let auth = oci::registry_auth(source)?;
                let reference = oci::digest_reference(&source.registry, &source.repository, &file.digest);
                // HEAD first, as for a manifest: a throttling registry's Retry-After is seen.
                oci::probe().blob(&client, &reference, source.insecure, &auth).await?;
                client.store_auth_if_needed(&source.registry, &auth).await;
                let layer = OciDescriptor {
                    media_type: "application/octet-stream".into(),
                    digest: file.digest.clone(),
                    size: i64::try_from(file.size).unwrap_or(i64::MAX),
                    ..Default::default()
                };
                self.blob(&client, &reference, &layer, expected, &raw, slot).await
            }
            Origin::Url { http, url } => {
                let failed = |e: reqwest::Error| FetchError::Http(format!("{url}: {e}"));
                let response = http.get(url).send().await.map_err(failed)?;
                if !response.status().is_success() {
                    let retry_after = oci::retry_after(response.headers(), std::time::SystemTime::now());
                    return Err(FetchError::Refused {
                        url: url.clone(),
                        status: response.status().as_u16(),
                        retry_after,
                    });
                }
                let body = response.bytes_stream().map(|chunk| chunk.map_err(io::Error::other));
                verified::temp_file(&self.cache, body, expected, &raw, slot).await
            }
        }
    }

    /// Streams one registry blob through [`verified::temp_file`].
    async fn blob(
        &self,
        client: &Client,
        reference: &Reference,
        layer: &OciDescriptor,
        expected: Expected<'_>,
        artifact: &ArtifactConfig,
        slot: &mut Slot,
    ) -> Result<Written, FetchError> {
        let registry = |e| OciError::Registry { registry: reference.registry().to_owned(), source: e };
        let stream = client.pull_blob_stream(reference, layer).await.map_err(registry)?;
        verified::temp_file(&self.cache, stream, expected, artifact, slot).await
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("blob: {0}")]
    Blob(String),
    /// A file from a URL (a mirrored server) that could not be had.
    #[error("{0}")]
    Http(String),
    /// A mirrored server answered something other than success, perhaps asking to wait.
    #[error("{url}: HTTP {status}")]
    Refused { url: String, status: u16, retry_after: Option<Duration> },
    #[error("unpack or cache: {0}")]
    Io(#[from] io::Error),
    #[error("task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl FetchError {
    /// How long the registry asked to wait before the next attempt, if it did.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Oci(e) => e.retry_after(),
            FetchError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A mirrored server that answers every request 429 with `Retry-After: 7`, counting them.
    async fn throttling_upstream() -> (String, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { (axum::http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down") }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/file", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, asked)
    }

    #[tokio::test]
    async fn a_mirrored_file_refused_with_retry_after_is_held_that_long() {
        let (url, asked) = throttling_upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(Cache::open(dir.path(), 120, metrics.clone()).unwrap());
        let fetcher = Arc::new(Fetcher::new(cache, metrics));
        let file = File {
            key: "upstream-file".into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 3,
            from: Origin::Url { http: reqwest::Client::new(), url },
        };

        let refused = fetcher.fetch(file.clone()).await.unwrap_err();
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(7)), "{refused}");
        match fetcher.status(file.clone()) {
            Status::Failed(_, left) => assert!(left > Duration::from_secs(6), "held only {left:?}, not the 7 s asked"),
            _ => panic!("the refusal is not held"),
        }
        // Within the hold, a request gets the held failure; the server is not asked again.
        assert!(fetcher.fetch(file).await.is_err());
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }
}
