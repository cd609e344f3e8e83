//! Uploads and deletes, compatible with docker-simplestreams-server's upload API, so
//! its users' scripts work unchanged (plus the token):
//!
//! ```sh
//! curl -H "Authorization: Bearer $TOKEN" \
//!   "-Fupload=@meta-….tar.xz;filename=debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz" \
//!   https://gateway:8443/streams/NAME/images/
//! ```
//!
//! Each file is received into the cache's temp directory while it is hashed; only a
//! complete part is stored (a truncated body stores nothing). It is not written through
//! [`crate::fetch::verified::temp_file`]: that path checks a body against an exact size
//! and digest a source promised and answers with fetch errors, while an upload promises
//! nothing, is bounded by the stream's `maxBytes` (and the whole body with it), and must
//! answer 413 when over it. It is pushed as a blob to
//! the stream's repository and the version's manifest is rewritten with it: the
//! registry is the store, so every replica lists it after its next sync round, and
//! the replica that took the upload before it answers. Once a version has its
//! metadata tarball and a rootfs, the combined fingerprint is computed from the two
//! files and kept as a layer annotation.
//!
//! Writes need TLS: an upload or delete that reached the gateway over plain HTTP is
//! refused with 403 (the token would have crossed the network in the clear) unless the
//! stream's upload source sets `allowPlainWrites`.

use std::io::{BufWriter, Read as _, Write as _};
use std::sync::Arc;

use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use oci_client::manifest::{OciDescriptor, OciManifest};

use super::index::{blob_key, combined_sha256, ProductKey, Serial};
use super::metadata::{read_metadata_yaml, MetadataError, UploadMetadata, UploadPath, VersionFile};
use super::registry::{self, StoredVersion, ANN_COMBINED, ANN_TITLE};
use super::{Stream, StreamError, Streams};
use crate::http;
use crate::server::Transport;
use crate::unpack::{Digesting, Summary};
use updraft_core::config::UploadStreamSource;
use updraft_core::image_metadata::{MetadataError as TarballError, MAX_TARBALL};
use updraft_core::oci;

/// The largest `metadata.json` accepted.
const MAX_METADATA_JSON: u64 = 64 * 1024;

/// `POST /streams/{stream}/images/`: one or more `upload` parts.
pub(crate) async fn upload(
    State(streams): State<Streams>,
    Path(stream): Path<String>,
    transport: Transport,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, StreamError> {
    let stream = streams.get(&stream)?;
    let max_bytes = writable(&stream, transport, &headers)?.max_bytes;
    let mut multipart = multipart.map_err(|e| StreamError::bad_request(e.body_text()))?;
    let mut stored = Vec::new();
    // The whole body, every part and the multipart framing, stays within the limit too.
    let mut total = 0u64;
    let body_limit = max_bytes.saturating_add(64 * 1024);
    while let Some(mut field) = multipart.next_field().await.map_err(|e| multipart_error(e, max_bytes))? {
        if field.name() != Some("upload") {
            // Other fields are read past, and count towards the body's limit.
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max_bytes))? {
                total += chunk.len() as u64;
                if total > body_limit {
                    return Err(StreamError::too_large(max_bytes));
                }
            }
            continue;
        }
        let name = field.file_name().ok_or_else(|| StreamError::bad_request("upload part has no filename"))?;
        let path = UploadPath::parse(name)?;
        let mut out = Digesting::new(BufWriter::with_capacity(256 * 1024, stream.cache.temp_file()?));
        let mut received = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max_bytes))? {
            received += chunk.len() as u64;
            total += chunk.len() as u64;
            if received > max_bytes || total > body_limit {
                return Err(StreamError::too_large(max_bytes));
            }
            // Writes land in the page cache; a chunk at a time keeps them short.
            out.write_all(&chunk)?;
        }
        let (summary, buffered) = out.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        let mut from_tarball = None;
        if path.file == VersionFile::Metadata {
            // The tarball must carry metadata.yaml (the daemon needs it to import the
            // image); its `os` property names the product unless metadata.json does.
            // Read from the received file, streaming, within core's limits.
            if summary.size > MAX_TARBALL {
                return Err(MetadataError::from(TarballError::TarballTooLarge(summary.size)).into());
            }
            let tarball = file.reopen()?;
            let yaml = tokio::task::spawn_blocking(move || read_metadata_yaml(tarball))
                .await
                .map_err(|e| StreamError::Io(std::io::Error::other(e)))?
                .map_err(MetadataError::from)?;
            from_tarball = yaml.property("os").map(String::from);
        }
        let overrides = match path.file {
            VersionFile::MetadataJson => {
                if summary.size > MAX_METADATA_JSON {
                    return Err(StreamError::bad_request(format!("metadata.json is over {MAX_METADATA_JSON} bytes")));
                }
                let mut text = Vec::new();
                file.reopen()?.read_to_end(&mut text)?;
                Some(UploadMetadata::parse(&text)?)
            }
            _ => None,
        };
        stream.store(&path, file, summary, overrides, from_tarball).await?;
        stored.push(path.served_path());
    }
    if stored.is_empty() {
        return Err(StreamError::bad_request("no file in a multipart field named 'upload'"));
    }
    stream.sync_now().await;
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "stored": stored }))).into_response())
}

/// `DELETE /streams/{stream}/images/os/release/arch/variant/serial[/file]`.
pub(crate) async fn delete(
    State(streams): State<Streams>,
    Path((stream, path)): Path<(String, String)>,
    transport: Transport,
    headers: HeaderMap,
) -> Result<Response, StreamError> {
    let stream = streams.get(&stream)?;
    let allow = writable(&stream, transport, &headers)?.allow_delete;
    if !allow {
        return Err(StreamError::NotAllowed(format!("stream {:?} does not allow deletes", stream.name)));
    }
    let (product, serial, file) = match UploadPath::parse(&path) {
        Ok(p) => (p.product, p.serial, Some(p.file)),
        Err(_) => {
            // A whole version: the upload grammar without the file name.
            let parsed = UploadPath::parse(&format!("{path}/lxd.tar.xz"))?;
            (parsed.product, parsed.serial, None)
        }
    };
    stream.remove(&product, &serial, file).await?;
    stream.sync_now().await;
    Ok((StatusCode::OK, axum::Json(serde_json::json!({ "deleted": path }))).into_response())
}

fn no_uploads(stream: &Stream) -> StreamError {
    StreamError::NotAllowed(format!("stream {:?} takes no uploads", stream.name))
}

/// The stream's upload settings, when it takes this write: 405 for a stream without
/// uploads; then the gateway's write guard ([`http::write`]): 403 for plain HTTP unless
/// `allowPlainWrites`, then the upload token as a bearer token (or filuxe's `key`
/// header), 401 without one, 403 when wrong.
fn writable<'a>(
    stream: &'a Stream,
    transport: Transport,
    headers: &HeaderMap,
) -> Result<&'a UploadStreamSource, StreamError> {
    let upload = stream.upload.as_ref().ok_or_else(|| no_uploads(stream))?;
    http::write::check(transport, headers, upload.allow_plain_writes, stream.token.as_ref()).map_err(|refused| {
        match refused {
            http::write::Refused::PlainHttp => http::Error::Forbidden(format!(
                "stream {:?}: uploads and deletes need TLS (the HTTPS listener); set allowPlainWrites: true on the \
                 stream's upload source to allow them over plain HTTP",
                stream.name
            )),
            http::write::Refused::Credential(e) => e,
        }
    })?;
    Ok(upload)
}

fn multipart_error(e: MultipartError, max_bytes: u64) -> StreamError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StreamError::too_large(max_bytes)
    } else {
        StreamError::bad_request(format!("multipart body: {}", e.body_text()))
    }
}

impl Stream {
    /// Stores one received file into its version's artifact.
    async fn store(
        self: &Arc<Self>,
        path: &UploadPath,
        file: tempfile::NamedTempFile,
        summary: Summary,
        overrides: Option<UploadMetadata>,
        tarball_os: Option<String>,
    ) -> Result<(), StreamError> {
        let upload = self.upload.clone().ok_or_else(|| no_uploads(self))?;
        let _writing = self.writes.lock().await;
        let mut version =
            self.stored(&path.product, &path.serial).await?.filter(|v| !v.deleted).unwrap_or_else(|| StoredVersion {
                product: path.product.clone(),
                props: Default::default(),
                serial: path.serial.clone(),
                layers: Default::default(),
                deleted: false,
            });
        if version.layers.contains_key(&path.file) && !upload.allow_overwrite {
            return Err(StreamError::Conflict(format!(
                "{} already exists and stream {:?} does not allow overwrites",
                path.served_path(),
                self.name
            )));
        }
        if version.props.os.is_none() {
            version.props.os = tarball_os;
        }
        if let Some(m) = &overrides {
            if m.os.is_some() {
                version.props.os.clone_from(&m.os);
            }
            if m.release_title.is_some() {
                version.props.release_title.clone_from(&m.release_title);
            }
            if let Some(aliases) = &m.aliases {
                version.props.aliases.clone_from(aliases);
            }
            version.props.validate().map_err(|e| StreamError::bad_request(format!("metadata.json: {e}")))?;
        }
        let digest = format!("sha256:{}", summary.sha256);
        let size = summary.size;
        let cache = self.cache.clone();
        let key = blob_key(&digest);
        let payload = tokio::task::spawn_blocking(move || cache.commit(&key, file, summary))
            .await
            .map_err(std::io::Error::other)??;
        let tag = registry::version_tag(&path.product, &path.serial);
        let reference = oci::tag_reference(&self.source.registry, &self.source.repository, &tag);
        self.push_blob_once(&reference, &digest, payload.bytes.clone()).await?;
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(ANN_TITLE.to_owned(), path.file.served_name().to_owned());
        let layer = OciDescriptor {
            media_type: path.file.media_type().to_owned(),
            digest,
            size: size as i64,
            urls: None,
            artifact_type: None,
            annotations: Some(annotations),
        };
        if path.file == VersionFile::Metadata {
            // A new metadata tarball makes every combined fingerprint stale.
            for layer in version.layers.values_mut() {
                if let Some(a) = layer.annotations.as_mut() {
                    a.remove(ANN_COMBINED);
                }
            }
        }
        version.layers.insert(path.file, layer);
        self.fill_combined(&mut version).await?;
        self.push_blob_once(
            &reference,
            registry::EMPTY_CONFIG_DIGEST,
            bytes::Bytes::from_static(registry::EMPTY_CONFIG),
        )
        .await?;
        self.client()
            .push_manifest(&reference, &OciManifest::Image(version.to_manifest()))
            .await
            .map_err(|e| StreamError::upstream(format!("push manifest {tag}: {e}")))?;
        self.mark_dirty(&tag);
        tracing::info!(stream = %self.name, path = %path.served_path(), "upload stored");
        Ok(())
    }

    /// Computes the combined fingerprint of every rootfs that lacks one, once the
    /// version has its metadata tarball.
    pub(super) async fn fill_combined(self: &Arc<Self>, version: &mut StoredVersion) -> Result<(), StreamError> {
        let Some(meta) = version.layers.get(&VersionFile::Metadata).cloned() else { return Ok(()) };
        for (file, layer) in version.layers.iter_mut() {
            if !matches!(file, VersionFile::Rootfs(_))
                || layer.annotations.as_ref().is_some_and(|a| a.contains_key(ANN_COMBINED))
            {
                continue;
            }
            let m = self.blob(&meta.digest, meta.size as u64).await?;
            let r = self.blob(&layer.digest, layer.size as u64).await?;
            let combined = tokio::task::spawn_blocking(move || combined_sha256(&m.bytes[..], &r.bytes[..]))
                .await
                .map_err(std::io::Error::other)??;
            layer.annotations.get_or_insert_with(Default::default).insert(ANN_COMBINED.to_owned(), combined);
        }
        Ok(())
    }

    async fn push_blob_once(
        &self,
        reference: &oci_client::Reference,
        digest: &str,
        data: bytes::Bytes,
    ) -> Result<(), StreamError> {
        let upstream =
            |e: oci_client::errors::OciDistributionError| StreamError::upstream(format!("push {digest}: {e}"));
        let client = self.client();
        client.store_auth_if_needed(&self.source.registry, &self.auth).await;
        updraft_core::oci::push_blob_once(&client, reference, digest, data).await.map_err(upstream)
    }

    /// Deletes a version (a tombstone manifest under its tag) or one of its files.
    async fn remove(
        self: &Arc<Self>,
        product: &ProductKey,
        serial: &Serial,
        file: Option<VersionFile>,
    ) -> Result<(), StreamError> {
        let _writing = self.writes.lock().await;
        let mut version = self
            .stored(product, serial)
            .await?
            .filter(|v| !v.deleted)
            .ok_or_else(|| StreamError::not_found(format!("no version {} of {product}", serial)))?;
        match file {
            Some(file) => {
                if version.layers.remove(&file).is_none() {
                    return Err(StreamError::not_found(format!(
                        "no {} in version {serial} of {product}",
                        file.served_name()
                    )));
                }
            }
            None => {
                version.layers.clear();
                version.deleted = true;
            }
        }
        let tag = registry::version_tag(product, serial);
        let reference = oci::tag_reference(&self.source.registry, &self.source.repository, &tag);
        self.push_blob_once(
            &reference,
            registry::EMPTY_CONFIG_DIGEST,
            bytes::Bytes::from_static(registry::EMPTY_CONFIG),
        )
        .await?;
        self.client()
            .push_manifest(&reference, &OciManifest::Image(version.to_manifest()))
            .await
            .map_err(|e| StreamError::upstream(format!("push manifest {tag}: {e}")))?;
        self.mark_dirty(&tag);
        tracing::info!(stream = %self.name, %tag, ?file, "deleted");
        Ok(())
    }
}
