//! Cosign signature verification: is a release's manifest digest signed by a trusted key?
//!
//! A FirmwareChannel (operator) and a standalone channel (gateway) pin a release only when
//! [`Verifier::verify`] says so, and both call this one implementation. It looks in both
//! places cosign puts signatures:
//!
//! 1. the tag scheme of cosign 2 (`specs/SIGNATURE_SPEC.md`): a manifest at tag
//!    `sha256-<hex>.sig` whose simple-signing layers carry the signature in the
//!    `dev.cosignproject.cosign/signature` annotation;
//! 2. OCI 1.1 referrers of the digest carrying a sigstore bundle (cosign 3,
//!    `specs/BUNDLE_SPEC.md`), from the referrers API or, on a registry without one (it
//!    answers 404), from the referrers tag schema's index at tag `sha256-<hex>`.
//!
//! Verification is key-based (ECDSA P-256, as `cosign generate-key-pair` makes); a
//! transparency log is not consulted. Keyless trust (Fulcio certificates, Rekor) needs
//! the public internet and is left for another [`Trust`] variant.
//!
//! Only registry metadata and small blobs (payloads, bundles) are read: never the
//! release itself.

mod keys;
mod payload;

use std::path::PathBuf;

use oci_client::errors::OciDistributionError;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};

use keys::Keys;
pub use keys::{KeyError, PublicKey, Trust};
use payload::{Check, BUNDLE_MEDIA_TYPE_PREFIX};

use crate::oci::{self, OciError};

/// Media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding a tag-scheme signature (base64 DER).
pub(crate) const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The artifact type (and layer media type) of a sigstore bundle, v0.3.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Payloads and bundles are small (a few KiB); a bigger blob is not read.
const MAX_BLOB: usize = 1 << 20;
/// At most this many bundle referrers are examined for one digest.
const MAX_REFERRERS: usize = 32;

/// A standalone channel's signature requirement in `gateway.yaml` (`policy.verify`): a
/// resolved release is pinned only when it verifies with one of these keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyConfig {
    /// PEM public key files (`cosign.pub`); a signature by any one of them will do.
    pub public_key_files: Vec<PathBuf>,
}

impl VerifyConfig {
    /// Reads the key files into a verifier (at least one file).
    pub fn verifier(&self) -> Result<Verifier, KeyError> {
        let trust = self.public_key_files.iter().map(|path| PublicKey::from_file(path).map(Trust::Key));
        Verifier::new(trust.collect::<Result<_, _>>()?)
    }
}

/// Checks signatures against a fixed set of trusted keys. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: Keys,
}

/// Where a verified signature was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// A simple-signing payload at tag `sha256-<hex>.sig` (cosign 2).
    Tag,
    /// A sigstore bundle referring to the digest (cosign 3).
    Bundle,
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::Tag => "tag signature",
            Scheme::Bundle => "sigstore bundle",
        })
    }
}

/// A signature that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The name of the key it verified with.
    pub key: String,
    pub scheme: Scheme,
    /// The digest of the manifest that carries the signature.
    pub signature: String,
}

/// Why a digest is not verified. Each variant names the digest it is about.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Neither a `.sig` tag nor a bundle referrer exists for the digest.
    #[error("no cosign signature for {digest}")]
    NoSignature { digest: String },
    /// Signatures exist, and none verifies with a trusted key.
    #[error(
        "{found} signature(s) for {digest}, none verifies with the trusted keys ({keys}): signed with another key, or altered after signing"
    )]
    WrongKey { digest: String, found: usize, keys: String },
    /// A trusted key signed another digest (a signature copied from another release).
    #[error("the signature found for {wanted} is a trusted signature of {signed}")]
    OtherDigest { signed: String, wanted: String },
    /// The signature material is malformed or inconsistent.
    #[error("the signature for {digest} is tampered: {reason}")]
    Tampered { digest: String, reason: String },
    /// The registry did not answer, or refused; retrying may help.
    #[error(transparent)]
    Registry(#[from] OciError),
    /// The digest asked about is not `sha256:<64 hex>`.
    #[error("{0:?} is not a sha256:<64 hex> digest")]
    InvalidDigest(String),
}

impl VerifyError {
    /// A CamelCase reason for a `Verified=False` condition and its event.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::NoSignature { .. } => "NoSignature",
            VerifyError::WrongKey { .. } => "WrongKey",
            VerifyError::OtherDigest { .. } => "OtherDigest",
            VerifyError::Tampered { .. } => "Tampered",
            VerifyError::Registry(_) => "RegistryError",
            VerifyError::InvalidDigest(_) => "InvalidDigest",
        }
    }

    /// Whether asking again later may give another answer (the registry failed), as
    /// opposed to the signatures being what they are until someone pushes new ones.
    pub fn is_transient(&self) -> bool {
        matches!(self, VerifyError::Registry(_))
    }
}

/// One piece of signature material and what it said.
struct Found {
    scheme: Scheme,
    /// Digest of the manifest carrying it.
    manifest: String,
    check: Check,
}

impl Verifier {
    /// A verifier trusting each of `trust` (at least one).
    pub fn new(trust: Vec<Trust>) -> Result<Self, KeyError> {
        Ok(Self { keys: Keys::new(trust)? })
    }

    /// A verifier trusting PEM public keys, each `(name, pem)`.
    pub fn from_pems<'a>(pems: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, KeyError> {
        let trust = pems.into_iter().map(|(name, pem)| PublicKey::from_pem(name, pem).map(Trust::Key));
        Self::new(trust.collect::<Result<_, _>>()?)
    }

    /// A verifier from a set of named entries, as a Kubernetes Secret holds them (like
    /// Flux's `verify.secretRef`): the entry `key` when given, otherwise every entry whose
    /// name ends in `.pub`. `source_name` (e.g. `Secret ns/cosign-keys`) names the set in
    /// errors; each key is named `source_name/entry`.
    pub fn from_key_set<'a>(
        source_name: &str,
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        key: Option<&str>,
    ) -> Result<Self, KeyError> {
        let missing =
            || KeyError::Missing { source_name: source_name.to_owned(), key: key.unwrap_or("*.pub").to_owned() };
        let chosen: Vec<(&str, &[u8])> = entries
            .into_iter()
            .filter(|(name, _)| match key {
                Some(key) => *name == key,
                None => name.ends_with(".pub"),
            })
            .collect();
        if chosen.is_empty() {
            return Err(missing());
        }
        let trust = chosen.into_iter().map(|(name, bytes)| {
            let name = format!("{source_name}/{name}");
            let pem = std::str::from_utf8(bytes)
                .map_err(|_| KeyError::Pem { name: name.clone(), reason: "not UTF-8".into() })?;
            PublicKey::from_pem(name, pem).map(Trust::Key)
        });
        Self::new(trust.collect::<Result<_, _>>()?)
    }

    /// The trusted keys' names, comma-separated.
    pub fn key_names(&self) -> String {
        self.keys.names()
    }

    /// Verifies that `digest` (a manifest of `registry/repository`) carries a signature
    /// by a trusted key, in either place cosign puts them. The first signature that
    /// verifies wins. Otherwise the error says why, preferring the most telling
    /// failure: a registry error (retry), a trusted signature of another digest,
    /// tampered material, signatures by other keys, and last no signature at all.
    pub async fn verify(
        &self,
        client: &Client,
        registry: &str,
        repository: &str,
        auth: &RegistryAuth,
        digest: &str,
    ) -> Result<Verified, VerifyError> {
        if !crate::oci::is_digest(digest) {
            return Err(VerifyError::InvalidDigest(digest.to_owned()));
        }
        let mut found = Vec::new();
        let mut registry_error = None;
        let sources = [Scheme::Tag, Scheme::Bundle];
        for scheme in sources {
            let result = match scheme {
                Scheme::Tag => self.tag_signatures(client, registry, repository, auth, digest).await,
                Scheme::Bundle => self.bundle_signatures(client, registry, repository, auth, digest).await,
            };
            match result {
                Ok(more) => found.extend(more),
                Err(e) => registry_error = registry_error.or(Some(e)),
            }
            if let Some(verified) = first_verified(&found) {
                return Ok(verified);
            }
        }
        Err(conclude(&self.keys, found, registry_error, digest))
    }

    /// The simple-signing payloads at tag `sha256-<hex>.sig`, checked.
    async fn tag_signatures(
        &self,
        client: &Client,
        registry: &str,
        repository: &str,
        auth: &RegistryAuth,
        digest: &str,
    ) -> Result<Vec<Found>, OciError> {
        let tag = format!("{}.sig", digest.replace(':', "-"));
        let reference = oci::tag_reference(registry, repository, &tag);
        let (manifest, manifest_digest) = match client.pull_manifest(&reference, auth).await {
            Ok(m) => m,
            Err(e) if crate::oci::is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(oci::registry_error(registry)(e)),
        };
        let found = |check| Found { scheme: Scheme::Tag, manifest: manifest_digest.clone(), check };
        let OciManifest::Image(image) = manifest else {
            return Ok(vec![found(Check::Tampered(format!(
                "tag {tag} holds an image index, not a signature manifest"
            )))]);
        };
        let layers: Vec<&OciDescriptor> =
            image.layers.iter().filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE).collect();
        if layers.is_empty() {
            return Ok(vec![found(Check::Tampered(format!("tag {tag} has no {SIMPLE_SIGNING_MEDIA_TYPE} layer")))]);
        }
        let mut checks = Vec::with_capacity(layers.len());
        for layer in layers {
            let signature = layer.annotations.as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION));
            let check = match pull_small_blob(client, &reference, layer, registry).await? {
                Ok(payload) => {
                    payload::check_simple_signing(&self.keys, &payload, signature.map(String::as_str), digest)
                }
                Err(tampered) => tampered,
            };
            checks.push(found(check));
        }
        Ok(checks)
    }

    /// The sigstore bundles referring to `digest`, checked.
    async fn bundle_signatures(
        &self,
        client: &Client,
        registry: &str,
        repository: &str,
        auth: &RegistryAuth,
        digest: &str,
    ) -> Result<Vec<Found>, OciError> {
        // `pull_referrers` takes no credentials: it uses those stored for the registry.
        client.store_auth_if_needed(registry, auth).await;
        let subject = oci::digest_reference(registry, repository, digest);
        // The referrers API, or on a 404 the referrers tag schema (`sha256-<hex>`).
        let index = client.pull_referrers(&subject, None).await.map_err(oci::registry_error(registry))?;
        let bundles = index.manifests.iter().filter(|m| is_bundle(m)).take(MAX_REFERRERS);
        let mut checks = Vec::new();
        for entry in bundles {
            let reference = subject.clone_with_digest(entry.digest.clone());
            let found = |check| Found { scheme: Scheme::Bundle, manifest: entry.digest.clone(), check };
            let manifest = match client.pull_manifest(&reference, auth).await {
                Ok((OciManifest::Image(image), _)) => image,
                Ok((OciManifest::ImageIndex(_), _)) if says_bundle(entry) => {
                    checks.push(found(Check::Tampered(format!("referrer {} is an index", entry.digest))));
                    continue;
                }
                // An index whose entry did not claim to be a bundle is something else.
                Ok((OciManifest::ImageIndex(_), _)) => continue,
                Err(e) => return Err(oci::registry_error(registry)(e)),
            };
            for layer in manifest.layers.iter().filter(|l| l.media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX)) {
                let check = match pull_small_blob(client, &reference, layer, registry).await? {
                    Ok(bundle) => payload::check_bundle(&self.keys, &bundle, digest),
                    Err(tampered) => tampered,
                };
                checks.push(found(check));
            }
        }
        Ok(checks)
    }
}

/// The artifact type a referrers index entry gets from a manifest with an empty config
/// and no `artifactType` of its own, as go-containerregistry computes it.
const OCI_EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// Whether a referrer may be a bundle, by its index entry: its artifact type says so,
/// or says nothing useful. The referrers tag schema index cosign 2.5 writes (`cosign
/// attest --new-bundle-format` on a registry without the referrers API) gives its bundle
/// the config's media type, `application/vnd.oci.empty.v1+json`, the bundle type only
/// inside the manifest; such a manifest is read, and only its bundle layers count.
fn is_bundle(entry: &ImageIndexEntry) -> bool {
    says_bundle(entry) || entry.artifact_type.as_deref().is_none_or(|t| t == OCI_EMPTY_MEDIA_TYPE)
}

/// Whether a referrers index entry's artifact type is a sigstore bundle's.
fn says_bundle(entry: &ImageIndexEntry) -> bool {
    entry.artifact_type.as_deref().is_some_and(|t| t.starts_with(BUNDLE_MEDIA_TYPE_PREFIX))
}

fn first_verified(found: &[Found]) -> Option<Verified> {
    found.iter().find_map(|f| match &f.check {
        Check::Verified { key } => Some(Verified { key: key.clone(), scheme: f.scheme, signature: f.manifest.clone() }),
        _ => None,
    })
}

/// The error for a digest none of whose signature material verified.
fn conclude(keys: &Keys, found: Vec<Found>, registry: Option<OciError>, digest: &str) -> VerifyError {
    if let Some(e) = registry {
        return VerifyError::Registry(e);
    }
    let signatures: Vec<Check> = found.into_iter().map(|f| f.check).filter(|c| *c != Check::NotASignature).collect();
    if let Some(signed) = signatures.iter().find_map(|c| match c {
        Check::OtherDigest { signed } => Some(signed.clone()),
        _ => None,
    }) {
        return VerifyError::OtherDigest { signed, wanted: digest.to_owned() };
    }
    if let Some(reason) = signatures.iter().find_map(|c| match c {
        Check::Tampered(reason) => Some(reason.clone()),
        _ => None,
    }) {
        return VerifyError::Tampered { digest: digest.to_owned(), reason };
    }
    if signatures.is_empty() {
        return VerifyError::NoSignature { digest: digest.to_owned() };
    }
    VerifyError::WrongKey { digest: digest.to_owned(), found: signatures.len(), keys: keys.names() }
}

/// Pulls a payload or bundle blob. The outer error is the registry failing; the inner
/// one is material that cannot be trusted (too big, or not matching its digest).
///
/// The size a descriptor declares is a claim: it caps what is read (at most
/// [`MAX_BLOB`]), and the buffer grows only with the bytes received. A registry that
/// sends more than declared is cut off at the first byte past it, not read to the end.
async fn pull_small_blob(
    client: &Client,
    reference: &Reference,
    layer: &OciDescriptor,
    registry: &str,
) -> Result<Result<Vec<u8>, Check>, OciError> {
    let declared = match usize::try_from(layer.size) {
        Ok(size) if size <= MAX_BLOB => size,
        _ => return Ok(Err(Check::Tampered(format!("blob {} declares {} bytes", layer.digest, layer.size)))),
    };
    let mut sink = Capped::new(declared);
    let result = client.pull_blob(reference, layer, &mut sink).await;
    if sink.overflowed {
        return Ok(Err(Check::Tampered(format!(
            "blob {} sends more than the {declared} bytes its descriptor declares",
            layer.digest
        ))));
    }
    match result {
        Ok(()) if sink.buf.len() == declared => Ok(Ok(sink.buf)),
        Ok(()) => Ok(Err(Check::Tampered(format!(
            "blob {} is {} bytes, its descriptor says {declared}",
            layer.digest,
            sink.buf.len()
        )))),
        Err(OciDistributionError::DigestError(e)) => {
            Ok(Err(Check::Tampered(format!("blob {} does not match its digest: {e}", layer.digest))))
        }
        Err(e) => Err(oci::registry_error(registry)(e)),
    }
}

/// An in-memory sink holding at most `limit` bytes; a write past it fails (which ends
/// the blob's download) and marks the sink `overflowed`.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Capped {
    fn new(limit: usize) -> Self {
        Self { buf: Vec::new(), limit, overflowed: false }
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if data.len() > self.limit - self.buf.len() {
            self.overflowed = true;
            let error = std::io::Error::other("more bytes than the descriptor declares");
            return std::task::Poll::Ready(Err(error));
        }
        self.buf.extend_from_slice(data);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::keys::testkey::TestKey;
    use super::*;

    const WANTED: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn found(check: Check) -> Found {
        Found { scheme: Scheme::Tag, manifest: "sha256:aa".into(), check }
    }

    fn keys() -> Keys {
        Keys::new(vec![Trust::Key(TestKey::new(1).public("ours"))]).unwrap()
    }

    #[test]
    fn concludes_with_the_most_telling_failure() {
        let reason = |found: Vec<Found>| conclude(&keys(), found, None, WANTED).reason();
        assert_eq!(reason(vec![]), "NoSignature");
        assert_eq!(reason(vec![found(Check::NotASignature)]), "NoSignature");
        assert_eq!(reason(vec![found(Check::WrongKey), found(Check::NotASignature)]), "WrongKey");
        assert_eq!(reason(vec![found(Check::WrongKey), found(Check::Tampered("x".into()))]), "Tampered");
        let other = Check::OtherDigest { signed: "sha256:22".into() };
        assert_eq!(reason(vec![found(Check::Tampered("x".into())), found(other)]), "OtherDigest");
        let registry = OciError::Select("down".into());
        assert_eq!(conclude(&keys(), vec![found(Check::WrongKey)], Some(registry), WANTED).reason(), "RegistryError");
        let wrong = conclude(&keys(), vec![found(Check::WrongKey), found(Check::WrongKey)], None, WANTED);
        assert_eq!(wrong.to_string(), format!("2 signature(s) for {WANTED}, none verifies with the trusted keys (ours): signed with another key, or altered after signing"));
    }

    #[test]
    fn key_sets_pick_the_named_entry_or_every_pub_entry() {
        let (a, b) = (TestKey::new(1), TestKey::new(2));
        let (a_pem, b_pem) = (a.public_pem(), b.public_pem());
        let entries = [("a.pub", a_pem.as_bytes()), ("b.pub", b_pem.as_bytes()), ("notes.txt", b"hello".as_slice())];
        let all = Verifier::from_key_set("Secret ns/keys", entries, None).unwrap();
        assert_eq!(all.key_names(), "Secret ns/keys/a.pub, Secret ns/keys/b.pub");
        let one = Verifier::from_key_set("Secret ns/keys", entries, Some("b.pub")).unwrap();
        assert_eq!(one.key_names(), "Secret ns/keys/b.pub");
        let err = Verifier::from_key_set("Secret ns/keys", entries, Some("c.pub")).unwrap_err();
        assert_eq!(err.to_string(), "Secret ns/keys has no key \"c.pub\"");
        let err = Verifier::from_key_set("Secret ns/keys", [("x", b"y".as_slice())], None).unwrap_err();
        assert_eq!(err.to_string(), "Secret ns/keys has no key \"*.pub\"");
        let err = Verifier::from_key_set("Secret ns/keys", entries, Some("notes.txt")).unwrap_err();
        assert!(matches!(err, KeyError::Pem { ref name, .. } if name == "Secret ns/keys/notes.txt"), "{err}");
    }

    #[test]
    fn verify_config_reads_its_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cosign.pub");
        std::fs::write(&path, TestKey::new(1).public_pem()).unwrap();
        let config: VerifyConfig = serde_yaml::from_str(&format!("publicKeyFiles: [{}]", path.display())).unwrap();
        assert_eq!(config.verifier().unwrap().key_names(), path.display().to_string());
        assert!(matches!(VerifyConfig { public_key_files: vec![] }.verifier(), Err(KeyError::Empty)));
        let missing = VerifyConfig { public_key_files: vec![dir.path().join("nope.pub")] };
        assert!(matches!(missing.verifier(), Err(KeyError::Read { .. })));
        assert!(serde_yaml::from_str::<VerifyConfig>("publicKeyFile: x").is_err());
    }

    #[test]
    fn first_verified_names_key_scheme_and_manifest() {
        let verified = first_verified(&[found(Check::WrongKey), found(Check::Verified { key: "ours".into() })]);
        assert_eq!(verified, Some(Verified { key: "ours".into(), scheme: Scheme::Tag, signature: "sha256:aa".into() }));
    }

    #[tokio::test]
    async fn a_capped_sink_holds_what_arrives_and_refuses_a_byte_more() {
        use tokio::io::AsyncWriteExt as _;
        let mut sink = Capped::new(5);
        sink.write_all(b"abc").await.unwrap();
        assert!(sink.write_all(b"def").await.is_err());
        assert!(sink.overflowed);
        assert_eq!(sink.buf, b"abc");
        let mut exact = Capped::new(3);
        exact.write_all(b"abc").await.unwrap();
        assert!(!exact.overflowed);
    }

    #[tokio::test]
    async fn refuses_a_malformed_digest_before_asking_the_registry() {
        let verifier = Verifier::from_pems([("ours", TestKey::new(1).public_pem().as_str())]).unwrap();
        let client = Client::new(Default::default());
        let err =
            verifier.verify(&client, "registry.invalid", "fw", &RegistryAuth::Anonymous, "latest").await.unwrap_err();
        assert!(matches!(err, VerifyError::InvalidDigest(d) if d == "latest"));
    }
}
