//! A filuxe-compatible artifact store as one side of a mirror: its URLs, its key, and
//! its recursive `filelist` (metadata only). The worker's copies build on the same
//! requests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Deserialize;

use super::error::MirrorError;
use super::rules::Artifact;
use crate::config::HttpStoreConfig;

/// Characters escaped in a path segment (beyond controls): what would end or
/// restructure the URL path.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// Where a store's key comes from.
#[derive(Clone, Debug)]
pub enum Key {
    None,
    /// A file read at every request (a mounted Secret: a rotated key is used at once).
    File(PathBuf),
    /// The key itself (the operator reads it from the Secret).
    Value(String),
}

/// One store, under an optional directory.
pub struct Store {
    base: String,
    prefix: String,
    key: Key,
    client: reqwest::Client,
    side: &'static str,
}

#[derive(Deserialize)]
struct Listing {
    filelist: BTreeMap<String, BTreeMap<String, Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    size: u64,
    #[serde(default)]
    time: f64,
    #[serde(default)]
    sha256: Option<String>,
}

impl Store {
    /// The store `config` names, as `side` (`source` or `destination`, for messages),
    /// its key from `key`.
    pub fn new(config: &HttpStoreConfig, key: Key, side: &'static str, client: reqwest::Client) -> Self {
        Self {
            base: config.url.trim_end_matches('/').to_owned(),
            prefix: config.path.as_deref().unwrap_or("").trim_matches('/').to_owned(),
            key,
            client,
            side,
        }
    }

    /// `source` or `destination`.
    pub fn side(&self) -> &'static str {
        self.side
    }

    fn key(&self) -> Result<Option<String>, MirrorError> {
        match &self.key {
            Key::None => Ok(None),
            Key::Value(key) => crate::secret::key_str(key)
                .map(|k| Some(k.to_owned()))
                .ok_or_else(|| MirrorError::Config(format!("{} key is empty", self.side))),
            Key::File(path) => {
                let key = std::fs::read_to_string(path)
                    .map_err(|e| MirrorError::Config(format!("{} key file {}: {e}", self.side, path.display())))?;
                crate::secret::key_str(&key).map(|k| Some(k.to_owned())).ok_or_else(|| {
                    MirrorError::Config(format!(
                        "{} key file {} is empty or only whitespace",
                        self.side,
                        path.display()
                    ))
                })
            }
        }
    }

    /// A request to `url` carrying the store's key (filuxe's `key` header), if any.
    pub fn request(&self, method: reqwest::Method, url: String) -> Result<reqwest::RequestBuilder, MirrorError> {
        let builder = self.client.request(method, url);
        Ok(match self.key()? {
            Some(key) => builder.header("key", key),
            None => builder,
        })
    }

    /// `{base}/{op}/{prefix}/{name}`, each segment escaped.
    pub fn url(&self, op: &str, name: &str) -> String {
        let full = if self.prefix.is_empty() { name.to_owned() } else { format!("{}/{name}", self.prefix) };
        let escaped: Vec<String> = full.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect();
        format!("{}/{op}/{}", self.base, escaped.join("/"))
    }

    /// The error of a request that did not reach the store.
    pub fn unreachable(&self) -> impl Fn(reqwest::Error) -> MirrorError {
        MirrorError::http(self.side)
    }

    /// The error of an unexpected answer (`status`, `headers`) to `what`: throttled when
    /// it is a 429 or 503 naming a `Retry-After`, else a server error counts as
    /// unreachable (transient) and anything else as refused.
    pub fn refused(
        &self,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        what: String,
    ) -> MirrorError {
        let asks_to_wait = matches!(status.as_u16(), 429 | 503);
        if let Some(retry_after) =
            crate::oci::retry_after(headers, std::time::SystemTime::now()).filter(|_| asks_to_wait)
        {
            return MirrorError::Throttled { side: self.side, status: status.as_u16(), what, retry_after };
        }
        if status.is_server_error() {
            MirrorError::Unreachable { side: self.side, message: format!("{status} to {what}") }
        } else {
            MirrorError::Refused { side: self.side, status: status.as_u16(), what }
        }
    }

    /// Every file under the prefix, named relative to it, sorted. A prefix that does
    /// not exist yet lists as empty.
    pub async fn list(&self) -> Result<Vec<Artifact>, MirrorError> {
        let url = format!("{}?recursive=true", self.url("filelist", ""));
        let response = self.request(reqwest::Method::GET, url)?.send().await.map_err(self.unreachable())?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !response.status().is_success() {
            return Err(self.refused(response.status(), response.headers(), "the file list".into()));
        }
        let listing: Listing = response.json().await.map_err(self.unreachable())?;
        let mut found = Vec::new();
        for (dir, files) in listing.filelist {
            let dir = if dir == "." { String::new() } else { dir };
            for (file, entry) in files {
                let path = if dir.is_empty() { file } else { format!("{dir}/{file}") };
                let name = if self.prefix.is_empty() {
                    path
                } else {
                    match path.strip_prefix(&format!("{}/", self.prefix)) {
                        Some(rest) => rest.to_owned(),
                        None => continue,
                    }
                };
                found.push(Artifact { name, size: entry.size, time: entry.time, digest: entry.sha256 });
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }
}
