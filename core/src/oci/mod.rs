//! Talking to OCI registries: one shared client, credentials from a docker
//! `config.json`, and the pure choices of which manifest and which layer hold the
//! firmware. The operator reuses [`list_repository_tags`], [`pull_image_manifest`]
//! and [`select_layer`] so both sides agree on what a channel means.
//!
//! Two rules every registry caller shares live beside them: [`is_not_found`] (what
//! "no such manifest or repository" looks like, from the error's structure) and
//! [`tags::attached_to`] (which tags are cosign's or the referrers fallback's, not
//! artifacts of their own).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};

mod not_found;
mod probe;
pub mod tags;
pub use not_found::{is_not_found, is_unknown_repository};
pub use probe::{probe, retry_after, Probe};

/// Why talking to a registry or interpreting its answer failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("registry {registry}: {source}")]
    Registry { registry: String, source: oci_client::errors::OciDistributionError },
    #[error("docker config {path}: {source}")]
    Credentials { path: String, source: DockerConfigError },
    #[error("{0}")]
    Select(String),
    #[error("invalid reference: {0}")]
    Reference(String),
    /// The registry is throttling (429) or failing (5xx); `retry_after` is what its
    /// `Retry-After` asked for, when it sent one.
    #[error("registry {registry}: answered {status}{}", wait(retry_after))]
    Unavailable { registry: String, status: u16, retry_after: Option<Duration> },
}

/// Why a docker `config.json` gives no credentials.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("auths.{registry}.auth is not base64: {source}")]
    Base64 { registry: String, source: base64::DecodeError },
    #[error("auths.{0}.auth is not UTF-8")]
    Utf8(String),
    #[error("auths.{0}.auth is not user:password")]
    NotUserPassword(String),
}

/// The longest `Retry-After` honoured: a registry asking for an hour is asked again
/// after this, so nothing stays dark long after the registry is back.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

impl OciError {
    /// How long the registry asked its clients to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OciError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn wait(retry_after: &Option<Duration>) -> String {
    retry_after.map(|d| format!(", asking to retry after {} s", d.as_secs())).unwrap_or_default()
}

/// Where a channel's artifacts live.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    /// Registry host[:port], e.g. `ghcr.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository inside the registry, e.g. `acme/firmware/esp32`.
    pub repository: String,
    /// Plain HTTP instead of HTTPS.
    #[serde(default)]
    pub insecure: bool,
    /// A docker `config.json` (or `.dockerconfigjson`) with credentials for `registry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_config: Option<PathBuf>,
}

/// Which layer of the artifact holds the binary, and how to unpack it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactConfig {
    /// Layer media type to pick. Default: the manifest's single layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub unpack: Unpack,
    /// For `tar`: the path of the binary inside the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For an image index: `os/arch[/variant]` of the manifest to pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// For an image index: annotations the picked manifest must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How the layer's bytes become the payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unpack {
    #[default]
    Raw,
    Gzip,
    Zstd,
    /// A tar archive, optionally gzip- or zstd-compressed (detected); takes `path`.
    Tar,
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_sha256_hex)
}

/// Whether `s` is 64 lowercase hex digits: a SHA-256 as digests and cache names spell it.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Pulls the manifest at `reference` (by digest); for an image index, picks the entry
/// the artifact config selects ([`select_manifest`]) and pulls that.
pub async fn pull_image_manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    artifact: &ArtifactConfig,
) -> Result<OciImageManifest, OciError> {
    let registry = |e| OciError::Registry { registry: reference.registry().to_owned(), source: e };
    let (manifest, _) = client.pull_manifest(reference, auth).await.map_err(registry)?;
    let index = match manifest {
        OciManifest::Image(image) => return Ok(image),
        OciManifest::ImageIndex(index) => index,
    };
    let entry = select_manifest(&index, artifact)?;
    let child = reference.clone_with_digest(entry.digest.clone());
    match client.pull_manifest(&child, auth).await.map_err(registry)? {
        (OciManifest::Image(image), _) => Ok(image),
        (OciManifest::ImageIndex(_), _) => Err(OciError::Select(format!("{} is a nested index", entry.digest))),
    }
}

/// Builds the one client a process shares (it caches bearer tokens per repository).
/// `user_agent` names the process; `protocol` says which registries are reached over
/// plain HTTP ([`protocol_for`]).
pub fn build_client(user_agent: &'static str, protocol: ClientProtocol) -> Client {
    Client::new(ClientConfig {
        protocol,
        // Image indexes are resolved by `select_manifest`, never by the host's platform.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(5)),
        read_timeout: Some(Duration::from_secs(30)),
        user_agent,
        ..Default::default()
    })
}

/// HTTPS everywhere except the registries in `insecure`.
pub fn protocol_for(insecure: Vec<String>) -> ClientProtocol {
    if insecure.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(insecure)
    }
}

/// The registries of `sources` that are reached over plain HTTP, sorted and unique.
pub fn insecure_registries<'a>(sources: impl IntoIterator<Item = &'a SourceConfig>) -> Vec<String> {
    let mut hosts: Vec<String> = sources.into_iter().filter(|s| s.insecure).map(|s| s.registry.clone()).collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The shape of a docker `config.json` that matters here.
#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(rename = "identitytoken")]
    identity_token: Option<String>,
}

/// Credentials for `source`: from its docker config when one is named and it has an
/// entry for the registry, anonymous otherwise.
pub fn registry_auth(source: &SourceConfig) -> Result<RegistryAuth, OciError> {
    let Some(path) = &source.docker_config else { return Ok(RegistryAuth::Anonymous) };
    let fail = |source| OciError::Credentials { path: path.display().to_string(), source };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.into()))?;
    auth_from_docker_config(&text, &source.registry).map_err(fail)
}

/// Parses a docker config and picks the entry for `registry` (keys may carry a
/// scheme and a path, e.g. `https://index.docker.io/v1/`).
pub fn auth_from_docker_config(text: &str, registry: &str) -> Result<RegistryAuth, DockerConfigError> {
    let config: DockerConfig = serde_json::from_str(text)?;
    let wanted = normalize_registry(registry);
    let Some(entry) = config.auths.iter().find(|(k, _)| normalize_registry(k) == wanted).map(|(_, v)| v) else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(token) = &entry.identity_token {
        return Ok(RegistryAuth::Bearer(token.clone()));
    }
    if let (Some(user), Some(pass)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), pass.clone()));
    }
    let Some(encoded) = &entry.auth else { return Ok(RegistryAuth::Anonymous) };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|source| DockerConfigError::Base64 { registry: registry.to_owned(), source })?;
    let decoded = String::from_utf8(decoded).map_err(|_| DockerConfigError::Utf8(registry.to_owned()))?;
    let (user, pass) =
        decoded.split_once(':').ok_or_else(|| DockerConfigError::NotUserPassword(registry.to_owned()))?;
    Ok(RegistryAuth::Basic(user.to_owned(), pass.to_owned()))
}

/// `https://index.docker.io/v1/` → `docker.io`; `ghcr.io` → `ghcr.io`.
fn normalize_registry(key: &str) -> String {
    let host = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

/// `registry/repository:tag`.
pub fn tag_reference(registry: &str, repository: &str, tag: &str) -> Reference {
    Reference::with_tag(registry.to_owned(), repository.to_owned(), tag.to_owned())
}

/// `registry/repository@digest`.
pub fn digest_reference(registry: &str, repository: &str, digest: &str) -> Reference {
    Reference::with_digest(registry.to_owned(), repository.to_owned(), digest.to_owned())
}

/// Pushes `data` as the blob `digest` of `reference`'s repository unless the registry
/// already holds it (a HEAD first: the same bytes are never sent twice).
pub async fn push_blob_once(
    client: &Client,
    reference: &Reference,
    digest: &str,
    data: impl Into<bytes::Bytes>,
) -> Result<(), oci_client::errors::OciDistributionError> {
    if !client.blob_exists(reference, digest).await? {
        client.push_blob(reference, data, digest).await?;
    }
    Ok(())
}

/// Wraps a client error with the registry it came from.
pub(crate) fn registry_error(registry: &str) -> impl FnOnce(oci_client::errors::OciDistributionError) -> OciError + '_ {
    move |e| OciError::Registry { registry: registry.to_owned(), source: e }
}

/// All tags of `image`'s repository with the given credentials, following the
/// registry's pagination (through [`probe`], so a throttling registry's `Retry-After`
/// is seen). The operator calls this with credentials from a Secret.
pub async fn list_repository_tags(
    client: &Client,
    image: &Reference,
    insecure: bool,
    auth: &RegistryAuth,
) -> Result<Vec<String>, OciError> {
    probe().tags(client, image, insecure, auth).await
}

/// Picks the manifest of an image index that matches the artifact's `platform`
/// (`os/arch[/variant]`) and `annotations`. Without criteria only a one-entry index
/// is accepted: taking "the first" of several would be a guess.
pub fn select_manifest<'a>(
    index: &'a OciImageIndex,
    artifact: &ArtifactConfig,
) -> Result<&'a ImageIndexEntry, OciError> {
    let matching: Vec<&ImageIndexEntry> =
        index.manifests.iter().filter(|m| platform_matches(m, artifact) && annotations_match(m, artifact)).collect();
    let criteria = || {
        let platform = artifact.platform.as_deref().unwrap_or("any");
        format!("platform {platform}, annotations {:?}", artifact.annotations)
    };
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(OciError::Select(format!("no manifest of the index matches {}", criteria()))),
        many => Err(OciError::Select(format!(
            "{} manifests of the index match {}; set artifact.platform or artifact.annotations to pick one",
            many.len(),
            criteria()
        ))),
    }
}

fn platform_matches(entry: &ImageIndexEntry, artifact: &ArtifactConfig) -> bool {
    let Some(wanted) = &artifact.platform else { return true };
    let Some(p) = &entry.platform else { return false };
    let mut parts = wanted.split('/');
    let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
    os == Some(p.os.to_string().as_str())
        && arch == Some(p.architecture.to_string().as_str())
        && variant.is_none_or(|v| p.variant.as_deref() == Some(v))
}

fn annotations_match(entry: &ImageIndexEntry, artifact: &ArtifactConfig) -> bool {
    artifact.annotations.iter().all(|(k, v)| entry.annotations.as_ref().and_then(|a| a.get(k)) == Some(v))
}

/// Picks the layer holding the firmware: the one with `artifact.mediaType` when set,
/// otherwise the manifest's single layer. Ambiguity is an error, never a guess.
pub fn select_layer<'a>(
    manifest: &'a OciImageManifest,
    artifact: &ArtifactConfig,
) -> Result<&'a OciDescriptor, OciError> {
    let candidates: Vec<&OciDescriptor> = match &artifact.media_type {
        Some(wanted) => manifest.layers.iter().filter(|l| &l.media_type == wanted).collect(),
        None => manifest.layers.iter().collect(),
    };
    let media_types = || manifest.layers.iter().map(|l| l.media_type.as_str()).collect::<Vec<_>>().join(", ");
    match (candidates.as_slice(), &artifact.media_type) {
        ([one], _) => Ok(one),
        ([], Some(wanted)) => {
            Err(OciError::Select(format!("no layer has media type {wanted} (layers: {})", media_types())))
        }
        ([], None) => Err(OciError::Select("the manifest has no layers".into())),
        (many, Some(wanted)) => Err(OciError::Select(format!("{} layers have media type {wanted}", many.len()))),
        (many, None) => Err(OciError::Select(format!(
            "the manifest has {} layers ({}); set artifact.mediaType to pick one",
            many.len(),
            media_types()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> OciImageIndex {
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:aa", "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:bb", "size": 1,
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
                 "annotations": {"board": "rev-b"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:cc", "size": 1,
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}}
            ]
        }))
        .unwrap()
    }

    fn manifest(layers: &[&str]) -> OciImageManifest {
        let layers: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, mt)| serde_json::json!({"mediaType": mt, "digest": format!("sha256:{i}"), "size": 1}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:e", "size": 2},
            "layers": layers
        }))
        .unwrap()
    }

    #[test]
    fn picks_manifest_by_platform_and_annotation() {
        let idx = index();
        let by = |platform: Option<&str>, ann: &[(&str, &str)]| {
            let artifact = ArtifactConfig {
                platform: platform.map(Into::into),
                annotations: ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            };
            select_manifest(&idx, &artifact).map(|m| m.digest.clone())
        };
        assert_eq!(by(Some("linux/amd64"), &[]).unwrap(), "sha256:aa");
        assert_eq!(by(Some("linux/arm/v6"), &[]).unwrap(), "sha256:cc");
        assert_eq!(by(None, &[("board", "rev-b")]).unwrap(), "sha256:bb");
        assert!(by(Some("linux/arm"), &[]).unwrap_err().to_string().contains("2 manifests"));
        assert!(by(None, &[]).unwrap_err().to_string().contains("3 manifests"));
        assert!(by(Some("linux/riscv64"), &[]).unwrap_err().to_string().contains("no manifest"));
    }

    #[test]
    fn picks_layer_by_media_type() {
        let m = manifest(&["application/x-bin", "text/plain"]);
        let with = |mt: Option<&str>| ArtifactConfig { media_type: mt.map(Into::into), ..Default::default() };
        assert_eq!(select_layer(&m, &with(Some("text/plain"))).unwrap().digest, "sha256:1");
        assert!(select_layer(&m, &with(None)).unwrap_err().to_string().contains("2 layers"));
        assert!(select_layer(&m, &with(Some("x/y"))).unwrap_err().to_string().contains("no layer"));
        let single = manifest(&["application/x-bin"]);
        assert_eq!(select_layer(&single, &with(None)).unwrap().digest, "sha256:0");
    }

    #[test]
    fn docker_config_auth_forms() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("bob:s3cr:et");
        let text = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{b64}"}},
                "ghcr.io": {{"username": "u", "password": "p"}}}}}}"#
        );
        assert!(matches!(auth_from_docker_config(&text, "docker.io").unwrap(),
            RegistryAuth::Basic(u, p) if u == "bob" && p == "s3cr:et"));
        assert!(matches!(auth_from_docker_config(&text, "ghcr.io").unwrap(), RegistryAuth::Basic(u, _) if u == "u"));
        assert!(matches!(auth_from_docker_config(&text, "quay.io").unwrap(), RegistryAuth::Anonymous));
        assert!(auth_from_docker_config(r#"{"auths": {"x": {"auth": "!!"}}}"#, "x").is_err());
    }
}
