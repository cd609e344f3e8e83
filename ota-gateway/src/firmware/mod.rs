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
mod deltas;
mod error;
mod model;
mod otaflux;
mod resolver;
mod rollout;
pub mod signing;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

use crate::fetch::{Fetcher, Status};
use crate::metrics::Metrics;
use signing::{KeyError, Signer25519};
use updraft_core::census::{Census, DeviceHash, State as Seen};
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
        .route("/api/v1/channels/{name}/delta", get(channels::delta))
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
    /// The device census, unless turned off (`--no-census`).
    census: Option<Arc<Census>>,
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
    /// A surface with no channels yet, recording in `census` when there is one.
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        fetcher: Arc<Fetcher>,
        census: Option<Arc<Census>>,
        on_event: OnEvent,
    ) -> Self {
        let live = RwLock::new(Arc::new(Snapshot::new(Vec::new(), None, None)));
        let installed = watch::Sender::new(());
        Self { inner: Arc::new(Inner { metrics, fetcher, census, on_event, live, installed }) }
    }

    /// Records in the census what the device `id` of `channel` was seen doing (each
    /// `(state, version)`, each state at most once), hashing the id once; without an id
    /// (or with one longer than [`crate::census::MAX_ID`] bytes, which is not recorded)
    /// counts an anonymous poll. A version longer than [`crate::census::MAX_VERSION`] bytes is left out.
    /// Nothing when the census is off.
    fn census(&self, channel: &str, id: Option<&str>, seen: &[(Seen, &str)]) {
        let Some(census) = &self.inner.census else { return };
        match id.filter(|id| id.len() <= crate::census::MAX_ID) {
            Some(id) => {
                let mut kept = [(Seen::Offered, ""); 3];
                let mut n = 0;
                for (state, version) in seen {
                    let version = version.trim().trim_start_matches('v');
                    if !version.is_empty() && version.len() <= crate::census::MAX_VERSION && n < kept.len() {
                        kept[n] = (*state, version);
                        n += 1;
                    }
                }
                census.record_seen(channel, DeviceHash::of(id), SystemTime::now(), &kept[..n]);
            }
            None => self.inner.metrics.anonymous_polls.with_label_values(&[channel]).inc(),
        }
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
    /// still serve until their new releases are ready), and of their delta patches.
    pub(crate) fn pinned(&self) -> HashSet<String> {
        self.snapshot()
            .channels
            .iter()
            .flat_map(|c| {
                let releases =
                    c.releases().iter().chain(&c.fallback_releases()).map(|r| r.job.key()).collect::<Vec<_>>();
                releases.into_iter().chain(c.patches.iter().map(|p| p.job.key()))
            })
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
            for patch in channel.patches.iter().filter(|p| p.ready.get().is_none() && p.refused.get().is_none()) {
                tokio::spawn(self.clone().verify_patch(channel.clone(), patch.clone()));
            }
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

    /// The patch of `channel` that turns what the device runs into the release `ready`,
    /// when one matches and is cached; never waits (a patch being fetched is no patch).
    fn delta<'c>(
        &self,
        channel: &'c Channel,
        ready: &Ready,
        running: deltas::Running<'_>,
    ) -> Option<(&'c Arc<deltas::Patch>, Arc<deltas::PatchReady>)> {
        let patch = deltas::matching(&channel.patches, &ready.digest, running)?;
        Some((patch, self.patch_ready(patch).ok()?))
    }

    /// Fetches `patch` and the base and target it names, and checks that it gives the
    /// one from the other ([`deltas::check`], on a blocking thread); only then is it
    /// offered. A fetch that fails is tried again (1 s doubling to a minute) while the
    /// channel is live, devices getting full images meanwhile; a patch that does not
    /// give its target is refused for good, with an error log naming both releases.
    async fn verify_patch(self, channel: Arc<Channel>, patch: Arc<deltas::Patch>) {
        let (source, artifact) = (&channel.config.source, &channel.config.artifact);
        let base_job = crate::fetch::Job::new(source, &patch.config.base, artifact);
        let target_job = crate::fetch::Job::new(source, &patch.config.target, artifact);
        let fetcher = self.inner.fetcher.clone();
        let mut backoff = updraft_core::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let (file, base, target) = loop {
            let fetched = async {
                Ok::<_, Arc<crate::fetch::FetchError>>((
                    fetcher.fetch(patch.job.clone()).await?,
                    fetcher.fetch(base_job.clone()).await?,
                    fetcher.fetch(target_job.clone()).await?,
                ))
            };
            match fetched.await {
                Ok(payloads) => break payloads,
                Err(_) if !self.is_live_channel(&channel) => return,
                Err(e) => {
                    let wait = backoff.wait();
                    tracing::warn!(channel = channel.name(), base = %patch.config.base.version,
                        target = %patch.config.target.version, error = %e, retry_in = ?wait, "delta patch not checked yet");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let config = patch.config.clone();
        let (patch_bytes, summary) = (file.bytes.clone(), target.summary.clone());
        let checked = tokio::task::spawn_blocking(move || deltas::check(&config, &base.bytes, &patch_bytes, &summary));
        match checked.await.unwrap_or_else(|e| Err(format!("the check failed: {e}"))) {
            Ok(()) => {
                let ready = patch.answers(channel.name(), file);
                tracing::info!(channel = channel.name(), base = %patch.config.base.version,
                    target = %patch.config.target.version, bytes = ready.size, "delta patch checked, offered");
            }
            Err(reason) => {
                tracing::error!(channel = channel.name(), base = %patch.config.base.version,
                    target = %patch.config.target.version, digest = %patch.config.digest, %reason,
                    "delta patch refused: devices get the full image");
                let _ = patch.refused.set(reason);
            }
        }
    }

    /// A patch's answers, or why there are none yet (as [`Self::ready`] says it): it is
    /// offered only once [`Self::verify_patch`] checked it.
    fn patch_ready(&self, patch: &deltas::Patch) -> Result<Arc<deltas::PatchReady>, Error> {
        if let Some(ready) = patch.ready.get() {
            return Ok(ready.clone());
        }
        if let Some(reason) = patch.refused.get() {
            return Err(crate::http::Error::Upstream(format!("delta patch refused: {reason}")).into());
        }
        match self.inner.fetcher.status(&patch.job) {
            Status::Ready(_) | Status::Fetching => Err(Error::Fetching),
            Status::Failed(reason, left) if reason.retry_after().is_some() => {
                Err(crate::http::Error::Unavailable { message: reason.to_string(), retry_after: left }.into())
            }
            Status::Failed(reason, _) => Err(crate::http::Error::Upstream(reason.to_string()).into()),
        }
    }

    /// Where a device downloads `patch` (named by both versions and the base's digest,
    /// so the URL keeps meaning the same file when the channel moves on).
    fn delta_url(&self, channel: &Channel, patch: &deltas::Patch) -> String {
        let base = self.snapshot().public_url.clone().unwrap_or_default();
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("from", patch.base_version())
            .append_pair("sha256", &patch.config.base_sha256.to_ascii_lowercase())
            .append_pair("to", patch.target_version())
            .finish();
        format!("{}/api/v1/channels/{}/delta?{query}", base.trim_end_matches('/'), channel.name())
    }

    /// Marks a download's payload as just used, for the cache's LRU order.
    fn touch(&self, ready: &Ready) {
        self.inner.fetcher.cache().touch(&ready.payload.summary.sha256);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;
    use crate::cache::{artifact_key, Cache};
    use crate::unpack::Digesting;
    use updraft_core::config::ArtifactConfig;

    const V1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const V2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    /// A firmware surface over a cache of its own; its events are recorded as
    /// `ready esp32 1.0.0 URL` or `failed esp32 1.0.0`.
    struct Surface {
        firmware: Firmware,
        events: Arc<Mutex<Vec<String>>>,
        _dir: tempfile::TempDir,
    }

    impl Surface {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let metrics = Arc::new(Metrics::new());
            let cache = Arc::new(Cache::open(dir.path(), 1 << 20, metrics.clone()).unwrap());
            let fetcher = Arc::new(Fetcher::new(cache, metrics.clone()));
            let events = Arc::new(Mutex::new(Vec::new()));
            let seen = events.clone();
            let on_event: OnEvent = Arc::new(move |event| {
                seen.lock().unwrap().push(match event {
                    Event::Ready(f) => format!("ready {} {} {}", f.channel, f.version, f.url),
                    Event::Failed(f, _) => format!("failed {} {}", f.channel, f.version),
                })
            });
            Self { firmware: Firmware::new(metrics, fetcher, None, on_event), events, _dir: dir }
        }

        /// Prepares and installs `config`.
        fn apply(&self, config: &GatewayConfig) {
            let prepared = self.firmware.prepare(config).unwrap();
            self.firmware.install(prepared);
        }

        /// Puts `data` in the cache as the payload of the manifest `digest`.
        fn cache(&self, digest: &str, data: &[u8]) {
            let cache = self.firmware.inner.fetcher.cache();
            let mut writer = Digesting::new(cache.temp_file().unwrap());
            writer.write_all(data).unwrap();
            let (summary, file) = writer.finish().unwrap();
            cache.commit(&artifact_key(digest, &ArtifactConfig::default()), file, summary).unwrap();
        }

        fn serve(&self, name: &str) -> Result<Arc<Ready>, Error> {
            self.firmware.serve(&self.firmware.channel(name).unwrap(), None)
        }

        fn events(&self) -> Vec<String> {
            self.events.lock().unwrap().clone()
        }
    }

    /// Channels `(name, version, digest)` pulled from a registry nothing listens on.
    fn config(channels: &[(&str, &str, &str)]) -> GatewayConfig {
        let mut yaml = String::from("publicUrl: https://gw.example/\nchannels:\n");
        for (name, version, digest) in channels {
            yaml += &format!(
                "- name: {name}\n  device: dev-{name}\n  source: {{registry: 127.0.0.1:1, repository: fw/{name}, insecure: true}}\n  current: {{version: \"{version}\", tag: v{version}, digest: \"{digest}\"}}\n"
            );
        }
        let config = GatewayConfig::parse(yaml.as_bytes()).unwrap();
        config.validate().unwrap();
        config
    }

    /// Lets the surface's spawned tasks (prefetches) run.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_reload_keeps_a_channel_whose_config_did_not_change() {
        let surface = Surface::new();
        surface.apply(&config(&[("esp32", "1.0.0", V1)]));
        let before = surface.firmware.channel("esp32").unwrap();
        surface.apply(&config(&[("esp32", "1.0.0", V1), ("rp2040", "1.0.0", V2)]));
        assert!(Arc::ptr_eq(&surface.firmware.channel("esp32").unwrap(), &before));
        assert!(surface.firmware.channel("rp2040").is_some());
    }

    #[tokio::test]
    async fn a_reload_drops_a_channel_no_longer_configured() {
        let surface = Surface::new();
        surface.apply(&config(&[("esp32", "1.0.0", V1), ("rp2040", "1.0.0", V2)]));
        surface.apply(&config(&[("esp32", "1.0.0", V1)]));
        assert!(surface.firmware.channel("rp2040").is_none());
    }

    #[tokio::test]
    async fn a_prepared_config_changes_nothing_until_it_is_installed() {
        let surface = Surface::new();
        surface.apply(&config(&[("esp32", "1.0.0", V1)]));
        let prepared = surface.firmware.prepare(&config(&[("rp2040", "1.0.0", V2)])).unwrap();
        assert!(surface.firmware.channel("esp32").is_some());
        assert!(surface.firmware.channel("rp2040").is_none());
        surface.firmware.install(prepared);
        assert!(surface.firmware.channel("esp32").is_none());
    }

    #[tokio::test]
    async fn a_signing_key_that_cannot_be_read_fails_the_prepare() {
        let surface = Surface::new();
        let mut bad = config(&[("esp32", "1.0.0", V1)]);
        bad.signing_key_file = Some("/nonexistent/signing.pem".into());
        let error = surface.firmware.prepare(&bad).err().expect("the key cannot be read");
        assert!(error.to_string().starts_with("signing key /nonexistent/signing.pem: "), "{error}");
    }

    #[tokio::test]
    async fn a_cached_release_is_served_and_announced_once() {
        let surface = Surface::new();
        surface.cache(V1, b"firmware");
        surface.apply(&config(&[("esp32", "1.0.0", V1)]));
        let ready = surface.serve("esp32").unwrap();
        assert_eq!(&ready.download.body[..], b"firmware");
        surface.serve("esp32").unwrap();
        settle().await;
        assert_eq!(surface.events(), ["ready esp32 1.0.0 https://gw.example/firmware?device=dev-esp32"]);
    }

    #[tokio::test]
    async fn a_release_not_cached_is_fetching_until_its_fetch_fails() {
        let surface = Surface::new();
        surface.apply(&config(&[("esp32", "1.0.0", V1)]));
        assert!(matches!(surface.serve("esp32"), Err(Error::Fetching)));
        let channel = surface.firmware.channel("esp32").unwrap();
        let started = std::time::Instant::now();
        while surface.events().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "no failure reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(surface.events(), ["failed esp32 1.0.0"]);
        assert!(surface.firmware.failure(&channel).is_some(), "the failure is what devices are told");
        assert!(matches!(surface.serve("esp32"), Err(Error::Http(_))));
    }

    #[tokio::test]
    async fn a_new_release_serves_the_previous_one_until_it_is_cached() {
        let surface = Surface::new();
        surface.cache(V1, b"one");
        surface.apply(&config(&[("esp32", "1.0.0", V1)]));
        surface.serve("esp32").unwrap();
        surface.apply(&config(&[("esp32", "2.0.0", V2)]));
        assert_eq!(&surface.serve("esp32").unwrap().download.body[..], b"one");
        let key = |digest| artifact_key(digest, &ArtifactConfig::default());
        assert_eq!(surface.firmware.pinned(), HashSet::from([key(V1), key(V2)]), "both stay in the cache");
        surface.cache(V2, b"two");
        assert_eq!(&surface.serve("esp32").unwrap().download.body[..], b"two");
        assert_eq!(surface.firmware.pinned(), HashSet::from([key(V2)]), "1.0.0 may now be evicted");
    }

    #[tokio::test]
    async fn a_release_of_a_replaced_channel_is_not_announced() {
        let surface = Surface::new();
        surface.apply(&config(&[("esp32", "1.0.0", V1)]));
        let replaced = surface.firmware.channel("esp32").unwrap();
        surface.apply(&config(&[("esp32", "2.0.0", V2)]));
        surface.cache(V1, b"one");
        surface.firmware.serve(&replaced, None).unwrap();
        settle().await;
        assert!(!surface.events().iter().any(|e| e.starts_with("ready esp32 1.0.0")), "{:?}", surface.events());
    }
}
