//! Delta patches of a FirmwareChannel (`spec.delta`): which releases get a patch to
//! `latest` ([`choose_bases`], from the gateway's device census), and what the registry
//! holds for each ([`known_bases`] says what status already pinned, the resolver lists
//! and asks the rest, [`built`] reads a patch's manifest). `status.deltas` keeps one
//! entry per chosen base; the OtaGateway controller renders the entries without a patch
//! digest into `deltas.build` (the gateway's worker builds them and pushes the artifact
//! under [`updraft_core::delta::tag`]) and those with one into `deltas.patches`.
//!
//! Registry traffic: the tag list once per registry check, a HEAD for a base version
//! seen for the first time (its digest is kept in `status.deltas` afterwards, so status
//! is the cache and it survives a restart), and one manifest the first time a patch's
//! tag appears. Releases are taken to be immutable, as the resolver takes them.

use oci_client::manifest::OciImageManifest;
use updraft_core::delta;
use updraft_core::version::parse_tag;
use updraft_crds::{ChannelDelta, DeltaPolicy, DeviceCensus, FirmwareChannelStatus};

use crate::error::SpecError;

/// `spec.delta`, checked and with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Percent of the running devices a base must have (0-100).
    pub min_share: i64,
    /// Most bases (1-16).
    pub max_deltas: usize,
}

/// `spec.delta` checked: `None` without it, a [`SpecError`] naming the field out of range.
pub(crate) fn policy(spec: Option<&DeltaPolicy>) -> Result<Option<Policy>, SpecError> {
    let Some(spec) = spec else { return Ok(None) };
    let min_share = spec.min_share.unwrap_or(DeltaPolicy::DEFAULT_MIN_SHARE);
    if !(0..=100).contains(&min_share) {
        let message = format!("delta.minShare {min_share} is not a percentage (0-100)");
        return Err(SpecError::new("delta.minShare", message));
    }
    let max_deltas = spec.max_deltas.unwrap_or(DeltaPolicy::DEFAULT_MAX_DELTAS);
    if !(1..=DeltaPolicy::MAX_DELTAS).contains(&max_deltas) {
        let message = format!("delta.maxDeltas {max_deltas} is outside 1-{}", DeltaPolicy::MAX_DELTAS);
        return Err(SpecError::new("delta.maxDeltas", message));
    }
    Ok(Some(Policy { min_share: min_share.into(), max_deltas: max_deltas as usize }))
}

/// The versions that get a patch to `target`: those run by at least `min_share` percent
/// of the devices the census saw running a version, the most run first (the census's
/// order, newest first, between equals), at most `max_deltas`, never `target` itself.
/// Without running devices in the census (no census, or nobody reported yet), the
/// release before `target`: the one devices ran until it resolved.
pub(crate) fn choose_bases(
    census: Option<&DeviceCensus>,
    target: &str,
    previous: Option<&str>,
    policy: Policy,
) -> Vec<String> {
    let versions = census.map(|c| c.by_version.as_slice()).unwrap_or_default();
    let running: i64 = versions.iter().map(|v| v.running.max(0)).sum();
    if running == 0 {
        return previous.filter(|p| *p != target).map(|p| vec![p.to_owned()]).unwrap_or_default();
    }
    let mut chosen: Vec<_> = versions
        .iter()
        .filter(|v| v.version != target && v.running > 0 && v.running * 100 >= policy.min_share * running)
        .collect();
    chosen.sort_by_key(|v| std::cmp::Reverse(v.running));
    let mut bases: Vec<String> = Vec::new();
    for v in chosen {
        if bases.len() < policy.max_deltas && !bases.contains(&v.version) {
            bases.push(v.version.clone());
        }
    }
    bases
}

/// A base chosen for a patch, with its tag and digest when status already pinned them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Base {
    pub version: String,
    /// `(tag, manifest digest)` from `status.previous` or an earlier `status.deltas`
    /// entry; `None`: the resolver finds the tag in the list and asks its digest.
    pub pinned: Option<(String, String)>,
}

/// The chosen bases with what status already says of them (so a base is asked of the
/// registry once, not at every check).
pub(crate) fn known_bases(versions: Vec<String>, status: &FirmwareChannelStatus) -> Vec<Base> {
    versions
        .into_iter()
        .map(|version| {
            let from_entry =
                status.deltas.iter().find(|d| d.from == version).map(|d| (d.from_tag.clone(), d.from_digest.clone()));
            let from_previous = || {
                let p = status.previous.as_ref().filter(|p| p.version == version)?;
                Some((p.tag.clone(), p.digest.clone()))
            };
            let pinned = from_entry.or_else(from_previous);
            Base { version, pinned }
        })
        .collect()
}

/// The listed tag that spells `version` (`1.2.0` or, with `allow_v_prefix`, `v1.2.0`;
/// a version that is not semver only as itself); the first in sorted order when both are.
pub(crate) fn base_tag<'a>(tags: &'a [String], version: &str, allow_v_prefix: bool) -> Option<&'a str> {
    let wanted = parse_tag(version, true);
    let mut matching: Vec<&str> = tags
        .iter()
        .map(String::as_str)
        .filter(|t| !delta::is_delta_tag(t))
        .filter(|t| match &wanted {
            Some(v) => parse_tag(t, allow_v_prefix).as_ref() == Some(v),
            None => *t == version,
        })
        .collect();
    matching.sort_unstable();
    matching.first().copied()
}

/// The entry of a patch from `entry`'s base to its target once its artifact's manifest
/// (at `digest`) is read: the annotations must name both releases' digests (the pair
/// the tag was computed from) and the base image's SHA-256; otherwise why not.
pub(crate) fn built(entry: &ChannelDelta, manifest: &OciImageManifest, digest: &str) -> Result<ChannelDelta, String> {
    let annotations = manifest.annotations.clone().unwrap_or_default();
    let annotation = |key: &str| annotations.get(key).map(String::as_str);
    if let Some(kind) = manifest.artifact_type.as_deref().filter(|k| *k != delta::ESP_ARTIFACT_TYPE) {
        return Err(format!("artifactType {kind:?} is not {:?}", delta::ESP_ARTIFACT_TYPE));
    }
    for (key, want) in
        [(delta::ANNOTATION_BASE_DIGEST, &entry.from_digest), (delta::ANNOTATION_TARGET_DIGEST, &entry.to_digest)]
    {
        if annotation(key) != Some(want.as_str()) {
            return Err(format!("annotation {key} is {:?}, not {want}", annotation(key).unwrap_or_default()));
        }
    }
    let base_sha256 = annotation(delta::ANNOTATION_BASE_SHA256)
        .filter(|s| updraft_core::oci::is_sha256_hex(s))
        .ok_or_else(|| format!("annotation {} is not 64 lowercase hex digits", delta::ANNOTATION_BASE_SHA256))?;
    let patch = manifest.layers.iter().find(|l| l.media_type == delta::ESP_PATCH_MEDIA_TYPE);
    let patch = patch.ok_or_else(|| format!("no layer of media type {}", delta::ESP_PATCH_MEDIA_TYPE))?;
    Ok(ChannelDelta {
        digest: Some(digest.to_owned()),
        base_sha256: Some(base_sha256.to_owned()),
        size: Some(patch.size),
        ..entry.clone()
    })
}

/// A note for each patch built in `new` that `old` did not show built: what the
/// `DeltaBuilt` event says.
pub(crate) fn newly_built(old: &[ChannelDelta], new: &[ChannelDelta]) -> Vec<String> {
    new.iter()
        .filter(|d| d.digest.is_some() && !old.iter().any(|o| o.tag == d.tag && o.digest == d.digest))
        .map(|d| {
            let size = d.size.map(|s| format!(", {s} bytes")).unwrap_or_default();
            format!("delta {} -> {} found: {} ({}{size})", d.from, d.to, d.tag, d.digest.as_deref().unwrap_or_default())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use oci_client::manifest::OciDescriptor;
    use updraft_crds::VersionDevices;

    use super::*;
    use crate::fixtures::{resolved, DIGEST_A, DIGEST_B};

    const DEFAULT: Policy = Policy { min_share: 5, max_deltas: 3 };

    fn census(running: &[(&str, i64)]) -> DeviceCensus {
        DeviceCensus {
            window: "24h".into(),
            total: running.iter().map(|r| r.1).sum(),
            by_version: running
                .iter()
                .map(|(version, running)| VersionDevices {
                    version: (*version).into(),
                    running: *running,
                    ..Default::default()
                })
                .collect(),
            replicas: 1,
            observed_at: updraft_crds::conditions::now(),
        }
    }

    #[test]
    fn the_bases_are_the_versions_most_run_above_the_share() {
        // 200 running: 1.1.0 (the target) 100, 1.0.0 60, 0.9.0 30, 0.8.0 10 (5 %), 0.7.0 0.
        let c = census(&[("1.1.0", 100), ("1.0.0", 30), ("0.9.0", 60), ("0.8.0", 10), ("0.7.0", 0)]);
        assert_eq!(choose_bases(Some(&c), "1.1.0", Some("1.0.0"), DEFAULT), ["0.9.0", "1.0.0", "0.8.0"]);
        // The edge: 10 of 200 is exactly 5 %, in; at 6 % it is out.
        let strict = Policy { min_share: 6, ..DEFAULT };
        assert_eq!(choose_bases(Some(&c), "1.1.0", None, strict), ["0.9.0", "1.0.0"]);
        // At most maxDeltas, the most run kept.
        let one = Policy { max_deltas: 1, ..DEFAULT };
        assert_eq!(choose_bases(Some(&c), "1.1.0", None, one), ["0.9.0"]);
        // minShare 0 takes every version someone runs, never one nobody runs.
        let all = Policy { min_share: 0, max_deltas: 16 };
        assert_eq!(choose_bases(Some(&c), "1.1.0", None, all), ["0.9.0", "1.0.0", "0.8.0"]);
        // Equal shares keep the census's order (newest first).
        let tie = census(&[("1.0.0", 5), ("0.9.0", 5)]);
        assert_eq!(choose_bases(Some(&tie), "1.1.0", None, DEFAULT), ["1.0.0", "0.9.0"]);
    }

    #[test]
    fn the_target_is_never_a_base() {
        let c = census(&[("1.1.0", 95), ("1.0.0", 5)]);
        assert_eq!(choose_bases(Some(&c), "1.1.0", Some("1.0.0"), DEFAULT), ["1.0.0"]);
        let everyone_updated = census(&[("1.1.0", 100)]);
        assert!(choose_bases(Some(&everyone_updated), "1.1.0", Some("1.0.0"), DEFAULT).is_empty());
        assert!(choose_bases(None, "1.1.0", Some("1.1.0"), DEFAULT).is_empty(), "a pin back to itself");
    }

    #[test]
    fn without_running_devices_the_base_is_the_previous_release() {
        assert_eq!(choose_bases(None, "1.1.0", Some("1.0.0"), DEFAULT), ["1.0.0"]);
        let nobody_reported = census(&[("1.1.0", 0), ("0.9.0", 0)]);
        assert_eq!(choose_bases(Some(&nobody_reported), "1.1.0", Some("1.0.0"), DEFAULT), ["1.0.0"]);
        assert!(choose_bases(None, "1.0.0", None, DEFAULT).is_empty(), "a first release has no base");
    }

    #[test]
    fn the_policy_has_defaults_and_names_the_field_out_of_range() {
        assert_eq!(policy(None).unwrap(), None);
        assert_eq!(policy(Some(&DeltaPolicy::default())).unwrap(), Some(DEFAULT));
        let spec = |min_share, max_deltas| DeltaPolicy { min_share, max_deltas };
        assert_eq!(policy(Some(&spec(Some(0), Some(16)))).unwrap(), Some(Policy { min_share: 0, max_deltas: 16 }));
        assert_eq!(policy(Some(&spec(Some(101), None))).unwrap_err().field, "delta.minShare");
        assert_eq!(policy(Some(&spec(Some(-1), None))).unwrap_err().field, "delta.minShare");
        assert_eq!(policy(Some(&spec(None, Some(0)))).unwrap_err().field, "delta.maxDeltas");
        assert_eq!(policy(Some(&spec(None, Some(17)))).unwrap_err().field, "delta.maxDeltas");
    }

    #[test]
    fn a_base_is_pinned_from_status_or_found_by_its_tag() {
        let mut status = FirmwareChannelStatus {
            latest: Some(resolved("1.1.0", DIGEST_B)),
            previous: Some(resolved("1.0.0", DIGEST_A)),
            ..Default::default()
        };
        status.deltas.push(ChannelDelta {
            from: "0.9.0".into(),
            from_tag: "v0.9.0".into(),
            from_digest: DIGEST_B.into(),
            ..Default::default()
        });
        let bases = known_bases(vec!["1.0.0".into(), "0.9.0".into(), "0.8.0".into()], &status);
        let pinned: Vec<_> = bases.iter().map(|b| b.pinned.as_ref().map(|p| p.1.as_str())).collect();
        assert_eq!(pinned, [Some(DIGEST_A), Some(DIGEST_B), None]);

        let tags: Vec<String> = ["v0.8.0", "0.8.0", "v0.9.0", "nightly", "delta-0123-4567"].map(Into::into).to_vec();
        assert_eq!(base_tag(&tags, "0.8.0", true), Some("0.8.0"));
        assert_eq!(base_tag(&tags, "0.8.0", false), Some("0.8.0"));
        assert_eq!(base_tag(&tags, "0.9.0", true), Some("v0.9.0"));
        assert_eq!(base_tag(&tags, "0.9.0", false), None, "v0.9.0 is no version without the v prefix");
        assert_eq!(base_tag(&tags, "nightly", true), Some("nightly"));
        assert_eq!(base_tag(&tags, "0.7.0", true), None, "not in the registry");
    }

    #[test]
    fn a_patch_is_taken_only_when_its_annotations_name_the_pair() {
        let entry = ChannelDelta {
            from: "1.0.0".into(),
            from_tag: "v1.0.0".into(),
            from_digest: DIGEST_A.into(),
            to: "1.1.0".into(),
            to_digest: DIGEST_B.into(),
            tag: delta::tag(DIGEST_A, DIGEST_B),
            ..Default::default()
        };
        let sha = "ab".repeat(32);
        let manifest = |base: &str, target: &str, sha: &str| OciImageManifest {
            artifact_type: Some(delta::ESP_ARTIFACT_TYPE.into()),
            layers: vec![OciDescriptor {
                media_type: delta::ESP_PATCH_MEDIA_TYPE.into(),
                size: 1234,
                ..Default::default()
            }],
            annotations: Some(BTreeMap::from([
                (delta::ANNOTATION_BASE_DIGEST.to_owned(), base.to_owned()),
                (delta::ANNOTATION_TARGET_DIGEST.to_owned(), target.to_owned()),
                (delta::ANNOTATION_BASE_SHA256.to_owned(), sha.to_owned()),
            ])),
            ..Default::default()
        };
        let patch_digest = format!("sha256:{}", "cd".repeat(32));
        let found = built(&entry, &manifest(DIGEST_A, DIGEST_B, &sha), &patch_digest).unwrap();
        assert_eq!(found.digest.as_deref(), Some(patch_digest.as_str()));
        assert_eq!(found.base_sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(found.size, Some(1234));
        assert_eq!(ChannelDelta { digest: None, base_sha256: None, size: None, ..found.clone() }, entry);

        let notes = newly_built(std::slice::from_ref(&entry), std::slice::from_ref(&found));
        assert_eq!(notes, [format!("delta 1.0.0 -> 1.1.0 found: {} ({patch_digest}, 1234 bytes)", entry.tag)]);
        assert!(newly_built(std::slice::from_ref(&found), std::slice::from_ref(&found)).is_empty());

        let why = built(&entry, &manifest(DIGEST_B, DIGEST_B, &sha), &patch_digest).unwrap_err();
        assert!(why.contains(delta::ANNOTATION_BASE_DIGEST), "{why}");
        let why = built(&entry, &manifest(DIGEST_A, DIGEST_A, &sha), &patch_digest).unwrap_err();
        assert!(why.contains(delta::ANNOTATION_TARGET_DIGEST), "{why}");
        let why = built(&entry, &manifest(DIGEST_A, DIGEST_B, "nope"), &patch_digest).unwrap_err();
        assert!(why.contains(delta::ANNOTATION_BASE_SHA256), "{why}");
        let mut other = manifest(DIGEST_A, DIGEST_B, &sha);
        other.artifact_type = Some("application/vnd.example".into());
        assert!(built(&entry, &other, &patch_digest).unwrap_err().contains("artifactType"));
    }
}
