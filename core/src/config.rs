//! The gateway's one configuration file (`gateway.yaml`).
//!
//! In Kubernetes the operator renders it into a ConfigMap (it imports these types), with
//! every channel pinned by manifest digest. Outside Kubernetes a person writes it by hand
//! and may give a channel a version [`Policy`] instead: the gateway then resolves the
//! newest matching tag from the registry itself.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::oci::{is_digest, is_sha256_hex, ArtifactConfig, SourceConfig, Unpack};
use crate::version::VersionPolicy;

/// The newest format of `gateway.yaml` this build reads and writes.
///
/// The operator and the gateway ship together. When the operator renders a newer
/// format than a gateway understands, the gateway refuses the file with a message
/// naming both versions: at start it exits, on reload it keeps serving the last good
/// config. New sections are omitted from the file while empty, so a config that uses
/// nothing new stays readable by a gateway one release older.
pub const CONFIG_VERSION: u32 = 1;

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Format version of this file ([`CONFIG_VERSION`]). Default 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Public listener (device API, downloads). Default `0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`). Default `0.0.0.0:9090`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Base URL devices reach this gateway at, used in download URLs of JSON answers.
    /// When absent, URLs are relative (`/api/v1/channels/NAME/firmware`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// On-disk cache of unpacked, verified payloads.
    #[serde(default)]
    pub cache: CacheConfig,
    /// PKCS#8 PEM ed25519 private key that signs the JSON firmware manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// The firmware channels served, by unique name.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// Whether the public listener sends payload bodies with `sendfile(2)` from the
    /// cache file (zero copy). `false` writes them from the memory map like any other
    /// body, for filesystems or sandboxes where `sendfile` misbehaves. Default true;
    /// omitted from the file while true; read at start only.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub sendfile: bool,
    /// Who is told when a release becomes ready to serve: devices over MQTT, people
    /// and CI over webhooks. Omitted from the file while empty.
    #[serde(default, skip_serializing_if = "NotificationsConfig::is_empty")]
    pub notifications: NotificationsConfig,
    /// Artifact stores (filuxe-compatible), each at the root of its own listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreConfig>,
    /// Forwarders from a source to a destination, run by the one `--mirror` worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorConfig>,
    /// HTTPS listener beside the plain one (LXD and Incus accept only https remotes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The simplestreams image streams served, by unique name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            public_url: None,
            cache: CacheConfig::default(),
            signing_key_file: None,
            channels: Vec::new(),
            sendfile: true,
            notifications: NotificationsConfig::default(),
            stores: Vec::new(),
            mirrors: Vec::new(),
            tls: None,
            streams: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// Directory of the content-addressed cache. Default `/var/cache/updraft`.
    #[serde(default = "default_cache_dir")]
    pub dir: PathBuf,
    /// Byte budget; least recently used payloads are evicted beyond it. Default 1 GiB.
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { dir: default_cache_dir(), max_bytes: default_cache_bytes() }
    }
}

/// Notifications sent when a release becomes ready to serve (its payload cached and
/// verified).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Retained MQTT messages for devices, as OtaFlux publishes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttConfig>,
    /// Signed JSON POSTs for people and CI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
}

impl NotificationsConfig {
    /// Nothing to notify.
    pub fn is_empty(&self) -> bool {
        self.mqtt.is_none() && self.webhooks.is_empty()
    }
}

/// The MQTT broker devices listen on. Each channel's current release is published,
/// retained with QoS 1, on `<topicPrefix>/<device id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (TLS, default
    /// port 8883), optionally `?client_id=ID` as OtaFlux takes it.
    pub url: String,
    /// Topic prefix; a device listens on `<topicPrefix>/<device id>`. Default
    /// `firmware/updates`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// PEM CA bundle the broker's certificate must chain to (`mqtts://`). Default: the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS; needs `clientKeyFile` and `caFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `clientCertFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// File holding the MQTT user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_file: Option<PathBuf>,
    /// File holding the MQTT password; needs `usernameFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// One receiver of signed webhook POSTs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// File holding the HMAC-SHA256 key; the body's signature goes in
    /// `X-Updraft-Signature: sha256=<hex>`. Unsigned when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

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
    pub fn device_id(&self) -> &str {
        self.device.as_deref().unwrap_or(&self.name)
    }
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

/// An artifact store: a filuxe-compatible HTTP file store at the root of its own
/// listener (filuxe's client builds URLs from a host and a port only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    /// Unique name (metrics label, messages).
    pub name: String,
    /// Listener of this store, e.g. `0.0.0.0:8081`. Changes take effect on restart.
    pub listen: String,
    /// Directory holding the files (on the store volume), exactly the users' files. The
    /// store's own state (partial uploads, checksums) is kept beside it, in
    /// `.<name>.updraft` of its parent, which must be on the same filesystem: serve a
    /// subdirectory of a volume, not its mount point (there the state falls back to a
    /// hidden `.updraft/` inside, as in earlier versions).
    pub dir: PathBuf,
    /// The write key, inline (for hand-written configs). Set this or `writeKeyFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
    /// A file whose content (trimmed) is the write key, e.g. a mounted Secret; re-read
    /// when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key_file: Option<PathBuf>,
    /// Whether downloads and listings need no key. Default true. When false they need
    /// the read key (`readKeyFile`) or the write key.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub public_reads: bool,
    /// A file whose content (trimmed) is the read key, for `publicReads: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_key_file: Option<PathBuf>,
    /// Largest file an upload may create, in bytes. Default 16 GiB.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Accept writes (upload, delete) over plain HTTP. Default false: without it a
    /// write that did not arrive over TLS is refused with 403, so the write key is
    /// never sent in the clear.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plain_writes: bool,
}

/// One forwarder: what to copy from `source` to `destination`, under which rules.
/// Run by the gateway's single `--mirror` worker, never by serving replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorConfig {
    /// Unique name (the ArtifactMirror's `namespace/name` when rendered by the operator).
    pub name: String,
    pub source: MirrorEndpoint,
    pub destination: MirrorEndpoint,
    /// Glob patterns (`*`, `?`, `**`) of names to forward: file paths in a store, tags
    /// in a repository. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Glob patterns of names never to forward; wins over `include`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// How versions (and products) are read from names, and which versions to forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionFilter>,
    /// What to keep at the destination. Deletions happen only at the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
    /// Time between passes, e.g. `30s`, `10m`. Default `10m`.
    #[serde(default = "default_mirror_interval")]
    pub interval: String,
    /// Nothing is compared, copied or deleted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// Passes compute and report what they would copy and delete, and change nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

/// One side of a mirror: exactly one of `oci` and `http`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorEndpoint {
    /// An OCI repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<SourceConfig>,
    /// A filuxe-compatible artifact store (another gateway's store, a filuxe server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStoreConfig>,
}

/// A filuxe-compatible HTTP artifact store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpStoreConfig {
    /// Base URL, e.g. `http://lan-gateway:8081` (a path prefix is allowed).
    pub url: String,
    /// Optional directory inside the store to mirror, e.g. `releases`. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// File holding the store's key (sent as filuxe's `key` header): the write key
    /// at a destination, the read key at a source whose reads are not public. Sent to
    /// an `https://` URL only, unless `allowPlainHttp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Send the key to a plain `http://` URL too (a store on loopback, or reached over a
    /// network you trust). Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plain_http: bool,
}

impl HttpStoreConfig {
    /// Why a key would go in the clear: see [`plain_http_key`].
    pub fn check_key_transport(&self) -> Result<(), String> {
        plain_http_key(&self.url, self.key_file.is_some(), self.allow_plain_http)
    }
}

/// The rule for every store key a mirror sends (the worker's config, the operator's
/// ArtifactMirror check): a key goes to an `http://` URL only when plain HTTP is
/// explicitly allowed, so a mirror cannot be pointed at a URL that would read the key
/// off the wire. The error names the field to set.
pub fn plain_http_key(url: &str, has_key: bool, allow_plain_http: bool) -> Result<(), String> {
    let plain = url.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    if has_key && plain && !allow_plain_http {
        return Err(format!(
            "{url} is plain http://: the store key would be sent in the clear; use https://, or set allowPlainHttp: true"
        ));
    }
    Ok(())
}

/// How a name yields a version and a group (product), in filuxe's terms, and which
/// versions are forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionFilter {
    /// Regex whose first capture group is the version (filuxe's `version`), e.g.
    /// `:(\d+\.\d+\.\d+):`. Default: the first `MAJOR.MINOR.PATCH[-pre]` in the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Regexes tried in order; the captures of the first that matches, joined by `:`,
    /// name the group (filuxe's `group`). Names no regex matches form the group
    /// `ungrouped`. Default: the name with its version cut out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Semver range the version must satisfy, e.g. `>=1.2, <2`. Default: any. Names
    /// without a version are not forwarded when a range is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Whether pre-releases satisfy the range.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prerelease: bool,
}

impl VersionFilter {
    /// Checks the filter the way the mirror rules compile it: the regexes compile, the
    /// version regex captures the version, the range parses.
    pub fn check(&self) -> Result<(), FilterError> {
        let fail = |field: String, message: String| Err(FilterError { field, message });
        if let Some(re) = &self.regex {
            match regex::Regex::new(re) {
                Err(e) => return fail("version.regex".into(), format!("{re:?}: {e}")),
                Ok(r) if r.captures_len() < 2 => {
                    return fail("version.regex".into(), format!("{re:?} needs a capture group (the version)"))
                }
                Ok(_) => {}
            }
        }
        for (i, re) in self.groups.iter().enumerate() {
            if let Err(e) = regex::Regex::new(re) {
                return fail(format!("version.groups[{i}]"), format!("{re:?}: {e}"));
            }
        }
        if let Some(range) = &self.range {
            if let Err(e) = crate::version::parse_range(range) {
                return fail("version.range".into(), e);
            }
        }
        Ok(())
    }
}

/// A version filter that cannot work, naming its field (`version.regex`,
/// `version.groups[1]`, `version.range`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

/// Retention at the destination; an artifact is kept when either rule keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the newest N versions of each group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep artifacts younger than this (by file time), e.g. `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

impl MirrorEndpoint {
    /// `oci://registry/repository` or the store URL, for messages and metric labels.
    pub fn describe(&self) -> String {
        match (&self.oci, &self.http) {
            (Some(oci), _) => format!("oci://{}/{}", oci.registry, oci.repository),
            (None, Some(http)) => match &http.path {
                Some(path) => format!("{}/{}", http.url.trim_end_matches('/'), path.trim_matches('/')),
                None => http.url.clone(),
            },
            (None, None) => "(none)".into(),
        }
    }
}

/// The HTTPS listener. The certificate and key are PEM files (what a
/// `kubernetes.io/tls` Secret holds as `tls.crt` / `tls.key`), read again when they
/// change, without a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the HTTPS listener. Default `0.0.0.0:8443`.
    #[serde(default = "default_tls_listen")]
    pub listen: String,
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// One simplestreams image stream, served under `/streams/{name}/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamConfig {
    /// Unique name; the stream's base URL is `/streams/{name}/`.
    pub name: String,
    /// Where the images come from: exactly one of `oci`, `upload`, `upstream`.
    pub source: StreamSource,
    /// Keep only the newest N versions of each product (0: all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_versions: u32,
    /// Index only versions whose OCI manifest digest carries a cosign signature that
    /// verifies with one of these keys (OCI and upload sources); others are left out
    /// of the index and reported. Not allowed with an upstream source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<crate::cosign::VerifyConfig>,
}

/// Where a stream's images come from: exactly one field is set (a map, not a YAML
/// tag, so the file reads like the resource it is rendered from).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamSource {
    /// One OCI artifact per image version in one repository, one tag per version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciStreamSource>,
    /// Uploads compatible with docker-simplestreams-server, stored as OCI artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadStreamSource>,
    /// A mirror of another simplestreams server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamStreamSource>,
}

/// Another simplestreams server (a public image server, another Updraft gateway),
/// mirrored with filters; files are fetched on first request and verified against
/// the upstream's sha256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamStreamSource {
    /// Base URL: `{url}/streams/v1/index.json` is the upstream's index.
    pub url: String,
    /// `field=value` (field one of `os`, `release`, `arch`, `variant`): a product is
    /// mirrored when it matches every filter (`os` compared without case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// PEM file of extra CAs to trust for `url` (besides the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How often the upstream index is read again. Default `10m`.
    #[serde(default = "default_upstream_interval")]
    pub interval: String,
}

/// A repository of image artifacts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OciStreamSource {
    #[serde(flatten)]
    pub repository: SourceConfig,
    /// How often the tags are listed again. Default `60s`.
    #[serde(default = "default_stream_interval")]
    pub interval: String,
}

/// The upload API; every upload becomes an OCI artifact in `repository`, so every
/// replica sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadStreamSource {
    /// The repository uploads are stored in (the durable store).
    #[serde(flatten)]
    pub repository: SourceConfig,
    /// File holding the upload token (the gateway's `upload_token_secret`); uploads
    /// send it as `Authorization: Bearer <token>`.
    pub token_file: PathBuf,
    /// Replace a file that already exists (otherwise 409).
    #[serde(default)]
    pub allow_overwrite: bool,
    /// Accept `DELETE` of a version or a file.
    #[serde(default)]
    pub allow_delete: bool,
    /// Largest accepted upload body. Default 4 GiB.
    #[serde(default = "default_upload_bytes")]
    pub max_bytes: u64,
    /// How often the repository is listed again to see other replicas' uploads.
    /// Default `5s`.
    #[serde(default = "default_upload_interval")]
    pub interval: String,
    /// Accept uploads and deletes over plain HTTP. Default false: without it a write
    /// that did not arrive over TLS is refused with 403, so the token is never sent in
    /// the clear.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plain_writes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: serde_yaml::Error },
    #[error("{0}")]
    Syntax(serde_yaml::Error),
    #[error(
        "config format version {found} is newer than this gateway reads ({CONFIG_VERSION}); \
         run the gateway image of the same release as the operator"
    )]
    TooNew { found: u64 },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl GatewayConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Syntax(source) => ConfigError::Parse { path: path.to_owned(), source },
            other => other,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a config (not yet validated). A file of a newer format is refused by its
    /// version before an unknown key could make the message obscure.
    pub fn parse(text: &[u8]) -> Result<Self, ConfigError> {
        let value: serde_yaml::Value = serde_yaml::from_slice(text).map_err(ConfigError::Syntax)?;
        if let Some(found) = value.get("version").and_then(serde_yaml::Value::as_u64) {
            if found > u64::from(CONFIG_VERSION) {
                return Err(ConfigError::TooNew { found });
            }
        }
        serde_yaml::from_value(value).map_err(ConfigError::Syntax)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("gateway config always serializes")
    }

    /// Checks what serde cannot: unique names and devices, one of current/policy,
    /// digests, rollout range, tar path.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
            for pinned in c.current.iter().chain(&c.previous) {
                if !is_digest(&pinned.digest) {
                    return invalid(format!("channel {:?}: digest {:?} is not sha256:<64 hex>", c.name, pinned.digest));
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
        self.notifications.validate()?;
        self.validate_streams()?;
        self.validate_stores()?;
        self.validate_mirrors()
    }

    fn validate_stores(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut names = std::collections::HashSet::new();
        let mut listens: std::collections::HashSet<&str> =
            [self.listen.as_str(), self.admin_listen.as_str()].into_iter().collect();
        listens.extend(self.tls.as_ref().map(|t| t.listen.as_str()));
        for s in &self.stores {
            if s.name.is_empty() || !names.insert(s.name.as_str()) {
                return invalid(format!("store name {:?} is empty or appears twice", s.name));
            }
            if !listens.insert(s.listen.as_str()) {
                return invalid(format!("store {:?}: listen {} is used by another listener", s.name, s.listen));
            }
            match (&s.write_key, &s.write_key_file) {
                (Some(_), Some(_)) => {
                    return invalid(format!("store {:?}: set writeKey or writeKeyFile, not both", s.name))
                }
                (None, None) => return invalid(format!("store {:?}: needs writeKey or writeKeyFile", s.name)),
                (Some(k), None) if crate::secret::key_str(k).is_none() => {
                    return invalid(format!("store {:?}: writeKey is empty or only whitespace", s.name))
                }
                _ => {}
            }
            if s.max_upload_bytes == 0 {
                return invalid(format!("store {:?}: maxUploadBytes must be positive", s.name));
            }
        }
        Ok(())
    }

    fn validate_mirrors(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for m in &self.mirrors {
            let invalid = |what: String| Err(ConfigError::Invalid(format!("mirror {:?}: {what}", m.name)));
            if m.name.is_empty() || !names.insert(m.name.as_str()) {
                return Err(ConfigError::Invalid(format!("mirror name {:?} is empty or appears twice", m.name)));
            }
            for (side, e) in [("source", &m.source), ("destination", &m.destination)] {
                match (&e.oci, &e.http) {
                    (Some(_), None) => {}
                    (None, Some(http)) if http.url.starts_with("http://") || http.url.starts_with("https://") => {
                        http.check_key_transport()
                            .map_err(|e| ConfigError::Invalid(format!("mirror {:?}: {side}.http: {e}", m.name)))?;
                    }
                    (None, Some(http)) => return invalid(format!("{side}.http.url {:?} is not http(s)://", http.url)),
                    _ => return invalid(format!("{side} needs exactly one of oci and http")),
                }
            }
            if m.source == m.destination {
                return invalid("source and destination are the same".into());
            }
            crate::version::parse_duration(&m.interval)
                .map_err(|e| ConfigError::Invalid(format!("mirror {:?}: {e}", m.name)))?;
            if let Some(v) = &m.version {
                v.check().map_err(|e| ConfigError::Invalid(format!("mirror {:?}: {e}", m.name)))?;
            }
            if let Some(r) = &m.retention {
                if r.keep_last == Some(0) {
                    return invalid("retention.keepLast must be at least 1".into());
                }
                if let Some(age) = &r.max_age {
                    crate::version::parse_duration(age)
                        .map_err(|e| ConfigError::Invalid(format!("mirror {:?}: {e}", m.name)))?;
                }
            }
        }
        Ok(())
    }

    fn validate_streams(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut streams = std::collections::HashSet::new();
        for s in &self.streams {
            let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
            if s.name.is_empty() || s.name.starts_with('.') || !s.name.bytes().all(plain) {
                return invalid(format!(
                    "stream name {:?} must be non-empty [a-z0-9.-], not starting with '.'",
                    s.name
                ));
            }
            if !streams.insert(s.name.as_str()) {
                return invalid(format!("stream name {:?} appears twice", s.name));
            }
            let interval = match (&s.source.oci, &s.source.upload, &s.source.upstream) {
                (Some(o), None, None) => &o.interval,
                (None, Some(u), None) => &u.interval,
                (None, None, Some(u)) => {
                    if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
                        return invalid(format!("stream {:?}: upstream.url must be http(s)://", s.name));
                    }
                    for f in &u.filters {
                        let ok = f
                            .split_once('=')
                            .is_some_and(|(k, v)| matches!(k, "os" | "release" | "arch" | "variant") && !v.is_empty());
                        if !ok {
                            return invalid(format!(
                                "stream {:?}: filter {f:?} is not os=, release=, arch= or variant=VALUE",
                                s.name
                            ));
                        }
                    }
                    &u.interval
                }
                _ => return invalid(format!("stream {:?}: source needs exactly one of oci, upload, upstream", s.name)),
            };
            crate::version::parse_duration(interval)
                .map_err(|e| ConfigError::Invalid(format!("stream {:?}: interval: {e}", s.name)))?;
            if let Some(verify) = &s.verify {
                if s.source.upstream.is_some() {
                    return invalid(format!(
                        "stream {:?}: verify applies to oci and upload sources, not upstream",
                        s.name
                    ));
                }
                verify.verifier().map_err(|e| ConfigError::Invalid(format!("stream {:?}: verify: {e}", s.name)))?;
            }
        }
        Ok(())
    }
}

impl NotificationsConfig {
    /// URL schemes, topic prefix, and files that only work in pairs (the operator checks
    /// a rendered section with it before it reaches a gateway).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(m) = &self.mqtt {
            if !(m.url.starts_with("mqtt://") || m.url.starts_with("mqtts://")) {
                return invalid(format!("notifications.mqtt.url {:?} must start with mqtt:// or mqtts://", m.url));
            }
            if m.topic_prefix.is_empty() || m.topic_prefix.contains(['+', '#']) {
                return invalid(format!(
                    "notifications.mqtt.topicPrefix {:?} must be non-empty, without wildcards",
                    m.topic_prefix
                ));
            }
            if m.client_cert_file.is_some() != m.client_key_file.is_some() {
                return invalid("notifications.mqtt: clientCertFile and clientKeyFile go together".into());
            }
            if m.client_cert_file.is_some() && m.ca_file.is_none() {
                return invalid("notifications.mqtt: a client certificate needs caFile".into());
            }
            if m.password_file.is_some() && m.username_file.is_none() {
                return invalid("notifications.mqtt: passwordFile needs usernameFile".into());
            }
        }
        for w in &self.webhooks {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return invalid(format!("notifications.webhooks: url {:?} must start with http:// or https://", w.url));
            }
        }
        Ok(())
    }
}

fn default_topic_prefix() -> String {
    "firmware/updates".into()
}
fn default_version() -> u32 {
    CONFIG_VERSION
}
fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_admin_listen() -> String {
    "0.0.0.0:9090".into()
}
fn default_cache_dir() -> PathBuf {
    "/var/cache/updraft".into()
}
fn default_cache_bytes() -> u64 {
    1 << 30
}
fn default_rollout() -> u8 {
    100
}
fn default_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn default_max_upload() -> u64 {
    16 << 30
}
fn default_mirror_interval() -> String {
    "10m".into()
}

fn default_tls_listen() -> String {
    "0.0.0.0:8443".into()
}
fn default_stream_interval() -> String {
    "60s".into()
}
fn default_upload_interval() -> String {
    "5s".into()
}
fn default_upstream_interval() -> String {
    "10m".into()
}
fn default_upload_bytes() -> u64 {
    4 << 30
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn pinned_yaml() -> String {
        format!(
            "channels:\n- name: esp32\n  source: {{registry: 127.0.0.1:5000, repository: fw/esp32, insecure: true}}\n  current: {{version: 1.2.0, tag: v1.2.0, digest: \"{DIGEST}\"}}\n  rollout: 30\n"
        )
    }

    #[test]
    fn defaults_fill_a_short_file() {
        let c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080");
        assert_eq!(c.admin_listen, "0.0.0.0:9090");
        assert_eq!(c.cache.max_bytes, 1 << 30);
        assert_eq!(c.channels[0].device_id(), "esp32");
        assert_eq!(c.channels[0].artifact.unpack, Unpack::Raw);
        assert_eq!(c.channels[0].rollout, 30);
        assert!(c.sendfile);
        assert!(!c.to_yaml().contains("sendfile"), "the default stays out of the file");
        let off: GatewayConfig = serde_yaml::from_str(&format!("sendfile: false\n{}", pinned_yaml())).unwrap();
        assert!(!off.sendfile);
        assert!(off.to_yaml().contains("sendfile: false"));
    }

    #[test]
    fn rollback_fields_stay_out_of_the_file_until_set() {
        let c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
        assert_eq!((c.channels[0].highest_served.as_deref(), c.channels[0].downgrade), (None, Downgrade::PinnedBack));
        let yaml = c.to_yaml();
        assert!(!yaml.contains("highestServed") && !yaml.contains("downgrade"), "{yaml}");
        let set: GatewayConfig =
            serde_yaml::from_str(&format!("{}  highestServed: 1.3.0\n  downgrade: never\n", pinned_yaml())).unwrap();
        assert_eq!(
            (set.channels[0].highest_served.as_deref(), set.channels[0].downgrade),
            (Some("1.3.0"), Downgrade::Never)
        );
        assert!(set.to_yaml().contains("downgrade: never"));
        assert!(serde_yaml::from_str::<GatewayConfig>(&format!("{}  downgrade: sometimes\n", pinned_yaml())).is_err());
    }

    #[test]
    fn round_trips_through_yaml() {
        let c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
        let again: GatewayConfig = serde_yaml::from_str(&c.to_yaml()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_digests() {
        let typo = pinned_yaml().replace("rollout", "rolout");
        assert!(serde_yaml::from_str::<GatewayConfig>(&typo).unwrap_err().to_string().contains("rolout"));
        let bad: GatewayConfig = serde_yaml::from_str(&pinned_yaml().replace(DIGEST, "sha256:abc")).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("is not sha256"));
    }

    #[test]
    fn needs_exactly_one_of_current_and_policy() {
        let mut c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
        c.channels[0].current = None;
        assert!(c.validate().unwrap_err().to_string().contains("needs current"));
    }

    #[test]
    fn a_newer_format_is_refused_by_its_version() {
        let newer = format!("version: {}\nstreams: []\n", CONFIG_VERSION + 1);
        let err = GatewayConfig::parse(newer.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("newer than this gateway reads"), "{err}");
        let current = GatewayConfig::parse(pinned_yaml().as_bytes()).unwrap();
        assert_eq!(current.version, CONFIG_VERSION);
        assert!(current.to_yaml().starts_with("version: 1\n"));
    }

    const STORE_AND_MIRROR: &str = r#"
stores:
- name: releases
  listen: 127.0.0.1:8081
  dir: /srv/store
  writeKeyFile: /etc/updraft/key
mirrors:
- name: lan-to-wan
  source: {http: {url: "http://lan:8081", path: releases}}
  destination: {http: {url: "http://wan:8081", keyFile: /etc/updraft/wan-key, allowPlainHttp: true}}
  include: ["**/*.zip"]
  exclude: ["**/unversioned_*"]
  version: {regex: ':(\d+\.\d+\.\d+):', groups: ['(.*?):\d+\.\d+\.\d+:(.*)'], range: ">=1"}
  retention: {keepLast: 2}
  interval: 30s
"#;

    #[test]
    fn stores_and_mirrors_parse_and_round_trip() {
        let c = GatewayConfig::parse(STORE_AND_MIRROR.as_bytes()).unwrap();
        c.validate().unwrap();
        let s = &c.stores[0];
        assert!(s.public_reads);
        assert_eq!(s.max_upload_bytes, 16 << 30);
        let m = &c.mirrors[0];
        assert_eq!(m.source.http.as_ref().unwrap().path.as_deref(), Some("releases"));
        assert_eq!(m.retention.as_ref().unwrap().keep_last, Some(2));
        assert!(!m.dry_run && !m.suspend);
        assert_eq!(GatewayConfig::parse(c.to_yaml().as_bytes()).unwrap(), c);
    }

    #[test]
    fn empty_stores_and_mirrors_stay_out_of_the_file() {
        let c = GatewayConfig::parse(pinned_yaml().as_bytes()).unwrap();
        let yaml = c.to_yaml();
        assert!(!yaml.contains("stores") && !yaml.contains("mirrors"), "{yaml}");
    }

    #[test]
    fn invalid_stores_and_mirrors_are_refused() {
        let cases = [
            ("writeKeyFile: /etc/updraft/key", "", "needs writeKey or writeKeyFile"),
            ("writeKeyFile: /etc/updraft/key", "writeKey: \" \\t \"", "writeKey is empty or only whitespace"),
            (", allowPlainHttp: true", "", "destination.http: http://wan:8081 is plain http://"),
            ("listen: 127.0.0.1:8081", "listen: 0.0.0.0:9090", "used by another listener"),
            ("http: {url: \"http://lan:8081\", path: releases}", "http: {url: \"lan:8081\"}", "is not http(s)"),
            ("interval: 30s", "interval: soon", "invalid duration"),
            ("keepLast: 2", "keepLast: 0", "at least 1"),
            ("regex: ':(\\d+\\.\\d+\\.\\d+):'", "regex: ':\\d+:'", "needs a capture group"),
            ("range: \">=1\"", "range: \"banana\"", "invalid semver range"),
        ];
        for (from, to, expected) in cases {
            assert!(STORE_AND_MIRROR.contains(from), "{from}");
            let text = STORE_AND_MIRROR.replace(from, to);
            let err = GatewayConfig::parse(text.as_bytes()).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn tls_and_streams_are_read_and_omitted_when_unset() {
        let plain = GatewayConfig::parse(pinned_yaml().as_bytes()).unwrap();
        assert!(!plain.to_yaml().contains("tls"));
        assert!(!plain.to_yaml().contains("streams"));
        let yaml = format!(
            "{}tls: {{certFile: /tls/tls.crt, keyFile: /tls/tls.key}}\nstreams:\n- name: images\n  source:\n    upload: {{registry: 127.0.0.1:5000, repository: images/up, insecure: true, tokenFile: /t, allowDelete: true}}\n- name: lab\n  keepVersions: 3\n  source:\n    oci: {{registry: 127.0.0.1:5000, repository: images/lab}}\n",
            pinned_yaml()
        );
        let c = GatewayConfig::parse(yaml.as_bytes()).unwrap();
        c.validate().unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.listen, "0.0.0.0:8443");
        assert_eq!(tls.key_file, PathBuf::from("/tls/tls.key"));
        let up = c.streams[0].source.upload.as_ref().unwrap();
        assert!(up.allow_delete && !up.allow_overwrite);
        assert_eq!(up.max_bytes, 4 << 30);
        assert_eq!(up.repository.repository, "images/up");
        assert_eq!(c.streams[1].keep_versions, 3);
        assert_eq!(GatewayConfig::parse(c.to_yaml().as_bytes()).unwrap(), c);
        let twice = yaml.replace("name: lab", "name: images");
        assert!(GatewayConfig::parse(twice.as_bytes()).unwrap().validate().unwrap_err().to_string().contains("twice"));
        let escape = yaml.replace("name: lab", "name: ../x");
        assert!(GatewayConfig::parse(escape.as_bytes()).unwrap().validate().is_err());
        let unknown = yaml.replace("    oci:", "    mirror:");
        assert!(GatewayConfig::parse(unknown.as_bytes()).is_err());
        let mut mirror = c.clone();
        mirror.streams[1].source.oci = None;
        mirror.streams[1].source.upstream = Some(UpstreamStreamSource {
            url: "https://images.example".into(),
            filters: vec!["os=debian".into()],
            ca_file: None,
            interval: "10m".into(),
        });
        mirror.validate().unwrap();
        mirror.streams[1].source.upstream.as_mut().unwrap().filters = vec!["color=red".into()];
        assert!(mirror.validate().unwrap_err().to_string().contains("filter"));
        let mut none = c.clone();
        none.streams[1].source.oci = None;
        assert!(none.validate().unwrap_err().to_string().contains("exactly one"));
    }

    #[test]
    fn notifications_are_omitted_while_empty_and_checked() {
        let c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
        assert!(!c.to_yaml().contains("notifications"), "an empty section stays out of the file");
        let yaml = format!(
            "{}notifications:\n  mqtt: {{url: \"mqtts://broker:8883\", caFile: /etc/ca.crt}}\n  webhooks:\n  - {{url: \"https://ci.example/hook\", secretFile: /etc/key}}\n",
            pinned_yaml()
        );
        let n: GatewayConfig = serde_yaml::from_str(&yaml).unwrap();
        n.validate().unwrap();
        let mqtt = n.notifications.mqtt.as_ref().unwrap();
        assert_eq!(mqtt.topic_prefix, "firmware/updates");
        assert_eq!(mqtt.ca_file.as_deref(), Some(Path::new("/etc/ca.crt")));
        assert_eq!(serde_yaml::from_str::<GatewayConfig>(&n.to_yaml()).unwrap(), n);
        let bad = |from: &str, to: &str| {
            let c: GatewayConfig = serde_yaml::from_str(&yaml.replace(from, to)).unwrap();
            c.validate().unwrap_err().to_string()
        };
        assert!(bad("mqtts://", "tcp://").contains("mqtt://"));
        assert!(bad("https://ci", "ftp://ci").contains("http://"));
        assert!(bad("caFile: /etc/ca.crt", "clientCertFile: /c").contains("go together"));
        assert!(bad("caFile: /etc/ca.crt", "topicPrefix: \"a/#\"").contains("wildcards"));
    }

    #[test]
    fn rejects_duplicate_devices() {
        let mut c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
        let mut other = c.channels[0].clone();
        other.name = "other".into();
        other.device = Some("esp32".into());
        c.channels.push(other);
        assert!(c.validate().unwrap_err().to_string().contains("two channels"));
    }
}
