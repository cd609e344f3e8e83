//! The store's keys: filuxe's `key` header or `Authorization: Bearer`, compared in
//! constant time. Key files (mounted Secrets) are re-read when they change.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

use super::error::StoreError;
use updraft_core::config::StoreConfig;

/// A key, inline or read from a file.
enum Source {
    Inline(String),
    File { path: PathBuf, cached: Mutex<Option<(SystemTime, u64, String)>> },
}

impl Source {
    fn file(path: PathBuf) -> Self {
        Source::File { path, cached: Mutex::new(None) }
    }

    /// The current key; `None` when a key file cannot be read (nobody gets in).
    fn current(&self) -> Option<String> {
        match self {
            Source::Inline(key) => Some(key.clone()),
            Source::File { path, cached } => {
                let meta = std::fs::metadata(path).ok()?;
                let stamp = (meta.modified().ok()?, meta.len());
                let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((modified, len, key)) = cached.as_ref() {
                    if (*modified, *len) == stamp {
                        return Some(key.clone());
                    }
                }
                let key = std::fs::read_to_string(path).ok()?.trim().to_owned();
                if key.is_empty() {
                    tracing::warn!(path = %path.display(), "the key file is empty: nobody is let in");
                    return None;
                }
                *cached = Some((stamp.0, stamp.1, key.clone()));
                Some(key)
            }
        }
    }
}

/// What a request wants to do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The keys of one store.
pub struct Keys {
    write: Source,
    read: Option<Source>,
    public_reads: bool,
}

impl Keys {
    pub fn new(config: &StoreConfig) -> Self {
        let write = match (&config.write_key, &config.write_key_file) {
            (Some(key), _) => Source::Inline(key.trim().to_owned()),
            (None, Some(path)) => Source::file(path.clone()),
            // validate() refuses this; an unusable key keeps writes closed.
            (None, None) => Source::Inline(String::new()),
        };
        Self { write, read: config.read_key_file.clone().map(Source::file), public_reads: config.public_reads }
    }

    /// Whether the request's key allows `access`.
    pub fn check(&self, headers: &HeaderMap, access: Access) -> Result<(), StoreError> {
        if access == Access::Read && self.public_reads {
            return Ok(());
        }
        let Some(given) = presented(headers) else { return Err(StoreError::Unauthorized) };
        let matches = |source: &Source| source.current().is_some_and(|key| !key.is_empty() && same(&key, given));
        let ok = matches(&self.write) || (access == Access::Read && self.read.as_ref().is_some_and(matches));
        if ok {
            Ok(())
        } else {
            Err(StoreError::Forbidden)
        }
    }
}

/// The key a request presents: filuxe's `key` header, else `Authorization: Bearer`.
/// An empty `key` (what filuxe sends when it has none) counts as none.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let key = headers.get("key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty());
    key.or_else(|| {
        let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = auth.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
    })
}

/// Constant-time equality: both sides are hashed first, so neither the position of
/// the first difference nor the key's length shows in the time taken.
fn same(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn config(public_reads: bool) -> StoreConfig {
        StoreConfig {
            name: "s".into(),
            listen: "127.0.0.1:0".into(),
            dir: "/tmp".into(),
            write_key: Some("sekret".into()),
            write_key_file: None,
            public_reads,
            read_key_file: None,
            max_upload_bytes: 1,
        }
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn keys_are_checked_by_header_or_bearer() {
        let keys = Keys::new(&config(true));
        assert!(keys.check(&HeaderMap::new(), Access::Read).is_ok());
        assert!(matches!(keys.check(&HeaderMap::new(), Access::Write), Err(StoreError::Unauthorized)));
        assert!(matches!(keys.check(&with("key", ""), Access::Write), Err(StoreError::Unauthorized)));
        assert!(matches!(keys.check(&with("key", "sekreT"), Access::Write), Err(StoreError::Forbidden)));
        assert!(matches!(keys.check(&with("key", "sekret2"), Access::Write), Err(StoreError::Forbidden)));
        assert!(keys.check(&with("key", "sekret"), Access::Write).is_ok());
        assert!(keys.check(&with("authorization", "Bearer sekret"), Access::Write).is_ok());
        assert!(keys.check(&with("authorization", "Basic sekret"), Access::Write).is_err());
        let private = Keys::new(&config(false));
        assert!(matches!(private.check(&HeaderMap::new(), Access::Read), Err(StoreError::Unauthorized)));
        assert!(private.check(&with("key", "sekret"), Access::Read).is_ok());
    }

    #[test]
    fn key_files_are_reread_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "one\n").unwrap();
        let mut c = config(false);
        c.write_key = None;
        c.write_key_file = Some(path.clone());
        let keys = Keys::new(&c);
        assert!(keys.check(&with("key", "one"), Access::Write).is_ok());
        std::fs::write(&path, "second\n").unwrap();
        assert!(keys.check(&with("key", "one"), Access::Write).is_err());
        assert!(keys.check(&with("key", "second"), Access::Write).is_ok());
        std::fs::remove_file(&path).unwrap();
        assert!(keys.check(&with("key", "second"), Access::Write).is_err());
    }
}
