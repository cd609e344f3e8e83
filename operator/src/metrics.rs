//! The operator's Prometheus metrics, served on the admin port.

use prometheus::{
    Encoder, HistogramOpts, HistogramTimer, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    reconcile_duration: HistogramVec,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    resolved_version: IntGaugeVec,
    registry_checks: IntCounterVec,
    webhook_events: IntCounterVec,
    webhook_triggers: IntCounterVec,
    stream_images: IntGaugeVec,
    mirror_pending: IntGaugeVec,
    mirror_in_sync: IntGaugeVec,
    mirror_behind: IntGaugeVec,
    skipped_releases: IntCounterVec,
    rollout_percentage: IntGaugeVec,
    rollout_step: IntGaugeVec,
    rollout_paused: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new_custom(Some("updraft_operator".into()), None).expect("valid prefix");
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Time one reconcile took, by controller")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["controller"],
        )
        .unwrap();
        let reconciles =
            IntCounterVec::new(Opts::new("reconciles_total", "Reconciles run, by controller"), &["controller"])
                .unwrap();
        let reconcile_errors = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "Reconciles that ended in an error, by controller and error kind"),
            &["controller", "error"],
        )
        .unwrap();
        let resolved_version = IntGaugeVec::new(
            Opts::new("resolved_version_info", "The version each FirmwareChannel resolved (value 1)"),
            &["namespace", "channel", "version"],
        )
        .unwrap();
        let registry_checks =
            IntCounterVec::new(Opts::new("registry_checks_total", "Registry metadata checks, by result"), &["result"])
                .unwrap();
        let webhook_events = IntCounterVec::new(
            Opts::new(
                "webhook_events_total",
                "Registry notifications received, by result (triggered, ignored, unauthorized, invalid, unavailable)",
            ),
            &["result"],
        )
        .unwrap();
        let webhook_triggers = IntCounterVec::new(
            Opts::new("webhook_triggers_total", "Objects a registry notification made check now, by kind"),
            &["kind"],
        )
        .unwrap();
        let stream_images = IntGaugeVec::new(
            Opts::new("image_stream_images", "Image versions and products each ImageStream's source holds"),
            &["namespace", "stream", "count"],
        )
        .unwrap();
        let mirror_gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["namespace", "mirror"]).expect("valid metric")
        };
        let mirror_pending = mirror_gauge("mirror_pending", "Copies and deletions each ArtifactMirror has pending");
        let mirror_in_sync =
            mirror_gauge("mirror_in_sync", "Selected artifacts identical at each ArtifactMirror's destination");
        let mirror_behind = mirror_gauge(
            "mirror_behind",
            "1 while an ArtifactMirror has had items pending for more than two intervals (Ready=False, Behind)",
        );
        let skipped_releases = IntCounterVec::new(
            Opts::new(
                "channel_skipped_releases_total",
                "Releases (manifest digests) a FirmwareChannel skipped because their cosign signature did not verify, by reason",
            ),
            &["namespace", "channel", "reason"],
        )
        .unwrap();
        let channel_gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["namespace", "channel"]).expect("valid metric")
        };
        let rollout_percentage = channel_gauge(
            "channel_rollout_percentage",
            "Share of devices (percent) each FirmwareChannel gives its latest version",
        );
        let rollout_step = channel_gauge(
            "channel_rollout_step",
            "The step (from 1) each FirmwareChannel's staged rollout reached; 0 without steps",
        );
        let rollout_paused =
            channel_gauge("channel_rollout_paused", "1 while a FirmwareChannel's staged rollout is paused at its step");
        for m in [
            Box::new(reconcile_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconciles.clone()),
            Box::new(reconcile_errors.clone()),
            Box::new(resolved_version.clone()),
            Box::new(registry_checks.clone()),
            Box::new(webhook_events.clone()),
            Box::new(webhook_triggers.clone()),
            Box::new(stream_images.clone()),
            Box::new(mirror_pending.clone()),
            Box::new(mirror_in_sync.clone()),
            Box::new(mirror_behind.clone()),
            Box::new(skipped_releases.clone()),
            Box::new(rollout_percentage.clone()),
            Box::new(rollout_step.clone()),
            Box::new(rollout_paused.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Self {
            registry,
            reconcile_duration,
            reconciles,
            reconcile_errors,
            resolved_version,
            registry_checks,
            webhook_events,
            webhook_triggers,
            stream_images,
            mirror_pending,
            mirror_in_sync,
            mirror_behind,
            skipped_releases,
            rollout_percentage,
            rollout_step,
            rollout_paused,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a timer that observes its duration when dropped.
    pub(crate) fn reconcile(&self, controller: &str) -> HistogramTimer {
        self.reconciles.with_label_values(&[controller]).inc();
        self.reconcile_duration.with_label_values(&[controller]).start_timer()
    }

    pub(crate) fn error(&self, controller: &str, error: &crate::error::Error) {
        self.reconcile_errors.with_label_values(&[controller, error.metric_label()]).inc();
    }

    /// Reconcile errors counted so far for `controller` and error kind `label`.
    #[cfg(test)]
    pub(crate) fn errors(&self, controller: &str, label: &str) -> u64 {
        self.reconcile_errors.with_label_values(&[controller, label]).get()
    }

    pub(crate) fn registry_check(&self, ok: bool) {
        self.registry_checks.with_label_values(&[if ok { "ok" } else { "error" }]).inc();
    }

    /// Counts a registry notification by what came of it.
    pub(crate) fn webhook_event(&self, result: &str) {
        self.webhook_events.with_label_values(&[result]).inc();
    }

    /// Counts an object a notification made check now.
    pub(crate) fn webhook_trigger(&self, kind: &str) {
        self.webhook_triggers.with_label_values(&[kind]).inc();
    }

    /// Counts a release a channel skipped (once per digest) because its signature did
    /// not verify.
    pub(crate) fn skipped_release(&self, namespace: &str, channel: &str, reason: &str) {
        self.skipped_releases.with_label_values(&[namespace, channel, reason]).inc();
    }

    /// Records the version a channel now serves, dropping the series of the one before.
    pub(crate) fn resolved(&self, namespace: &str, channel: &str, old: Option<&str>, new: &str) {
        if let Some(old) = old.filter(|o| *o != new) {
            let _ = self.resolved_version.remove_label_values(&[namespace, channel, old]);
        }
        self.resolved_version.with_label_values(&[namespace, channel, new]).set(1);
    }

    /// Records where a channel's rollout stands (`step` 0 without steps).
    pub(crate) fn rollout(&self, namespace: &str, channel: &str, percentage: i32, step: i32, paused: bool) {
        self.rollout_percentage.with_label_values(&[namespace, channel]).set(percentage.into());
        self.rollout_step.with_label_values(&[namespace, channel]).set(step.into());
        self.rollout_paused.with_label_values(&[namespace, channel]).set(paused.into());
    }

    /// Drops the series of a deleted FirmwareChannel's rollout.
    pub(crate) fn forget_channel(&self, namespace: &str, channel: &str) {
        for gauge in [&self.rollout_percentage, &self.rollout_step, &self.rollout_paused] {
            let _ = gauge.remove_label_values(&[namespace, channel]);
        }
    }

    /// Records what an ImageStream's source holds (`count` is `versions` or `products`).
    pub(crate) fn stream_images(&self, namespace: &str, stream: &str, versions: usize, products: usize) {
        let set = |count: &str, n: usize| {
            self.stream_images.with_label_values(&[namespace, stream, count]).set(n.try_into().unwrap_or(i64::MAX))
        };
        set("versions", versions);
        set("products", products);
    }

    /// Drops the series of a deleted ImageStream.
    pub(crate) fn forget_stream(&self, namespace: &str, stream: &str) {
        for count in ["versions", "products"] {
            let _ = self.stream_images.remove_label_values(&[namespace, stream, count]);
        }
    }

    /// Records what an ArtifactMirror's last observation found.
    pub(crate) fn mirror(&self, namespace: &str, mirror: &str, pending: i32, in_sync: i32, behind: bool) {
        self.mirror_pending.with_label_values(&[namespace, mirror]).set(pending.into());
        self.mirror_in_sync.with_label_values(&[namespace, mirror]).set(in_sync.into());
        self.mirror_behind.with_label_values(&[namespace, mirror]).set(behind.into());
    }

    /// Drops the series of a deleted ArtifactMirror.
    pub(crate) fn forget_mirror(&self, namespace: &str, mirror: &str) {
        for gauge in [&self.mirror_pending, &self.mirror_in_sync, &self.mirror_behind] {
            let _ = gauge.remove_label_values(&[namespace, mirror]);
        }
    }

    /// Registers a collector another module owns (the census's series).
    pub(crate) fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry.register(collector).expect("metric names are unique");
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("Prometheus text is UTF-8")
    }
}
