//! Image versions as OCI artifacts: the registry is the durable store every replica
//! reads, so gateway pods stay stateless.
//!
//! One version is one image manifest under one tag in the stream's repository:
//!
//! | where | what |
//! | --- | --- |
//! | tag | `<os>_<release>_<arch>_<variant>_<YYYYMMDD>_<HHMM>` ([`version_tag`]) |
//! | manifest `artifactType` | [`ARTIFACT_TYPE`] |
//! | manifest annotation [`ANN_PRODUCT`] | `os:release:arch:variant` |
//! | manifest annotation [`ANN_SERIAL`] | `YYYYMMDD_HH:MM` |
//! | manifest annotations [`ANN_OS`], [`ANN_RELEASE_TITLE`], [`ANN_ALIASES`] | display name, release title, comma-separated aliases (optional) |
//! | manifest annotation [`ANN_DELETED`] | `true`: a tombstone left by `DELETE` |
//! | one layer per file | media type from [`media_type`], `org.opencontainers.image.title` the file name |
//! | rootfs layer annotation [`ANN_COMBINED`] | `sha256(metadata ‖ rootfs)`, the image fingerprint |
//!
//! A layer's digest is the SHA-256 of the file itself (stored uncompressed), which is
//! what the index promises as the item's `sha256`.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest, IMAGE_MANIFEST_MEDIA_TYPE};
use updraft_core::image_metadata;

use super::index::{FileRef, ImageVersion, IndexError, ProductKey, ProductProps, RootKind, Rootfs, Serial};
use super::metadata::{version_dir, UploadFile};

pub const ARTIFACT_TYPE: &str = "application/vnd.updraft.simplestreams.version.v1";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty JSON object `{}`, the config blob of every version manifest.
pub const EMPTY_CONFIG: &[u8] = b"{}";
pub const EMPTY_CONFIG_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

pub const ANN_TITLE: &str = "org.opencontainers.image.title";
pub const ANN_PRODUCT: &str = "dev.updraft.simplestreams.product";
pub const ANN_SERIAL: &str = "dev.updraft.simplestreams.serial";
pub const ANN_OS: &str = "dev.updraft.simplestreams.os";
pub const ANN_RELEASE_TITLE: &str = "dev.updraft.simplestreams.release-title";
pub const ANN_ALIASES: &str = "dev.updraft.simplestreams.aliases";
pub const ANN_DELETED: &str = "dev.updraft.simplestreams.deleted";
pub const ANN_COMBINED: &str = "dev.updraft.simplestreams.combined-sha256";

/// Why a manifest is not a version of this stream.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("manifest lacks annotation {0}")]
    Missing(&'static str),
    #[error("annotation {ANN_PRODUCT} {0:?} is not os:release:arch:variant")]
    Product(String),
    #[error("layer {0}: digest is not sha256")]
    Digest(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The recommended media type of each file.
pub fn media_type(file: UploadFile) -> &'static str {
    match file {
        UploadFile::Metadata => image_metadata::METADATA_MEDIA_TYPE,
        UploadFile::Rootfs(RootKind::Squashfs) => "application/vnd.updraft.simplestreams.rootfs.v1.squashfs",
        UploadFile::Rootfs(RootKind::RootTarXz) => "application/vnd.updraft.simplestreams.rootfs.v1.tar+xz",
        UploadFile::Rootfs(RootKind::DiskKvmImg) => "application/vnd.updraft.simplestreams.disk-kvm.v1.img",
        UploadFile::MetadataJson => "application/vnd.updraft.simplestreams.metadata.v1+json",
    }
}

/// Which file a layer is: by its media type, else by its title.
pub fn layer_file(layer: &OciDescriptor) -> Option<UploadFile> {
    let by_type = [
        UploadFile::Metadata,
        UploadFile::Rootfs(RootKind::Squashfs),
        UploadFile::Rootfs(RootKind::RootTarXz),
        UploadFile::Rootfs(RootKind::DiskKvmImg),
        UploadFile::MetadataJson,
    ]
    .into_iter()
    .find(|f| media_type(*f) == layer.media_type);
    by_type.or_else(|| layer.annotations.as_ref()?.get(ANN_TITLE).and_then(|t| classify_title(t)))
}

/// A file by its name: the upload names, and what `incus image export` writes
/// (`meta-<fp>.tar.xz`, `<fp>.squashfs`, `<fp>.tar.xz`, `<fp>.img`/`.qcow2`). Which
/// names are a metadata tarball is core's rule, the one the operator counts with.
pub fn classify_title(title: &str) -> Option<UploadFile> {
    if let Some(file) = UploadFile::from_name(title) {
        return Some(file);
    }
    if image_metadata::is_metadata_name(title) {
        return Some(UploadFile::Metadata);
    }
    if title.ends_with(".squashfs") {
        Some(UploadFile::Rootfs(RootKind::Squashfs))
    } else if title.ends_with(".tar.xz") {
        Some(UploadFile::Rootfs(RootKind::RootTarXz))
    } else if title.ends_with(".img") || title.ends_with(".qcow2") {
        Some(UploadFile::Rootfs(RootKind::DiskKvmImg))
    } else {
        None
    }
}

/// The tag of a version: OCI tags allow no ':', and product parts hold no '_'.
pub fn version_tag(product: &ProductKey, serial: &Serial) -> String {
    format!("{}_{}_{}_{}_{}", product.os, product.release, product.arch, product.variant, serial.tag_form())
}

/// A version as read from its manifest.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub product: ProductKey,
    pub props: ProductProps,
    pub serial: Serial,
    /// Every file layer, by kind.
    pub layers: BTreeMap<UploadFile, OciDescriptor>,
    pub deleted: bool,
}

impl StoredVersion {
    /// Reads a version manifest.
    pub fn from_manifest(manifest: &OciImageManifest) -> Result<Self, ArtifactError> {
        let ann = manifest.annotations.clone().unwrap_or_default();
        let get = |k: &'static str| ann.get(k).map(String::as_str).filter(|s| !s.is_empty());
        let product_text = get(ANN_PRODUCT).ok_or(ArtifactError::Missing(ANN_PRODUCT))?;
        let parts: Vec<&str> = product_text.split(':').collect();
        let [os, release, arch, variant] = parts[..] else {
            return Err(ArtifactError::Product(product_text.to_owned()));
        };
        let product = ProductKey::new(os, release, arch, variant)?;
        let serial = Serial::parse(get(ANN_SERIAL).ok_or(ArtifactError::Missing(ANN_SERIAL))?)?;
        let props = ProductProps {
            os: get(ANN_OS).map(String::from),
            release_title: get(ANN_RELEASE_TITLE).map(String::from),
            aliases: get(ANN_ALIASES)
                .map(|a| a.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default(),
        };
        let mut layers = BTreeMap::new();
        for layer in &manifest.layers {
            if let Some(file) = layer_file(layer) {
                layers.insert(file, layer.clone());
            }
        }
        Ok(Self { product, props, serial, layers, deleted: get(ANN_DELETED) == Some("true") })
    }

    /// The product properties the index shows: the stored ones, and when no aliases
    /// were given, `os/release/variant` (and `os/release` for the `default` variant),
    /// as docker-simplestreams-server names them.
    pub fn index_props(&self) -> ProductProps {
        let mut props = self.props.clone();
        if props.aliases.is_empty() {
            let p = &self.product;
            props.aliases.push(format!("{}/{}/{}", p.os, p.release, p.variant));
            if p.variant == "default" {
                props.aliases.push(format!("{}/{}", p.os, p.release));
            }
        }
        props
    }

    /// The manifest of this version.
    pub fn to_manifest(&self) -> OciImageManifest {
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
    pub fn to_index_version(&self) -> Result<Option<ImageVersion>, ArtifactError> {
        if self.deleted {
            return Ok(None);
        }
        let Some(meta) = self.layers.get(&UploadFile::Metadata) else { return Ok(None) };
        let dir = version_dir(&self.product, &self.serial);
        let file_ref = |file: UploadFile, layer: &OciDescriptor| -> Result<FileRef, ArtifactError> {
            let sha =
                layer.digest.strip_prefix("sha256:").ok_or_else(|| ArtifactError::Digest(layer.digest.clone()))?;
            Ok(FileRef {
                path: format!("{dir}/{}", file.served_name()),
                sha256: sha.to_owned(),
                size: layer.size as u64,
            })
        };
        let metadata = file_ref(UploadFile::Metadata, meta)?;
        let mut rootfs = BTreeMap::new();
        for (file, layer) in &self.layers {
            let UploadFile::Rootfs(kind) = *file else { continue };
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
    use sha2::{Digest, Sha256};

    fn layer(file: UploadFile, data: &[u8], combined: Option<&str>) -> OciDescriptor {
        let mut ann = std::collections::BTreeMap::new();
        ann.insert(ANN_TITLE.to_owned(), file.served_name().to_owned());
        if let Some(c) = combined {
            ann.insert(ANN_COMBINED.to_owned(), c.to_owned());
        }
        OciDescriptor {
            media_type: media_type(file).to_owned(),
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
        v.layers.insert(UploadFile::Metadata, layer(UploadFile::Metadata, b"meta", None));
        assert_eq!(v.to_index_version().unwrap(), None, "no rootfs yet");
        v.layers.insert(
            UploadFile::Rootfs(RootKind::Squashfs),
            layer(UploadFile::Rootfs(RootKind::Squashfs), b"root", Some(&combined)),
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

    #[test]
    fn layers_are_known_by_media_type_or_title() {
        let mut plain = layer(UploadFile::Rootfs(RootKind::Squashfs), b"x", None);
        plain.media_type = "application/vnd.oci.image.layer.v1.tar".into();
        assert_eq!(layer_file(&plain), Some(UploadFile::Rootfs(RootKind::Squashfs)));
        plain.annotations = None;
        assert_eq!(layer_file(&plain), None);
        let fp = "2a4f36a8daf89ab5864715cb3377c02ae45036c0a23a47d79780e4c82507d726";
        assert_eq!(classify_title(&format!("meta-{fp}.tar.xz")), Some(UploadFile::Metadata));
        assert_eq!(classify_title(&format!("{fp}.squashfs")), Some(UploadFile::Rootfs(RootKind::Squashfs)));
        assert_eq!(classify_title(&format!("{fp}.tar.xz")), Some(UploadFile::Rootfs(RootKind::RootTarXz)));
        assert_eq!(classify_title(&format!("{fp}.qcow2")), Some(UploadFile::Rootfs(RootKind::DiskKvmImg)));
        assert_eq!(classify_title("README.md"), None);
    }
}
