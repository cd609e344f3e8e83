//! Artifact stores: filuxe-compatible HTTP file stores, each at the root of its own
//! listener, with their keys and limits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{is_false, is_true, ConfigError, GatewayConfig};

/// An artifact store: a filuxe-compatible HTTP file store at the root of its own
/// listener (filuxe's client builds URLs from a host and a port only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    /// Unique name (metrics label, messages).
    pub name: String,
    /// Listener of this store, e.g. `0.0.0.0:8081`. Changes take effect on restart.
    pub listen: String,
    /// Directory holding the files (on the store volume), exactly the users' files. The
    /// store's own state (partial uploads, checksums) is kept beside it, in
    /// `.<name>.updraft` of its parent, which must be on the same filesystem: serve a
    /// subdirectory of a volume, not its mount point (there the state falls back to a
    /// hidden `.updraft/` inside, as in earlier versions).
    pub dir: PathBuf,
    /// The write key, inline (for hand-written configs). Set this or `writeKeyFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
    /// A file whose content (trimmed) is the write key, e.g. a mounted Secret; re-read
    /// when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key_file: Option<PathBuf>,
    /// Whether downloads and listings need no key. Default true. When false they need
    /// the read key (`readKeyFile`) or the write key.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub public_reads: bool,
    /// A file whose content (trimmed) is the read key, for `publicReads: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_key_file: Option<PathBuf>,
    /// Largest file an upload may create, in bytes. Default 16 GiB.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Accept writes (upload, delete) over plain HTTP. Default false: without it a
    /// write that did not arrive over TLS is refused with 403, so the write key is
    /// never sent in the clear.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plain_writes: bool,
}

impl StoreConfig {
    /// `maxUploadBytes` when left out: 16 GiB.
    pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 16 << 30;
}

fn default_true() -> bool {
    true
}
fn default_max_upload() -> u64 {
    StoreConfig::DEFAULT_MAX_UPLOAD_BYTES
}

impl GatewayConfig {
    /// Unique names, listeners no other listener uses, exactly one write key, a positive
    /// upload limit.
    pub(super) fn validate_stores(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut names = std::collections::HashSet::new();
        let mut listens: std::collections::HashSet<&str> =
            [self.listen.as_str(), self.admin_listen.as_str()].into_iter().collect();
        listens.extend(self.tls.as_ref().map(|t| t.listen.as_str()));
        for s in &self.stores {
            if s.name.is_empty() || !names.insert(s.name.as_str()) {
                return invalid(format!("store name {:?} is empty or appears twice", s.name));
            }
            if !listens.insert(s.listen.as_str()) {
                return invalid(format!("store {:?}: listen {} is used by another listener", s.name, s.listen));
            }
            match (&s.write_key, &s.write_key_file) {
                (Some(_), Some(_)) => {
                    return invalid(format!("store {:?}: set writeKey or writeKeyFile, not both", s.name))
                }
                (None, None) => return invalid(format!("store {:?}: needs writeKey or writeKeyFile", s.name)),
                (Some(k), None) if crate::secret::key_str(k).is_none() => {
                    return invalid(format!("store {:?}: writeKey is empty or only whitespace", s.name))
                }
                _ => {}
            }
            if s.max_upload_bytes == 0 {
                return invalid(format!("store {:?}: maxUploadBytes must be positive", s.name));
            }
        }
        Ok(())
    }
}
