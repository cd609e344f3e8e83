//! The firmware surface: OTA channels served to devices.
//!
//! - `otaflux`: the OtaFlux-compatible device API (`/version`, `/firmware`);
//! - `channels`: named channels with JSON answers, the upgrade check, the signing key;
//! - `model`: channels, releases and their precomputed answers;
//! - `resolver`: standalone channels resolved from their registry's tags;
//! - `rollout` and [`signing`]: staged rollout and manifest signatures.
//!
//! [`Firmware`] is this surface's part of the live state: the current `Snapshot`
//! of channels, replaced as a whole when the config changes. It reports each release
//! that becomes ready to serve (or fails to) through an `OnEvent` callback the owner
//! of the state hands it, and knows nothing of who listens.

mod channels;
mod error;
mod model;
mod otaflux;
mod resolver;
mod rollout;
pub mod signing;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

use crate::fetch::{Fetcher, Status};
use crate::metrics::Metrics;
use signing::{KeyError, Signer25519};
use updraft_core::config::GatewayConfig;

pub(crate) use error::Error;
pub use model::{Channel, Release, Releases};
use model::{Ready, Snapshot};

/// What a client is told to wait while a payload is fetched.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The cache owner name under which this surface pins its payloads.
const CACHE_OWNER: &str = "firmware";

/// The surface's routes, over its own state.
pub(crate) fn router() -> Router<Firmware> {
    Router::new()
        .route("/version", get(otaflux::version))
        .route("/firmware", get(otaflux::firmware))
        .route("/api/v1/channels", get(channels::list))
        .route("/api/v1/channels/{name}", get(channels::info))
        .route("/api/v1/channels/{name}/firmware", get(channels::firmware))
        .route("/api/v1/channels/{name}/check", post(channels::check))
        .route("/.well-known/updraft/signing-key.pub", get(channels::public_key))
}

/// The firmware surface's live state; cheap to clone.
#[derive(Clone)]
pub struct Firmware {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: Arc<Metrics>,
    fetcher: Arc<Fetcher>,
    on_event: OnEvent,
    live: RwLock<Arc<Snapshot>>,
    /// Ticks on every install; resolver tasks of older snapshots then stop.
    installed: watch::Sender<()>,
}

/// Told about releases; must not block (it runs on fetch tasks and request handlers).
pub(crate) type OnEvent = Arc<dyn Fn(Event) + Send + Sync>;

/// What happened to a release.
#[derive(Debug)]
pub(crate) enum Event {
    /// The release a channel hands out through the OtaFlux API (`pick` without a device
    /// id) is now ready to serve: cached, verified, its answers computed. Sent once per
    /// release object: a reload that changes a channel (a new `current`, a rollback)
    /// sends it again for the release it then hands out.
    Ready(ReleaseFacts),
    /// A release's payload could not be fetched, unpacked or verified.
    Failed(ReleaseFacts, String),
}

/// A release as its notifications describe it.
#[derive(Debug)]
pub(crate) struct ReleaseFacts {
    pub channel: String,
    pub device: String,
    pub version: String,
    pub tag: String,
    pub digest: String,
    /// Size, SHA-256 and CRC32 of the payload, when it is cached.
    pub payload: Option<(u64, String, u32)>,
    /// Where an OtaFlux device downloads it.
    pub url: String,
}

/// The firmware part of a new config: built, not yet live (see [`Firmware::install`]).
pub(crate) struct Prepared {
    snapshot: Arc<Snapshot>,
}

/// The signing key of a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("signing key {}: {source}", path.display())]
pub struct SigningKeyError {
    path: PathBuf,
    source: KeyError,
}

impl Firmware {
    /// A surface with no channels yet.
    pub(crate) fn new(metrics: Arc<Metrics>, fetcher: Arc<Fetcher>, on_event: OnEvent) -> Self {
        let live = RwLock::new(Arc::new(Snapshot::new(Vec::new(), None, None)));
        Self { inner: Arc::new(Inner { metrics, fetcher, on_event, live, installed: watch::Sender::new(()) }) }
    }

    /// The live channels, as one consistent snapshot.
    fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.live.read().expect("snapshot lock").clone()
    }

    /// A live channel by name.
    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.snapshot().channel(name).cloned()
    }

    /// Builds the channels of `config`. Channels whose config did not change are kept
    /// as they are (with their ready releases, resolved versions and resolution
    /// schedule).
    pub(crate) fn prepare(&self, config: &GatewayConfig) -> Result<Prepared, SigningKeyError> {
        let signer = match &config.signing_key_file {
            Some(path) => Some(Arc::new(
                Signer25519::from_file(path).map_err(|source| SigningKeyError { path: path.clone(), source })?,
            )),
            None => None,
        };
        let old = self.snapshot();
        let public_pem = |s: &Option<Arc<Signer25519>>| s.as_deref().map(Signer25519::public_pem).map(str::to_owned);
        let same_answers = public_pem(&signer) == public_pem(&old.signer) && config.public_url == old.public_url;
        let channels = config
            .channels
            .iter()
            .map(|c| {
                // Same signing key and URLs: the old channel's answers stay valid, so it
                // is kept as is, or (a new release) serves until the new one is ready.
                // Otherwise what it served is signed again and serves meanwhile.
                let old_channel = old.channel(&c.name);
                let replaced = old_channel.filter(|_| same_answers);
                match replaced.filter(|o| o.config == *c) {
                    Some(kept) => kept.clone(),
                    None => {
                        let channel = Channel::new(
                            c.clone(),
                            config.public_url.clone(),
                            signer.clone(),
                            &self.inner.metrics,
                            replaced.map(|o| o.as_ref()),
                        );
                        if let Some(old_channel) = old_channel.filter(|_| !same_answers) {
                            let cache = self.inner.fetcher.cache();
                            channel.fall_back_re_signed(old_channel, |job| cache.lookup(&job.key()).ok().flatten());
                        }
                        Arc::new(channel)
                    }
                }
            })
            .collect();
        Ok(Prepared { snapshot: Arc::new(Snapshot::new(channels, signer, config.public_url.clone())) })
    }

    /// Makes prepared channels live: pins their payloads in the cache, starts fetching
    /// those not cached yet, and resolves standalone channels.
    pub(crate) fn install(&self, prepared: Prepared) {
        let snapshot = prepared.snapshot;
        *self.inner.live.write().expect("snapshot lock") = snapshot.clone();
        self.inner.installed.send_replace(());
        if snapshot.channels.iter().any(|c| c.config.policy.is_some()) {
            resolver::spawn(self.clone(), &snapshot);
        }
        self.repin();
        self.prefetch();
    }

    /// Whether `snapshot` is the live one.
    fn is_live(&self, snapshot: &Arc<Snapshot>) -> bool {
        Arc::ptr_eq(&self.snapshot(), snapshot)
    }

    /// The cache keys of every release the live channels hand out (and of those they
    /// still serve until their new releases are ready).
    pub(crate) fn pinned(&self) -> HashSet<String> {
        self.snapshot()
            .channels
            .iter()
            .flat_map(|c| c.releases().iter().chain(&c.fallback_releases()).map(|r| r.job.key()).collect::<Vec<_>>())
            .collect()
    }

    /// Tells the cache which payloads this surface uses.
    fn repin(&self) {
        self.inner.fetcher.cache().protect(CACHE_OWNER, self.pinned());
    }

    /// Starts fetching every release that is not cached yet, and prepares its
    /// answers as soon as it is, so steady state never waits for a registry.
    fn prefetch(&self) {
        for channel in self.snapshot().channels.iter() {
            for release in channel.releases().iter().filter(|r| !r.is_ready()).cloned() {
                let (firmware, channel) = (self.clone(), channel.clone());
                tokio::spawn(async move {
                    match firmware.inner.fetcher.fetch(release.job.clone()).await {
                        Ok(_) => {
                            let _ = firmware.ready(&channel, &release);
                        }
                        Err(e) if firmware.is_live_channel(&channel) => (firmware.inner.on_event)(Event::Failed(
                            firmware.facts(&channel, &release, None),
                            e.to_string(),
                        )),
                        Err(_) => {}
                    }
                });
            }
        }
    }

    /// What a device with `id` is served from `channel`: the release it picks when
    /// that is ready, else the ready release it got before the channel's releases
    /// changed, else why there is nothing (pending, failed).
    fn serve(&self, channel: &Channel, id: Option<&str>) -> Result<Arc<Ready>, Error> {
        let result = channel.pick(id).and_then(|release| self.ready(channel, &release));
        match (result, channel.fallback_pick(id)) {
            (Err(_), Some(fallback)) => match fallback.ready.get() {
                Some(ready) => {
                    self.inner.metrics.cache_hits.inc();
                    Ok(ready.clone())
                }
                None => Err(Error::Fetching), // unreachable: a fallback pick is ready
            },
            (result, _) => result,
        }
    }

    /// Why the release OtaFlux devices should get from `channel` is not served yet:
    /// `None` when it is ready or being fetched, else the last fetch failure.
    fn failure(&self, channel: &Channel) -> Option<String> {
        let release = channel.pick(None).ok().filter(|r| !r.is_ready())?;
        match self.inner.fetcher.status(&release.job) {
            Status::Failed(reason, _) => Some(reason.to_string()),
            Status::Ready(_) | Status::Fetching => None,
        }
    }

    /// The prepared answers of a release, or why there are none yet (starting the
    /// fetch if needed).
    fn ready(&self, channel: &Channel, release: &Release) -> Result<Arc<Ready>, Error> {
        let metrics = &self.inner.metrics;
        if let Some(ready) = release.ready.get() {
            metrics.cache_hits.inc();
            return Ok(ready.clone());
        }
        match self.inner.fetcher.status(&release.job) {
            Status::Ready(payload) => {
                metrics.cache_hits.inc();
                let mut fresh = false;
                let ready = release
                    .ready
                    .get_or_init(|| {
                        fresh = true;
                        Arc::new(channel.answers(release, payload))
                    })
                    .clone();
                if fresh {
                    self.announce(channel, release, &ready);
                    if channel.settle() && self.is_live_channel(channel) {
                        self.repin(); // what was served meanwhile may now be evicted
                    }
                }
                Ok(ready)
            }
            Status::Fetching => {
                metrics.cache_misses.inc();
                Err(Error::Fetching)
            }
            // A registry that asked for a wait: devices are told how long is left.
            Status::Failed(reason, left) if reason.retry_after().is_some() => {
                Err(crate::http::Error::Unavailable { message: reason.to_string(), retry_after: left }.into())
            }
            Status::Failed(reason, _) => Err(crate::http::Error::Upstream(reason.to_string()).into()),
        }
    }

    /// Reports a release that just became ready, if it is what the live channel hands
    /// out to OtaFlux devices.
    fn announce(&self, channel: &Channel, release: &Release, ready: &Ready) {
        let handed_out = channel.pick(None).is_ok_and(|r| std::ptr::eq(Arc::as_ptr(&r), release));
        if handed_out && self.is_live_channel(channel) {
            let summary = &ready.payload.summary;
            let payload = Some((summary.size, summary.sha256.clone(), summary.crc32));
            (self.inner.on_event)(Event::Ready(self.facts(channel, release, payload)));
        }
    }

    /// Whether `channel` belongs to the live snapshot (not to one a reload replaced).
    fn is_live_channel(&self, channel: &Channel) -> bool {
        self.snapshot().channel(channel.name()).is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), channel))
    }

    fn facts(&self, channel: &Channel, release: &Release, payload: Option<(u64, String, u32)>) -> ReleaseFacts {
        let device = channel.config.device_id().to_owned();
        let base = self.snapshot().public_url.clone().unwrap_or_default();
        let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("device", &device).finish();
        ReleaseFacts {
            channel: channel.name().to_owned(),
            url: format!("{}/firmware?{query}", base.trim_end_matches('/')),
            device,
            version: release.pinned.version.trim_start_matches('v').to_owned(),
            tag: release.pinned.tag.clone(),
            digest: release.pinned.digest.clone(),
            payload,
        }
    }

    /// Marks a download's payload as just used, for the cache's LRU order.
    fn touch(&self, ready: &Ready) {
        self.inner.fetcher.cache().touch(&ready.payload.summary.sha256);
    }
}
