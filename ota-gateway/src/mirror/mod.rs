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
//! A store that answers a copy or a delete 429 or 503 with a `Retry-After`
//! ([`MirrorError::Throttled`]) ends the pass at once, and the next pass waits at least
//! as long as it asked, up to the ceiling the gateway's fetcher holds registries to
//! ([`held`]). A store that throttles its listing the same way (core's
//! [`Store::refused`], the one rule for both) fails the pass, and the next one waits
//! as long too. An OCI side's `Retry-After` is not seen: oci-client hides the headers.
//!
//! The worker also builds the config's delta patches ([`deltas`]). It follows its config
//! as the serving gateway does, from its file and the operator's endpoint ([`reload`]).
//!
//! What the worker observed is served on the admin listener: `/mirrors` (JSON, one
//! [`status::MirrorStatus`] per mirror), `/deltas` (JSON, one [`deltas::DeltaStatus`]
//! per patch), `/metrics` (`updraft_mirror_*`, `updraft_mirror_config_*`,
//! `updraft_delta_*`), `/healthz`.

pub(crate) mod deltas;
mod http;
mod oci;
mod reload;
pub(crate) mod status;

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

use crate::reload::Source;
use crate::watch::{self, ConfigFile};
use deltas::Builder;
use reload::Reloader;
use status::Observed;
use updraft_core::mirror::error::MirrorError;
use updraft_core::mirror::rules::{Artifact, Rules};
use updraft_core::mirror::store::{Key, Store};
use updraft_core::mirror::{files_mode, Side};

/// Attempts of one copy within a pass (the next pass tries again).
const ATTEMPTS: u32 = 3;

/// The outcome of a pass that listed both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Everything planned was done (or, in a dry run, reported).
    Done,
    /// Something is left for the next pass; `retry_after` when a side asked to wait.
    Incomplete { retry_after: Option<Duration> },
}

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
pub(crate) struct Mirror {
    config: MirrorConfig,
    rules: Rules,
    source: Side,
    destination: Side,
    /// The destination's last listing, to count pending work while it is down.
    last_destination: std::sync::Mutex<Vec<Artifact>>,
}

impl Mirror {
    /// Builds a mirror from its (validated) config.
    pub(crate) fn new(config: MirrorConfig, client: &reqwest::Client) -> Result<Self, MirrorError> {
        let rules = Rules::new(&config).map_err(|e| MirrorError::Config(e.to_string()))?;
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

    /// One pass: list, plan, copy, delete, report. A side that asks to wait ends it.
    pub(crate) async fn pass(&self, observed: &Observed) -> Result<Pass, MirrorError> {
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
            return Ok(Pass::Done);
        }
        let mut failed = 0;
        let mut retry_after = None;
        for artifact in &plan.copy {
            if retry_after.is_some() {
                break;
            }
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
                    retry_after = e.retry_after();
                    tracing::warn!(mirror = name, artifact = artifact.name, error = %e, "copy failed; the next pass retries");
                    observed.update(name, |s| {
                        s.failed += 1;
                        s.failures.push(format!("{}: {e}", artifact.name));
                    });
                }
            }
        }
        for artifact in &plan.delete {
            if retry_after.is_some() {
                break;
            }
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
                    retry_after = e.retry_after();
                    observed.errors.with_label_values(&[name, e.kind()]).inc();
                    observed.update(name, |s| {
                        s.failed += 1;
                        s.failures.push(format!("{}: {e}", artifact.name));
                    });
                }
            }
        }
        if failed > 0 || retry_after.is_some() {
            return Ok(Pass::Incomplete { retry_after });
        }
        observed.update(name, |s| s.last_success = Some(now()));
        Ok(Pass::Done)
    }

    /// Updates what the destination is known to hold.
    fn remember(&self, change: impl FnOnce(&mut Vec<Artifact>)) {
        change(&mut self.last_destination.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A copy, tried again within the pass unless the config is at fault or a side
    /// asked to wait.
    async fn copy_with_retries(&self, artifact: &Artifact, observed: &Observed) -> Result<u64, MirrorError> {
        // Not `Backoff`: no ceiling needed, ATTEMPTS bounds the doubling (0.5 s, 1 s).
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.copy(artifact).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) => {
                    observed.errors.with_label_values(&[&self.config.name, e.kind()]).inc();
                    let hopeless = matches!(e, MirrorError::Config(_) | MirrorError::Throttled { .. });
                    if attempt >= ATTEMPTS || hopeless {
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
    /// backoff doubling from one second (capped at the interval) when it does, and no
    /// sooner than a side asked ([`held`]).
    pub(crate) async fn run(self, observed: Arc<Observed>) {
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
                Ok(Pass::Done) => {
                    observed.passes.with_label_values(&[&name, "ok"]).inc();
                    backoff.reset();
                    interval
                }
                Ok(Pass::Incomplete { retry_after }) => {
                    observed.passes.with_label_values(&[&name, "incomplete"]).inc();
                    held(backoff.wait(), retry_after)
                }
                Err(e) => {
                    tracing::warn!(mirror = name, error = %e, "pass failed; retrying after a backoff");
                    observed.passes.with_label_values(&[&name, "failed"]).inc();
                    observed.errors.with_label_values(&[&name, e.kind()]).inc();
                    observed.update(&name, |s| s.error = Some(e.to_string()));
                    // A side that throttles its listing is left alone as long as it asked.
                    held(backoff.wait(), e.retry_after())
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The wait before the next pass: the backoff, or what a side asked when longer, up
/// to [`oci::MAX_RETRY_AFTER`](updraft_core::oci::MAX_RETRY_AFTER) (a side asking for
/// an hour is asked again after ten minutes, as the fetcher does with registries).
fn held(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    retry_after.map_or(backoff, |asked| backoff.max(asked.min(updraft_core::oci::MAX_RETRY_AFTER)))
}

fn now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The HTTP client every mirror shares.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("updraft-mirror/", env!("CARGO_PKG_VERSION")))
        // Store keys travel in a header reqwest would carry to another host.
        .redirect(updraft_core::mirror::redirect::policy())
        .build()
        .expect("an HTTP client builds")
}

/// What the admin routes read.
type Admin = (Arc<Observed>, Arc<Builder>);

/// The worker's admin routes: `/healthz`, `/readyz`, `/metrics`, `/mirrors`, `/deltas`.
pub(crate) fn admin_router(observed: Arc<Observed>, deltas: Arc<Builder>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/metrics",
            get(|State((o, d)): State<Admin>| async move {
                let text = o.render() + &d.render();
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
            }),
        )
        .route("/mirrors", get(|State((o, _)): State<Admin>| async move { Json(o.statuses()) }))
        .route("/deltas", get(|State((_, d)): State<Admin>| async move { Json(d.statuses()) }))
        .with_state((observed, deltas))
}

/// Runs the mirrors of the config file until SIGTERM or Ctrl-C, restarting them (and the
/// delta builder) when the config changes ([`reload`]: the file, followed by
/// [`crate::watch`], and the operator's config endpoint when the config names one, as the
/// serving gateway follows them; a config that does not validate or is older than the
/// one in use is ignored, the running mirrors kept). Serves the admin routes on the
/// config's `adminListen`.
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
    // Payloads for delta builds are cached beside the gateway's own (a directory its
    // cache never reads), so a worker and a gateway sharing a cache dir do not collide.
    let deltas = Arc::new(Builder::new(config.cache.dir.join("deltas"), config.cache.max_bytes));
    let router = admin_router(observed.clone(), deltas.clone());
    tokio::spawn(crate::server::serve(admin, router, std::future::pending()));
    let operator = config.operator.clone();
    // The file and the operator's endpoint offer new configs through one gate.
    let reloader = Reloader::start(config, client(), observed, deltas);
    if let Some(source) = operator {
        tokio::spawn(crate::delivery::Poller::new(source, reloader.clone()).run());
    }
    let follow = watch::poll_every(watch::POLL_INTERVAL, || {
        if let Some(content) = file.changed() {
            let outcome = reloader.offer(&content, Source::File);
            tracing::debug!(path = %file.path().display(), ?outcome, "config file changed");
        }
        true
    });
    tokio::select! {
        () = crate::shutdown_signal() => {}
        () = follow => {}
    }
    tracing::info!("mirror worker stopping");
    reloader.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;
    use updraft_core::config::StoreConfig;

    const KEY: &str = "write-key";

    /// A real artifact store (the gateway's own), served on a loopback port.
    struct TestStore {
        url: String,
        dir: tempfile::TempDir,
    }

    impl TestStore {
        async fn start(files: &[(&str, &[u8])]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let config: StoreConfig = serde_yaml::from_str(&format!(
                "{{name: s, listen: '127.0.0.1:0', dir: {}, writeKey: {KEY}, allowPlainWrites: true}}",
                dir.path().join("files").display()
            ))
            .unwrap();
            let url = crate::state::serve_store(config).await;
            // Same bytes at the same time: the same file on either side, checksums or not.
            let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            for (name, data) in files {
                let path = dir.path().join("files").join(name);
                std::fs::write(&path, data).unwrap();
                std::fs::File::options().write(true).open(&path).unwrap().set_modified(time).unwrap();
            }
            Self { url, dir }
        }

        fn file(&self, name: &str) -> Option<Vec<u8>> {
            std::fs::read(self.dir.path().join("files").join(name)).ok()
        }
    }

    /// A mirror from the store at `source` to the one at `destination` (which it
    /// writes with [`KEY`]), with `extra` YAML fields.
    fn mirror(source: &str, destination: &str, extra: &str) -> Mirror {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let dir = DIR.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("key"), KEY).unwrap();
            dir
        });
        let key = dir.path().join("key");
        let config: MirrorConfig = serde_yaml::from_str(&format!(
            "name: m\nsource: {{http: {{url: '{source}'}}}}\ndestination: {{http: {{url: '{destination}', keyFile: {}, allowPlainHttp: true}}}}\n{extra}",
            key.display()
        ))
        .unwrap();
        Mirror::new(config, &client()).unwrap()
    }

    /// Where nothing listens.
    const DOWN: &str = "http://127.0.0.1:1";

    fn metric(observed: &Observed, line_start: &str) -> String {
        let text = observed.render();
        text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("no {line_start} in\n{text}")).into()
    }

    #[tokio::test]
    async fn a_pass_copies_what_the_destination_lacks() {
        let source = TestStore::start(&[("a-1.0.0.bin", b"one"), ("a-1.1.0.bin", b"two")]).await;
        let destination = TestStore::start(&[("a-1.0.0.bin", b"one")]).await;
        let observed = Observed::new();
        let pass = mirror(&source.url, &destination.url, "").pass(&observed).await.unwrap();
        assert_eq!(pass, Pass::Done, "{:?}", observed.status("m"));
        assert_eq!(destination.file("a-1.1.0.bin").as_deref(), Some(&b"two"[..]));
        let status = observed.status("m").unwrap();
        assert_eq!((status.in_sync, status.pending, status.failed, status.copied), (2, 0, 0, 1));
        assert!(status.to_copy.is_empty() && status.last_success.is_some());
    }

    #[tokio::test]
    async fn a_dry_run_reports_what_it_would_copy_and_copies_nothing() {
        let source = TestStore::start(&[("a-1.0.0.bin", b"one")]).await;
        let destination = TestStore::start(&[]).await;
        let observed = Observed::new();
        assert_eq!(mirror(&source.url, &destination.url, "dryRun: true\n").pass(&observed).await.unwrap(), Pass::Done);
        assert_eq!(destination.file("a-1.0.0.bin"), None);
        let status = observed.status("m").unwrap();
        assert!(status.dry_run);
        assert_eq!((status.pending, status.to_copy), (1, vec!["a-1.0.0.bin".to_owned()]));
    }

    #[tokio::test]
    async fn retention_deletes_the_oldest_versions_at_the_destination_only() {
        let files: &[(&str, &[u8])] = &[("a-1.0.0.bin", b"one"), ("a-1.1.0.bin", b"two")];
        let source = TestStore::start(files).await;
        let destination = TestStore::start(files).await;
        let observed = Observed::new();
        let keep_one = mirror(&source.url, &destination.url, "retention: {keepLast: 1}\n");
        assert_eq!(keep_one.pass(&observed).await.unwrap(), Pass::Done, "{:?}", observed.status("m"));
        assert_eq!(destination.file("a-1.0.0.bin"), None);
        assert!(destination.file("a-1.1.0.bin").is_some());
        assert!(source.file("a-1.0.0.bin").is_some(), "the source is never changed");
        assert_eq!(observed.status("m").unwrap().deleted, 1);
    }

    #[tokio::test]
    async fn a_source_that_does_not_answer_fails_the_pass_and_is_marked_down() {
        let destination = TestStore::start(&[]).await;
        let observed = Observed::new();
        assert!(mirror(DOWN, &destination.url, "").pass(&observed).await.is_err());
        assert!(metric(&observed, "updraft_mirror_up{mirror=\"m\",side=\"source\"}").ends_with(" 0"));
    }

    #[tokio::test]
    async fn with_the_destination_down_what_it_last_showed_decides_what_is_pending() {
        let source = TestStore::start(&[("a-1.0.0.bin", b"one"), ("a-1.1.0.bin", b"two")]).await;
        let destination = TestStore::start(&[("a-1.0.0.bin", b"one")]).await;
        let observed = Observed::new();
        let m = mirror(&source.url, &destination.url, "dryRun: true\n");
        m.pass(&observed).await.unwrap();
        // The same mirror, its destination now gone.
        let down = Mirror { destination: mirror(&source.url, DOWN, "").destination, ..m };
        assert!(down.pass(&observed).await.is_err());
        let status = observed.status("m").unwrap();
        assert_eq!((status.pending, status.to_copy), (1, vec!["a-1.1.0.bin".to_owned()]));
        assert!(metric(&observed, "updraft_mirror_up{mirror=\"m\",side=\"destination\"}").ends_with(" 0"));
    }

    /// What [`ThrottledStore`] was asked, and when (as it saw it).
    type Seen = Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>;

    /// A source store that lists two files (or, with `listing` throttled too, answers
    /// that 503 as well) and answers every download 503 with `Retry-After:
    /// {retry_after}`, noting each request it gets.
    async fn throttled_store(retry_after: Duration, listing: bool) -> (String, Seen) {
        use axum::http::{StatusCode, Uri};
        let seen = Seen::default();
        let noted = seen.clone();
        let app = Router::new().fallback(move |uri: Uri| {
            let noted = noted.clone();
            async move {
                noted.lock().unwrap().push((std::time::Instant::now(), uri.path().to_owned()));
                if uri.path().starts_with("/filelist") && !listing {
                    let file = serde_json::json!({"size": 3, "time": 1_700_000_000.0, "sha256": "ab".repeat(32)});
                    let listing = serde_json::json!({"filelist": {".": {"a-1.0.0.bin": file, "a-1.1.0.bin": file}}});
                    return Json(listing).into_response();
                }
                let wait = retry_after.as_secs().to_string();
                (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, wait)], "busy").into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    /// The worker's own retries (within a pass after half a second, the next pass after
    /// a one-second backoff) would ask a throttling source again within its
    /// `Retry-After`; the source is asked nothing more until that has passed, then is
    /// asked again.
    #[tokio::test]
    async fn a_source_answering_503_with_retry_after_is_left_alone_that_long() {
        const ASKED: Duration = Duration::from_secs(3);
        let (source, seen) = throttled_store(ASKED, false).await;
        let destination = TestStore::start(&[]).await;
        let observed = Arc::new(Observed::new());
        let worker = tokio::spawn(mirror(&source, &destination.url, "interval: 1m\n").run(observed.clone()));

        let first_refusal = |seen: &Seen| {
            seen.lock().unwrap().iter().find(|(_, path)| path.starts_with("/download")).map(|(at, _)| *at)
        };
        let started = std::time::Instant::now();
        let refused_at = loop {
            if let Some(at) = first_refusal(&seen) {
                break at;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no download was asked for: {:?}", seen.lock());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let asked_since = |seen: &Seen| seen.lock().unwrap().iter().filter(|(at, _)| *at > refused_at).count();

        // Most of the wait: the worker would have asked three times by now.
        tokio::time::sleep_until((refused_at + ASKED - Duration::from_millis(500)).into()).await;
        assert_eq!(asked_since(&seen), 0, "asked within the Retry-After: {:?}", seen.lock());
        let status = observed.status("m").unwrap();
        assert!(status.failures.iter().any(|f| f.contains("503")), "the status names the refusal: {status:?}");
        assert_eq!(status.pending, 2, "both files are left for later: {status:?}");

        while asked_since(&seen) == 0 {
            assert!(refused_at.elapsed() < ASKED + Duration::from_secs(10), "never asked again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let again = seen.lock().unwrap().iter().map(|(at, _)| *at).find(|at| *at > refused_at).unwrap();
        assert!(again - refused_at >= ASKED, "asked again after {:?}", again - refused_at);
        worker.abort();
    }

    /// The same for a side that throttles its listing: the pass fails at once, and the
    /// next one waits for the `Retry-After` (3 s), not the one-second backoff.
    #[tokio::test]
    async fn a_source_throttling_its_listing_is_listed_again_only_after_its_retry_after() {
        const ASKED: Duration = Duration::from_secs(3);
        let (source, seen) = throttled_store(ASKED, true).await;
        let destination = TestStore::start(&[]).await;
        let observed = Arc::new(Observed::new());
        let worker = tokio::spawn(mirror(&source, &destination.url, "interval: 1m\n").run(observed.clone()));
        let listings = |seen: &Seen| -> Vec<std::time::Instant> {
            seen.lock().unwrap().iter().filter(|(_, path)| path.starts_with("/filelist")).map(|(at, _)| *at).collect()
        };
        let started = std::time::Instant::now();
        while listings(&seen).len() < 2 {
            assert!(started.elapsed() < ASKED + Duration::from_secs(10), "never listed again: {:?}", seen.lock());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at = listings(&seen);
        assert!(at[1] - at[0] >= ASKED, "listed again after {:?}", at[1] - at[0]);
        let status = observed.status("m").unwrap();
        assert!(status.error.as_deref().is_some_and(|e| e.contains("retry after 3 s")), "{status:?}");
        worker.abort();
    }

    #[test]
    fn the_wait_after_a_pass_is_the_backoff_or_what_a_side_asked_up_to_the_ceiling() {
        let second = Duration::from_secs(1);
        assert_eq!(held(second, None), second);
        assert_eq!(held(second, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(held(Duration::from_secs(8), Some(Duration::from_secs(3))), Duration::from_secs(8));
        let an_hour = Some(Duration::from_secs(3600));
        assert_eq!(held(second, an_hour), updraft_core::oci::MAX_RETRY_AFTER);
    }

    #[tokio::test]
    async fn a_mirror_whose_version_pattern_does_not_compile_is_not_built() {
        let config: MirrorConfig = serde_yaml::from_str(
            "name: m\nsource: {http: {url: 'http://a'}}\ndestination: {http: {url: 'http://b'}}\nversion: {regex: '('}\n",
        )
        .unwrap();
        assert!(matches!(Mirror::new(config, &client()), Err(MirrorError::Config(_))));
    }

    #[tokio::test]
    async fn the_admin_port_serves_each_mirror_status_as_json() {
        let observed = Arc::new(Observed::new());
        observed.update("m", |s| s.pending = 3);
        let request = axum::http::Request::get("/mirrors").body(axum::body::Body::empty()).unwrap();
        let deltas = Arc::new(Builder::new(std::env::temp_dir().join("unused"), 1));
        let response = admin_router(observed, deltas).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let statuses: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((&statuses[0]["name"], &statuses[0]["pending"]), (&"m".into(), &3.into()));
    }
}
