//! Webhooks for people and CI: one JSON POST per event and receiver, signed with
//! HMAC-SHA256 over the exact body, from a bounded queue drained by a background worker
//! that retries with growing backoff. Callers only enqueue.
//!
//! Headers: `Content-Type: application/json`, `X-Updraft-Event` (`release.ready` or
//! `release.failed`), `X-Updraft-Delivery` (a random UUID, the same on every retry of
//! one delivery) and, when the receiver has a key, `X-Updraft-Signature:
//! sha256=<hex HMAC-SHA256 of the body>`.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{mpsc, Semaphore};

use super::{Failure, Release};

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
#[derive(Clone)]
pub(super) struct Target {
    pub(super) url: String,
    pub(super) key: Option<Vec<u8>>,
}

/// One event, serialized once for every receiver.
pub(super) struct Event {
    kind: &'static str,
    body: Vec<u8>,
}

/// The JSON body of every event.
#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    /// Seconds since the Unix epoch.
    time: u64,
    channel: &'a str,
    device: &'a str,
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
}

impl Event {
    /// `release.ready`: the release is cached, verified and served; `rollback` when its
    /// version is lower than the one the channel announced before.
    pub(super) fn ready(r: &Release, rollback: bool) -> Self {
        let body = Body {
            event: "release.ready",
            time: now(),
            channel: &r.channel,
            device: &r.device,
            version: &r.version,
            tag: &r.tag,
            digest: &r.digest,
            size: Some(r.size),
            sha256: Some(&r.sha256),
            crc32: Some(r.crc32),
            url: Some(&r.url),
            reason: None,
            rollback,
        };
        Self { kind: body.event, body: serde_json::to_vec(&body).expect("body serializes") }
    }

    /// `release.failed`: the payload could not be fetched, unpacked or verified; the
    /// release is not served.
    pub(super) fn failed(f: &Failure) -> Self {
        let body = Body {
            event: "release.failed",
            time: now(),
            channel: &f.channel,
            device: &f.device,
            version: &f.version,
            tag: &f.tag,
            digest: &f.digest,
            size: None,
            sha256: None,
            crc32: None,
            url: None,
            reason: Some(&f.reason),
            rollback: false,
        };
        Self { kind: body.event, body: serde_json::to_vec(&body).expect("body serializes") }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// One POST to one receiver.
struct Delivery {
    id: String,
    kind: &'static str,
    body: Arc<[u8]>,
    target: Target,
}

/// The queue and the current receivers.
pub(super) struct Sender {
    queue: mpsc::Sender<Delivery>,
    targets: RwLock<Vec<Target>>,
}

impl Sender {
    /// Starts the worker.
    pub(super) fn start() -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(work(rx));
        Self { queue, targets: RwLock::new(Vec::new()) }
    }

    /// Receivers of events sent from now on (queued deliveries keep theirs).
    pub(super) fn set_targets(&self, targets: Vec<Target>) {
        *self.targets.write().expect("targets lock") = targets;
    }

    /// Queues `event` for every receiver; never waits.
    pub(super) fn send(&self, event: Event) {
        let body: Arc<[u8]> = event.body.into();
        for target in self.targets.read().expect("targets lock").iter() {
            let delivery = Delivery { id: delivery_id(), kind: event.kind, body: body.clone(), target: target.clone() };
            if let Err(e) = self.queue.try_send(delivery) {
                tracing::warn!(url = %target.url, event = event.kind, error = %e, "webhook queue full; event dropped");
            }
        }
    }
}

/// Drains the queue, `CONCURRENCY` deliveries at a time.
async fn work(mut rx: mpsc::Receiver<Delivery>) {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("updraft-ota-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
    {
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
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let mut request = client
            .post(&d.target.url)
            .header("content-type", "application/json")
            .header("x-updraft-event", d.kind)
            .header("x-updraft-delivery", &d.id)
            .body(d.body.to_vec());
        if let Some(key) = &d.target.key {
            request = request.header("x-updraft-signature", signature(key, &d.body));
        }
        let outcome = match request.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(url = %d.target.url, delivery = %d.id, attempt, "webhook delivered");
                return;
            }
            Ok(r) if r.status().is_client_error() && r.status() != 408 && r.status() != 429 => {
                tracing::warn!(url = %d.target.url, delivery = %d.id, status = %r.status(), "webhook refused; not retried");
                return;
            }
            Ok(r) => format!("status {}", r.status()),
            Err(e) => e.to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(url = %d.target.url, delivery = %d.id, error = %outcome, attempt, "webhook undelivered; giving up");
            return;
        }
        tracing::info!(url = %d.target.url, delivery = %d.id, error = %outcome, attempt, retry_in = ?backoff, "webhook failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// `sha256=<hex>` of HMAC-SHA256(key, body).
fn signature(key: &[u8], body: &[u8]) -> String {
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
}
