//! Reading another simplestreams server: which document of its `index.json` to
//! follow, which of its products a stream's filters keep, and which of their versions
//! are usable. The gateway mirrors exactly [`mirror`]'s versions and the ImageStream
//! controller counts exactly them, so status and index agree by construction.
//!
//! - The `image-downloads` entry of `streams/v1/index.json` names the products
//!   document; its path must be [`is_safe_relative_path`].
//! - A filter is `key=value` on a product's field: `os` compared without case,
//!   `variant` taken as `default` when absent or empty, everything else exactly.
//! - A product's key is its `os` (lowercased), `release`, `arch` and `variant`, held to
//!   [`ProductKey::new`]; a product whose key is refused is left out whole.
//! - A version is usable when its serial reads ([`Serial::parse_lenient`]), it has a
//!   metadata tarball item (`incus.tar.xz`, else `lxd.tar.xz`) and at least one rootfs
//!   item with its combined fingerprint on the metadata item, every item path is safe,
//!   and every hash is a lowercase SHA-256 ([`ImageVersion::validate`]).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::layout::{is_safe_relative_path, version_dir, FileRef, ImageVersion, RootKind, Rootfs};
use super::product::{ProductKey, ProductProps, Serial};
use super::IndexError;

/// Why an upstream's `index.json` names no usable products document, or why one of its
/// versions is left out (the reason [`Mirrored::rejected`] records).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("index.json names no image-downloads document")]
    NoImageDownloads,
    #[error("index.json names an unsafe path {0:?}")]
    UnsafeIndexPath(String),
    #[error("no items")]
    NoItems,
    #[error("no metadata tarball item")]
    NoMetadata,
    /// An item lacks `path`, `sha256` or `size` (the field named).
    #[error("item without {0}")]
    ItemWithout(&'static str),
    #[error("unsafe item path {0:?}")]
    UnsafeItemPath(String),
    /// The version or its product breaks a rule of the index ([`IndexError`]).
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The path of the products document an upstream `index.json` names.
pub fn image_downloads_path(index: &Value) -> Result<&str, UpstreamError> {
    let path = index["index"]
        .as_object()
        .and_then(|entries| entries.values().find(|e| e["datatype"] == "image-downloads"))
        .and_then(|e| e["path"].as_str())
        .ok_or(UpstreamError::NoImageDownloads)?;
    if !is_safe_relative_path(path) {
        return Err(UpstreamError::UnsafeIndexPath(path.to_owned()));
    }
    Ok(path)
}

/// A stream's filters: every one must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(Vec<(String, String)>);

impl Filters {
    /// `key=value` filters; one without `=` is ignored.
    pub fn parse(filters: &[String]) -> Self {
        Self(filters.iter().filter_map(|f| f.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }

    /// Whether an upstream product (a JSON object of `images.json`) matches every filter.
    pub fn matches(&self, product: &Value) -> bool {
        self.0.iter().all(|(k, v)| {
            let have = product[k.as_str()].as_str().unwrap_or("");
            match k.as_str() {
                "os" => have.eq_ignore_ascii_case(v),
                "variant" => variant(have) == v,
                _ => have == v,
            }
        })
    }
}

fn variant(text: &str) -> &str {
    if text.is_empty() {
        "default"
    } else {
        text
    }
}

/// A file of a mirrored version: where the upstream serves it and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFile {
    /// The upstream's URL of the file.
    pub url: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

/// What one read of an upstream's `images.json` gives a stream.
#[derive(Debug, Default)]
pub struct Mirrored {
    /// The usable versions of the matching products, under this stream's paths.
    pub versions: Vec<(ProductKey, ProductProps, ImageVersion)>,
    /// This stream's path of every file of `versions` → where it comes from.
    pub files: HashMap<String, UpstreamFile>,
    /// Matching products or versions left out (`<product>` or `<product> <serial>`),
    /// with the reason.
    pub rejected: BTreeMap<String, String>,
    /// Versions of matching products left out (a product left out counts all of its).
    pub skipped: usize,
}

/// The part of an upstream `images.json` a stream with `filters` mirrors; its files
/// are at `base_url` (without a trailing `/`) joined with each item's path.
pub fn mirror(images: &Value, filters: &Filters, base_url: &str) -> Mirrored {
    let mut out = Mirrored::default();
    let Some(products) = images["products"].as_object() else { return out };
    for (name, p) in products {
        if !filters.matches(p) {
            continue;
        }
        let text = |k: &str| p[k].as_str().unwrap_or("");
        let versions = p["versions"].as_object();
        let key = match ProductKey::new(
            &text("os").to_ascii_lowercase(),
            text("release"),
            text("arch"),
            variant(text("variant")),
        ) {
            Ok(key) => key,
            Err(e) => {
                out.rejected.insert(name.clone(), e.to_string());
                out.skipped += versions.map_or(0, |v| v.len());
                continue;
            }
        };
        let props = ProductProps {
            os: Some(text("os").to_owned()).filter(|s| !s.is_empty()),
            release_title: Some(text("release_title").to_owned()).filter(|s| !s.is_empty()),
            aliases: text("aliases").split(',').filter(|a| !a.is_empty()).map(String::from).collect(),
        };
        for (serial_text, v) in versions.into_iter().flatten() {
            let usable = version(&key, serial_text, &v["items"], base_url).and_then(|(version, files)| {
                props.validate().and(version.validate())?;
                Ok((version, files))
            });
            match usable {
                Ok((version, files)) => {
                    out.files.extend(files);
                    out.versions.push((key.clone(), props.clone(), version));
                }
                Err(reason) => {
                    out.rejected.insert(format!("{name} {serial_text}"), reason.to_string());
                    out.skipped += 1;
                }
            }
        }
    }
    out
}

/// One upstream version under this stream's paths, and its files.
fn version(
    key: &ProductKey,
    serial_text: &str,
    items: &Value,
    base_url: &str,
) -> Result<(ImageVersion, Vec<(String, UpstreamFile)>), UpstreamError> {
    let serial = Serial::parse_lenient(serial_text)?;
    let items = items.as_object().ok_or(UpstreamError::NoItems)?;
    let by_ftype = |ftype: &str| items.values().find(|i| i["ftype"] == ftype);
    let meta = by_ftype("incus.tar.xz").or_else(|| by_ftype("lxd.tar.xz")).ok_or(UpstreamError::NoMetadata)?;
    let dir = version_dir(key, &serial);
    let mut files = Vec::new();
    let mut file = |item: &Value, name: &str| -> Result<FileRef, UpstreamError> {
        let path = item["path"].as_str().ok_or(UpstreamError::ItemWithout("path"))?;
        if !is_safe_relative_path(path) {
            return Err(UpstreamError::UnsafeItemPath(path.to_owned()));
        }
        let sha256 = item["sha256"].as_str().ok_or(UpstreamError::ItemWithout("sha256"))?.to_owned();
        let size = item["size"].as_u64().ok_or(UpstreamError::ItemWithout("size"))?;
        let served = format!("{dir}/{name}");
        files.push((served.clone(), UpstreamFile { url: format!("{base_url}/{path}"), sha256: sha256.clone(), size }));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn filters(f: &[&str]) -> Filters {
        Filters::parse(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>())
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
            "alpine:edge:arm64:default": {"arch": "arm64", "os": "Alpine", "release": "edge", "variant": "", "versions": {}},
            "odd:x:sparc:default": {"arch": "sparc", "os": "odd", "release": "x", "versions": {"20260101_00:00": {}}}
        }})
    }

    #[test]
    fn the_products_document_is_the_image_downloads_entry_at_a_safe_path() {
        let index =
            |path: &str| serde_json::json!({"index": {"images": {"datatype": "image-downloads", "path": path}}});
        assert_eq!(image_downloads_path(&index("streams/v1/images.json")).unwrap(), "streams/v1/images.json");
        // The operator let `./x`, `a\b` and `%2e%2e` through; the gateway refused them.
        for unsafe_path in ["/etc/passwd", "streams/../../x", "./images.json", "a\\b", "%2e%2e/x", "a?b"] {
            let refused = UpstreamError::UnsafeIndexPath(unsafe_path.into());
            assert_eq!(image_downloads_path(&index(unsafe_path)), Err(refused), "{unsafe_path}");
        }
        assert_eq!(image_downloads_path(&serde_json::json!({"index": {}})), Err(UpstreamError::NoImageDownloads));
        let other = serde_json::json!({"index": {"x": {"datatype": "content-download", "path": "streams/v1/x.json"}}});
        assert_eq!(image_downloads_path(&other), Err(UpstreamError::NoImageDownloads));
    }

    #[test]
    fn a_version_left_out_says_why() {
        let key = ProductKey::new("debian", "12", "amd64", "default").unwrap();
        let why = |serial: &str, items: Value| version(&key, serial, &items, "u").unwrap_err();
        let meta = |path: &str| serde_json::json!({"ftype": "lxd.tar.xz", "path": path, "sha256": sha('a'), "size": 1});
        let serial = "20260101_00:00";
        assert_eq!(why("v1", serde_json::json!({})), UpstreamError::Index(IndexError::Serial("v1".into())));
        assert_eq!(why(serial, serde_json::json!([])), UpstreamError::NoItems);
        assert_eq!(why(serial, serde_json::json!({"r": {"ftype": "squashfs"}})), UpstreamError::NoMetadata);
        assert_eq!(why(serial, serde_json::json!({"m": meta("../m")})), UpstreamError::UnsafeItemPath("../m".into()));
        for field in ["path", "sha256", "size"] {
            let mut item = meta("m");
            item.as_object_mut().unwrap().remove(field);
            assert_eq!(why(serial, serde_json::json!({ "m": item })), UpstreamError::ItemWithout(field));
        }
        // The reason recorded is the error's text.
        let product = serde_json::json!({"products": {"p": {"os": "debian", "release": "12", "arch": "amd64",
            "versions": {(serial): {"items": {"m": meta("m")}}}}}});
        let m = mirror(&product, &Filters::default(), "u");
        assert!(m.rejected[&format!("p {serial}")].contains("has no rootfs"), "{:?}", m.rejected);
    }

    #[test]
    fn filters_compare_os_without_case_and_read_a_missing_variant_as_default() {
        let debian = serde_json::json!({"os": "Debian", "release": "bookworm", "arch": "amd64"});
        assert!(filters(&[]).matches(&debian));
        assert!(filters(&["os=debian", "arch=amd64", "variant=default"]).matches(&debian));
        assert!(!filters(&["release=Bookworm"]).matches(&debian));
        assert!(filters(&["variant=default"]).matches(&serde_json::json!({"variant": ""})));
        assert!(!filters(&["variant=cloud"]).matches(&debian));
        assert!(filters(&["nonsense"]).matches(&debian), "a filter without '=' is ignored");
    }

    #[test]
    fn matching_products_are_mirrored_with_their_hashes_under_our_paths() {
        let m = mirror(&images(), &filters(&["os=debian", "arch=amd64"]), "https://images.example");
        assert!(m.rejected.is_empty(), "{:?}", m.rejected);
        assert_eq!(m.versions.len(), 2);
        let (key, props, v) = &m.versions[0];
        assert_eq!(key.to_string(), "debian:bookworm:amd64:default");
        assert_eq!(props.aliases, vec!["debian/12".to_owned()]);
        assert_eq!(v.serial.as_str(), "20260101_00:00");
        assert_eq!(v.rootfs[&RootKind::Squashfs].combined_sha256, sha('c'));
        assert_eq!(v.rootfs[&RootKind::RootTarXz].combined_sha256, sha('d'), "combined_sha256 stands for root.tar.xz");
        let served = "images/debian/bookworm/amd64/default/20260101_00:00/rootfs.squashfs";
        assert_eq!(m.files[served].url, "https://images.example/images/d/1/rootfs.squashfs");
        assert_eq!(m.versions[1].2.serial.as_str(), "20260102_00:00", "YYYYMMDDHHMM is read too");
    }

    #[test]
    fn products_the_clients_cannot_use_are_left_out_whole() {
        let all = mirror(&images(), &Filters::default(), "https://images.example");
        assert!(all.rejected.contains_key("odd:x:sparc:default"), "{:?}", all.rejected);
        assert_eq!((all.versions.len(), all.skipped), (2, 1));
        assert_eq!(mirror(&images(), &filters(&["os=alpine"]), "").versions.len(), 0);
    }

    #[test]
    fn a_version_is_usable_only_when_the_gateway_can_serve_it() {
        // The operator counted every version with a metadata item; the gateway listed
        // only these.
        let meta = |extra: Value| {
            let mut m = serde_json::json!({"ftype": "lxd.tar.xz", "path": "m", "sha256": sha('a'), "size": 1});
            m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            m
        };
        let root = serde_json::json!({"ftype": "squashfs", "path": "r", "sha256": sha('b'), "size": 2});
        let combined = serde_json::json!({"combined_squashfs_sha256": sha('c')});
        let product = |versions: Value| serde_json::json!({"products": {"p": {"os": "debian", "release": "12", "arch": "amd64", "versions": versions}}});
        let usable =
            product(serde_json::json!({"20260101_00:00": {"items": {"m": meta(combined.clone()), "r": root}}}));
        assert_eq!(mirror(&usable, &Filters::default(), "u").versions.len(), 1);
        let cases = [
            ("no rootfs", serde_json::json!({"items": {"m": meta(combined.clone())}})),
            ("no combined fingerprint", serde_json::json!({"items": {"m": meta(serde_json::json!({})), "r": root}})),
            (
                "an unsafe path",
                serde_json::json!({"items": {"m": meta(combined.clone()), "r": {"ftype": "squashfs", "path": "../r", "sha256": sha('b'), "size": 2}}}),
            ),
            (
                "an uppercase hash",
                serde_json::json!({"items": {"m": meta(combined.clone()), "r": {"ftype": "squashfs", "path": "r", "sha256": sha('B'), "size": 2}}}),
            ),
            ("no metadata item", serde_json::json!({"items": {"r": root}})),
        ];
        for (what, version) in cases {
            let m = mirror(&product(serde_json::json!({"20260101_00:00": version})), &Filters::default(), "u");
            assert_eq!((m.versions.len(), m.skipped), (0, 1), "{what}");
        }
        let bad_serial = product(serde_json::json!({"v1": {"items": {"m": meta(combined), "r": root}}}));
        assert_eq!(mirror(&bad_serial, &Filters::default(), "u").skipped, 1, "a serial that does not read");
    }
}
