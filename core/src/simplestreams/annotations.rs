//! The names an image version carries in a registry: the manifest's artifact type and
//! the annotations on the manifest and its layers. [`super::layout`] says where each
//! one goes; [`super::product`] reads a version's identity from them.

pub const ARTIFACT_TYPE: &str = "application/vnd.updraft.simplestreams.version.v1";
/// The file name of a layer (what `oras push` sets).
pub const ANN_TITLE: &str = "org.opencontainers.image.title";
pub const ANN_PRODUCT: &str = "dev.updraft.simplestreams.product";
pub const ANN_SERIAL: &str = "dev.updraft.simplestreams.serial";
pub const ANN_OS: &str = "dev.updraft.simplestreams.os";
pub const ANN_RELEASE_TITLE: &str = "dev.updraft.simplestreams.release-title";
pub const ANN_ALIASES: &str = "dev.updraft.simplestreams.aliases";
pub const ANN_DELETED: &str = "dev.updraft.simplestreams.deleted";
pub const ANN_COMBINED: &str = "dev.updraft.simplestreams.combined-sha256";
