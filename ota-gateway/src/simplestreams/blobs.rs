//! The verified files behind a stream's index: each is fetched by digest (from the
//! stream's repository, or from the upstream URL of a mirror) through the gateway's
//! one [`Fetcher`](crate::fetch::Fetcher), like firmware: one fetch per blob however
//! many requests wait for it, a bounded number of fetches at once, a failure held
//! (and a registry's `Retry-After` honoured) before anyone asks again, and nothing
//! cached before it matched the SHA-256 and size the index promises. Each product's
//! newest files are fetched ahead of the first request. What the published index
//! lists is pinned in the cache (`Stream::publish`).

use std::sync::Arc;

use futures::StreamExt as _;

use super::index::{blob_key, FileEntry};
use super::stream::Stream;
use super::StreamError;
use crate::cache::Payload;
use crate::fetch::{File, Origin};

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
            // Each fetch wrote through a buffer on a blocking thread (its own arena).
            crate::memory::release_freed();
        });
    }

    /// The verified file behind an index entry (see [`Stream::blob`]).
    pub(crate) async fn file_blob(self: &Arc<Self>, entry: &FileEntry) -> Result<Arc<Payload>, StreamError> {
        self.blob_at(&entry.digest, entry.size, entry.url.clone()).await
    }

    /// The verified blob `digest` from the cache, fetched from the registry first
    /// when needed (one fetch per blob however many requests wait for it).
    pub(crate) async fn blob(self: &Arc<Self>, digest: &str, size: u64) -> Result<Arc<Payload>, StreamError> {
        self.blob_at(digest, size, None).await
    }

    /// A file from the stream's repository, or from `url` (a mirror's upstream).
    async fn blob_at(&self, digest: &str, size: u64, url: Option<String>) -> Result<Arc<Payload>, StreamError> {
        let from = match url {
            Some(url) => {
                let upstream = self.upstream.as_ref().ok_or_else(|| StreamError::upstream("not a mirror"))?;
                Origin::Url { http: upstream.http.clone(), url }
            }
            None => Origin::Registry(self.source.clone()),
        };
        let file = File { key: blob_key(digest), digest: digest.to_owned(), size, from };
        self.fetcher.fetch(file).await.map_err(|e| StreamError::upstream(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::fetch::Fetcher;
    use crate::metrics::Metrics;
    use crate::simplestreams::StreamMetrics;
    use crate::unpack::Digesting;
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
        let fetcher = Arc::new(Fetcher::new(cache.clone(), metrics.clone()));
        let stream = Stream::new(&config, fetcher, StreamMetrics::new(&metrics, "mirror")).unwrap();
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
