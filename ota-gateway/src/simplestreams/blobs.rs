//! The verified files behind a stream's index: each is fetched by digest (from the
//! stream's repository, or from the upstream URL of a mirror) into a temp file of the
//! cache, checked against the SHA-256 and size the index promises while it streams,
//! and only then committed; one fetch per blob however many requests wait for it.
//! Each product's newest files are fetched ahead of the first request. What the
//! published index lists is pinned in the cache (`Stream::publish`).

use std::collections::HashMap;
use std::io::{BufWriter, Write as _};
use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt as _, StreamExt as _};
use oci_client::manifest::OciDescriptor;

use super::index::FileEntry;
use super::stream::Stream;
use super::StreamError;
use crate::cache::Payload;
use crate::unpack::Digesting;
use updraft_core::oci;

/// In-flight fetches of one stream, by cache key.
pub(super) type Inflight = std::sync::Mutex<HashMap<String, BlobFuture>>;

pub(super) type BlobFuture = Shared<BoxFuture<'static, Result<Arc<Payload>, String>>>;

impl Stream {
    /// Fetches `files` into the cache in the background, two at a time; failures are
    /// left for the first request to retry.
    pub(super) fn prefetch(self: &Arc<Self>, files: Vec<FileEntry>) {
        let missing: Vec<FileEntry> =
            files.into_iter().filter(|f| !matches!(self.cache.lookup(&blob_key(&f.digest)), Ok(Some(_)))).collect();
        if missing.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let fetches = futures::stream::iter(missing).map(|f| {
                let this = this.clone();
                async move {
                    if let Err(e) = this.file_blob(&f).await {
                        tracing::warn!(stream = %this.name, digest = %f.digest, error = %e, "prefetch failed");
                    }
                }
            });
            fetches.buffer_unordered(2).collect::<()>().await;
        });
    }

    /// The verified file behind an index entry (see [`Stream::blob`]).
    pub async fn file_blob(self: &Arc<Self>, entry: &FileEntry) -> Result<Arc<Payload>, StreamError> {
        self.blob_at(&entry.digest, entry.size, entry.url.clone()).await
    }

    /// The verified blob `digest` from the cache, fetched from the registry first
    /// when needed (one fetch per blob however many requests wait for it).
    pub async fn blob(self: &Arc<Self>, digest: &str, size: u64) -> Result<Arc<Payload>, StreamError> {
        self.blob_at(digest, size, None).await
    }

    async fn blob_at(
        self: &Arc<Self>,
        digest: &str,
        size: u64,
        url: Option<String>,
    ) -> Result<Arc<Payload>, StreamError> {
        let key = blob_key(digest);
        if let Ok(Some(payload)) = self.cache.lookup(&key) {
            return Ok(payload);
        }
        let fetch = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key) {
                Some(running) => running.clone(),
                None => {
                    let this = self.clone();
                    let digest = digest.to_owned();
                    let task = tokio::spawn(async move {
                        let result = match &url {
                            Some(url) => this.fetch_url(url, &digest, size).await,
                            None => this.fetch_blob(&digest, size).await,
                        }
                        .map_err(|e| e.to_string());
                        this.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(&blob_key(&digest));
                        result
                    });
                    let shared =
                        async move { task.await.unwrap_or_else(|e| Err(format!("fetch task: {e}"))) }.boxed().shared();
                    inflight.insert(key, shared.clone());
                    shared
                }
            }
        };
        fetch.await.map_err(StreamError::upstream)
    }

    /// A mirrored file from its upstream URL, verified against the upstream's sha256.
    async fn fetch_url(&self, url: &str, digest: &str, size: u64) -> Result<Arc<Payload>, StreamError> {
        let upstream = self.upstream.as_ref().ok_or_else(|| StreamError::upstream("not a mirror"))?;
        let mut response =
            upstream.http.get(url).send().await.map_err(|e| StreamError::upstream(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(StreamError::upstream(format!("{url}: HTTP {}", response.status())));
        }
        let file = self.cache.temp_file()?;
        let mut out = Digesting::new(BufWriter::with_capacity(256 * 1024, file));
        let mut received = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| StreamError::upstream(format!("{url}: {e}")))? {
            received += chunk.len() as u64;
            if received > size {
                return Err(StreamError::upstream(format!("{url} is longer than the {size} bytes the index says")));
            }
            out.write_all(&chunk)?;
        }
        self.commit_verified(out, digest, size).await
    }

    /// Checks a received file against `digest` and `size` and makes it a cache entry.
    async fn commit_verified(
        &self,
        out: Digesting<BufWriter<tempfile::NamedTempFile>>,
        digest: &str,
        size: u64,
    ) -> Result<Arc<Payload>, StreamError> {
        let (summary, buffered) = out.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        if summary.size != size || format!("sha256:{}", summary.sha256) != digest {
            return Err(StreamError::upstream(format!(
                "{digest} failed verification: got sha256:{} ({} bytes)",
                summary.sha256, summary.size
            )));
        }
        let cache = self.cache.clone();
        let key = blob_key(digest);
        Ok(tokio::task::spawn_blocking(move || cache.commit(&key, file, summary)).await.map_err(io_join)??)
    }

    async fn fetch_blob(&self, digest: &str, size: u64) -> Result<Arc<Payload>, StreamError> {
        let reference = oci::digest_reference(&self.source.registry, &self.source.repository, digest);
        let layer = OciDescriptor {
            media_type: "application/octet-stream".into(),
            digest: digest.to_owned(),
            size: size as i64,
            urls: None,
            artifact_type: None,
            annotations: None,
        };
        self.client.store_auth_if_needed(&self.source.registry, &self.auth).await;
        let mut stream = self
            .client
            .pull_blob_stream(&reference, &layer)
            .await
            .map_err(|e| StreamError::upstream(format!("blob {digest}: {e}")))?;
        let file = self.cache.temp_file()?;
        let mut out = Digesting::new(BufWriter::with_capacity(256 * 1024, file));
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StreamError::upstream(format!("blob {digest}: {e}")))?;
            // Writes land in the page cache; a chunk at a time keeps them short.
            out.write_all(&chunk)?;
            received += chunk.len() as u64;
            if received > size {
                return Err(StreamError::upstream(format!("blob {digest} is longer than {size} bytes")));
            }
        }
        self.commit_verified(out, digest, size).await
    }
}

fn io_join(e: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(e)
}

/// The cache key of a stream blob.
pub fn blob_key(digest: &str) -> String {
    format!("simplestreams-blob {digest}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::metrics::Metrics;
    use crate::simplestreams::StreamMetrics;
    use sha2::{Digest, Sha256};
    use std::io::Write;
    use updraft_core::config::StreamConfig;

    /// A mirror of a local upstream serving one version: its two files are fetched,
    /// then the cache fills with other payloads far past its budget.
    #[tokio::test]
    async fn a_listed_file_survives_cache_pressure() {
        use axum::routing::get;
        use updraft_core::config::{StreamSource, UpstreamStreamSource};

        let (meta, root) = (vec![b'm'; 40], vec![b'r'; 40]);
        let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
        let combined = sha(&[meta.clone(), root.clone()].concat());
        let images = serde_json::json!({"products": {"debian:12:amd64:default": {
            "os": "debian", "release": "12", "arch": "amd64", "versions": {"20260101_00:00": {"items": {
                "m": {"ftype": "incus.tar.xz", "path": "m", "sha256": sha(&meta), "size": 40,
                      "combined_squashfs_sha256": combined},
                "r": {"ftype": "squashfs", "path": "r", "sha256": sha(&root), "size": 40}}}}}}});
        let index =
            serde_json::json!({"index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json"}}});
        let app = axum::Router::new()
            .route("/streams/v1/index.json", get(move || async move { axum::Json(index) }))
            .route("/streams/v1/images.json", get(move || async move { axum::Json(images) }))
            .route("/m", get(move || async move { meta }))
            .route("/r", get(move || async move { root }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(Cache::open(dir.path(), 120, metrics.clone()).unwrap());
        let config = StreamConfig {
            name: "mirror".into(),
            source: StreamSource {
                oci: None,
                upload: None,
                upstream: Some(UpstreamStreamSource { url, filters: vec![], ca_file: None, interval: "1h".into() }),
            },
            keep_versions: 0,
            verify: None,
        };
        let client = oci::build_client("test", oci_client::client::ClientProtocol::Https);
        let stream = Stream::new(&config, client, cache.clone(), StreamMetrics::new(&metrics, "mirror")).unwrap();
        stream.round().await;
        let listed: Vec<FileEntry> = stream.published().files.values().cloned().collect();
        assert_eq!(listed.len(), 2, "{:?}", stream.status());
        for file in &listed {
            stream.file_blob(file).await.unwrap();
        }

        for i in 0..10u8 {
            let mut out = Digesting::new(cache.temp_file().unwrap());
            out.write_all(&[i; 30]).unwrap();
            let (summary, file) = out.finish().unwrap();
            cache.commit(&format!("filler {i}"), file, summary).unwrap();
        }
        for file in &listed {
            assert!(
                cache.lookup(&blob_key(&file.digest)).unwrap().is_some(),
                "{} was evicted while listed",
                file.digest
            );
        }
        assert!(cache.lookup("filler 0").unwrap().is_none(), "what nothing lists is evicted");
    }
}
