//! Webhooks for people and CI: the gateway's events in the one body, signature and
//! delivery implementation the operator shares ([`updraft_core::notify`]): a JSON POST
//! per event and receiver, signed with HMAC-SHA256 over the exact body, from a bounded
//! queue drained by a background worker that retries with growing backoff. Callers only
//! enqueue.

use updraft_core::notify::{FailedRelease, ReadyRelease, WebhookEvent, WebhookSender};

pub(super) use updraft_core::notify::WebhookTarget as Target;

use super::{Failure, Release};

/// One event, serialized once for every receiver.
pub(super) struct Event(WebhookEvent);

impl Event {
    /// `release.ready`: the release is cached, verified and served; `rollback` when its
    /// version is lower than the one the channel announced before.
    pub(super) fn ready(r: &Release, rollback: bool) -> Self {
        Self(WebhookEvent::ready(&ReadyRelease {
            channel: &r.channel,
            device: &r.device,
            version: &r.version,
            tag: &r.tag,
            digest: &r.digest,
            size: r.size,
            sha256: &r.sha256,
            crc32: r.crc32,
            url: &r.url,
            rollback,
        }))
    }

    /// `release.failed`: the payload could not be fetched, unpacked or verified; the
    /// release is not served.
    pub(super) fn failed(f: &Failure) -> Self {
        Self(WebhookEvent::failed(&FailedRelease {
            channel: Some(&f.channel),
            device: Some(&f.device),
            version: &f.version,
            tag: &f.tag,
            digest: &f.digest,
            reason: &f.reason,
            ..Default::default()
        }))
    }
}

/// The queue and the current receivers.
pub(super) struct Sender(WebhookSender);

impl Sender {
    /// Starts the worker.
    pub(super) fn start() -> Self {
        Self(WebhookSender::start(concat!("updraft-ota-gateway/", env!("CARGO_PKG_VERSION"))))
    }

    /// Receivers of events sent from now on (queued deliveries keep theirs).
    pub(super) fn set_targets(&self, targets: Vec<Target>) {
        self.0.set_targets(targets);
    }

    /// Queues `event` for every receiver; never waits.
    pub(super) fn send(&self, event: Event) {
        self.0.send(&event.0);
    }
}
