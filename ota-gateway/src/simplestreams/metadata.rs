//! What the gateway reads out of an image's own files, and the grammar of upload paths.
//!
//! - [`read_metadata_yaml`]: `metadata.yaml` from an image's metadata tarball, for the
//!   product properties when an OCI artifact carries no annotations (core's reader, the
//!   one the operator counts products with).
//! - [`UploadPath`]: the upload API of docker-simplestreams-server names each file
//!   `os/release/arch/variant/YYYYMMDD_HH:MM/<file>`; anything else is refused, so no
//!   name can escape the stream.
//! - [`UploadMetadata`]: the optional `metadata.json` of a version folder.

use serde::Deserialize;
pub(crate) use updraft_core::image_metadata::{read_metadata_yaml, ImageMetadata};

use super::index::{IndexError, ProductKey, Serial};
pub(crate) use updraft_core::simplestreams::layout::version_dir;
pub(crate) use updraft_core::simplestreams::VersionFile;

/// Why a metadata tarball or an upload path is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetadataError {
    #[error(transparent)]
    Tarball(#[from] updraft_core::image_metadata::MetadataError),
    #[error("metadata.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("upload path {path:?}: {reason}")]
    Path { path: String, reason: String },
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// A parsed upload file name: `os/release/arch/variant/YYYYMMDD_HH:MM/<file>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadPath {
    pub(crate) product: ProductKey,
    pub(crate) serial: Serial,
    pub(crate) file: VersionFile,
}

impl UploadPath {
    /// Parses the name strictly: exactly six plain segments, lowercase names, a real
    /// date serial, a known file name. Percent signs, backslashes, `.`/`..`, empty
    /// segments and a leading `/` are refused before anything else is looked at, so
    /// neither a literal nor an encoded escape gets through.
    pub(crate) fn parse(path: &str) -> Result<Self, MetadataError> {
        let refuse = |reason: &str| MetadataError::Path { path: path.to_owned(), reason: reason.to_owned() };
        if path.starts_with('/') {
            return Err(refuse("must be relative"));
        }
        if path.chars().any(|c| matches!(c, '%' | '\\' | '?' | '#') || c.is_control() || c.is_whitespace()) {
            return Err(refuse("holds '%', '\\\\', '?', '#', a space or a control character"));
        }
        let segments: Vec<&str> = path.split('/').collect();
        if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
            return Err(refuse("holds an empty, '.' or '..' segment"));
        }
        let [os, release, arch, variant, serial, file] = segments[..] else {
            return Err(refuse("must be os/release/arch/variant/YYYYMMDD_HH:MM/<file>"));
        };
        let product = ProductKey::new(os, release, arch, variant)?;
        let serial = Serial::parse(serial)?;
        let file = VersionFile::from_name(file).ok_or_else(|| {
            refuse("file must be lxd.tar.xz, incus.tar.xz, rootfs.squashfs, root.tar.xz, disk-kvm.img or metadata.json")
        })?;
        Ok(Self { product, serial, file })
    }

    /// The path the file is served under, relative to the stream's base URL.
    pub(crate) fn served_path(&self) -> String {
        version_dir(&self.product, &self.serial) + "/" + self.file.served_name()
    }
}

/// The optional `metadata.json` of an uploaded version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct UploadMetadata {
    #[serde(default)]
    pub(crate) os: Option<String>,
    #[serde(default)]
    pub(crate) release_title: Option<String>,
    /// An array or a comma-separated string.
    #[serde(default, deserialize_with = "aliases")]
    pub(crate) aliases: Option<Vec<String>>,
}

impl UploadMetadata {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, MetadataError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

fn aliases<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aliases {
        List(Vec<String>),
        Csv(String),
    }
    let split = |s: &str| s.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
    Ok(Option::<Aliases>::deserialize(d)?.map(|a| match a {
        Aliases::List(list) => list.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
        Aliases::Csv(s) => split(&s),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_core::simplestreams::RootKind;

    #[test]
    fn upload_paths() {
        let p = UploadPath::parse("debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz").unwrap();
        assert_eq!(p.product.to_string(), "debian:bookworm:amd64:default");
        assert_eq!(p.serial.as_str(), "20260101_00:00");
        assert_eq!(p.file, VersionFile::Metadata);
        assert_eq!(p.served_path(), "images/debian/bookworm/amd64/default/20260101_00:00/incus.tar.xz");
        let p = UploadPath::parse("ubuntu/22.04/arm64/cloud/20261231_23:59/rootfs.squashfs").unwrap();
        assert_eq!(p.file, VersionFile::Rootfs(RootKind::Squashfs));
        assert_eq!(
            UploadPath::parse("a/b/amd64/c/20260101_00:00/disk-kvm.img").unwrap().file,
            VersionFile::Rootfs(RootKind::DiskKvmImg)
        );
        assert_eq!(
            UploadPath::parse("a/b/amd64/c/20260101_00:00/metadata.json").unwrap().file,
            VersionFile::MetadataJson
        );
    }

    #[test]
    fn upload_paths_refuse_every_escape_and_malformation() {
        for bad in [
            "../debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz",
            "/debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz",
            "debian/../amd64/default/20260101_00:00/lxd.tar.xz",
            "debian/%2e%2e/amd64/default/20260101_00:00/lxd.tar.xz",
            "debian/bookworm/amd64/default/20260101_00:00/..%2flxd.tar.xz",
            "debian\\bookworm/amd64/default/20260101_00:00/lxd.tar.xz",
            "debian/bookworm/amd64/default/20260101_00:00/./lxd.tar.xz",
            "debian/bookworm/amd64/default//20260101_00:00/lxd.tar.xz",
            "debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz/",
            "debian/bookworm/amd64/20260101_00:00/lxd.tar.xz",
            "x/debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz",
            "debian/bookworm/amd64/default/2026-01-01/lxd.tar.xz",
            "debian/bookworm/amd64/default/20261301_00:00/lxd.tar.xz",
            "debian/bookworm/amd64/default/20260101_00:00/evil.sh",
            "debian/bookworm/amd64/default/20260101_00:00/LXD.tar.xz",
            "Debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz",
            "debian/bookworm/sparc/default/20260101_00:00/lxd.tar.xz",
            "debian/book worm/amd64/default/20260101_00:00/lxd.tar.xz",
            "debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz\0",
            "",
        ] {
            assert!(UploadPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn metadata_json_takes_aliases_as_array_or_csv() {
        let m = UploadMetadata::parse(
            br#"{"os": "Ubuntu", "release_title": "22.04 LTS", "aliases": ["u/22.04", " u/jammy "]}"#,
        )
        .unwrap();
        assert_eq!(m.os.as_deref(), Some("Ubuntu"));
        assert_eq!(m.aliases, Some(vec!["u/22.04".to_owned(), "u/jammy".to_owned()]));
        let m = UploadMetadata::parse(br#"{"aliases": "a, b,,c"}"#).unwrap();
        assert_eq!(m.aliases, Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]));
        assert_eq!(UploadMetadata::parse(b"{}").unwrap(), UploadMetadata::default());
        assert!(matches!(UploadMetadata::parse(b"os: x"), Err(MetadataError::Json(_))));
        assert!(UploadMetadata::parse(br#"{"aliases": 3}"#).is_err());
    }
}
