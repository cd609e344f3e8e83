//! OtaGateway: one deployment of the gateway binary.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeyRef;

/// A deployment of the Updraft gateway that serves the FirmwareChannels, ImageStreams and
/// ArtifactMirrors attached to it. The operator creates its ConfigMap, Deployment and
/// Service, all owned by it.
// kube's `printcolumn(...)` entries repeat the same keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "updraft.dev",
    version = "v1alpha1",
    kind = "OtaGateway",
    namespaced,
    status = "OtaGatewayStatus",
    shortname = "otagw",
    category = "updraft",
    doc = "A deployment of the Updraft gateway serving the channels, streams and mirrors attached to it.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OtaGatewaySpec {
    /// Number of gateway pods. Default 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Gateway container image. Defaults to the image the operator was started with
    /// (`--gateway-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute resources of the gateway container. Defaults to requests of 50m CPU and
    /// 64Mi memory, and a 256Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How the gateway is exposed.
    #[serde(default)]
    pub service: GatewayService,
    /// The on-disk cache of verified payloads.
    #[serde(default)]
    pub cache: GatewayCache,
    /// Secret key holding a PKCS#8 PEM ed25519 private key; when set, the gateway signs
    /// the JSON firmware manifests it serves and publishes the public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret: Option<SecretKeyRef>,
    /// Secret key holding the bearer token that uploads (simplestreams, artifact store)
    /// must present. Uploads are refused when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_token_secret: Option<SecretKeyRef>,
    /// Serve HTTPS too, on port 8443 beside plain HTTP, with the certificate of a
    /// `kubernetes.io/tls` Secret (as cert-manager writes it); a renewed certificate is
    /// picked up without a restart. Plain HTTP only when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTls>,
    /// Who is told when a release becomes ready to serve (cached and verified): devices
    /// over MQTT (OtaFlux-compatible) and people or CI over signed webhooks.
    #[serde(default, skip_serializing_if = "GatewayNotifications::is_empty")]
    pub notifications: GatewayNotifications,
    /// A filuxe-compatible artifact store served on its own port, its files on a
    /// PersistentVolumeClaim shared by the gateway pods and the mirror worker. No store
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<GatewayStore>,
}

/// The gateway's artifact store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStore {
    /// Name of the PersistentVolumeClaim (same namespace) holding the files. It must be
    /// `ReadWriteMany` when `replicas` > 1 (every pod and the mirror worker mount it).
    pub claim_name: String,
    /// Port the store listens on, in the pod and on the Service. Default 8081.
    #[serde(default = "default_store_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Secret key holding the store's write key (filuxe's `key` header).
    pub write_key_secret: SecretKeyRef,
    /// Accept uploads and deletes over plain HTTP. Default false: with `spec.tls` the
    /// store's port speaks HTTPS (the same certificate), and a write that arrives over
    /// plain HTTP is refused with 403, so the write key is never sent in the clear.
    /// Only for a trusted network.
    #[serde(default)]
    pub allow_plain_writes: bool,
}

/// The gateway's HTTPS listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTls {
    /// Name of a `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) in the gateway's
    /// namespace.
    pub secret_name: String,
    /// Name of a Secret whose key `ca.crt` is the PEM bundle of the CAs device
    /// certificates are issued by: the HTTPS port then asks devices for a client
    /// certificate (mutual TLS), and a device that names no `id` is counted in the
    /// census by its certificate's subject. Read when a pod starts: a changed bundle
    /// reaches the gateway with its next restart. No client certificates when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_secret: Option<String>,
    /// `optional` (default): a device without a certificate is served too; `required`:
    /// its handshake is refused. A certificate that does not verify is always refused.
    /// Needs `clientCaSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<GatewayClientAuth>,
}

/// Whether the HTTPS port requires a client certificate: `optional` (default), a device
/// without one is served too; `required`, its handshake is refused. A certificate that
/// does not verify is always refused. Needs `clientCaSecret`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GatewayClientAuth {
    /// Devices may present a certificate.
    #[default]
    Optional,
    /// Devices must present one.
    Required,
}

/// Notifications a gateway sends. Every replica sends them: MQTT messages are retained
/// and the same from every replica (idempotent); each replica POSTs its own webhooks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayNotifications {
    /// The MQTT broker devices subscribe to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<GatewayMqtt>,
    /// Receivers of signed JSON POSTs (`release.ready`, `release.failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<GatewayWebhook>,
}

impl GatewayNotifications {
    /// Nothing configured.
    pub fn is_empty(&self) -> bool {
        self.mqtt.is_none() && self.webhooks.is_empty()
    }
}

/// MQTT as OtaFlux publishes it: each channel's release on `<topicPrefix>/<device id>`,
/// JSON with `version`, `size`, `sha256`, `crc32` and `url`, QoS 1, retained.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayMqtt {
    /// `mqtt://host[:port]` or `mqtts://host[:port]` (TLS), optionally
    /// `?client_id=ID` (then give each replica its own broker session some other way:
    /// by default every pod picks a unique id).
    pub url: String,
    /// Topic prefix. Default `firmware/updates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// Name of a Secret whose key `ca.crt` is the PEM CA bundle the broker's certificate
    /// must chain to (as cert-manager writes it). Default: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<String>,
    /// Name of a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): the client
    /// certificate for mutual TLS. Needs `caSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret: Option<String>,
    /// Name of a `kubernetes.io/basic-auth` Secret (`username`, `password`) the gateway
    /// logs in to the broker with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// One webhook receiver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayWebhook {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Secret key holding the HMAC-SHA256 key; each body is signed in
    /// `X-Updraft-Signature: sha256=<hex>`. Unsigned when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// The Service in front of the gateway pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayService {
    /// Service type: `ClusterIP`, `NodePort` or `LoadBalancer`. Default `ClusterIP`.
    #[serde(default = "default_service_type", rename = "type")]
    pub type_: String,
    /// Port devices connect to. Default 8080.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for GatewayService {
    fn default() -> Self {
        Self { type_: default_service_type(), port: default_port() }
    }
}

/// Cache size and where it lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayCache {
    /// Byte budget of the cache, as a quantity (e.g. `2Gi`); least recently used payloads
    /// are evicted beyond it. Default `1Gi`.
    #[serde(default = "default_cache_size")]
    pub size: Quantity,
    /// Name of a PersistentVolumeClaim to keep the cache on. Default: an emptyDir sized
    /// to `size`, so the cache is refilled from the registry after a pod restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<String>,
}

impl Default for GatewayCache {
    fn default() -> Self {
        Self { size: default_cache_size(), persistent_volume_claim: None }
    }
}

/// What the operator observed of the gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtaGatewayStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Gateway pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// In-cluster URL of the gateway's Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Resources whose configuration this gateway serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached: Vec<AttachedResource>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A resource rendered into the gateway's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachedResource {
    /// `FirmwareChannel`, `ImageStream` or `ArtifactMirror`.
    pub kind: String,
    /// Name in the gateway's namespace.
    pub name: String,
}

fn default_replicas() -> i32 {
    1
}
fn default_service_type() -> String {
    "ClusterIP".into()
}
fn default_port() -> i32 {
    8080
}
fn default_store_port() -> i32 {
    8081
}
fn default_cache_size() -> Quantity {
    Quantity("1Gi".into())
}
