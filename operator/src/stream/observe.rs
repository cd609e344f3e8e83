//! What an ImageStream's source holds, from metadata only, counted the way the gateway
//! indexes it: products (`os:release:arch:variant`) and versions, at most
//! `keepVersions` newest per product.
//!
//! Every rule of what counts is the gateway's, from `updraft_core`: which tags are
//! cosign's (`oci::tags`), which layer is which file, what the annotations and
//! `metadata.yaml` say (`simplestreams::{layout, product}`), which upstream versions a
//! mirror keeps (`simplestreams::upstream`). This module only fetches what they read.
//!
//! - **OCI and upload sources**: the repository's tags (cosign's `sha256-<hex>.sig`
//!   and referrer fallback tags are not images), each tag's manifest digest (HEAD),
//!   and for a digest not seen before its manifest: a metadata tarball and a rootfs
//!   layer, the product and serial from the annotations the gateway writes on uploads,
//!   the rest from `metadata.yaml` in the metadata tarball layer (a blob of a few KiB,
//!   read with `updraft_core::image_metadata` within its limits: at most
//!   `MAX_TARBALL` received whatever the descriptor says, two tarballs read at once,
//!   decoded on a blocking thread). A tag that is not an image version is left out
//!   with its reason, which status shows.
//!   What a digest holds never changes, so it is kept per digest: a steady repository
//!   costs one tag list and one HEAD per tag per interval. Under `spec.verify` each
//!   version's digest must carry a cosign signature that verifies
//!   (`updraft_core::cosign`, the code channels and the gateway run); only successes
//!   are kept (per digest and key set), so a signature pushed later is found.
//! - **Upstream sources**: the upstream's `streams/v1/index.json`, the
//!   `image-downloads` document it names, and the versions the gateway would mirror
//!   of it (`simplestreams::upstream::mirror`).
//!
//! Whatever the source, the products counted are checked as the gateway checks its index
//! before publishing it (`simplestreams::check_aliases`): an index it would refuse is
//! reported as refused, not counted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use futures::{StreamExt, TryStreamExt};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use serde_json::Value;
use updraft_core::cosign::{Verifier, VerifyError};
use updraft_core::image_metadata::{read_metadata_yaml, MetadataError, MAX_TARBALL};
use updraft_core::oci;
use updraft_core::simplestreams::upstream::{image_downloads_path, mirror, Filters};
use updraft_core::simplestreams::{check_aliases, layout, Identity as Named, ProductKey, VersionFile};
use updraft_crds::OciSource;

use crate::clients::{upstream_builder, Clients};
use crate::context::{Observation, Unverified};
use crate::error::{Error, Result};

/// Registry requests in flight at once for one stream.
const CONCURRENCY: usize = 8;
/// Metadata tarballs fetched and read at once, across streams (each holds at most
/// `MAX_TARBALL` bytes while it is read).
static METADATA_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// Digests remembered; beyond this the cache starts again (it only saves requests).
const CACHE_LIMIT: usize = 200_000;

/// What one manifest digest holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Identity {
    /// A version; `deleted` for an upload's tombstone.
    Version { version: Listed, deleted: bool },
    /// Not an image version (why, for the logs).
    NotImage(String),
}

/// One version as the index lists it: its product, its serial (an annotation or the
/// image's `creation_date`; orders versions), and the aliases its product is served
/// under with it (`ProductProps::served`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Listed {
    pub product: ProductKey,
    pub serial: String,
    pub aliases: Vec<String>,
}

impl Identity {
    fn of(named: Named) -> Self {
        let aliases = named.props.served(&named.product).aliases;
        let version = Listed { product: named.product, serial: named.serial.to_string(), aliases };
        Identity::Version { version, deleted: named.deleted }
    }
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

/// The signature check of a stream: the keys, and a fingerprint of them (what a
/// remembered success is tied to).
pub(super) struct Verify<'a> {
    pub verifier: &'a Verifier,
    pub keys: String,
}

/// Observes an OCI or upload source's repository with the process's registry client.
pub(super) async fn repository(
    clients: &Clients,
    source: &OciSource,
    auth: &RegistryAuth,
    keep: usize,
    verify: Option<Verify<'_>>,
) -> Result<Observation> {
    let client = clients.registry(source.insecure);
    let unreachable = |e: &dyn std::fmt::Display| Error::RegistryUnreachable(format!("{}: {e}", source.reference()));
    let reference = oci::tag_reference(&source.registry, &source.repository, "latest");
    let tags = match oci::list_repository_tags(client, &reference, source.insecure, auth).await {
        Ok(tags) => tags,
        // No upload yet: the repository does not exist until the first one.
        Err(e) if oci::is_unknown_repository(&e) => return Ok(Observation::default()),
        Err(e) => return Err(Error::registry(&source.reference(), &e)),
    };
    let images = image_tags(tags);
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
    let mut versions: Vec<(Listed, String, String)> = Vec::new();
    for (tag, digest, identity) in found {
        match identity {
            Identity::Version { version, deleted: false } => versions.push((version, tag, digest)),
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
            .map(|(version, tag, digest)| {
                let verify = &verify;
                async move {
                    let outcome = verified(client, source, auth, verify, &digest).await;
                    (version, tag, digest, outcome)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        versions = Vec::new();
        for (version, tag, digest, outcome) in checked {
            match outcome {
                Ok(()) => {
                    observation.verified += 1;
                    versions.push((version, tag, digest));
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
    let counts = tally(versions.into_iter().map(|(version, _, _)| version), keep);
    Ok(Observation { products: counts.products, versions: counts.versions, refused: counts.refused, ..observation })
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
        OciManifest::Image(manifest) => {
            let ann = manifest.annotations.clone().unwrap_or_default();
            match from_manifest(&manifest) {
                Ok(identity) => identity,
                Err(layer) => match fetch_tarball(client, source, auth, &reference, &layer).await? {
                    Ok(tarball) => tokio::task::spawn_blocking(move || from_metadata(&ann, &tarball))
                        .await
                        .unwrap_or_else(|e| Identity::NotImage(format!("reading the metadata tarball: {e}"))),
                    Err(why) => Identity::NotImage(why.to_string()),
                },
            }
        }
        OciManifest::ImageIndex(_) => Identity::NotImage("an image index".into()),
    };
    known().identities.insert(digest.to_owned(), identity.clone());
    Ok(identity)
}

/// What a manifest alone says: the identity, or the metadata tarball layer to read
/// for it (the gateway's rules: `layout::incomplete`, `Identity::from_annotations`).
fn from_manifest(manifest: &OciImageManifest) -> std::result::Result<Identity, Box<OciDescriptor>> {
    let layers = layout::layers(manifest);
    if let Some(why) = layout::incomplete(&layers) {
        return Ok(Identity::NotImage(why.into()));
    }
    match Named::from_annotations(manifest.annotations.as_ref().unwrap_or(&Default::default())) {
        Ok(Some(named)) => Ok(Identity::of(named)),
        Ok(None) => Err(Box::new(layers[&VersionFile::Metadata].clone())),
        Err(e) => Ok(Identity::NotImage(e.to_string())),
    }
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
) -> Result<std::result::Result<Vec<u8>, MetadataError>> {
    let unreachable = |e: &dyn std::fmt::Display| Error::RegistryUnreachable(format!("{}: {e}", source.reference()));
    let declared = match u64::try_from(layer.size) {
        Ok(size) if size <= MAX_TARBALL => size,
        _ => return Ok(Err(MetadataError::TarballTooLarge(layer.size.max(0) as u64))),
    };
    let _reading = METADATA_READS.acquire().await.expect("the semaphore is never closed");
    client.store_auth_if_needed(&source.registry, auth).await;
    let mut stream = client.pull_blob_stream(reference, layer).await.map_err(|e| unreachable(&e))?;
    let mut tarball = Vec::new();
    // The stream verifies the digest at its end: an error there is the registry's.
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unreachable(&e))?;
        if (tarball.len() + chunk.len()) as u64 > declared {
            return Ok(Err(MetadataError::LongerThanDeclared { digest: layer.digest.clone(), declared }));
        }
        tarball.extend_from_slice(&chunk);
    }
    Ok(Ok(tarball))
}

/// The identity of an artifact whose annotations leave something out, with its
/// metadata tarball.
fn from_metadata(ann: &BTreeMap<String, String>, tarball: &[u8]) -> Identity {
    match read_metadata_yaml(tarball) {
        Ok(m) => Named::with_metadata(ann, &m).map_or_else(|e| Identity::NotImage(e.to_string()), Identity::of),
        Err(e) => Identity::NotImage(e.to_string()),
    }
}

/// The tags that may hold images: every tag but cosign's and the referrers fallback's
/// ([`oci::tags::attached_to`], the rule the gateway lists with).
fn image_tags(tags: Vec<String>) -> impl Iterator<Item = String> {
    tags.into_iter().filter(|t| !oci::tags::is_attached(t))
}

/// What [`tally`] counts.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Tally {
    pub products: usize,
    pub versions: usize,
    /// Why the gateway would refuse to publish the index.
    pub refused: Option<String>,
}

/// Products with at least one version, and versions (distinct serials, at most `keep`
/// per product; 0 keeps all); the index refused when two products of one architecture
/// claim an alias, each product claiming its newest version's aliases.
pub(super) fn tally(versions: impl IntoIterator<Item = Listed>, keep: usize) -> Tally {
    let mut products: BTreeMap<ProductKey, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for Listed { product, serial, aliases } in versions {
        products.entry(product).or_default().insert(serial, aliases);
    }
    let count = products.values().map(|s| if keep == 0 { s.len() } else { s.len().min(keep) }).sum();
    let claims =
        products.iter().map(|(key, serials)| (key, serials.values().next_back().map_or(&[][..], Vec::as_slice)));
    let refused = check_aliases(claims).err().map(|e| e.to_string());
    Tally { products: products.len(), versions: count, refused }
}

/// Observes an upstream simplestreams server at `url`, trusting the PEM certificates
/// of `ca` besides the system's.
pub(super) async fn upstream(
    clients: &Clients,
    url: &str,
    ca: Option<&[u8]>,
    filters: &[String],
    keep: usize,
) -> Result<Observation> {
    let base = url.trim_end_matches('/');
    let client = match ca {
        None => clients.upstream.clone(),
        Some(pem) => {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::CaBundle("caConfigMap: ca.crt holds no PEM certificate".into()))?;
            let builder = certs.into_iter().fold(upstream_builder(), |b, cert| b.add_root_certificate(cert));
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
    let path = image_downloads_path(&index).map_err(|e| Error::UpstreamUnreachable(format!("{base}: {e}")))?;
    let images = get(path.to_owned()).await?;
    Ok(count_upstream(&images, filters, keep))
}

/// Counts an upstream `images.json`: the versions the gateway mirrors of it.
pub(super) fn count_upstream(images: &Value, filters: &[String], keep: usize) -> Observation {
    let mirrored = mirror(images, &Filters::parse(filters), "");
    let versions = mirrored.versions.into_iter().map(|(product, props, v)| Listed {
        product,
        serial: v.serial.to_string(),
        aliases: props.aliases,
    });
    let Tally { products, versions, refused } = tally(versions, keep);
    Observation { products, versions, refused, skipped: mirrored.skipped, ..Observation::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_core::simplestreams::annotations;

    fn listed(product: &str, serial: &str, aliases: &[&str]) -> Listed {
        let aliases = aliases.iter().map(|a| a.to_string()).collect();
        Listed { product: ProductKey::parse(product).unwrap(), serial: serial.to_owned(), aliases }
    }

    #[test]
    fn versions_are_distinct_serials_kept_per_product() {
        let v = |p: &str, s: &str| listed(p, s, &[]);
        let versions = [
            v("debian:12:amd64:default", "1"),
            v("debian:12:amd64:default", "2"),
            v("debian:12:amd64:default", "3"),
            v("debian:12:amd64:default", "3"),
            v("alpine:3.20:amd64:default", "1"),
        ];
        let counts = |keep| {
            let Tally { products, versions, refused } = tally(versions.clone(), keep);
            assert_eq!(refused, None);
            (products, versions)
        };
        assert_eq!((counts(0), counts(2), counts(1)), ((2, 4), (2, 3), (2, 2)));
        assert_eq!(tally([], 3), Tally { products: 0, versions: 0, refused: None });
    }

    #[test]
    fn an_alias_two_products_claim_refuses_the_index_as_the_gateway_does() {
        // Two products of one architecture claim `edge`: the gateway does not publish
        // that index, so it is not counted as served.
        let clash = [
            listed("debian:13:amd64:default", "20260101_00:00", &["debian/13", "edge"]),
            listed("debian:sid:amd64:default", "20260101_00:00", &["debian/sid", "edge"]),
        ];
        let refused = tally(clash.clone(), 0).refused.expect("refused");
        assert!(refused.contains(r#"alias "edge""#) && refused.contains("debian:sid:amd64:default"), "{refused}");
        // The same alias on another architecture, or given up by the product's newest
        // version, is served once per architecture: nothing to refuse.
        let arm = listed("debian:sid:arm64:default", "20260101_00:00", &["debian/sid", "edge"]);
        assert_eq!(tally([clash[0].clone(), arm], 0).refused, None);
        let moved = listed("debian:sid:amd64:default", "20260102_00:00", &["debian/sid"]);
        assert_eq!(tally([clash[0].clone(), clash[1].clone(), moved], 0).refused, None);
    }

    #[test]
    fn cosign_tags_are_not_images_and_a_tar_suffixed_digest_tag_is_one() {
        let hex = "a".repeat(64);
        let tags = ["sig", "att", "sbom", "tar"].map(|suffix| format!("sha256-{hex}.{suffix}"));
        let listed =
            [vec![format!("sha256-{hex}"), "debian_bookworm_amd64_default_20260101_0000".to_owned()], tags.to_vec()]
                .concat();
        let images: Vec<String> = image_tags(listed).collect();
        assert_eq!(images, vec!["debian_bookworm_amd64_default_20260101_0000".to_owned(), format!("sha256-{hex}.tar")]);
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

    fn layer(media: &str, title: &str) -> serde_json::Value {
        serde_json::json!({"mediaType": media, "digest": format!("sha256:{}", "1".repeat(64)), "size": 10,
            "annotations": {annotations::ANN_TITLE: title}})
    }

    fn exported() -> serde_json::Value {
        serde_json::json!([
            layer("application/octet-stream", "abc.squashfs"),
            layer("application/octet-stream", "meta-abc.tar.xz")
        ])
    }

    #[test]
    fn annotations_name_the_product_serial_and_tombstones() {
        use annotations::{ANN_DELETED, ANN_PRODUCT, ANN_SERIAL};
        let m = manifest(
            serde_json::json!({ANN_PRODUCT: "debian:bookworm:amd64:default", ANN_SERIAL: "20260101_00:00"}),
            exported(),
        );
        assert_eq!(
            from_manifest(&m).unwrap(),
            Identity::Version {
                version: listed(
                    "debian:bookworm:amd64:default",
                    "20260101_00:00",
                    &["debian/bookworm/default", "debian/bookworm"]
                ),
                deleted: false
            }
        );
        let gone = manifest(
            serde_json::json!({ANN_PRODUCT: "debian:bookworm:amd64:default", ANN_SERIAL: "20260101_00:00", ANN_DELETED: "true"}),
            exported(),
        );
        assert!(matches!(from_manifest(&gone), Ok(Identity::Version { deleted: true, .. })));
        let bad = manifest(serde_json::json!({ANN_PRODUCT: "debian", ANN_SERIAL: "20260101_00:00"}), exported());
        assert!(matches!(from_manifest(&bad), Ok(Identity::NotImage(_))));
    }

    #[test]
    fn what_the_gateway_refuses_is_not_counted() {
        use annotations::{ANN_PRODUCT, ANN_SERIAL};
        // Each was a version here and left out of the gateway's index.
        let cases = [
            (
                "a serial that is not YYYYMMDD_HH:MM",
                serde_json::json!({ANN_PRODUCT: "debian:bookworm:amd64:default", ANN_SERIAL: "1"}),
                exported(),
            ),
            (
                "an architecture the clients drop",
                serde_json::json!({ANN_PRODUCT: "debian:bookworm:sparc:default", ANN_SERIAL: "20260101_00:00"}),
                exported(),
            ),
            (
                "no metadata tarball",
                serde_json::json!({ANN_PRODUCT: "debian:bookworm:amd64:default", ANN_SERIAL: "20260101_00:00"}),
                serde_json::json!([layer("application/octet-stream", "abc.squashfs")]),
            ),
            (
                "no rootfs",
                serde_json::json!({ANN_PRODUCT: "debian:bookworm:amd64:default", ANN_SERIAL: "20260101_00:00"}),
                serde_json::json!([layer("application/octet-stream", "meta-abc.tar.xz")]),
            ),
        ];
        for (what, annotations, layers) in cases {
            assert!(matches!(from_manifest(&manifest(annotations, layers)), Ok(Identity::NotImage(_))), "{what}");
        }
    }

    #[test]
    fn without_annotations_the_metadata_layer_is_read() {
        let title = |l: Box<OciDescriptor>| l.annotations.unwrap()[annotations::ANN_TITLE].clone();
        assert_eq!(title(from_manifest(&manifest(serde_json::json!({}), exported())).unwrap_err()), "meta-abc.tar.xz");
        let typed = manifest(
            serde_json::json!({}),
            serde_json::json!([
                layer(VersionFile::Metadata.media_type(), "x"),
                layer("application/octet-stream", "a.qcow2")
            ]),
        );
        assert_eq!(title(from_manifest(&typed).unwrap_err()), "x");
        let none =
            manifest(serde_json::json!({}), serde_json::json!([layer("application/octet-stream", "root.tar.xz")]));
        assert!(matches!(from_manifest(&none), Ok(Identity::NotImage(_))));
    }

    #[test]
    fn upstream_products_are_filtered_and_kept() {
        let sha = |c: char| c.to_string().repeat(64);
        let item = |ftype: &str, c| serde_json::json!({"ftype": ftype, "path": "x", "sha256": sha(c), "size": 1});
        let mut meta = item("lxd.tar.xz", 'a');
        meta["combined_squashfs_sha256"] = sha('c').into();
        let version = serde_json::json!({"items": {"m": meta, "r": item("squashfs", 'b')}});
        let images = serde_json::json!({"products": {
            "debian:bookworm:amd64:default": {"os": "Debian", "release": "bookworm", "arch": "amd64",
                "versions": {"20260101_00:00": version, "20260102_00:00": version, "20260103_00:00": version}},
            "debian:bookworm:arm64:default": {"os": "Debian", "release": "bookworm", "arch": "arm64",
                "versions": {"20260101_00:00": version}},
            "alpine:3.20:amd64:cloud": {"os": "Alpine", "release": "3.20", "arch": "amd64", "variant": "cloud",
                "versions": {"20260101_00:00": version, "20260102_00:00": {"items": {"r": item("squashfs", 'b')}}}},
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

    #[test]
    fn upstream_versions_the_gateway_cannot_serve_are_not_counted() {
        // A metadata item was enough here; without hashes or a rootfs the gateway
        // lists nothing.
        let item = |ftype: &str| serde_json::json!({"ftype": ftype, "path": "x", "sha256": "0", "size": 1});
        let version = serde_json::json!({"items": {"m": item("lxd.tar.xz"), "r": item("squashfs")}});
        let images = serde_json::json!({"products": {
            "debian:bookworm:amd64:default": {"os": "Debian", "release": "bookworm", "arch": "amd64",
                "versions": {"20260101_00:00": version, "v2": version}},
        }});
        let o = count_upstream(&images, &[], 0);
        assert_eq!((o.products, o.versions, o.skipped), (0, 0, 2));
    }
}
