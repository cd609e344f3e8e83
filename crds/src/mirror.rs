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
    printcolumn(name = "Latest", type_ = "string", json_path = ".status.latestVersion"),
    printcolumn(name = "In-Sync", type_ = "integer", json_path = ".status.inSync"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
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

/// What the operator observed at the destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactMirrorStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Artifacts present at the destination and identical to the source.
    #[serde(default)]
    pub in_sync: i32,
    /// Artifacts selected at the source but not yet at the destination.
    #[serde(default)]
    pub pending: i32,
    /// Artifacts whose last forwarding failed.
    #[serde(default)]
    pub failed: i32,
    /// Newest version present at the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<String>,
    /// When source and destination were last compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<Time>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn default_interval() -> String {
    "10m".into()
}
