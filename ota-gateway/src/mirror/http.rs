//! A filuxe-compatible artifact store as one side of a mirror (listed by
//! [`updraft_core::mirror::store`]): streaming copies in chunks (a ranged download piped into a chunked upload, so memory stays
//! flat in the file's size), deletion. A store that answers 429 or 503 with a
//! `Retry-After` is [`MirrorError::Throttled`]: the worker asks it nothing more before then.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use reqwest::header;
use sha2::{Digest, Sha256};
use updraft_core::mirror::error::MirrorError;
use updraft_core::mirror::rules::Artifact;
use updraft_core::mirror::store::Store;

/// Bytes per upload request: one ranged download and one chunked upload each.
pub(crate) const CHUNK: u64 = 8 << 20;

/// The SHA-256 a store announces for `name` in its ETag (an Updraft store does;
/// a filuxe server does not).
pub(crate) async fn etag(store: &Store, name: &str) -> Result<Option<String>, MirrorError> {
    let response =
        store.request(reqwest::Method::HEAD, store.url("download", name))?.send().await.map_err(store.unreachable())?;
    if !response.status().is_success() {
        return match store.refused(response.status(), response.headers(), format!("checking {name}")) {
            throttled @ MirrorError::Throttled { .. } => Err(throttled),
            _ => Ok(None),
        };
    }
    let etag = response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(|v| v.trim_matches('"'));
    Ok(etag.filter(|e| updraft_core::config::is_sha256_hex(e)).map(str::to_owned))
}

/// The body of `name` as a stream (OCI pushes read it).
pub(crate) async fn download_stream(
    store: &Store,
    name: &str,
) -> Result<impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static, MirrorError> {
    let response =
        store.request(reqwest::Method::GET, store.url("download", name))?.send().await.map_err(store.unreachable())?;
    if !response.status().is_success() {
        return Err(store.refused(response.status(), response.headers(), format!("downloading {name}")));
    }
    Ok(response.bytes_stream())
}

/// Uploads `body` (`size` bytes, SHA-256 `sha256`) as `name` in one request,
/// replacing what is there; the store checks the checksum before the file appears.
pub(crate) async fn upload_whole(
    store: &Store,
    name: &str,
    body: reqwest::Body,
    size: u64,
    sha256: &str,
) -> Result<(), MirrorError> {
    let response = store
        .request(reqwest::Method::POST, store.url("upload", name))?
        .query(&[("force", "true"), ("sha256", sha256)])
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .body(body)
        .send()
        .await
        .map_err(store.unreachable())?;
    if response.status() != reqwest::StatusCode::CREATED {
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.unwrap_or_default();
        return Err(store.refused(status, &headers, format!("uploading {name}: {}", text.trim())));
    }
    Ok(())
}

/// Deletes `name` (absent already counts as deleted).
pub(crate) async fn delete(store: &Store, name: &str) -> Result<(), MirrorError> {
    let response =
        store.request(reqwest::Method::GET, store.url("delete", name))?.send().await.map_err(store.unreachable())?;
    match response.status().as_u16() {
        200 | 204 | 404 => Ok(()),
        _ => Err(store.refused(response.status(), response.headers(), format!("deleting {name}"))),
    }
}

/// Copies `artifact` from `src` to `dst` in [`CHUNK`]s, each a ranged download
/// streamed into a chunked upload, and checks the SHA-256 end to end. Returns the
/// bytes sent.
pub(crate) async fn copy(src: &Store, dst: &Store, artifact: &Artifact) -> Result<u64, MirrorError> {
    let name = &artifact.name;
    let announced = match &artifact.digest {
        Some(sum) => Some(sum.clone()),
        None => etag(src, name).await?,
    };
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let size = artifact.size;
    let mut from = 0u64;
    let mut sent = 0u64;
    loop {
        let to = (from + CHUNK).min(size).saturating_sub(1);
        let mut download = src.request(reqwest::Method::GET, src.url("download", name))?;
        if size > 0 {
            download = download.header(header::RANGE, format!("bytes={from}-{to}"));
        }
        if let Some(sum) = &announced {
            download = download.header(header::IF_RANGE, format!("\"{sum}\""));
        }
        let response = download.send().await.map_err(src.unreachable())?;
        let whole = response.status() == reqwest::StatusCode::OK && from == 0 && to + 1 >= size;
        match response.status().as_u16() {
            206 => {}
            200 if whole => {}
            200 | 404 | 416 => return Err(MirrorError::Changed(name.clone())),
            _ => return Err(src.refused(response.status(), response.headers(), format!("downloading {name}"))),
        }
        if response.content_length().is_some_and(|len| len != to + 1 - from) && size > 0 {
            return Err(MirrorError::Changed(name.clone()));
        }
        let feed = hasher.clone();
        let body = response.bytes_stream().map(move |piece| {
            if let Ok(bytes) = &piece {
                feed.lock().unwrap_or_else(|e| e.into_inner()).update(bytes);
            }
            piece
        });
        let mut query = vec![("time", format!("{}", artifact.time)), ("force", "true".to_owned())];
        if let Some(sum) = &announced {
            query.push(("sha256", sum.clone()));
        }
        let mut upload = dst
            .request(reqwest::Method::POST, dst.url("upload", name))?
            .query(&query)
            .header(header::CONTENT_TYPE, "application/octet-stream");
        if size > 0 {
            upload = upload
                .header(header::CONTENT_RANGE, format!("bytes {from}-{to}/{size}"))
                .header(header::CONTENT_LENGTH, to + 1 - from);
        }
        let response = upload.body(reqwest::Body::wrap_stream(body)).send().await.map_err(dst.unreachable())?;
        if response.status() != reqwest::StatusCode::CREATED {
            let (status, headers) = (response.status(), response.headers().clone());
            let text = response.text().await.unwrap_or_default();
            return Err(dst.refused(status, &headers, format!("uploading {name} bytes {from}-{to}: {}", text.trim())));
        }
        sent += if size > 0 { to + 1 - from } else { 0 };
        from = to + 1;
        if from >= size {
            break;
        }
    }
    let computed = hex::encode(hasher.lock().unwrap_or_else(|e| e.into_inner()).clone().finalize());
    if let Some(sum) = &announced {
        if *sum != computed {
            return Err(MirrorError::Verify(format!("{name}: the source sent sha256 {computed}, it announced {sum}")));
        }
    } else if let Some(at_dst) = etag(dst, name).await? {
        if at_dst != computed {
            return Err(MirrorError::Verify(format!("{name}: the destination holds sha256 {at_dst}, sent {computed}")));
        }
    }
    Ok(sent)
}
