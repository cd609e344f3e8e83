//! The firmware surface: OTA channels served to devices.
//!
//! - `otaflux`: the OtaFlux-compatible device API (`/version`, `/firmware`);
//! - `channels`: named channels with JSON answers, the upgrade check, the signing key;
//! - `model`: channels, releases and their precomputed answers;
//! - `resolver`: standalone channels resolved from their registry's tags;
//! - `rollout` and [`signing`]: staged rollout and manifest signatures.
//!
//! [`Firmware`] is this surface's part of the live state: the current `Snapshot`
//! of channels, replaced as a whole when the config changes.

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
    live: RwLock<Arc<Snapshot>>,
    /// Ticks on every install; resolver tasks of older snapshots then stop.
    installed: watch::Sender<()>,
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
    pub(crate) fn new(metrics: Arc<Metrics>, fetcher: Arc<Fetcher>) -> Self {
        let live = RwLock::new(Arc::new(Snapshot::new(Vec::new(), None, None)));
        Self { inner: Arc::new(Inner { metrics, fetcher, live, installed: watch::Sender::new(()) }) }
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
    /// as they are (with their prepared releases, resolved versions and resolution
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
            .map(|c| match old.channel(&c.name).filter(|o| same_answers && o.config == *c) {
                Some(kept) => kept.clone(),
                None => {
                    Arc::new(Channel::new(c.clone(), config.public_url.clone(), signer.clone(), &self.inner.metrics))
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

    /// The cache keys of every release the live channels hand out.
    pub(crate) fn pinned(&self) -> HashSet<String> {
        self.snapshot()
            .channels
            .iter()
            .flat_map(|c| c.releases().iter().map(|r| r.job.key()).collect::<Vec<_>>())
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
                    if firmware.inner.fetcher.fetch(release.job.clone()).await.is_ok() {
                        let _ = firmware.ready(&channel, &release);
                    }
                });
            }
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
                Ok(release.ready.get_or_init(|| Arc::new(channel.prepare(release, payload))).clone())
            }
            Status::Fetching => {
                metrics.cache_misses.inc();
                Err(Error::Fetching)
            }
            Status::Failed(reason) => Err(crate::http::Error::Upstream(reason.to_string()).into()),
        }
    }

    /// Marks a download's payload as just used, for the cache's LRU order.
    fn touch(&self, ready: &Ready) {
        self.inner.fetcher.cache().touch(&ready.payload.summary.sha256);
    }
}
