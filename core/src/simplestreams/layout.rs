//! How one image version is laid out: the files it holds, the OCI layers and
//! annotations that carry them in a registry, and the paths the index serves them
//! under.
//!
//! One version is one image manifest under one tag:
//!
//! | where | what |
//! | --- | --- |
//! | tag | `<os>_<release>_<arch>_<variant>_<YYYYMMDD>_<HHMM>` ([`version_tag`]) |
//! | manifest `artifactType` | [`ARTIFACT_TYPE`] |
//! | manifest annotation [`ANN_PRODUCT`] | `os:release:arch:variant` |
//! | manifest annotation [`ANN_SERIAL`] | `YYYYMMDD_HH:MM` |
//! | manifest annotations [`ANN_OS`], [`ANN_RELEASE_TITLE`], [`ANN_ALIASES`] | display name, release title, comma-separated aliases (optional) |
//! | manifest annotation [`ANN_DELETED`] | `true`: a tombstone left by `DELETE` |
//! | one layer per file | media type from [`VersionFile::media_type`], [`ANN_TITLE`] the file name |
//! | rootfs layer annotation [`ANN_COMBINED`] | `sha256(metadata ‖ rootfs)`, the image fingerprint |
//!
//! Which layer is which file ([`VersionFile::of_layer`]): the media type when it is one
//! of the recommended ones, else the file name in [`ANN_TITLE`]: the upload names, and
//! what `incus image export` writes (`meta-<fp>.tar.xz`, `<fp>.squashfs`, `<fp>.tar.xz`,
//! `<fp>.img`/`.qcow2`). The first layer of each kind counts.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest};

use super::annotations::ANN_TITLE;
#[cfg(doc)]
use super::annotations::{
    ANN_ALIASES, ANN_COMBINED, ANN_DELETED, ANN_OS, ANN_PRODUCT, ANN_RELEASE_TITLE, ANN_SERIAL, ARTIFACT_TYPE,
};
use super::product::{ProductKey, Serial};
use super::IndexError;
use crate::image_metadata::{self, METADATA_MEDIA_TYPE};
use crate::oci::is_sha256_hex;

/// The kinds of root filesystem an image version may carry; each one is a separate
/// image for the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RootKind {
    /// A container rootfs as squashfs (`rootfs.squashfs`).
    Squashfs,
    /// A container rootfs as a tarball (`root.tar.xz`).
    RootTarXz,
    /// A virtual machine disk (`disk-kvm.img`).
    DiskKvmImg,
}

impl RootKind {
    /// The item's `ftype`.
    pub fn ftype(self) -> &'static str {
        match self {
            RootKind::Squashfs => "squashfs",
            RootKind::RootTarXz => "root.tar.xz",
            RootKind::DiskKvmImg => "disk-kvm.img",
        }
    }

    /// The item's key inside the version's `items`.
    pub fn item_name(self) -> &'static str {
        match self {
            RootKind::Squashfs => "root.squashfs",
            RootKind::RootTarXz => "root.tar.xz",
            RootKind::DiskKvmImg => "disk-kvm.img",
        }
    }
}

/// One file of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VersionFile {
    /// The metadata tarball (`lxd.tar.xz` or `incus.tar.xz`).
    Metadata,
    Rootfs(RootKind),
    /// `metadata.json`: overrides of `os`, `release_title` and `aliases` (uploads).
    MetadataJson,
}

impl VersionFile {
    const ALL: [VersionFile; 5] = [
        VersionFile::Metadata,
        VersionFile::Rootfs(RootKind::Squashfs),
        VersionFile::Rootfs(RootKind::RootTarXz),
        VersionFile::Rootfs(RootKind::DiskKvmImg),
        VersionFile::MetadataJson,
    ];

    /// The upload API's file names; every other name is refused there.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "lxd.tar.xz" | "incus.tar.xz" => VersionFile::Metadata,
            "rootfs.squashfs" => VersionFile::Rootfs(RootKind::Squashfs),
            "root.tar.xz" | "rootfs.tar.xz" => VersionFile::Rootfs(RootKind::RootTarXz),
            "disk-kvm.img" => VersionFile::Rootfs(RootKind::DiskKvmImg),
            "metadata.json" => VersionFile::MetadataJson,
            _ => return None,
        })
    }

    /// The name the file is served under.
    pub fn served_name(self) -> &'static str {
        match self {
            VersionFile::Metadata => "incus.tar.xz",
            VersionFile::Rootfs(RootKind::Squashfs) => "rootfs.squashfs",
            VersionFile::Rootfs(RootKind::RootTarXz) => "root.tar.xz",
            VersionFile::Rootfs(RootKind::DiskKvmImg) => "disk-kvm.img",
            VersionFile::MetadataJson => "metadata.json",
        }
    }

    /// The recommended media type of the file's layer.
    pub fn media_type(self) -> &'static str {
        match self {
            VersionFile::Metadata => METADATA_MEDIA_TYPE,
            VersionFile::Rootfs(RootKind::Squashfs) => "application/vnd.updraft.simplestreams.rootfs.v1.squashfs",
            VersionFile::Rootfs(RootKind::RootTarXz) => "application/vnd.updraft.simplestreams.rootfs.v1.tar+xz",
            VersionFile::Rootfs(RootKind::DiskKvmImg) => "application/vnd.updraft.simplestreams.disk-kvm.v1.img",
            VersionFile::MetadataJson => "application/vnd.updraft.simplestreams.metadata.v1+json",
        }
    }

    /// A file by its name: the upload names, and what `incus image export` writes.
    /// Which names are a metadata tarball is [`image_metadata::is_metadata_name`].
    pub(crate) fn from_title(title: &str) -> Option<Self> {
        if let Some(file) = Self::from_name(title) {
            return Some(file);
        }
        if image_metadata::is_metadata_name(title) {
            return Some(VersionFile::Metadata);
        }
        if title.ends_with(".squashfs") {
            Some(VersionFile::Rootfs(RootKind::Squashfs))
        } else if title.ends_with(".tar.xz") {
            Some(VersionFile::Rootfs(RootKind::RootTarXz))
        } else if title.ends_with(".img") || title.ends_with(".qcow2") {
            Some(VersionFile::Rootfs(RootKind::DiskKvmImg))
        } else {
            None
        }
    }

    /// Which file a layer is: by its media type, else by its title.
    pub fn of_layer(layer: &OciDescriptor) -> Option<Self> {
        let by_type = Self::ALL.into_iter().find(|f| f.media_type() == layer.media_type);
        by_type.or_else(|| layer.annotations.as_ref()?.get(ANN_TITLE).and_then(|t| Self::from_title(t)))
    }
}

/// The layers of a version manifest by the file they hold; the first layer of each
/// kind counts, others are ignored.
pub fn layers(manifest: &OciImageManifest) -> BTreeMap<VersionFile, OciDescriptor> {
    let mut layers = BTreeMap::new();
    for layer in &manifest.layers {
        if let Some(file) = VersionFile::of_layer(layer) {
            layers.entry(file).or_insert_with(|| layer.clone());
        }
    }
    layers
}

/// Why an artifact with these layers is not a version the index can list, if it is
/// not: it needs a metadata tarball and at least one rootfs.
pub fn incomplete(layers: &BTreeMap<VersionFile, OciDescriptor>) -> Option<&'static str> {
    if !layers.contains_key(&VersionFile::Metadata) {
        Some(image_metadata::NO_METADATA_LAYER)
    } else if !layers.keys().any(|f| matches!(f, VersionFile::Rootfs(_))) {
        Some(NO_ROOTFS_LAYER)
    } else {
        None
    }
}

/// Why an artifact is not an image version when none of its layers is a rootfs.
pub(crate) const NO_ROOTFS_LAYER: &str = "the artifact has no rootfs layer: give one the media type of its kind, or a \
     file name (org.opencontainers.image.title) rootfs.squashfs, root.tar.xz, disk-kvm.img, *.squashfs, *.tar.xz, \
     *.img or *.qcow2";

/// The tag of a version: OCI tags allow no ':', and product parts hold no '_'.
pub fn version_tag(product: &ProductKey, serial: &Serial) -> String {
    format!("{}_{}_{}_{}_{}", product.os, product.release, product.arch, product.variant, serial.tag_form())
}

/// `images/os/release/arch/variant/serial`: a version's folder under the base URL.
pub fn version_dir(product: &ProductKey, serial: &Serial) -> String {
    format!("images/{}/{}/{}/{}/{}", product.os, product.release, product.arch, product.variant, serial)
}

/// Whether an item path is safe to join onto a base URL: relative, only plain
/// segments, nothing a URL or a file system would read specially. Upstream documents
/// are held to it too: the `images.json` path index.json names, every item path.
pub(crate) fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !path.chars().any(|c| matches!(c, '\\' | '%' | '?' | '#') || c.is_control() || c.is_whitespace())
}

/// One file of a version as the index names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Relative to the stream's base URL, e.g. `images/debian/…/20260101_00:00/rootfs.squashfs`.
    pub path: String,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    pub size: u64,
}

/// A rootfs file and the combined fingerprint of the metadata with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub file: FileRef,
    /// `sha256(metadata bytes ‖ rootfs bytes)`, lowercase hex: the image fingerprint.
    pub combined_sha256: String,
}

/// One version of a product as the index lists it: its metadata tarball and one or
/// more rootfs files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageVersion {
    pub serial: Serial,
    pub metadata: FileRef,
    pub rootfs: BTreeMap<RootKind, Rootfs>,
}

impl ImageVersion {
    /// Checks the version on its own: safe paths, lowercase SHA-256s, at least one rootfs.
    pub fn validate(&self) -> Result<(), IndexError> {
        let files =
            std::iter::once(("metadata", &self.metadata)).chain(self.rootfs.iter().map(|(k, r)| (k.ftype(), &r.file)));
        for (what, file) in files {
            if !is_safe_relative_path(&file.path) {
                return Err(IndexError::Path(file.path.clone()));
            }
            check_sha(&format!("{} {what}", self.serial), &file.sha256)?;
        }
        if self.rootfs.is_empty() {
            return Err(IndexError::NoRootfs(self.serial.to_string()));
        }
        for (kind, root) in &self.rootfs {
            check_sha(&format!("{} combined {}", self.serial, kind.ftype()), &root.combined_sha256)?;
        }
        Ok(())
    }

    /// Every file, metadata first.
    pub fn files(&self) -> impl Iterator<Item = &FileRef> {
        std::iter::once(&self.metadata).chain(self.rootfs.values().map(|r| &r.file))
    }
}

fn check_sha(what: &str, value: &str) -> Result<(), IndexError> {
    if is_sha256_hex(value) {
        Ok(())
    } else {
        Err(IndexError::Sha256 { what: what.to_owned(), value: value.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(media_type: &str, title: Option<&str>) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.into(),
            digest: format!("sha256:{}", "1".repeat(64)),
            size: 10,
            urls: None,
            artifact_type: None,
            annotations: title.map(|t| [(ANN_TITLE.to_owned(), t.to_owned())].into()),
        }
    }

    fn manifest(layers: Vec<OciDescriptor>) -> OciImageManifest {
        OciImageManifest { layers, ..Default::default() }
    }

    const OCTETS: &str = "application/octet-stream";

    #[test]
    fn a_layer_is_known_by_its_media_type_before_its_title() {
        for file in VersionFile::ALL {
            assert_eq!(VersionFile::of_layer(&layer(file.media_type(), None)), Some(file));
        }
        // A rootfs media type wins over a metadata-looking title (the operator once
        // took such a layer for the metadata tarball).
        let typed = layer(VersionFile::Rootfs(RootKind::Squashfs).media_type(), Some("lxd.tar.xz"));
        assert_eq!(VersionFile::of_layer(&typed), Some(VersionFile::Rootfs(RootKind::Squashfs)));
        assert_eq!(VersionFile::of_layer(&layer(OCTETS, None)), None);
    }

    #[test]
    fn titles_are_the_upload_names_and_what_incus_image_export_writes() {
        let fp = "2a4f36a8daf89ab5864715cb3377c02ae45036c0a23a47d79780e4c82507d726";
        let cases = [
            ("incus.tar.xz".to_owned(), Some(VersionFile::Metadata)),
            ("lxd.tar.xz".to_owned(), Some(VersionFile::Metadata)),
            (format!("meta-{fp}.tar.xz"), Some(VersionFile::Metadata)),
            (format!("meta-{fp}.tar.gz"), Some(VersionFile::Metadata)),
            (format!("{fp}.squashfs"), Some(VersionFile::Rootfs(RootKind::Squashfs))),
            (format!("{fp}.tar.xz"), Some(VersionFile::Rootfs(RootKind::RootTarXz))),
            (format!("{fp}.qcow2"), Some(VersionFile::Rootfs(RootKind::DiskKvmImg))),
            ("disk-kvm.img".to_owned(), Some(VersionFile::Rootfs(RootKind::DiskKvmImg))),
            ("metadata.json".to_owned(), Some(VersionFile::MetadataJson)),
            ("README.md".to_owned(), None),
        ];
        for (title, file) in cases {
            assert_eq!(VersionFile::from_title(&title), file, "{title}");
        }
    }

    #[test]
    fn the_first_layer_of_each_kind_counts() {
        let m = manifest(vec![
            layer(OCTETS, Some("meta-a.tar.xz")),
            layer(OCTETS, Some("a.squashfs")),
            layer(METADATA_MEDIA_TYPE, Some("second")),
            layer(OCTETS, Some("notes.txt")),
        ]);
        let found = layers(&m);
        assert_eq!(found.len(), 2);
        assert_eq!(found[&VersionFile::Metadata].annotations.as_ref().unwrap()[ANN_TITLE], "meta-a.tar.xz");
    }

    #[test]
    fn a_version_needs_a_metadata_tarball_and_a_rootfs() {
        let meta = layer(OCTETS, Some("meta-a.tar.xz"));
        let root = layer(OCTETS, Some("a.squashfs"));
        assert_eq!(incomplete(&layers(&manifest(vec![meta.clone(), root.clone()]))), None);
        assert_eq!(incomplete(&layers(&manifest(vec![root]))), Some(image_metadata::NO_METADATA_LAYER));
        assert_eq!(incomplete(&layers(&manifest(vec![meta]))), Some(NO_ROOTFS_LAYER));
    }

    #[test]
    fn tags_and_folders_of_a_version() {
        let product = ProductKey::new("debian", "bookworm", "amd64", "default").unwrap();
        let serial = Serial::parse("20260101_00:00").unwrap();
        assert_eq!(version_tag(&product, &serial), "debian_bookworm_amd64_default_20260101_0000");
        assert_eq!(version_dir(&product, &serial), "images/debian/bookworm/amd64/default/20260101_00:00");
    }

    #[test]
    fn paths_must_stay_relative_and_plain() {
        assert!(is_safe_relative_path("images/debian/bookworm/amd64/default/20260101_00:00/incus.tar.xz"));
        assert!(is_safe_relative_path("streams/v1/images.json"));
        for bad in ["", "/abs", "a/../b", "a//b", "./a", "a/%2e%2e/b", "a\\b", "a?b", "a#b", "a b", "a/", "a/\u{0}"] {
            assert!(!is_safe_relative_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_version_needs_safe_paths_real_hashes_and_a_rootfs() {
        let sha = |c: char| c.to_string().repeat(64);
        let file = |path: &str, c| FileRef { path: path.into(), sha256: sha(c), size: 1 };
        let mut v = ImageVersion {
            serial: Serial::parse("20260101_00:00").unwrap(),
            metadata: file("images/m", 'a'),
            rootfs: BTreeMap::new(),
        };
        assert!(matches!(v.validate(), Err(IndexError::NoRootfs(_))));
        v.rootfs.insert(RootKind::Squashfs, Rootfs { file: file("images/r", 'b'), combined_sha256: sha('c') });
        assert!(v.validate().is_ok());
        assert_eq!(v.files().count(), 2);
        v.metadata.path = "images/./m".into();
        assert!(matches!(v.validate(), Err(IndexError::Path(_))));
        v.metadata.path = "images/m".into();
        v.rootfs.get_mut(&RootKind::Squashfs).unwrap().combined_sha256 = "ABC".into();
        assert!(matches!(v.validate(), Err(IndexError::Sha256 { .. })));
    }
}
