//! Keeping the live config in step with its sources: the mounted file and, when the
//! config names one, the operator's endpoint (`crate::delivery`).
//!
//! The file is followed by [`crate::watch`]: when its content changed, it is offered to
//! the [`Applier`]. The operator's endpoint offers what it sends the same way. The
//! applier is the one gate: it parses, refuses a config older than the one served (a
//! ConfigMap kubelet syncs late must not roll back what the endpoint delivered:
//! `updraft_core::config::delivery::supersedes`), and applies the rest in two phases
//! ([`AppState::apply`], which makes everything live it can and logs which restart-only
//! settings changed). A bad config is logged and counted; the last good config keeps
//! serving.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::state::{AppState, ApplyError};
use crate::watch::{self, ConfigFile};
use updraft_core::config::delivery::supersedes;
use updraft_core::config::{ConfigError, GatewayConfig};

/// Why a new config was rejected.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Parse(#[from] ConfigError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Where a config came from (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The mounted file (the ConfigMap, in Kubernetes).
    File,
    /// The operator's config endpoint.
    Operator,
}

impl Source {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Operator => "operator",
        }
    }
}

/// What came of a config offered to the [`Applier`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The config served already.
    Unchanged,
    /// Older than the config served: ignored.
    Stale,
    /// Invalid: the config served keeps serving.
    Rejected,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Rejected => "rejected",
        }
    }
}

/// The one gate every new config passes; cheap to clone.
#[derive(Clone)]
pub struct Applier {
    state: AppState,
    /// Held from the revision check to the end of the apply, so two sources offering at
    /// once cannot both pass the check and apply in the wrong order.
    gate: Arc<Mutex<()>>,
}

impl Applier {
    /// The gate of `state` (whose config is the one served).
    pub fn new(state: AppState) -> Self {
        state.metrics().config_revision.set(revision_gauge(state.config().revision));
        Self { state, gate: Arc::default() }
    }

    pub(crate) fn metrics(&self) -> &std::sync::Arc<crate::metrics::Metrics> {
        self.state.metrics()
    }

    /// The revision of the config served.
    pub fn revision(&self) -> u64 {
        self.state.config().revision
    }

    /// Applies `content` unless it is invalid, older than the config served, or that
    /// config already.
    pub fn offer(&self, content: &[u8], source: Source) -> Outcome {
        let _gate = self.gate.lock().expect("config gate");
        let outcome = self.decide(content, source);
        let metrics = self.state.metrics();
        metrics.config_updates.with_label_values(&[source.label(), outcome.label()]).inc();
        if matches!(outcome, Outcome::Applied | Outcome::Rejected) {
            metrics.config_reloads.with_label_values(&[outcome.label()]).inc();
        }
        metrics.config_revision.set(revision_gauge(self.revision()));
        outcome
    }

    fn decide(&self, content: &[u8], source: Source) -> Outcome {
        let source = source.label();
        let config = match GatewayConfig::parse(content) {
            Ok(config) => config,
            Err(reason) => {
                tracing::error!(source, %reason, "new config rejected; keeping the last good config");
                return Outcome::Rejected;
            }
        };
        let live = self.state.config();
        let revision = config.revision;
        if !supersedes(revision, live.revision) {
            tracing::info!(source, revision, serving = live.revision, "config older than the one served; ignored");
            return Outcome::Stale;
        }
        if config == *live {
            return Outcome::Unchanged;
        }
        match self.state.apply(config).map_err(ReloadError::from) {
            Ok(()) => {
                tracing::info!(source, revision, "config reloaded");
                Outcome::Applied
            }
            Err(reason) => {
                tracing::error!(source, revision, %reason, "new config rejected; keeping the last good config");
                Outcome::Rejected
            }
        }
    }
}

/// A config revision as a gauge's value (a revision past `i64::MAX` shows as the maximum).
pub(crate) fn revision_gauge(revision: u64) -> i64 {
    revision.try_into().unwrap_or(i64::MAX)
}

/// Watches one config file and offers its changes.
pub struct Watcher {
    file: ConfigFile,
    applier: Applier,
}

impl Watcher {
    /// A watcher for a file whose content `state` already serves.
    pub fn new(path: PathBuf, state: AppState) -> Self {
        Self::with_applier(path, Applier::new(state))
    }

    /// A watcher offering through `applier` (shared with the operator's endpoint).
    pub fn with_applier(path: PathBuf, applier: Applier) -> Self {
        Self { file: ConfigFile::new(path), applier }
    }

    /// Polls forever.
    pub(crate) async fn run(mut self) {
        watch::poll_every(watch::POLL_INTERVAL, || {
            self.poll();
            true
        })
        .await
    }

    /// One check; returns whether a new config was applied.
    pub fn poll(&mut self) -> bool {
        let Some(content) = self.file.changed() else { return false };
        let path = self.file.path().display().to_string();
        let outcome = self.applier.offer(&content, Source::File);
        tracing::debug!(%path, ?outcome, "config file changed");
        outcome == Outcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_core::config::CacheConfig;

    fn config(cache: &std::path::Path, revision: u64, url: &str) -> Vec<u8> {
        let cache = CacheConfig { dir: cache.into(), ..Default::default() };
        GatewayConfig { revision, public_url: Some(url.into()), cache, ..Default::default() }.to_yaml().into_bytes()
    }

    #[tokio::test]
    async fn a_late_older_config_never_rolls_back_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let start = GatewayConfig::parse(&config(dir.path(), 5, "https://five")).unwrap();
        let state = AppState::from_config(start).unwrap();
        let applier = Applier::new(state.clone());
        assert_eq!(applier.offer(&config(dir.path(), 6, "https://six"), Source::Operator), Outcome::Applied);
        // Kubelet's copy of revision 5 arrives after the endpoint delivered 6.
        assert_eq!(applier.offer(&config(dir.path(), 5, "https://five"), Source::File), Outcome::Stale);
        assert_eq!(state.config().public_url.as_deref(), Some("https://six"));
        // Then its copy of 6: the same config.
        assert_eq!(applier.offer(&config(dir.path(), 6, "https://six"), Source::File), Outcome::Unchanged);
        // A bad config is refused whole, whatever its revision.
        assert_eq!(applier.offer(b"revision: 7\nchannels: 3\n", Source::Operator), Outcome::Rejected);
        assert_eq!(state.config().revision, 6);
        let metrics = state.metrics();
        assert_eq!(metrics.config_revision.get(), 6);
        assert_eq!(metrics.config_updates.with_label_values(&["file", "stale"]).get(), 1);
        assert_eq!(metrics.config_updates.with_label_values(&["operator", "applied"]).get(), 1);
        assert_eq!(metrics.config_reloads.with_label_values(&["rejected"]).get(), 1);
        // Hand-written files (revision 0) are not held back by anything.
        let plain = tempfile::tempdir().unwrap();
        let state =
            AppState::from_config(GatewayConfig::parse(&config(plain.path(), 0, "https://a")).unwrap()).unwrap();
        let applier = Applier::new(state);
        assert_eq!(applier.offer(&config(plain.path(), 0, "https://b"), Source::File), Outcome::Applied);
    }
}
