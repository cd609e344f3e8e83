//! Delta patches as OCI artifacts: the one layout the building worker writes, the
//! operator finds and the gateway serves.
//!
//! A patch from the release `base` to the release `target` of a firmware channel lives in
//! the channel's own repository as one OCI artifact:
//!
//! - tagged [`tag`]`(base, target)` (`delta-<16 hex of base>-<16 hex of target>`, which no
//!   version policy takes for a version), so a registry without the referrers API finds
//!   it too;
//! - its manifest's `subject` is the target's manifest, its `artifactType`
//!   [`ESP_ARTIFACT_TYPE`], its config the empty descriptor, and its one layer of
//!   [`ESP_PATCH_MEDIA_TYPE`] the patch file: the 64-byte `esp_delta_ota` header, then a
//!   detools sequential patch compressed with heatshrink (window 2^8, lookahead 2^7);
//! - its annotations (the `ANNOTATION_*` keys) name both releases and the base's image
//!   digest, so the operator renders it into a gateway's config from metadata alone.

/// `artifactType` of an esp_delta_ota patch artifact.
pub const ESP_ARTIFACT_TYPE: &str = "application/vnd.updraft.delta.esp.v1";
/// Media type of the patch layer.
pub const ESP_PATCH_MEDIA_TYPE: &str = "application/vnd.updraft.delta.esp.patch.v1";

/// The base release's version.
pub const ANNOTATION_BASE_VERSION: &str = "dev.updraft.delta.base.version";
/// The base release's manifest digest (`sha256:…`).
pub const ANNOTATION_BASE_DIGEST: &str = "dev.updraft.delta.base.digest";
/// What a device running the base reports as its image's SHA-256 (64 hex): the
/// `esp_delta_ota` header's digest (see `updraft_delta::esp::image_digest`).
pub const ANNOTATION_BASE_SHA256: &str = "dev.updraft.delta.base.sha256";
/// The target release's version.
pub const ANNOTATION_TARGET_VERSION: &str = "dev.updraft.delta.target.version";
/// The target release's manifest digest (`sha256:…`), also the manifest's `subject`.
pub const ANNOTATION_TARGET_DIGEST: &str = "dev.updraft.delta.target.digest";
/// SHA-256 (64 hex) of the target payload the patch produces.
pub const ANNOTATION_TARGET_SHA256: &str = "dev.updraft.delta.target.sha256";

/// Prefix of every delta tag.
pub const TAG_PREFIX: &str = "delta-";

/// The tag of the patch from the release with manifest digest `base` to the one with
/// `target` (both `sha256:<64 hex>`): 16 hex digits of each.
pub fn tag(base: &str, target: &str) -> String {
    let short = |d: &str| d.trim_start_matches("sha256:").chars().take(16).collect::<String>();
    format!("{TAG_PREFIX}{}-{}", short(base), short(target))
}

/// Whether `tag` is a delta tag (never a release).
pub fn is_delta_tag(tag: &str) -> bool {
    tag.starts_with(TAG_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_names_both_releases_and_is_a_valid_oci_tag() {
        let (b, t) = (format!("sha256:{}", "ab".repeat(32)), format!("sha256:{}", "cd".repeat(32)));
        let tag = tag(&b, &t);
        assert_eq!(tag, "delta-abababababababab-cdcdcdcdcdcdcdcd");
        assert!(is_delta_tag(&tag));
        assert!(tag.len() <= 128 && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert!(crate::version::parse_tag(&tag, true).is_none());
    }
}
