//! An OCI repository as one side of a mirror (listed by
//! [`updraft_core::mirror::registry`]). Copies keep digests: manifests and
//! image indexes are pushed as the exact bytes pulled, blobs by digest (streamed,
//! verified by the client while pulled and by the registry when pushed), blobs the
//! destination already has are skipped (HEAD) or mounted from the source repository
//! on the same registry. Signature and attestation tags of a digest
//! (`sha256-<hex>.sig`, `.att`, `.sbom`, …) travel with it.

use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use updraft_core::config::SourceConfig;
use updraft_core::mirror::error::MirrorError;
use updraft_core::mirror::registry::{Credentials, Descriptor, Raw, Repository, MANIFEST_TYPES, TITLE};
use updraft_core::mirror::rules::Artifact;
use updraft_core::mirror::store::Store;

/// The config blob of the one-file artifacts this worker pushes: `{}`.
pub(super) const EMPTY_CONFIG: &[u8] = b"{}";
pub(super) const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// The digest of [`EMPTY_CONFIG`].
pub(super) fn empty_config_digest() -> String {
    format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(EMPTY_CONFIG)))
}
/// `artifactType` of the one-file artifacts this worker pushes.
const FILE_ARTIFACT: &str = "application/vnd.updraft.file.v1";

/// The worker's registry client for `source`: timeouts, and monolithic pushes.
pub(crate) fn repository(source: &SourceConfig, side: &'static str) -> Repository {
    let protocol = if source.insecure {
        ClientProtocol::HttpsExcept(vec![source.registry.clone()])
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        use_monolithic_push: true,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(120)),
        user_agent: concat!("updraft-mirror/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    });
    Repository::new(source, Credentials::FromConfig, side, client)
}

/// Files mode: deletes the one-file artifact this worker pushed for `name`.
pub(crate) async fn delete_file(repo: &Repository, name: &str) -> Result<(), MirrorError> {
    let auth = repo.auth()?;
    let digest = match repo.client().fetch_manifest_digest(&repo.tag(&tag_for(name)), &auth).await {
        Ok(digest) => digest,
        Err(e) if updraft_core::oci::is_not_found(&e) => return Ok(()),
        Err(e) => return Err(repo.error()(e)),
    };
    let artifact = Artifact { name: name.to_owned(), size: 0, time: 0.0, digest: Some(digest) };
    delete(repo, &artifact).await
}

/// Deletes the manifest a tag points at (the registry must allow deletes).
pub(crate) async fn delete(repo: &Repository, artifact: &Artifact) -> Result<(), MirrorError> {
    let digest = artifact.digest.as_deref().and_then(|d| d.split(' ').next()).unwrap_or_default();
    let source = repo.source();
    let scheme = if source.insecure { "http" } else { "https" };
    let url = format!("{scheme}://{}/v2/{}/manifests/{digest}", source.registry, source.repository);
    let mut request = reqwest::Client::new().delete(url);
    match repo.auth()? {
        RegistryAuth::Basic(user, pass) => request = request.basic_auth(user, Some(pass)),
        RegistryAuth::Bearer(token) => request = request.bearer_auth(token),
        RegistryAuth::Anonymous => {}
    }
    let response = request.send().await.map_err(MirrorError::http(repo.side()))?;
    match response.status().as_u16() {
        200..=299 | 404 => Ok(()),
        status => Err(MirrorError::Refused { side: repo.side(), status, what: format!("deleting {}", artifact.name) }),
    }
}

/// The tag a file is pushed under: its name with what a tag cannot hold replaced,
/// plus a hash of the name when anything was replaced or cut (names stay distinct).
pub(crate) fn tag_for(name: &str) -> String {
    let mut tag: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' }).collect();
    if tag.starts_with(['.', '-']) {
        tag.insert(0, '_');
    }
    if tag != name || tag.len() > 128 {
        tag.truncate(110);
        let hash = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(name.as_bytes())[..8]);
        tag = format!("{tag}-{hash}");
    }
    tag
}

/// OCI to store: streams the blob of `file` (listed by [`Repository::list_files`]) into
/// the store under its title, verified by digest on the way and by SHA-256 at the store.
pub(crate) async fn copy_to_store(src: &Repository, dst: &Store, file: &Artifact) -> Result<u64, MirrorError> {
    let hex = file.digest.as_deref().ok_or_else(|| MirrorError::Changed(file.name.clone()))?;
    let digest = format!("sha256:{hex}");
    let descriptor = oci_client::manifest::OciDescriptor {
        media_type: "application/octet-stream".into(),
        digest: digest.clone(),
        size: file.size as i64,
        ..Default::default()
    };
    src.client().store_auth_if_needed(&src.source().registry, &src.auth()?).await;
    let pulled = src.client().pull_blob_stream(&src.at(&digest), &descriptor).await.map_err(src.error())?;
    super::http::upload_whole(dst, &file.name, reqwest::Body::wrap_stream(pulled.stream), file.size, hex).await?;
    Ok(file.size)
}

/// Store to OCI: pushes `file` as a one-layer artifact (an empty config, the file as
/// its layer titled with its name) tagged [`tag_for`] its name.
pub(crate) async fn copy_from_store(src: &Store, dst: &Repository, file: &Artifact) -> Result<u64, MirrorError> {
    let auth = dst.auth()?;
    let tag = dst.tag(&tag_for(&file.name));
    dst.client().store_auth_if_needed(&dst.source().registry, &auth).await;
    dst.client().auth(&tag, &auth, oci_client::RegistryOperation::Push).await.map_err(dst.error())?;
    let sha = match &file.digest {
        Some(sum) => sum.clone(),
        None => super::http::etag(src, &file.name).await?.ok_or_else(|| {
            MirrorError::Verify(format!("{}: the source store announces no sha256 for it", file.name))
        })?,
    };
    let layer = format!("sha256:{sha}");
    let sent = if dst.client().blob_exists(&dst.at(&layer), &layer).await.map_err(dst.error())? {
        0
    } else {
        let body = super::http::download_stream(src, &file.name).await?;
        let stream = body.map(|piece| piece.map_err(|e| OciDistributionError::GenericError(Some(e.to_string()))));
        dst.client().push_blob_stream(&dst.at(&layer), stream, &layer, Some(file.size)).await.map_err(dst.error())?;
        file.size
    };
    let empty = empty_config_digest();
    updraft_core::oci::push_blob_once(dst.client(), &dst.at(&empty), &empty, EMPTY_CONFIG)
        .await
        .map_err(dst.error())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPES[0],
        "artifactType": FILE_ARTIFACT,
        "config": {"mediaType": EMPTY_TYPE, "digest": empty, "size": EMPTY_CONFIG.len()},
        "layers": [{
            "mediaType": "application/octet-stream",
            "digest": layer,
            "size": file.size,
            "annotations": {TITLE: file.name},
        }],
    });
    let body = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let content_type = MANIFEST_TYPES[0].parse().expect("a valid header");
    dst.client().push_manifest_raw(&tag, body, content_type).await.map_err(dst.error())?;
    Ok(sent)
}

/// Copies the tag `artifact` (its manifest or index, everything it references, and
/// its signature tags) from `src` to `dst`, keeping digests. Returns the blob bytes sent.
pub(crate) async fn copy(src: &Repository, dst: &Repository, artifact: &Artifact) -> Result<u64, MirrorError> {
    let identity = artifact.digest.as_deref().ok_or_else(|| MirrorError::Changed(artifact.name.clone()))?;
    let mut parts = identity.split(' ');
    let digest = parts.next().unwrap_or_default().to_owned();
    let (src_auth, dst_auth) = (src.auth()?, dst.auth()?);
    src.client().store_auth_if_needed(&src.source().registry, &src_auth).await;
    dst.client().store_auth_if_needed(&dst.source().registry, &dst_auth).await;
    dst.client()
        .auth(&dst.tag(&artifact.name), &dst_auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(dst.error())?;
    let mut sent = copy_manifest(src, dst, &src_auth, &digest, Some(&artifact.name), 0).await?;
    for attached in parts {
        let (tag, tag_digest) = attached.split_once('=').unwrap_or((attached, ""));
        sent += copy_manifest(src, dst, &src_auth, tag_digest, Some(tag), 0).await?;
    }
    let now_at = dst.client().fetch_manifest_digest(&dst.tag(&artifact.name), &dst_auth).await.map_err(dst.error())?;
    if now_at != digest {
        return Err(MirrorError::Verify(format!("{}: destination has {now_at}, source {digest}", artifact.name)));
    }
    Ok(sent)
}

/// Copies the manifest `digest` and what it references; tags it `tag` when given.
fn copy_manifest<'a>(
    src: &'a Repository,
    dst: &'a Repository,
    src_auth: &'a RegistryAuth,
    digest: &'a str,
    tag: Option<&'a str>,
    depth: u8,
) -> futures::future::BoxFuture<'a, Result<u64, MirrorError>> {
    Box::pin(async move {
        if depth > 3 {
            return Err(MirrorError::Registry(format!("{digest}: indexes nested too deep")));
        }
        let (raw, pulled) =
            src.client().pull_manifest_raw(&src.at(digest), src_auth, MANIFEST_TYPES).await.map_err(src.error())?;
        if pulled != digest {
            return Err(MirrorError::Changed(format!("{digest} (pulled {pulled})")));
        }
        let parsed: Raw = serde_json::from_slice(&raw)
            .map_err(|e| MirrorError::Registry(format!("{digest}: not a manifest: {e}")))?;
        let mut sent = 0;
        for child in &parsed.manifests {
            sent += copy_manifest(src, dst, src_auth, &child.digest, None, depth + 1).await?;
        }
        for blob in parsed.config.iter().chain(&parsed.layers) {
            sent += copy_blob(src, dst, blob).await?;
        }
        let media_type = parsed
            .media_type
            .clone()
            .or_else(|| (!parsed.manifests.is_empty()).then(|| MANIFEST_TYPES[1].to_owned()))
            .unwrap_or_else(|| MANIFEST_TYPES[0].to_owned());
        let content_type =
            media_type.parse().map_err(|_| MirrorError::Registry(format!("media type {media_type:?}")))?;
        let target = match tag {
            Some(tag) => dst.tag(tag),
            None => dst.at(digest),
        };
        dst.client().push_manifest_raw(&target, raw, content_type).await.map_err(dst.error())?;
        Ok(sent)
    })
}

/// Copies one blob unless the destination has it: mounted across repositories of one
/// registry, else streamed. Returns the bytes sent.
async fn copy_blob(src: &Repository, dst: &Repository, blob: &Descriptor) -> Result<u64, MirrorError> {
    let target = dst.at(&blob.digest);
    if dst.client().blob_exists(&target, &blob.digest).await.map_err(dst.error())? {
        return Ok(0);
    }
    if src.source().registry == dst.source().registry
        && dst.client().mount_blob(&target, &src.at(&blob.digest), &blob.digest).await.is_ok()
        && dst.client().blob_exists(&target, &blob.digest).await.unwrap_or(false)
    {
        return Ok(0);
    }
    let descriptor = oci_client::manifest::OciDescriptor {
        media_type: blob.media_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
        digest: blob.digest.clone(),
        size: blob.size as i64,
        ..Default::default()
    };
    let pulled = src.client().pull_blob_stream(&src.at(&blob.digest), &descriptor).await.map_err(src.error())?;
    let stream = pulled.stream.map(|piece| piece.map_err(OciDistributionError::IoError));
    dst.client().push_blob_stream(&target, stream, &blob.digest, Some(blob.size)).await.map_err(dst.error())?;
    Ok(blob.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_become_distinct_valid_tags() {
        assert_eq!(tag_for("app-1.2.3.zip"), "app-1.2.3.zip");
        let a = tag_for("rel/a:1.2.3:t:x.zip");
        let b = tag_for("rel_a_1.2.3_t_x.zip");
        assert!(a.starts_with("rel_a_1.2.3_t_x.zip-") && a != b, "{a} {b}");
        assert!(tag_for(&"x".repeat(300)).len() <= 128);
        assert!(tag_for(".hidden").starts_with("_.hidden-"));
        let valid = regex::Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap();
        for name in ["a b", "ü.bin", "rel/x", "-x", &"y".repeat(200)] {
            assert!(valid.is_match(&tag_for(name)), "{name}");
        }
    }
}
