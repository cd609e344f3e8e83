//! Mirrors: forwarders from a source to a destination (an OCI repository or a
//! filuxe-compatible store), with the name filters, version filter and retention that
//! [`crate::mirror`] compiles into a plan. Run by the gateway's single `--mirror` worker.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{is_false, ConfigError, GatewayConfig, SourceConfig};

/// One forwarder: what to copy from `source` to `destination`, under which rules.
/// Run by the gateway's single `--mirror` worker, never by serving replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorConfig {
    /// Unique name (the ArtifactMirror's `namespace/name` when rendered by the operator).
    pub name: String,
    pub source: MirrorEndpoint,
    pub destination: MirrorEndpoint,
    /// Glob patterns (`*`, `?`, `**`) of names to forward: file paths in a store, tags
    /// in a repository. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Glob patterns of names never to forward; wins over `include`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// How versions (and products) are read from names, and which versions to forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionFilter>,
    /// What to keep at the destination. Deletions happen only at the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
    /// Time between passes, e.g. `30s`, `10m`. Default `10m`.
    #[serde(default = "default_mirror_interval")]
    pub interval: String,
    /// Nothing is compared, copied or deleted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// Passes compute and report what they would copy and delete, and change nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

impl MirrorConfig {
    /// `interval` when left out.
    pub const DEFAULT_INTERVAL: &str = "10m";
}

fn default_mirror_interval() -> String {
    MirrorConfig::DEFAULT_INTERVAL.into()
}

/// One side of a mirror: exactly one of `oci` and `http`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorEndpoint {
    /// An OCI repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<SourceConfig>,
    /// A filuxe-compatible artifact store (another gateway's store, a filuxe server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStoreConfig>,
}

/// A filuxe-compatible HTTP artifact store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpStoreConfig {
    /// Base URL, e.g. `http://lan-gateway:8081` (a path prefix is allowed).
    pub url: String,
    /// Optional directory inside the store to mirror, e.g. `releases`. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// File holding the store's key (sent as filuxe's `key` header): the write key
    /// at a destination, the read key at a source whose reads are not public. Sent to
    /// an `https://` URL only, unless `allowPlainHttp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Send the key to a plain `http://` URL too (a store on loopback, or reached over a
    /// network you trust). Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plain_http: bool,
}

impl HttpStoreConfig {
    /// Why a key would go in the clear: see [`plain_http_key`].
    pub(crate) fn check_key_transport(&self) -> Result<(), PlainHttpKeyError> {
        plain_http_key(&self.url, self.key_file.is_some(), self.allow_plain_http)
    }
}

/// The rule for every store key a mirror sends (the worker's config, the operator's
/// ArtifactMirror check): a key goes to an `http://` URL only when plain HTTP is
/// explicitly allowed, so a mirror cannot be pointed at a URL that would read the key
/// off the wire. The error names the field to set.
pub fn plain_http_key(url: &str, has_key: bool, allow_plain_http: bool) -> Result<(), PlainHttpKeyError> {
    let plain = url.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    if has_key && plain && !allow_plain_http {
        return Err(PlainHttpKeyError { url: url.to_owned() });
    }
    Ok(())
}

/// A store key that would go to a plain `http://` URL ([`plain_http_key`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{url} is plain http://: the store key would be sent in the clear; use https://, or set allowPlainHttp: true")]
pub struct PlainHttpKeyError {
    pub url: String,
}

/// How a name yields a version and a group (product), in filuxe's terms, and which
/// versions are forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionFilter {
    /// Regex whose first capture group is the version (filuxe's `version`), e.g.
    /// `:(\d+\.\d+\.\d+):`. Default: the first `MAJOR.MINOR.PATCH[-pre]` in the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Regexes tried in order; the captures of the first that matches, joined by `:`,
    /// name the group (filuxe's `group`). Names no regex matches form the group
    /// `ungrouped`. Default: the name with its version cut out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Semver range the version must satisfy, e.g. `>=1.2, <2`. Default: any. Names
    /// without a version are not forwarded when a range is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Whether pre-releases satisfy the range.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prerelease: bool,
}

impl VersionFilter {
    /// Checks the filter the way the mirror rules compile it: the regexes compile, the
    /// version regex captures the version, the range parses.
    pub fn check(&self) -> Result<(), FilterError> {
        let fail = |field: String, message: String| Err(FilterError { field, message });
        if let Some(re) = &self.regex {
            match regex::Regex::new(re) {
                Err(e) => return fail("version.regex".into(), format!("{re:?}: {e}")),
                Ok(r) if r.captures_len() < 2 => {
                    return fail("version.regex".into(), format!("{re:?} needs a capture group (the version)"))
                }
                Ok(_) => {}
            }
        }
        for (i, re) in self.groups.iter().enumerate() {
            if let Err(e) = regex::Regex::new(re) {
                return fail(format!("version.groups[{i}]"), format!("{re:?}: {e}"));
            }
        }
        if let Some(range) = &self.range {
            if let Err(e) = crate::version::parse_range(range) {
                return fail("version.range".into(), e.to_string());
            }
        }
        Ok(())
    }
}

/// A version filter that cannot work, naming its field (`version.regex`,
/// `version.groups[1]`, `version.range`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

/// Retention at the destination; an artifact is kept when either rule keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the newest N versions of each group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep artifacts younger than this (by file time), e.g. `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

impl MirrorEndpoint {
    /// `oci://registry/repository` or the store URL, for messages and metric labels.
    pub fn describe(&self) -> String {
        match (&self.oci, &self.http) {
            (Some(oci), _) => format!("oci://{}/{}", oci.registry, oci.repository),
            (None, Some(http)) => match &http.path {
                Some(path) => format!("{}/{}", http.url.trim_end_matches('/'), path.trim_matches('/')),
                None => http.url.clone(),
            },
            (None, None) => "(none)".into(),
        }
    }
}

impl GatewayConfig {
    /// Unique names, exactly one kind per side, keys never sent in the clear, globs
    /// matched as meant, filters and durations that parse.
    pub(super) fn validate_mirrors(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for m in &self.mirrors {
            let invalid = |what: String| Err(ConfigError::Invalid(format!("mirror {:?}: {what}", m.name)));
            if m.name.is_empty() || !names.insert(m.name.as_str()) {
                return Err(ConfigError::Invalid(format!("mirror name {:?} is empty or appears twice", m.name)));
            }
            for (side, e) in [("source", &m.source), ("destination", &m.destination)] {
                match (&e.oci, &e.http) {
                    (Some(_), None) => {}
                    (None, Some(http)) if http.url.starts_with("http://") || http.url.starts_with("https://") => {
                        http.check_key_transport()
                            .map_err(|e| ConfigError::Invalid(format!("mirror {:?}: {side}.http: {e}", m.name)))?;
                    }
                    (None, Some(http)) => return invalid(format!("{side}.http.url {:?} is not http(s)://", http.url)),
                    _ => return invalid(format!("{side} needs exactly one of oci and http")),
                }
            }
            if m.source == m.destination {
                return invalid("source and destination are the same".into());
            }
            for (list, globs) in [("include", &m.include), ("exclude", &m.exclude)] {
                for (i, glob) in globs.iter().enumerate() {
                    if let Err(e) = check_glob(glob) {
                        return invalid(format!("{list}[{i}] {e}"));
                    }
                }
            }
            crate::version::parse_duration(&m.interval)
                .map_err(|e| ConfigError::Invalid(format!("mirror {:?}: {e}", m.name)))?;
            if let Some(v) = &m.version {
                v.check().map_err(|e| ConfigError::Invalid(format!("mirror {:?}: {e}", m.name)))?;
            }
            if let Some(r) = &m.retention {
                if r.keep_last == Some(0) {
                    return invalid("retention.keepLast must be at least 1".into());
                }
                if let Some(age) = &r.max_age {
                    crate::version::parse_duration(age)
                        .map_err(|e| ConfigError::Invalid(format!("mirror {:?}: {e}", m.name)))?;
                }
            }
        }
        Ok(())
    }
}

/// A glob of `include`/`exclude` that would not match as meant.
#[derive(Debug, thiserror::Error)]
pub enum GlobError {
    #[error("is empty")]
    Empty,
    /// A class or brace character, which would be matched literally.
    #[error("{pattern:?}: {found:?} is not supported (globs have only *, ? and **)")]
    Syntax { pattern: String, found: char },
}

/// Checks a glob is matched as meant: `*`, `?` and `**` only. Classes and braces
/// would be matched literally, never as the user meant, so they are refused. The
/// gateway's config check and the operator's ArtifactMirror check both call this.
pub fn check_glob(pattern: &str) -> Result<(), GlobError> {
    if pattern.trim().is_empty() {
        return Err(GlobError::Empty);
    }
    if let Some(found) = pattern.chars().find(|c| matches!(c, '[' | ']' | '{' | '}')) {
        return Err(GlobError::Syntax { pattern: pattern.to_owned(), found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_other_than_star_question_mark_and_double_star_are_refused_by_name() {
        for pattern in ["*.zip", "first/*.zip", "**/unversioned_?.zip", "a+b(c)"] {
            check_glob(pattern).unwrap();
        }
        assert!(matches!(check_glob(" "), Err(GlobError::Empty)));
        for (pattern, bad) in [("app-[0-9].zip", '['), ("*.{zip,tar}", '{'), ("a]", ']')] {
            let refused = check_glob(pattern).unwrap_err();
            assert!(
                matches!(refused, GlobError::Syntax { pattern: ref p, found } if p == pattern && found == bad),
                "{pattern}: {refused:?}"
            );
        }
        let text = check_glob("app-[0-9].zip").unwrap_err().to_string();
        assert_eq!(text, "\"app-[0-9].zip\": '[' is not supported (globs have only *, ? and **)");
    }
}
