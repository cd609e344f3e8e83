//! The gateway's runtime state: the live config turned into channels whose
//! releases are ready to serve, swapped as a whole on reload.
//!
//! Everything a device request needs is precomputed per release once its payload
//! is cached ([`Ready`]): the OtaFlux body, the ETag, the JSON manifest with its
//! signature, and the memory-mapped payload.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;
use prometheus::IntCounter;
use serde::Serialize;

use crate::cache::{Cache, Payload};
use crate::error::Error;
use crate::fetch::{Fetcher, Job, Status};
use crate::metrics::Metrics;
use crate::rollout::{self, Side};
use crate::signing::{SignedFields, Signer25519};
use updraft_core::config::{ChannelConfig, GatewayConfig, PinnedArtifact};

/// What a client is told to wait while a payload is fetched.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: Arc<Metrics>,
    fetcher: Arc<Fetcher>,
    snapshot: RwLock<Arc<Snapshot>>,
    loaded: AtomicBool,
}

/// One loaded config.
pub struct Snapshot {
    pub config: GatewayConfig,
    pub channels: Vec<Arc<Channel>>,
    by_name: HashMap<String, Arc<Channel>>,
    by_device: HashMap<String, Arc<Channel>>,
    pub signer: Option<Arc<Signer25519>>,
}

impl Snapshot {
    pub fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.by_name.get(name)
    }

    pub fn device(&self, device: &str) -> Option<&Arc<Channel>> {
        self.by_device.get(device)
    }
}

/// A channel and the releases it hands out.
pub struct Channel {
    pub config: ChannelConfig,
    releases: RwLock<Releases>,
    signer: Option<Arc<Signer25519>>,
    public_url: Option<String>,
    /// Check-ins through the OtaFlux API, which carry no device version.
    pub otaflux_checkins: IntCounter,
}

/// The two artifacts of a channel.
#[derive(Clone, Default)]
pub struct Releases {
    pub current: Option<Arc<Release>>,
    pub previous: Option<Arc<Release>>,
}

/// One pinned artifact of one channel.
pub struct Release {
    pub pinned: PinnedArtifact,
    pub job: Job,
    ready: OnceLock<Arc<Ready>>,
}

/// A release whose payload is cached, with every answer precomputed.
pub struct Ready {
    pub payload: Arc<Payload>,
    /// OtaFlux `/version` body: `VERSION\nCRC32\nSIZE`.
    pub version_body: Bytes,
    /// `"<sha256 hex>"`.
    pub etag: HeaderValue,
    /// The JSON firmware manifest (`/api/v1/channels/{name}`).
    pub info_json: Bytes,
    pub version: String,
    /// `attachment; filename="<channel>-<version>.bin"`.
    pub disposition: HeaderValue,
}

/// The JSON description of a release.
#[derive(Serialize)]
pub struct FirmwareInfo<'a> {
    pub channel: &'a str,
    pub version: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    pub crc32: u32,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Channel {
    fn new(
        config: ChannelConfig,
        gateway: &GatewayConfig,
        signer: Option<Arc<Signer25519>>,
        metrics: &Metrics,
    ) -> Self {
        let release = |p: &Option<PinnedArtifact>| p.as_ref().map(|p| Arc::new(Release::new(&config, p)));
        let releases = Releases { current: release(&config.current), previous: release(&config.previous) };
        let otaflux_checkins = metrics.checkins.with_label_values(&[config.name.as_str(), "unknown"]);
        Self {
            releases: RwLock::new(releases),
            signer,
            public_url: gateway.public_url.clone(),
            otaflux_checkins,
            config,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn releases(&self) -> Releases {
        self.releases.read().expect("releases lock").clone()
    }

    /// Installs a newly resolved `current` (standalone mode); the old one becomes
    /// `previous`. Returns false when nothing changed.
    pub fn advance(&self, pinned: PinnedArtifact) -> bool {
        let mut releases = self.releases.write().expect("releases lock");
        if releases.current.as_ref().is_some_and(|c| c.pinned == pinned) {
            return false;
        }
        let next = Arc::new(Release::new(&self.config, &pinned));
        releases.previous = releases.current.replace(next);
        true
    }

    /// The release a device gets, by the rollout hash of its id.
    pub fn pick(&self, id: Option<&str>) -> Result<Arc<Release>, Error> {
        let releases = self.releases.read().expect("releases lock");
        let current = releases.current.as_ref().ok_or_else(|| Error::NotResolved(self.config.name.clone()))?;
        let side = rollout::choose(&self.config.name, id, self.config.rollout, releases.previous.is_some());
        Ok(match (side, &releases.previous) {
            (Side::Previous, Some(previous)) => previous.clone(),
            _ => current.clone(),
        })
    }

    /// The release with this exact version, if the channel has one.
    pub fn by_version(&self, version: &str) -> Option<Arc<Release>> {
        let releases = self.releases.read().expect("releases lock");
        let found = [&releases.current, &releases.previous].into_iter().flatten().find(|r| r.pinned.version == version);
        found.cloned()
    }

    /// Where devices download this channel's `version`.
    pub fn download_url(&self, version: &str) -> String {
        let base = self.public_url.as_deref().unwrap_or("").trim_end_matches('/');
        format!("{base}/api/v1/channels/{}/firmware?version={}", self.config.name, version)
    }

    fn prepare(&self, release: &Release, payload: Arc<Payload>) -> Ready {
        let summary = &payload.summary;
        let version = release.pinned.version.trim_start_matches('v').to_owned();
        let fields = SignedFields {
            channel: &self.config.name,
            crc32: summary.crc32,
            sha256: &summary.sha256,
            size: summary.size,
            version: &version,
        };
        let info = FirmwareInfo {
            channel: &self.config.name,
            version: &version,
            tag: &release.pinned.tag,
            digest: &release.pinned.digest,
            size: summary.size,
            sha256: &summary.sha256,
            crc32: summary.crc32,
            url: self.download_url(&release.pinned.version),
            signature: self.signer.as_ref().map(|s| s.sign(&fields)),
        };
        let info_json = Bytes::from(serde_json::to_vec(&info).expect("info serializes"));
        let filename = format!("attachment; filename=\"{}-{}.bin\"", self.config.name, version);
        Ready {
            version_body: Bytes::from(format!("{version}\n{}\n{}", summary.crc32, summary.size)),
            etag: HeaderValue::from_str(&format!("\"{}\"", summary.sha256)).expect("hex is a valid header"),
            disposition: HeaderValue::from_str(&filename).unwrap_or(HeaderValue::from_static("attachment")),
            info_json,
            version,
            payload,
        }
    }
}

impl Release {
    fn new(channel: &ChannelConfig, pinned: &PinnedArtifact) -> Self {
        Self {
            pinned: pinned.clone(),
            job: Job::new(&channel.source, pinned, &channel.artifact),
            ready: OnceLock::new(),
        }
    }

    /// Whether the payload is cached and the answers prepared.
    pub fn is_ready(&self) -> bool {
        self.ready.get().is_some()
    }
}

impl AppState {
    /// State over an opened cache, with no channels until [`AppState::apply`].
    pub fn new(cache: Arc<Cache>, metrics: Arc<Metrics>) -> Self {
        let fetcher = Arc::new(Fetcher::new(cache, metrics.clone()));
        let empty = Snapshot {
            config: GatewayConfig::default(),
            channels: Vec::new(),
            by_name: HashMap::new(),
            by_device: HashMap::new(),
            signer: None,
        };
        let snapshot = RwLock::new(Arc::new(empty));
        Self { inner: Arc::new(Inner { metrics, fetcher, snapshot, loaded: AtomicBool::new(false) }) }
    }

    /// Opens the cache the config names and applies the config.
    pub fn from_config(config: GatewayConfig) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::new());
        let cache = Cache::open(&config.cache.dir, config.cache.max_bytes, metrics.clone())
            .map_err(|e| format!("cache {}: {e}", config.cache.dir.display()))?;
        let state = Self::new(Arc::new(cache), metrics);
        state.apply(config)?;
        Ok(state)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.inner.fetcher
    }

    pub fn cache(&self) -> &Arc<Cache> {
        self.inner.fetcher.cache()
    }

    /// The live config, as one consistent snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.read().expect("snapshot lock").clone()
    }

    /// Makes `config` live. Channels whose config did not change are kept as they
    /// are (with their prepared releases and resolved versions); the cache and the
    /// registry client stay. Every pinned artifact not yet cached is prefetched.
    pub fn apply(&self, config: GatewayConfig) -> Result<(), String> {
        config.validate().map_err(|e| e.to_string())?;
        let signer = config.signing_key_file.as_deref().map(load_signer).transpose()?;
        let old = self.snapshot();
        if old.config.cache.dir != config.cache.dir && !old.channels.is_empty() {
            tracing::warn!(old = %old.config.cache.dir.display(), "cache.dir changes take effect on restart");
        }
        let same_signer = public_pem(&signer) == public_pem(&old.signer) && config.public_url == old.config.public_url;
        let mut fresh = Vec::new();
        let channels: Vec<Arc<Channel>> = config
            .channels
            .iter()
            .map(|c| match old.channel(&c.name).filter(|o| same_signer && o.config == *c) {
                Some(kept) => kept.clone(),
                None => {
                    let channel = Arc::new(Channel::new(c.clone(), &config, signer.clone(), &self.inner.metrics));
                    fresh.push(channel.clone());
                    channel
                }
            })
            .collect();
        let snapshot = Snapshot {
            by_name: channels.iter().map(|c| (c.config.name.clone(), c.clone())).collect(),
            by_device: channels.iter().map(|c| (c.config.device_id().to_owned(), c.clone())).collect(),
            channels,
            signer,
            config,
        };
        self.cache().set_max_bytes(snapshot.config.cache.max_bytes);
        self.fetcher().client_for(snapshot.config.channels.iter().map(|c| &c.source));
        *self.inner.snapshot.write().expect("snapshot lock") = Arc::new(snapshot);
        self.inner.loaded.store(true, Ordering::Release);
        for channel in fresh.iter().filter(|c| c.config.policy.is_some()) {
            crate::reload::spawn_resolver(self.clone(), Arc::downgrade(channel));
        }
        self.refresh_protection();
        self.prefetch();
        Ok(())
    }

    /// Tells the cache which payloads the live config uses.
    pub fn refresh_protection(&self) {
        let keys: HashSet<String> = self
            .snapshot()
            .channels
            .iter()
            .flat_map(|c| {
                let r = c.releases();
                [r.current, r.previous].into_iter().flatten().map(|r| r.job.key())
            })
            .collect();
        self.cache().protect(keys);
    }

    /// Starts fetching every release that is not cached yet, and prepares its
    /// answers as soon as it is, so steady state never waits for a registry.
    pub fn prefetch(&self) {
        for channel in self.snapshot().channels.iter() {
            let releases = channel.releases();
            for release in [releases.current, releases.previous].into_iter().flatten() {
                if release.is_ready() {
                    continue;
                }
                let (state, channel) = (self.clone(), channel.clone());
                tokio::spawn(async move {
                    if state.fetcher().fetch(release.job.clone()).await.is_ok() {
                        let _ = state.ready(&channel, &release);
                    }
                });
            }
        }
    }

    /// The prepared answers of a release, or why there are none yet (starting the
    /// fetch if needed).
    pub fn ready(&self, channel: &Channel, release: &Release) -> Result<Arc<Ready>, Error> {
        if let Some(ready) = release.ready.get() {
            self.inner.metrics.cache_hits.inc();
            return Ok(ready.clone());
        }
        match self.inner.fetcher.status(&release.job) {
            Status::Ready(payload) => {
                self.inner.metrics.cache_hits.inc();
                Ok(release.ready.get_or_init(|| Arc::new(channel.prepare(release, payload))).clone())
            }
            Status::Fetching => {
                self.inner.metrics.cache_misses.inc();
                Err(Error::Fetching { retry_after: RETRY_AFTER })
            }
            Status::Failed(reason) => Err(Error::Upstream(reason)),
        }
    }

    /// Whether a config is loaded and the cache directory is writable.
    pub fn is_ready(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire) && self.cache().usable()
    }

    /// A channel by name (for tests and the resolver).
    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.snapshot().channel(name).cloned()
    }

    /// Whether `channel` is still part of the live config.
    pub fn is_live(&self, channel: &Weak<Channel>) -> Option<Arc<Channel>> {
        let channel = channel.upgrade()?;
        let snapshot = self.snapshot();
        snapshot.channel(channel.name()).filter(|c| Arc::ptr_eq(c, &channel))?;
        Some(channel)
    }
}

fn load_signer(path: &Path) -> Result<Arc<Signer25519>, String> {
    Signer25519::from_file(path).map(Arc::new)
}

fn public_pem(signer: &Option<Arc<Signer25519>>) -> Option<&str> {
    signer.as_deref().map(Signer25519::public_pem)
}
