//! FirmwareChannel: a line of firmware for one device type from one OCI repository.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{default_gateway, OciSource, Verification};

/// A line of firmware for one device type, resolved from the tags of one OCI repository
/// and served by an OtaGateway.
// kube's `printcolumn(...)` entries repeat the same keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "updraft.dev",
    version = "v1alpha1",
    kind = "FirmwareChannel",
    namespaced,
    status = "FirmwareChannelStatus",
    shortname = "fwc",
    category = "updraft",
    doc = "A line of firmware for one device type, resolved from an OCI repository's tags and served by an OtaGateway.",
    printcolumn(name = "Device", type_ = "string", json_path = ".spec.device", priority = 1),
    printcolumn(name = "Latest", type_ = "string", json_path = ".status.latest.version"),
    printcolumn(name = "Previous", type_ = "string", json_path = ".status.previous.version", priority = 1),
    printcolumn(name = "Rollout", type_ = "integer", json_path = ".status.rollout.percentage"),
    printcolumn(name = "Step", type_ = "integer", json_path = ".status.rollout.step", priority = 1),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"RolloutPaused\")].status"
    ),
    printcolumn(name = "Devices", type_ = "integer", json_path = ".status.devices.total", priority = 1),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".spec.gatewayRef", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareChannelSpec {
    /// Name of the OtaGateway (same namespace) that serves this channel. Default `default`.
    #[serde(default = "default_gateway")]
    pub gateway_ref: String,
    /// Device id devices send as `/version?device=ID` (OtaFlux API). Default: the
    /// channel's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The OCI repository whose tags are the firmware versions.
    pub source: OciSource,
    /// Which tag is the latest firmware.
    #[serde(default)]
    pub version: VersionPolicy,
    /// Which layer of the artifact holds the binary and how to unpack it.
    #[serde(default)]
    pub artifact: ArtifactSelector,
    /// Staged rollout of a new version.
    #[serde(default)]
    pub rollout: Rollout,
    /// Pin only releases whose signature verifies; others are refused (`Verified=False`)
    /// and the release before keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verification>,
    /// How often the registry is checked for new tags, e.g. `30s`, `5m`, `1h`. Default `5m`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Stop checking the registry; devices keep getting what status says.
    #[serde(default)]
    pub suspend: bool,
    /// When the check API (`POST .../check`) offers a device running a newer version
    /// the older one it should run: `PinnedBack` (default) only to devices running a
    /// version this channel served (up to `status.highestServed`), so a pin back reaches
    /// them and development builds are left alone; `Never`; or `Always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade: Option<Downgrade>,
    /// Delta updates (esp_delta_ota patches) to `latest` from the versions the fleet
    /// runs. Absent: no deltas. Present, even empty (`delta: {}`): the operator picks
    /// the bases from the device census (each version at least `minShare` percent of
    /// the channel's running devices run, at most `maxDeltas`; without a census,
    /// `previous`), the gateway builds each patch once and serves it to devices that
    /// report running its base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaPolicy>,
}

/// Which versions get a delta patch to `latest`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeltaPolicy {
    /// Least share, in percent (0-100) of the channel's devices reporting a running
    /// version in the census window, that a version must have to get a patch. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_share: Option<i32>,
    /// Most base versions (1-16) that get a patch to each release, the most run first.
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub max_deltas: Option<i32>,
}

impl DeltaPolicy {
    /// `minShare` when left out.
    pub const DEFAULT_MIN_SHARE: i32 = 5;
    /// `maxDeltas` when left out.
    pub const DEFAULT_MAX_DELTAS: i32 = 3;
    /// The highest `maxDeltas`.
    pub const MAX_DELTAS: i32 = 16;
}

/// When the check API offers a device an older version than the one it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Downgrade {
    /// A device running a newer version is up to date.
    Never,
    /// Only devices running a version the channel has served get the older one.
    #[default]
    PinnedBack,
    /// Every device running another version gets the one it should run.
    Always,
}

/// Which tag of the repository is the latest firmware.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionPolicy {
    /// Semver range the version must satisfy, e.g. `>=1.2.0, <2` or `^1.4`
    /// (npm-style space-separated comparators are accepted too). Default `*`.
    #[serde(default = "default_range")]
    pub range: String,
    /// Allow pre-release versions such as `1.3.0-rc.1`. Default false.
    #[serde(default)]
    pub prerelease: bool,
    /// Accept tags written with a `v` prefix (`v1.2.3`). Default true.
    #[serde(default = "default_true")]
    pub allow_v_prefix: bool,
    /// Pin to one tag (`v1.2.3`) or manifest digest (`sha256:…`); wins over `range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        Self { range: default_range(), prerelease: false, allow_v_prefix: true, pin: None }
    }
}

/// Which layer holds the binary and how to unpack it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSelector {
    /// Media type of the layer holding the firmware. Default: the artifact's single layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// How the layer's bytes become the firmware binary. Default `raw`.
    #[serde(default)]
    pub unpack: Unpack,
    /// With `unpack: tar`, the path of the binary inside the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For an image index, the `os/arch[/variant]` of the manifest to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// How a layer becomes the binary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Unpack {
    /// The layer is the binary.
    #[default]
    Raw,
    /// gzip-compressed binary.
    Gzip,
    /// zstd-compressed binary.
    Zstd,
    /// A tar archive (optionally gzip or zstd compressed); `path` names the binary.
    Tar,
}

/// Staged rollout of the latest version: a fixed `percentage`, or `steps` the operator
/// raises by itself while devices that downloaded the new version report running it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Percentage of devices (by a stable hash of their unique id) that get `latest`;
    /// the others, and devices without an id until 100, get `previous`. Default 100;
    /// leave unset with `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage: Option<i32>,
    /// Shares of devices that get a new `latest`, step by step, e.g. `[5, 25, 50, 100]`:
    /// rising, each 1-100, the last 100. The first applies when a new version resolves;
    /// each next one after `dwell`, once at least `successThreshold` percent of the
    /// devices that downloaded the new version report running it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<i32>,
    /// How long each step lasts at least, e.g. `30m`, `1h`. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell: Option<String>,
    /// How long a step may wait for its devices to report the new version before the
    /// rollout pauses (`RolloutPaused`). Default `24h`; at least `dwell`. A pause holds
    /// until the spec changes: the step is then judged again under the new spec over
    /// the same figures (a lower threshold they meet advances, a longer timeout waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Percentage of the devices that downloaded the new version during the step that
    /// must report running it for the step to pass (1-100). Default 95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: Option<i32>,
    /// Fewest devices that must have downloaded the new version during a step before it
    /// is judged; fewer by `timeout` pause the rollout. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_devices: Option<i64>,
}

/// Where the rollout of `latest` stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The version being rolled out (`latest`).
    pub version: String,
    /// Share of devices (by id) that get it now.
    pub percentage: i32,
    /// With `spec.rollout.steps`: the step reached, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i32>,
    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started: Option<Time>,
    /// Unique devices (census estimate) that downloaded `version` since the step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloaded: Option<i64>,
    /// Unique devices (census estimate) that reported running `version` since the step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<i64>,
    /// `running` as a percentage of `downloaded` (at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption: Option<i32>,
    /// The rollout stopped at its step until the spec changes (see the `RolloutPaused`
    /// condition for why).
    #[serde(default)]
    pub paused: bool,
    /// Every device gets `version` and the last step passed (or it went to 100 at once:
    /// a first release, or a version lower than the one before); nothing more to judge.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete: bool,
    /// The `metadata.generation` the pause was decided at; a later edit resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_generation: Option<i64>,
}

/// Unique devices seen by the channel's gateway replicas (a mergeable estimate; no
/// device id is stored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCensus {
    /// The window the figures cover, e.g. `24h` (the last 24 hours).
    pub window: String,
    /// Unique devices that asked for, downloaded or reported a version in the window.
    pub total: i64,
    /// The figures of each version, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_version: Vec<VersionDevices>,
    /// Gateway replicas whose figures were merged.
    pub replicas: i32,
    /// When the figures were gathered.
    pub observed_at: Time,
}

/// Unique devices of one version in the census window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionDevices {
    /// The firmware version.
    pub version: String,
    /// Devices offered it (`/version`, the channel API, the check API).
    pub offered: i64,
    /// Devices that downloaded it.
    pub downloaded: i64,
    /// Devices that reported running it (`current=` on the OtaFlux routes, the check API).
    pub running: i64,
}

/// What the operator resolved for the channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareChannelStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The version devices in the rollout get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<ResolvedVersion>,
    /// The version before `latest`; devices outside the rollout keep getting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ResolvedVersion>,
    /// The highest version the channel has ever resolved (a high-water mark that a
    /// pin back does not lower): devices running up to it were served it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_served: Option<String>,
    /// Where the rollout of `latest` stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Unique devices per version, merged from every gateway replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceCensus>,
    /// URL devices use to check for this channel's firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `spec.delta`: one entry per base version chosen for a patch to `latest`, the
    /// most run first; `digest` is set once the patch is built (found in the registry),
    /// absent while the gateway has yet to build it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<ChannelDelta>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus), `Verified`, `RegistryReachable`
    /// and `RolloutPaused`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One resolved firmware version, pinned by digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedVersion {
    /// Semantic version without the `v` prefix.
    pub version: String,
    /// The tag it was resolved from.
    pub tag: String,
    /// Manifest digest devices get, `sha256:…`.
    pub digest: String,
    /// Size in bytes of the selected layer as the registry reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// When the operator first resolved this version.
    pub resolved_at: Time,
}

/// A delta patch from a base release to `latest`, built or to be built.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDelta {
    /// The base version (what devices run).
    pub from: String,
    /// The base's tag.
    pub from_tag: String,
    /// The base's manifest digest, `sha256:…`.
    pub from_digest: String,
    /// The target version (`latest` when the registry was checked).
    pub to: String,
    /// The target's manifest digest, `sha256:…`.
    pub to_digest: String,
    /// The patch artifact's tag in the channel's repository (`delta-<base>-<target>`).
    pub tag: String,
    /// The patch artifact's manifest digest, `sha256:…`; absent until it is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// SHA-256 (64 hex) of the base image, as devices running it report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sha256: Option<String>,
    /// Size in bytes of the patch, as its manifest reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

fn default_range() -> String {
    "*".into()
}
fn default_true() -> bool {
    true
}
fn default_interval() -> String {
    "5m".into()
}
