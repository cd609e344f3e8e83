//! Simplestreams image streams served under `/streams/{name}/`, and where their images
//! come from: an OCI repository, the upload API, or another simplestreams server.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{is_false, is_zero, ConfigError, GatewayConfig, SourceConfig};

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

impl UpstreamStreamSource {
    /// `interval` when left out.
    pub const DEFAULT_INTERVAL: &str = "10m";
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

impl OciStreamSource {
    /// `interval` when left out.
    pub const DEFAULT_INTERVAL: &str = "60s";
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

impl UploadStreamSource {
    /// `maxBytes` when left out: 4 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;
    /// `interval` when left out: other replicas' uploads show within seconds.
    pub const DEFAULT_INTERVAL: &str = "5s";
}

fn default_stream_interval() -> String {
    OciStreamSource::DEFAULT_INTERVAL.into()
}
fn default_upload_interval() -> String {
    UploadStreamSource::DEFAULT_INTERVAL.into()
}
fn default_upstream_interval() -> String {
    UpstreamStreamSource::DEFAULT_INTERVAL.into()
}
fn default_upload_bytes() -> u64 {
    UploadStreamSource::DEFAULT_MAX_BYTES
}

impl GatewayConfig {
    /// Names safe in a URL path and unique, exactly one source, upstream filters and
    /// URLs, intervals that parse, verification keys that load.
    pub(super) fn validate_streams(&self) -> Result<(), ConfigError> {
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
