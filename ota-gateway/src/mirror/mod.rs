//! The forwarding worker (`ota-gateway --mirror`): runs every mirror of the config,
//! in exactly one process per gateway (a singleton Deployment), never in serving
//! replicas, and never talks to the Kubernetes API.
//!
//! Each mirror is level-triggered: a pass lists both sides, plans under the rules
//! ([`rules`]), copies what is missing or different (verified by SHA-256 or digest
//! and size), deletes beyond retention at the destination only, and reports. A pass
//! that could not finish (a side down, a copy failed) is retried after a backoff
//! that doubles from one second up to the interval; what it left is `pending` in the
//! status and the metrics, and lands when the side comes back. An interrupted copy
//! leaves nothing visible at a store destination (uploads appear only when
//! complete) and is redone by the next pass.
//!
//! What the worker observed is served on the admin listener: `/mirrors` (JSON, one
//! [`status::MirrorStatus`] per mirror), `/metrics` (`updraft_mirror_*`), `/healthz`.

mod http;
mod oci;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use updraft_core::backoff::Backoff;
use updraft_core::config::{GatewayConfig, MirrorConfig, MirrorEndpoint};

use crate::watch::{self, ConfigFile};
use status::Observed;
use updraft_core::mirror::error::MirrorError;
use updraft_core::mirror::rules::{Artifact, Rules};
use updraft_core::mirror::store::{Key, Store};
use updraft_core::mirror::{files_mode, Side};

/// Attempts of one copy within a pass (the next pass tries again).
const ATTEMPTS: u32 = 3;

/// One side of a mirror, ready to list (shared with the operator) and to copy with.
fn side(config: &MirrorEndpoint, side: &'static str, client: &reqwest::Client) -> Side {
    match (&config.oci, &config.http) {
        (Some(oci), _) => Side::Registry(oci::repository(oci, side)),
        (None, Some(http)) => {
            let key = http.key_file.clone().map_or(Key::None, Key::File);
            Side::Store(Store::new(http, key, side, client.clone()))
        }
        (None, None) => unreachable!("validated: each side is oci or http"),
    }
}

/// A mirror ready to run.
pub struct Mirror {
    config: MirrorConfig,
    rules: Rules,
    source: Side,
    destination: Side,
    /// The destination's last listing, to count pending work while it is down.
    last_destination: std::sync::Mutex<Vec<Artifact>>,
}

impl Mirror {
    /// Builds a mirror from its (validated) config.
    pub fn new(config: MirrorConfig, client: &reqwest::Client) -> Result<Self, MirrorError> {
        let rules = Rules::new(&config).map_err(MirrorError::Config)?;
        let source = side(&config.source, "source", client);
        let destination = side(&config.destination, "destination", client);
        Ok(Self { config, rules, source, destination, last_destination: Default::default() })
    }

    fn interval(&self) -> Duration {
        updraft_core::version::parse_duration(&self.config.interval).unwrap_or(Duration::from_secs(600))
    }

    async fn copy(&self, artifact: &Artifact) -> Result<u64, MirrorError> {
        match (&self.source, &self.destination) {
            (Side::Store(src), Side::Store(dst)) => http::copy(src, dst, artifact).await,
            (Side::Registry(src), Side::Registry(dst)) => oci::copy(src, dst, artifact).await,
            (Side::Registry(src), Side::Store(dst)) => oci::copy_to_store(src, dst, artifact).await,
            (Side::Store(src), Side::Registry(dst)) => oci::copy_from_store(src, dst, artifact).await,
        }
    }

    /// Whether the sides differ in kind: repositories are then seen as files.
    fn files(&self) -> bool {
        files_mode(&self.source, &self.destination)
    }

    /// Deletes `artifact` at the destination.
    async fn delete(&self, artifact: &Artifact) -> Result<(), MirrorError> {
        match &self.destination {
            Side::Store(s) => http::delete(s, &artifact.name).await,
            Side::Registry(r) if self.files() => oci::delete_file(r, &artifact.name).await,
            Side::Registry(r) => oci::delete(r, artifact).await,
        }
    }

    /// One pass: list, plan, copy, delete, report. `Ok(true)` when nothing is left.
    pub async fn pass(&self, observed: &Observed) -> Result<bool, MirrorError> {
        let name = self.config.name.as_str();
        let listed = |side: &'static str, ok: bool| observed.up.with_label_values(&[name, side]).set(i64::from(ok));
        let source = self.source.list(self.files()).await;
        listed("source", source.is_ok());
        let source = source?;
        let destination = self.destination.list(self.files()).await;
        listed("destination", destination.is_ok());
        let destination = match destination {
            Ok(d) => d,
            Err(e) => {
                // What the source holds beyond what the destination last showed is pending.
                let last = self.last_destination.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let plan = self.rules.plan(&source, &last, now());
                observed.update(name, |s| {
                    s.pending = plan.copy.len() + plan.delete.len();
                    s.to_copy = plan.copy.iter().map(|a| a.name.clone()).collect();
                    s.to_delete = plan.delete.iter().map(|a| a.name.clone()).collect();
                });
                return Err(e);
            }
        };
        let plan = self.rules.plan(&source, &destination, now());
        *self.last_destination.lock().unwrap_or_else(|e| e.into_inner()) = destination;
        let dry_run = self.config.dry_run;
        observed.update(name, |s| {
            s.dry_run = dry_run;
            s.suspended = false;
            s.in_sync = plan.in_sync.len();
            s.pending = plan.copy.len() + plan.delete.len();
            s.failed = 0;
            s.failures.clear();
            s.to_copy = plan.copy.iter().map(|a| a.name.clone()).collect();
            s.to_delete = plan.delete.iter().map(|a| a.name.clone()).collect();
            s.latest_version = plan.latest_version.clone();
            s.last_sync = Some(now());
            s.error = None;
        });
        if dry_run {
            tracing::info!(mirror = name, copy = ?plan.copy.iter().map(|a| &a.name).collect::<Vec<_>>(),
                delete = ?plan.delete.iter().map(|a| &a.name).collect::<Vec<_>>(), "dry run: nothing changed");
            return Ok(true);
        }
        let mut failed = 0;
        for artifact in &plan.copy {
            match self.copy_with_retries(artifact, observed).await {
                Ok(bytes) => {
                    tracing::info!(mirror = name, artifact = artifact.name, bytes, "copied");
                    observed.copied.with_label_values(&[name]).inc();
                    observed.copied_bytes.with_label_values(&[name]).inc_by(bytes);
                    observed.update(name, |s| {
                        s.in_sync += 1;
                        s.pending -= 1;
                        s.copied += 1;
                        s.to_copy.retain(|n| *n != artifact.name);
                    });
                    self.remember(|known| {
                        known.retain(|a| a.name != artifact.name);
                        known.push(artifact.clone());
                    });
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(mirror = name, artifact = artifact.name, error = %e, "copy failed; the next pass retries");
                    observed.update(name, |s| {
                        s.failed += 1;
                        s.failures.push(format!("{}: {e}", artifact.name));
                    });
                }
            }
        }
        for artifact in &plan.delete {
            match self.delete(artifact).await {
                Ok(()) => {
                    tracing::info!(mirror = name, artifact = artifact.name, "deleted at the destination (retention)");
                    observed.deleted.with_label_values(&[name]).inc();
                    observed.update(name, |s| {
                        s.pending -= 1;
                        s.deleted += 1;
                        s.to_delete.retain(|n| *n != artifact.name);
                    });
                    self.remember(|known| known.retain(|a| a.name != artifact.name));
                }
                Err(e) => {
                    failed += 1;
                    observed.errors.with_label_values(&[name, e.kind()]).inc();
                    observed.update(name, |s| {
                        s.failed += 1;
                        s.failures.push(format!("{}: {e}", artifact.name));
                    });
                }
            }
        }
        if failed == 0 {
            observed.update(name, |s| s.last_success = Some(now()));
        }
        Ok(failed == 0)
    }

    /// Updates what the destination is known to hold.
    fn remember(&self, change: impl FnOnce(&mut Vec<Artifact>)) {
        change(&mut self.last_destination.lock().unwrap_or_else(|e| e.into_inner()));
    }

    async fn copy_with_retries(&self, artifact: &Artifact, observed: &Observed) -> Result<u64, MirrorError> {
        // Not `Backoff`: no ceiling needed, ATTEMPTS bounds the doubling (0.5 s, 1 s).
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.copy(artifact).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) => {
                    observed.errors.with_label_values(&[&self.config.name, e.kind()]).inc();
                    if attempt >= ATTEMPTS || matches!(e, MirrorError::Config(_)) {
                        return Err(e);
                    }
                    tracing::debug!(artifact = artifact.name, attempt, error = %e, "copy failed, retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    /// Runs passes forever: at the interval when a pass leaves nothing to do, after a
    /// backoff doubling from one second (capped at the interval) when it does.
    pub async fn run(self, observed: Arc<Observed>) {
        let name = self.config.name.clone();
        let (source, destination) = (self.config.source.describe(), self.config.destination.describe());
        observed.update(&name, |s| {
            s.source = source;
            s.destination = destination;
        });
        let interval = self.interval();
        let mut backoff = Backoff::new(Duration::from_secs(1), interval);
        loop {
            if self.config.suspend {
                observed.update(&name, |s| s.suspended = true);
                tokio::time::sleep(interval).await;
                continue;
            }
            let wait = match self.pass(&observed).await {
                Ok(true) => {
                    observed.passes.with_label_values(&[&name, "ok"]).inc();
                    backoff.reset();
                    interval
                }
                Ok(false) => {
                    observed.passes.with_label_values(&[&name, "incomplete"]).inc();
                    backoff.wait()
                }
                Err(e) => {
                    tracing::warn!(mirror = name, error = %e, "pass failed; retrying after a backoff");
                    observed.passes.with_label_values(&[&name, "failed"]).inc();
                    observed.errors.with_label_values(&[&name, e.kind()]).inc();
                    observed.update(&name, |s| s.error = Some(e.to_string()));
                    backoff.wait()
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The HTTP client every mirror shares.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("updraft-mirror/", env!("CARGO_PKG_VERSION")))
        // Store keys travel in a header reqwest would carry to another host.
        .redirect(updraft_core::mirror::redirect::policy())
        .build()
        .expect("an HTTP client builds")
}

/// The worker's admin routes: `/healthz`, `/readyz`, `/metrics`, `/mirrors`.
pub fn admin_router(observed: Arc<Observed>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/metrics",
            get(|State(o): State<Arc<Observed>>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], o.render()).into_response()
            }),
        )
        .route("/mirrors", get(|State(o): State<Arc<Observed>>| async move { Json(o.statuses()) }))
        .with_state(observed)
}

/// Runs the mirrors of the config file until SIGTERM or Ctrl-C, restarting them
/// when the file changes (followed by [`crate::watch`], as the serving gateway follows
/// it; a file that does not validate is ignored, the running mirrors kept). Serves the
/// admin routes on the config's `adminListen`.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    // Followed from before the first read, so a change made meanwhile is seen.
    let mut file = ConfigFile::new(config_path.clone());
    let config = GatewayConfig::load(&config_path)?;
    let observed = Arc::new(Observed::new());
    let admin = tokio::net::TcpListener::bind(&config.admin_listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen {}: {e}", config.admin_listen))?;
    tracing::info!(admin = config.admin_listen, mirrors = config.mirrors.len(), "mirror worker started");
    // The connection loop of the gateway's own listeners: a header read timeout, so idle
    // connections cannot pile up on the admin port.
    tokio::spawn(crate::server::serve(admin, admin_router(observed.clone()), std::future::pending()));
    let client = client();
    let mut running = start(&config, &client, &observed);
    let follow = watch::poll_every(watch::POLL_INTERVAL, || {
        let Some(content) = file.changed() else { return true };
        match GatewayConfig::parse(&content).and_then(|config| config.validate().map(|()| config)) {
            Ok(config) => {
                tracing::info!(mirrors = config.mirrors.len(), "config changed: restarting the mirrors");
                running.iter().for_each(tokio::task::JoinHandle::abort);
                running = start(&config, &client, &observed);
            }
            Err(e) => tracing::warn!(error = %e, "config change ignored"),
        }
        true
    });
    tokio::select! {
        () = crate::shutdown_signal() => {}
        () = follow => {}
    }
    tracing::info!("mirror worker stopping");
    running.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(())
}

fn start(
    config: &GatewayConfig,
    client: &reqwest::Client,
    observed: &Arc<Observed>,
) -> Vec<tokio::task::JoinHandle<()>> {
    observed.retain(&config.mirrors.iter().map(|m| m.name.clone()).collect::<Vec<_>>());
    config
        .mirrors
        .iter()
        .filter_map(|m| match Mirror::new(m.clone(), client) {
            Ok(mirror) => Some(tokio::spawn(mirror.run(observed.clone()))),
            Err(e) => {
                tracing::error!(mirror = m.name, error = %e, "cannot start the mirror");
                observed.update(&m.name, |s| s.error = Some(e.to_string()));
                None
            }
        })
        .collect()
}
