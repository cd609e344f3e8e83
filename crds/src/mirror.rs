//! ArtifactMirror: forward release artifacts from a source to a destination.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{default_gateway, HttpStore, OciSource};

/// Forwards release artifacts (e.g. LAN to WAN) from a source to a destination, with
/// include/exclude rules and retention. Status reports what the operator observed at
/// the destination.
// kube's `printcolumn(...)` entries repeat the same keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "updraft.dev",
    version = "v1alpha1",
    kind = "ArtifactMirror",
    namespaced,
    status = "ArtifactMirrorStatus",
    shortname = "amir",
    category = "updraft",
    doc = "Forwards release artifacts from a source to a destination, with include/exclude rules and retention.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "In-Sync", type_ = "integer", json_path = ".status.inSync"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(name = "Latest", type_ = "string", json_path = ".status.latestVersion"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactMirrorSpec {
    /// Name of the OtaGateway (same namespace) that does the forwarding. Default `default`.
    #[serde(default = "default_gateway")]
    pub gateway_ref: String,
    /// Where artifacts are read from.
    pub source: Endpoint,
    /// Where artifacts are written to.
    pub destination: Endpoint,
    /// Glob patterns of artifact names (tags or file names) to forward. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Glob patterns of artifact names never to forward; wins over `include`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// How versions (and products) are read from names, and which versions to forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionFilter>,
    /// What to keep at the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// How often source and destination are compared, e.g. `10m`. Default `10m`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Stop forwarding; nothing is copied or deleted.
    #[serde(default)]
    pub suspend: bool,
    /// Compare and report what would be copied and deleted, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// An artifact location: set exactly one of `oci` and `http`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// An OCI repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
    /// An HTTP artifact store (filuxe-compatible, e.g. another gateway's store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStore>,
}

/// How a name yields a version and a group (product), as filuxe's `version` and
/// `group` regexes do, and which versions are forwarded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionFilter {
    /// Regex whose first capture group is the version (filuxe's `version`), e.g.
    /// `:(\d+\.\d+\.\d+):`. Default: the first `MAJOR.MINOR.PATCH[-pre]` in the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Regexes tried in order; the captures of the first that matches (from the start of
    /// the file name), joined by `:`, name the group (filuxe's `group`), which `keepLast`
    /// counts in. Default: the name with its version cut out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Semver range the version must satisfy, e.g. `>=1.2, <2`. Names without a version
    /// are not forwarded when a range is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Whether pre-releases satisfy the range.
    #[serde(default)]
    pub prerelease: bool,
}

/// Retention at the destination. When both are set, an artifact is kept if either keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N artifacts by version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_last: Option<i32>,
    /// Keep artifacts younger than this, e.g. `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// What the operator observed of source and destination (metadata only), compared
/// under the mirror's rules: what the worker's next pass does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactMirrorStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Selected artifacts present at the destination and identical to the source.
    #[serde(default)]
    pub in_sync: i32,
    /// Copies and deletions still to do.
    #[serde(default)]
    pub pending: i32,
    /// Unused: the operator never sets it (the worker's per-copy failures are in its
    /// `/mirrors` and `updraft_mirror_failed`). Kept in the schema so that a status
    /// written by an older operator still validates; to be removed in v1alpha2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    /// The time of the oldest pending item: its file time at the source (or, for a
    /// deletion, at the destination) when the side gives one, else when the operator
    /// first saw it pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending: Option<Time>,
    /// Since when something has been pending without a break; `Ready` turns `False`
    /// (reason `Behind`) two intervals after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<Time>,
    /// Newest version the destination keeps (per the version filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<String>,
    /// When the destination last caught up with the source: the first pass that found
    /// nothing pending after something was (kept while it stays in sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<Time>,
    /// What the next pass copies and deletes; set while `spec.dryRun` (where nothing is
    /// ever copied or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<MirrorPlan>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A dry run's plan: names capped at a few dozen, with the totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorPlan {
    /// Names that would be copied to the destination (the first ones, sorted).
    #[serde(default)]
    pub copy: Vec<String>,
    /// Names that would be deleted at the destination (the first ones, sorted).
    #[serde(default)]
    pub delete: Vec<String>,
    /// How many would be copied in all.
    #[serde(default)]
    pub copy_total: i32,
    /// How many would be deleted in all.
    #[serde(default)]
    pub delete_total: i32,
}

fn default_interval() -> String {
    "10m".into()
}
