//! ImageStream: a simplestreams index (LXD and Incus) served by a gateway.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{default_gateway, OciSource, Verification};

/// A simplestreams image server (for `lxc` and `incus`) built from images held as OCI
/// artifacts, from uploads, or mirrored from an upstream simplestreams server.
// kube's `printcolumn(...)` entries repeat the same keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "updraft.dev",
    version = "v1alpha1",
    kind = "ImageStream",
    namespaced,
    status = "ImageStreamStatus",
    shortname = "imgs",
    category = "updraft",
    doc = "A simplestreams index for LXD and Incus, served by an OtaGateway.",
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Products", type_ = "integer", json_path = ".status.products"),
    printcolumn(name = "Versions", type_ = "integer", json_path = ".status.versions"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamSpec {
    /// Name of the OtaGateway (same namespace) that serves this stream. Default `default`.
    #[serde(default = "default_gateway")]
    pub gateway_ref: String,
    /// Where the images come from. Set exactly one of `oci`, `upload` and `upstream`.
    pub source: ImageSource,
    /// For an `upstream` source: only products whose properties match every filter,
    /// `key=value` with key `os`, `release`, `arch` or `variant`, e.g. `os=debian`,
    /// `arch=amd64`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// Keep this many newest versions of each product. Default 3.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1))]
    pub keep_versions: i32,
    /// How often the source is re-indexed, e.g. `1h`. Default `1h`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Stop re-indexing; the gateway keeps serving the current index.
    #[serde(default)]
    pub suspend: bool,
    /// Index only image versions whose OCI manifest digest carries a cosign signature
    /// that verifies with the key (`oci` and `upload` sources; not allowed with
    /// `upstream`). Others are left out of the index, `Verified=False` names them. The
    /// gateway reads one key file per stream: `publicKeySecret.key`, default
    /// `cosign.pub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verification>,
}

/// Where an ImageStream's images come from (exactly one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSource {
    /// Images pushed as OCI artifacts to one repository, one tag per image version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
    /// Images uploaded to the gateway (docker-simplestreams-server compatible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSource>,
    /// Images mirrored from an upstream simplestreams server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSource>,
}

/// Accept image uploads at `/streams/<stream>/upload`, behind the gateway's upload
/// token (`OtaGateway.spec.uploadTokenSecret`); each upload is stored as an OCI artifact
/// in the repository, so every gateway replica serves it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadSource {
    /// The repository the uploads are stored in.
    #[serde(flatten)]
    pub repository: OciSource,
    /// Let an upload replace an existing image version. Default false.
    #[serde(default)]
    pub allow_overwrite: bool,
    /// Let an authenticated client delete image versions. Default false.
    #[serde(default)]
    pub allow_delete: bool,
    /// Largest accepted upload, as a quantity (e.g. `8Gi`). Default 4Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<Quantity>,
    /// Accept uploads and deletes over plain HTTP. Default false: writes need TLS
    /// (`OtaGateway.spec.tls`), and one that arrives over plain HTTP is refused with
    /// 403, so the upload token is never sent in the clear. Only for a trusted network.
    #[serde(default)]
    pub allow_plain_writes: bool,
}

/// An upstream simplestreams server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSource {
    /// Base URL of the server, e.g. `https://images.linuxcontainers.org`.
    pub url: String,
    /// A ConfigMap in the stream's namespace whose `ca.crt` key holds PEM CA
    /// certificates to trust for `url` besides the system's (e.g. another gateway's
    /// private CA; the key cert-manager's trust bundles and `kube-root-ca.crt` use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map: Option<String>,
}

/// What the operator indexed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStreamStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Products (os/release/arch/variant) in the index.
    #[serde(default)]
    pub products: i32,
    /// Image versions across all products.
    #[serde(default)]
    pub versions: i32,
    /// When the index was last rebuilt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_indexed: Option<Time>,
    /// URL clients add as a simplestreams remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The commands that add the stream as a remote: `incus remote add ...` and
    /// `lxc remote add ...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_add: Vec<String>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus); under `spec.verify` also
    /// `Verified`; `SourceReachable` once the source was looked at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn default_keep() -> i32 {
    3
}
fn default_interval() -> String {
    "1h".into()
}
