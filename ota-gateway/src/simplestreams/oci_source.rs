//! The OCI source: one artifact per image version in one repository, one tag per
//! version, made from what a person already has. The two files of
//! `incus image export` pushed as they are work:
//!
//! ```sh
//! incus image export debian/12 .        # meta-<fp>.tar.xz and <fp>.squashfs
//! oras push registry/images/debian:20260101 meta-<fp>.tar.xz <fp>.squashfs
//! ```
//!
//! Which layer is which: the media type when it is one of
//! [`registry::media_type`]'s (recommended), else the file name in
//! `org.opencontainers.image.title` (`meta-*.tar.xz` or `lxd.tar.xz`/`incus.tar.xz`
//! for the metadata; `*.squashfs`, `*.tar.xz`, `*.img`/`*.qcow2` for the rootfs).
//!
//! Product properties come from the manifest annotations when present
//! ([`registry::ANN_PRODUCT`] `os:release:arch:variant`, [`registry::ANN_SERIAL`]
//! `YYYYMMDD_HH:MM`, [`registry::ANN_OS`], [`registry::ANN_RELEASE_TITLE`],
//! [`registry::ANN_ALIASES`]), else from `metadata.yaml` inside the metadata tarball:
//! `properties.architecture` or else `architecture` (kernel names mapped to Debian's:
//! `x86_64` → `amd64`),
//! `properties.os` / `release` / `variant` (default `default`), and `creation_date`
//! for the serial. A rootfs layer may carry its combined fingerprint in
//! [`registry::ANN_COMBINED`]; otherwise the gateway fetches both files by digest
//! (verified, into the cache it serves them from) and computes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::DateTime;
use oci_client::manifest::{OciDescriptor, OciImageManifest};

use updraft_core::image_metadata::{self, debian_arch, MetadataError};

use super::index::{ProductKey, ProductProps, Serial};
use super::metadata::{read_metadata_yaml, ImageMetadata, UploadFile};
use super::registry::{self, layer_file, StoredVersion};
use super::Stream;

/// The product key `metadata.yaml` describes.
pub fn product_from_metadata(m: &ImageMetadata) -> Result<ProductKey, String> {
    let os = m.property("os").ok_or("metadata.yaml has no properties.os")?.to_ascii_lowercase();
    let release = m.property("release").ok_or("metadata.yaml has no properties.release")?.to_ascii_lowercase();
    let variant = m.property("variant").unwrap_or("default").to_ascii_lowercase();
    // `properties.architecture` (what incus-simplestreams reads), else the top-level
    // kernel name.
    let arch = debian_arch(m.property("architecture").unwrap_or(&m.architecture));
    ProductKey::new(&os, &release, arch, &variant).map_err(|e| format!("metadata.yaml: {e}"))
}

/// The serial of a `creation_date` (Unix seconds, UTC).
pub fn serial_from_creation(seconds: i64) -> Result<Serial, String> {
    let t = DateTime::from_timestamp(seconds, 0).ok_or_else(|| format!("creation_date {seconds} is out of range"))?;
    Serial::parse(&t.format("%Y%m%d_%H:%M").to_string()).map_err(|e| e.to_string())
}

/// Why an artifact is not indexed. `lasting` when what its manifest digest holds decides
/// it (no metadata layer, a metadata tarball refused or without a product), not the
/// registry's state at the time: the sync loop keeps such a verdict per digest and reads
/// the artifact again only on full rounds, so a bomb is decoded once every
/// [`super::stream::FULL_EVERY`] intervals, not every round.
#[derive(Debug)]
pub(super) struct Unreadable {
    pub reason: String,
    pub lasting: bool,
}

impl Unreadable {
    fn transient(reason: impl ToString) -> Self {
        Self { reason: reason.to_string(), lasting: false }
    }
}

impl From<String> for Unreadable {
    fn from(reason: String) -> Self {
        Self { reason, lasting: true }
    }
}

impl From<&str> for Unreadable {
    fn from(reason: &str) -> Self {
        reason.to_owned().into()
    }
}

impl Stream {
    /// The version an artifact of an OCI-source stream holds, with the combined
    /// fingerprint of each rootfs.
    pub(super) async fn read_artifact(
        self: &Arc<Self>,
        manifest: &OciImageManifest,
    ) -> Result<StoredVersion, Unreadable> {
        let mut layers = BTreeMap::new();
        for layer in &manifest.layers {
            if let Some(file) = layer_file(layer) {
                layers.entry(file).or_insert_with(|| layer.clone());
            }
        }
        let meta = layers.get(&UploadFile::Metadata).cloned().ok_or(image_metadata::NO_METADATA_LAYER)?;
        let ann = manifest.annotations.clone().unwrap_or_default();
        let get = |k: &str| ann.get(k).map(String::as_str).filter(|s| !s.is_empty());
        let annotated = match (get(registry::ANN_PRODUCT), get(registry::ANN_SERIAL)) {
            (Some(_), Some(_)) => Some(StoredVersion::from_manifest(manifest).map_err(|e| e.to_string())?),
            _ => None,
        };
        let mut version = match annotated {
            Some(mut v) => {
                v.layers = layers;
                v
            }
            None => {
                let yaml = self.metadata_yaml(&meta).await?;
                let product = match get(registry::ANN_PRODUCT) {
                    Some(_) => StoredVersion::from_manifest(manifest).map_err(|e| e.to_string())?.product,
                    None => product_from_metadata(&yaml)?,
                };
                let serial = match get(registry::ANN_SERIAL) {
                    Some(s) => Serial::parse(s).map_err(|e| e.to_string())?,
                    None => serial_from_creation(yaml.creation_date)?,
                };
                let props = ProductProps {
                    os: get(registry::ANN_OS).or(yaml.property("os")).map(String::from),
                    release_title: get(registry::ANN_RELEASE_TITLE).or(yaml.property("release")).map(String::from),
                    aliases: get(registry::ANN_ALIASES)
                        .map(|a| a.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
                        .unwrap_or_default(),
                };
                StoredVersion { product, props, serial, layers, deleted: false }
            }
        };
        self.fill_combined(&mut version).await.map_err(Unreadable::transient)?;
        Ok(version)
    }

    /// `metadata.yaml` of the metadata tarball `layer`: a tarball over
    /// [`image_metadata::MAX_TARBALL`] is not fetched; the verified blob is decoded from
    /// the cache's mapping on a blocking thread, within core's limits.
    async fn metadata_yaml(self: &Arc<Self>, layer: &OciDescriptor) -> Result<ImageMetadata, Unreadable> {
        let size = u64::try_from(layer.size).map_err(|_| format!("layer {} has a negative size", layer.digest))?;
        if size > image_metadata::MAX_TARBALL {
            return Err(MetadataError::TarballTooLarge(size).to_string().into());
        }
        let tarball = self.blob(&layer.digest, size).await.map_err(Unreadable::transient)?;
        let read = tokio::task::spawn_blocking(move || read_metadata_yaml(&tarball.bytes[..]))
            .await
            .map_err(|e| Unreadable::transient(format!("metadata tarball: {e}")))?;
        Ok(read.map_err(|e| e.to_string())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_and_serials_from_metadata_yaml() {
        let m: ImageMetadata = serde_yaml::from_str(
            "architecture: x86_64\ncreation_date: 1767225600\nproperties: {os: Debian, release: bookworm, description: x}\n",
        )
        .unwrap();
        assert_eq!(product_from_metadata(&m).unwrap().to_string(), "debian:bookworm:amd64:default");
        assert_eq!(serial_from_creation(m.creation_date).unwrap().as_str(), "20260101_00:00");
        let odd: ImageMetadata =
            serde_yaml::from_str("architecture: sparc\nproperties: {os: x, release: y}\n").unwrap();
        assert!(product_from_metadata(&odd).is_err());
        assert!(product_from_metadata(&ImageMetadata::default()).is_err());
    }
}
