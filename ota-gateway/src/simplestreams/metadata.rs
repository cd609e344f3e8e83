//! What the gateway reads out of an image's own files, and the grammar of upload paths.
//!
//! - [`read_metadata_yaml`]: `metadata.yaml` from an image's metadata tarball (what
//!   `incus image export` writes as `meta-<fp>.tar.xz`, or a `.tar.gz` / plain tar),
//!   for the product properties when an OCI artifact carries no annotations. The xz
//!   decoder is `lzma-rs`: pure Rust, so the gateway links no C liblzma; speed does not
//!   matter for a tarball of a few KiB read once per version.
//! - [`UploadPath`]: the upload API of docker-simplestreams-server names each file
//!   `os/release/arch/variant/YYYYMMDD_HH:MM/<file>`; anything else is refused, so no
//!   name can escape the stream.
//! - [`UploadMetadata`]: the optional `metadata.json` of a version folder.

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::Deserialize;

use super::index::{IndexError, ProductKey, RootKind, Serial};

/// The largest `metadata.yaml` read (a real one is a few KiB).
const MAX_METADATA_YAML: u64 = 1 << 20;
/// The most bytes decompressed while looking for it.
const MAX_TARBALL: u64 = 256 << 20;

/// Why a metadata tarball or an upload path is refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata tarball: {0}")]
    Io(#[from] io::Error),
    #[error("metadata tarball: xz: {0}")]
    Xz(String),
    #[error("metadata tarball has no metadata.yaml")]
    Missing,
    #[error("metadata.yaml is over {MAX_METADATA_YAML} bytes")]
    TooLarge,
    #[error("metadata.yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("metadata.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("upload path {path:?}: {reason}")]
    Path { path: String, reason: String },
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The fields of `metadata.yaml` the index uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImageMetadata {
    /// Kernel spelling, e.g. `x86_64`.
    #[serde(default)]
    pub architecture: String,
    /// Unix seconds.
    #[serde(default)]
    pub creation_date: i64,
    /// `os`, `release`, `variant`, `description`, …
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl ImageMetadata {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str).filter(|s| !s.is_empty())
    }
}

/// Reads `metadata.yaml` out of a metadata tarball, compressed with xz or gzip or not
/// at all (recognised by magic bytes).
pub fn read_metadata_yaml(tarball: &[u8]) -> Result<ImageMetadata, MetadataError> {
    const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
    const GZIP: &[u8] = &[0x1f, 0x8b];
    let tar_bytes: Vec<u8>;
    let reader: Box<dyn Read + '_> = if tarball.starts_with(XZ) {
        // lzma-rs decodes into a writer; stop once the limit is reached.
        let mut out = LimitedVec::new(MAX_TARBALL);
        lzma_rs::xz_decompress(&mut io::BufReader::new(tarball), &mut out).map_err(|e| match e {
            lzma_rs::error::Error::IoError(e) => MetadataError::Io(e),
            other => MetadataError::Xz(other.to_string()),
        })?;
        tar_bytes = out.0;
        Box::new(&tar_bytes[..])
    } else if tarball.starts_with(GZIP) {
        Box::new(flate2::read::GzDecoder::new(tarball).take(MAX_TARBALL))
    } else {
        Box::new(tarball)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?;
        let name = path.to_string_lossy();
        if name.trim_start_matches("./") != "metadata.yaml" {
            continue;
        }
        if entry.size() > MAX_METADATA_YAML {
            return Err(MetadataError::TooLarge);
        }
        let mut text = Vec::new();
        entry.take(MAX_METADATA_YAML).read_to_end(&mut text)?;
        return Ok(serde_yaml::from_slice(&text)?);
    }
    Err(MetadataError::Missing)
}

/// A `Vec` writer that fails past a byte limit (a decompression bomb stops there).
struct LimitedVec(Vec<u8>, u64);

impl LimitedVec {
    fn new(limit: u64) -> Self {
        Self(Vec::new(), limit)
    }
}

impl io::Write for LimitedVec {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() as u64 + buf.len() as u64 > self.1 {
            return Err(io::Error::other("decompressed metadata tarball is too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What one uploaded file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UploadFile {
    /// The metadata tarball (`lxd.tar.xz` or `incus.tar.xz`).
    Metadata,
    Rootfs(RootKind),
    /// `metadata.json`: overrides of `os`, `release_title` and `aliases`.
    MetadataJson,
}

impl UploadFile {
    /// The accepted file names; every other name is refused.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "lxd.tar.xz" | "incus.tar.xz" => UploadFile::Metadata,
            "rootfs.squashfs" => UploadFile::Rootfs(RootKind::Squashfs),
            "root.tar.xz" | "rootfs.tar.xz" => UploadFile::Rootfs(RootKind::RootTarXz),
            "disk-kvm.img" => UploadFile::Rootfs(RootKind::DiskKvmImg),
            "metadata.json" => UploadFile::MetadataJson,
            _ => return None,
        })
    }

    /// The name the file is served under.
    pub fn served_name(self) -> &'static str {
        match self {
            UploadFile::Metadata => "incus.tar.xz",
            UploadFile::Rootfs(RootKind::Squashfs) => "rootfs.squashfs",
            UploadFile::Rootfs(RootKind::RootTarXz) => "root.tar.xz",
            UploadFile::Rootfs(RootKind::DiskKvmImg) => "disk-kvm.img",
            UploadFile::MetadataJson => "metadata.json",
        }
    }
}

/// A parsed upload file name: `os/release/arch/variant/YYYYMMDD_HH:MM/<file>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPath {
    pub product: ProductKey,
    pub serial: Serial,
    pub file: UploadFile,
}

impl UploadPath {
    /// Parses the name strictly: exactly six plain segments, lowercase names, a real
    /// date serial, a known file name. Percent signs, backslashes, `.`/`..`, empty
    /// segments and a leading `/` are refused before anything else is looked at, so
    /// neither a literal nor an encoded escape gets through.
    pub fn parse(path: &str) -> Result<Self, MetadataError> {
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
        let file = UploadFile::from_name(file).ok_or_else(|| {
            refuse("file must be lxd.tar.xz, incus.tar.xz, rootfs.squashfs, root.tar.xz, disk-kvm.img or metadata.json")
        })?;
        Ok(Self { product, serial, file })
    }

    /// The path the file is served under, relative to the stream's base URL.
    pub fn served_path(&self) -> String {
        version_dir(&self.product, &self.serial) + "/" + self.file.served_name()
    }
}

/// `images/os/release/arch/variant/serial`: a version's folder under the base URL.
pub fn version_dir(product: &ProductKey, serial: &Serial) -> String {
    format!("images/{}/{}/{}/{}/{}", product.os, product.release, product.arch, product.variant, serial)
}

/// The optional `metadata.json` of an uploaded version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UploadMetadata {
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub release_title: Option<String>,
    /// An array or a comma-separated string.
    #[serde(default, deserialize_with = "aliases")]
    pub aliases: Option<Vec<String>>,
}

impl UploadMetadata {
    pub fn parse(bytes: &[u8]) -> Result<Self, MetadataError> {
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

    const YAML: &str = "architecture: x86_64\ncreation_date: 1767225600\nproperties:\n  os: Debian\n  release: bookworm\n  variant: default\n  description: Debian bookworm amd64 (20260101_00:00)\ntemplates: {}\n";

    fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn xz(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &bytes[..], &mut out).unwrap();
        out
    }

    #[test]
    fn reads_metadata_yaml_from_xz_gzip_and_plain_tarballs() {
        let tar = tar_with(&[("templates/hostname.tpl", b"x"), ("metadata.yaml", YAML.as_bytes())]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        for tarball in [xz(&tar), gz, tar.clone()] {
            let m = read_metadata_yaml(&tarball).unwrap();
            assert_eq!(m.architecture, "x86_64");
            assert_eq!(m.creation_date, 1_767_225_600);
            assert_eq!(m.property("os"), Some("Debian"));
            assert_eq!(m.property("variant"), Some("default"));
        }
        let dot = tar_with(&[("./metadata.yaml", YAML.as_bytes())]);
        assert_eq!(read_metadata_yaml(&xz(&dot)).unwrap().property("release"), Some("bookworm"));
    }

    /// A tarball made by GNU tar and xz(1) the way the fixture recipe of
    /// shared/simplestreams-clients.md makes it, when those tools are installed.
    #[test]
    fn reads_a_tarball_made_by_gnu_tar_and_xz() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metadata.yaml"), YAML).unwrap();
        let status = std::process::Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-cJf", "meta.tar.xz", "metadata.yaml"])
            .current_dir(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => {
                let bytes = std::fs::read(dir.path().join("meta.tar.xz")).unwrap();
                assert_eq!(read_metadata_yaml(&bytes).unwrap().property("os"), Some("Debian"));
            }
            _ => eprintln!("tar -J unavailable; skipped"),
        }
    }

    #[test]
    fn refuses_tarballs_without_metadata_or_garbage() {
        assert!(matches!(read_metadata_yaml(&xz(&tar_with(&[("other", b"x")]))), Err(MetadataError::Missing)));
        assert!(read_metadata_yaml(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 3]).is_err());
        let bad_yaml = tar_with(&[("metadata.yaml", b"architecture: [")]);
        assert!(matches!(read_metadata_yaml(&bad_yaml), Err(MetadataError::Yaml(_))));
    }

    #[test]
    fn upload_paths() {
        let p = UploadPath::parse("debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz").unwrap();
        assert_eq!(p.product.to_string(), "debian:bookworm:amd64:default");
        assert_eq!(p.serial.as_str(), "20260101_00:00");
        assert_eq!(p.file, UploadFile::Metadata);
        assert_eq!(p.served_path(), "images/debian/bookworm/amd64/default/20260101_00:00/incus.tar.xz");
        let p = UploadPath::parse("ubuntu/22.04/arm64/cloud/20261231_23:59/rootfs.squashfs").unwrap();
        assert_eq!(p.file, UploadFile::Rootfs(RootKind::Squashfs));
        assert_eq!(
            UploadPath::parse("a/b/amd64/c/20260101_00:00/disk-kvm.img").unwrap().file,
            UploadFile::Rootfs(RootKind::DiskKvmImg)
        );
        assert_eq!(
            UploadPath::parse("a/b/amd64/c/20260101_00:00/metadata.json").unwrap().file,
            UploadFile::MetadataJson
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
