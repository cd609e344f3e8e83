//! Version resolution from registry metadata only: the tag list, a HEAD of the
//! manifest, and the manifest itself when the digest is new (for the layer size and to
//! check that the artifact has the layer the spec asks for). Payloads are never pulled.

use futures::future::BoxFuture;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use ota_gateway::config::ArtifactConfig;
use ota_gateway::oci::{list_repository_tags, pull_image_manifest, select_layer, OciError};
use ota_gateway::version::{parse_range, parse_tag, select_latest};
use updraft_crds::channel::VersionPolicy;
use updraft_crds::{OciSource, ResolvedVersion};

use crate::error::{Error, Result};

/// Everything needed to resolve one channel.
pub struct ResolveRequest<'a> {
    pub source: &'a OciSource,
    pub auth: RegistryAuth,
    pub policy: &'a VersionPolicy,
    pub artifact: ArtifactConfig,
    /// What status says now: when the digest is unchanged, its size is reused and the
    /// manifest is not fetched again.
    pub known: Option<&'a ResolvedVersion>,
}

/// A resolved artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub version: String,
    pub tag: String,
    pub digest: String,
    pub size: Option<i64>,
}

/// Resolves a channel's version. Behind a trait so a unit test can stand in for the
/// registry; everything above unit tests uses [`OciResolver`] against a real one.
pub trait Resolver: Send + Sync {
    fn resolve<'a>(&'a self, request: ResolveRequest<'a>) -> BoxFuture<'a, Result<Resolution>>;
}

/// The registry resolver: one shared client per protocol (the clients cache tokens).
pub struct OciResolver {
    https: Client,
    http: Client,
}

impl Default for OciResolver {
    fn default() -> Self {
        let client = |protocol| {
            Client::new(ClientConfig {
                protocol,
                platform_resolver: None,
                connect_timeout: Some(std::time::Duration::from_secs(5)),
                read_timeout: Some(std::time::Duration::from_secs(20)),
                user_agent: concat!("updraft-operator/", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            })
        };
        Self { https: client(ClientProtocol::Https), http: client(ClientProtocol::Http) }
    }
}

impl Resolver for OciResolver {
    fn resolve<'a>(&'a self, request: ResolveRequest<'a>) -> BoxFuture<'a, Result<Resolution>> {
        Box::pin(self.resolve_now(request))
    }
}

impl OciResolver {
    fn client(&self, source: &OciSource) -> &Client {
        if source.insecure { &self.http } else { &self.https }
    }

    async fn resolve_now(&self, request: ResolveRequest<'_>) -> Result<Resolution> {
        let source = request.source;
        let client = self.client(source);
        let (version, tag) = match request.policy.pin.as_deref() {
            Some(digest) if digest.starts_with("sha256:") => (String::new(), String::new()),
            Some(tag) => {
                let version = parse_tag(tag, request.policy.allow_v_prefix).map(|v| v.to_string()).unwrap_or_else(|| tag.to_owned());
                (version, tag.to_owned())
            }
            None => {
                let tags = list_repository_tags(client, &reference(source, "latest"), &request.auth).await.map_err(unreachable(source))?;
                let range = parse_range(&request.policy.range).map_err(Error::InvalidSpec)?;
                let selected = select_latest(tags.iter().map(String::as_str), &range, request.policy.prerelease, request.policy.allow_v_prefix)
                    .ok_or_else(|| no_match(source, request.policy, tags.len()))?;
                (selected.version.to_string(), selected.tag)
            }
        };
        let digest = match request.policy.pin.as_deref() {
            Some(digest) if digest.starts_with("sha256:") => digest.to_owned(),
            _ => client
                .fetch_manifest_digest(&reference(source, &tag), &request.auth)
                .await
                .map_err(unreachable(source))?,
        };
        if let Some(known) = request.known.filter(|k| k.digest == digest && (tag.is_empty() || k.tag == tag)) {
            return Ok(Resolution { version: known.version.clone(), tag: known.tag.clone(), digest, size: known.size });
        }
        let (size, annotated_version) = self.layer_size(client, source, &request.auth, &digest, &request.artifact).await?;
        let version = if version.is_empty() { annotated_version.unwrap_or_else(|| short_digest(&digest)) } else { version };
        Ok(Resolution { version, tag, digest, size: Some(size) })
    }

    /// Size of the selected layer of the manifest at `digest` (following an image index
    /// to the platform's manifest), and the manifest's `org.opencontainers.image.version`.
    async fn layer_size(
        &self,
        client: &Client,
        source: &OciSource,
        auth: &RegistryAuth,
        digest: &str,
        artifact: &ArtifactConfig,
    ) -> Result<(i64, Option<String>)> {
        let unusable = |e: OciError| Error::NoMatchingVersion(format!("{}@{digest}: {e}", source.reference()));
        let manifest = pull_image_manifest(client, &by_digest(source, digest), auth, artifact).await.map_err(|e| match e {
            OciError::Registry { source: e, .. } => unreachable(source)(e),
            other => unusable(other),
        })?;
        let layer = select_layer(&manifest, artifact).map_err(unusable)?;
        let version = manifest.annotations.as_ref().and_then(|a| a.get("org.opencontainers.image.version")).cloned();
        Ok((layer.size, version))
    }
}

/// Turns a registry error into `RegistryUnreachable`, naming the repository.
fn unreachable(source: &OciSource) -> impl Fn(oci_client::errors::OciDistributionError) -> Error + '_ {
    move |e| Error::RegistryUnreachable(format!("{}: {e}", source.reference()))
}

fn no_match(source: &OciSource, policy: &VersionPolicy, tag_count: usize) -> Error {
    let pre = if policy.prerelease { "" } else { " (pre-releases excluded)" };
    Error::NoMatchingVersion(format!(
        "none of the {tag_count} tags of {} satisfies range {:?}{pre}",
        source.reference(),
        policy.range
    ))
}

fn reference(source: &OciSource, tag: &str) -> Reference {
    Reference::with_tag(source.registry.clone(), source.repository.clone(), tag.to_owned())
}

fn by_digest(source: &OciSource, digest: &str) -> Reference {
    Reference::with_digest(source.registry.clone(), source.repository.clone(), digest.to_owned())
}

fn short_digest(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Validates what resolution will need from a spec, so a bad spec is reported as
/// `Stalled` before anything talks to a registry.
pub fn validate_source(source: &OciSource) -> Result<(), String> {
    if source.registry.is_empty() || source.registry.contains('/') || source.registry.contains("://") {
        return Err(format!("source.registry {:?} must be a host[:port] without scheme or path", source.registry));
    }
    let reference = format!("{}/{}:latest", source.registry, source.repository);
    reference
        .parse::<Reference>()
        .map_err(|e| format!("source.repository {:?} is not a valid repository: {e}", source.repository))?;
    if source.repository.is_empty() || source.repository != source.repository.to_ascii_lowercase() {
        return Err(format!("source.repository {:?} must be non-empty lowercase", source.repository));
    }
    Ok(())
}
