//! The simplestreams surface: image streams for LXD and Incus.
//!
//! Each stream lives under its own base URL, `/streams/{name}/`, which cannot collide
//! with the device API:
//!
//! ```text
//! GET  /streams/{name}/status                  products, versions, last error, versions left out
//! GET  /streams/{name}/streams/v1/index.json   ETag, If-None-Match, gzip
//! GET  /streams/{name}/streams/v1/images.json  ETag, If-None-Match, gzip
//! GET  /streams/{name}/images/{path}           the files the index names: Range, ETag, HEAD
//! POST /streams/{name}/images/                 upload (docker-simplestreams-server API)
//! DELETE /streams/{name}/images/{path}         delete a version or one file (allowDelete)
//! ```
//!
//! Remotes are added with `incus remote add NAME https://HOST:PORT/streams/{name}
//! --protocol simplestreams` (or `lxc remote add …`), over the HTTPS listener.
//!
//! - [`index`]: the model and the deterministic builder of the two documents;
//! - [`metadata`]: `metadata.yaml`, upload paths, `metadata.json`;
//! - [`registry`]: versions as OCI artifacts (the durable store);
//! - [`oci_source`]: versions from artifacts a person pushed (`incus image export` + `oras push`);
//! - [`upstream`]: a mirror of another simplestreams server;
//! - [`stream`]: one stream's live state and its sync loop;
//! - [`published`]: what a stream serves and reports (documents, file table, status, metrics);
//! - [`deltas`]: `.vcdiff` items from each product's previous version to its newest,
//!   built in the background and kept in the cache;
//! - `blobs`: the verified, cached files behind the index, fetched by digest through
//!   the gateway's one [`Fetcher`] (single flight, permits, failure hold);
//! - [`upload`]: the upload and delete handlers.

mod blobs;
pub(crate) mod deltas;
pub(crate) mod index;
pub(crate) mod metadata;
pub(crate) mod oci_source;
pub(crate) mod published;
pub(crate) mod registry;
pub(crate) mod stream;
pub(crate) mod upload;
pub(crate) mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::from_fn;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;

use crate::fetch::Fetcher;
use crate::http::{self, Download};
use crate::metrics::Metrics;
pub(crate) use published::StreamMetrics;
pub(crate) use stream::Stream;
use updraft_core::config::GatewayConfig;

/// Every answer of this surface other than success: the shared answers of
/// [`http::Error`], and the ones only this surface gives.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Http(#[from] http::Error),
    /// 409: the file exists and the stream does not allow overwrites.
    #[error("{0}")]
    Conflict(String),
    /// 405: uploads or deletes are off for this stream.
    #[error("{0}")]
    NotAllowed(String),
    #[error("stream config: {0}")]
    Config(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl StreamError {
    fn bad_request(message: impl Into<String>) -> Self {
        StreamError::Http(http::Error::BadRequest(message.into()))
    }

    fn not_found(what: impl Into<String>) -> Self {
        StreamError::Http(http::Error::NotFound(what.into()))
    }

    fn upstream(message: impl Into<String>) -> Self {
        StreamError::Http(http::Error::Upstream(message.into()))
    }

    fn too_large(limit: u64) -> Self {
        StreamError::Http(http::Error::PayloadTooLarge { limit })
    }
}

impl From<metadata::MetadataError> for StreamError {
    fn from(e: metadata::MetadataError) -> Self {
        StreamError::bad_request(e.to_string())
    }
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        let status = match &self {
            StreamError::Http(_) => return self.into_http().into_response(),
            StreamError::Conflict(_) => StatusCode::CONFLICT,
            StreamError::NotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            StreamError::Config(_) | StreamError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

impl StreamError {
    fn into_http(self) -> http::Error {
        match self {
            StreamError::Http(e) => e,
            other => http::Error::Upstream(other.to_string()),
        }
    }
}

/// Every stream of the gateway, by name: the live part of the surface. Cheap to clone.
///
/// A config becomes live in two phases, like the other surfaces ([`crate::state`]):
/// [`Streams::prepare`] builds what is new or changed without starting anything and
/// fails on a bad stream; [`Streams::install`] swaps the table and starts the new
/// streams' sync loops. A stream whose config did not change is carried over as it is
/// (its index, upload state and verification verdicts stay); a removed or replaced
/// stream's loop ends once the last request holding it finishes.
#[derive(Clone)]
pub(crate) struct Streams {
    inner: Arc<Live>,
}

struct Live {
    /// The gateway's fetcher and registry client, shared with firmware.
    fetcher: Arc<Fetcher>,
    metrics: Arc<Metrics>,
    by_name: RwLock<Arc<HashMap<String, Arc<Stream>>>>,
}

/// A stream table ready to install.
pub(crate) struct Prepared {
    by_name: HashMap<String, Arc<Stream>>,
    /// The streams made for this config (new or changed): their loops start at install.
    started: Vec<Arc<Stream>>,
}

impl Streams {
    /// No streams yet.
    pub(crate) fn new(fetcher: Arc<Fetcher>, metrics: Arc<Metrics>) -> Self {
        Self { inner: Arc::new(Live { fetcher, metrics, by_name: RwLock::new(Arc::new(HashMap::new())) }) }
    }

    /// Builds the streams of `config` that differ from the live ones (reading token and
    /// key files); changes nothing.
    pub(crate) fn prepare(&self, config: &GatewayConfig) -> Result<Prepared, StreamError> {
        let current = self.snapshot();
        let mut by_name = HashMap::new();
        let mut started = Vec::new();
        for s in &config.streams {
            let stream = match current.get(&s.name) {
                Some(live) if live.config == *s => live.clone(),
                _ => {
                    let metrics = StreamMetrics::new(&self.inner.metrics, &s.name);
                    let stream = Stream::new(s, self.inner.fetcher.clone(), metrics)?;
                    started.push(stream.clone());
                    stream
                }
            };
            by_name.insert(s.name.clone(), stream);
        }
        Ok(Prepared { by_name, started })
    }

    /// Makes `prepared` the live table and starts the new streams.
    pub(crate) fn install(&self, prepared: Prepared) {
        let old = std::mem::replace(
            &mut *self.inner.by_name.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(prepared.by_name),
        );
        let live = self.snapshot();
        for name in old.keys().filter(|n| !live.contains_key(*n)) {
            tracing::info!(stream = %name, "stream removed");
            StreamMetrics::forget(&self.inner.metrics, name);
        }
        for stream in prepared.started {
            tracing::info!(stream = %stream.name, "stream started");
            stream.spawn();
        }
    }

    fn snapshot(&self) -> Arc<HashMap<String, Arc<Stream>>> {
        self.inner.by_name.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The live stream `name`; 404 when there is none.
    pub(crate) fn get(&self, name: &str) -> Result<Arc<Stream>, StreamError> {
        self.snapshot().get(name).cloned().ok_or_else(|| StreamError::not_found(format!("unknown stream {name:?}")))
    }
}

/// The routes of every stream. Upload bodies are limited per stream by the handler
/// (`maxBytes`, which a reload may change), not by a router-wide limit.
pub(crate) fn router(streams: Streams) -> Router {
    let upload = post(upload::upload).layer(from_fn(http::unread::read_unread_body));
    Router::new()
        .route("/streams/{stream}/status", get(status))
        .route("/streams/{stream}/streams/v1/index.json", get(index_json))
        .route("/streams/{stream}/streams/v1/images.json", get(images_json))
        .route("/streams/{stream}/images/", upload.clone())
        .route("/streams/{stream}/images", upload)
        .route("/streams/{stream}/images/{*path}", get(file).delete(upload::delete))
        .layer(DefaultBodyLimit::disable())
        .with_state(streams)
}

/// `GET /streams/{stream}/status`: products, versions, why the newest index was not
/// published (if it was not), the versions left out and why.
async fn status(State(streams): State<Streams>, Path(stream): Path<String>) -> Result<Response, StreamError> {
    Ok(axum::Json(streams.get(&stream)?.status()).into_response())
}

async fn index_json(
    State(streams): State<Streams>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Result<Response, StreamError> {
    let published = streams.get(&stream)?.published();
    let gzip = wants_gzip(&headers).then(|| published.gzipped().0.clone());
    Ok(json_document(&headers, published.index_json.clone(), gzip, &published.index_etag))
}

async fn images_json(
    State(streams): State<Streams>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Result<Response, StreamError> {
    let published = streams.get(&stream)?.published();
    let gzip = wants_gzip(&headers).then(|| published.gzipped().1.clone());
    Ok(json_document(&headers, published.images_json.clone(), gzip, &published.images_etag))
}

fn wants_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or("").trim();
            let refused = it.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
    })
}

/// A JSON document with its ETag: 304 when it matches, gzip when asked.
fn json_document(headers: &HeaderMap, plain: Bytes, gzip: Option<Bytes>, etag: &HeaderValue) -> Response {
    let builder = Response::builder()
        .header(header::ETAG, etag.clone())
        .header(header::VARY, "Accept-Encoding")
        .header(header::CACHE_CONTROL, "no-cache");
    if http::download::not_modified(headers, etag) {
        return builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()).expect("valid response");
    }
    let builder = builder.header(header::CONTENT_TYPE, "application/json");
    let (builder, body) = match gzip {
        Some(gz) => (builder.header(header::CONTENT_ENCODING, "gzip"), gz),
        None => (builder, plain),
    };
    builder.header(header::CONTENT_LENGTH, body.len()).body(Body::from(body)).expect("valid response")
}

/// A file the index names, from the verified cache (fetched by digest on first use).
/// The body is a slice of the memory-mapped cache file: the plain listener sends it
/// with sendfile, like firmware.
async fn file(
    State(streams): State<Streams>,
    Path((stream, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, StreamError> {
    let stream = streams.get(&stream)?;
    let entry = stream
        .published()
        .files
        .get(&format!("images/{path}"))
        .cloned()
        .ok_or_else(|| StreamError::not_found(format!("no file images/{path} in stream {:?}", stream.name)))?;
    let payload = stream.file_blob(&entry).await?;
    let download = Download {
        body: payload.bytes.clone(),
        etag: HeaderValue::from_str(&format!("\"{}\"", payload.summary.sha256)).expect("hex is ascii"),
        content_type: HeaderValue::from_static("application/octet-stream"),
        disposition: None,
    };
    Ok(download.respond(&headers)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_used_only_when_accepted() {
        let mut h = HeaderMap::new();
        assert!(!wants_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br, GZIP;q=0.5"));
        assert!(wants_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0, br"));
        assert!(!wants_gzip(&h));
    }

    #[test]
    fn json_documents_answer_304_on_a_matching_etag() {
        let etag = HeaderValue::from_static("\"abc\"");
        let mut h = HeaderMap::new();
        let r = json_document(&h, Bytes::from_static(b"{}"), None, &etag);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::ETAG], "\"abc\"");
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abc\""));
        assert_eq!(json_document(&h, Bytes::from_static(b"{}"), None, &etag).status(), StatusCode::NOT_MODIFIED);
        // The one rule of http::download: weak tags, lists and `*` match too.
        for inm in ["W/\"abc\"", "\"x\", \"abc\"", "*"] {
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(inm));
            assert_eq!(json_document(&h, Bytes::new(), None, &etag).status(), StatusCode::NOT_MODIFIED, "{inm}");
        }
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(json_document(&h, Bytes::new(), None, &etag).status(), StatusCode::OK);
    }
}
