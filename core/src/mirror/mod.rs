//! Mirrors: what the forwarding worker (`ota-gateway --mirror`) and the operator's
//! ArtifactMirror controller must agree on, so that the status the operator reports is
//! the plan the worker carries out.
//!
//! - [`rules`]: globs, the version filter (semver range or filuxe's version and group
//!   regexes), retention, and [`rules::Rules::plan`], the one comparison of both sides;
//! - [`store`] and [`registry`]: the metadata-only listing of each kind of side (a
//!   filuxe-compatible store's `filelist`; a repository's tags and manifests), and the
//!   requests the worker builds its copies on;
//! - [`Side`]: either kind, listed the same way by both;
//! - [`error`]: why a listing (or, in the worker, a copy) failed.
//!
//! Copying stays in the worker: the operator only observes.

pub mod error;
pub mod redirect;
pub mod registry;
pub mod rules;
pub mod store;

use error::MirrorError;
use rules::Artifact;

/// One side of a mirror, ready to be listed.
pub enum Side {
    Store(store::Store),
    Registry(registry::Repository),
}

impl Side {
    /// `store` or `oci`.
    pub fn kind(&self) -> &'static str {
        match self {
            Side::Store(_) => "store",
            Side::Registry(_) => "oci",
        }
    }

    /// The side's artifacts: the files of a store; the tags of a repository, or, in
    /// files mode ([`files_mode`]), the titled layers of its tags.
    pub async fn list(&self, files: bool) -> Result<Vec<Artifact>, MirrorError> {
        match self {
            Side::Store(s) => s.list().await,
            Side::Registry(r) if files => r.list_files().await,
            Side::Registry(r) => r.list().await,
        }
    }
}

/// Whether a mirror compares files rather than tags: its sides differ in kind (a
/// repository is then seen as the files its artifacts hold).
pub fn files_mode(source: &Side, destination: &Side) -> bool {
    source.kind() != destination.kind()
}

/// A side that could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ObserveError {
    /// `source` or `destination`.
    pub side: &'static str,
    #[source]
    pub error: MirrorError,
}

/// Lists `source`, then `destination` (metadata only), and plans under `rules` at
/// `now`: what the worker's next pass would do.
pub async fn observe(
    source: &Side,
    destination: &Side,
    rules: &rules::Rules,
    now: f64,
) -> Result<rules::Plan, ObserveError> {
    let files = files_mode(source, destination);
    let from = source.list(files).await.map_err(|error| ObserveError { side: "source", error })?;
    let to = destination.list(files).await.map_err(|error| ObserveError { side: "destination", error })?;
    Ok(rules.plan(&from, &to, now))
}
