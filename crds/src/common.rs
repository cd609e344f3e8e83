//! Types shared by several resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An OCI repository in a registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciSource {
    /// Registry host and optional port, e.g. `ghcr.io` or `registry.lan:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `acme/firmware/esp32`.
    pub repository: String,
    /// Name of a Secret of type `kubernetes.io/dockerconfigjson` in the same namespace
    /// holding credentials for the registry. Anonymous access when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Talk plain HTTP instead of HTTPS (for a registry on a trusted LAN).
    #[serde(default)]
    pub insecure: bool,
}

impl OciSource {
    /// `registry/repository`, for messages.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// An HTTP artifact store with a filuxe-compatible API (e.g. another Updraft gateway).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpStore {
    /// Base URL of the store, e.g. `https://mirror.example.com/store`.
    pub url: String,
    /// Name of a Secret in the same namespace whose key `key` is the store's key (the
    /// write key at a destination, the read key at a source with private reads). Sent
    /// only to an `https://` URL unless `allowPlainHttp` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
    /// Send the key to a plain `http://` URL too (a store reached over a network you
    /// trust, e.g. inside one cluster). Default false: an `http://` URL with a
    /// `keySecret` is Stalled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plain_http: bool,
}

/// A key of a Secret in the resource's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// Signature verification of the releases an OCI source offers (like Flux's
/// `spec.verify`): a release is pinned only when a signature over its manifest digest
/// verifies with one of the keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Who signs. Only `cosign` (key-based): signatures at the `sha256-<hex>.sig` tag
    /// (cosign 2) or sigstore bundles among the digest's OCI 1.1 referrers (cosign 3).
    #[serde(default)]
    pub provider: VerifyProvider,
    /// Secret in the same namespace holding PEM public keys (`cosign.pub`).
    pub public_key_secret: PublicKeySecret,
}

/// The signature scheme of [`Verification`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerifyProvider {
    /// cosign with public keys (keyless verification is not supported yet).
    #[default]
    Cosign,
}

/// A Secret of public keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeySecret {
    /// Name of the Secret.
    pub name: String,
    /// The key of the Secret's data holding the one public key to trust. Default: every
    /// key whose name ends in `.pub`, so one Secret can hold several public keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

pub(crate) fn default_gateway() -> String {
    "default".into()
}
