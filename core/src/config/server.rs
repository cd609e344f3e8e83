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
/// change, without a restart. With `clientCaFile` the listener asks devices for a
/// client certificate (mutual TLS) and verifies it against that bundle; the verified
/// certificate's subject then counts as the device in the census when a request names
/// no `id`. The client CA bundle and `clientAuth` are read at start only.
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
    /// PEM bundle of the CAs whose client certificates are accepted (what a Secret
    /// holds as `ca.crt`). Absent: no client certificate is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client certificate is required; only with `clientCaFile`. Default
    /// `optional` when a `clientCaFile` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
}

impl TlsConfig {
    /// `listen` when left out.
    pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

    /// The client certificates the listener asks for: `None` without `clientCaFile`,
    /// else `clientAuth` ([`ClientAuth::Optional`] when left out).
    pub fn client_auth(&self) -> Option<ClientAuth> {
        self.client_ca_file.as_ref().map(|_| self.client_auth.unwrap_or_default())
    }

    /// What serde cannot check: `clientAuth` needs a `clientCaFile`, which is not empty.
    pub fn check(&self) -> Result<(), TlsConfigError> {
        match (&self.client_ca_file, self.client_auth) {
            (None, Some(mode)) => Err(TlsConfigError::ClientAuthWithoutCa(mode)),
            (Some(path), _) if path.as_os_str().is_empty() => Err(TlsConfigError::EmptyClientCaFile),
            _ => Ok(()),
        }
    }
}

/// Whether the HTTPS listener requires a client certificate (mutual TLS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client may send a certificate, which must then verify; one without is served
    /// too (and counted anonymous unless it names an `id`).
    #[default]
    Optional,
    /// A handshake without a certificate that verifies is refused.
    Required,
}

impl std::fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        })
    }
}

/// Why a `tls` section is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsConfigError {
    #[error("clientAuth: {0} needs a clientCaFile (the CAs client certificates are verified against)")]
    ClientAuthWithoutCa(ClientAuth),
    #[error("clientCaFile is empty")]
    EmptyClientCaFile,
}

fn default_listen() -> String {
    TlsConfig::DEFAULT_LISTEN.into()
}
