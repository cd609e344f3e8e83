//! The store's keys, checked with the gateway's write authorization
//! ([`crate::http::auth`]: filuxe's `key` header or `Authorization: Bearer`, constant
//! time). Key files (mounted Secrets) are re-read when their stamp changes
//! ([`crate::watch::Stamp`]), checked on each request that needs the key.

use std::path::PathBuf;
use std::sync::Mutex;

use axum::http::HeaderMap;

use super::error::StoreError;
use crate::http::auth::{authorize, Secret};
use crate::http::Error as HttpError;
use crate::watch::Stamp;
use updraft_core::config::StoreConfig;

/// A key, inline or read from a file.
enum Source {
    Inline(Secret),
    File { path: PathBuf, cached: Mutex<Option<(Stamp, Secret)>> },
}

impl Source {
    fn file(path: PathBuf) -> Self {
        Source::File { path, cached: Mutex::new(None) }
    }

    /// The current key; an empty one (nobody gets in) when a key file cannot be read.
    fn current(&self) -> Secret {
        match self {
            Source::Inline(secret) => secret.clone(),
            Source::File { path, cached } => {
                let Some(stamp) = Stamp::of(path) else {
                    tracing::warn!(path = %path.display(), "cannot read the key file: nobody is let in");
                    return Secret::new("");
                };
                let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((_, secret)) = cached.as_ref().filter(|(seen, _)| *seen == stamp) {
                    return secret.clone();
                }
                let secret = match Secret::from_file(path) {
                    Ok(secret) => secret,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot read the key file");
                        return Secret::new("");
                    }
                };
                *cached = Some((stamp, secret.clone()));
                secret
            }
        }
    }
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
            (Some(key), _) => Source::Inline(Secret::new(key.trim())),
            (None, Some(path)) => Source::file(path.clone()),
            // validate() refuses this; an empty key keeps writes closed.
            (None, None) => Source::Inline(Secret::new("")),
        };
        Self { write, read: config.read_key_file.clone().map(Source::file), public_reads: config.public_reads }
    }

    /// The write key as it is now (what the write guard of the write routes compares
    /// with).
    pub fn write_secret(&self) -> Secret {
        self.write.current()
    }

    /// Whether the request may read: always for a store with public reads; else 401
    /// without a key, 403 with one that is neither the read key nor the write key.
    pub fn check_read(&self, headers: &HeaderMap) -> Result<(), StoreError> {
        if self.public_reads {
            return Ok(());
        }
        let write = authorize(headers, &self.write.current());
        let result = match &self.read {
            Some(read) if write.is_err() => authorize(headers, &read.current()),
            _ => write,
        };
        result.map_err(|e| match e {
            HttpError::Unauthorized => StoreError::Unauthorized,
            _ => StoreError::Forbidden,
        })
    }
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
            allow_plain_writes: false,
        }
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    fn write(keys: &Keys, headers: &HeaderMap) -> Result<(), HttpError> {
        authorize(headers, &keys.write_secret())
    }

    #[test]
    fn reads_are_public_unless_the_store_says_otherwise() {
        let keys = Keys::new(&config(true));
        assert!(keys.check_read(&HeaderMap::new()).is_ok());
        assert!(matches!(write(&keys, &HeaderMap::new()), Err(HttpError::Unauthorized)));
        assert!(matches!(write(&keys, &with("key", "sekreT")), Err(HttpError::Forbidden(_))));
        assert!(write(&keys, &with("key", "sekret")).is_ok());
        assert!(write(&keys, &with("authorization", "Bearer sekret")).is_ok());
        let private = Keys::new(&config(false));
        assert!(matches!(private.check_read(&HeaderMap::new()), Err(StoreError::Unauthorized)));
        assert!(matches!(private.check_read(&with("key", "nope")), Err(StoreError::Forbidden)));
        assert!(private.check_read(&with("key", "sekret")).is_ok());
    }

    #[test]
    fn key_files_are_reread_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let (write_key, read_key) = (dir.path().join("key"), dir.path().join("read"));
        std::fs::write(&write_key, "one\n").unwrap();
        std::fs::write(&read_key, "reader\n").unwrap();
        let mut c = config(false);
        c.write_key = None;
        c.write_key_file = Some(write_key.clone());
        c.read_key_file = Some(read_key);
        let keys = Keys::new(&c);
        assert!(write(&keys, &with("key", "one")).is_ok());
        assert!(keys.check_read(&with("key", "reader")).is_ok());
        assert!(keys.check_read(&with("key", "one")).is_ok());
        assert!(write(&keys, &with("key", "reader")).is_err());
        std::fs::write(&write_key, "second\n").unwrap();
        assert!(write(&keys, &with("key", "one")).is_err());
        assert!(write(&keys, &with("key", "second")).is_ok());
        std::fs::remove_file(&write_key).unwrap();
        assert!(write(&keys, &with("key", "second")).is_err());
    }
}
