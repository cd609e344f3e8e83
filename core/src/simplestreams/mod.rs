//! What the gateway's simplestreams surface and the operator's ImageStream controller
//! must agree on: which product and version an image is, how a version is laid out as
//! files and OCI layers, and which versions of an upstream server a stream mirrors.
//! The gateway builds its index from these rules and the controller counts with them
//! (from metadata only), so the products and versions status reports are the ones the
//! index lists — as [`crate::mirror`] does for mirrors: one rule, two consumers.
//!
//! - [`product`]: product keys `os:release:arch:variant`, serials `YYYYMMDD_HH:MM`,
//!   and a version's identity from its annotations or its `metadata.yaml`;
//! - [`annotations`]: the artifact type and annotation names a version carries;
//! - [`layout`]: which layer is which file, the paths files are served under, and
//!   what makes an index entry valid;
//! - [`upstream`]: following another simplestreams server: the products document, the
//!   filters, the usable versions.
//!
//! Rendering the two JSON documents stays in the gateway: only it serves them.

pub mod annotations;
pub mod layout;
pub mod product;
pub mod upstream;

pub use layout::{FileRef, ImageVersion, RootKind, Rootfs, VersionFile};
pub use product::{check_aliases, Identity, ProductKey, ProductProps, Serial};

/// Why a product, a version or a whole index is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("version serial {0:?} is not YYYYMMDD_HH:MM")]
    Serial(String),
    #[error("creation_date {0} is out of range")]
    CreationDate(i64),
    #[error("annotation dev.updraft.simplestreams.product {0:?} is not os:release:arch:variant")]
    Product(String),
    #[error("metadata.yaml has no properties.{0}")]
    NoProperty(&'static str),
    #[error("{field} {value:?} must match [a-z0-9][a-z0-9.-]* (at most 32 characters)")]
    Component { field: &'static str, value: String },
    #[error("architecture {0:?} is not one LXD and Incus know")]
    Architecture(String),
    #[error("alias {0:?} must be non-empty and hold no comma, space or control character")]
    Alias(String),
    #[error("{what}: sha256 {value:?} is not 64 lowercase hex digits")]
    Sha256 { what: String, value: String },
    #[error("{0}: item path must be relative, without empty, '.' or '..' segments, '\\\\', '%', '?' or '#'")]
    Path(String),
    #[error("version {0} has no rootfs (squashfs, root.tar.xz or disk-kvm.img)")]
    NoRootfs(String),
    #[error("alias {alias:?} is claimed by products {first} and {second} of the same architecture")]
    DuplicateAlias { alias: String, first: String, second: String },
    #[error("text field {field} {value:?} holds a control character")]
    Text { field: &'static str, value: String },
}
