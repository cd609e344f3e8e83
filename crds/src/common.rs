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
    /// Name of a Secret in the same namespace whose key `key` is the store's write key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
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

pub(crate) fn default_gateway() -> String {
    "default".into()
}
