//! Webhooks for people and CI, the one implementation the gateway (a release ready or
//! failed on the data plane) and the operator (a release whose signature did not verify)
//! both send through: the JSON body, its HMAC-SHA256 signature, the delivery id, and a
//! bounded queue drained by a background task that retries with growing backoff.
//! Callers only enqueue ([`WebhookSender::send`] never waits).
//!
//! The operator also announces a staged rollout that paused (`rollout.paused`, with
//! the step and the adoption figures that stopped it).
//!
//! Headers: `Content-Type: application/json`, `X-Updraft-Event` (`release.ready`,
//! `release.failed` or `rollout.paused`), `X-Updraft-Delivery` (a random UUID, the same on every retry of
//! one delivery) and, when the receiver has a key, `X-Updraft-Signature:
//! sha256=<hex HMAC-SHA256 of the body>`.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{mpsc, Semaphore};

use crate::backoff::Backoff;

/// Deliveries waiting for the worker; beyond this new ones are dropped (and logged).
const QUEUE: usize = 256;
/// Deliveries in flight at once (each with its retries).
const CONCURRENCY: usize = 8;
/// Attempts per delivery: the first and up to 7 retries, 1 s, 2 s, 4 s… apart (at most
/// 60 s), about two minutes in all.
const ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(10);

/// One receiver: its URL and HMAC key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    /// Signs each body in `X-Updraft-Signature`; unsigned without one.
    pub key: Option<Vec<u8>>,
}

/// A release that is ready to serve (the gateway: cached and verified).
#[derive(Clone, Debug, Default)]
pub struct ReadyRelease<'a> {
    pub channel: &'a str,
    pub device: &'a str,
    pub version: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    pub crc32: u32,
    /// Where a device downloads it.
    pub url: &'a str,
    /// Its version is lower than the one the channel announced before.
    pub rollback: bool,
}

/// A release that is not served: its payload could not be fetched or unpacked (the
/// gateway), or its signature did not verify (the gateway or the operator).
#[derive(Clone, Debug, Default)]
pub struct FailedRelease<'a> {
    /// The Kubernetes namespace (the operator's events; the gateway does not know it).
    pub namespace: Option<&'a str>,
    /// The FirmwareChannel (or the gateway's channel).
    pub channel: Option<&'a str>,
    /// The ImageStream, for an image version of a stream.
    pub stream: Option<&'a str>,
    pub device: Option<&'a str>,
    pub version: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
    /// Why, in words.
    pub reason: &'a str,
}

/// A staged rollout that stopped at its step (the operator): too few of the devices
/// that downloaded the version report running it, too few downloaded it, or the
/// census gave no figures.
#[derive(Clone, Debug, Default)]
pub struct PausedRollout<'a> {
    pub namespace: &'a str,
    pub channel: &'a str,
    pub device: &'a str,
    pub version: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
    /// The step it stopped at (from 1) and its share of devices (percent).
    pub step: i32,
    pub percentage: i32,
    /// `BelowThreshold`, `TooFewDevices` or `NoFigures`.
    pub reason: &'a str,
    /// The same, in words, with the figures.
    pub message: &'a str,
    /// Unique devices (estimates) that downloaded the version during the step and that
    /// report running it; none without a census.
    pub downloaded: Option<u64>,
    pub running: Option<u64>,
    /// `spec.rollout.successThreshold` and `minDevices`.
    pub threshold: i32,
    pub min_devices: i64,
    /// When the step began (seconds since the Unix epoch).
    pub since: i64,
}

/// What a `rollout.paused` body adds to the common fields.
#[derive(Serialize)]
struct RolloutFigures<'a> {
    step: i32,
    percentage: i32,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    downloaded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    running: Option<u64>,
    threshold: i32,
    #[serde(rename = "minDevices")]
    min_devices: i64,
    since: i64,
}

/// The JSON body of every event.
#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    /// Seconds since the Unix epoch.
    time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    version: &'a str,
    tag: &'a str,
    digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crc32: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// `release.ready` of a lower version than the channel announced before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    rollback: bool,
    /// `rollout.paused`: where and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<RolloutFigures<'a>>,
}

/// One event, serialized once for every receiver.
#[derive(Clone, Debug)]
pub struct WebhookEvent {
    kind: &'static str,
    body: Arc<[u8]>,
}

impl WebhookEvent {
    /// `release.ready`: the release is cached, verified and served.
    pub fn ready(r: &ReadyRelease<'_>) -> Self {
        Self::new(Body {
            event: "release.ready",
            time: now(),
            namespace: None,
            channel: Some(r.channel),
            stream: None,
            device: Some(r.device),
            version: r.version,
            tag: r.tag,
            digest: r.digest,
            size: Some(r.size),
            sha256: Some(r.sha256),
            crc32: Some(r.crc32),
            url: Some(r.url),
            reason: None,
            rollback: r.rollback,
            rollout: None,
        })
    }

    /// `release.failed`: the release is not served, and why.
    pub fn failed(f: &FailedRelease<'_>) -> Self {
        Self::new(Body {
            event: "release.failed",
            time: now(),
            namespace: f.namespace,
            channel: f.channel,
            stream: f.stream,
            device: f.device,
            version: f.version,
            tag: f.tag,
            digest: f.digest,
            size: None,
            sha256: None,
            crc32: None,
            url: None,
            reason: Some(f.reason),
            rollback: false,
            rollout: None,
        })
    }

    /// `rollout.paused`: a staged rollout stopped at its step, with its figures.
    pub fn rollout_paused(p: &PausedRollout<'_>) -> Self {
        Self::new(Body {
            event: "rollout.paused",
            time: now(),
            namespace: Some(p.namespace),
            channel: Some(p.channel),
            stream: None,
            device: Some(p.device),
            version: p.version,
            tag: p.tag,
            digest: p.digest,
            size: None,
            sha256: None,
            crc32: None,
            url: None,
            reason: Some(p.reason),
            rollback: false,
            rollout: Some(RolloutFigures {
                step: p.step,
                percentage: p.percentage,
                message: p.message,
                downloaded: p.downloaded,
                running: p.running,
                threshold: p.threshold,
                min_devices: p.min_devices,
                since: p.since,
            }),
        })
    }

    fn new(body: Body<'_>) -> Self {
        Self { kind: body.event, body: serde_json::to_vec(&body).expect("body serializes").into() }
    }

    /// `release.ready`, `release.failed` or `rollout.paused`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The exact bytes POSTed (and signed).
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// One POST to one receiver.
struct Delivery {
    id: String,
    event: WebhookEvent,
    target: WebhookTarget,
}

/// The queue and the current receivers. Needs a Tokio runtime ([`WebhookSender::start`]
/// spawns the worker).
pub struct WebhookSender {
    queue: mpsc::Sender<Delivery>,
    targets: RwLock<Vec<WebhookTarget>>,
}

impl WebhookSender {
    /// Starts the worker; `user_agent` names the sender (`updraft-ota-gateway/…`).
    pub fn start(user_agent: &'static str) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(work(rx, user_agent));
        Self { queue, targets: RwLock::new(Vec::new()) }
    }

    /// Receivers of [`WebhookSender::send`] from now on (queued deliveries keep theirs).
    pub fn set_targets(&self, targets: Vec<WebhookTarget>) {
        *self.targets.write().expect("targets lock") = targets;
    }

    /// Queues `event` for every receiver set with [`WebhookSender::set_targets`].
    pub fn send(&self, event: &WebhookEvent) {
        let targets = self.targets.read().expect("targets lock").clone();
        self.send_to(event, &targets);
    }

    /// Queues `event` for `targets`, one delivery (and delivery id) each; never waits.
    pub fn send_to(&self, event: &WebhookEvent, targets: &[WebhookTarget]) {
        for target in targets {
            let delivery = Delivery { id: delivery_id(), event: event.clone(), target: target.clone() };
            if let Err(e) = self.queue.try_send(delivery) {
                tracing::warn!(url = %target.url, event = event.kind, error = %e, "webhook queue full; event dropped");
            }
        }
    }
}

/// Drains the queue, `CONCURRENCY` deliveries at a time.
async fn work(mut rx: mpsc::Receiver<Delivery>, user_agent: &'static str) {
    let client = match reqwest::Client::builder().timeout(TIMEOUT).user_agent(user_agent).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; webhooks are off");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(delivery) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let client = client.clone();
        tokio::spawn(async move {
            deliver(&client, &delivery).await;
            drop(permit);
        });
    }
}

/// POSTs until a 2xx, a final refusal (4xx other than 408 and 429), or the last attempt.
async fn deliver(client: &reqwest::Client, d: &Delivery) {
    let (url, id, kind) = (&d.target.url, &d.id, d.event.kind);
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    for attempt in 1..=ATTEMPTS {
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-updraft-event", kind)
            .header("x-updraft-delivery", id)
            .body(d.event.body.to_vec());
        if let Some(key) = &d.target.key {
            request = request.header("x-updraft-signature", signature(key, &d.event.body));
        }
        let outcome = match request.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(%url, delivery = %id, attempt, "webhook delivered");
                return;
            }
            Ok(r) if r.status().is_client_error() && r.status() != 408 && r.status() != 429 => {
                tracing::warn!(%url, delivery = %id, status = %r.status(), "webhook refused; not retried");
                return;
            }
            Ok(r) => format!("status {}", r.status()),
            Err(e) => e.to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(%url, delivery = %id, error = %outcome, attempt, "webhook undelivered; giving up");
            return;
        }
        let wait = backoff.wait();
        tracing::info!(%url, delivery = %id, error = %outcome, attempt, retry_in = ?wait, "webhook failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// `sha256=<hex>` of HMAC-SHA256(key, body): the `X-Updraft-Signature` header.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A random (version 4) UUID.
fn delivery_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn delivery_ids_are_v4_uuids_and_differ() {
        let (a, b) = (delivery_id(), delivery_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]));
    }

    #[test]
    fn bodies_name_what_happened_and_leave_out_what_is_unknown() {
        let failed = WebhookEvent::failed(&FailedRelease {
            namespace: Some("fleet"),
            channel: Some("esp32"),
            device: Some("esp32"),
            version: "1.1.0",
            tag: "v1.1.0",
            digest: "sha256:ab",
            reason: "no signature",
            ..Default::default()
        });
        assert_eq!(failed.kind(), "release.failed");
        let body: serde_json::Value = serde_json::from_slice(failed.body()).unwrap();
        assert_eq!(body["event"], "release.failed");
        assert_eq!((body["namespace"].as_str(), body["channel"].as_str()), (Some("fleet"), Some("esp32")));
        assert_eq!((body["tag"].as_str(), body["reason"].as_str()), (Some("v1.1.0"), Some("no signature")));
        for absent in ["stream", "size", "sha256", "url", "rollback"] {
            assert!(body.get(absent).is_none(), "{absent}: {body}");
        }
        let ready = WebhookEvent::ready(&ReadyRelease {
            channel: "esp32",
            device: "esp32",
            version: "1.0.0",
            size: 4,
            rollback: true,
            ..Default::default()
        });
        let body: serde_json::Value = serde_json::from_slice(ready.body()).unwrap();
        assert_eq!((body["event"].as_str(), body["size"].as_u64()), (Some("release.ready"), Some(4)));
        assert_eq!(body["rollback"], true);
        assert!(body.get("namespace").is_none() && body.get("reason").is_none(), "{body}");
        assert!(body.get("rollout").is_none(), "{body}");
    }

    #[test]
    fn a_paused_rollout_carries_its_step_and_figures() {
        let paused = WebhookEvent::rollout_paused(&PausedRollout {
            namespace: "fleet",
            channel: "esp32",
            device: "esp32",
            version: "1.1.0",
            tag: "v1.1.0",
            digest: "sha256:ab",
            step: 2,
            percentage: 25,
            reason: "BelowThreshold",
            message: "paused at step 2 (25 %): 7 of 10 devices that downloaded 1.1.0 since 12:00 UTC run it",
            downloaded: Some(10),
            running: Some(7),
            threshold: 95,
            min_devices: 10,
            since: 1_800_000_000,
        });
        assert_eq!(paused.kind(), "rollout.paused");
        let body: serde_json::Value = serde_json::from_slice(paused.body()).unwrap();
        assert_eq!((body["event"].as_str(), body["reason"].as_str()), (Some("rollout.paused"), Some("BelowThreshold")));
        assert_eq!((body["namespace"].as_str(), body["version"].as_str()), (Some("fleet"), Some("1.1.0")));
        let rollout = &body["rollout"];
        assert_eq!((rollout["step"].as_i64(), rollout["percentage"].as_i64()), (Some(2), Some(25)));
        assert_eq!((rollout["downloaded"].as_u64(), rollout["running"].as_u64()), (Some(10), Some(7)));
        assert_eq!((rollout["threshold"].as_i64(), rollout["minDevices"].as_i64()), (Some(95), Some(10)));
        assert!(rollout["message"].as_str().unwrap().starts_with("paused at step 2"));
        assert!(body.get("size").is_none() && body.get("url").is_none(), "{body}");
    }
}
