//! The artifact store: an HTTP file store compatible with filuxe's web server, so its
//! CLI, its forwarder and the scripts around them work unchanged.
//!
//! Each configured store answers at the root of its own listener (filuxe's client
//! builds URLs from a host and a port only):
//!
//! ```text
//! POST /upload/<path>?time=<epoch>&force=<bool>[&sha256=<hex>]   201, 403 when it exists
//!      whole body, or chunks with Content-Range: bytes FROM-TO/SIZE
//! GET|HEAD /download/<path>     Range, ETag (the SHA-256), If-None-Match
//! GET /delete/<path>            200 or 404 (filuxe deletes with a GET; DELETE works too)
//! GET /filelist/<path>?recursive=<bool>   filuxe's JSON, plus each file's sha256 when known
//! GET /stats, GET /api/status
//! ```
//!
//! Writes need the store's write key; reads are public unless the store says
//! otherwise (`auth`). Writes must also arrive over TLS (the store's listener speaks
//! HTTPS when the gateway has a `tls` section), so the key never crosses the network
//! in the clear, unless the store sets `allowPlainWrites` ([`Writable`]). Keys, limits
//! and `allowPlainWrites` follow a config reload ([`Stores`]); the listener and the
//! directory are read at start. Files live
//! in the store's directory (the store volume, shared by the replicas), which holds
//! exactly the users' files: the store's own state (partial uploads, checksums) is
//! kept beside it on the same volume (`layout`). Uploads become visible only when
//! complete (`upload`); paths are
//! checked against traversal and symlink escapes (`path`). Files must only change
//! through the store, or be replaced by rename: downloads map them, as the cache does.

mod auth;
mod error;
mod files;
mod layout;
mod path;
mod sums;
mod time;
mod upload;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};

use crate::http::query::param;
use crate::http::unread::read_unread_body;
use crate::http::write;
use crate::server::Transport;
pub use error::StoreError;
use updraft_core::config::StoreConfig;

use auth::Keys;
use files::Mappings;
use path::StorePath;
use upload::{Chunk, Options, Stored, Uploads};

/// One store's live state; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Name and listener, read at start (another listener takes a restart).
    name: String,
    listen: String,
    /// The served directory (canonical) and the store's own state beside it, opened at
    /// start (another directory takes a restart).
    dirs: layout::Dirs,
    dir: std::path::PathBuf,
    /// What a config reload changes.
    settings: RwLock<Arc<Settings>>,
    uploads: Uploads,
    mappings: Mappings,
}

/// The settings of a store that a config reload applies at once: its keys, whether reads
/// are public, the upload limit, and whether plain writes are accepted.
struct Settings {
    keys: Keys,
    max_upload_bytes: u64,
    allow_plain_writes: bool,
}

impl Settings {
    fn new(config: &StoreConfig) -> Arc<Self> {
        Arc::new(Self {
            keys: Keys::new(config),
            max_upload_bytes: config.max_upload_bytes,
            allow_plain_writes: config.allow_plain_writes,
        })
    }
}

impl Store {
    /// Opens (creating) the store's directory and its state beside it, moving the
    /// state of an earlier version out of the served directory (`layout`).
    pub fn open(config: StoreConfig) -> std::io::Result<Self> {
        let dirs = layout::open(&config.dir)?;
        let uploads = Uploads::new(&dirs, config.max_upload_bytes);
        let removed = uploads.sweep(upload::ABANDONED);
        if removed > 0 {
            tracing::info!(store = config.name, removed, "removed abandoned uploads");
        }
        let settings = RwLock::new(Settings::new(&config));
        let StoreConfig { name, listen, dir, .. } = config;
        Ok(Self {
            inner: Arc::new(Inner { name, listen, dirs, dir, settings, uploads, mappings: Mappings::default() }),
        })
    }

    /// The store's name in the config.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The listener address it was opened with.
    pub fn listen(&self) -> &str {
        &self.inner.listen
    }

    fn settings(&self) -> Arc<Settings> {
        self.inner.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The second phase of a config reload ([`Stores`]): the next request obeys
    /// `settings`.
    fn install(&self, settings: Arc<Settings>) {
        self.inner.uploads.set_max_bytes(settings.max_upload_bytes);
        *self.inner.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    /// Removes abandoned uploads every hour while the store lives, and opens the
    /// layout again (files an earlier version's replica left at an earlier root during
    /// a rolling update move into the served directory, see `layout`).
    pub fn spawn_sweeper(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                let Some(inner) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = layout::open(&inner.dir) {
                        tracing::warn!(store = inner.name, error = %e, "cannot open the store's layout again");
                    }
                    inner.uploads.sweep(upload::ABANDONED)
                })
                .await;
            }
        });
    }
}

/// Every store of a gateway, opened at start; a config reload changes their
/// [`Settings`]. A store the new config adds, and a new listener or directory of one,
/// wait for a restart (`updraft_core::restart`); a store it removes keeps its last
/// settings until then.
#[derive(Clone, Default)]
pub(crate) struct Stores {
    open: Arc<Vec<Store>>,
}

/// The stores' new settings, ready to install.
pub(crate) struct Prepared(Vec<(Store, Arc<Settings>)>);

impl Stores {
    /// Opens every store of `configs`; the error names the store that did not open.
    pub(crate) fn open(configs: &[StoreConfig]) -> Result<Self, (String, std::io::Error)> {
        let open: Vec<Store> = configs
            .iter()
            .map(|c| Store::open(c.clone()).map_err(|e| (c.name.clone(), e)))
            .collect::<Result<_, _>>()?;
        Ok(Self { open: Arc::new(open) })
    }

    /// The open stores.
    pub(crate) fn all(&self) -> &[Store] {
        &self.open
    }

    /// The first phase of a config reload: the settings `config` gives each open store,
    /// by name (a new listener or directory waits for a restart; its keys and limits do
    /// not). Nothing can fail: key files are read when a request needs them.
    pub(crate) fn prepare(&self, config: &updraft_core::config::GatewayConfig) -> Prepared {
        Prepared(
            self.open
                .iter()
                .filter_map(|store| {
                    let config = config.stores.iter().find(|c| c.name == store.inner.name)?;
                    Some((store.clone(), Settings::new(config)))
                })
                .collect(),
        )
    }

    pub(crate) fn install(&self, prepared: Prepared) {
        for (store, settings) in prepared.0 {
            store.install(settings);
        }
    }
}

/// Guards the write routes with the gateway's write guard ([`crate::http::write`]): the
/// request came over TLS or the store allows plain writes (else 403 naming
/// `allowPlainWrites`, whatever key it carries), and it carries the write key.
struct Writable;

impl FromRequestParts<Store> for Writable {
    type Rejection = StoreError;

    async fn from_request_parts(parts: &mut Parts, store: &Store) -> Result<Self, StoreError> {
        let transport = Transport::from_request_parts(parts, store).await.unwrap_or_default();
        let settings = store.settings();
        let secret = settings.keys.write_secret();
        write::check(transport, &parts.headers, settings.allow_plain_writes, Some(&secret)).map(|()| Writable).map_err(
            |refused| match refused {
                write::Refused::PlainHttp => StoreError::PlainWrite,
                write::Refused::Credential(e) => StoreError::Http(e),
            },
        )
    }
}

/// The store's routes, at the root.
pub fn router(store: Store) -> Router {
    Router::new()
        .route(
            "/upload/{*path}",
            post(upload).layer(DefaultBodyLimit::disable()).layer(middleware::from_fn(read_unread_body)),
        )
        .route("/download/{*path}", get(download))
        .route("/delete/{*path}", get(delete).delete(delete))
        .route("/filelist", get(list_root))
        .route("/filelist/", get(list_root))
        .route("/filelist/{*path}", get(list))
        .route("/stats", get(stats))
        .route("/api/status", get(status))
        .with_state(store)
}

/// Parses filuxe's booleans (Python's `True`/`False` as sent by requests, and the usual
/// spellings).
fn flag(value: Option<&str>, name: &str) -> Result<bool, StoreError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") | Some("no") | Some("off") => Ok(false),
        Some("true") | Some("1") | Some("yes") | Some("on") => Ok(true),
        Some(other) => Err(StoreError::BadRequest(format!("{name}={other:?} is not a boolean"))),
    }
}

/// The query of an upload: `time`, `force` (filuxe sends Python's `True`/`False`),
/// and the SHA-256 the file must have (`sha256=`, or an `X-Checksum-Sha256` header).
fn upload_options(query: Option<&str>, headers: &HeaderMap) -> Result<Options, StoreError> {
    let query = query.unwrap_or("");
    let get = |name: &str| param(query, name);
    let time = match get("time") {
        None => None,
        Some(t) => match t.parse::<f64>() {
            Ok(t) if (0.0..1e11).contains(&t) => Some(t),
            _ => return Err(StoreError::BadRequest(format!("time={t:?} is not seconds since the epoch"))),
        },
    };
    let sha256 = get("sha256")
        .map(|s| s.into_owned())
        .or_else(|| headers.get("x-checksum-sha256").and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned()));
    if let Some(sum) = &sha256 {
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::BadRequest(format!("sha256 {sum:?} is not 64 hex digits")));
        }
    }
    Ok(Options { time, force: flag(get("force").as_deref(), "force")?, sha256: sha256.map(|s| s.to_ascii_lowercase()) })
}

#[tracing::instrument(level = "debug", skip_all, fields(path = %raw))]
async fn upload(
    _: Writable,
    State(store): State<Store>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, StoreError> {
    let inner = &store.inner;
    let max_upload_bytes = store.settings().max_upload_bytes;
    let path = StorePath::parse(&raw, false)?;
    let options = upload_options(query.as_deref(), &headers)?;
    let stored = match headers.get(header::CONTENT_RANGE) {
        Some(value) => {
            let value = value.to_str().map_err(|_| StoreError::BadRequest("Content-Range is not ASCII".into()))?;
            let chunk = Chunk::parse(value)?;
            inner.uploads.chunk(&path, chunk, &options, body).await.map_err(|e| match e {
                StoreError::TooLarge { .. } if chunk.size <= max_upload_bytes => {
                    StoreError::BadRequest(format!("chunk body is longer than Content-Range {value}"))
                }
                other => other,
            })?
        }
        None => {
            let declared =
                headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            inner.uploads.whole(&path, declared, &options, body).await?
        }
    };
    if stored == Stored::Committed {
        inner.mappings.forget(&path);
    }
    Ok(StatusCode::CREATED.into_response())
}

#[tracing::instrument(level = "debug", skip_all, fields(path = %raw))]
async fn download(
    State(store): State<Store>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, StoreError> {
    let inner = &store.inner;
    store.settings().keys.check_read(&headers)?;
    let path = StorePath::parse(&raw, false)?;
    let mapped = inner.mappings.get(&inner.dirs, &path).await?;
    files::respond(&headers, &mapped)
}

#[tracing::instrument(level = "debug", skip_all, fields(path = %raw))]
async fn delete(_: Writable, State(store): State<Store>, Path(raw): Path<String>) -> Result<StatusCode, StoreError> {
    let path = StorePath::parse(&raw, false)?;
    let inner = store.inner.clone();
    let path2 = path.clone();
    tokio::task::spawn_blocking(move || files::delete(&inner.dirs, &path2))
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
    store.inner.mappings.forget(&path);
    tracing::info!(path = path.as_str(), "deleted");
    Ok(StatusCode::OK)
}

async fn list_root(
    State(store): State<Store>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<files::Listing>, StoreError> {
    list_at(store, String::new(), query, headers).await
}

async fn list(
    State(store): State<Store>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<files::Listing>, StoreError> {
    list_at(store, raw, query, headers).await
}

#[tracing::instrument(level = "debug", skip_all, fields(path = %raw))]
async fn list_at(
    store: Store,
    raw: String,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Json<files::Listing>, StoreError> {
    store.settings().keys.check_read(&headers)?;
    // Repeated slashes merged, as filuxe's server does (werkzeug redirects them away):
    // its forwarder asks for the root as `/filelist//`.
    let merged: Vec<&str> = raw.split('/').filter(|part| !part.is_empty()).collect();
    let path = StorePath::parse(&merged.join("/"), true)?;
    let recursive = flag(param(query.as_deref().unwrap_or(""), "recursive").as_deref(), "recursive")?;
    let inner = store.inner.clone();
    let listing = tokio::task::spawn_blocking(move || files::list(&inner.dirs, &path, recursive))
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
    Ok(Json(listing))
}

/// filuxe's `/stats`: the server version (its forwarder logs it).
async fn stats() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "server": "updraft" }))
}

/// filuxe's `/api/status`.
async fn status() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ready" }))
}
