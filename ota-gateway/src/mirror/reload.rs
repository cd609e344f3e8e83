//! The worker's config, followed as the serving gateway follows its own
//! ([`crate::reload`]): from the mounted file and, when the config names one
//! (`operator`), from the operator's endpoint ([`crate::delivery::Poller`]), so a new
//! rendering (a release's `deltas.build`, a mirror attached) reaches the worker within a
//! second instead of at kubelet's next sync of the ConfigMap.
//!
//! Both sources offer through one gate, [`Reloader::offer`], with the gateway's rules: a
//! config that does not validate is refused (the running mirrors and delta builder are
//! kept), one older than the config in use is ignored (`supersedes`: kubelet's late copy
//! of the ConfigMap never rolls back what the endpoint delivered, nor the other way
//! round), and of a newer one only what changed is restarted: the mirrors when the
//! `mirrors` section changed, the delta builder when the patches to build did. Every
//! release of every channel is a new rendering at the endpoint; one that leaves the
//! worker's part alone does not cut a copy or a build short.

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use updraft_core::config::delivery::supersedes;
use updraft_core::config::GatewayConfig;

use super::deltas::{self, Builder};
use super::status::Observed;
use super::Mirror;
use crate::delivery::Gate;
use crate::reload::{revision_gauge, Outcome, Source};

/// The worker's one gate for new configs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    observed: Arc<Observed>,
    deltas: Arc<Builder>,
    /// Held from the revision check to the end of the restart, so two sources offering
    /// at once cannot both pass the check and start in the wrong order.
    running: Mutex<Running>,
}

/// The config in use and the tasks it started.
struct Running {
    config: GatewayConfig,
    mirrors: Vec<JoinHandle<()>>,
    builder: JoinHandle<()>,
}

impl Reloader {
    /// Starts every mirror of `config` (the config in use), and the delta builder on its
    /// channels.
    pub(crate) fn start(
        config: GatewayConfig,
        client: reqwest::Client,
        observed: Arc<Observed>,
        deltas: Arc<Builder>,
    ) -> Self {
        let mirrors = start_mirrors(&config, &client, &observed);
        let builder = start_builder(&config, &deltas);
        observed.config_revision.set(revision_gauge(config.revision));
        let running = Mutex::new(Running { config, mirrors, builder });
        Self { inner: Arc::new(Inner { client, observed, deltas, running }) }
    }

    /// Applies `content` unless it is invalid, older than the config in use, or that
    /// config already.
    pub(crate) fn offer(&self, content: &[u8], source: Source) -> Outcome {
        let mut running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.decide(&mut running, content, source);
        let observed = &self.inner.observed;
        observed.config_updates.with_label_values(&[source.label(), outcome.label()]).inc();
        observed.config_revision.set(revision_gauge(running.config.revision));
        outcome
    }

    fn decide(&self, running: &mut Running, content: &[u8], source: Source) -> Outcome {
        let source = source.label();
        let config = match GatewayConfig::parse(content).and_then(|config| config.validate().map(|()| config)) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(source, error = %e, "config change ignored; the running mirrors and delta builds kept");
                return Outcome::Rejected;
            }
        };
        let (revision, live) = (config.revision, running.config.revision);
        if !supersedes(revision, live) {
            tracing::info!(source, revision, running = live, "config older than the one in use; ignored");
            return Outcome::Stale;
        }
        if config == running.config {
            return Outcome::Unchanged;
        }
        let Inner { client, observed, deltas, .. } = &*self.inner;
        let mirrors = config.mirrors != running.config.mirrors;
        if mirrors {
            running.mirrors.iter().for_each(JoinHandle::abort);
            running.mirrors = start_mirrors(&config, client, observed);
        }
        let builds = deltas::wanted(&config) != deltas::wanted(&running.config);
        if builds {
            running.builder.abort();
            running.builder = start_builder(&config, deltas);
        }
        tracing::info!(
            source,
            revision,
            mirrors = config.mirrors.len(),
            restarted_mirrors = mirrors,
            restarted_builder = builds,
            "config changed"
        );
        running.config = config;
        Outcome::Applied
    }

    /// Stops the mirrors and the delta builder.
    pub(crate) fn stop(&self) {
        let running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        running.mirrors.iter().for_each(JoinHandle::abort);
        running.builder.abort();
    }
}

impl Gate for Reloader {
    fn revision(&self) -> u64 {
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner()).config.revision
    }

    fn offer(&self, content: &[u8], source: Source) -> Outcome {
        Reloader::offer(self, content, source)
    }

    fn poll_failed(&self) {
        self.inner.observed.config_poll_errors.inc();
    }
}

/// Starts every mirror of `config`; one that cannot be built is told in its status.
fn start_mirrors(config: &GatewayConfig, client: &reqwest::Client, observed: &Arc<Observed>) -> Vec<JoinHandle<()>> {
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

/// Starts the delta builder on the channels of `config`.
fn start_builder(config: &GatewayConfig, deltas: &Arc<Builder>) -> JoinHandle<()> {
    tokio::spawn(deltas.clone().run(Arc::new(config.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config of `revision` with one mirror (its source `source`; nothing listens) and
    /// a `public_url` the worker does not use.
    fn config(revision: u64, source: &str, url: &str) -> Vec<u8> {
        format!(
            "revision: {revision}\npublicUrl: {url}\nmirrors:\n- name: m\n  interval: 1h\n  \
             source: {{http: {{url: '{source}'}}}}\n  destination: {{http: {{url: 'http://127.0.0.1:2'}}}}\n"
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn the_worker_takes_the_newest_valid_config_from_either_source() {
        let observed = Arc::new(Observed::new());
        let deltas = Arc::new(Builder::new(std::env::temp_dir().join("unused"), 1));
        let start = GatewayConfig::parse(&config(5, "http://127.0.0.1:1", "https://five")).unwrap();
        let reloader = Reloader::start(start, super::super::client(), observed.clone(), deltas);
        let mirror_source = |r: &Reloader| {
            let running = r.inner.running.lock().unwrap();
            running.config.mirrors[0].source.http.as_ref().unwrap().url.clone()
        };
        // The endpoint's newer rendering: the mirror restarts on its new source.
        assert_eq!(reloader.offer(&config(6, "http://127.0.0.1:3", "https://six"), Source::Operator), Outcome::Applied);
        assert_eq!(Gate::revision(&reloader), 6);
        assert_eq!(mirror_source(&reloader), "http://127.0.0.1:3");
        // Kubelet's late copy of revision 5: ignored; then its copy of 6: the same.
        assert_eq!(reloader.offer(&config(5, "http://127.0.0.1:1", "https://five"), Source::File), Outcome::Stale);
        assert_eq!(reloader.offer(&config(6, "http://127.0.0.1:3", "https://six"), Source::File), Outcome::Unchanged);
        assert_eq!(mirror_source(&reloader), "http://127.0.0.1:3");
        // A config that does not validate is refused whole, whatever its revision.
        let invalid = b"revision: 9\nmirrors:\n- name: m\n  source: {}\n  destination: {}\n";
        assert_eq!(reloader.offer(invalid, Source::Operator), Outcome::Rejected);
        assert_eq!(Gate::revision(&reloader), 6);
        // A change outside the worker's part: applied, the mirror left running.
        let before = reloader.inner.running.lock().unwrap().mirrors[0].id();
        assert_eq!(
            reloader.offer(&config(7, "http://127.0.0.1:3", "https://seven"), Source::Operator),
            Outcome::Applied
        );
        assert_eq!(reloader.inner.running.lock().unwrap().mirrors[0].id(), before, "restarted");
        let text = observed.render();
        for line in [
            "updraft_mirror_config_revision 7",
            "updraft_mirror_config_updates_total{result=\"applied\",source=\"operator\"} 2",
            "updraft_mirror_config_updates_total{result=\"stale\",source=\"file\"} 1",
            "updraft_mirror_config_updates_total{result=\"unchanged\",source=\"file\"} 1",
            "updraft_mirror_config_updates_total{result=\"rejected\",source=\"operator\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        reloader.stop();
    }
}
