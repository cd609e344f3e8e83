//! A filuxe-compatible artifact store as one side of a mirror: listing, streaming
//! copies in chunks (a ranged download piped into a chunked upload, so memory stays
//! flat in the file's size), deletion.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::header;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use updraft_core::config::HttpStoreConfig;

use super::error::MirrorError;
use super::rules::Artifact;

/// Bytes per upload request: one ranged download and one chunked upload each.
pub const CHUNK: u64 = 8 << 20;

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

/// One store.
pub struct HttpSide {
    base: String,
    prefix: String,
    key_file: Option<PathBuf>,
    client: reqwest::Client,
    side: &'static str,
}

#[derive(Deserialize)]
struct Listing {
    filelist: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    size: u64,
    #[serde(default)]
    time: f64,
    #[serde(default)]
    sha256: Option<String>,
}

impl HttpSide {
    pub fn new(config: &HttpStoreConfig, side: &'static str, client: reqwest::Client) -> Self {
        Self {
            base: config.url.trim_end_matches('/').to_owned(),
            prefix: config.path.as_deref().unwrap_or("").trim_matches('/').to_owned(),
            key_file: config.key_file.clone(),
            client,
            side,
        }
    }

    fn key(&self) -> Result<Option<String>, MirrorError> {
        let Some(path) = &self.key_file else { return Ok(None) };
        let key = std::fs::read_to_string(path)
            .map_err(|e| MirrorError::Config(format!("{} key file {}: {e}", self.side, path.display())))?;
        Ok(Some(key.trim().to_owned()))
    }

    fn request(&self, method: reqwest::Method, url: String) -> Result<reqwest::RequestBuilder, MirrorError> {
        let builder = self.client.request(method, url);
        Ok(match self.key()? {
            Some(key) => builder.header("key", key),
            None => builder,
        })
    }

    /// `{base}/{op}/{prefix}/{name}`, each segment escaped.
    fn url(&self, op: &str, name: &str) -> String {
        let full = if self.prefix.is_empty() { name.to_owned() } else { format!("{}/{name}", self.prefix) };
        let escaped: Vec<String> = full.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect();
        format!("{}/{op}/{}", self.base, escaped.join("/"))
    }

    fn unreachable(&self) -> impl Fn(reqwest::Error) -> MirrorError {
        MirrorError::http(self.side)
    }

    fn refused(&self, status: reqwest::StatusCode, what: String) -> MirrorError {
        if status.is_server_error() {
            MirrorError::Unreachable { side: self.side, message: format!("{status} to {what}") }
        } else {
            MirrorError::Refused { side: self.side, status: status.as_u16(), what }
        }
    }

    /// Every file under the prefix, named relative to it. A prefix that does not
    /// exist yet lists as empty.
    pub async fn list(&self) -> Result<Vec<Artifact>, MirrorError> {
        let url = format!("{}?recursive=true", self.url("filelist", ""));
        let response = self.request(reqwest::Method::GET, url)?.send().await.map_err(self.unreachable())?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !response.status().is_success() {
            return Err(self.refused(response.status(), "the file list".into()));
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

    /// The SHA-256 a store announces for `name` in its ETag (an Updraft store does;
    /// a filuxe server does not).
    pub async fn etag(&self, name: &str) -> Result<Option<String>, MirrorError> {
        let response = self
            .request(reqwest::Method::HEAD, self.url("download", name))?
            .send()
            .await
            .map_err(self.unreachable())?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let etag = response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(|v| v.trim_matches('"'));
        Ok(etag.filter(|e| updraft_core::config::is_sha256_hex(e)).map(str::to_owned))
    }

    /// The body of `name` as a stream (OCI pushes read it).
    pub async fn download_stream(
        &self,
        name: &str,
    ) -> Result<impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static, MirrorError> {
        let response =
            self.request(reqwest::Method::GET, self.url("download", name))?.send().await.map_err(self.unreachable())?;
        if !response.status().is_success() {
            return Err(self.refused(response.status(), format!("downloading {name}")));
        }
        Ok(response.bytes_stream())
    }

    /// Uploads `body` (`size` bytes, SHA-256 `sha256`) as `name` in one request,
    /// replacing what is there; the store checks the checksum before the file appears.
    pub async fn upload_whole(
        &self,
        name: &str,
        body: reqwest::Body,
        size: u64,
        sha256: &str,
    ) -> Result<(), MirrorError> {
        let response = self
            .request(reqwest::Method::POST, self.url("upload", name))?
            .query(&[("force", "true"), ("sha256", sha256)])
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(self.unreachable())?;
        if response.status() != reqwest::StatusCode::CREATED {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(self.refused(status, format!("uploading {name}: {}", text.trim())));
        }
        Ok(())
    }

    /// Deletes `name` (absent already counts as deleted).
    pub async fn delete(&self, name: &str) -> Result<(), MirrorError> {
        let response =
            self.request(reqwest::Method::GET, self.url("delete", name))?.send().await.map_err(self.unreachable())?;
        match response.status().as_u16() {
            200 | 204 | 404 => Ok(()),
            _ => Err(self.refused(response.status(), format!("deleting {name}"))),
        }
    }
}

/// Copies `artifact` from `src` to `dst` in [`CHUNK`]s, each a ranged download
/// streamed into a chunked upload, and checks the SHA-256 end to end. Returns the
/// bytes sent.
pub async fn copy(src: &HttpSide, dst: &HttpSide, artifact: &Artifact) -> Result<u64, MirrorError> {
    let name = &artifact.name;
    let announced = match &artifact.digest {
        Some(sum) => Some(sum.clone()),
        None => src.etag(name).await?,
    };
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let size = artifact.size;
    let mut from = 0u64;
    let mut sent = 0u64;
    loop {
        let to = (from + CHUNK).min(size).saturating_sub(1);
        let mut download = src.request(reqwest::Method::GET, src.url("download", name))?;
        if size > 0 {
            download = download.header(header::RANGE, format!("bytes={from}-{to}"));
        }
        if let Some(sum) = &announced {
            download = download.header(header::IF_RANGE, format!("\"{sum}\""));
        }
        let response = download.send().await.map_err(src.unreachable())?;
        let whole = response.status() == reqwest::StatusCode::OK && from == 0 && to + 1 >= size;
        match response.status().as_u16() {
            206 => {}
            200 if whole => {}
            200 | 404 | 416 => return Err(MirrorError::Changed(name.clone())),
            _ => return Err(src.refused(response.status(), format!("downloading {name}"))),
        }
        if response.content_length().is_some_and(|len| len != to + 1 - from) && size > 0 {
            return Err(MirrorError::Changed(name.clone()));
        }
        let feed = hasher.clone();
        let body = response.bytes_stream().map(move |piece| {
            if let Ok(bytes) = &piece {
                feed.lock().unwrap_or_else(|e| e.into_inner()).update(bytes);
            }
            piece
        });
        let mut query = vec![("time", format!("{}", artifact.time)), ("force", "true".to_owned())];
        if let Some(sum) = &announced {
            query.push(("sha256", sum.clone()));
        }
        let mut upload = dst
            .request(reqwest::Method::POST, dst.url("upload", name))?
            .query(&query)
            .header(header::CONTENT_TYPE, "application/octet-stream");
        if size > 0 {
            upload = upload
                .header(header::CONTENT_RANGE, format!("bytes {from}-{to}/{size}"))
                .header(header::CONTENT_LENGTH, to + 1 - from);
        }
        let response = upload.body(reqwest::Body::wrap_stream(body)).send().await.map_err(dst.unreachable())?;
        if response.status() != reqwest::StatusCode::CREATED {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(dst.refused(status, format!("uploading {name} bytes {from}-{to}: {}", text.trim())));
        }
        sent += if size > 0 { to + 1 - from } else { 0 };
        from = to + 1;
        if from >= size {
            break;
        }
    }
    let computed = hex::encode(hasher.lock().unwrap_or_else(|e| e.into_inner()).clone().finalize());
    if let Some(sum) = &announced {
        if *sum != computed {
            return Err(MirrorError::Verify(format!("{name}: the source sent sha256 {computed}, it announced {sum}")));
        }
    } else if let Some(at_dst) = dst.etag(name).await? {
        if at_dst != computed {
            return Err(MirrorError::Verify(format!("{name}: the destination holds sha256 {at_dst}, sent {computed}")));
        }
    }
    Ok(sent)
}
