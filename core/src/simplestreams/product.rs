//! Which product a version belongs to and which version it is: the product key
//! `os:release:arch:variant`, the serial `YYYYMMDD_HH:MM`, and how both are read from
//! a version manifest's annotations or, for what they leave out, from the image's own
//! `metadata.yaml`. The gateway indexes with these rules and the ImageStream
//! controller counts with them, so a version the status counts is one the index lists.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use super::annotations::{ANN_ALIASES, ANN_DELETED, ANN_OS, ANN_PRODUCT, ANN_RELEASE_TITLE, ANN_SERIAL};
use super::IndexError;
use crate::image_metadata::{debian_arch, is_component, ImageMetadata};

/// The identity of a product: `os:release:arch:variant`, each part a lowercase name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProductKey {
    pub os: String,
    pub release: String,
    pub arch: String,
    pub variant: String,
}

impl ProductKey {
    /// A key whose parts are checked: names of `[a-z0-9][a-z0-9.-]*` (at most 32
    /// characters), an architecture the clients know ([`is_known_arch`]).
    pub fn new(os: &str, release: &str, arch: &str, variant: &str) -> Result<Self, IndexError> {
        for (field, value) in [("os", os), ("release", release), ("arch", arch), ("variant", variant)] {
            if !is_component(value) {
                return Err(IndexError::Component { field, value: value.to_owned() });
            }
        }
        if !is_known_arch(arch) {
            return Err(IndexError::Architecture(arch.to_owned()));
        }
        Ok(Self { os: os.into(), release: release.into(), arch: arch.into(), variant: variant.into() })
    }

    /// The key as the [`ANN_PRODUCT`] annotation spells it, `os:release:arch:variant`.
    pub fn parse(text: &str) -> Result<Self, IndexError> {
        let parts: Vec<&str> = text.split(':').collect();
        let [os, release, arch, variant] = parts[..] else {
            return Err(IndexError::Product(text.to_owned()));
        };
        Self::new(os, release, arch, variant)
    }

    /// The product `metadata.yaml` describes: `properties.os`, `release` and `variant`
    /// (default `default`) lowercased, and the architecture as Debian names it, from
    /// `properties.architecture` (what incus-simplestreams reads) or else the top-level
    /// kernel name (`x86_64` → `amd64`).
    pub fn from_metadata(m: &ImageMetadata) -> Result<Self, IndexError> {
        let os = m.property("os").ok_or(IndexError::NoProperty("os"))?.to_ascii_lowercase();
        let release = m.property("release").ok_or(IndexError::NoProperty("release"))?.to_ascii_lowercase();
        let variant = m.property("variant").unwrap_or("default").to_ascii_lowercase();
        let arch = debian_arch(m.property("architecture").unwrap_or(&m.architecture));
        Self::new(&os, &release, arch, &variant)
    }
}

impl fmt::Display for ProductKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}:{}", self.os, self.release, self.arch, self.variant)
    }
}

/// Architecture names LXD's and Incus's `osarch` accept (both the kernel and the
/// Debian spelling). A product with another arch is silently dropped by the clients,
/// so it is refused instead.
pub(crate) fn is_known_arch(arch: &str) -> bool {
    const KNOWN: &[&str] = &[
        "i686",
        "i386",
        "i586",
        "386",
        "x86",
        "x86_64",
        "amd64",
        "armv6l",
        "armel",
        "arm",
        "armv7l",
        "armhf",
        "armv8l",
        "aarch64",
        "arm64",
        "ppc",
        "powerpc",
        "ppc64",
        "powerpc64",
        "ppc64le",
        "ppc64el",
        "s390x",
        "mips",
        "mips64",
        "mips64el",
        "riscv32",
        "riscv64",
        "loongarch64",
        "loong64",
    ];
    KNOWN.contains(&arch)
}

/// A version serial, `YYYYMMDD_HH:MM` (a real date and time).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(String);

impl Serial {
    /// Parses the strict form `YYYYMMDD_HH:MM`.
    pub fn parse(s: &str) -> Result<Self, IndexError> {
        Self::datetime(s).map(|_| Self(s.to_owned())).ok_or_else(|| IndexError::Serial(s.to_owned()))
    }

    /// Also the spellings other servers use: `YYYYMMDDHHMM` (incus-simplestreams) and
    /// `YYYYMMDD`; the result is always `YYYYMMDD_HH:MM`.
    pub(crate) fn parse_lenient(s: &str) -> Result<Self, IndexError> {
        let all_digits = s.bytes().all(|b| b.is_ascii_digit());
        match s.len() {
            12 if all_digits => Self::parse(&format!("{}_{}:{}", &s[..8], &s[8..10], &s[10..])),
            8 if all_digits => Self::parse(&format!("{s}_00:00")),
            _ => Self::parse(s),
        }
        .map_err(|_| IndexError::Serial(s.to_owned()))
    }

    /// The serial of an image's `creation_date` (Unix seconds, UTC), to the minute.
    pub(crate) fn from_creation(seconds: i64) -> Result<Self, IndexError> {
        let t = DateTime::from_timestamp(seconds, 0).ok_or(IndexError::CreationDate(seconds))?;
        Self::parse(&t.format("%Y%m%d_%H:%M").to_string())
    }

    /// `YYYYMMDD_HHMM`.
    pub(crate) fn tag_form(&self) -> String {
        self.0.replace(':', "")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn datetime(s: &str) -> Option<NaiveDateTime> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 14 || b[8] != b'_' || b[11] != b':' || !digits(0..8) || !digits(9..11) || !digits(12..14) {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
        let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(4..6)?, num(6..8)?)?;
        date.and_hms_opt(num(9..11)?, num(12..14)?, 0)
    }

    /// The serial as an RFC 2822 date, what simplestreams puts in `updated`.
    pub fn rfc2822(&self) -> String {
        let t = Self::datetime(&self.0).expect("a Serial is always valid");
        t.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the clients show of a product besides its key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProductProps {
    /// The `os` field (display name), e.g. `Debian`. Defaults to the key's os.
    pub os: Option<String>,
    /// `release_title`. Defaults to the key's release.
    pub release_title: Option<String>,
    /// Aliases, each without commas; listed under the newest version.
    pub aliases: Vec<String>,
}

impl ProductProps {
    /// Checks the display fields: no control characters; aliases non-empty, without
    /// commas or spaces.
    pub fn validate(&self) -> Result<(), IndexError> {
        for (field, value) in [("os", &self.os), ("release_title", &self.release_title)] {
            if let Some(v) = value.as_deref().filter(|v| v.chars().any(char::is_control)) {
                return Err(IndexError::Text { field, value: v.to_owned() });
            }
        }
        for alias in &self.aliases {
            if alias.is_empty() || alias.chars().any(|c| c == ',' || c.is_whitespace() || c.is_control()) {
                return Err(IndexError::Alias(alias.clone()));
            }
        }
        Ok(())
    }

    /// The props the index shows for a version of `product` stored with these: the
    /// same, and when no aliases were given, `os/release/variant` (and `os/release` for
    /// the `default` variant), as docker-simplestreams-server names them.
    pub fn served(mut self, product: &ProductKey) -> Self {
        if self.aliases.is_empty() {
            self.aliases.push(format!("{}/{}/{}", product.os, product.release, product.variant));
            if product.variant == "default" {
                self.aliases.push(format!("{}/{}", product.os, product.release));
            }
        }
        self
    }
}

/// The rule on aliases across one index: within an architecture an alias names one
/// product (clients look `debian/12` up per architecture). `products` are the products
/// of the index with the aliases each claims; the first alias claimed a second time is
/// the error. The gateway refuses to publish such an index (it keeps serving the last
/// one it published), and the ImageStream controller says so instead of counting it.
pub fn check_aliases<'a>(products: impl IntoIterator<Item = (&'a ProductKey, &'a [String])>) -> Result<(), IndexError> {
    let mut claimed: HashMap<(&str, &str), &ProductKey> = HashMap::new();
    for (key, aliases) in products {
        for alias in aliases {
            if let Some(first) = claimed.insert((alias.as_str(), key.arch.as_str()), key) {
                return Err(IndexError::DuplicateAlias {
                    alias: alias.clone(),
                    first: first.to_string(),
                    second: key.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Which version a manifest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub product: ProductKey,
    pub serial: Serial,
    pub props: ProductProps,
    /// A tombstone the gateway leaves when a version is deleted through it.
    pub deleted: bool,
}

impl Identity {
    /// The identity a version manifest's annotations give: `Ok(None)` when the product
    /// or the serial annotation is missing (then [`Identity::with_metadata`] reads the
    /// rest from `metadata.yaml`); an error when one present is invalid.
    pub fn from_annotations(ann: &BTreeMap<String, String>) -> Result<Option<Self>, IndexError> {
        let get = |k: &str| annotation(ann, k);
        let (Some(product), Some(serial)) = (get(ANN_PRODUCT), get(ANN_SERIAL)) else {
            // A present one must still be valid.
            get(ANN_PRODUCT).map(ProductKey::parse).transpose()?;
            get(ANN_SERIAL).map(Serial::parse).transpose()?;
            return Ok(None);
        };
        Ok(Some(Self {
            product: ProductKey::parse(product)?,
            serial: Serial::parse(serial)?,
            props: annotated_props(ann),
            deleted: get(ANN_DELETED) == Some("true"),
        }))
    }

    /// The identity of an artifact a person pushed: what its annotations say, the rest
    /// from `metadata.yaml` (the product from its properties, the serial from its
    /// `creation_date`, display names from `properties.os` and `.release`).
    pub fn with_metadata(ann: &BTreeMap<String, String>, m: &ImageMetadata) -> Result<Self, IndexError> {
        let get = |k: &str| annotation(ann, k);
        let product = match get(ANN_PRODUCT) {
            Some(text) => ProductKey::parse(text)?,
            None => ProductKey::from_metadata(m)?,
        };
        let serial = match get(ANN_SERIAL) {
            Some(text) => Serial::parse(text)?,
            None => Serial::from_creation(m.creation_date)?,
        };
        let mut props = annotated_props(ann);
        props.os = props.os.or(m.property("os").map(String::from));
        props.release_title = props.release_title.or(m.property("release").map(String::from));
        Ok(Self { product, serial, props, deleted: get(ANN_DELETED) == Some("true") })
    }
}

/// An annotation, unless empty.
fn annotation<'a>(ann: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    ann.get(key).map(String::as_str).filter(|s| !s.is_empty())
}

fn annotated_props(ann: &BTreeMap<String, String>) -> ProductProps {
    ProductProps {
        os: annotation(ann, ANN_OS).map(String::from),
        release_title: annotation(ann, ANN_RELEASE_TITLE).map(String::from),
        aliases: annotation(ann, ANN_ALIASES)
            .map(|a| a.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn metadata(yaml: &str) -> ImageMetadata {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_product_key_is_four_lowercase_names_with_an_architecture_the_clients_know() {
        assert!(ProductKey::new("debian", "12.1", "arm64", "cloud-init").is_ok());
        assert!(ProductKey::new("Debian", "12", "amd64", "default").is_err());
        assert!(ProductKey::new("debian", "..", "amd64", "default").is_err());
        assert!(ProductKey::new("debian", "a:b", "amd64", "default").is_err());
        assert!(ProductKey::new("debian", "12", "sparc", "default").is_err());
        assert_eq!(
            ProductKey::parse("debian:bookworm:amd64:default").unwrap().to_string(),
            "debian:bookworm:amd64:default"
        );
        for bad in
            ["debian", "debian:bookworm:amd64", "debian:bookworm:amd64:default:x", "debian:bookworm:sparc:default"]
        {
            assert!(ProductKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serials_are_a_real_minute_written_yyyymmdd_hh_mm() {
        assert!(Serial::parse("20260101_00:00").is_ok());
        assert!(Serial::parse("20261231_23:59").is_ok());
        for bad in [
            "20260101",
            "2026-01-01",
            "20260230_00:00",
            "20260101_24:00",
            "20260101_00:60",
            "20260101-00:00",
            "20260101_0:000",
            "v1",
            "２0260101_00:00",
        ] {
            assert!(Serial::parse(bad).is_err(), "{bad}");
        }
        let s = Serial::parse("20260102_03:04").unwrap();
        assert_eq!(s.tag_form(), "20260102_0304");
        assert_eq!(s.rfc2822(), "Fri, 02 Jan 2026 03:04:00 +0000");
    }

    #[test]
    fn other_servers_serials_are_read_into_the_one_form() {
        let s = Serial::parse("20260102_03:04").unwrap();
        assert_eq!(Serial::parse_lenient("202601020304").unwrap(), s);
        assert_eq!(Serial::parse_lenient("20260102").unwrap().as_str(), "20260102_00:00");
        assert!(Serial::parse_lenient("2026010203041").is_err());
        assert!(Serial::parse_lenient("v1").is_err());
    }

    #[test]
    fn a_creation_date_is_a_serial_to_the_minute() {
        assert_eq!(Serial::from_creation(1_767_225_600).unwrap().as_str(), "20260101_00:00");
        assert_eq!(Serial::from_creation(1_767_225_659).unwrap().as_str(), "20260101_00:00", "seconds drop");
        assert!(Serial::from_creation(i64::MAX).is_err());
    }

    #[test]
    fn metadata_yaml_names_the_product_in_debian_spelling() {
        let m =
            metadata("architecture: x86_64\ncreation_date: 1767225600\nproperties: {os: Debian, release: bookworm}\n");
        assert_eq!(ProductKey::from_metadata(&m).unwrap().to_string(), "debian:bookworm:amd64:default");
        let m = metadata(
            "architecture: x86_64\nproperties: {os: alpine, release: '3.20', architecture: arm64, variant: Cloud}\n",
        );
        assert_eq!(ProductKey::from_metadata(&m).unwrap().to_string(), "alpine:3.20:arm64:cloud");
        assert!(ProductKey::from_metadata(&metadata("architecture: sparc\nproperties: {os: x, release: y}\n")).is_err());
        assert!(matches!(ProductKey::from_metadata(&ImageMetadata::default()), Err(IndexError::NoProperty("os"))));
        let no_release = metadata("architecture: x86_64\nproperties: {os: Debian}\n");
        assert!(matches!(ProductKey::from_metadata(&no_release), Err(IndexError::NoProperty("release"))));
        let spaced = metadata("architecture: 'sp arc'\nproperties: {os: x, release: y}\n");
        assert!(matches!(ProductKey::from_metadata(&spaced), Err(IndexError::Component { field: "arch", .. })));
    }

    #[test]
    fn annotations_give_the_identity_when_they_name_product_and_serial() {
        let a = ann(&[
            (ANN_PRODUCT, "debian:bookworm:amd64:default"),
            (ANN_SERIAL, "20260101_00:00"),
            (ANN_ALIASES, "d/12,,x"),
        ]);
        let id = Identity::from_annotations(&a).unwrap().unwrap();
        assert_eq!(
            (id.product.to_string(), id.serial.as_str(), id.deleted),
            ("debian:bookworm:amd64:default".into(), "20260101_00:00", false)
        );
        assert_eq!(id.props.aliases, ["d/12", "x"]);
        let gone = ann(&[
            (ANN_PRODUCT, "debian:bookworm:amd64:default"),
            (ANN_SERIAL, "20260101_00:00"),
            (ANN_DELETED, "true"),
        ]);
        assert!(Identity::from_annotations(&gone).unwrap().unwrap().deleted);
        assert_eq!(Identity::from_annotations(&ann(&[])).unwrap(), None);
        assert_eq!(Identity::from_annotations(&ann(&[(ANN_PRODUCT, "debian:bookworm:amd64:default")])).unwrap(), None);
    }

    #[test]
    fn an_annotation_that_is_present_must_be_valid() {
        // The operator counted these (any serial, any architecture); the gateway refused them.
        let bad_serial = ann(&[(ANN_PRODUCT, "debian:bookworm:amd64:default"), (ANN_SERIAL, "1")]);
        assert!(matches!(Identity::from_annotations(&bad_serial), Err(IndexError::Serial(_))));
        let bad_arch = ann(&[(ANN_PRODUCT, "debian:bookworm:sparc:default"), (ANN_SERIAL, "20260101_00:00")]);
        assert!(matches!(Identity::from_annotations(&bad_arch), Err(IndexError::Architecture(_))));
        assert!(matches!(Identity::from_annotations(&ann(&[(ANN_PRODUCT, "debian")])), Err(IndexError::Product(_))));
        assert!(Identity::from_annotations(&ann(&[(ANN_SERIAL, "soon")])).is_err());
    }

    #[test]
    fn metadata_yaml_fills_what_the_annotations_leave_out() {
        let m =
            metadata("architecture: x86_64\ncreation_date: 1767225600\nproperties: {os: Debian, release: bookworm}\n");
        let id = Identity::with_metadata(&ann(&[]), &m).unwrap();
        assert_eq!(
            (id.product.to_string(), id.serial.to_string()),
            ("debian:bookworm:amd64:default".into(), "20260101_00:00".into())
        );
        assert_eq!((id.props.os.as_deref(), id.props.release_title.as_deref()), (Some("Debian"), Some("bookworm")));
        // A serial annotation alone is honoured (the operator used to ignore it).
        let id = Identity::with_metadata(&ann(&[(ANN_SERIAL, "20270101_12:00")]), &m).unwrap();
        assert_eq!(id.serial.as_str(), "20270101_12:00");
        let id = Identity::with_metadata(&ann(&[(ANN_PRODUCT, "alpine:edge:arm64:default")]), &m).unwrap();
        assert_eq!(
            (id.product.to_string(), id.serial.as_str()),
            ("alpine:edge:arm64:default".into(), "20260101_00:00")
        );
    }

    #[test]
    fn a_product_without_aliases_is_served_under_its_key() {
        let served = |key: &str, aliases: &[&str]| {
            let props = ProductProps { aliases: aliases.iter().map(|s| s.to_string()).collect(), ..Default::default() };
            props.served(&ProductKey::parse(key).unwrap()).aliases
        };
        assert_eq!(served("debian:12:amd64:default", &[]), ["debian/12/default", "debian/12"]);
        assert_eq!(served("debian:12:amd64:cloud", &[]), ["debian/12/cloud"]);
        assert_eq!(served("debian:12:amd64:default", &["stable"]), ["stable"]);
    }

    #[test]
    fn an_alias_names_one_product_per_architecture() {
        let key = |k: &str| ProductKey::parse(k).unwrap();
        let (amd64, arm64, alpine) =
            (key("debian:12:amd64:default"), key("debian:12:arm64:default"), key("alpine:3.20:amd64:default"));
        let aliases = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (debian, edge, both) = (aliases(&["debian/12"]), aliases(&["edge"]), aliases(&["edge", "debian/12"]));
        // One alias on two architectures: one product each.
        assert_eq!(check_aliases([(&amd64, &debian[..]), (&arm64, &debian[..])]), Ok(()));
        assert_eq!(check_aliases([(&amd64, &debian[..]), (&alpine, &edge[..])]), Ok(()));
        assert_eq!(
            check_aliases([(&alpine, &both[..]), (&amd64, &debian[..])]),
            Err(IndexError::DuplicateAlias {
                alias: "debian/12".into(),
                first: alpine.to_string(),
                second: amd64.to_string()
            })
        );
    }

    #[test]
    fn display_fields_hold_no_control_characters_and_aliases_no_commas() {
        let props = |os: &str, aliases: &[&str]| ProductProps {
            os: Some(os.into()),
            release_title: None,
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
        };
        assert!(props("Debian", &["debian/12"]).validate().is_ok());
        assert!(matches!(props("Deb\nian", &[]).validate(), Err(IndexError::Text { .. })));
        for bad in ["", "a,b", "a b", "a\u{7}"] {
            assert!(matches!(props("Debian", &[bad]).validate(), Err(IndexError::Alias(_))), "{bad:?}");
        }
    }
}
