//! The upstream source: a mirror of another simplestreams server (a public image
//! server, or another Updraft gateway).
//!
//! Each round reads the upstream's `streams/v1/index.json` and the `image-downloads`
//! document it names, keeps the products that match every filter (`os=`, `release=`,
//! `arch=`, `variant=`), and builds this stream's own index from them: the same
//! hashes and combined fingerprints, files under this gateway's paths. A file is
//! fetched from the upstream on first request (or ahead, for each product's newest
//! version), verified against the upstream's sha256 and size, and cached. When the
//! upstream is down the last index keeps serving and the status says why.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;

use super::index::FileEntry;
use super::index::{
    validate_props, validate_version, FileRef, ImageVersion, Index, ProductKey, ProductProps, RootKind, Rootfs, Serial,
};
use super::metadata::version_dir;
use super::StreamError;
use updraft_core::config::UpstreamStreamSource;

/// A mirrored server and how to reach it.
pub struct Upstream {
    /// Base URL without a trailing `/`.
    pub url: String,
    pub filters: Vec<(String, String)>,
    pub http: reqwest::Client,
}

impl Upstream {
    pub fn new(config: &UpstreamStreamSource) -> Result<Self, StreamError> {
        let mut builder =
            reqwest::Client::builder().user_agent("updraft-gateway").connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| StreamError::Config(format!("caFile {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| StreamError::Config(format!("caFile {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| StreamError::Config(format!("upstream client: {e}")))?;
        let filters = config
            .filters
            .iter()
            .filter_map(|f| f.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Ok(Self { url: config.url.trim_end_matches('/').to_owned(), filters, http })
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}/{path}", self.url);
        let response = self.http.get(&url).send().await.map_err(|e| format!("upstream {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("upstream {url}: HTTP {}", response.status()));
        }
        response.json().await.map_err(|e| format!("upstream {url}: {e}"))
    }

    /// Reads the upstream and builds the mirrored index and its file table.
    pub async fn read(&self) -> Result<Mirrored, String> {
        let index = self.get_json("streams/v1/index.json").await?;
        let path = index["index"]
            .as_object()
            .and_then(|entries| {
                entries.values().find(|e| e["datatype"] == "image-downloads").and_then(|e| e["path"].as_str())
            })
            .ok_or("upstream index.json names no image-downloads document")?
            .to_owned();
        if !super::index::is_safe_relative_path(&path) {
            return Err(format!("upstream index.json names an unsafe path {path:?}"));
        }
        let images = self.get_json(&path).await?;
        Ok(self.mirror(&images))
    }

    fn matches(&self, product: &Value) -> bool {
        self.filters.iter().all(|(k, v)| {
            let have = product[k.as_str()].as_str().unwrap_or(if k == "variant" { "default" } else { "" });
            if k == "os" {
                have.eq_ignore_ascii_case(v)
            } else {
                have == v
            }
        })
    }

    /// The part of an upstream `images.json` this stream mirrors.
    pub fn mirror(&self, images: &Value) -> Mirrored {
        let mut out = Mirrored::default();
        let Some(products) = images["products"].as_object() else { return out };
        for (name, p) in products {
            if !self.matches(p) {
                continue;
            }
            let text = |k: &str| p[k].as_str().unwrap_or("").to_owned();
            let variant = Some(text("variant")).filter(|v| !v.is_empty()).unwrap_or_else(|| "default".into());
            let key = match ProductKey::new(&text("os").to_ascii_lowercase(), &text("release"), &text("arch"), &variant)
            {
                Ok(key) => key,
                Err(e) => {
                    out.rejected.insert(name.clone(), e.to_string());
                    continue;
                }
            };
            let props = ProductProps {
                os: Some(text("os")).filter(|s| !s.is_empty()),
                release_title: Some(text("release_title")).filter(|s| !s.is_empty()),
                aliases: text("aliases").split(',').filter(|a| !a.is_empty()).map(String::from).collect(),
            };
            let Some(versions) = p["versions"].as_object() else { continue };
            for (serial_text, v) in versions {
                match self.version(&key, serial_text, &v["items"]) {
                    Ok((version, files)) => match validate_props(&props).and(validate_version(&version)) {
                        Ok(()) => {
                            out.files.extend(files);
                            out.versions.push((key.clone(), props.clone(), version));
                        }
                        Err(e) => {
                            out.rejected.insert(format!("{name} {serial_text}"), e.to_string());
                        }
                    },
                    Err(reason) => {
                        out.rejected.insert(format!("{name} {serial_text}"), reason);
                    }
                }
            }
        }
        out
    }

    /// One upstream version under this stream's paths.
    fn version(
        &self,
        key: &ProductKey,
        serial_text: &str,
        items: &Value,
    ) -> Result<(ImageVersion, Vec<(String, FileEntry)>), String> {
        let serial = Serial::parse_lenient(serial_text).map_err(|e| e.to_string())?;
        let items = items.as_object().ok_or("no items")?;
        let by_ftype = |ftype: &str| items.values().find(|i| i["ftype"] == ftype);
        let meta = by_ftype("incus.tar.xz").or_else(|| by_ftype("lxd.tar.xz")).ok_or("no metadata tarball item")?;
        let dir = version_dir(key, &serial);
        let mut files = Vec::new();
        let mut file = |item: &Value, name: &str| -> Result<FileRef, String> {
            let path = item["path"].as_str().ok_or("item without path")?;
            if !super::index::is_safe_relative_path(path) {
                return Err(format!("unsafe item path {path:?}"));
            }
            let sha256 = item["sha256"].as_str().ok_or("item without sha256")?.to_owned();
            let size = item["size"].as_u64().ok_or("item without size")?;
            let served = format!("{dir}/{name}");
            files.push((
                served.clone(),
                FileEntry { digest: format!("sha256:{sha256}"), size, url: Some(format!("{}/{path}", self.url)) },
            ));
            Ok(FileRef { path: served, sha256, size })
        };
        let metadata = file(meta, "incus.tar.xz")?;
        let combined = |field: &str| meta[field].as_str().filter(|s| !s.is_empty()).map(String::from);
        let mut rootfs = BTreeMap::new();
        for (kind, name, fields) in [
            (RootKind::Squashfs, "rootfs.squashfs", &["combined_squashfs_sha256"][..]),
            (RootKind::RootTarXz, "root.tar.xz", &["combined_rootxz_sha256", "combined_sha256"][..]),
            (RootKind::DiskKvmImg, "disk-kvm.img", &["combined_disk-kvm-img_sha256"][..]),
        ] {
            let Some(item) = by_ftype(kind.ftype()) else { continue };
            let Some(combined_sha256) = fields.iter().find_map(|f| combined(f)) else { continue };
            rootfs.insert(kind, Rootfs { file: file(item, name)?, combined_sha256 });
        }
        Ok((ImageVersion { serial, metadata, rootfs }, files))
    }
}

/// What one read of the upstream gave.
#[derive(Default)]
pub struct Mirrored {
    pub versions: Vec<(ProductKey, ProductProps, ImageVersion)>,
    pub files: HashMap<String, FileEntry>,
    /// Products or versions left out, with the reason.
    pub rejected: BTreeMap<String, String>,
}

impl Mirrored {
    /// The index of these versions (newest `keep` per product when `keep > 0`) and
    /// the files it names.
    pub fn build(self, keep: u32) -> Result<(Index, HashMap<String, FileEntry>), String> {
        let mut index = Index::new();
        index.extend(self.versions).map_err(|e| e.to_string())?;
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

    #[test]
    fn filters_and_bad_products() {
        assert_eq!(upstream(&["os=alpine"]).mirror(&images()).versions.len(), 0);
        let all = upstream(&[]).mirror(&images());
        assert!(all.rejected.contains_key("odd:x:sparc:default"), "{:?}", all.rejected);
        assert_eq!(upstream(&["release=trixie"]).mirror(&images()).versions.len(), 0);
    }
}
