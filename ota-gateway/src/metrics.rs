//! Prometheus metrics of the gateway, and the tower middleware that counts and times
//! HTTP requests by matched route (never the raw path: device ids would explode the
//! label space).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request duration buckets, in seconds: from an in-memory `/version` answer (tens of
/// microseconds) to a slow upstream.
const DURATION_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Every metric the gateway exports, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    /// Time from a request's arrival to its response head (a body streams after).
    pub request_duration: HistogramVec,
    pub bytes_sent: IntCounterVec,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_evictions: IntCounter,
    pub cache_bytes: IntGauge,
    pub fetch_errors: IntCounterVec,
    pub registry_up: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    /// Configs offered by each source (`file`, `operator`), by what came of them.
    pub config_updates: IntCounterVec,
    /// The revision of the config served (0: a hand-written file).
    pub config_revision: IntGauge,
    /// Requests to the operator's config endpoint that failed (unreachable, refused).
    pub config_poll_errors: IntCounter,
    pub checkins: IntCounterVec,
    /// Per simplestreams stream: 1 while the served index is the newest, 0 when the
    /// last one built failed validation (the previous one keeps serving).
    pub stream_index_valid: IntGaugeVec,
    pub stream_index_failures: IntCounterVec,
    pub stream_versions: IntGaugeVec,
    pub stream_unverified: IntCounterVec,
    /// `.vcdiff` deltas a stream built, by result (`built`, `failed`), and the bytes of
    /// those built (`simplestreams::deltas`).
    pub stream_delta_builds: IntCounterVec,
    pub stream_delta_bytes: IntCounterVec,
    pub firmware_unverified: IntCounterVec,
    /// Polls of devices that sent no id (or one too long to record), by channel: the
    /// devices the census cannot count.
    pub anonymous_polls: IntCounterVec,
    /// The census's memory, series and refused pairs, read from it at each scrape.
    pub census_bytes: IntGauge,
    pub census_series: IntGauge,
    pub census_refused: IntCounter,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("unique metric");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("unique metric");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new_custom(Some("updraft_gateway".into()), None).expect("valid prefix");
        let cache_bytes = IntGauge::new("cache_bytes", "Bytes of payloads in the disk cache").expect("valid metric");
        r.register(Box::new(cache_bytes.clone())).expect("unique metric");
        let registry_up = IntGaugeVec::new(
            Opts::new("registry_up", "1 when the last request to the registry succeeded"),
            &["registry"],
        )
        .expect("valid metric");
        r.register(Box::new(registry_up.clone())).expect("unique metric");
        // Process-wide counters, written where no registry is at hand.
        r.register(Box::new(crate::sendfile::SENT.clone())).expect("unique metric");
        r.register(Box::new(crate::tls::PLAIN_HTTP_REFUSED.clone())).expect("unique metric");
        r.register(Box::new(crate::tls::HANDSHAKE_FAILURES.clone())).expect("unique metric");
        r.register(Box::new(crate::tls::CERT_EXPIRY.clone())).expect("unique metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to the response head by matched route and method",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        r.register(Box::new(request_duration.clone())).expect("unique metric");
        let gauge_vec = |name: &str, help: &str| {
            let metric = IntGaugeVec::new(Opts::new(name, help), &["stream"]).expect("valid metric");
            r.register(Box::new(metric.clone())).expect("unique metric");
            metric
        };
        let stream_index_valid =
            gauge_vec("stream_index_valid", "1 when the stream serves its newest index, 0 when that failed validation");
        let stream_versions = gauge_vec("stream_versions", "Image versions in the index a stream serves");
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(metric.clone())).expect("unique metric");
            metric
        };
        let census_bytes = gauge("census_bytes", "Bytes the device census holds (within --census-memory)");
        let census_series = gauge("census_series", "Census series (channel x version x state) with devices");
        let config_revision = gauge("config_revision", "Revision of the config served (0: a hand-written file)");
        Self {
            config_updates: counter_vec(
                &r,
                "config_updates_total",
                "Configs offered by the mounted file or the operator's endpoint, by source and result \
                 (applied, unchanged, stale, rejected)",
                &["source", "result"],
            ),
            config_revision,
            config_poll_errors: counter(
                &r,
                "config_poll_errors_total",
                "Requests to the operator's config endpoint that failed; the gateway keeps serving and follows its file",
            ),
            anonymous_polls: counter_vec(
                &r,
                "anonymous_polls_total",
                "Device requests without an id (or with one over 256 bytes), which the census cannot count, by channel",
                &["channel"],
            ),
            census_bytes,
            census_series,
            census_refused: counter(
                &r,
                "census_refused_total",
                "Census pairs refused because the census memory budget was reached",
            ),
            stream_index_failures: counter_vec(
                &r,
                "stream_index_failures_total",
                "Stream sync rounds whose index was not published (listing failed or validation refused it)",
                &["stream"],
            ),
            stream_index_valid,
            stream_versions,
            stream_unverified: counter_vec(
                &r,
                "stream_unverified_total",
                "Stream versions (manifest digests) left out because their cosign signature did not verify, by reason",
                &["stream", "reason"],
            ),
            stream_delta_builds: counter_vec(
                &r,
                "stream_delta_builds_total",
                "Simplestreams .vcdiff deltas built in the background, by stream and result (built, failed)",
                &["stream", "result"],
            ),
            stream_delta_bytes: counter_vec(
                &r,
                "stream_delta_bytes_total",
                "Bytes of the simplestreams .vcdiff deltas built, by stream",
                &["stream"],
            ),
            firmware_unverified: counter_vec(
                &r,
                "firmware_unverified_total",
                "Firmware releases (manifest digests) a standalone channel skipped because their cosign signature did not verify, by reason",
                &["channel", "reason"],
            ),
            requests: counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests by matched route and status",
                &["route", "method", "status"],
            ),
            bytes_sent: counter_vec(&r, "http_sent_bytes_total", "Response body bytes by matched route", &["route"]),
            cache_hits: counter(&r, "cache_hits_total", "Requests answered from a cached payload"),
            cache_misses: counter(&r, "cache_misses_total", "Requests that found the payload not cached"),
            cache_evictions: counter(&r, "cache_evictions_total", "Payloads evicted to stay within the byte budget"),
            fetch_errors: counter_vec(
                &r,
                "fetch_errors_total",
                "Failed fetches or resolutions by registry",
                &["registry"],
            ),
            config_reloads: counter_vec(&r, "config_reloads_total", "Config file loads by result", &["result"]),
            checkins: counter_vec(
                &r,
                "device_checkins_total",
                "Devices checking in, by channel and reported version",
                &["channel", "version"],
            ),
            cache_bytes,
            registry_up,
            request_duration,
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("text exposition is UTF-8")
    }

    /// Copies the census's figures into its metrics (before a scrape).
    pub fn census(&self, census: &updraft_core::census::Census) {
        self.census_bytes.set(i64::try_from(census.bytes()).unwrap_or(i64::MAX));
        self.census_series.set(i64::try_from(census.series()).unwrap_or(i64::MAX));
        self.census_refused.inc_by(census.refused().saturating_sub(self.census_refused.get()));
    }

    /// Records whether a registry answered.
    pub fn registry_result(&self, registry: &str, ok: bool) {
        self.registry_up.with_label_values(&[registry]).set(i64::from(ok));
        if !ok {
            self.fetch_errors.with_label_values(&[registry]).inc();
        }
    }

    /// Counts a device check-in. The reported version becomes a label only when it is
    /// a plausible version, so devices cannot grow the label space at will.
    pub fn checkin(&self, channel: &str, reported: Option<&str>) {
        let version = match reported {
            None => "unknown",
            Some(v) if v.len() <= 64 && semver::Version::parse(v.trim_start_matches('v')).is_ok() => v,
            Some(_) => "invalid",
        };
        self.checkins.with_label_values(&[channel, version]).inc();
    }
}

/// Middleware: counts and times each request by matched route and method (and counts
/// it by status), and counts the response body bytes (from Content-Length) by route.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // MatchedPath is an Arc<str>: cloning it does not allocate.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = response.status();
    metrics.request_duration.with_label_values(&[route, method.as_str()]).observe(started.elapsed().as_secs_f64());
    metrics.requests.with_label_values(&[route, method.as_str(), status.as_str()]).inc();
    if method != Method::HEAD {
        let sent = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        metrics.bytes_sent.with_label_values(&[route]).inc_by(sent);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters written outside any registry (the TLS listener's, sendfile's) are
    /// exported too, by every registry.
    #[test]
    fn process_wide_counters_are_exported() {
        crate::tls::PLAIN_HTTP_REFUSED.inc();
        crate::tls::HANDSHAKE_FAILURES.inc();
        for text in [Metrics::new().render(), Metrics::new().render()] {
            for name in [
                "updraft_gateway_tls_plain_http_refused_total",
                "updraft_gateway_tls_handshake_failures_total",
                "updraft_gateway_sendfile_bytes_total",
            ] {
                let line =
                    text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
                if !name.contains("sendfile") {
                    assert!(!line.ends_with(" 0"), "{line}");
                }
            }
        }
    }
}
