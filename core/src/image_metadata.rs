//! What an LXD/Incus image says about itself in `metadata.yaml`, inside its metadata
//! tarball (what `incus image export` writes as `meta-<fp>.tar.xz`, or a `.tar.gz` or
//! plain tar): its architecture, creation date and `os`/`release`/`variant`
//! properties. Both sides read it when an OCI artifact of an image carries no product
//! annotations: the gateway to index the version, the operator to count products.
//!
//! The xz decoder is `lzma-rs`: pure Rust, so nothing links a C liblzma; speed does not
//! matter for a tarball of a few KiB read once per version. Decompression stops at
//! [`MAX_TARBALL`] bytes, so a bomb costs at most that.

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::Deserialize;

/// The largest `metadata.yaml` read (a real one is a few KiB).
pub const MAX_METADATA_YAML: u64 = 1 << 20;
/// The most bytes decompressed while looking for it.
pub const MAX_TARBALL: u64 = 256 << 20;

/// Why a metadata tarball could not be read.
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
    #[error("metadata.yaml has no properties.{0}")]
    NoProperty(&'static str),
    #[error("metadata.yaml: {field} {value:?} is not [a-z0-9][a-z0-9.-]{{0,31}}")]
    Component { field: &'static str, value: String },
}

/// The fields of `metadata.yaml` an index uses.
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
    /// A property, unless empty.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// The product `os:release:arch:variant` (lowercase; the architecture as Debian
    /// names it, from `properties.architecture` or else the top-level kernel name;
    /// variant `default` when unset).
    pub fn product(&self) -> Result<String, MetadataError> {
        let os = self.property("os").ok_or(MetadataError::NoProperty("os"))?.to_ascii_lowercase();
        let release = self.property("release").ok_or(MetadataError::NoProperty("release"))?.to_ascii_lowercase();
        let variant = self.property("variant").unwrap_or("default").to_ascii_lowercase();
        let arch = debian_arch(self.property("architecture").unwrap_or(&self.architecture)).to_owned();
        for (field, value) in [("os", &os), ("release", &release), ("architecture", &arch), ("variant", &variant)] {
            if !is_component(value) {
                return Err(MetadataError::Component { field, value: value.clone() });
            }
        }
        Ok(format!("{os}:{release}:{arch}:{variant}"))
    }
}

/// Whether `s` is a product component: `[a-z0-9][a-z0-9.-]{0,31}`.
pub fn is_component(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

/// Maps the kernel's architecture names (what `metadata.yaml` says) to the Debian
/// names product keys use; Debian names pass through.
pub fn debian_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i686" => "i386",
        "armv7l" => "armhf",
        "ppc64le" => "ppc64el",
        other => other,
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
        let mut out = LimitedVec(Vec::new(), MAX_TARBALL);
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
        if path.to_string_lossy().trim_start_matches("./") != "metadata.yaml" {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    const YAML: &[u8] =
        b"architecture: x86_64\ncreation_date: 1767225600\nproperties: {os: Debian, release: bookworm}\n";

    #[test]
    fn reads_plain_gzip_and_xz_tarballs_made_by_the_system_tools() {
        let plain = tar_with(&[("./templates/x.tpl", b"x"), ("./metadata.yaml", YAML)]);
        let m = read_metadata_yaml(&plain).unwrap();
        assert_eq!(m.product().unwrap(), "debian:bookworm:amd64:default");
        assert_eq!(m.creation_date, 1767225600);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metadata.yaml"), YAML).unwrap();
        for (flag, name) in [("-cJf", "m.tar.xz"), ("-czf", "m.tar.gz")] {
            let status = std::process::Command::new("tar")
                .args([flag, name, "metadata.yaml"])
                .current_dir(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
            let m = read_metadata_yaml(&std::fs::read(dir.path().join(name)).unwrap()).unwrap();
            assert_eq!(m.product().unwrap(), "debian:bookworm:amd64:default", "{name}");
        }
    }

    #[test]
    fn refuses_what_names_no_product() {
        assert!(matches!(read_metadata_yaml(&tar_with(&[("a", b"b")])), Err(MetadataError::Missing)));
        assert!(read_metadata_yaml(b"\xfd7zXZ\0garbage").is_err());
        let m: ImageMetadata = serde_yaml::from_str("architecture: x86_64\nproperties: {os: Debian}\n").unwrap();
        assert!(matches!(m.product(), Err(MetadataError::NoProperty("release"))));
        let m: ImageMetadata =
            serde_yaml::from_str("architecture: 'sp arc'\nproperties: {os: x, release: y}\n").unwrap();
        assert!(matches!(m.product(), Err(MetadataError::Component { field: "architecture", .. })));
        let m: ImageMetadata =
            serde_yaml::from_str("properties: {os: Alpine, release: '3.20', architecture: aarch64, variant: cloud}\n")
                .unwrap();
        assert_eq!(m.product().unwrap(), "alpine:3.20:arm64:cloud");
    }

    #[test]
    fn kernel_arch_names_map_to_debian_names() {
        assert_eq!(debian_arch("x86_64"), "amd64");
        assert_eq!(debian_arch("aarch64"), "arm64");
        assert_eq!(debian_arch("riscv64"), "riscv64");
    }
}
