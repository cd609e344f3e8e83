//! How the gateway serves: the HTTPS listener beside the plain one, and the on-disk
//! cache every surface serves payloads from. (The plain and admin listeners are two
//! strings at the top of the file: [`super::GatewayConfig::listen`] and
//! [`super::GatewayConfig::admin_listen`].)

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The payload cache. Every field may be left out: serde fills it from [`Default`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// Directory of the content-addressed cache. Default `/var/cache/updraft`.
    pub dir: PathBuf,
    /// Byte budget; least recently used payloads are evicted beyond it. Default 1 GiB.
    pub max_bytes: u64,
}

impl CacheConfig {
    /// `dir` when left out.
    pub(crate) const DEFAULT_DIR: &str = "/var/cache/updraft";
    /// `maxBytes` when left out: 1 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { dir: Self::DEFAULT_DIR.into(), max_bytes: Self::DEFAULT_MAX_BYTES }
    }
}

/// The HTTPS listener. The certificate and key are PEM files (what a
/// `kubernetes.io/tls` Secret holds as `tls.crt` / `tls.key`), read again when they
/// change, without a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the HTTPS listener. Default `0.0.0.0:8443`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// `listen` when left out.
    pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
}

fn default_listen() -> String {
    TlsConfig::DEFAULT_LISTEN.into()
}
