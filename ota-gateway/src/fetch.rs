//! Fetching artifacts from registries into the cache: by digest, verified while
//! streaming, unpacked on a blocking thread, one fetch per artifact however many
//! requests want it.

use std::collections::HashMap;
use std::io::{self, BufWriter};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::StreamExt;
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use tokio::sync::{mpsc, Semaphore, SemaphorePermit};

use crate::cache::{artifact_key, Cache, Payload};
use crate::metrics::Metrics;
use crate::unpack::{self, ChannelReader, Digesting};
use updraft_core::config::{ArtifactConfig, PinnedArtifact, SourceConfig};
use updraft_core::oci::{self, OciError};

/// How long a failed fetch is reported before the next request retries it, unless
/// the registry's `Retry-After` asked for longer.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(5);
/// Concurrent fetches (prefetch of a large config must not starve the registry).
const MAX_CONCURRENT_FETCHES: usize = 4;
/// A fetch whose blob sends nothing for this long gives its slot to the next fetch
/// while it waits out the client's read timeout: stalled fetches never hold up others.
const RELEASE_SLOT_AFTER: Duration = Duration::from_secs(5);

/// One artifact to fetch: where, which manifest, and how to take the payload out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Job {
    pub source: SourceConfig,
    pub digest: String,
    pub artifact: ArtifactConfig,
}

impl Job {
    pub fn new(source: &SourceConfig, pinned: &PinnedArtifact, artifact: &ArtifactConfig) -> Self {
        Self { source: source.clone(), digest: pinned.digest.clone(), artifact: artifact.clone() }
    }

    /// The cache index key.
    pub fn key(&self) -> String {
        artifact_key(&self.digest, &self.artifact)
    }
}

/// Where an artifact stands.
pub enum Status {
    Ready(Arc<Payload>),
    Fetching,
    /// The last fetch failed, recently: why, and how long until a request retries it.
    Failed(Arc<FetchError>, Duration),
}

type FetchFuture = Shared<BoxFuture<'static, Result<Arc<Payload>, Arc<FetchError>>>>;

/// How the gateway introduces itself to registries.
const USER_AGENT: &str = concat!("updraft-ota-gateway/", env!("CARGO_PKG_VERSION"));

/// Fetches artifacts into the cache, sharing one client and one fetch per key.
pub struct Fetcher {
    client: RwLock<(Vec<String>, Client)>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    inflight: Mutex<HashMap<String, FetchFuture>>,
    /// Failed fetches: until when they stay failed, and why.
    failures: Mutex<HashMap<String, (Instant, Arc<FetchError>)>>,
    permits: Semaphore,
}

impl Fetcher {
    pub fn new(cache: Arc<Cache>, metrics: Arc<Metrics>) -> Self {
        Self {
            client: RwLock::new((Vec::new(), oci::build_client(USER_AGENT, oci::protocol_for(Vec::new())))),
            cache,
            metrics,
            inflight: Mutex::default(),
            failures: Mutex::default(),
            permits: Semaphore::new(MAX_CONCURRENT_FETCHES),
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The shared client, rebuilt only when the set of plain-HTTP registries changes
    /// (a reload that adds one), so tokens and connections survive reloads.
    pub fn client_for<'a>(&self, sources: impl IntoIterator<Item = &'a SourceConfig>) -> Client {
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
    pub fn client(&self) -> Client {
        self.client.read().expect("client lock").1.clone()
    }

    /// Where the artifact stands, starting a fetch when it is neither cached, nor
    /// being fetched, nor recently failed. Never waits.
    pub fn status(self: &Arc<Self>, job: &Job) -> Status {
        let key = job.key();
        match self.cache.lookup(&key) {
            Ok(Some(payload)) => return Status::Ready(payload),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot map a cached payload; fetching it again"),
        }
        if self.inflight.lock().expect("inflight lock").contains_key(&key) {
            return Status::Fetching;
        }
        if let Some((until, reason)) = self.failures.lock().expect("failures lock").get(&key) {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Status::Failed(reason.clone(), left);
            }
        }
        drop(self.start(job.clone()));
        Status::Fetching
    }

    /// Fetches the artifact (or joins the fetch under way) and waits for it.
    pub async fn fetch(self: &Arc<Self>, job: Job) -> Result<Arc<Payload>, Arc<FetchError>> {
        if let Ok(Some(payload)) = self.cache.lookup(&job.key()) {
            return Ok(payload);
        }
        self.start(job).await
    }

    fn start(self: &Arc<Self>, job: Job) -> FetchFuture {
        let key = job.key();
        let mut inflight = self.inflight.lock().expect("inflight lock");
        if let Some(running) = inflight.get(&key) {
            return running.clone();
        }
        let this = self.clone();
        let task = tokio::spawn(async move { this.run(job).await });
        let shared = async move { task.await.unwrap_or_else(|e| Err(Arc::new(e.into()))) }.boxed().shared();
        inflight.insert(key, shared.clone());
        shared
    }

    /// The fetch task: fetch, record the outcome, leave the in-flight map.
    async fn run(self: Arc<Self>, job: Job) -> Result<Arc<Payload>, Arc<FetchError>> {
        let key = job.key();
        let mut slot = Some(self.permits.acquire().await.expect("semaphore never closed"));
        let started = Instant::now();
        let result = self.fetch_verified(&job, &mut slot).await.map_err(Arc::new);
        drop(slot);
        match &result {
            Ok(p) => {
                tracing::info!(digest = %job.digest, sha256 = %p.summary.sha256, size = p.summary.size,
                    elapsed_ms = started.elapsed().as_millis() as u64, "fetched and cached");
                self.failures.lock().expect("failures lock").remove(&key);
            }
            Err(reason) => {
                tracing::error!(digest = %job.digest, registry = %job.source.registry,
                    repository = %job.source.repository, %reason, "fetch failed");
                let hold = reason.retry_after().map_or(RETRY_FAILED_AFTER, |asked| {
                    tracing::warn!(registry = %job.source.registry, retry_after_s = asked.as_secs(),
                        "the registry asked to wait before retrying");
                    asked.clamp(RETRY_FAILED_AFTER, oci::MAX_RETRY_AFTER)
                });
                self.failures
                    .lock()
                    .expect("failures lock")
                    .insert(key.clone(), (Instant::now() + hold, reason.clone()));
            }
        }
        self.metrics.registry_result(&job.source.registry, result.is_ok());
        self.inflight.lock().expect("inflight lock").remove(&key);
        result
    }

    async fn fetch_verified(
        &self,
        job: &Job,
        slot: &mut Option<SemaphorePermit<'_>>,
    ) -> Result<Arc<Payload>, FetchError> {
        let client = self.client();
        let auth = oci::registry_auth(&job.source)?;
        let reference = oci::digest_reference(&job.source.registry, &job.source.repository, &job.digest);
        // HEAD first: a missing manifest fails before anything is downloaded, and a
        // throttling registry's Retry-After is seen.
        oci::probe().manifest_digest(&client, &reference, job.source.insecure, &auth).await?;
        let manifest = oci::pull_image_manifest(&client, &reference, &auth, &job.artifact).await?;
        let layer = oci::select_layer(&manifest, &job.artifact)?.clone();
        let (file, summary) = self.download(&client, &reference, &layer, &job.artifact, slot).await?;
        let cache = self.cache.clone();
        let key = job.key();
        let payload = tokio::task::spawn_blocking(move || cache.commit(&key, file, summary)).await??;
        Ok(payload)
    }

    /// Streams the layer through verification and unpacking into a temp file.
    async fn download(
        &self,
        client: &Client,
        reference: &Reference,
        layer: &OciDescriptor,
        artifact: &ArtifactConfig,
        slot: &mut Option<SemaphorePermit<'_>>,
    ) -> Result<(tempfile::NamedTempFile, unpack::Summary), FetchError> {
        let registry = |e| OciError::Registry { registry: reference.registry().to_owned(), source: e };
        let stream = client.pull_blob_stream(reference, layer).await.map_err(registry)?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
        let file = self.cache.temp_file()?;
        let artifact = artifact.clone();
        // A payload larger than the whole cache could never be kept: a decompression
        // bomb stops there with a clear error instead of filling the disk.
        let max_unpacked = self.cache.max_bytes();
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = Digesting::new(BufWriter::with_capacity(256 * 1024, file));
            unpack::unpack(ChannelReader::new(rx), &artifact, max_unpacked, &mut out)?;
            let (summary, buffered) = out.finish()?;
            let file = buffered.into_inner().map_err(|e| e.into_error())?;
            Ok::<_, io::Error>((file, summary))
        });
        let fed = feed(stream, tx, u64::try_from(layer.size).unwrap_or(0), slot).await;
        let written = writer.await?;
        // A stream error explains a writer error ("broken pipe"), so report it first.
        fed?;
        Ok(written?)
    }
}

/// Sends the verified stream to the writer; the writer sees an error instead of
/// a clean end whenever the body is short, long, or fails its digest. When the blob
/// sends nothing for [`RELEASE_SLOT_AFTER`], the fetch slot is given up.
async fn feed(
    mut stream: oci_client::client::SizedStream,
    tx: mpsc::Sender<io::Result<Bytes>>,
    expected: u64,
    slot: &mut Option<SemaphorePermit<'_>>,
) -> Result<(), FetchError> {
    let mut received = 0u64;
    loop {
        let next = if slot.is_some() {
            match tokio::time::timeout(RELEASE_SLOT_AFTER, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!(received, expected, "blob stalled; its fetch slot goes to the next fetch");
                    *slot = None;
                    continue;
                }
            }
        } else {
            stream.next().await
        };
        let Some(chunk) = next else { break };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let reason = e.to_string();
                let _ = tx.send(Err(e)).await;
                return Err(FetchError::Blob(reason));
            }
        };
        received += chunk.len() as u64;
        if received > expected {
            let _ = tx.send(Err(io::Error::other("blob longer than its descriptor"))).await;
            return Err(FetchError::Blob(format!("blob longer than the {expected} bytes its descriptor says")));
        }
        if tx.send(Ok(chunk)).await.is_err() {
            // The writer stopped (unpack error); its own error says why.
            return Ok(());
        }
    }
    if received != expected {
        let _ = tx.send(Err(io::Error::other("blob truncated"))).await;
        return Err(FetchError::Blob(format!("blob truncated: {received} of {expected} bytes")));
    }
    Ok(())
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("blob: {0}")]
    Blob(String),
    #[error("unpack or cache: {0}")]
    Io(#[from] io::Error),
    #[error("task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl FetchError {
    /// How long the registry asked to wait before the next attempt, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Oci(e) => e.retry_after(),
            _ => None,
        }
    }
}
