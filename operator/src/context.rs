//! What every reconcile shares: the Kubernetes client, the network clients, the
//! resolver, the shared caches, the per-object schedules of every kind, metrics and the
//! event recorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource};
use updraft_crds::{ArtifactMirror, FirmwareChannel, ImageStream, OtaGateway};

use crate::census::Census;
use crate::clients::Clients;
use crate::metrics::Metrics;
use crate::resolve::{Resolution, Resolver};
use crate::schedule::Schedule;

/// The field manager of every server-side apply the operator makes.
pub(crate) const FIELD_MANAGER: &str = "updraft-operator";

pub(crate) struct Context {
    pub client: Client,
    pub resolver: Arc<dyn Resolver>,
    /// Registry and store clients, one per purpose for the whole process.
    pub clients: Clients,
    pub metrics: Metrics,
    pub recorder: Events,
    /// Image of OtaGateways that name none.
    pub gateway_image: String,
    /// The shared FirmwareChannel cache (the one that triggers both controllers).
    pub channels: Store<FirmwareChannel>,
    /// The shared OtaGateway cache.
    pub gateways: Store<OtaGateway>,
    /// The shared ImageStream cache (the gateway controller renders from it).
    pub streams: Store<ImageStream>,
    /// The shared ArtifactMirror cache (the gateway controller renders from it).
    pub mirrors: Store<ArtifactMirror>,
    pub schedules: Schedules,
    /// The device census merged from every gateway's replicas.
    pub census: Census,
    /// The gateways' config endpoint, when it runs (`--config-addr`).
    pub delivery: Option<crate::delivery::Delivery>,
    /// True once all four caches hold what the API server listed ([`Context::synced`]).
    pub synced: tokio::sync::watch::Receiver<bool>,
}

/// One [`Schedule`] per kind: registry checks and retries of each object.
#[derive(Default)]
pub(crate) struct Schedules {
    pub gateways: Schedule<OtaGateway>,
    /// A check resolves the channel's version.
    pub channels: Schedule<FirmwareChannel, Resolution>,
    /// A check lists the stream's repository.
    pub streams: Schedule<ImageStream, Observation>,
    /// A check lists the mirror's source and destination and plans.
    pub mirrors: Schedule<ArtifactMirror, MirrorObservation>,
}

impl Context {
    /// Waits until the four caches are filled. Every reconcile starts with it: each
    /// controller waits for its own cache only, and one that reads another before it is
    /// filled acts on a part of it. A restarted operator rendered every gateway with
    /// `channels: []` (its gateway cache was filled, its 10,000 channels were not yet)
    /// and wrote that to each ConfigMap before the full one, in `e2e/scripts/scale.sh`.
    pub async fn synced(&self) {
        // An error is a dropped sender: the controllers are stopping.
        let _ = self.synced.clone().wait_for(|synced| *synced).await;
    }

    /// Publishes an event of `type_` (`Normal` or `Warning`) about `obj`; failures are
    /// logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, type_: EventType, reason: &str, note: String) {
        let event =
            Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// How long a note's recorder is kept after its last event: kube's series window (its
/// recorder's `CACHE_TTL`, 6 minutes).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// The event recorder, keyed by note as well. kube's [`Recorder`] takes an event of the
/// same object, type, reason and action within 6 minutes for a repeat of the last one
/// (its note is not in its key) and only counts it (`series.count`), so a second
/// transition was lost: the second patch found (`DeltaBuilt`, `e2e/tests/deltas.rs`),
/// the next release resolved soon after one (`NewVersion`). As client-go's events/v1
/// recorder (kubernetes#112365), the note is part of the key here: one kube recorder
/// per note, so repeats of one note still form a series and another note is an event
/// of its own; a note's recorder goes once its window has passed.
pub(crate) struct Events {
    client: Client,
    reporter: Reporter,
    by_note: Mutex<HashMap<String, (Recorder, Instant)>>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter, by_note: Mutex::default() }
    }

    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let recorder = self.recorder(event.note.as_deref().unwrap_or_default(), Instant::now());
        recorder.publish(event, regarding).await
    }

    /// The recorder of `note` (a new one when none published it within the window).
    fn recorder(&self, note: &str, now: Instant) -> Recorder {
        let mut by_note = self.by_note.lock().expect("the recorders' lock is never poisoned");
        by_note.retain(|_, (_, used)| now.duration_since(*used) < SERIES_WINDOW);
        let (recorder, used) = by_note
            .entry(note.to_owned())
            .or_insert_with(|| (Recorder::new(self.client.clone(), self.reporter.clone()), now));
        *used = now;
        recorder.clone()
    }
}

/// What one look at an ImageStream's source found (the result its schedule keeps).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Observation {
    /// Products (`os:release:arch:variant`) with at least one version in the index.
    pub products: usize,
    /// Image versions in the index (at most `keepVersions` per product).
    pub versions: usize,
    /// Why the gateway refuses to publish this index, when it does (an alias two
    /// products claim, `updraft_core::simplestreams::check_aliases`): it keeps serving
    /// the last index it published, and these counts are not it.
    pub refused: Option<String>,
    /// Tags or upstream versions left out: not an image, deleted, or unreadable.
    pub skipped: usize,
    /// Tags of an OCI or upload source that are not image versions, each with why
    /// (`tag <tag> (<digest>): <reason>`), sorted.
    pub left_out: Vec<String>,
    /// Under `spec.verify`: versions whose signature verified.
    pub verified: usize,
    /// Under `spec.verify`: versions left out because their signature did not verify.
    pub unverified: Vec<Unverified>,
}

/// An image version whose signature did not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unverified {
    pub tag: String,
    pub digest: String,
    /// `NoSignature`, `WrongKey`, … ([`updraft_core::cosign::VerifyError::reason`]).
    pub reason: &'static str,
    /// Why, in words.
    pub message: String,
}

/// What one look at an ArtifactMirror's source and destination found: the worker's
/// next pass (the result its schedule keeps).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct MirrorObservation {
    /// Selected artifacts identical on both sides.
    pub in_sync: usize,
    /// Names to copy, with the time the source gives each (0 when it gives none).
    pub copy: Vec<(String, f64)>,
    /// Names to delete at the destination (retention), with their time there.
    pub delete: Vec<(String, f64)>,
    /// Newest version among what the destination holds identical to the source.
    pub latest_version: Option<String>,
    /// When it was observed (seconds since the epoch).
    pub at: i64,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kube::runtime::events::{EventType, Reporter};
    use kube::Resource;

    use super::*;
    use crate::fixtures;

    #[tokio::test]
    async fn another_note_is_another_event_and_a_repeated_one_a_series() {
        // The API server: each request's method, the event's name and note, and its series count.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let client = fixtures::api(move |method, _, body| {
            let event: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let name = event["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let note = event["note"].as_str().unwrap_or_default().to_owned();
            log.lock().unwrap().push((method.to_owned(), name, note, event["series"]["count"].as_i64()));
            (if method == "POST" { 201 } else { 200 }, body.to_vec())
        });
        let events = Events::new(client, Reporter { controller: "updraft-operator".into(), instance: None });
        let channel = fixtures::channel("esp32", None, None);
        let regarding = channel.object_ref(&());
        let event = |note: &str| Event {
            type_: EventType::Normal,
            reason: "DeltaBuilt".into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        for note in ["delta 1.0.0 -> 1.2.0 found", "delta 1.1.0 -> 1.2.0 found", "delta 1.0.0 -> 1.2.0 found"] {
            events.publish(&event(note), &regarding).await.unwrap();
        }
        let seen = seen.lock().unwrap().clone();
        let calls: Vec<(&str, &str, Option<i64>)> =
            seen.iter().map(|(m, _, note, count)| (m.as_str(), note.as_str(), *count)).collect();
        assert_eq!(
            calls,
            [
                ("POST", "delta 1.0.0 -> 1.2.0 found", None),
                ("POST", "delta 1.1.0 -> 1.2.0 found", None),
                ("PATCH", "delta 1.0.0 -> 1.2.0 found", Some(2)),
            ],
            "kube's recorder alone sends POST, PATCH (count 2), PATCH (count 3) with the first note"
        );
        assert_eq!(seen[2].1, seen[0].1, "the repeat counts on the first event");

        // A note's recorder goes once its window has passed.
        let later = Instant::now() + SERIES_WINDOW;
        events.recorder("another", later);
        assert_eq!(events.by_note.lock().unwrap().len(), 1);
    }
}
