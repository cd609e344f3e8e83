//! ota-gateway: Updraft's data plane.
//!
//! Serves firmware to devices (OtaFlux-compatible and a JSON channel API) from a
//! verified, content-addressed disk cache filled from OCI registries. The binary is a
//! thin wrapper around [`serve`]; tests drive [`app`] and [`admin_app`].
//!
//! Layout: one module per surface, each with its `router()` and its part of the live
//! state ([`firmware`]); `http` (downloads with Range/ETag/sendfile, the generic
//! error, write authorization, query strings) shared by the surfaces; `cache`,
//! `fetch` and `unpack` (registry to disk), `watch` (every file followed while running:
//! config, certificates, keys), [`reload`] (the one gate new configs pass),
//! [`delivery`] (long-polling the operator for the config), `metrics`,
//! `admin` (with `/census`), [`census`] (the device census's limits and expiry),
//! `notify` (MQTT and webhook notifications when a release becomes ready),
//! [`server`] (the listeners' connection loop: header read timeout, head size limit)
//! and [`sendfile`] (the zero-copy path, the crate's only `unsafe` code);
//! `simplestreams` (image streams for LXD and Incus) and `tls` (the HTTPS listener
//! beside the plain one).

#![deny(unsafe_code)]

mod admin;
mod cache;
pub mod census;
pub mod delivery;
mod fetch;
pub mod firmware;
mod http;
#[allow(unsafe_code)]
mod memory;
mod metrics;
pub mod mirror;
mod notify;
pub mod reload;
#[allow(unsafe_code)]
pub mod sendfile;
pub mod server;
mod simplestreams;
mod state;
pub mod store;
mod tls;
mod unpack;
mod watch;

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

pub use sendfile::DeviceListener;
pub use state::{AppState, ApplyError};

/// The public router: every surface's routes and OtaFlux's `GET /health`, with
/// request metrics.
pub fn app(state: AppState) -> Router {
    let metrics = state.metrics().clone();
    Router::new()
        .route("/health", get(health))
        .merge(firmware::router().with_state(state.firmware().clone()))
        .merge(simplestreams::router(state.streams().clone()))
        .layer(axum::middleware::from_fn_with_state(metrics, metrics::track))
}

/// `GET /health` on the public port, as OtaFlux answers it (probes and load balancers
/// use it): 200 with an empty body.
async fn health() -> StatusCode {
    StatusCode::OK
}

/// The admin router: `/healthz`, `/readyz`, `/metrics`, `/census`.
pub fn admin_app(state: AppState) -> Router {
    admin::router().with_state(state)
}

/// Loads the config file, then serves the public and admin listeners until
/// SIGTERM or Ctrl-C, reloading the file when it changes. `census`: the device census's
/// memory budget in bytes, `None` for no census.
pub async fn serve(config_path: PathBuf, census: Option<usize>) -> anyhow::Result<()> {
    match sendfile::raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    let config = updraft_core::config::GatewayConfig::load(&config_path)?;
    // Bound here, at start: a reload that changes them is logged (`updraft_core::restart`).
    let (listen, admin_listen, sendfile) = (config.listen.clone(), config.admin_listen.clone(), config.sendfile);
    let tls_listen = config.tls.as_ref().map(|t| t.listen.clone());
    // Mutual TLS on the HTTPS listener only, read at start.
    let client_ca = config.tls.as_ref().and_then(|t| Some((t.client_ca_file.clone()?, t.client_auth()?)));
    // Read at start, like the listeners (`updraft_core::restart`).
    let operator = config.operator.clone();
    let census = census.map(|limit| std::sync::Arc::new(updraft_core::census::Census::new(limit)));
    if let Some(census) = &census {
        crate::census::spawn_expiry(census.clone());
    }
    let state = AppState::from_config_with_census(config, census)?;
    // One certificate (followed, and swapped by a reload) for the HTTPS listener and the
    // stores' listeners; client certificates are asked for on the HTTPS listener only.
    let (tls_config, https_config) = match state.tls() {
        Some(certificate) => {
            certificate.spawn_watcher();
            let client_ca = client_ca.as_ref().map(|(file, mode)| (file.as_path(), *mode));
            if let Some((_, mode)) = client_ca {
                tracing::info!(client_auth = %mode, "HTTPS asks for client certificates (mutual TLS)");
            }
            (
                Some(tls::server_config(certificate.clone(), None)?),
                Some(tls::server_config(certificate.clone(), client_ca)?),
            )
        }
        None => (None, None),
    };
    let tls = match (&tls_listen, &https_config) {
        (Some(addr), Some(server_config)) => {
            let listener = tls::TlsListener::bind(addr, server_config.clone())
                .await
                .map_err(|e| anyhow::anyhow!("listen {addr}: {e}"))?;
            tracing::info!(listen = %addr, "serving HTTPS");
            Some(listener)
        }
        _ => None,
    };
    let public_app = app(state.clone());
    // The file and the operator's endpoint offer new configs through one gate.
    let applier = reload::Applier::new(state.clone());
    tokio::spawn(reload::Watcher::with_applier(config_path, applier.clone()).run());
    if let Some(source) = operator {
        tokio::spawn(delivery::Poller::new(source, applier).run());
    }
    let public = DeviceListener::bind(&listen).await.map_err(|e| anyhow::anyhow!("listen {listen}: {e}"))?;
    let public = public.with_sendfile(sendfile);
    let admin = tokio::net::TcpListener::bind(&admin_listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen {admin_listen}: {e}"))?;
    tracing::info!(%listen, %admin_listen, sendfile, "serving");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let stopped = |mut rx: tokio::sync::watch::Receiver<()>| async move {
        let _ = rx.changed().await;
    };
    let stores = serve_stores(sendfile, tls_config, &state, stop_rx.clone()).await?;
    // Header read timeout and head size limit on every listener (see `server`).
    let https = tls.map(|listener| server::serve(listener, public_app.clone(), stopped(stop_rx.clone())));
    let https = async move {
        if let Some(serving) = https {
            serving.await;
        }
    };
    let public = server::serve(public, public_app, stopped(stop_rx.clone()));
    let admin = server::serve(admin, admin_app(state), stopped(stop_rx));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop_tx.send(());
    });
    tokio::join!(public, admin, https, futures::future::join_all(stores));
    Ok(())
}

/// Binds each store's listener, HTTPS with the gateway's certificate when it has one
/// (writes need TLS unless a store allows plain ones); returns the servers, each ending
/// when `stop` fires. The stores were opened with the state; their settings follow
/// config reloads, their listeners are bound once.
async fn serve_stores(
    sendfile: bool,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    state: &AppState,
    stop: tokio::sync::watch::Receiver<()>,
) -> anyhow::Result<Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>> {
    let mut servers: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> = Vec::new();
    for store in state.stores().all() {
        let (name, listen) = (store.name().to_owned(), store.listen().to_owned());
        store.spawn_sweeper();
        let metrics = state.metrics().clone();
        let router = store::router(store.clone()).layer(axum::middleware::from_fn_with_state(metrics, metrics::track));
        let mut stop = stop.clone();
        let stopped = async move {
            let _ = stop.changed().await;
        };
        let failed = |e: std::io::Error| anyhow::anyhow!("store {name}: listen {listen}: {e}");
        // The same connection loop as the public listener (header timeout, head limit).
        match &tls {
            Some(config) => {
                let listener = tls::TlsListener::bind(&listen, config.clone()).await.map_err(failed)?;
                tracing::info!(store = name, %listen, "serving an artifact store over HTTPS");
                servers.push(Box::pin(server::serve(listener, router, stopped)));
            }
            None => {
                let listener = DeviceListener::bind(&listen).await.map_err(failed)?;
                tracing::info!(store = name, %listen, "serving an artifact store");
                servers.push(Box::pin(server::serve(listener.with_sendfile(sendfile), router, stopped)));
            }
        }
    }
    Ok(servers)
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
