//! The simplestreams index of one stream: products, versions and items in, the two
//! JSON documents LXD and Incus read (`streams/v1/index.json`, `streams/v1/images.json`)
//! out.
//!
//! The output is a pure function of the input: maps are `BTreeMap`s, struct fields are
//! declared in key order (so every object's keys come out sorted), and `updated` is
//! derived from the newest version serial, never from the clock. Every replica that
//! holds the same versions therefore serves the same bytes and the same ETag.
//!
//! Each product keeps its rendered JSON fragment: adding or removing a version
//! re-renders that product only, and [`Index::render`] concatenates the fragments.
//!
//! A product's props (display names, aliases) are those of its newest version by
//! serial, whatever order the versions arrived in: each version keeps the props it came
//! with, so removing the newest shows the next newest's. The ImageStream controller
//! counts aliases the same way (the newest version's).
//!
//! What the clients need is in `shared/simplestreams-clients.md`: a metadata item under
//! both ftypes `incus.tar.xz` (read by `incus`) and `lxd.tar.xz` (read by `lxc`), one
//! rootfs item per image type, and on the metadata item the combined fingerprint of
//! each type, `sha256(metadata bytes ‖ rootfs bytes)` ([`combined_sha256`]), which is
//! what the clients list and verify after a download.
//!
//! What a product, a version and an item are, and when they are valid, is
//! [`updraft_core::simplestreams`]' (the ImageStream controller counts with the same
//! rules); this module renders them.

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::Serialize;
use sha2::{Digest, Sha256};

pub(crate) use updraft_core::simplestreams::{
    check_aliases, FileRef, ImageVersion, IndexError, ProductKey, ProductProps, RootKind, Rootfs, Serial,
};

/// Where `images.json` lives, relative to the stream's base URL (named by index.json).
pub(crate) const IMAGES_PATH: &str = "streams/v1/images.json";

/// `sha256(metadata ‖ rootfs)` streamed from two readers: the image fingerprint.
pub(crate) fn combined_sha256(metadata: impl Read, rootfs: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    for mut reader in [Box::new(metadata) as Box<dyn Read>, Box::new(rootfs)] {
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// One product with its versions (each with the props it came with) and its rendered
/// fragment of `images.json`.
#[derive(Debug, Clone)]
struct Product {
    versions: BTreeMap<Serial, (ProductProps, ImageVersion)>,
    /// The delta items listed with a version ([`Index::set_deltas`]).
    deltas: BTreeMap<Serial, Vec<Delta>>,
    json: String,
}

/// A `.vcdiff` item: the VCDIFF (RFC 3284) that turns the `base` version's root file
/// system of `kind` into this version's, as lxd-imagebuilder's `--diff-products` lists
/// them (`ftype` `squashfs.vcdiff` or `disk-kvm.img.vcdiff`, `delta_base` the base's
/// version name). Incus and LXD download it instead of the full file when they hold the
/// base image, apply it with `xdelta3`, and check the result's hash against the full
/// item's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) kind: RootKind,
    pub(crate) base: Serial,
    pub(crate) file: FileRef,
}

impl Delta {
    /// The kinds of root file system deltas are made for (the ones lxd-imagebuilder
    /// diffs; a root.tar.xz is recompressed whole by any change).
    pub(crate) const KINDS: [RootKind; 2] = [RootKind::Squashfs, RootKind::DiskKvmImg];

    pub(crate) fn ftype(&self) -> &'static str {
        match self.kind {
            RootKind::Squashfs => "squashfs.vcdiff",
            RootKind::DiskKvmImg => "disk-kvm.img.vcdiff",
            RootKind::RootTarXz => "root.tar.xz.vcdiff",
        }
    }

    /// Whether a delta of `kind` from `base` may be listed at all. A `disk-kvm.img.vcdiff`
    /// is not when the base version also has a squashfs: Incus (6.x,
    /// `shared/simplestreams/products.go`) names the source of *every* delta by the base
    /// metadata item's `combined_squashfs_sha256`, so a host holding the base container
    /// image would apply the VM disk's delta to that container's squashfs and fail the
    /// download (the client does not fall back to the full file when `xdelta3` or the
    /// hash check fails). Without a squashfs in the base, Incus finds no source and skips
    /// the delta, and LXD (which takes `combined_disk-kvm-img_sha256` for it) uses it.
    pub(crate) fn offered(kind: RootKind, base: &ImageVersion) -> bool {
        match kind {
            RootKind::Squashfs => true,
            RootKind::DiskKvmImg => !base.rootfs.contains_key(&RootKind::Squashfs),
            RootKind::RootTarXz => false,
        }
    }

    /// The item's key: `delta-<base>` for a squashfs, `disk-kvm-delta-<base>` for a VM
    /// disk. Clients never read it (they go by `ftype` and `delta_base`); lxd-imagebuilder
    /// keys its delta items by file name (`disk.<base>.qcow2.vcdiff`, `rootfs.<base>.vcdiff`).
    fn item_name(&self) -> String {
        match self.kind {
            RootKind::Squashfs => format!("delta-{}", self.base.as_str()),
            _ => format!("{}-delta-{}", self.kind.item_name().trim_end_matches(".img"), self.base.as_str()),
        }
    }

    /// Where the delta is served: beside the target file, named after the base.
    pub(crate) fn path(target: &FileRef, base: &Serial) -> String {
        format!("{}.{}.vcdiff", target.path, base.as_str().replace(':', ""))
    }
}

impl Product {
    /// Drops the deltas of versions it no longer holds, and those from bases it no longer
    /// holds (no client can use them: they look the base up among the product's versions).
    fn prune_deltas(&mut self) {
        let versions = &self.versions;
        for listed in self.deltas.values_mut() {
            listed.retain(|d| versions.contains_key(&d.base));
        }
        self.deltas.retain(|serial, listed| !listed.is_empty() && versions.contains_key(serial));
    }

    /// The product's props: its newest version's. A product always has a version.
    fn props(&self) -> &ProductProps {
        &self.versions.values().next_back().expect("a product has a version").0
    }
}

/// The index of one stream. Cheap to update a version at a time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    products: BTreeMap<ProductKey, Product>,
}

/// The two rendered documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Documents {
    pub(crate) index_json: String,
    pub(crate) images_json: String,
}

impl Index {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one version of a product with its props (the product shows
    /// its newest version's). Only that product is re-rendered. Nothing changes when
    /// validation fails.
    #[cfg(test)]
    pub(crate) fn upsert(
        &mut self,
        key: &ProductKey,
        props: ProductProps,
        version: ImageVersion,
    ) -> Result<(), IndexError> {
        self.extend([(key.clone(), props, version)])
    }

    /// Adds (or replaces) versions, rendering each touched product once (a full build
    /// from a listing, or one new version). Every entry is validated first: when one
    /// fails, nothing changes.
    pub(crate) fn extend(
        &mut self,
        entries: impl IntoIterator<Item = (ProductKey, ProductProps, ImageVersion)>,
    ) -> Result<(), IndexError> {
        let entries: Vec<_> = entries.into_iter().collect();
        for (_, props, version) in &entries {
            props.validate()?;
            version.validate()?;
        }
        let mut touched = std::collections::BTreeSet::new();
        for (key, props, version) in entries {
            let product = self.products.entry(key.clone()).or_insert_with(|| Product {
                versions: BTreeMap::new(),
                deltas: BTreeMap::new(),
                json: String::new(),
            });
            product.versions.insert(version.serial.clone(), (props, version));
            touched.insert(key);
        }
        for key in touched {
            let product = self.products.get_mut(&key).expect("touched products exist");
            product.json = render_product(&key, product);
        }
        Ok(())
    }

    /// Removes one version (and the product once it has none). Returns whether it was there.
    pub(crate) fn remove(&mut self, key: &ProductKey, serial: &Serial) -> bool {
        let Some(product) = self.products.get_mut(key) else { return false };
        let removed = product.versions.remove(serial).is_some();
        product.prune_deltas();
        if product.versions.is_empty() {
            self.products.remove(key);
        } else if removed {
            product.json = render_product(key, product);
        }
        removed
    }

    /// Keeps the newest `keep` versions of every product.
    pub(crate) fn retain_newest(&mut self, keep: usize) {
        for (key, product) in &mut self.products {
            if product.versions.len() > keep {
                let drop: Vec<Serial> = product.versions.keys().rev().skip(keep).cloned().collect();
                for serial in drop {
                    product.versions.remove(&serial);
                }
                product.prune_deltas();
                product.json = render_product(key, product);
            }
        }
        self.products.retain(|_, p| !p.versions.is_empty());
    }

    /// Lists `deltas` (by version) with `key`'s versions instead of what it listed;
    /// deltas of versions it does not hold, or from bases it does not hold, are dropped.
    /// Re-renders the product only when something changed, and says whether it did.
    pub(crate) fn set_deltas(&mut self, key: &ProductKey, deltas: BTreeMap<Serial, Vec<Delta>>) -> bool {
        let Some(product) = self.products.get_mut(key) else { return false };
        let before = std::mem::replace(&mut product.deltas, deltas);
        product.prune_deltas();
        if product.deltas == before {
            return false;
        }
        product.json = render_product(key, product);
        true
    }

    /// Each product's two newest versions, older first: the pairs deltas are made for.
    pub(crate) fn newest_pairs(&self) -> impl Iterator<Item = (&ProductKey, &ImageVersion, &ImageVersion)> {
        self.products.iter().filter_map(|(k, p)| {
            let mut newest = p.versions.values().rev().map(|(_, v)| v);
            let target = newest.next()?;
            Some((k, newest.next()?, target))
        })
    }

    /// Every delta listed.
    pub(crate) fn deltas(&self) -> impl Iterator<Item = &Delta> {
        self.products.values().flat_map(|p| p.deltas.values().flatten())
    }

    pub(crate) fn version(&self, key: &ProductKey, serial: &Serial) -> Option<&ImageVersion> {
        self.products.get(key)?.versions.get(serial).map(|(_, v)| v)
    }

    /// Each product's newest version.
    pub(crate) fn products_newest(&self) -> impl Iterator<Item = (&ProductKey, &ImageVersion)> {
        self.products.iter().filter_map(|(k, p)| p.versions.values().next_back().map(|(_, v)| (k, v)))
    }

    /// Every version of every product.
    pub(crate) fn all_versions(&self) -> impl Iterator<Item = &ImageVersion> {
        self.products.values().flat_map(|p| p.versions.values().map(|(_, v)| v))
    }

    pub(crate) fn product_count(&self) -> usize {
        self.products.len()
    }

    pub(crate) fn version_count(&self) -> usize {
        self.products.values().map(|p| p.versions.len()).sum()
    }

    /// The two documents, or why this index must not be published (checks that span
    /// products: an alias claimed twice for one architecture, [`check_aliases`]).
    pub(crate) fn render(&self) -> Result<Documents, IndexError> {
        check_aliases(self.products.iter().map(|(key, product)| (key, product.props().aliases.as_slice())))?;
        let updated = self
            .products
            .values()
            .filter_map(|p| p.versions.keys().next_back())
            .max()
            .map_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned(), Serial::rfc2822);
        let quoted = |s: &str| serde_json::to_string(s).expect("strings serialize");
        let fragments: usize = self.products.values().map(|p| p.json.len() + 64).sum();
        let mut images = String::with_capacity(fragments + 256);
        images.push_str(r#"{"content_id":"images","datatype":"image-downloads","format":"products:1.0","products":{"#);
        for (i, (key, product)) in self.products.iter().enumerate() {
            if i > 0 {
                images.push(',');
            }
            images.push_str(&quoted(&key.to_string()));
            images.push(':');
            images.push_str(&product.json);
        }
        images.push_str(r#"},"updated":"#);
        images.push_str(&quoted(&updated));
        images.push('}');

        let keys: Vec<String> = self.products.keys().map(ToString::to_string).collect();
        let index = IndexDoc {
            format: "index:1.0",
            index: IndexEntries {
                images: IndexEntry {
                    datatype: "image-downloads",
                    format: "products:1.0",
                    path: IMAGES_PATH,
                    products: keys,
                    updated: &updated,
                },
            },
            updated: &updated,
        };
        Ok(Documents { index_json: serde_json::to_string(&index).expect("index serializes"), images_json: images })
    }
}

#[derive(Serialize)]
struct IndexDoc<'a> {
    format: &'static str,
    index: IndexEntries<'a>,
    updated: &'a str,
}

#[derive(Serialize)]
struct IndexEntries<'a> {
    images: IndexEntry<'a>,
}

#[derive(Serialize)]
struct IndexEntry<'a> {
    datatype: &'static str,
    format: &'static str,
    path: &'static str,
    products: Vec<String>,
    updated: &'a str,
}

/// A product as `images.json` spells it; fields in key order.
#[derive(Serialize)]
struct ProductDoc<'a> {
    aliases: String,
    arch: &'a str,
    os: &'a str,
    release: &'a str,
    release_title: &'a str,
    variant: &'a str,
    versions: BTreeMap<&'a str, VersionDoc<'a>>,
}

#[derive(Serialize)]
struct VersionDoc<'a> {
    items: BTreeMap<String, ItemDoc<'a>>,
}

/// An item; fields in key order.
#[derive(Serialize, Default)]
struct ItemDoc<'a> {
    #[serde(rename = "combined_disk-kvm-img_sha256", skip_serializing_if = "Option::is_none")]
    combined_disk_kvm_img_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    combined_rootxz_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    combined_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    combined_squashfs_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta_base: Option<&'a str>,
    ftype: &'static str,
    path: &'a str,
    sha256: &'a str,
    size: u64,
}

fn render_product(key: &ProductKey, product: &Product) -> String {
    // Aliases go to the newest version; every version is listed.
    let versions = product
        .versions
        .values()
        .map(|(_, v)| {
            let mut items = BTreeMap::new();
            let combined = |kind| v.rootfs.get(&kind).map(|r: &Rootfs| r.combined_sha256.as_str());
            let meta = |ftype| ItemDoc {
                combined_disk_kvm_img_sha256: combined(RootKind::DiskKvmImg),
                combined_rootxz_sha256: combined(RootKind::RootTarXz),
                // LXD's older field for the root.tar.xz image.
                combined_sha256: combined(RootKind::RootTarXz),
                combined_squashfs_sha256: combined(RootKind::Squashfs),
                delta_base: None,
                ftype,
                path: &v.metadata.path,
                sha256: &v.metadata.sha256,
                size: v.metadata.size,
            };
            items.insert("incus.tar.xz".to_owned(), meta("incus.tar.xz"));
            items.insert("lxd.tar.xz".to_owned(), meta("lxd.tar.xz"));
            for delta in product.deltas.get(&v.serial).into_iter().flatten() {
                items.insert(
                    delta.item_name(),
                    ItemDoc {
                        delta_base: Some(delta.base.as_str()),
                        ftype: delta.ftype(),
                        path: &delta.file.path,
                        sha256: &delta.file.sha256,
                        size: delta.file.size,
                        ..ItemDoc::default()
                    },
                );
            }
            for (kind, root) in &v.rootfs {
                items.insert(
                    kind.item_name().to_owned(),
                    ItemDoc {
                        ftype: kind.ftype(),
                        path: &root.file.path,
                        sha256: &root.file.sha256,
                        size: root.file.size,
                        ..ItemDoc::default()
                    },
                );
            }
            (v.serial.as_str(), VersionDoc { items })
        })
        .collect();
    let props = product.props();
    let doc = ProductDoc {
        aliases: props.aliases.join(","),
        arch: &key.arch,
        os: props.os.as_deref().unwrap_or(&key.os),
        release: &key.release,
        release_title: props.release_title.as_deref().unwrap_or(&key.release),
        variant: &key.variant,
        versions,
    };
    serde_json::to_string(&doc).expect("product serializes")
}

/// One servable file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileEntry {
    /// `sha256:<hex>`: the layer digest, and the file's own hash.
    pub(crate) digest: String,
    pub(crate) size: u64,
    /// Where an upstream serves it (mirrors); `None`: a blob of the stream's repository.
    pub(crate) url: Option<String>,
}

/// The cache key a stream's file is kept under: its digest (fetched, uploaded or
/// pinned, by whichever part of the surface).
pub(crate) fn blob_key(digest: &str) -> String {
    format!("simplestreams-blob {digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(seed: &str) -> String {
        hex::encode(Sha256::digest(seed.as_bytes()))
    }

    fn key(os: &str, release: &str) -> ProductKey {
        ProductKey::new(os, release, "amd64", "default").unwrap()
    }

    fn version(serial: &str, kinds: &[RootKind]) -> ImageVersion {
        let dir = format!("images/debian/bookworm/amd64/default/{serial}");
        let file =
            |name: &str| FileRef { path: format!("{dir}/{name}"), sha256: sha(&format!("{dir}{name}")), size: 10 };
        ImageVersion {
            serial: Serial::parse(serial).unwrap(),
            metadata: file("incus.tar.xz"),
            rootfs: kinds
                .iter()
                .map(|&k| (k, Rootfs { file: file(k.ftype()), combined_sha256: sha(&format!("{serial}{k:?}")) }))
                .collect(),
        }
    }

    fn props(aliases: &[&str]) -> ProductProps {
        ProductProps {
            os: Some("Debian".into()),
            release_title: None,
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn renders_what_the_clients_read() {
        let mut index = Index::new();
        let v = version("20260101_00:00", &[RootKind::Squashfs, RootKind::RootTarXz, RootKind::DiskKvmImg]);
        index.upsert(&key("debian", "bookworm"), props(&["debian/bookworm", "debian/12"]), v.clone()).unwrap();
        let docs = index.render().unwrap();
        let images: serde_json::Value = serde_json::from_str(&docs.images_json).unwrap();
        assert_eq!(images["format"], "products:1.0");
        assert_eq!(images["datatype"], "image-downloads");
        assert_eq!(images["updated"], "Thu, 01 Jan 2026 00:00:00 +0000");
        let p = &images["products"]["debian:bookworm:amd64:default"];
        assert_eq!(p["aliases"], "debian/bookworm,debian/12");
        assert_eq!(p["os"], "Debian");
        assert_eq!(p["release"], "bookworm");
        assert_eq!(p["release_title"], "bookworm");
        assert_eq!(p["arch"], "amd64");
        assert_eq!(p["variant"], "default");
        let items = &p["versions"]["20260101_00:00"]["items"];
        for meta in ["incus.tar.xz", "lxd.tar.xz"] {
            let m = &items[meta];
            assert_eq!(m["ftype"], meta);
            assert_eq!(m["path"], v.metadata.path);
            assert_eq!(m["sha256"], v.metadata.sha256);
            assert_eq!(m["size"], 10);
            assert_eq!(m["combined_squashfs_sha256"], v.rootfs[&RootKind::Squashfs].combined_sha256);
            assert_eq!(m["combined_rootxz_sha256"], v.rootfs[&RootKind::RootTarXz].combined_sha256);
            assert_eq!(m["combined_sha256"], v.rootfs[&RootKind::RootTarXz].combined_sha256);
            assert_eq!(m["combined_disk-kvm-img_sha256"], v.rootfs[&RootKind::DiskKvmImg].combined_sha256);
        }
        assert_eq!(items["root.squashfs"]["ftype"], "squashfs");
        assert_eq!(items["root.tar.xz"]["ftype"], "root.tar.xz");
        assert_eq!(items["disk-kvm.img"]["ftype"], "disk-kvm.img");
        assert!(items["root.squashfs"].get("combined_squashfs_sha256").is_none());

        let idx: serde_json::Value = serde_json::from_str(&docs.index_json).unwrap();
        assert_eq!(idx["format"], "index:1.0");
        let entry = &idx["index"]["images"];
        assert_eq!(entry["datatype"], "image-downloads");
        assert_eq!(entry["format"], "products:1.0");
        assert_eq!(entry["path"], "streams/v1/images.json");
        assert_eq!(entry["products"], serde_json::json!(["debian:bookworm:amd64:default"]));
    }

    #[test]
    fn output_keys_are_sorted_and_the_same_for_any_insertion_order() {
        let a = version("20260101_00:00", &[RootKind::Squashfs]);
        let b = version("20260202_12:30", &[RootKind::RootTarXz]);
        let mut one = Index::new();
        one.upsert(&key("debian", "bookworm"), props(&[]), a.clone()).unwrap();
        one.upsert(&key("alpine", "edge"), props(&[]), b.clone()).unwrap();
        one.upsert(&key("debian", "bookworm"), props(&[]), b.clone()).unwrap();
        let mut two = Index::new();
        two.upsert(&key("debian", "bookworm"), props(&[]), b.clone()).unwrap();
        two.upsert(&key("alpine", "edge"), props(&[]), b).unwrap();
        two.upsert(&key("debian", "bookworm"), props(&[]), a).unwrap();
        let (d1, d2) = (one.render().unwrap(), two.render().unwrap());
        assert_eq!(d1, d2);
        // serde_json's Value keeps keys sorted: re-serializing a sorted document is the identity.
        let value: serde_json::Value = serde_json::from_str(&d1.images_json).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), d1.images_json);
        let value: serde_json::Value = serde_json::from_str(&d1.index_json).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), d1.index_json);
        assert!(d1.index_json.contains("Mon, 02 Feb 2026 12:30:00 +0000"));
    }

    fn aliases_of(index: &Index, key: &ProductKey) -> serde_json::Value {
        let images: serde_json::Value = serde_json::from_str(&index.render().unwrap().images_json).unwrap();
        images["products"][key.to_string()]["aliases"].clone()
    }

    #[test]
    fn a_product_shows_its_newest_versions_props_when_an_older_version_arrives_last() {
        let k = key("debian", "bookworm");
        let mut index = Index::new();
        index.upsert(&k, props(&["debian/13"]), version("20260202_00:00", &[RootKind::Squashfs])).unwrap();
        index.upsert(&k, props(&["debian/12"]), version("20260101_00:00", &[RootKind::Squashfs])).unwrap();
        assert_eq!(aliases_of(&index, &k), "debian/13");
    }

    #[test]
    fn replicas_that_saw_versions_in_different_orders_serve_the_same_bytes() {
        let k = key("debian", "bookworm");
        let old = (k.clone(), props(&["old"]), version("20260101_00:00", &[RootKind::Squashfs]));
        let new = (k.clone(), props(&["new"]), version("20260202_00:00", &[RootKind::Squashfs]));
        let mut in_order = Index::new();
        in_order.extend([old.clone()]).unwrap();
        in_order.extend([new.clone()]).unwrap();
        let mut newest_first = Index::new();
        newest_first.extend([new.clone()]).unwrap();
        newest_first.extend([old.clone()]).unwrap();
        let mut one_batch = Index::new();
        one_batch.extend([new, old]).unwrap();
        let expected = in_order.render().unwrap();
        assert_eq!(newest_first.render().unwrap(), expected);
        assert_eq!(one_batch.render().unwrap(), expected);
        assert_eq!(aliases_of(&in_order, &k), "new");
    }

    #[test]
    fn removing_the_newest_version_shows_the_next_newest_props() {
        let k = key("debian", "bookworm");
        let mut index = Index::new();
        for (serial, alias) in [("20260101_00:00", "first"), ("20260303_00:00", "third"), ("20260202_00:00", "second")]
        {
            index.upsert(&k, props(&[alias]), version(serial, &[RootKind::Squashfs])).unwrap();
        }
        assert_eq!(aliases_of(&index, &k), "third");
        assert!(index.remove(&k, &Serial::parse("20260303_00:00").unwrap()));
        assert_eq!(aliases_of(&index, &k), "second");
        // Removing an older version leaves the newest's props.
        assert!(index.remove(&k, &Serial::parse("20260101_00:00").unwrap()));
        assert_eq!(aliases_of(&index, &k), "second");
    }

    #[test]
    fn an_alias_the_newest_version_dropped_is_free_for_another_product() {
        // Were the older version's props kept, `stable` would be claimed twice.
        let (bookworm, trixie) = (key("debian", "bookworm"), key("debian", "trixie"));
        let mut index = Index::new();
        index.upsert(&bookworm, props(&["stable"]), version("20260101_00:00", &[RootKind::Squashfs])).unwrap();
        index.upsert(&bookworm, props(&["oldstable"]), version("20260202_00:00", &[RootKind::Squashfs])).unwrap();
        index.upsert(&trixie, props(&["stable"]), version("20260101_00:00", &[RootKind::Squashfs])).unwrap();
        index.upsert(&bookworm, props(&["stable"]), version("20260102_00:00", &[RootKind::Squashfs])).unwrap();
        assert_eq!(aliases_of(&index, &bookworm), "oldstable");
        assert_eq!(aliases_of(&index, &trixie), "stable");
    }

    #[test]
    fn invalid_versions_change_nothing() {
        let mut index = Index::new();
        index
            .upsert(&key("debian", "bookworm"), props(&["d"]), version("20260101_00:00", &[RootKind::Squashfs]))
            .unwrap();
        let before = index.render().unwrap();
        let k = key("debian", "bookworm");
        let mut no_root = version("20260102_00:00", &[]);
        assert!(matches!(index.upsert(&k, props(&[]), no_root.clone()), Err(IndexError::NoRootfs(_))));
        no_root = version("20260102_00:00", &[RootKind::Squashfs]);
        no_root.metadata.path = "../../etc/passwd".into();
        assert!(matches!(index.upsert(&k, props(&[]), no_root.clone()), Err(IndexError::Path(_))));
        no_root.metadata.path = "images/x".into();
        no_root.rootfs.get_mut(&RootKind::Squashfs).unwrap().combined_sha256 = "ABC".into();
        assert!(matches!(index.upsert(&k, props(&[]), no_root), Err(IndexError::Sha256 { .. })));
        let bad_alias = version("20260102_00:00", &[RootKind::Squashfs]);
        assert!(matches!(index.upsert(&k, props(&["a,b"]), bad_alias), Err(IndexError::Alias(_))));
        assert_eq!(index.render().unwrap(), before);
    }

    #[test]
    fn an_alias_claimed_twice_is_not_published() {
        let mut index = Index::new();
        index
            .upsert(&key("debian", "bookworm"), props(&["stable"]), version("20260101_00:00", &[RootKind::Squashfs]))
            .unwrap();
        index
            .upsert(&key("debian", "trixie"), props(&["stable"]), version("20260101_00:00", &[RootKind::Squashfs]))
            .unwrap();
        assert!(matches!(index.render(), Err(IndexError::DuplicateAlias { .. })));
        // The same alias on another architecture is fine (the clients add /arch).
        let mut index = Index::new();
        let arm = ProductKey::new("debian", "bookworm", "arm64", "default").unwrap();
        index
            .upsert(&key("debian", "bookworm"), props(&["stable"]), version("20260101_00:00", &[RootKind::Squashfs]))
            .unwrap();
        index.upsert(&arm, props(&["stable"]), version("20260101_00:00", &[RootKind::Squashfs])).unwrap();
        index.render().unwrap();
    }

    #[test]
    fn remove_and_retain() {
        let mut index = Index::new();
        let k = key("debian", "bookworm");
        for s in ["20260101_00:00", "20260102_00:00", "20260103_00:00"] {
            index.upsert(&k, props(&[]), version(s, &[RootKind::Squashfs])).unwrap();
        }
        index.retain_newest(2);
        assert_eq!(index.version_count(), 2);
        assert!(index.version(&k, &Serial::parse("20260101_00:00").unwrap()).is_none());
        assert!(index.remove(&k, &Serial::parse("20260102_00:00").unwrap()));
        assert!(!index.remove(&k, &Serial::parse("20260102_00:00").unwrap()));
        assert!(index.remove(&k, &Serial::parse("20260103_00:00").unwrap()));
        assert_eq!(index.product_count(), 0);
        let empty = index.render().unwrap();
        assert!(empty.images_json.contains(r#""products":{}"#));
    }

    #[test]
    fn a_delta_is_listed_with_its_base_and_leaves_with_its_version() {
        let k = key("debian", "bookworm");
        let (old, new) = ("20260101_00:00", "20260102_00:00");
        let mut index = Index::new();
        for s in [old, new] {
            index.upsert(&k, props(&[]), version(s, &[RootKind::Squashfs])).unwrap();
        }
        let (base, target) = index.newest_pairs().map(|(_, b, t)| (b.clone(), t.clone())).next().unwrap();
        assert_eq!((base.serial.as_str(), target.serial.as_str()), (old, new));
        let root = &target.rootfs[&RootKind::Squashfs].file;
        let path = Delta::path(root, &base.serial);
        assert_eq!(path, format!("{}.20260101_0000.vcdiff", root.path));
        let delta = Delta {
            kind: RootKind::Squashfs,
            base: base.serial.clone(),
            file: FileRef { path, sha256: sha("d"), size: 3 },
        };
        let before = index.render().unwrap();
        assert!(index.set_deltas(&k, BTreeMap::from([(target.serial.clone(), vec![delta.clone()])])));
        assert!(!index.set_deltas(&k, BTreeMap::from([(target.serial.clone(), vec![delta.clone()])])), "no change");
        let images: serde_json::Value = serde_json::from_str(&index.render().unwrap().images_json).unwrap();
        let items = &images["products"][k.to_string()]["versions"][new]["items"];
        assert_eq!(
            items["delta-20260101_00:00"],
            serde_json::json!({"delta_base": old, "ftype": "squashfs.vcdiff", "path": delta.file.path, "sha256": sha("d"), "size": 3})
        );
        assert_eq!(index.deltas().count(), 1);
        // Everything else is as it was without the delta.
        let mut without = images.clone();
        without["products"][k.to_string()]["versions"][new]["items"]
            .as_object_mut()
            .unwrap()
            .remove("delta-20260101_00:00");
        assert_eq!(without, serde_json::from_str::<serde_json::Value>(&before.images_json).unwrap());
        assert!(index.remove(&k, &Serial::parse(new).unwrap()));
        assert_eq!(index.deltas().count(), 0);
    }

    /// What Incus and LXD do with a delta item: look `delta_base` up among the product's
    /// versions and take the source fingerprint from that version's metadata item
    /// (`incus.tar.xz` for Incus, `lxd.tar.xz` for LXD): `combined_squashfs_sha256`, or
    /// for LXD's VM deltas `combined_disk-kvm-img_sha256`. A delta whose base left is not
    /// listed.
    #[test]
    fn the_base_of_a_listed_delta_carries_what_the_clients_look_it_up_by() {
        let k = key("debian", "bookworm");
        let serials = ["20260101_00:00", "20260102_00:00"];
        let mut index = Index::new();
        for s in serials {
            index.upsert(&k, props(&[]), version(s, &[RootKind::Squashfs])).unwrap();
        }
        let (base, target) = index.newest_pairs().map(|(_, b, t)| (b.clone(), t.clone())).next().unwrap();
        let file = FileRef {
            path: Delta::path(&target.rootfs[&RootKind::Squashfs].file, &base.serial),
            sha256: sha("d"),
            size: 3,
        };
        let delta = Delta { kind: RootKind::Squashfs, base: base.serial.clone(), file };
        assert!(index.set_deltas(&k, BTreeMap::from([(target.serial.clone(), vec![delta.clone()])])));
        let images: serde_json::Value = serde_json::from_str(&index.render().unwrap().images_json).unwrap();
        let versions = &images["products"][k.to_string()]["versions"];
        let item = versions[serials[1]]["items"]
            .as_object()
            .unwrap()
            .values()
            .find(|i| i["ftype"] == "squashfs.vcdiff")
            .unwrap();
        let base_items = &versions[item["delta_base"].as_str().unwrap()]["items"];
        for ftype in ["incus.tar.xz", "lxd.tar.xz"] {
            let meta = base_items.as_object().unwrap().values().find(|i| i["ftype"] == ftype).unwrap();
            assert_eq!(meta["combined_squashfs_sha256"], base.rootfs[&RootKind::Squashfs].combined_sha256.as_str());
        }
        // A delta from a base the product does not hold is refused...
        let mut orphan = delta.clone();
        orphan.base = Serial::parse("20251231_00:00").unwrap();
        assert!(
            !index.set_deltas(&k, BTreeMap::from([(target.serial.clone(), vec![delta.clone(), orphan])])),
            "no change"
        );
        // ...and one whose base leaves (keep 1) goes with it, its version staying.
        index.retain_newest(1);
        assert!(index.version(&k, &target.serial).is_some());
        assert_eq!(index.deltas().count(), 0);
        assert!(!index.render().unwrap().images_json.contains("vcdiff"));
    }

    #[test]
    fn combined_is_the_hash_of_both_files_in_order() {
        let got = combined_sha256(&b"meta"[..], &b"root"[..]).unwrap();
        assert_eq!(got, hex::encode(Sha256::digest(b"metaroot")));
    }

    /// 10,000 versions across 500 products: a full build and one incremental update.
    /// Prints the times (no assertion on them; the benchmark compares with the peer).
    #[test]
    fn ten_thousand_versions() {
        let keys: Vec<ProductKey> = (0..500).map(|i| key("distro", &format!("r{i}"))).collect();
        let versions: Vec<ImageVersion> = (0..20)
            .map(|d| version(&format!("202601{:02}_00:00", d + 1), &[RootKind::Squashfs, RootKind::RootTarXz]))
            .collect();
        let entries: Vec<_> =
            keys.iter().flat_map(|k| versions.iter().map(|v| (k.clone(), props(&[]), v.clone()))).collect();
        let start = std::time::Instant::now();
        let mut index = Index::new();
        index.extend(entries).unwrap();
        let docs = index.render().unwrap();
        let full = start.elapsed();
        assert_eq!(index.version_count(), 10_000);
        let start = std::time::Instant::now();
        index.upsert(&keys[7], props(&[]), version("20260301_00:00", &[RootKind::Squashfs])).unwrap();
        let again = index.render().unwrap();
        let incremental = start.elapsed();
        assert_ne!(docs.images_json, again.images_json);
        println!(
            "10,000 versions / 500 products: full build {full:?}, one more version {incremental:?}, images.json {} bytes",
            again.images_json.len()
        );
    }
}
