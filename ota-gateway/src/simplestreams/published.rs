//! What one stream serves and reports: the documents and file table of its last
//! published index ([`Published`]), its status ([`StreamStatus`], `GET
//! /streams/{name}/status`) and its metrics ([`StreamMetrics`]). The sync loop in
//! [`super::stream`] makes them; the handlers in [`super`] read them.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::OnceLock;

use axum::http::HeaderValue;
use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};
use sha2::{Digest, Sha256};

use super::index::{FileEntry, Index};
use crate::metrics::Metrics;

/// The documents and the file table one index render produced.
pub(crate) struct Published {
    pub(crate) index_json: Bytes,
    pub(crate) images_json: Bytes,
    pub(crate) index_etag: HeaderValue,
    pub(crate) images_etag: HeaderValue,
    gzip: OnceLock<(Bytes, Bytes)>,
    /// Item path (relative to the base URL) → the blob behind it.
    pub(crate) files: HashMap<String, FileEntry>,
    pub(crate) products: usize,
    pub(crate) versions: usize,
    /// The files of each product's newest version: fetched ahead of the first
    /// request (the clients give a response 30 s before they give up).
    pub(crate) newest: Vec<FileEntry>,
}

impl Published {
    pub(super) fn new(
        index_json: String,
        images_json: String,
        files: HashMap<String, FileEntry>,
        newest: Vec<FileEntry>,
        index: &Index,
    ) -> Self {
        let etag = |b: &[u8]| {
            HeaderValue::from_str(&format!("\"{}\"", &hex::encode(Sha256::digest(b))[..32])).expect("hex is ascii")
        };
        Self {
            index_etag: etag(index_json.as_bytes()),
            images_etag: etag(images_json.as_bytes()),
            index_json: Bytes::from(index_json),
            images_json: Bytes::from(images_json),
            gzip: OnceLock::new(),
            files,
            products: index.product_count(),
            versions: index.version_count(),
            newest,
        }
    }

    /// The two documents gzip-compressed, made on first request.
    pub(crate) fn gzipped(&self) -> &(Bytes, Bytes) {
        self.gzip.get_or_init(|| {
            let gz = |b: &[u8]| {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(b).expect("writing to memory");
                Bytes::from(enc.finish().expect("writing to memory"))
            };
            (gz(&self.index_json), gz(&self.images_json))
        })
    }
}

/// What a stream reports about itself (for status and metrics).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StreamStatus {
    pub(crate) products: usize,
    pub(crate) versions: usize,
    /// Why the last render or listing was not published; `None` when it was.
    pub(crate) error: Option<String>,
    /// Versions left out of the index, by tag, with the reason.
    pub(crate) rejected: BTreeMap<String, String>,
    /// Rounds completed since start.
    pub(crate) rounds: u64,
}

/// A stream's metrics, bound to its name.
#[derive(Clone)]
pub(crate) struct StreamMetrics {
    pub(super) valid: IntGauge,
    pub(super) failures: IntCounter,
    pub(super) versions: IntGauge,
    unverified: prometheus::IntCounterVec,
    pub(super) delta_built: IntCounter,
    pub(super) delta_failed: IntCounter,
    pub(super) delta_bytes: IntCounter,
    stream: String,
}

impl StreamMetrics {
    pub(crate) fn new(metrics: &Metrics, stream: &str) -> Self {
        Self {
            valid: metrics.stream_index_valid.with_label_values(&[stream]),
            failures: metrics.stream_index_failures.with_label_values(&[stream]),
            versions: metrics.stream_versions.with_label_values(&[stream]),
            unverified: metrics.stream_unverified.clone(),
            delta_built: metrics.stream_delta_builds.with_label_values(&[stream, "built"]),
            delta_failed: metrics.stream_delta_builds.with_label_values(&[stream, "failed"]),
            delta_bytes: metrics.stream_delta_bytes.with_label_values(&[stream]),
            stream: stream.to_owned(),
        }
    }

    /// Drops the series of a stream that is gone.
    pub(crate) fn forget(metrics: &Metrics, stream: &str) {
        let _ = metrics.stream_index_valid.remove_label_values(&[stream]);
        let _ = metrics.stream_index_failures.remove_label_values(&[stream]);
        let _ = metrics.stream_versions.remove_label_values(&[stream]);
        let _ = metrics.stream_delta_bytes.remove_label_values(&[stream]);
        for result in ["built", "failed"] {
            let _ = metrics.stream_delta_builds.remove_label_values(&[stream, result]);
        }
        for reason in UNVERIFIED_REASONS {
            let _ = metrics.stream_unverified.remove_label_values(&[stream, reason]);
        }
    }

    /// One digest newly refused by verification, for `reason`.
    pub(super) fn unverified(&self, reason: &str) {
        self.unverified.with_label_values(&[self.stream.as_str(), reason]).inc();
    }
}

/// The `reason` label values of `updraft_gateway_stream_unverified_total`
/// (`updraft_core::cosign::VerifyError::reason`).
const UNVERIFIED_REASONS: [&str; 6] =
    ["NoSignature", "WrongKey", "OtherDigest", "Tampered", "RegistryError", "InvalidDigest"];
