//! The upstream source: a mirror of another simplestreams server (a public image
//! server, or another Updraft gateway).
//!
//! Each round reads the upstream's `streams/v1/index.json` and the `image-downloads`
//! document it names, keeps the products that match every filter (`os=`, `release=`,
//! `arch=`, `variant=`), and builds this stream's own index from them: the same
//! hashes and combined fingerprints, files under this gateway's paths. Which products
//! and versions those are is [`updraft_core::simplestreams::upstream`]'s rule, the one
//! the ImageStream controller counts with. A file is
//! fetched from the upstream on first request (or ahead, for each product's newest
//! version), verified against the upstream's sha256 and size, and cached. When the
//! upstream is down the last index keeps serving and the status says why.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;

use super::index::{FileEntry, ImageVersion, Index, IndexError, ProductKey, ProductProps};
use super::StreamError;
use updraft_core::config::UpstreamStreamSource;
use updraft_core::simplestreams::upstream::{self as rule, Filters};

/// Why the upstream could not be read, or its versions not indexed. The variant names
/// the kind of failure ([`UpstreamError::reason`]); the message says the rest.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No answer (connection, TLS, timeout).
    #[error("upstream {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// An answer other than success.
    #[error("upstream {url}: HTTP {status}")]
    Status { url: String, status: reqwest::StatusCode },
    /// A body that is not the JSON document asked for.
    #[error("upstream {url}: {source}")]
    Json { url: String, source: reqwest::Error },
    /// `index.json` names no usable `image-downloads` document (core's rule says why).
    #[error("upstream {0}")]
    Index(#[source] rule::UpstreamError),
    /// Versions the mirror rule let through and the index refused.
    #[error("upstream versions refused: {0}")]
    Versions(#[from] IndexError),
}

impl UpstreamError {
    /// A short label for the kind of failure.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable { .. } => "Unreachable",
            UpstreamError::Status { .. } => "HttpStatus",
            UpstreamError::Json { .. } => "NotJson",
            UpstreamError::Index(rule::UpstreamError::UnsafeIndexPath(_)) => "UnsafeIndexPath",
            UpstreamError::Index(_) => "NoImageDownloads",
            UpstreamError::Versions(_) => "VersionsRefused",
        }
    }
}

/// A mirrored server and how to reach it.
pub(crate) struct Upstream {
    /// Base URL without a trailing `/`.
    pub(crate) url: String,
    pub(crate) filters: Filters,
    pub(crate) http: reqwest::Client,
}

impl Upstream {
    pub(crate) fn new(config: &UpstreamStreamSource) -> Result<Self, StreamError> {
        let mut builder =
            reqwest::Client::builder().user_agent("updraft-gateway").connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| StreamError::Config(format!("caFile {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| StreamError::Config(format!("caFile {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| StreamError::Config(format!("upstream client: {e}")))?;
        let filters = Filters::parse(&config.filters);
        Ok(Self { url: config.url.trim_end_matches('/').to_owned(), filters, http })
    }

    async fn get_json(&self, path: &str) -> Result<Value, UpstreamError> {
        let url = format!("{}/{path}", self.url);
        let response = match self.http.get(&url).send().await {
            Ok(response) => response,
            Err(source) => return Err(UpstreamError::Unreachable { url, source }),
        };
        if !response.status().is_success() {
            return Err(UpstreamError::Status { url, status: response.status() });
        }
        response.json().await.map_err(|source| UpstreamError::Json { url, source })
    }

    /// Reads the upstream and builds the mirrored index and its file table.
    pub(crate) async fn read(&self) -> Result<Mirrored, UpstreamError> {
        let index = self.get_json("streams/v1/index.json").await?;
        let path = rule::image_downloads_path(&index).map_err(UpstreamError::Index)?;
        let images = self.get_json(path).await?;
        Ok(self.mirror(&images))
    }

    /// The part of an upstream `images.json` this stream mirrors.
    pub(crate) fn mirror(&self, images: &Value) -> Mirrored {
        let mirrored = rule::mirror(images, &self.filters, &self.url);
        let file = |f: rule::UpstreamFile| FileEntry {
            digest: format!("sha256:{}", f.sha256),
            size: f.size,
            url: Some(f.url),
        };
        Mirrored {
            versions: mirrored.versions,
            files: mirrored.files.into_iter().map(|(path, f)| (path, file(f))).collect(),
            rejected: mirrored.rejected,
        }
    }
}

/// What one read of the upstream gave.
#[derive(Default)]
pub(crate) struct Mirrored {
    pub(crate) versions: Vec<(ProductKey, ProductProps, ImageVersion)>,
    pub(crate) files: HashMap<String, FileEntry>,
    /// Products or versions left out, with the reason.
    pub(crate) rejected: BTreeMap<String, String>,
}

impl Mirrored {
    /// The index of these versions (newest `keep` per product when `keep > 0`) and
    /// the files it names.
    pub(crate) fn build(self, keep: u32) -> Result<(Index, HashMap<String, FileEntry>), UpstreamError> {
        let mut index = Index::new();
        index.extend(self.versions)?;
        if keep > 0 {
            index.retain_newest(keep as usize);
        }
        let live: std::collections::HashSet<String> = index
            .all_versions()
            .flat_map(|v| {
                std::iter::once(v.metadata.path.clone()).chain(v.rootfs.values().map(|r| r.file.path.clone()))
            })
            .collect();
        let files = self.files.into_iter().filter(|(path, _)| live.contains(path)).collect();
        Ok((index, files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simplestreams::index::RootKind;

    fn sha(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn upstream(filters: &[&str]) -> Upstream {
        let config = UpstreamStreamSource {
            url: "https://images.example/".into(),
            filters: filters.iter().map(|s| s.to_string()).collect(),
            ca_file: None,
            interval: "10m".into(),
        };
        Upstream::new(&config).unwrap()
    }

    fn images() -> Value {
        serde_json::json!({"products": {
            "debian:bookworm:amd64:default": {"aliases": "debian/12", "arch": "amd64", "os": "Debian", "release": "bookworm",
              "release_title": "12", "variant": "default", "versions": {
                "20260101_00:00": {"items": {
                  "incus.tar.xz": {"ftype": "incus.tar.xz", "path": "images/d/1/incus.tar.xz", "sha256": sha('a'), "size": 10,
                     "combined_squashfs_sha256": sha('c'), "combined_sha256": sha('d')},
                  "root.squashfs": {"ftype": "squashfs", "path": "images/d/1/rootfs.squashfs", "sha256": sha('b'), "size": 20},
                  "root.tar.xz": {"ftype": "root.tar.xz", "path": "images/d/1/rootfs.tar.xz", "sha256": sha('e'), "size": 30}}},
                "202601020000": {"items": {
                  "incus.tar.xz": {"ftype": "incus.tar.xz", "path": "images/d/2/incus.tar.xz", "sha256": sha('1'), "size": 10,
                     "combined_squashfs_sha256": sha('3')},
                  "root.squashfs": {"ftype": "squashfs", "path": "images/d/2/rootfs.squashfs", "sha256": sha('2'), "size": 20}}}}},
            "alpine:edge:arm64:default": {"arch": "arm64", "os": "Alpine", "release": "edge", "versions": {}},
            "odd:x:sparc:default": {"arch": "sparc", "os": "odd", "release": "x", "versions": {}}
        }})
    }

    #[test]
    fn mirrors_matching_products_with_their_hashes_under_our_paths() {
        let m = upstream(&["os=debian", "arch=amd64"]).mirror(&images());
        assert!(m.rejected.is_empty(), "{:?}", m.rejected);
        assert_eq!(m.versions.len(), 2);
        let (key, props, v) = &m.versions[0];
        assert_eq!(key.to_string(), "debian:bookworm:amd64:default");
        assert_eq!(props.aliases, vec!["debian/12".to_owned()]);
        assert_eq!(v.serial.as_str(), "20260101_00:00");
        assert_eq!(v.rootfs[&RootKind::Squashfs].combined_sha256, sha('c'));
        assert_eq!(v.rootfs[&RootKind::RootTarXz].combined_sha256, sha('d'), "combined_sha256 stands for root.tar.xz");
        let served = "images/debian/bookworm/amd64/default/20260101_00:00/rootfs.squashfs";
        assert_eq!(m.files[served].url.as_deref(), Some("https://images.example/images/d/1/rootfs.squashfs"));
        assert_eq!(m.versions[1].2.serial.as_str(), "20260102_00:00", "YYYYMMDDHHMM is read too");
        let (index, files) = m.build(1).unwrap();
        assert_eq!(index.version_count(), 1);
        assert!(files.keys().all(|p| p.contains("20260102_00:00")), "{files:?}");
    }
}
