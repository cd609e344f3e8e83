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
//! [`VersionFile::media_type`]'s (recommended), else the file name in
//! `org.opencontainers.image.title` (`meta-*.tar.xz` or `lxd.tar.xz`/`incus.tar.xz`
//! for the metadata; `*.squashfs`, `*.tar.xz`, `*.img`/`*.qcow2` for the rootfs):
//! [`VersionFile::of_layer`].
//!
//! Product and serial come from the manifest annotations when present, else from
//! `metadata.yaml` inside the metadata tarball
//! ([`updraft_core::simplestreams::Identity::with_metadata`]: the rule the
//! ImageStream controller counts with). A rootfs layer may carry its combined
//! fingerprint in [`registry::ANN_COMBINED`]; otherwise the gateway fetches both files
//! by digest (verified, into the cache it serves them from) and computes it.

use std::sync::Arc;

use oci_client::manifest::{OciDescriptor, OciImageManifest};

use updraft_core::image_metadata::{self, MetadataError};
use updraft_core::simplestreams::{layout, Identity};

use super::metadata::{read_metadata_yaml, ImageMetadata, VersionFile};
use super::registry::{self, StoredVersion};
use super::Stream;

/// Why an artifact is not indexed. `lasting` when what its manifest digest holds decides
/// it (no metadata layer, a metadata tarball refused or without a product), not the
/// registry's state at the time: the sync loop keeps such a verdict per digest and reads
/// the artifact again only on full rounds, so a bomb is decoded once every
/// [`super::stream::FULL_EVERY`] intervals, not every round.
#[derive(Debug)]
pub(super) struct Unreadable {
    pub(crate) reason: String,
    pub(crate) lasting: bool,
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
        let layers = registry::layers(manifest);
        if let Some(why) = layout::incomplete(&layers) {
            return Err(why.into());
        }
        let meta = layers[&VersionFile::Metadata].clone();
        let ann = manifest.annotations.clone().unwrap_or_default();
        let id = match Identity::from_annotations(&ann).map_err(|e| e.to_string())? {
            Some(id) => id,
            None => {
                let yaml = self.metadata_yaml(&meta).await?;
                Identity::with_metadata(&ann, &yaml).map_err(|e| e.to_string())?
            }
        };
        let mut version = StoredVersion::new(id, layers);
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
