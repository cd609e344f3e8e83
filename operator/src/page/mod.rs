//! The status page, `GET /` (and `/status`) on the operator's admin port: every
//! OtaGateway with its channels (versions, rollout, census chart, adoption), streams and
//! mirrors, and the recent events about them. Read-only, one server-rendered document
//! (`render`, a pure function of a [`View`]) with no script and no external asset.
//!
//! It reads the controllers' shared caches, so it costs the API server one list of
//! Events per request and nothing else. Those caches exist only while the controllers
//! run: before, and on a standby replica under leader election, the page answers 503.
//! It is on the admin port, beside `/metrics`, never on a port devices reach; it shows
//! status only (no Secret, no device id), and the admin port's network policy decides
//! who may read it (`charts/updraft`, `networkPolicy.metricsFrom`).

mod chart;
pub(crate) mod render;

use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use updraft_crds::{ArtifactMirror, FirmwareChannel, ImageStream, OtaGateway};

pub(crate) use render::{EventLine, Events, View};

/// Events shown, newest first.
const RECENT_EVENTS: usize = 20;
/// Events read from the API server per page, the newest [`RECENT_EVENTS`] of them shown.
/// The API server lists in key order (namespace, name), not by time, so in a namespace
/// holding more Updraft events than this (events live an hour by default) a newer one
/// past the first page can be missed; one page keeps the cost of a view bounded.
const EVENTS_READ: u32 = 500;

/// What the page reads: the client (for Events) and the controllers' caches.
pub(crate) struct Source {
    pub client: Client,
    pub namespace: Option<String>,
    pub gateways: Store<OtaGateway>,
    pub channels: Store<FirmwareChannel>,
    pub streams: Store<ImageStream>,
    pub mirrors: Store<ArtifactMirror>,
}

/// Filled once the controllers (and so their caches) exist; the admin server starts
/// before them.
pub(crate) type Slot = Arc<OnceLock<Source>>;

/// Headers of every answer: HTML, never cached, and a policy that forbids any script and
/// any fetch, so even markup that slipped past escaping could neither run nor call out.
const HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
    (header::CACHE_CONTROL, "no-store"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// `GET /`: the page, or 503 while the caches are not filled (or this replica stands by).
pub(crate) async fn page(slot: &Slot, ready: bool) -> Response {
    let Some(source) = slot.get().filter(|_| ready) else {
        let body = "<!DOCTYPE html><title>Updraft status</title><p>Not available yet: this operator replica's caches are not filled, or it stands by for the leader.</p>\n";
        return (StatusCode::SERVICE_UNAVAILABLE, HEADERS, body).into_response();
    };
    let view = View {
        gateways: cloned(&source.gateways),
        channels: cloned(&source.channels),
        streams: cloned(&source.streams),
        mirrors: cloned(&source.mirrors),
        events: recent_events(&source.client, source.namespace.as_deref()).await,
        namespace: source.namespace.clone(),
        now: Timestamp::now(),
    };
    (StatusCode::OK, HEADERS, render::render(&view)).into_response()
}

fn cloned<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> Vec<K> {
    store.state().iter().map(|o| (**o).clone()).collect()
}

/// The newest events about Updraft's kinds. The core/v1 view of Events, because it can
/// select by the involved object's API version on a 1.20 API server (one stored object,
/// whichever group wrote it; kube's recorder writes events.k8s.io/v1).
async fn recent_events(client: &Client, namespace: Option<&str>) -> Events {
    let api: Api<Event> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let selector = format!("involvedObject.apiVersion={}", FirmwareChannel::api_version(&()));
    match api.list(&ListParams::default().fields(&selector).limit(EVENTS_READ)).await {
        Ok(list) => Events::Listed(newest(list.items.iter().filter_map(event_line).collect())),
        Err(e) => {
            tracing::warn!(error = %e, "status page: cannot list events");
            Events::Unavailable(e.to_string())
        }
    }
}

/// The first [`RECENT_EVENTS`] of `lines`, newest first.
fn newest(mut lines: Vec<EventLine>) -> Vec<EventLine> {
    lines.sort_by_key(|l| std::cmp::Reverse(l.time));
    lines.truncate(RECENT_EVENTS);
    lines
}

/// An Event as the page shows it, when it is about one of Updraft's kinds. Its time is
/// the last time it happened: the series' last observation, else the legacy last
/// timestamp, else when it was first recorded.
fn event_line(e: &Event) -> Option<EventLine> {
    let object = &e.involved_object;
    if !object.api_version.as_deref().is_some_and(|v| v.starts_with("updraft.dev/")) {
        return None;
    }
    let time = e
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
    Some(EventLine {
        time,
        type_: e.type_.clone().unwrap_or_else(|| "Normal".into()),
        kind: object.kind.clone().unwrap_or_default(),
        namespace: object.namespace.clone().unwrap_or_default(),
        name: object.name.clone().unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
        count: e.series.as_ref().map(|s| s.count.unwrap_or(1)).or(e.count).unwrap_or(1).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(api_version: &str, reason: &str, at: i64, series: Option<(i32, i64)>) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("e-{reason}"), "namespace": "fleet"},
            "involvedObject": {"apiVersion": api_version, "kind": "FirmwareChannel", "name": "esp32", "namespace": "fleet"},
            "reason": reason, "message": "m", "type": "Normal",
            "eventTime": Timestamp::from_second(at).unwrap().to_string(),
            "series": series.map(|(count, last)| serde_json::json!({"count": count, "lastObservedTime": Timestamp::from_second(last).unwrap().to_string()})),
        }))
        .unwrap()
    }

    #[test]
    fn events_about_updraft_kinds_are_kept_newest_first_at_their_last_occurrence() {
        let events = [
            event("updraft.dev/v1alpha1", "Old", 1_000, None),
            event("apps/v1", "NotOurs", 5_000, None),
            // First seen before "New", repeated since: it sorts by its last time.
            event("updraft.dev/v1alpha1", "Repeated", 500, Some((4, 3_000))),
            event("updraft.dev/v1alpha1", "New", 2_000, None),
        ];
        let lines = newest(events.iter().filter_map(event_line).collect());
        let reasons: Vec<&str> = lines.iter().map(|l| l.reason.as_str()).collect();
        assert_eq!(reasons, ["Repeated", "New", "Old"]);
        assert_eq!((lines[0].count, lines[1].count), (4, 1));
        assert_eq!(lines[0].time, Some(Timestamp::from_second(3_000).unwrap()));
    }

    /// Before the controllers run (or on a standby replica) there is nothing to show.
    #[tokio::test]
    async fn the_page_answers_503_until_the_caches_are_filled() {
        let slot = Slot::default();
        for ready in [false, true] {
            let answer = page(&slot, ready).await;
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(answer.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap(), HEADERS[2].1);
        }
    }

    /// Once filled and ready: the page, with the events the API server lists for the
    /// selector on Updraft's API version.
    #[tokio::test]
    async fn the_page_lists_events_by_the_api_version_of_updrafts_kinds() {
        use kube::runtime::reflector;
        let client = crate::fixtures::api(|method, uri, _| {
            assert_eq!(method, "GET");
            assert!(
                uri.starts_with("/api/v1/namespaces/fleet/events?")
                    && uri.contains("fieldSelector=involvedObject.apiVersion%3Dupdraft.dev%2Fv1alpha1"),
                "{uri}"
            );
            let list = serde_json::json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": [
                event("updraft.dev/v1alpha1", "NewVersion", 1_000, None),
            ]});
            (200, serde_json::to_vec(&list).unwrap())
        });
        let slot = Slot::default();
        let _ = slot.set(Source {
            client,
            namespace: Some("fleet".into()),
            gateways: reflector::store().0,
            channels: reflector::store().0,
            streams: reflector::store().0,
            mirrors: reflector::store().0,
        });
        assert_eq!(page(&slot, false).await.status(), StatusCode::SERVICE_UNAVAILABLE);
        let answer = page(&slot, true).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(html.contains("<tr data-reason=\"NewVersion\">"), "{html}");
        assert!(html.contains("id=\"no-gateways\""));
    }

    #[test]
    fn at_most_the_newest_twenty_events_are_shown() {
        let events: Vec<Event> =
            (0..30).map(|i| event("updraft.dev/v1alpha1", &format!("R{i}"), 1_000 + i, None)).collect();
        let lines = newest(events.iter().filter_map(event_line).collect());
        assert_eq!(lines.len(), RECENT_EVENTS);
        assert_eq!((lines[0].reason.as_str(), lines[19].reason.as_str()), ("R29", "R10"));
    }
}
