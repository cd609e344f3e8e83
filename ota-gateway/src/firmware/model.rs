//! The firmware model: channels, their two releases, and what a release answers once
//! its payload is cached ([`Ready`]: the OtaFlux body, the JSON manifest with its
//! signature, the download). A [`Snapshot`] is one loaded config's channels, swapped
//! as a whole on reload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use axum::http::HeaderValue;
use bytes::Bytes;
use prometheus::IntCounter;
use serde::Serialize;

use super::error::Error;
use super::rollout::{self, Side};
use super::signing::{SignedFields, Signer25519};
use crate::cache::Payload;
use crate::fetch::Job;
use crate::http::Download;
use crate::metrics::Metrics;
use updraft_core::config::{ChannelConfig, PinnedArtifact};
use updraft_core::version::Skipped;

/// The channels of one loaded config.
pub(super) struct Snapshot {
    pub(super) channels: Vec<Arc<Channel>>,
    by_name: HashMap<String, Arc<Channel>>,
    by_device: HashMap<String, Arc<Channel>>,
    pub(super) signer: Option<Arc<Signer25519>>,
    pub(super) public_url: Option<String>,
}

impl Snapshot {
    pub(super) fn new(
        channels: Vec<Arc<Channel>>,
        signer: Option<Arc<Signer25519>>,
        public_url: Option<String>,
    ) -> Self {
        Self {
            by_name: channels.iter().map(|c| (c.config.name.clone(), c.clone())).collect(),
            by_device: channels.iter().map(|c| (c.config.device_id().to_owned(), c.clone())).collect(),
            channels,
            signer,
            public_url,
        }
    }

    pub(super) fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.by_name.get(name)
    }

    pub(super) fn device(&self, device: &str) -> Option<&Arc<Channel>> {
        self.by_device.get(device)
    }
}

/// A channel and the releases it hands out.
pub struct Channel {
    pub(super) config: ChannelConfig,
    releases: RwLock<Releases>,
    /// What devices got before `releases` changed (a reload with a new `current`, a
    /// standalone resolution), served in their place until they are ready, so a new
    /// release never takes a channel down while the previous one is cached. Dropped
    /// once every release in `releases` is ready.
    fallback: RwLock<Option<Fallback>>,
    signer: Option<Arc<Signer25519>>,
    public_url: Option<String>,
    /// Check-ins through the OtaFlux API, which carry no device version.
    pub(super) otaflux_checkins: IntCounter,
    /// Standalone mode: when the policy is due to be resolved again (`None`: now).
    /// Kept with the channel, so a reload that keeps it keeps its schedule.
    pub(super) next_resolve: Mutex<Option<Instant>>,
    /// Standalone mode under `policy.verify`: the digests the last resolution skipped
    /// (their signature did not verify), with the reason, so each is reported once.
    skipped: Mutex<HashMap<String, &'static str>>,
}

/// The two artifacts of a channel.
#[derive(Clone, Default)]
pub struct Releases {
    pub current: Option<Arc<Release>>,
    pub previous: Option<Arc<Release>>,
}

impl Releases {
    /// Both releases, current first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<Release>> {
        [&self.current, &self.previous].into_iter().flatten()
    }

    /// Whether there is a release and every one is ready to serve.
    fn all_ready(&self) -> bool {
        self.current.is_some() && self.iter().all(|r| r.is_ready())
    }

    /// The release a device gets under `rollout`, by the rollout hash of its id.
    fn pick(&self, channel: &str, id: Option<&str>, rollout: u8) -> Option<Arc<Release>> {
        let current = self.current.as_ref()?;
        let side = rollout::choose(channel, id, rollout, self.previous.is_some());
        Some(match (side, &self.previous) {
            (Side::Previous, Some(previous)) => previous.clone(),
            _ => current.clone(),
        })
    }
}

/// The releases (every one ready) and the rollout a channel served before its releases
/// changed.
#[derive(Clone)]
pub(super) struct Fallback {
    releases: Releases,
    rollout: u8,
}

/// One pinned artifact of one channel.
pub struct Release {
    pub(super) pinned: PinnedArtifact,
    /// What to fetch (and its cache key).
    pub job: Job,
    pub(super) ready: OnceLock<Arc<Ready>>,
}

/// A release whose payload is cached, with every answer precomputed.
pub(super) struct Ready {
    pub(super) payload: Arc<Payload>,
    /// OtaFlux `/version` body: `VERSION\nCRC32\nSIZE`.
    pub(super) version_body: Bytes,
    /// The JSON firmware manifest (`/api/v1/channels/{name}`).
    pub(super) info_json: Bytes,
    /// The same manifest with `"downgrade": true`, the check's answer to a device that
    /// runs a newer version than this one (a channel pinned back).
    pub(super) downgrade_json: Bytes,
    pub(super) version: String,
    /// The binary, as `<channel>-<version>.bin`, ETag the payload's SHA-256.
    pub(super) download: Download,
}

/// The JSON description of a release.
#[derive(Serialize)]
struct FirmwareInfo<'a> {
    channel: &'a str,
    version: &'a str,
    tag: &'a str,
    digest: &'a str,
    size: u64,
    sha256: &'a str,
    crc32: u32,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    downgrade: bool,
}

impl Channel {
    /// A channel of `config`; `replaces` is the live channel of the same name, whose
    /// ready releases keep serving until this one's are ready.
    pub(super) fn new(
        config: ChannelConfig,
        public_url: Option<String>,
        signer: Option<Arc<Signer25519>>,
        metrics: &Metrics,
        replaces: Option<&Channel>,
    ) -> Self {
        let release = |p: &Option<PinnedArtifact>| p.as_ref().map(|p| Arc::new(Release::new(&config, p)));
        let releases = Releases { current: release(&config.current), previous: release(&config.previous) };
        let otaflux_checkins = metrics.checkins.with_label_values(&[config.name.as_str(), "unknown"]);
        Self {
            releases: RwLock::new(releases),
            fallback: RwLock::new(replaces.and_then(Channel::served)),
            signer,
            public_url,
            otaflux_checkins,
            next_resolve: Mutex::new(None),
            skipped: Mutex::new(HashMap::new()),
            config,
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.config.name
    }

    pub fn releases(&self) -> Releases {
        self.releases.read().expect("releases lock").clone()
    }

    /// What devices get from this channel now: its releases when all are ready, else
    /// what it still falls back to.
    fn served(&self) -> Option<Fallback> {
        let releases = self.releases();
        if releases.all_ready() {
            return Some(Fallback { releases, rollout: self.config.rollout });
        }
        self.fallback.read().expect("fallback lock").clone()
    }

    /// After the signing key or the public URL changed: what `old` served keeps serving
    /// in place of this channel's pending releases, its answers computed again with
    /// this channel's key and URLs from its payloads still in the cache (`cached`).
    /// A release no longer cached is left out (it would have to be fetched again).
    pub(super) fn fall_back_re_signed(&self, old: &Channel, cached: impl Fn(&Job) -> Option<Arc<Payload>>) {
        let Some(served) = old.served() else { return };
        let again = |release: &Option<Arc<Release>>| {
            let release = release.as_ref()?;
            let payload = cached(&release.job)?;
            let fresh = Release { pinned: release.pinned.clone(), job: release.job.clone(), ready: OnceLock::new() };
            let _ = fresh.ready.set(Arc::new(self.answers(&fresh, payload)));
            Some(Arc::new(fresh))
        };
        let releases =
            Releases { current: again(&served.releases.current), previous: again(&served.releases.previous) };
        *self.fallback.write().expect("fallback lock") = Some(Fallback { releases, rollout: served.rollout });
    }

    /// Installs a newly resolved `current` (standalone mode); the old one becomes
    /// `previous`, and what devices got so far keeps serving until the new one is
    /// ready. Returns false when nothing changed.
    pub(super) fn advance(&self, pinned: PinnedArtifact) -> bool {
        let served = self.served();
        let mut releases = self.releases.write().expect("releases lock");
        if releases.current.as_ref().is_some_and(|c| c.pinned == pinned) {
            return false;
        }
        *self.fallback.write().expect("fallback lock") = served;
        let next = Arc::new(Release::new(&self.config, &pinned));
        releases.previous = releases.current.replace(next);
        true
    }

    /// Records what a resolution skipped; returns those not skipped (for that reason)
    /// by the resolution before, which are the ones to report. A digest no longer
    /// skipped is forgotten, so it is reported again should it be skipped again.
    pub(super) fn note_skipped<'a>(&self, skipped: &'a [Skipped]) -> Vec<&'a Skipped> {
        let mut known = self.skipped.lock().expect("skipped lock");
        let new = skipped.iter().filter(|s| known.get(&s.release.digest) != Some(&s.reason)).collect();
        *known = skipped.iter().map(|s| (s.release.digest.clone(), s.reason)).collect();
        new
    }

    /// The release a device gets, by the rollout hash of its id.
    pub(super) fn pick(&self, id: Option<&str>) -> Result<Arc<Release>, Error> {
        let releases = self.releases.read().expect("releases lock");
        releases
            .pick(&self.config.name, id, self.config.rollout)
            .ok_or_else(|| Error::NotResolved(self.config.name.clone()))
    }

    /// The ready release this device got before the channel's releases changed, while
    /// the new ones are not all ready.
    pub(super) fn fallback_pick(&self, id: Option<&str>) -> Option<Arc<Release>> {
        let fallback = self.fallback.read().expect("fallback lock");
        let fallback = fallback.as_ref()?;
        fallback.releases.pick(&self.config.name, id, fallback.rollout).filter(|r| r.is_ready())
    }

    /// The releases still served in place of pending ones.
    pub(super) fn fallback_releases(&self) -> Vec<Arc<Release>> {
        let fallback = self.fallback.read().expect("fallback lock");
        fallback.iter().flat_map(|f| f.releases.iter().cloned()).collect()
    }

    /// Drops the fallback once every release is ready; true when it dropped one.
    pub(super) fn settle(&self) -> bool {
        if !self.releases().all_ready() {
            return false;
        }
        self.fallback.write().expect("fallback lock").take().is_some()
    }

    /// The highest version the channel has served: the configured high-water mark, or
    /// its current or previous release if either is higher (or the mark is unset).
    pub(super) fn highest_served(&self) -> Option<semver::Version> {
        let releases = self.releases();
        let versions = releases.iter().map(|r| r.pinned.version.as_str()).chain(self.config.highest_served.as_deref());
        versions.filter_map(|v| semver::Version::parse(v.trim_start_matches('v')).ok()).max()
    }

    /// The release with this exact version, if the channel has one (or still serves
    /// one in place of a pending release); a ready one first.
    pub(super) fn by_version(&self, version: &str) -> Option<Arc<Release>> {
        let mut found: Vec<_> = self.releases().iter().cloned().collect();
        found.extend(self.fallback_releases());
        found.retain(|r| r.pinned.version == version);
        found.iter().find(|r| r.is_ready()).or(found.first()).cloned()
    }

    /// Where devices download this channel's `version`.
    fn download_url(&self, version: &str) -> String {
        let base = self.public_url.as_deref().unwrap_or("").trim_end_matches('/');
        format!("{base}/api/v1/channels/{}/firmware?version={}", self.config.name, version)
    }

    /// Every answer of `release`, from its cached payload. (Not the `prepare` of a
    /// config apply, [`super::Firmware::prepare`]: that builds a whole snapshot.)
    pub(super) fn answers(&self, release: &Release, payload: Arc<Payload>) -> Ready {
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
            downgrade: false,
        };
        let info_json = Bytes::from(serde_json::to_vec(&info).expect("info serializes"));
        let downgrade_json =
            Bytes::from(serde_json::to_vec(&FirmwareInfo { downgrade: true, ..info }).expect("info serializes"));
        let filename = format!("attachment; filename=\"{}-{}.bin\"", self.config.name, version);
        let download = Download {
            body: payload.bytes.clone(),
            etag: HeaderValue::from_str(&format!("\"{}\"", summary.sha256)).expect("hex is a valid header"),
            content_type: HeaderValue::from_static("application/octet-stream"),
            disposition: Some(HeaderValue::from_str(&filename).unwrap_or(HeaderValue::from_static("attachment"))),
        };
        Ready {
            version_body: Bytes::from(format!("{version}\n{}\n{}", summary.crc32, summary.size)),
            info_json,
            downgrade_json,
            version,
            download,
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

    /// Whether the payload is cached and the answers computed.
    pub fn is_ready(&self) -> bool {
        self.ready.get().is_some()
    }
}
