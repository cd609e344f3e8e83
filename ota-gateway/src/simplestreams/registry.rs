//! Image versions as OCI artifacts: the registry is the durable store every replica
//! reads, so gateway pods stay stateless.
//!
//! How a version is laid out (tag, annotations, one layer per file) is
//! [`updraft_core::simplestreams::layout`], the rules the ImageStream controller counts
//! with; this module writes and reads such manifests. A layer's digest is the SHA-256
//! of the file itself (stored uncompressed), which is what the index promises as the
//! item's `sha256`.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest, IMAGE_MANIFEST_MEDIA_TYPE};
use updraft_core::simplestreams::Identity;

use super::index::{FileRef, ImageVersion, IndexError, ProductKey, ProductProps, Rootfs, Serial};
use super::metadata::{version_dir, VersionFile};

pub(crate) use updraft_core::simplestreams::annotations::{
    ANN_ALIASES, ANN_COMBINED, ANN_DELETED, ANN_OS, ANN_PRODUCT, ANN_RELEASE_TITLE, ANN_SERIAL, ANN_TITLE,
    ARTIFACT_TYPE,
};
pub(crate) use updraft_core::simplestreams::layout::{layers, version_tag};

pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty JSON object `{}`, the config blob of every version manifest.
pub(crate) const EMPTY_CONFIG: &[u8] = b"{}";
pub(crate) const EMPTY_CONFIG_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// Why a manifest is not a version of this stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArtifactError {
    #[error("manifest lacks annotation {0}")]
    Missing(&'static str),
    #[error("layer {0}: digest is not sha256")]
    Digest(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// A version as read from its manifest.
#[derive(Debug, Clone)]
pub(crate) struct StoredVersion {
    pub(crate) product: ProductKey,
    pub(crate) props: ProductProps,
    pub(crate) serial: Serial,
    /// Every file layer, by kind.
    pub(crate) layers: BTreeMap<VersionFile, OciDescriptor>,
    pub(crate) deleted: bool,
}

impl StoredVersion {
    /// Reads a version manifest the gateway wrote: product and serial from its
    /// annotations ([`Identity::from_annotations`]).
    pub(crate) fn from_manifest(manifest: &OciImageManifest) -> Result<Self, ArtifactError> {
        let ann = manifest.annotations.clone().unwrap_or_default();
        let Some(id) = Identity::from_annotations(&ann)? else {
            let missing = if ann.get(ANN_PRODUCT).is_none_or(|p| p.is_empty()) { ANN_PRODUCT } else { ANN_SERIAL };
            return Err(ArtifactError::Missing(missing));
        };
        Ok(Self::new(id, layers(manifest)))
    }

    /// A version of `id` with these layers.
    pub(crate) fn new(id: Identity, layers: BTreeMap<VersionFile, OciDescriptor>) -> Self {
        Self { product: id.product, props: id.props, serial: id.serial, layers, deleted: id.deleted }
    }

    /// The product properties the index shows ([`ProductProps::served`]).
    pub(crate) fn index_props(&self) -> ProductProps {
        self.props.clone().served(&self.product)
    }

    /// The manifest of this version.
    pub(crate) fn to_manifest(&self) -> OciImageManifest {
        let mut ann = BTreeMap::new();
        ann.insert(ANN_PRODUCT.to_owned(), self.product.to_string());
        ann.insert(ANN_SERIAL.to_owned(), self.serial.to_string());
        if let Some(os) = &self.props.os {
            ann.insert(ANN_OS.to_owned(), os.clone());
        }
        if let Some(t) = &self.props.release_title {
            ann.insert(ANN_RELEASE_TITLE.to_owned(), t.clone());
        }
        if !self.props.aliases.is_empty() {
            ann.insert(ANN_ALIASES.to_owned(), self.props.aliases.join(","));
        }
        if self.deleted {
            ann.insert(ANN_DELETED.to_owned(), "true".to_owned());
        }
        OciImageManifest {
            schema_version: 2,
            media_type: Some(IMAGE_MANIFEST_MEDIA_TYPE.to_owned()),
            config: OciDescriptor {
                media_type: CONFIG_MEDIA_TYPE.to_owned(),
                digest: EMPTY_CONFIG_DIGEST.to_owned(),
                size: EMPTY_CONFIG.len() as i64,
                urls: None,
                artifact_type: None,
                annotations: None,
            },
            layers: self.layers.values().cloned().collect(),
            subject: None,
            artifact_type: Some(ARTIFACT_TYPE.to_owned()),
            annotations: Some(ann),
        }
    }

    /// The index entry of this version, when it is complete: a metadata tarball, at
    /// least one rootfs, and each rootfs's combined fingerprint. `Ok(None)` while
    /// parts are missing (an upload in progress) or after a delete.
    pub(crate) fn to_index_version(&self) -> Result<Option<ImageVersion>, ArtifactError> {
        if self.deleted {
            return Ok(None);
        }
        let Some(meta) = self.layers.get(&VersionFile::Metadata) else { return Ok(None) };
        let dir = version_dir(&self.product, &self.serial);
        let file_ref = |file: VersionFile, layer: &OciDescriptor| -> Result<FileRef, ArtifactError> {
            let sha =
                layer.digest.strip_prefix("sha256:").ok_or_else(|| ArtifactError::Digest(layer.digest.clone()))?;
            Ok(FileRef {
                path: format!("{dir}/{}", file.served_name()),
                sha256: sha.to_owned(),
                size: layer.size as u64,
            })
        };
        let metadata = file_ref(VersionFile::Metadata, meta)?;
        let mut rootfs = BTreeMap::new();
        for (file, layer) in &self.layers {
            let VersionFile::Rootfs(kind) = *file else { continue };
            let Some(combined) = layer.annotations.as_ref().and_then(|a| a.get(ANN_COMBINED)) else { continue };
            rootfs.insert(kind, Rootfs { file: file_ref(*file, layer)?, combined_sha256: combined.clone() });
        }
        if rootfs.is_empty() {
            return Ok(None);
        }
        Ok(Some(ImageVersion { serial: self.serial.clone(), metadata, rootfs }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simplestreams::index::RootKind;
    use sha2::{Digest, Sha256};

    fn layer(file: VersionFile, data: &[u8], combined: Option<&str>) -> OciDescriptor {
        let mut ann = std::collections::BTreeMap::new();
        ann.insert(ANN_TITLE.to_owned(), file.served_name().to_owned());
        if let Some(c) = combined {
            ann.insert(ANN_COMBINED.to_owned(), c.to_owned());
        }
        OciDescriptor {
            media_type: file.media_type().to_owned(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(data))),
            size: data.len() as i64,
            urls: None,
            artifact_type: None,
            annotations: Some(ann),
        }
    }

    #[test]
    fn the_empty_config_digest_is_right() {
        assert_eq!(EMPTY_CONFIG_DIGEST, format!("sha256:{}", hex::encode(Sha256::digest(EMPTY_CONFIG))));
    }

    #[test]
    fn a_version_round_trips_through_its_manifest() {
        let product = ProductKey::new("debian", "bookworm", "amd64", "default").unwrap();
        let serial = Serial::parse("20260101_00:00").unwrap();
        assert_eq!(version_tag(&product, &serial), "debian_bookworm_amd64_default_20260101_0000");
        let combined = hex::encode(Sha256::digest(b"metaroot"));
        let mut v = StoredVersion {
            product,
            props: ProductProps { os: Some("Debian".into()), release_title: None, aliases: vec!["d/12".into()] },
            serial,
            layers: BTreeMap::new(),
            deleted: false,
        };
        v.layers.insert(VersionFile::Metadata, layer(VersionFile::Metadata, b"meta", None));
        assert_eq!(v.to_index_version().unwrap(), None, "no rootfs yet");
        v.layers.insert(
            VersionFile::Rootfs(RootKind::Squashfs),
            layer(VersionFile::Rootfs(RootKind::Squashfs), b"root", Some(&combined)),
        );
        let again = StoredVersion::from_manifest(&v.to_manifest()).unwrap();
        let json = |v: &StoredVersion| serde_json::to_value(v.to_manifest()).unwrap();
        assert_eq!(json(&again), json(&v));
        assert_eq!((&again.product, &again.serial, &again.props), (&v.product, &v.serial, &v.props));
        let iv = again.to_index_version().unwrap().unwrap();
        assert_eq!(iv.metadata.path, "images/debian/bookworm/amd64/default/20260101_00:00/incus.tar.xz");
        assert_eq!(iv.rootfs[&RootKind::Squashfs].combined_sha256, combined);
        assert_eq!(iv.rootfs[&RootKind::Squashfs].file.sha256, hex::encode(Sha256::digest(b"root")));
        v.deleted = true;
        assert_eq!(StoredVersion::from_manifest(&v.to_manifest()).unwrap().to_index_version().unwrap(), None);
    }
}
