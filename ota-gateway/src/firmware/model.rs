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

use super::deltas::Patch;
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
    /// The delta patches this channel serves (`deltas.patches`).
    pub(super) patches: Vec<Arc<Patch>>,
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
    /// The release's manifest digest: what a delta patch must produce to be offered.
    pub(super) digest: String,
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
        let patches = config.deltas.patches.iter().map(|p| Arc::new(Patch::new(&config, p))).collect();
        Self {
            patches,
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
            digest: release.pinned.digest.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::Summary;
    use updraft_core::version::Resolved;

    const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn pinned(version: &str, digest: &str) -> PinnedArtifact {
        PinnedArtifact { version: version.into(), tag: format!("v{version}"), digest: digest.into() }
    }

    /// The config of channel `esp32` (device `dev-7`) with `extra` YAML lines.
    fn config(extra: &str) -> ChannelConfig {
        let yaml =
            format!("name: esp32\ndevice: dev-7\nsource: {{registry: 127.0.0.1:5000, repository: fw/esp32}}\n{extra}");
        serde_yaml::from_str(&yaml).unwrap()
    }

    fn current(version: &str, digest: &str) -> String {
        format!("current: {{version: \"{version}\", tag: v{version}, digest: \"{digest}\"}}\n")
    }

    fn channel(extra: &str, public_url: Option<&str>, replaces: Option<&Channel>) -> Channel {
        Channel::new(config(extra), public_url.map(str::to_owned), None, &Metrics::new(), replaces)
    }

    fn payload(data: &'static [u8], crc32: u32) -> Arc<Payload> {
        let summary = Summary { size: data.len() as u64, crc32, sha256: "ab".repeat(32) };
        Arc::new(Payload { summary, bytes: Bytes::from_static(data) })
    }

    /// Marks `release` as cached, with its answers as `channel` computes them.
    fn make_ready(channel: &Channel, release: &Release) {
        let _ = release.ready.set(Arc::new(channel.answers(release, payload(b"firmware", 42))));
    }

    fn json(bytes: &Bytes) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_ready_release_answers_otaflux_with_version_crc_and_size() {
        let c = channel(&current("1.2.0", OLD), None, None);
        let release = c.releases().current.unwrap();
        let ready = c.answers(&release, payload(b"firmware", 42));
        assert_eq!(&ready.version_body[..], b"1.2.0\n42\n8");
        assert_eq!(ready.version, "1.2.0");
    }

    #[test]
    fn the_manifest_describes_the_release_and_its_download_under_the_public_url() {
        let c = channel(&current("1.2.0", OLD), Some("https://gw.example/"), None);
        let ready = c.answers(&c.releases().current.unwrap(), payload(b"firmware", 42));
        let info = json(&ready.info_json);
        let expected = serde_json::json!({"channel": "esp32", "version": "1.2.0", "tag": "v1.2.0", "digest": OLD,
            "size": 8, "sha256": "ab".repeat(32), "crc32": 42,
            "url": "https://gw.example/api/v1/channels/esp32/firmware?version=1.2.0"});
        assert_eq!(info, expected, "no signing key: no signature; not a downgrade");
        let relative = channel(&current("1.2.0", OLD), None, None);
        let info = json(&relative.answers(&relative.releases().current.unwrap(), payload(b"x", 1)).info_json);
        assert_eq!(info["url"], "/api/v1/channels/esp32/firmware?version=1.2.0");
    }

    #[test]
    fn the_downgrade_manifest_is_the_manifest_marked_downgrade() {
        let c = channel(&current("1.2.0", OLD), None, None);
        let ready = c.answers(&c.releases().current.unwrap(), payload(b"firmware", 42));
        let mut downgrade = json(&ready.downgrade_json);
        assert_eq!(downgrade["downgrade"], true);
        downgrade.as_object_mut().unwrap().remove("downgrade");
        assert_eq!(downgrade, json(&ready.info_json));
    }

    #[test]
    fn a_signing_key_signs_the_manifest() {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let signer = Arc::new(Signer25519::from_pem(&key.to_pkcs8_pem(LineEnding::LF).unwrap()).unwrap());
        let c = Channel::new(config(&current("1.2.0", OLD)), None, Some(signer.clone()), &Metrics::new(), None);
        let ready = c.answers(&c.releases().current.unwrap(), payload(b"firmware", 42));
        let signed = SignedFields { channel: "esp32", crc32: 42, sha256: &"ab".repeat(32), size: 8, version: "1.2.0" };
        assert_eq!(json(&ready.info_json)["signature"], signer.sign(&signed));
    }

    #[test]
    fn the_download_is_named_after_channel_and_version_and_tagged_by_sha256() {
        let c = channel(&current("v1.2.0", OLD), None, None);
        let ready = c.answers(&c.releases().current.unwrap(), payload(b"firmware", 42));
        assert_eq!(&ready.download.body[..], b"firmware");
        assert_eq!(ready.download.etag, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(ready.download.disposition.unwrap(), "attachment; filename=\"esp32-1.2.0.bin\"");
    }

    #[test]
    fn a_channel_without_a_release_picks_nothing() {
        let c = channel("policy: {range: '*'}\n", None, None);
        assert!(matches!(c.pick(Some("device-1")), Err(Error::NotResolved(name)) if name == "esp32"));
        assert!(c.fallback_pick(None).is_none());
    }

    #[test]
    fn a_full_rollout_hands_every_device_the_current_release() {
        let c = channel(
            &format!("{}previous: {{version: 1.0.0, tag: v1.0.0, digest: \"{OLD}\"}}\n", current("1.2.0", NEW)),
            None,
            None,
        );
        for id in [None, Some("a"), Some("b"), Some("c"), Some("d")] {
            assert_eq!(c.pick(id).unwrap().pinned.digest, NEW, "device {id:?}");
        }
    }

    #[test]
    fn a_zero_rollout_hands_every_device_the_previous_release() {
        let previous = format!("previous: {{version: 1.0.0, tag: v1.0.0, digest: \"{OLD}\"}}\nrollout: 0\n");
        let c = channel(&format!("{}{previous}", current("1.2.0", NEW)), None, None);
        for id in [Some("a"), Some("b"), Some("c"), Some("d")] {
            assert_eq!(c.pick(id).unwrap().pinned.digest, OLD, "device {id:?}");
        }
    }

    #[test]
    fn a_new_channel_serves_what_the_one_it_replaces_served_until_its_releases_are_ready() {
        let old = channel(&current("1.0.0", OLD), None, None);
        make_ready(&old, &old.releases().current.unwrap());
        let new = channel(&current("1.2.0", NEW), None, Some(&old));
        assert_eq!(new.fallback_pick(Some("device-1")).unwrap().pinned.digest, OLD);
        assert!(!new.settle(), "the new release is not ready yet");
        make_ready(&new, &new.releases().current.unwrap());
        assert!(new.settle(), "every release is ready: the fallback goes");
        assert!(new.fallback_pick(Some("device-1")).is_none());
        assert!(new.fallback_releases().is_empty());
    }

    #[test]
    fn a_replaced_channel_that_served_nothing_ready_leaves_no_fallback() {
        let old = channel(&current("1.0.0", OLD), None, None);
        let new = channel(&current("1.2.0", NEW), None, Some(&old));
        assert!(new.fallback_pick(None).is_none());
        assert!(new.fallback_releases().is_empty());
    }

    #[test]
    fn advancing_makes_the_current_release_previous_and_keeps_serving_it_meanwhile() {
        let c = channel("policy: {range: '*'}\n", None, None);
        assert!(c.advance(pinned("1.0.0", OLD)));
        make_ready(&c, &c.releases().current.unwrap());
        assert!(c.advance(pinned("1.2.0", NEW)));
        let releases = c.releases();
        assert_eq!(releases.current.unwrap().pinned.digest, NEW);
        assert_eq!(releases.previous.unwrap().pinned.digest, OLD);
        assert_eq!(c.fallback_pick(None).unwrap().pinned.digest, OLD, "1.0.0 serves until 1.2.0 is cached");
    }

    #[test]
    fn advancing_to_the_current_release_changes_nothing() {
        let c = channel("policy: {range: '*'}\n", None, None);
        assert!(c.advance(pinned("1.0.0", OLD)));
        let before = c.releases().current.unwrap();
        assert!(!c.advance(pinned("1.0.0", OLD)));
        assert!(Arc::ptr_eq(&c.releases().current.unwrap(), &before));
        assert!(c.releases().previous.is_none());
    }

    #[test]
    fn each_skipped_release_is_reported_once_until_it_is_no_longer_skipped() {
        let skipped = |digest: &str, reason| Skipped {
            release: Resolved { version: Some("1.0.0".into()), tag: "v1.0.0".into(), digest: digest.into() },
            reason,
            error: "no".into(),
        };
        let digests = |new: Vec<&Skipped>| new.iter().map(|s| s.release.digest.clone()).collect::<Vec<_>>();
        let c = channel("policy: {range: '*'}\n", None, None);
        let first = [skipped(OLD, "NoSignature")];
        assert_eq!(digests(c.note_skipped(&first)), [OLD]);
        assert!(c.note_skipped(&first).is_empty(), "reported already");
        let other_reason = [skipped(OLD, "WrongKey"), skipped(NEW, "NoSignature")];
        assert_eq!(digests(c.note_skipped(&other_reason)), [OLD, NEW], "a new reason is news");
        assert!(c.note_skipped(&[]).is_empty());
        assert_eq!(digests(c.note_skipped(&first)), [OLD], "forgotten once it verified");
    }

    #[test]
    fn the_highest_served_version_is_the_mark_or_a_higher_release() {
        let two = format!("{}previous: {{version: 1.3.0, tag: v1.3.0, digest: \"{OLD}\"}}\n", current("1.2.0", NEW));
        assert_eq!(channel(&two, None, None).highest_served(), Some(semver::Version::new(1, 3, 0)));
        let marked = format!("{two}highestServed: v2.0.0\n");
        assert_eq!(channel(&marked, None, None).highest_served(), Some(semver::Version::new(2, 0, 0)));
        let below = format!("{two}highestServed: 1.0.0\n");
        assert_eq!(channel(&below, None, None).highest_served(), Some(semver::Version::new(1, 3, 0)));
        assert_eq!(channel(&current("build-7", OLD), None, None).highest_served(), None, "not a version");
    }

    #[test]
    fn a_version_is_found_among_releases_and_what_still_serves_for_them() {
        let old = channel(&current("1.0.0", OLD), None, None);
        make_ready(&old, &old.releases().current.unwrap());
        let new = channel(&current("1.2.0", NEW), None, Some(&old));
        assert_eq!(new.by_version("1.2.0").unwrap().pinned.digest, NEW);
        let fallback = new.by_version("1.0.0").unwrap();
        assert_eq!(fallback.pinned.digest, OLD);
        assert!(fallback.is_ready());
        assert!(new.by_version("1.1.0").is_none());
    }

    #[test]
    fn a_version_held_twice_is_found_ready_first() {
        let old = channel(&current("1.0.0", OLD), None, None);
        make_ready(&old, &old.releases().current.unwrap());
        // Same version, other artifact: the new release is pending, the old one ready.
        let new = channel(&format!("{}artifact: {{path: fw.bin}}\n", current("1.0.0", OLD)), None, Some(&old));
        assert!(!new.releases().current.unwrap().is_ready());
        assert!(new.by_version("1.0.0").unwrap().is_ready());
    }

    #[test]
    fn re_signing_what_was_served_answers_with_the_new_urls_from_cached_payloads() {
        let old = channel(&current("1.0.0", OLD), Some("https://old.example"), None);
        make_ready(&old, &old.releases().current.unwrap());
        let new = channel(&current("1.2.0", NEW), Some("https://new.example"), None);
        new.fall_back_re_signed(&old, |_| Some(payload(b"firmware", 42)));
        let served = new.fallback_pick(None).unwrap();
        assert_eq!(served.pinned.digest, OLD);
        let info = json(&served.ready.get().unwrap().info_json);
        assert_eq!(info["url"], "https://new.example/api/v1/channels/esp32/firmware?version=1.0.0");
    }

    #[test]
    fn re_signing_leaves_out_a_release_no_longer_cached() {
        let old = channel(&current("1.0.0", OLD), Some("https://old.example"), None);
        make_ready(&old, &old.releases().current.unwrap());
        let new = channel(&current("1.2.0", NEW), Some("https://new.example"), None);
        new.fall_back_re_signed(&old, |_| None);
        assert!(new.fallback_pick(None).is_none());
        assert!(new.fallback_releases().is_empty());
    }

    #[test]
    fn a_snapshot_finds_channels_by_name_and_by_device() {
        let c = Arc::new(channel(&current("1.0.0", OLD), None, None));
        let snapshot = Snapshot::new(vec![c.clone()], None, None);
        assert!(Arc::ptr_eq(snapshot.channel("esp32").unwrap(), &c));
        assert!(Arc::ptr_eq(snapshot.device("dev-7").unwrap(), &c));
        assert!(snapshot.channel("dev-7").is_none(), "a device id is not a channel name");
        assert!(snapshot.device("esp32").is_none());
    }
}
