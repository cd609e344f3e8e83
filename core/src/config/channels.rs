//! Firmware channels: one line of firmware for one device type, pinned by digest (what
//! the operator renders) or resolved from a version policy (standalone), and the
//! rollout and downgrade rules the check API applies to it.

use serde::{Deserialize, Serialize};

use super::{is_digest, ArtifactConfig, ConfigError, GatewayConfig, SourceConfig, Unpack};
use crate::version::VersionPolicy;

/// One line of firmware for one device type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelConfig {
    /// Unique name; addresses the channel at `/api/v1/channels/{name}`.
    pub name: String,
    /// Device id of the OtaFlux API (`/version?device=ID`). Defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub source: SourceConfig,
    #[serde(default)]
    pub artifact: ArtifactConfig,
    /// The artifact devices get, pinned by digest (what the operator renders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<PinnedArtifact>,
    /// The artifact before `current`: devices outside the rollout keep getting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PinnedArtifact>,
    /// Standalone mode: resolve `current` from the registry's tags on an interval.
    /// Exactly one of `current` and `policy` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<VersionPolicy>,
    /// Share of devices (by a stable hash of their unique id) that get `current`;
    /// the others get `previous`. 0–100, default 100.
    #[serde(default = "default_rollout")]
    pub rollout: u8,
    /// The highest version this channel has ever served (the operator's high-water mark):
    /// a device running a version up to it but newer than what it should run now was
    /// served that version before the channel was pinned back, so the check API offers
    /// it the downgrade. Versions above it are development builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_served: Option<String>,
    /// When the check API offers a device a version older than the one it runs.
    /// Default `pinnedBack` (omitted while default).
    #[serde(default, skip_serializing_if = "Downgrade::is_default")]
    pub downgrade: Downgrade,
    /// Delta patches (esp_delta_ota) to this channel's releases: which the worker builds
    /// and which gateways serve (see [`crate::delta`] for how they are stored).
    #[serde(default, skip_serializing_if = "Deltas::is_empty")]
    pub deltas: Deltas,
}

/// A channel's delta patches. The operator chooses the bases from the census and finds
/// the patches built in the registry; a hand-written config may list either.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deltas {
    /// Releases devices run that should get a patch to `current`. The mirror worker
    /// builds each (base, current) pair once and pushes it to the channel's repository,
    /// unless the registry already holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build: Vec<PinnedArtifact>,
    /// Patches built, pinned by their artifact's manifest digest: gateways serve each to
    /// devices that report running `base` with the image digest `baseSha256` when they
    /// are offered the release `target`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<DeltaPatch>,
}

impl Deltas {
    pub fn is_empty(&self) -> bool {
        self.build.is_empty() && self.patches.is_empty()
    }
}

/// One patch built from `base` to `target`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeltaPatch {
    /// The release the patch applies to.
    pub base: PinnedArtifact,
    /// What a device running `base` reports as its image's SHA-256 (64 hex): the
    /// `esp_delta_ota` header's digest. A device reporting anything else gets the full
    /// image.
    pub base_sha256: String,
    /// The release the patch produces.
    pub target: PinnedArtifact,
    /// The patch artifact's manifest digest, `sha256:…`.
    pub digest: String,
}

/// When `POST /api/v1/channels/{name}/check` answers a device running a newer version
/// than the one it should run with that older release (`"downgrade": true`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Downgrade {
    /// Never: a device running anything newer is up to date (204).
    Never,
    /// Only to devices running a version the channel has served (up to `highestServed`,
    /// or the current and previous releases): a channel pinned back reaches them, a
    /// development build newer than anything served does not.
    #[default]
    PinnedBack,
    /// Every device running another version gets the one it should run.
    Always,
}

impl Downgrade {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl ChannelConfig {
    /// `rollout` when left out: every device gets `current`.
    pub(crate) const DEFAULT_ROLLOUT: u8 = 100;

    pub fn device_id(&self) -> &str {
        self.device.as_deref().unwrap_or(&self.name)
    }
}

fn default_rollout() -> u8 {
    ChannelConfig::DEFAULT_ROLLOUT
}

/// One resolved artifact: what status says is what devices get.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinnedArtifact {
    /// Version without the `v` prefix, e.g. `1.4.2`.
    pub version: String,
    /// The tag it was resolved from, e.g. `v1.4.2`.
    pub tag: String,
    /// Manifest digest, `sha256:…`.
    pub digest: String,
}

impl GatewayConfig {
    /// Unique names and devices, one of current/policy, digests, rollout range, tar path.
    pub(super) fn validate_channels(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut names = std::collections::HashSet::new();
        let mut devices = std::collections::HashSet::new();
        for c in &self.channels {
            if c.name.is_empty() || c.name.contains('/') {
                return invalid(format!("channel name {:?} must be non-empty and contain no '/'", c.name));
            }
            if !names.insert(c.name.as_str()) {
                return invalid(format!("channel name {:?} appears twice", c.name));
            }
            if !devices.insert(c.device_id()) {
                return invalid(format!("device {:?} is served by two channels", c.device_id()));
            }
            match (&c.current, &c.policy) {
                (Some(_), Some(_)) => {
                    return invalid(format!("channel {:?}: set either current or policy, not both", c.name))
                }
                (None, None) => {
                    return invalid(format!(
                        "channel {:?}: needs current (pinned) or policy (resolve from tags)",
                        c.name
                    ))
                }
                _ => {}
            }
            let patches = c.deltas.patches.iter();
            let pinned_deltas = c.deltas.build.iter().chain(patches.clone().flat_map(|p| [&p.base, &p.target]));
            for pinned in c.current.iter().chain(&c.previous).chain(pinned_deltas) {
                if !is_digest(&pinned.digest) {
                    return invalid(format!("channel {:?}: digest {:?} is not sha256:<64 hex>", c.name, pinned.digest));
                }
            }
            for p in patches {
                if !is_digest(&p.digest) {
                    return invalid(format!(
                        "channel {:?}: delta digest {:?} is not sha256:<64 hex>",
                        c.name, p.digest
                    ));
                }
                if !super::is_sha256_hex(&p.base_sha256) {
                    return invalid(format!(
                        "channel {:?}: delta baseSha256 {:?} is not 64 hex digits",
                        c.name, p.base_sha256
                    ));
                }
            }
            if let Some(policy) = &c.policy {
                policy.validate().map_err(|e| ConfigError::Invalid(format!("channel {:?}: {e}", c.name)))?;
            }
            if c.rollout > 100 {
                return invalid(format!("channel {:?}: rollout {} is over 100", c.name, c.rollout));
            }
            if c.artifact.unpack == Unpack::Tar && c.artifact.path.is_none() {
                return invalid(format!("channel {:?}: unpack tar needs artifact.path", c.name));
            }
        }
        Ok(())
    }
}
