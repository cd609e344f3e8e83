//! What an LXD/Incus image says about itself in `metadata.yaml`, inside its metadata
//! tarball (what `incus image export` writes as `meta-<fp>.tar.xz`, or a `.tar.gz` or
//! plain tar): its architecture, creation date and `os`/`release`/`variant`
//! properties. Both sides read it when an OCI artifact of an image carries no product
//! annotations: the gateway to index the version, the operator to count products.
//!
//! Which layer of an artifact is the metadata tarball, and the product key the
//! properties name, are [`crate::simplestreams`]' rules.
//!
//! A metadata tarball is hostile input (issue #19: 468 KB of `xz -0` holding 3 GiB of
//! zeros). [`read_metadata_yaml`] streams, and every stage has its limits:
//!
//! | stage | bytes it may produce | memory it may hold |
//! | --- | --- | --- |
//! | the tarball as stored | [`MAX_TARBALL`] (callers refuse larger blobs before reading) | the caller's buffers |
//! | xz (liblzma) | [`MAX_TAR_STREAM`] | [`MAX_XZ_MEMORY`] (liblzma's memlimit; the dictionary is only touched as far as output is produced, so at most ~[`MAX_TAR_STREAM`] of it becomes resident) |
//! | gzip | [`MAX_TAR_STREAM`] | 32 KiB window |
//! | tar | `metadata.yaml` must start within the first [`MAX_TAR_STREAM`] of the stream | GNU long names and PAX headers, within the same bound |
//! | `metadata.yaml` | [`MAX_METADATA_YAML`] | the same |
//!
//! Decoding is blocking work (call it from `spawn_blocking`), and one decode runs at
//! a time per process: the operator looks at 8 tags at once and the gateway at every
//! stream's, and one decoder's worst case is what the memory bound holds, not eight.
//! A real metadata tarball (a few KiB) decodes in well under a millisecond.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Mutex;

use serde::Deserialize;

/// The largest `metadata.yaml` read (a real one is a few KiB).
pub(crate) const MAX_METADATA_YAML: u64 = 1 << 20;
/// How far into the (decompressed) tar stream `metadata.yaml` must start: real
/// tarballs hold it first or next to a few templates of KiB each.
pub(crate) const MAX_TAR_STREAM: u64 = 16 << 20;
/// The memory the xz decoder may use (liblzma's memlimit). `xz -9` (64 MiB dictionary,
/// the largest preset) needs 65 MiB; images from `incus image export` and distrobuilder
/// are made with the default `-6` (8 MiB dictionary, 9 MiB to decode). Larger
/// dictionaries are refused.
pub(crate) const MAX_XZ_MEMORY: u64 = 72 << 20;
/// The largest metadata tarball (as stored, compressed or not) either side reads.
pub const MAX_TARBALL: u64 = 16 << 20;

/// The recommended media type of the metadata tarball layer.
pub(crate) const METADATA_MEDIA_TYPE: &str = "application/vnd.updraft.simplestreams.metadata.v1.tar+xz";
/// Why an artifact is not an image version when none of its layers is a metadata
/// tarball: what would have made one.
pub(crate) const NO_METADATA_LAYER: &str = "the artifact has no metadata tarball layer: give it the media type \
     application/vnd.updraft.simplestreams.metadata.v1.tar+xz, or a file name \
     (org.opencontainers.image.title, which oras sets from the file pushed) lxd.tar.xz, incus.tar.xz, \
     meta-*.tar.xz or meta-*.tar.gz";

/// Whether a file name is a metadata tarball's: `lxd.tar.xz`, `incus.tar.xz` (uploads,
/// simplestreams) and `meta-*.tar.xz`/`.tar.gz` (what `incus image export` writes;
/// `metadata*` is taken too). Which layer holds it is
/// [`crate::simplestreams::VersionFile::of_layer`].
pub(crate) fn is_metadata_name(name: &str) -> bool {
    let exported = name.starts_with("meta-") || name.starts_with("metadata");
    name == "lxd.tar.xz"
        || name == "incus.tar.xz"
        || (exported && (name.ends_with(".tar.xz") || name.ends_with(".tar.gz")))
}

/// Why a metadata tarball could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata tarball: {0}")]
    Io(#[from] io::Error),
    #[error(
        "metadata tarball: the xz stream needs more than {} MiB to decode (a dictionary larger than xz -9's)",
        MAX_XZ_MEMORY >> 20
    )]
    XzMemory,
    #[error(
        "metadata tarball: no metadata.yaml in the first {} MiB of the tar stream (decompressed); refused as a \
         decompression bomb",
        MAX_TAR_STREAM >> 20
    )]
    NotWithin,
    #[error("metadata tarball of {0} bytes: over the {MAX_TARBALL} bytes read")]
    TarballTooLarge(u64),
    /// More bytes arrived than the layer's descriptor declared (a claim, not the fact).
    #[error("metadata tarball {digest} is longer than the {declared} bytes its descriptor says")]
    LongerThanDeclared { digest: String, declared: u64 },
    #[error("metadata tarball has no metadata.yaml")]
    Missing,
    #[error("metadata.yaml is over {MAX_METADATA_YAML} bytes")]
    TooLarge,
    #[error("metadata.yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

impl MetadataError {
    /// The variant as a short label (logs, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            MetadataError::Io(_) => "Unreadable",
            MetadataError::XzMemory | MetadataError::NotWithin | MetadataError::TarballTooLarge(_) => "Bomb",
            MetadataError::LongerThanDeclared { .. } => "Unreadable",
            MetadataError::Missing | MetadataError::TooLarge | MetadataError::Yaml(_) => "BadMetadata",
        }
    }
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
}

/// Whether `s` is a product component: `[a-z0-9][a-z0-9.-]{0,31}`.
pub(crate) fn is_component(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

/// Maps the kernel's architecture names (what `metadata.yaml` says) to the Debian
/// names product keys use; Debian names pass through.
pub(crate) fn debian_arch(arch: &str) -> &str {
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
/// at all (recognised by magic bytes), streaming, within the limits of the module
/// docs. Blocking: call it from a blocking thread.
pub fn read_metadata_yaml(tarball: impl Read) -> Result<ImageMetadata, MetadataError> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _decoding = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hit = Cell::new(None);
    let result = read_limited(tarball, &hit);
    match (result, hit.get()) {
        (Ok(metadata), _) => Ok(metadata),
        (Err(_), Some(Limit::TarStream)) => Err(MetadataError::NotWithin),
        (Err(_), Some(Limit::XzMemory)) => Err(MetadataError::XzMemory),
        (Err(e), None) => Err(e),
    }
}

fn read_limited(mut tarball: impl Read, hit: &Cell<Option<Limit>>) -> Result<ImageMetadata, MetadataError> {
    const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
    const GZIP: &[u8] = &[0x1f, 0x8b];
    let mut magic = [0u8; 6];
    let mut have = 0;
    while have < magic.len() {
        match tarball.read(&mut magic[have..])? {
            0 => break,
            n => have += n,
        }
    }
    let input = (&magic[..have]).chain(tarball);
    let decompressed: Box<dyn Read + '_> = if magic[..have].starts_with(XZ) {
        let stream = liblzma::stream::Stream::new_stream_decoder(MAX_XZ_MEMORY, liblzma::stream::CONCATENATED)
            .map_err(io::Error::from)?;
        Box::new(XzWatch { inner: liblzma::read::XzDecoder::new_stream(input, stream), hit })
    } else if magic[..have].starts_with(GZIP) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(Bounded { inner: decompressed, left: MAX_TAR_STREAM, hit });
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

/// Which limit stopped a decode (the error itself may reach the caller wrapped by tar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    TarStream,
    XzMemory,
}

/// The tar stream: fails (and says so in `hit`) past `left` bytes.
struct Bounded<'a, R> {
    inner: R,
    left: u64,
    hit: &'a Cell<Option<Limit>>,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            self.hit.set(Some(Limit::TarStream));
            return Err(io::Error::other(MetadataError::NotWithin.to_string()));
        }
        let len = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The xz decoder, noting in `hit` when liblzma refused the memory a stream asks for.
struct XzWatch<'a, R> {
    inner: R,
    hit: &'a Cell<Option<Limit>>,
}

impl<R: Read> Read for XzWatch<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<liblzma::stream::Error>());
            if matches!(inner, Some(liblzma::stream::Error::MemLimit)) {
                self.hit.set(Some(Limit::XzMemory));
            }
        })
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

    /// What YAML names (which product that makes is `simplestreams::ProductKey`'s rule).
    fn bookworm(m: &ImageMetadata) -> (Option<&str>, Option<&str>) {
        (m.property("os"), m.property("release"))
    }

    const YAML: &[u8] =
        b"architecture: x86_64\ncreation_date: 1767225600\nproperties: {os: Debian, release: bookworm}\n";

    #[test]
    fn reads_plain_gzip_and_xz_tarballs_made_by_the_system_tools() {
        let plain = tar_with(&[("./templates/x.tpl", b"x"), ("./metadata.yaml", YAML)]);
        let m = read_metadata_yaml(&plain[..]).unwrap();
        assert_eq!(bookworm(&m), (Some("Debian"), Some("bookworm")));
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
            let m = read_metadata_yaml(std::fs::File::open(dir.path().join(name)).unwrap()).unwrap();
            assert_eq!(bookworm(&m), (Some("Debian"), Some("bookworm")), "{name}");
        }
    }

    #[test]
    fn refuses_what_holds_no_metadata_yaml() {
        assert!(matches!(read_metadata_yaml(&tar_with(&[("a", b"b")])[..]), Err(MetadataError::Missing)));
        assert!(read_metadata_yaml(&b"\xfd7zXZ\0garbage"[..]).is_err());
    }

    /// `tar -cf - <files> | xz <xz_args>` (or gzip) in `dir`, with GNU tar and xz-utils.
    fn system_tarball(dir: &std::path::Path, files: &[&str], compress: &[&str]) -> Vec<u8> {
        let script = format!("tar -cf - {} | {}", files.join(" "), compress.join(" "));
        let out = std::process::Command::new("sh").args(["-c", &script]).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// A sparse file of `size` zeros (tar without --sparse writes every zero).
    fn zeros(dir: &std::path::Path, name: &str, size: u64) {
        std::fs::File::create(dir.join(name)).unwrap().set_len(size).unwrap();
    }

    #[test]
    fn a_bomb_is_refused_within_the_tar_stream_bound() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metadata.yaml"), YAML).unwrap();
        zeros(dir.path(), "zeros", 4 * MAX_TAR_STREAM);
        for compress in [&["xz", "-0"][..], &["xz", "-9"], &["gzip", "-1"], &["cat"]] {
            // metadata.yaml after 64 MiB of zeros: refused once 16 MiB are read.
            let bomb = system_tarball(dir.path(), &["zeros", "metadata.yaml"], compress);
            let started = std::time::Instant::now();
            let refused = read_metadata_yaml(&bomb[..]);
            assert!(matches!(refused, Err(MetadataError::NotWithin)), "{compress:?}: {refused:?}");
            assert!(refused.unwrap_err().to_string().contains("no metadata.yaml in the first 16 MiB"));
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "{compress:?}: {:?}", started.elapsed());
            // The same bytes after metadata.yaml are never read.
            let fine = system_tarball(dir.path(), &["metadata.yaml", "zeros"], compress);
            let m = read_metadata_yaml(&fine[..]).unwrap_or_else(|e| panic!("{compress:?}: {e}"));
            assert_eq!(bookworm(&m), (Some("Debian"), Some("bookworm")));
        }
    }

    #[test]
    fn xz_streams_asking_for_more_than_the_memory_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metadata.yaml"), YAML).unwrap();
        // xz -9 (64 MiB dictionary, 65 MiB to decode) is the largest preset: accepted.
        let nine = system_tarball(dir.path(), &["metadata.yaml"], &["xz", "-9"]);
        assert_eq!(bookworm(&read_metadata_yaml(&nine[..]).unwrap()), (Some("Debian"), Some("bookworm")));
        // A 256 MiB dictionary: liblzma refuses it before allocating anything.
        let big = system_tarball(dir.path(), &["metadata.yaml"], &["xz", "--lzma2=dict=256MiB,mf=hc3"]);
        let refused = read_metadata_yaml(&big[..]);
        assert!(matches!(refused, Err(MetadataError::XzMemory)), "{refused:?}");
        assert!(refused.unwrap_err().to_string().contains("more than 72 MiB"));
    }

    #[test]
    fn metadata_tarballs_by_name() {
        for name in ["lxd.tar.xz", "incus.tar.xz", "meta-2a4f36a8.tar.xz", "meta-x.tar.gz", "metadata.tar.xz"] {
            assert!(is_metadata_name(name), "{name}");
        }
        for name in ["root.tar.xz", "2a4f36a8.tar.xz", "meta-x.squashfs", "lxd.tar.gz", "meta.tar.zst"] {
            assert!(!is_metadata_name(name), "{name}");
        }
        for named in ["lxd.tar.xz", "incus.tar.xz", "meta-*.tar.xz", "meta-*.tar.gz", METADATA_MEDIA_TYPE] {
            assert!(NO_METADATA_LAYER.contains(named), "{named}");
        }
    }

    #[test]
    fn kernel_arch_names_map_to_debian_names() {
        assert_eq!(debian_arch("x86_64"), "amd64");
        assert_eq!(debian_arch("aarch64"), "arm64");
        assert_eq!(debian_arch("riscv64"), "riscv64");
    }
}
