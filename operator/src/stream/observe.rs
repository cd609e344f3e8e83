//! What an ImageStream's source holds, from metadata only, counted the way the gateway
//! indexes it: products (`os:release:arch:variant`) and versions, at most
//! `keepVersions` newest per product.
//!
//! - **OCI and upload sources**: the repository's tags (cosign's `sha256-<hex>.sig`
//!   and referrer fallback tags are not images), each tag's manifest digest (HEAD),
//!   and for a digest not seen before its manifest: the product and serial from the
//!   annotations the gateway writes on uploads (`dev.updraft.simplestreams.product`,
//!   `.serial`, `.deleted` for a tombstone), else from `metadata.yaml` in the metadata
//!   tarball layer (a blob of a few KiB, read with `updraft_core::image_metadata`
//!   within its limits: at most `MAX_TARBALL` received whatever the descriptor
//!   says, two tarballs read at once, decoded on a blocking thread). A tag that is not
//!   an image version is left out with its reason, which status shows.
//!   What a digest holds never changes, so it is kept per digest: a steady repository
//!   costs one tag list and one HEAD per tag per interval. Under `spec.verify` each
//!   version's digest must carry a cosign signature that verifies
//!   (`updraft_core::cosign`, the code channels and the gateway run); only successes
//!   are kept (per digest and key set), so a signature pushed later is found.
//! - **Upstream sources**: the upstream's `streams/v1/index.json`, the
//!   `image-downloads` document it names, the products matching every filter (`os`
//!   compared without case, `variant` default `default`), versions with a metadata
//!   tarball item.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::ClientProtocol;
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use serde_json::Value;
use updraft_core::cosign::{Verifier, VerifyError};
use updraft_core::image_metadata::{self, is_component, read_metadata_yaml, MetadataError, MAX_TARBALL};
use updraft_core::oci;
use updraft_crds::OciSource;

use crate::context::{Observation, Unverified};
use crate::error::{Error, Result};

const USER_AGENT: &str = concat!("updraft-operator/", env!("CARGO_PKG_VERSION"));
/// Registry requests in flight at once for one stream.
const CONCURRENCY: usize = 8;
/// Metadata tarballs fetched and read at once, across streams (each holds at most
/// `MAX_TARBALL` bytes while it is read).
static METADATA_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// Digests remembered; beyond this the cache starts again (it only saves requests).
const CACHE_LIMIT: usize = 200_000;

const ANN_PRODUCT: &str = "dev.updraft.simplestreams.product";
const ANN_SERIAL: &str = "dev.updraft.simplestreams.serial";
const ANN_DELETED: &str = "dev.updraft.simplestreams.deleted";
const ANN_TITLE: &str = "org.opencontainers.image.title";

/// What one manifest digest holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Identity {
    /// A version of `product`; `serial` orders versions (an annotation or the image's
    /// `creation_date`); `deleted` for an upload's tombstone.
    Version { product: String, serial: String, deleted: bool },
    /// Not an image version (why, for the logs).
    NotImage(String),
}

/// What is known per digest, process-wide: identities, and digests whose signature
/// verified with a given key set.
#[derive(Default)]
struct Known {
    identities: HashMap<String, Identity>,
    verified: HashSet<(String, String)>,
}

fn known() -> std::sync::MutexGuard<'static, Known> {
    static KNOWN: OnceLock<Mutex<Known>> = OnceLock::new();
    let mut guard = KNOWN.get_or_init(Mutex::default).lock().expect("known digests lock");
    if guard.identities.len() + guard.verified.len() > CACHE_LIMIT {
        *guard = Known::default();
    }
    guard
}

/// One registry client per protocol, shared by every stream (they cache tokens).
fn client(insecure: bool) -> &'static Client {
    static HTTPS: OnceLock<Client> = OnceLock::new();
    static HTTP: OnceLock<Client> = OnceLock::new();
    if insecure {
        HTTP.get_or_init(|| oci::build_client(USER_AGENT, ClientProtocol::Http))
    } else {
        HTTPS.get_or_init(|| oci::build_client(USER_AGENT, ClientProtocol::Https))
    }
}

/// The signature check of a stream: the keys, and a fingerprint of them (what a
/// remembered success is tied to).
pub(super) struct Verify<'a> {
    pub verifier: &'a Verifier,
    pub keys: String,
}

/// Observes an OCI or upload source's repository.
pub(super) async fn repository(
    source: &OciSource,
    auth: &RegistryAuth,
    keep: usize,
    verify: Option<Verify<'_>>,
) -> Result<Observation> {
    let client = client(source.insecure);
    let unreachable = |e: &dyn std::fmt::Display| Error::RegistryUnreachable(format!("{}: {e}", source.reference()));
    let reference = oci::tag_reference(&source.registry, &source.repository, "latest");
    let tags = match oci::list_repository_tags(client, &reference, source.insecure, auth).await {
        Ok(tags) => tags,
        // No upload yet: the repository does not exist until the first one.
        Err(e) if updraft_core::oci::is_unknown_repository(&e) => return Ok(Observation::default()),
        Err(e) => return Err(Error::registry(&source.reference(), &e)),
    };
    let images = tags.into_iter().filter(|t| !is_cosign_tag(t));
    let found: Vec<(String, String, Identity)> = futures::stream::iter(images)
        .map(|tag| async move {
            let reference = oci::tag_reference(&source.registry, &source.repository, &tag);
            let digest = client.fetch_manifest_digest(&reference, auth).await.map_err(|e| unreachable(&e))?;
            let identity = identify(client, source, auth, &digest).await?;
            Ok::<_, Error>((tag, digest, identity))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut observation = Observation::default();
    let mut versions: Vec<(String, String, String, String)> = Vec::new();
    for (tag, digest, identity) in found {
        match identity {
            Identity::Version { product, serial, deleted: false } => versions.push((product, serial, tag, digest)),
            Identity::Version { deleted: true, .. } => {}
            Identity::NotImage(why) => {
                tracing::debug!(%tag, %digest, %why, "not an image version");
                observation.skipped += 1;
                observation.left_out.push(format!("tag {tag} ({digest}): {why}"));
            }
        }
    }
    if let Some(verify) = verify {
        let checked: Vec<_> = futures::stream::iter(versions)
            .map(|(product, serial, tag, digest)| {
                let verify = &verify;
                async move {
                    let outcome = verified(client, source, auth, verify, &digest).await;
                    (product, serial, tag, digest, outcome)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        versions = Vec::new();
        for (product, serial, tag, digest, outcome) in checked {
            match outcome {
                Ok(()) => {
                    observation.verified += 1;
                    versions.push((product, serial, tag, digest));
                }
                Err(VerifyError::Registry(e)) => return Err(unreachable(&e)),
                Err(e) => observation.unverified.push(Unverified {
                    reason: e.reason(),
                    message: format!("tag {tag} ({digest}) is left out: {e}"),
                    tag,
                    digest,
                }),
            }
        }
        observation.unverified.sort_by(|a, b| a.tag.cmp(&b.tag));
    }
    observation.left_out.sort();
    let (products, count) = tally(versions.into_iter().map(|(product, serial, _, _)| (product, serial)), keep);
    observation.products = products;
    observation.versions = count;
    Ok(observation)
}

/// Whether `digest` carries a signature that verifies with `verify`'s keys (a success
/// is remembered).
async fn verified(
    client: &Client,
    source: &OciSource,
    auth: &RegistryAuth,
    verify: &Verify<'_>,
    digest: &str,
) -> std::result::Result<(), VerifyError> {
    let key = (digest.to_owned(), verify.keys.clone());
    if known().verified.contains(&key) {
        return Ok(());
    }
    verify.verifier.verify(client, &source.registry, &source.repository, auth, digest).await?;
    known().verified.insert(key);
    Ok(())
}

/// What `digest` holds: remembered, else read from its manifest (and, without product
/// annotations, its metadata tarball).
async fn identify(client: &Client, source: &OciSource, auth: &RegistryAuth, digest: &str) -> Result<Identity> {
    if let Some(identity) = known().identities.get(digest) {
        return Ok(identity.clone());
    }
    let unreachable = |e: &dyn std::fmt::Display| Error::RegistryUnreachable(format!("{}: {e}", source.reference()));
    let reference = oci::digest_reference(&source.registry, &source.repository, digest);
    let identity = match client.pull_manifest(&reference, auth).await.map_err(|e| unreachable(&e))?.0 {
        OciManifest::Image(manifest) => match from_annotations(&manifest) {
            Some(identity) => identity,
            None => match metadata_layer(&manifest) {
                None => Identity::NotImage(image_metadata::NO_METADATA_LAYER.into()),
                Some(layer) => match fetch_tarball(client, source, auth, &reference, layer).await? {
                    Ok(tarball) => tokio::task::spawn_blocking(move || from_metadata(&tarball))
                        .await
                        .unwrap_or_else(|e| Identity::NotImage(format!("reading the metadata tarball: {e}"))),
                    Err(why) => Identity::NotImage(why),
                },
            },
        },
        OciManifest::ImageIndex(_) => Identity::NotImage("an image index".into()),
    };
    known().identities.insert(digest.to_owned(), identity.clone());
    Ok(identity)
}

/// The identity the gateway's annotations give (uploads always carry them).
fn from_annotations(manifest: &OciImageManifest) -> Option<Identity> {
    let ann = manifest.annotations.as_ref()?;
    let get = |k: &str| ann.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let (product, serial) = (get(ANN_PRODUCT)?, get(ANN_SERIAL)?);
    let parts: Vec<&str> = product.split(':').collect();
    if parts.len() != 4 || !parts.iter().all(|p| is_component(p)) {
        return Some(Identity::NotImage(format!("{ANN_PRODUCT} {product:?} is not os:release:arch:variant")));
    }
    Some(Identity::Version {
        product: product.to_owned(),
        serial: serial.to_owned(),
        deleted: get(ANN_DELETED) == Some("true"),
    })
}

/// The layer holding the metadata tarball: by media type, else by file name (core's
/// rule, the gateway's).
fn metadata_layer(manifest: &OciImageManifest) -> Option<&OciDescriptor> {
    fn title(l: &OciDescriptor) -> Option<&str> {
        l.annotations.as_ref().and_then(|a| a.get(ANN_TITLE)).map(String::as_str)
    }
    let typed = manifest.layers.iter().find(|l| l.media_type == image_metadata::METADATA_MEDIA_TYPE);
    typed.or_else(|| manifest.layers.iter().find(|l| image_metadata::is_metadata_layer(&l.media_type, title(l))))
}

/// The metadata tarball `layer`, verified: `Ok(Err(why))` when it is not one to read
/// (declared or received over `MAX_TARBALL`, or longer than declared). What is kept
/// is bounded by the bytes received, not by the size the descriptor claims.
async fn fetch_tarball(
    client: &Client,
    source: &OciSource,
    auth: &RegistryAuth,
    reference: &oci_client::Reference,
    layer: &OciDescriptor,
) -> Result<std::result::Result<Vec<u8>, String>> {
    let unreachable = |e: &dyn std::fmt::Display| Error::RegistryUnreachable(format!("{}: {e}", source.reference()));
    let declared = match u64::try_from(layer.size) {
        Ok(size) if size <= MAX_TARBALL => size,
        _ => return Ok(Err(MetadataError::TarballTooLarge(layer.size.max(0) as u64).to_string())),
    };
    let _reading = METADATA_READS.acquire().await.expect("the semaphore is never closed");
    client.store_auth_if_needed(&source.registry, auth).await;
    let mut stream = client.pull_blob_stream(reference, layer).await.map_err(|e| unreachable(&e))?;
    let mut tarball = Vec::new();
    // The stream verifies the digest at its end: an error there is the registry's.
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unreachable(&e))?;
        if (tarball.len() + chunk.len()) as u64 > declared {
            let why =
                format!("metadata tarball {} is longer than the {declared} bytes its descriptor says", layer.digest);
            return Ok(Err(why));
        }
        tarball.extend_from_slice(&chunk);
    }
    Ok(Ok(tarball))
}

fn from_metadata(tarball: &[u8]) -> Identity {
    match read_metadata_yaml(tarball).and_then(|m| Ok((m.product()?, m.creation_date))) {
        Ok((product, created)) => Identity::Version { product, serial: created.to_string(), deleted: false },
        Err(e) => Identity::NotImage(e.to_string()),
    }
}

/// cosign's tags: `sha256-<64 hex>` (referrers fallback) with an optional suffix
/// (`.sig`, `.att`, `.sbom`).
fn is_cosign_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-").is_some_and(|rest| {
        let hex = rest.split('.').next().unwrap_or("");
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Products with at least one version, and versions (distinct serials, at most `keep`
/// per product; 0 keeps all).
pub(super) fn tally(versions: impl IntoIterator<Item = (String, String)>, keep: usize) -> (usize, usize) {
    let mut products: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (product, serial) in versions {
        products.entry(product).or_default().insert(serial);
    }
    let count = products.values().map(|s| if keep == 0 { s.len() } else { s.len().min(keep) }).sum();
    (products.len(), count)
}

/// The upstream's HTTP client (shared).
fn http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| client_builder().build().expect("an HTTP client with defaults"))
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
}

/// Observes an upstream simplestreams server at `url`, trusting the PEM certificates
/// of `ca` besides the system's.
pub(super) async fn upstream(url: &str, ca: Option<&[u8]>, filters: &[String], keep: usize) -> Result<Observation> {
    let base = url.trim_end_matches('/');
    let client = match ca {
        None => http().clone(),
        Some(pem) => {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::CaBundle("caConfigMap: ca.crt holds no PEM certificate".into()))?;
            let builder = certs.into_iter().fold(client_builder(), |b, cert| b.add_root_certificate(cert));
            builder.build().map_err(|e| Error::CaBundle(format!("caConfigMap: {e}")))?
        }
    };
    let client = &client;
    let get = |path: String| async move {
        let url = format!("{base}/{path}");
        let down = |e: &dyn std::fmt::Display| Error::UpstreamUnreachable(format!("{url}: {e}"));
        let response = client.get(&url).send().await.map_err(|e| down(&e))?;
        if !response.status().is_success() {
            return Err(down(&format!("HTTP {}", response.status())));
        }
        response.json::<Value>().await.map_err(|e| down(&e))
    };
    let index = get("streams/v1/index.json".into()).await?;
    let path = index["index"]
        .as_object()
        .and_then(|entries| entries.values().find(|e| e["datatype"] == "image-downloads"))
        .and_then(|e| e["path"].as_str())
        .ok_or_else(|| Error::UpstreamUnreachable(format!("{base}: index.json names no image-downloads document")))?;
    if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(Error::UpstreamUnreachable(format!("{base}: index.json names an unsafe path {path:?}")));
    }
    let images = get(path.to_owned()).await?;
    Ok(count_upstream(&images, filters, keep))
}

/// Counts an upstream `images.json`: the products matching every filter, their
/// versions with a metadata tarball item.
pub(super) fn count_upstream(images: &Value, filters: &[String], keep: usize) -> Observation {
    let filters: Vec<(&str, &str)> = filters.iter().filter_map(|f| f.split_once('=')).collect();
    let mut observation = Observation::default();
    let mut versions = Vec::new();
    for (name, p) in images["products"].as_object().into_iter().flatten() {
        let text = |k: &str| p[k].as_str().unwrap_or("");
        let matches = filters.iter().all(|(k, v)| {
            let have = match text(k) {
                "" if *k == "variant" => "default",
                have => have,
            };
            if *k == "os" {
                have.eq_ignore_ascii_case(v)
            } else {
                have == *v
            }
        });
        if !matches {
            continue;
        }
        let variant = match text("variant") {
            "" => "default",
            v => v,
        };
        let parts =
            [text("os").to_ascii_lowercase(), text("release").to_owned(), text("arch").to_owned(), variant.into()];
        let Some(product_versions) = p["versions"].as_object() else { continue };
        if !parts.iter().all(|c| is_component(c)) {
            tracing::debug!(product = %name, "upstream product with an invalid key left out");
            observation.skipped += product_versions.len();
            continue;
        }
        let product = parts.join(":");
        for (serial, v) in product_versions {
            let items = v["items"].as_object();
            let has_metadata =
                items.is_some_and(|i| i.values().any(|i| i["ftype"] == "incus.tar.xz" || i["ftype"] == "lxd.tar.xz"));
            if has_metadata {
                versions.push((product.clone(), serial.clone()));
            } else {
                observation.skipped += 1;
            }
        }
    }
    let (products, count) = tally(versions, keep);
    observation.products = products;
    observation.versions = count;
    observation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_distinct_serials_kept_per_product() {
        let v = |p: &str, s: &str| (p.to_owned(), s.to_owned());
        let versions = [
            v("debian:12:amd64:default", "1"),
            v("debian:12:amd64:default", "2"),
            v("debian:12:amd64:default", "3"),
            v("debian:12:amd64:default", "3"),
            v("alpine:3.20:amd64:default", "1"),
        ];
        assert_eq!(tally(versions.clone(), 0), (2, 4));
        assert_eq!(tally(versions.clone(), 2), (2, 3));
        assert_eq!(tally(versions, 1), (2, 2));
        assert_eq!(tally([], 3), (0, 0));
    }

    #[test]
    fn cosign_tags_are_not_images() {
        let hex = "a".repeat(64);
        assert!(is_cosign_tag(&format!("sha256-{hex}.sig")));
        assert!(is_cosign_tag(&format!("sha256-{hex}")));
        assert!(is_cosign_tag(&format!("sha256-{hex}.att")));
        assert!(!is_cosign_tag("sha256-abc.sig"));
        assert!(!is_cosign_tag("debian_bookworm_amd64_default_20260101_0000"));
    }

    fn manifest(annotations: serde_json::Value, layers: serde_json::Value) -> OciImageManifest {
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": format!("sha256:{}", "4".repeat(64)), "size": 2},
            "layers": layers,
            "annotations": annotations,
        }))
        .unwrap()
    }

    #[test]
    fn annotations_name_the_product_serial_and_tombstones() {
        let m = manifest(
            serde_json::json!({ANN_PRODUCT: "debian:bookworm:amd64:default", ANN_SERIAL: "20260101_00:00"}),
            serde_json::json!([]),
        );
        assert_eq!(
            from_annotations(&m),
            Some(Identity::Version {
                product: "debian:bookworm:amd64:default".into(),
                serial: "20260101_00:00".into(),
                deleted: false
            })
        );
        let gone = manifest(
            serde_json::json!({ANN_PRODUCT: "debian:bookworm:amd64:default", ANN_SERIAL: "1", ANN_DELETED: "true"}),
            serde_json::json!([]),
        );
        assert!(matches!(from_annotations(&gone), Some(Identity::Version { deleted: true, .. })));
        let bad = manifest(serde_json::json!({ANN_PRODUCT: "debian", ANN_SERIAL: "1"}), serde_json::json!([]));
        assert!(matches!(from_annotations(&bad), Some(Identity::NotImage(_))));
        assert_eq!(from_annotations(&manifest(serde_json::json!({}), serde_json::json!([]))), None);
    }

    #[test]
    fn the_metadata_layer_is_found_by_media_type_or_file_name() {
        let layer = |media: &str, title: &str| {
            serde_json::json!({"mediaType": media, "digest": format!("sha256:{}", "1".repeat(64)), "size": 10,
                "annotations": {ANN_TITLE: title}})
        };
        let exported = manifest(
            serde_json::json!({}),
            serde_json::json!([
                layer("application/octet-stream", "abc.squashfs"),
                layer("application/octet-stream", "meta-abc.tar.xz")
            ]),
        );
        assert_eq!(title_of(metadata_layer(&exported)), "meta-abc.tar.xz");
        let typed =
            manifest(serde_json::json!({}), serde_json::json!([layer(image_metadata::METADATA_MEDIA_TYPE, "x")]));
        assert_eq!(title_of(metadata_layer(&typed)), "x");
        let none =
            manifest(serde_json::json!({}), serde_json::json!([layer("application/octet-stream", "root.tar.xz")]));
        assert!(metadata_layer(&none).is_none());
    }

    fn title_of(layer: Option<&OciDescriptor>) -> String {
        layer.unwrap().annotations.as_ref().unwrap()[ANN_TITLE].clone()
    }

    #[test]
    fn upstream_products_are_filtered_and_kept() {
        let item = |ftype: &str| serde_json::json!({"ftype": ftype, "path": "x", "sha256": "0", "size": 1});
        let version = serde_json::json!({"items": {"m": item("lxd.tar.xz"), "r": item("squashfs")}});
        let images = serde_json::json!({"products": {
            "debian:bookworm:amd64:default": {"os": "Debian", "release": "bookworm", "arch": "amd64",
                "versions": {"20260101_00:00": version, "20260102_00:00": version, "20260103_00:00": version}},
            "debian:bookworm:arm64:default": {"os": "Debian", "release": "bookworm", "arch": "arm64",
                "versions": {"20260101_00:00": version}},
            "alpine:3.20:amd64:cloud": {"os": "Alpine", "release": "3.20", "arch": "amd64", "variant": "cloud",
                "versions": {"20260101_00:00": version, "20260102_00:00": {"items": {"r": item("squashfs")}}}},
        }});
        let o = count_upstream(&images, &[], 0);
        assert_eq!((o.products, o.versions, o.skipped), (3, 5, 1));
        let o = count_upstream(&images, &["os=debian".into()], 2);
        assert_eq!((o.products, o.versions), (2, 3));
        let o = count_upstream(&images, &["os=debian".into(), "arch=amd64".into(), "variant=default".into()], 0);
        assert_eq!((o.products, o.versions), (1, 3));
        let o = count_upstream(&images, &["variant=cloud".into()], 0);
        assert_eq!((o.products, o.versions), (1, 1));
        assert_eq!(count_upstream(&serde_json::json!({}), &[], 3), Observation::default());
    }
}
