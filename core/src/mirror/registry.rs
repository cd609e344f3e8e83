//! An OCI repository as one side of a mirror: its tags with their manifest digests
//! (HEAD requests only), and, in files mode, the titled layers of their manifests.
//! Signature and attestation tags of a digest (`sha256-<hex>.sig`, `.att`, …) are not
//! artifacts of their own: they are part of the identity of the tag whose digest they
//! name, so a new signature makes that tag pending.

use std::collections::BTreeMap;

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use super::error::{error_chain, MirrorError};
use super::rules::Artifact;
use crate::config::SourceConfig;
use crate::oci::{digest_reference, is_sha256_hex, list_repository_tags, registry_auth, tag_reference};

/// Manifest media types pulled as they are.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The annotation that names a layer's file (what `oras push` sets).
pub const TITLE: &str = "org.opencontainers.image.title";

/// The parts of a manifest or index that name other content.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Raw {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A content descriptor inside a manifest or index.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Whether `tag` is a signature/attestation tag of a digest; returns the digest.
pub fn attached_to(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = rest.get(..64)?;
    let suffix = &rest[64..];
    (is_sha256_hex(hex) && (suffix.is_empty() || suffix.starts_with('.'))).then(|| format!("sha256:{hex}"))
}

/// Where a repository's credentials come from.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// The source's `dockerConfig` file, read at every use (a mounted Secret).
    FromConfig,
    /// Given (the operator reads them from the Secret).
    Given(RegistryAuth),
}

/// One repository.
pub struct Repository {
    source: SourceConfig,
    credentials: Credentials,
    client: Client,
    side: &'static str,
}

impl Repository {
    /// The repository `source` names, as `side`, through `client`.
    pub fn new(source: &SourceConfig, credentials: Credentials, side: &'static str, client: Client) -> Self {
        Self { source: source.clone(), credentials, client, side }
    }

    /// The registry client (it caches tokens).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Registry, repository, and how to reach them.
    pub fn source(&self) -> &SourceConfig {
        &self.source
    }

    /// `source` or `destination`.
    pub fn side(&self) -> &'static str {
        self.side
    }

    /// The credentials to use now.
    pub fn auth(&self) -> Result<RegistryAuth, MirrorError> {
        match &self.credentials {
            Credentials::FromConfig => registry_auth(&self.source).map_err(|e| MirrorError::Config(e.to_string())),
            Credentials::Given(auth) => Ok(auth.clone()),
        }
    }

    /// The reference of `tag` in this repository.
    pub fn tag(&self, tag: &str) -> Reference {
        tag_reference(&self.source.registry, &self.source.repository, tag)
    }

    /// The reference of `digest` in this repository.
    pub fn at(&self, digest: &str) -> Reference {
        digest_reference(&self.source.registry, &self.source.repository, digest)
    }

    /// A registry error as a mirror error: a request that did not get through is
    /// `Unreachable`, anything else the registry said is `Registry`.
    pub fn error(&self) -> impl Fn(OciDistributionError) -> MirrorError + '_ {
        move |e| match &e {
            OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
                MirrorError::Unreachable { side: self.side, message: error_chain(&e) }
            }
            _ => MirrorError::Registry(format!("{} {}: {}", self.side, self.source.registry, error_chain(&e))),
        }
    }

    /// Tag → manifest digest, for every tag. A repository that does not exist yet
    /// holds nothing.
    pub async fn tags(&self) -> Result<BTreeMap<String, String>, MirrorError> {
        let auth = self.auth()?;
        let tags = match list_repository_tags(&self.client, &self.tag("latest"), &auth).await {
            Ok(tags) => tags,
            Err(e) if is_unknown_repository(&e) => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.error()(e)),
        };
        let mut found = BTreeMap::new();
        for tag in tags {
            let digest = self.client.fetch_manifest_digest(&self.tag(&tag), &auth).await.map_err(self.error())?;
            found.insert(tag, digest);
        }
        Ok(found)
    }

    /// Each tag that is not a signature tag, with its digest and the signature tags
    /// of that digest (`tag=digest`, space-separated) as its identity.
    pub async fn list(&self) -> Result<Vec<Artifact>, MirrorError> {
        let tags = self.tags().await?;
        let mut attachments: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tag, digest) in &tags {
            if let Some(subject) = attached_to(tag) {
                attachments.entry(subject).or_default().push(format!("{tag}={digest}"));
            }
        }
        Ok(tags
            .iter()
            .filter(|(tag, _)| attached_to(tag).is_none())
            .map(|(tag, digest)| {
                let mut identity = digest.clone();
                for a in attachments.get(digest).into_iter().flatten() {
                    identity.push(' ');
                    identity.push_str(a);
                }
                Artifact { name: tag.clone(), size: 0, time: 0.0, digest: Some(identity) }
            })
            .collect())
    }

    /// Files mode (the other side is a store): every layer with a title of every
    /// tag's manifest, named by its title, identified by its digest (the file's
    /// SHA-256). When several tags hold the same title, the last tag in order wins.
    pub async fn list_files(&self) -> Result<Vec<Artifact>, MirrorError> {
        let auth = self.auth()?;
        let mut files = BTreeMap::new();
        for (tag, digest) in self.tags().await? {
            if attached_to(&tag).is_some() {
                continue;
            }
            let (raw, _) =
                self.client.pull_manifest_raw(&self.at(&digest), &auth, MANIFEST_TYPES).await.map_err(self.error())?;
            let Ok(parsed) = serde_json::from_slice::<Raw>(&raw) else { continue };
            for layer in parsed.layers {
                let (Some(title), Some(hex)) = (layer.annotations.get(TITLE), layer.digest.strip_prefix("sha256:"))
                else {
                    continue;
                };
                let file = Artifact { name: title.clone(), size: layer.size, time: 0.0, digest: Some(hex.to_owned()) };
                files.insert(title.clone(), file);
            }
        }
        Ok(files.into_values().collect())
    }
}

/// The registry does not know the repository (`NAME_UNKNOWN`, or a bare 404).
pub fn is_unknown_repository(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::NameUnknown | OciErrorCode::NotFound))
        }
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_tags_name_their_digest() {
        let hex = "ab".repeat(32);
        assert_eq!(attached_to(&format!("sha256-{hex}.sig")), Some(format!("sha256:{hex}")));
        assert_eq!(attached_to(&format!("sha256-{hex}.att")), Some(format!("sha256:{hex}")));
        assert_eq!(attached_to(&format!("sha256-{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(attached_to("v1.2.3"), None);
        assert_eq!(attached_to(&format!("sha256-{hex}x")), None);
        assert_eq!(attached_to("sha256-abc.sig"), None);
    }
}
