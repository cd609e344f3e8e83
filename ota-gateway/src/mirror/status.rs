//! What the worker observed, per mirror: the JSON at the admin port's `/mirrors`
//! (what the operator reads into ArtifactMirror status) and Prometheus metrics, with
//! those of the worker's config (where new configs came from and what came of them).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::{Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use serde::Serialize;

/// One mirror's last observations.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MirrorStatus {
    pub(crate) name: String,
    pub(crate) source: String,
    pub(crate) destination: String,
    pub(crate) suspended: bool,
    pub(crate) dry_run: bool,
    /// Selected artifacts present and identical at the destination.
    pub(crate) in_sync: usize,
    /// Copies and deletions still to do (including failed ones).
    pub(crate) pending: usize,
    /// Copies and deletions that failed in the last pass.
    pub(crate) failed: usize,
    /// Newest version the destination keeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latest_version: Option<String>,
    /// Seconds since the epoch of the last pass that listed both sides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_sync: Option<f64>,
    /// Seconds since the epoch of the last pass with nothing left to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_success: Option<f64>,
    /// Why the last pass did not finish, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Names still to copy (in a dry run: that would be copied).
    pub(crate) to_copy: Vec<String>,
    /// Names still to delete at the destination (in a dry run: that would be deleted).
    pub(crate) to_delete: Vec<String>,
    /// `name: reason` of what failed in the last pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) failures: Vec<String>,
    /// Copies and deletions done since the worker started.
    pub(crate) copied: u64,
    pub(crate) deleted: u64,
}

/// The worker's statuses and metrics.
pub(crate) struct Observed {
    statuses: Mutex<BTreeMap<String, MirrorStatus>>,
    registry: Registry,
    pub(crate) pending: IntGaugeVec,
    pub(crate) in_sync: IntGaugeVec,
    pub(crate) failed: IntGaugeVec,
    pub(crate) up: IntGaugeVec,
    pub(crate) copied: IntCounterVec,
    pub(crate) copied_bytes: IntCounterVec,
    pub(crate) deleted: IntCounterVec,
    pub(crate) passes: IntCounterVec,
    pub(crate) errors: IntCounterVec,
    pub(crate) last_success: GaugeVec,
    pub(crate) config_updates: IntCounterVec,
    pub(crate) config_revision: IntGauge,
    pub(crate) config_poll_errors: IntCounter,
}

impl Default for Observed {
    fn default() -> Self {
        Self::new()
    }
}

impl Observed {
    pub(crate) fn new() -> Self {
        let registry = Registry::new_custom(Some("updraft_mirror".into()), None).expect("valid prefix");
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let last_success = GaugeVec::new(
            Opts::new("last_success_timestamp_seconds", "When a pass last left nothing to do"),
            &["mirror"],
        )
        .expect("valid metric");
        registry.register(Box::new(last_success.clone())).expect("unique metric");
        let config_revision =
            IntGauge::new("config_revision", "Revision of the config in use (0: a hand-written file)")
                .expect("valid metric");
        registry.register(Box::new(config_revision.clone())).expect("unique metric");
        let config_poll_errors = IntCounter::new(
            "config_poll_errors_total",
            "Requests to the operator's config endpoint that failed; the worker keeps its config and follows its file",
        )
        .expect("valid metric");
        registry.register(Box::new(config_poll_errors.clone())).expect("unique metric");
        Self {
            statuses: Mutex::default(),
            pending: gauge("pending", "Copies and deletions still to do", &["mirror"]),
            in_sync: gauge("in_sync", "Selected artifacts identical at the destination", &["mirror"]),
            failed: gauge("failed", "Copies and deletions that failed in the last pass", &["mirror"]),
            up: gauge("up", "1 when the side answered the last listing", &["mirror", "side"]),
            copied: counter("copied_total", "Artifacts copied", &["mirror"]),
            copied_bytes: counter("copied_bytes_total", "Bytes copied", &["mirror"]),
            deleted: counter("deleted_total", "Artifacts deleted at the destination", &["mirror"]),
            passes: counter("passes_total", "Passes by result", &["mirror", "result"]),
            errors: counter("errors_total", "Failures by kind", &["mirror", "kind"]),
            last_success,
            config_updates: counter(
                "config_updates_total",
                "Configs offered by the mounted file or the operator's endpoint, by source and result \
                 (applied, unchanged, stale, rejected)",
                &["source", "result"],
            ),
            config_revision,
            config_poll_errors,
            registry,
        }
    }

    /// Applies `change` to the status of `name` and mirrors it into the gauges.
    pub(crate) fn update(&self, name: &str, change: impl FnOnce(&mut MirrorStatus)) {
        let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        let status =
            statuses.entry(name.to_owned()).or_insert_with(|| MirrorStatus { name: name.into(), ..Default::default() });
        change(status);
        self.pending.with_label_values(&[name]).set(status.pending as i64);
        self.in_sync.with_label_values(&[name]).set(status.in_sync as i64);
        self.failed.with_label_values(&[name]).set(status.failed as i64);
        if let Some(t) = status.last_success {
            self.last_success.with_label_values(&[name]).set(t);
        }
    }

    /// Keeps only the statuses of `names` (after a reload).
    pub(crate) fn retain(&self, names: &[String]) {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| names.contains(k));
    }

    pub(crate) fn statuses(&self) -> Vec<MirrorStatus> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    #[cfg(test)]
    pub(crate) fn status(&self, name: &str) -> Option<MirrorStatus> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("text exposition is UTF-8")
    }
}
