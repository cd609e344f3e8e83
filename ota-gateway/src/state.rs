//! The gateway's live state: what the surfaces share (metrics, the registry fetcher
//! and its disk cache, the live config) and each surface's own part.
//!
//! A config is applied in two phases: every surface first *prepares* its part of the
//! new config (anything that can fail: reading keys, building indexes, loading a TLS
//! certificate), then, only when all succeeded, each *installs* its part. A bad config
//! therefore changes nothing. What cannot change while the process runs (listeners, the
//! cache and store directories: `updraft_core::restart`) is opened once by
//! [`AppState::from_config`]; a reload that changes it is logged, and the operator rolls
//! the pods on it.
//! Each surface pins the cache entries it serves under its own name; the cache spares
//! the union.
//!
//! Adding a surface (as `firmware` is wired): a state type in its module, cheap to
//! clone, with `new(metrics, fetcher)`, `prepare(&GatewayConfig) -> Result<Prepared, E>`
//! (no side effects) and `install(Prepared)` (swap its snapshot, `Cache::protect` under
//! its own owner name, start its tasks); a field in [`Inner`] and an accessor here; a
//! variant of [`ApplyError`] for `E`; one `prepare` and one `install` line in
//! [`AppState::apply`]; its registries in `registry_sources`; and its `router()`
//! merged in `crate::app` (or served on its own listener by `crate::serve`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use updraft_core::census::Census;

use crate::cache::Cache;
use crate::fetch::Fetcher;
use crate::firmware::{self, Firmware, SigningKeyError};
use crate::metrics::Metrics;
use crate::notify::{self, Notifier, NotifyError};
use crate::simplestreams::{StreamError, Streams};
use crate::store::Stores;
use crate::tls::{CertStore, TlsError};
use updraft_core::config::{ConfigError, GatewayConfig, SourceConfig};
use updraft_core::restart::RestartSettings;

/// Why a config could not be made live; the previous one keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    SigningKey(#[from] SigningKeyError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("cache {}: {source}", dir.display())]
    Cache { dir: PathBuf, source: std::io::Error },
    #[error("store {name}: {source}")]
    Store { name: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Shared by every handler and background task; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: Arc<Metrics>,
    fetcher: Arc<Fetcher>,
    config: RwLock<Arc<GatewayConfig>>,
    loaded: AtomicBool,
    firmware: Firmware,
    /// The simplestreams image streams.
    streams: Streams,
    /// MQTT and webhooks; told by the surfaces' event callbacks.
    notifier: Notifier,
    /// The artifact stores, each on its own listener (opened at start).
    stores: Stores,
    /// The certificate of every TLS listener, when the gateway started with a `tls` section.
    tls: Option<Arc<CertStore>>,
    /// The device census (`GET /census` on the admin port), unless turned off.
    census: Option<Arc<Census>>,
}

impl AppState {
    /// State over an opened cache, stores and certificate, with nothing served until
    /// [`AppState::apply`].
    fn new(
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        stores: Stores,
        tls: Option<Arc<CertStore>>,
        census: Option<Arc<Census>>,
    ) -> Self {
        let fetcher = Arc::new(Fetcher::new(cache, metrics.clone()));
        let notifier = Notifier::new();
        let firmware =
            Firmware::new(metrics.clone(), fetcher.clone(), census.clone(), firmware_events(notifier.clone()));
        let streams = Streams::new(fetcher.clone(), metrics.clone());
        let config = RwLock::new(Arc::new(GatewayConfig::default()));
        let loaded = AtomicBool::new(false);
        let inner = Inner { metrics, fetcher, config, loaded, firmware, streams, notifier, stores, tls, census };
        Self { inner: Arc::new(inner) }
    }

    /// [`AppState::from_config_with_census`] with a census of the default budget
    /// ([`crate::census::DEFAULT_MEMORY`]).
    pub fn from_config(config: GatewayConfig) -> Result<Self, ApplyError> {
        Self::from_config_with_census(config, Some(Arc::new(Census::new(crate::census::DEFAULT_MEMORY))))
    }

    /// Opens what the config names and a reload cannot change (the cache, the stores'
    /// directories, the TLS certificate) and applies the config; records the device
    /// census in `census` (`None`: no census, `/census` answers 404).
    pub fn from_config_with_census(config: GatewayConfig, census: Option<Arc<Census>>) -> Result<Self, ApplyError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::new());
        let cache = Cache::open(&config.cache.dir, config.cache.max_bytes, metrics.clone())
            .map_err(|source| ApplyError::Cache { dir: config.cache.dir.clone(), source })?;
        let stores = Stores::open(&config.stores).map_err(|(name, source)| ApplyError::Store { name, source })?;
        let tls = config.tls.as_ref().map(|t| CertStore::load(&t.cert_file, &t.key_file)).transpose()?;
        let state = Self::new(Arc::new(cache), metrics, stores, tls, census);
        state.apply(config)?;
        Ok(state)
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn cache(&self) -> &Arc<Cache> {
        self.inner.fetcher.cache()
    }

    /// The firmware surface.
    pub fn firmware(&self) -> &Firmware {
        &self.inner.firmware
    }

    /// The device census, unless turned off.
    pub fn census(&self) -> Option<&Arc<Census>> {
        self.inner.census.as_ref()
    }

    /// The simplestreams surface.
    pub(crate) fn streams(&self) -> &Streams {
        &self.inner.streams
    }

    /// The artifact stores.
    pub(crate) fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// The certificate of the TLS listeners, when there are any.
    pub(crate) fn tls(&self) -> Option<&Arc<CertStore>> {
        self.inner.tls.as_ref()
    }

    /// The live config.
    pub fn config(&self) -> Arc<GatewayConfig> {
        self.inner.config.read().expect("config lock").clone()
    }

    /// Makes `config` live. What did not change keeps its state (prepared answers,
    /// resolved versions); the cache and the registry client stay. Every pinned
    /// artifact not yet cached is prefetched. What was bound or opened at start
    /// (`updraft_core::restart`) keeps its start value until a restart; a change of it
    /// is logged.
    pub fn apply(&self, config: GatewayConfig) -> Result<(), ApplyError> {
        config.validate()?;
        let firmware = self.inner.firmware.prepare(&config)?;
        let notify = self.inner.notifier.prepare(&config)?;
        let streams = self.inner.streams.prepare(&config)?;
        let stores = self.inner.stores.prepare(&config);
        let tls = match (&self.inner.tls, &config.tls) {
            (Some(store), Some(t)) => store.prepare(&t.cert_file, &t.key_file)?.map(|prepared| (store, prepared)),
            _ => None,
        };
        // Nothing below fails.
        if self.is_loaded() {
            let changed = RestartSettings::of(&config).changed(&RestartSettings::of(&self.config()));
            if !changed.is_empty() {
                tracing::warn!(?changed, "these settings take effect on restart; the rest of the new config is live");
            }
        }
        self.cache().set_max_bytes(config.cache.max_bytes);
        self.inner.fetcher.client_for(registry_sources(&config));
        *self.inner.config.write().expect("config lock") = Arc::new(config);
        // Receivers first: releases the surfaces make ready from now on reach them.
        self.inner.notifier.install(notify);
        self.inner.firmware.install(firmware);
        self.inner.streams.install(streams);
        self.inner.stores.install(stores);
        if let Some((store, prepared)) = tls {
            store.install(prepared);
        }
        self.inner.loaded.store(true, Ordering::Release);
        Ok(())
    }

    fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
    }

    /// Whether a config is loaded and the cache directory is writable.
    pub(crate) fn is_ready(&self) -> bool {
        self.is_loaded() && self.cache().usable()
    }
}

/// The firmware surface's release events, as notifications.
fn firmware_events(notifier: Notifier) -> firmware::OnEvent {
    Arc::new(move |event| match event {
        firmware::Event::Ready(f) => {
            let (size, sha256, crc32) = f.payload.unwrap_or_default();
            notifier.release(notify::Release {
                channel: f.channel,
                device: f.device,
                version: f.version,
                tag: f.tag,
                digest: f.digest,
                size,
                sha256,
                crc32,
                url: f.url,
            })
        }
        firmware::Event::Failed(f, reason) => notifier.failed(notify::Failure {
            channel: f.channel,
            device: f.device,
            version: f.version,
            tag: f.tag,
            digest: f.digest,
            reason,
        }),
    })
}

/// Every registry the config fetches from, whichever surface names it (the shared
/// client needs to know which speak plain HTTP): firmware channels, and the
/// repositories of OCI and upload streams.
fn registry_sources(config: &GatewayConfig) -> impl Iterator<Item = &SourceConfig> {
    let streams = config.streams.iter().filter_map(|s| {
        s.source.oci.as_ref().map(|o| &o.repository).or(s.source.upload.as_ref().map(|u| &u.repository))
    });
    config.channels.iter().map(|c| &c.source).chain(streams)
}

/// One artifact store served on a loopback port by the gateway's own store router; its
/// URL. For the unit tests of what talks to stores (the mirror worker): they reach a
/// store through the state, which owns the stores, not through the store surface.
#[cfg(test)]
pub(crate) async fn serve_store(config: updraft_core::config::StoreConfig) -> String {
    let store = crate::store::Store::open(config).expect("test store opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    tokio::spawn(async move { axum::serve(listener, crate::store::router(store)).await });
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    /// A config caching in `cache` with one channel per name, pulled from a registry
    /// nothing listens on.
    fn config(cache: &std::path::Path, channels: &[&str]) -> GatewayConfig {
        let mut yaml = format!("cache: {{dir: {}, maxBytes: 1000000}}\nchannels:\n", cache.display());
        for name in channels {
            yaml += &format!(
                "- name: {name}\n  source: {{registry: 127.0.0.1:1, repository: fw/{name}, insecure: true}}\n  current: {{version: 1.0.0, tag: v1.0.0, digest: \"{DIGEST}\"}}\n"
            );
        }
        GatewayConfig::parse(yaml.as_bytes()).unwrap()
    }

    fn channel_names(state: &AppState) -> Vec<String> {
        state.config().channels.iter().map(|c| c.name.clone()).collect()
    }

    #[tokio::test]
    async fn a_started_gateway_serves_its_config_and_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::from_config(config(dir.path(), &["esp32"])).unwrap();
        assert_eq!(channel_names(&state), ["esp32"]);
        assert!(state.firmware().channel("esp32").is_some());
        assert!(state.is_ready());
    }

    #[tokio::test]
    async fn an_applied_config_becomes_live_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::from_config(config(dir.path(), &["esp32"])).unwrap();
        let mut next = config(dir.path(), &["rp2040"]);
        next.cache.max_bytes = 2_000_000;
        state.apply(next).unwrap();
        assert_eq!(channel_names(&state), ["rp2040"]);
        assert!(state.firmware().channel("esp32").is_none());
        assert!(state.firmware().channel("rp2040").is_some());
        assert_eq!(state.cache().max_bytes(), 2_000_000);
    }

    #[tokio::test]
    async fn a_config_a_surface_cannot_prepare_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::from_config(config(dir.path(), &["esp32"])).unwrap();
        let mut bad = config(dir.path(), &["rp2040"]);
        bad.cache.max_bytes = 2_000_000;
        bad.signing_key_file = Some(dir.path().join("missing.pem"));
        assert!(matches!(state.apply(bad), Err(ApplyError::SigningKey(_))));
        assert_eq!(channel_names(&state), ["esp32"]);
        assert!(state.firmware().channel("esp32").is_some());
        assert!(state.firmware().channel("rp2040").is_none());
        assert_eq!(state.cache().max_bytes(), 1_000_000);
    }

    #[tokio::test]
    async fn a_config_that_does_not_validate_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::from_config(config(dir.path(), &["esp32"])).unwrap();
        let twice = config(dir.path(), &["rp2040", "rp2040"]);
        assert!(matches!(state.apply(twice), Err(ApplyError::Config(_))));
        assert_eq!(channel_names(&state), ["esp32"]);
        assert!(state.firmware().channel("rp2040").is_none());
    }

    #[tokio::test]
    async fn a_cache_directory_that_cannot_be_opened_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a directory").unwrap();
        let error = AppState::from_config(config(&file.join("cache"), &["esp32"])).err().expect("no cache");
        assert!(matches!(error, ApplyError::Cache { .. }), "{error}");
        assert!(error.to_string().starts_with(&format!("cache {}: ", file.join("cache").display())), "{error}");
    }
}
