//! Delta patches served beside full images: each channel's `deltas.patches` (built by
//! the mirror worker, found and pinned by the operator) are fetched and cached like
//! releases (by the patch artifact's manifest digest, its one
//! [`ESP_PATCH_MEDIA_TYPE`] layer, raw, size and digest verified as it streams).
//!
//! A device gets a patch only when every one of these holds ([`matching`]): the patch
//! produces the release it is offered (`target.digest`, the manifest digest), it runs
//! the patch's base version (a `v` prefix ignored), and the image digest it reports
//! (`esp_partition_get_sha256`) is the one the patch was built from (`baseSha256`, case
//! ignored). Anything else, or a patch not cached yet, gets the full image: a patch is
//! never offered against a base it was not built for, and never waited for.

use std::sync::{Arc, OnceLock};

use axum::http::HeaderValue;
use serde::Serialize;
use updraft_core::config::{ArtifactConfig, ChannelConfig, DeltaPatch, PinnedArtifact};
use updraft_core::delta::ESP_PATCH_MEDIA_TYPE;

use sha2::{Digest, Sha256};

use crate::cache::Payload;
use crate::fetch::Job;
use crate::http::Download;
use crate::unpack::Summary;

/// One patch a channel serves.
pub(crate) struct Patch {
    pub(super) config: DeltaPatch,
    /// What to fetch: the layer of the patch artifact, raw.
    pub(crate) job: Job,
    pub(super) ready: OnceLock<Arc<PatchReady>>,
    /// Why the patch is never offered: applied to its base it does not give its target.
    pub(super) refused: OnceLock<String>,
}

/// A patch whose file is cached: its download and what the check API says of it.
pub(super) struct PatchReady {
    pub(super) download: Download,
    pub(super) size: u64,
    /// SHA-256 (hex) of the patch file.
    pub(super) sha256: String,
}

/// `"delta"` in the check's answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeltaInfo<'a> {
    pub(super) url: String,
    pub(super) size: u64,
    pub(super) sha256: &'a str,
    pub(super) base_sha256: String,
}

/// The artifact config of every patch: its one layer, raw.
fn patch_layer() -> ArtifactConfig {
    ArtifactConfig { media_type: Some(ESP_PATCH_MEDIA_TYPE.to_owned()), ..Default::default() }
}

impl Patch {
    pub(super) fn new(channel: &ChannelConfig, config: &DeltaPatch) -> Self {
        let artifact = PinnedArtifact { digest: config.digest.clone(), ..config.target.clone() };
        Self {
            job: Job::new(&channel.source, &artifact, &patch_layer()),
            config: config.clone(),
            ready: OnceLock::new(),
            refused: OnceLock::new(),
        }
    }

    /// The base's version, as devices are told it (no `v`).
    pub(super) fn base_version(&self) -> &str {
        self.config.base.version.trim_start_matches('v')
    }

    pub(super) fn target_version(&self) -> &str {
        self.config.target.version.trim_start_matches('v')
    }

    /// The answers of this patch from its cached file (computed once).
    pub(super) fn answers(&self, channel: &str, payload: Arc<Payload>) -> Arc<PatchReady> {
        self.ready
            .get_or_init(|| {
                let sha256 = payload.summary.sha256.clone();
                let name = format!(
                    "attachment; filename=\"{channel}-{}-to-{}.patch\"",
                    self.base_version(),
                    self.target_version()
                );
                let download = Download {
                    body: payload.bytes.clone(),
                    etag: HeaderValue::from_str(&format!("\"{sha256}\"")).expect("hex is a valid header"),
                    content_type: HeaderValue::from_static("application/octet-stream"),
                    disposition: Some(HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("attachment"))),
                };
                Arc::new(PatchReady { download, size: payload.summary.size, sha256 })
            })
            .clone()
    }
}

/// Whether `patch` (the file) is what `config` says: applied to `base` as the device
/// applies it, it gives `target` byte for byte, and `baseSha256` is the digest a device
/// running `base` reports. A patch comes from a registry, where anyone who may push
/// could have put a file under the pair's tag, so a gateway offers one only after this.
pub(super) fn check(config: &DeltaPatch, base: &[u8], patch: &[u8], target: &Summary) -> Result<(), String> {
    let reported = hex::encode(updraft_delta::esp::image_digest(base));
    if !config.base_sha256.eq_ignore_ascii_case(&reported) {
        return Err(format!("baseSha256 {} is not the base image's digest {reported}", config.base_sha256));
    }
    let max_len = usize::try_from(target.size).unwrap_or(usize::MAX);
    let made = updraft_delta::esp::apply(base, patch, max_len).map_err(|e| format!("the patch does not apply: {e}"))?;
    let sha256 = hex::encode(Sha256::digest(&made));
    if made.len() as u64 != target.size || sha256 != target.sha256 {
        return Err(format!(
            "applied to {}, the patch gives {} bytes with SHA-256 {sha256}, not {} ({} bytes, {})",
            config.base.version,
            made.len(),
            config.target.version,
            target.size,
            target.sha256
        ));
    }
    Ok(())
}

/// What a device reports running.
#[derive(Clone, Copy, Debug)]
pub(super) struct Running<'a> {
    pub(super) version: &'a str,
    /// `esp_partition_get_sha256` of its running image, hex.
    pub(super) sha256: &'a str,
}

/// Whether `patch` turns what the device runs into the release `target` (a manifest
/// digest): the module's rule, in one place.
pub(super) fn applies(patch: &DeltaPatch, target: &str, running: Running<'_>) -> bool {
    let version = |v: &str| v.trim().trim_start_matches('v').to_owned();
    patch.target.digest == target
        && version(&patch.base.version) == version(running.version)
        && patch.base_sha256.eq_ignore_ascii_case(running.sha256.trim())
}

/// The first patch of `patches` that turns what the device runs into `target`.
pub(super) fn matching<'a>(patches: &'a [Arc<Patch>], target: &str, running: Running<'_>) -> Option<&'a Arc<Patch>> {
    patches.iter().find(|p| applies(&p.config, target, running))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const TARGET: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const OTHER: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn patch() -> DeltaPatch {
        DeltaPatch {
            base: PinnedArtifact { version: "v1.0.0".into(), tag: "v1.0.0".into(), digest: BASE.into() },
            base_sha256: "ab".repeat(32),
            target: PinnedArtifact { version: "1.1.0".into(), tag: "v1.1.0".into(), digest: TARGET.into() },
            digest: OTHER.into(),
        }
    }

    fn running<'a>(version: &'a str, sha256: &'a str) -> Running<'a> {
        Running { version, sha256 }
    }

    #[test]
    fn a_patch_applies_to_its_base_version_and_image_digest_when_its_target_is_offered() {
        let sha = "ab".repeat(32);
        assert!(applies(&patch(), TARGET, running("1.0.0", &sha)));
        assert!(applies(&patch(), TARGET, running("v1.0.0", &sha)), "a v prefix is ignored");
        assert!(applies(&patch(), TARGET, running("1.0.0", &"AB".repeat(32))), "hex case is ignored");
    }

    #[test]
    fn a_wrong_base_version_digest_or_target_gets_no_patch() {
        let sha = "ab".repeat(32);
        assert!(!applies(&patch(), TARGET, running("1.0.1", &sha)), "another version");
        assert!(!applies(&patch(), TARGET, running("1.0.0", &"cd".repeat(32))), "another image of 1.0.0");
        assert!(!applies(&patch(), TARGET, running("1.0.0", "")), "no digest");
        assert!(!applies(&patch(), OTHER, running("1.0.0", &sha)), "the device is offered another release");
        assert!(!applies(&patch(), BASE, running("1.0.0", &sha)), "its base is not its target");
    }

    #[test]
    fn a_patch_is_offered_only_when_it_gives_its_target_from_its_base() {
        let base: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut target = base.clone();
        target[10] = 0;
        target.extend_from_slice(b"new");
        let summary =
            |data: &[u8]| Summary { size: data.len() as u64, crc32: 0, sha256: hex::encode(Sha256::digest(data)) };
        let file = updraft_delta::esp::patch(&base, &target);
        let config = DeltaPatch { base_sha256: hex::encode(updraft_delta::esp::image_digest(&base)), ..patch() };
        assert_eq!(check(&config, &base, &file, &summary(&target)), Ok(()));
        // Another target (the tag holds a patch to something else).
        let err = check(&config, &base, &file, &summary(b"another release")).unwrap_err();
        assert!(err.contains("does not apply") || err.contains("not 1.1.0"), "{err}");
        // A baseSha256 that is not the base's: devices would match a patch for another image.
        let lying = DeltaPatch { base_sha256: "ab".repeat(32), ..config.clone() };
        assert!(check(&lying, &base, &file, &summary(&target)).unwrap_err().contains("is not the base image's digest"));
        // Another base: the header names it.
        let other = updraft_delta::esp::patch(&target, &target);
        assert!(check(&config, &base, &other, &summary(&target)).unwrap_err().contains("another base"));
        // A damaged file.
        let mut damaged = file.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        damaged.truncate(last - 3);
        assert!(check(&config, &base, &damaged, &summary(&target)).is_err());
    }

    #[test]
    fn the_patch_job_is_its_artifacts_one_raw_layer() {
        let channel: ChannelConfig =
            serde_yaml::from_str("name: esp32\nsource: {registry: 127.0.0.1:5000, repository: fw/esp32}\n").unwrap();
        let p = Patch::new(&channel, &patch());
        assert_eq!(p.job.digest, OTHER);
        assert_eq!(p.job.artifact.media_type.as_deref(), Some(ESP_PATCH_MEDIA_TYPE));
        assert_eq!(p.job.artifact.unpack, updraft_core::config::Unpack::Raw);
        let patches = [Arc::new(p)];
        assert!(matching(&patches, TARGET, running("1.0.0", &"ab".repeat(32))).is_some());
        assert!(matching(&patches, TARGET, running("1.0.0", &"ab".repeat(31))).is_none());
    }
}
