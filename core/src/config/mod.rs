//! The gateway's one configuration file (`gateway.yaml`).
//!
//! In Kubernetes the operator renders it into a ConfigMap (it imports these types), with
//! every channel pinned by manifest digest. Outside Kubernetes a person writes it by hand
//! and may give a channel a version [`Policy`] instead: the gateway then resolves the
//! newest matching tag from the registry itself.
//!
//! One file per section of the file, each holding its types, their defaults and the
//! checks serde cannot make:
//!
//! - [`server`]: the listeners (`listen`, `adminListen`, `tls`) and the payload `cache`;
//! - [`channels`]: firmware channels and the artifacts they pin;
//! - [`notifications`]: MQTT and webhooks told when a release is ready;
//! - [`stores`]: filuxe-compatible artifact stores;
//! - [`mirrors`]: forwarders from a source to a destination, and their filters;
//! - [`streams`]: simplestreams image streams and their sources.
//!
//! Every default lives once, as a constant or a `Default` impl beside its type, and
//! serde fills an omitted field from that same place, so a file that leaves a field out
//! and a config built in code with the constant mean the same thing (the operator
//! renders with the constants; a test holds serde and `Default` to one answer).
//!
//! [`Policy`]: crate::version::VersionPolicy

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::oci::{is_digest, is_sha256_hex, ArtifactConfig, SourceConfig, Unpack};

pub mod channels;
pub mod delivery;
pub mod mirrors;
pub mod notifications;
pub mod server;
pub mod stores;
pub mod streams;
#[cfg(test)]
mod tests;

pub use channels::{ChannelConfig, DeltaPatch, Deltas, Downgrade, PinnedArtifact};
pub use delivery::OperatorSource;
pub use mirrors::{
    plain_http_key, FilterError, HttpStoreConfig, MirrorConfig, MirrorEndpoint, PlainHttpKeyError, RetentionConfig,
    VersionFilter,
};
pub use notifications::{MqttConfig, NotificationsConfig, WebhookConfig};
pub use server::{CacheConfig, ClientAuth, TlsConfig, TlsConfigError};
pub use stores::StoreConfig;
pub use streams::{OciStreamSource, StreamConfig, StreamSource, UploadStreamSource, UpstreamStreamSource};

/// The newest format of `gateway.yaml` this build reads and writes.
///
/// The operator and the gateway ship together. When the operator renders a newer
/// format than a gateway understands, the gateway refuses the file with a message
/// naming both versions: at start it exits, on reload it keeps serving the last good
/// config. New sections are omitted from the file while empty, so a config that uses
/// nothing new stays readable by a gateway one release older.
pub const CONFIG_VERSION: u32 = 1;

/// The whole file. Every field may be left out: serde fills it from [`Default`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Format version of this file ([`CONFIG_VERSION`]). Default 1.
    pub version: u32,
    /// Which of the operator's renderings this is: the operator raises it whenever the
    /// content changes, so a gateway never replaces a config by an older one however
    /// late it arrives ([`delivery::supersedes`]). 0 (omitted) in a hand-written file.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub revision: u64,
    /// Where the gateway long-polls the operator for its config, so a new release or a
    /// rollback is served in about a second instead of at kubelet's next sync of the
    /// mounted file (which the gateway still follows). Read at start only. Omitted when
    /// absent: the gateway follows its file alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorSource>,
    /// Public listener (device API, downloads). Default `0.0.0.0:8080`.
    pub listen: String,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`). Default `0.0.0.0:9090`.
    pub admin_listen: String,
    /// Base URL devices reach this gateway at, used in download URLs of JSON answers.
    /// When absent, URLs are relative (`/api/v1/channels/NAME/firmware`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// On-disk cache of unpacked, verified payloads.
    pub cache: CacheConfig,
    /// PKCS#8 PEM ed25519 private key that signs the JSON firmware manifests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// The firmware channels served, by unique name.
    pub channels: Vec<ChannelConfig>,
    /// Whether the public listener sends payload bodies with `sendfile(2)` from the
    /// cache file (zero copy). `false` writes them from the memory map like any other
    /// body, for filesystems or sandboxes where `sendfile` misbehaves. Default true;
    /// omitted from the file while true; read at start only.
    #[serde(skip_serializing_if = "is_true")]
    pub sendfile: bool,
    /// Who is told when a release becomes ready to serve: devices over MQTT, people
    /// and CI over webhooks. Omitted from the file while empty.
    #[serde(skip_serializing_if = "NotificationsConfig::is_empty")]
    pub notifications: NotificationsConfig,
    /// Artifact stores (filuxe-compatible), each at the root of its own listener.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreConfig>,
    /// Forwarders from a source to a destination, run by the one `--mirror` worker.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorConfig>,
    /// HTTPS listener beside the plain one (LXD and Incus accept only https remotes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The simplestreams image streams served, by unique name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamConfig>,
}

impl GatewayConfig {
    /// Public listener when `listen` is left out.
    pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
    /// Admin listener when `adminListen` is left out.
    pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            revision: 0,
            operator: None,
            listen: Self::DEFAULT_LISTEN.into(),
            admin_listen: Self::DEFAULT_ADMIN_LISTEN.into(),
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
    /// A gzip-compressed config (a large one, as the operator stores it in its
    /// ConfigMap: [`delivery::store`]) is read the same, decompressed within
    /// [`delivery::MAX_CONFIG_BYTES`].
    pub fn parse(text: &[u8]) -> Result<Self, ConfigError> {
        let text = delivery::inflate(text)?;
        let value: serde_yaml::Value = serde_yaml::from_slice(&text).map_err(ConfigError::Syntax)?;
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

    /// Checks what serde cannot, section by section: unique names, one of exclusive
    /// fields, digests, ranges, URL schemes, durations, listeners used once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_channels()?;
        self.notifications.validate()?;
        self.validate_streams()?;
        self.validate_stores()?;
        self.validate_mirrors()?;
        if let Some(tls) = &self.tls {
            tls.check().map_err(|e| ConfigError::Invalid(format!("tls: {e}")))?;
        }
        Ok(())
    }
}

fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}
