//! Version resolution from registry metadata only: the tag list, a HEAD of the
//! manifest, and the manifest itself when the digest is new (for the layer size and to
//! check that the artifact has the layer the spec asks for); under `spec.verify`, the
//! newest release whose cosign signature verifies (small payloads and bundles), newer
//! ones that do not being skipped ([`resolve_verified`]). Payloads are never pulled.

use futures::future::BoxFuture;
use oci_client::manifest::OciManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use tracing::{info, warn};
use updraft_core::config::ArtifactConfig;
use updraft_core::cosign::{Verified, Verifier};
use updraft_core::oci::{self, pull_image_manifest, select_layer, OciError};
use updraft_core::version::{resolve_latest, resolve_verified, Lookup, ResolveError, Rule, Skipped};
use updraft_crds::channel::VersionPolicy;
use updraft_crds::{ChannelDelta, OciSource, ResolvedVersion};

use crate::clients::Clients;
use crate::delta::{self, Base};
use crate::error::{Error, Result, SpecError};

/// Everything needed to resolve one channel.
pub(crate) struct ResolveRequest<'a> {
    pub source: &'a OciSource,
    pub auth: RegistryAuth,
    pub policy: &'a VersionPolicy,
    pub artifact: ArtifactConfig,
    /// What status says now: when the digest is unchanged, its size is reused and the
    /// manifest is not fetched again.
    pub known: Option<&'a ResolvedVersion>,
    /// Under `spec.verify`: the keys a release's signature must verify with before it
    /// may be pinned.
    pub verifier: Option<&'a Verifier>,
}

/// The operator's error for what the resolver said.
fn resolve_error(source: &OciSource, e: ResolveError) -> Error {
    match e {
        ResolveError::Registry(e) => Error::registry(&source.reference(), &e),
        ResolveError::InvalidRule(reason) => Error::InvalidSpec(SpecError::new("version", reason.to_string())),
        no_match @ ResolveError::NoMatch { .. } => Error::NoMatchingVersion(no_match.to_string()),
        ref unverified @ ResolveError::Unverified { ref skipped, .. } => Error::Unverified {
            reason: skipped.first().map_or("NoSignature", |s| s.reason),
            message: unverified.to_string(),
            skipped: skipped.clone(),
        },
    }
}

/// A resolved artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolution {
    pub version: String,
    pub tag: String,
    pub digest: String,
    pub size: Option<i64>,
    /// The signature that verified, under `spec.verify`.
    pub verified: Option<Verified>,
    /// Under `spec.verify`: newer releases skipped because their signature did not
    /// verify, newest first.
    pub skipped: Vec<Skipped>,
}

/// What to look for of a channel's delta patches (`spec.delta`).
pub(crate) struct DeltaRequest<'a> {
    pub source: &'a OciSource,
    pub auth: RegistryAuth,
    pub allow_v_prefix: bool,
    /// The bases chosen, the most run first.
    pub bases: Vec<Base>,
    /// The release the patches produce (`status.latest`).
    pub target: &'a ResolvedVersion,
    /// `status.deltas` now: a patch found before is not read again.
    pub known: &'a [ChannelDelta],
}

/// Resolves a channel's version and finds its delta patches. Behind a trait so a unit
/// test can stand in for the registry; everything above unit tests uses [`OciResolver`]
/// against a real one.
pub(crate) trait Resolver: Send + Sync {
    fn resolve<'a>(&'a self, request: ResolveRequest<'a>) -> BoxFuture<'a, Result<Resolution>>;

    /// One `status.deltas` entry per base found in the registry (pending, or with the
    /// patch's digest once built), in the request's order; bases the registry does not
    /// hold are left out. A stand-in registry holds none.
    fn deltas<'a>(&'a self, request: DeltaRequest<'a>) -> BoxFuture<'a, Result<Vec<ChannelDelta>>> {
        let _ = request;
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The registry resolver, on the process's shared registry clients (they cache tokens).
pub(crate) struct OciResolver {
    clients: Clients,
}

impl Resolver for OciResolver {
    fn resolve<'a>(&'a self, request: ResolveRequest<'a>) -> BoxFuture<'a, Result<Resolution>> {
        Box::pin(self.resolve_now(request))
    }

    fn deltas<'a>(&'a self, request: DeltaRequest<'a>) -> BoxFuture<'a, Result<Vec<ChannelDelta>>> {
        Box::pin(self.deltas_now(request))
    }
}

impl OciResolver {
    pub fn new(clients: &Clients) -> Self {
        Self { clients: clients.clone() }
    }

    fn client(&self, source: &OciSource) -> &Client {
        self.clients.registry(source.insecure)
    }

    async fn resolve_now(&self, request: ResolveRequest<'_>) -> Result<Resolution> {
        let (source, policy) = (request.source, request.policy);
        let client = self.client(source);
        let rule = Rule {
            range: &policy.range,
            prerelease: policy.prerelease,
            allow_v_prefix: policy.allow_v_prefix,
            pin: policy.pin.as_deref(),
        };
        let lookup = Lookup {
            registry: &source.registry,
            repository: &source.repository,
            insecure: source.insecure,
            auth: &request.auth,
            rule,
        };
        let (resolved, verified, skipped) = match request.verifier {
            None => {
                let resolved = resolve_latest(client, lookup).await;
                (resolved.map_err(|e| resolve_error(source, e))?, None, Vec::new())
            }
            Some(verifier) => {
                let release = resolve_verified(client, lookup, verifier).await.map_err(|e| resolve_error(source, e))?;
                (release.resolved, Some(release.verified), release.skipped)
            }
        };
        let digest = resolved.digest.clone();
        let tag = resolved.tag.clone();
        if let Some(known) = request.known.filter(|k| k.digest == digest && (tag.is_empty() || k.tag == tag)) {
            let (version, tag, size) = (known.version.clone(), known.tag.clone(), known.size);
            return Ok(Resolution { version, tag, digest, size, verified, skipped });
        }
        let (size, annotated_version) =
            self.layer_size(client, source, &request.auth, &digest, &request.artifact).await?;
        let version = match (&resolved.version, tag.is_empty()) {
            (Some(v), _) => v.clone(),
            (None, false) => tag.clone(),
            (None, true) => annotated_version.unwrap_or_else(|| resolved.display_version()),
        };
        Ok(Resolution { version, tag, digest, size: Some(size), verified, skipped })
    }

    /// The tag list once; for each base not pinned yet its tag and a HEAD of its
    /// manifest; for each patch tag listed and not known, its manifest (see [`delta`]).
    async fn deltas_now(&self, request: DeltaRequest<'_>) -> Result<Vec<ChannelDelta>> {
        let DeltaRequest { source, auth, allow_v_prefix, bases, target, known } = request;
        let client = self.client(source);
        let failed = |e: OciError| Error::registry(&source.reference(), &e);
        let (registry, repository) = (&source.registry, &source.repository);
        let image = oci::tag_reference(registry, repository, "latest");
        let tags = oci::list_repository_tags(client, &image, source.insecure, &auth).await.map_err(failed)?;
        let mut deltas = Vec::new();
        for Base { version, pinned } in bases {
            let listed = |tag: &str| tags.iter().any(|t| t == tag);
            let (from_tag, from_digest) = match pinned {
                Some(pinned) => pinned,
                None => {
                    let Some(tag) = delta::base_tag(&tags, &version, allow_v_prefix) else {
                        info!(base = %version, "no tag of the registry is this version: no delta from it");
                        continue;
                    };
                    let reference = oci::tag_reference(registry, repository, tag);
                    let digest = match oci::probe().manifest_digest(client, &reference, source.insecure, &auth).await {
                        Ok(Some(digest)) => digest,
                        Ok(None) => client
                            .fetch_manifest_digest(&reference, &auth)
                            .await
                            .map_err(|e| failed(OciError::Registry { registry: registry.clone(), source: e }))?,
                        Err(e) if oci::is_unknown_repository(&e) => continue,
                        Err(e) => return Err(failed(e)),
                    };
                    (tag.to_owned(), digest)
                }
            };
            if from_digest == target.digest {
                continue;
            }
            let entry = ChannelDelta {
                tag: updraft_core::delta::tag(&from_digest, &target.digest),
                from: version,
                from_tag,
                from_digest,
                to: target.version.clone(),
                to_digest: target.digest.clone(),
                ..Default::default()
            };
            let before =
                known.iter().find(|k| k.digest.is_some() && k.tag == entry.tag && k.to_digest == entry.to_digest);
            let entry = match before {
                Some(before) if listed(&entry.tag) => ChannelDelta { from: entry.from, ..before.clone() },
                _ if listed(&entry.tag) => self.read_patch(client, source, &auth, entry).await?,
                _ => entry,
            };
            deltas.push(entry);
        }
        Ok(deltas)
    }

    /// `entry` with its patch's digest, when the manifest tagged `entry.tag` is one;
    /// unchanged (still to build) otherwise, with a warning.
    async fn read_patch(
        &self,
        client: &Client,
        source: &OciSource,
        auth: &RegistryAuth,
        entry: ChannelDelta,
    ) -> Result<ChannelDelta> {
        let reference = oci::tag_reference(&source.registry, &source.repository, &entry.tag);
        let (manifest, digest) = match client.pull_manifest(&reference, auth).await {
            Ok(pulled) => pulled,
            Err(e) if updraft_core::oci::is_not_found(&e) => return Ok(entry),
            Err(e) => {
                let e = OciError::Registry { registry: source.registry.clone(), source: e };
                return Err(Error::registry(&source.reference(), &e));
            }
        };
        let checked = match &manifest {
            OciManifest::Image(image) => delta::built(&entry, image, &digest),
            OciManifest::ImageIndex(_) => Err("an image index, not a patch".to_owned()),
        };
        Ok(checked.unwrap_or_else(|why| {
            warn!(tag = %entry.tag, %digest, "not taken for the delta from {} to {}: {why}", entry.from, entry.to);
            entry
        }))
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
        let manifest = pull_image_manifest(
            client,
            &oci::digest_reference(&source.registry, &source.repository, digest),
            auth,
            artifact,
        )
        .await
        .map_err(|e| match e {
            e @ (OciError::Registry { .. } | OciError::Unavailable { .. }) => Error::registry(&source.reference(), &e),
            other => unusable(other),
        })?;
        let layer = select_layer(&manifest, artifact).map_err(unusable)?;
        let version = manifest.annotations.as_ref().and_then(|a| a.get("org.opencontainers.image.version")).cloned();
        Ok((layer.size, version))
    }
}
