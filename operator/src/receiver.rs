//! The registry notification receiver: a push to a repository makes every
//! FirmwareChannel, ImageStream and ArtifactMirror whose source is that repository
//! check it now, instead of at its next interval (which stays as the safety net).
//!
//! `POST /webhook` takes the CNCF distribution registry's notification envelope
//! (`events[]` with `action: push`, `target.repository`, `request.host`) and Harbor's
//! `PUSH_ARTIFACT` webhook (`event_data.repository.repo_full_name`,
//! `resources[].resource_url`). Every request must carry the receiver's token as
//! `Authorization: Bearer <token>` (or the bare token, as Harbor's "auth header" sends
//! it); anything else gets 401 with a JSON reason before its body is read. The token is
//! the `token` key of a Secret, re-read every 30 s.
//!
//! A matched object is expedited in its kind's schedule and its `ObjectRef` sent to
//! its controller's `reconcile_on` stream. Each object is queued at most once until its
//! controller takes it, and the controller runs at most one reconcile per object with
//! at most one more queued behind it, so a flood of notifications costs one or two
//! registry checks per object and leaves every other object's work alone.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{debug, info, warn};
use updraft_crds::common::OciSource;
use updraft_crds::{ArtifactMirror, FirmwareChannel, ImageStream};

use crate::context::Context;
use crate::metrics::Metrics;

/// Largest request body read; distribution batches events, a few kB each.
const BODY_LIMIT: usize = 1 << 20;
/// How often the token Secret is read again (a rotated token applies within this).
const TOKEN_REFRESH: Duration = Duration::from_secs(30);
/// The key of the token in its Secret.
const TOKEN_KEY: &str = "token";

/// How the receiver is set up (from the operator's flags).
pub struct WebhookSettings {
    /// Address the receiver listens on.
    pub addr: SocketAddr,
    /// The Secret holding the token (key `token`).
    pub token_secret: String,
    /// The Secret's namespace (the operator's own).
    pub namespace: String,
    /// Match the registry host of a notification too, not only the repository.
    pub match_host: bool,
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on the webhook address {addr}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// The receiver, shared by its server and the controllers. It answers 503 until
/// [`Receiver::start`] hands it the controllers (so a standby replica refuses work).
#[derive(Clone)]
pub(crate) struct Receiver {
    token: Arc<RwLock<Option<[u8; 32]>>>,
    match_host: bool,
    metrics: Metrics,
    targets: Arc<OnceLock<Targets>>,
}

/// What a notification can trigger: the caches to match in and the controllers' queues.
struct Targets {
    ctx: Arc<Context>,
    streams: Store<ImageStream>,
    mirrors: Store<ArtifactMirror>,
    channel_queue: Queue<FirmwareChannel>,
    stream_queue: Queue<ImageStream>,
    mirror_queue: Queue<ArtifactMirror>,
}

/// A trigger queue that holds each object at most once until the controller takes it.
pub(crate) struct Queue<K: Resource<DynamicType = ()>> {
    tx: mpsc::UnboundedSender<ObjectRef<K>>,
    queued: Arc<Mutex<HashSet<ObjectRef<K>>>>,
}

impl<K: Resource<DynamicType = ()>> Clone for Queue<K> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), queued: self.queued.clone() }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Queue<K>
where
    ObjectRef<K>: Hash + Eq,
{
    /// The queue and the stream for [`kube::runtime::Controller::reconcile_on`].
    pub(crate) fn new() -> (Self, impl Stream<Item = ObjectRef<K>> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded();
        let queued: Arc<Mutex<HashSet<ObjectRef<K>>>> = Arc::default();
        let taken = queued.clone();
        let stream = rx.inspect(move |r: &ObjectRef<K>| {
            taken.lock().expect("trigger queue").remove(r);
        });
        (Self { tx, queued }, stream)
    }

    /// Queues `r` unless it is queued already.
    pub(crate) fn push(&self, r: ObjectRef<K>) {
        if self.queued.lock().expect("trigger queue").insert(r.clone()) {
            let _ = self.tx.unbounded_send(r);
        }
    }
}

/// One pushed repository, as a notification names it.
#[derive(Debug, PartialEq, Eq)]
struct Push {
    /// The registry host as the registry saw the request (distribution's
    /// `request.host`), or the host part of Harbor's `resource_url`.
    host: Option<String>,
    repository: String,
}

impl Receiver {
    pub(crate) fn new(match_host: bool, metrics: Metrics) -> Self {
        Self { token: Arc::default(), match_host, metrics, targets: Arc::default() }
    }

    /// Serves the receiver on `addr` (bound now, so a taken port fails at start-up).
    pub(crate) async fn serve(&self, addr: SocketAddr) -> Result<(), BindError> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| BindError { addr, source })?;
        info!(%addr, "webhook receiver (POST /webhook)");
        let router = Router::new().route("/webhook", post(webhook)).with_state(self.clone());
        tokio::spawn(crate::serve::serve(listener, router));
        Ok(())
    }

    /// Keeps the token in step with its Secret, until the process ends.
    pub(crate) fn watch_token(&self, client: Client, namespace: String, name: String) {
        let token = self.token.clone();
        tokio::spawn(async move {
            let secrets: Api<Secret> = Api::namespaced(client, &namespace);
            let mut tick = tokio::time::interval(TOKEN_REFRESH);
            loop {
                tick.tick().await;
                let read = match secrets.get_opt(&name).await {
                    Ok(found) => token_of(found.as_ref(), &namespace, &name),
                    Err(e) => {
                        warn!(error = %e, "cannot read the webhook token Secret; keeping the last token");
                        continue;
                    }
                };
                let new = match read {
                    Ok(t) => Some(t),
                    Err(message) => {
                        warn!(%message, "webhook receiver rejects every request until the token is set");
                        None
                    }
                };
                *token.write().expect("token lock") = new;
            }
        });
    }

    /// From now on, notifications trigger these controllers' queues.
    pub(crate) fn start(
        &self,
        ctx: Arc<Context>,
        stores: (Store<ImageStream>, Store<ArtifactMirror>),
        queues: (Queue<FirmwareChannel>, Queue<ImageStream>, Queue<ArtifactMirror>),
    ) {
        let (streams, mirrors) = stores;
        let (channel_queue, stream_queue, mirror_queue) = queues;
        let targets = Targets { ctx, streams, mirrors, channel_queue, stream_queue, mirror_queue };
        if self.targets.set(targets).is_err() {
            warn!("webhook receiver started twice; keeping the first controllers");
        }
    }

    /// Whether `headers` carry the token.
    fn authorized(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(expected) = *self.token.read().expect("token lock") else {
            return Err("the receiver has no token configured");
        };
        let given = headers.get(header::AUTHORIZATION).ok_or("missing Authorization header")?;
        let given = given.as_bytes();
        let given = given.strip_prefix(b"Bearer ").unwrap_or(given);
        let given = updraft_core::secret::key(given).ok_or("empty token")?;
        // Digests have one length, so the comparison time says nothing about the token.
        if bool::from(digest(given).ct_eq(&expected)) {
            Ok(())
        } else {
            Err("wrong token")
        }
    }

    /// Expedites and queues every object whose source is a pushed repository; returns
    /// how many were triggered.
    fn trigger(&self, targets: &Targets, pushes: &[Push]) -> usize {
        let hit = |source: &OciSource| {
            pushes.iter().any(|p| {
                p.repository == source.repository
                    && (!self.match_host || p.host.as_deref().is_none_or(|h| h == source.registry))
            })
        };
        let schedules = &targets.ctx.schedules;
        let mut triggered = 0;
        for channel in targets.ctx.channels.state().iter().filter(|c| hit(&c.spec.source)) {
            schedules.channels.expedite(channel);
            targets.channel_queue.push(ObjectRef::from_obj(channel.as_ref()));
            self.metrics.webhook_trigger("FirmwareChannel");
            triggered += 1;
        }
        for stream in targets.streams.state().iter().filter(|s| s.spec.source.oci.as_ref().is_some_and(hit)) {
            schedules.streams.expedite(stream);
            targets.stream_queue.push(ObjectRef::from_obj(stream.as_ref()));
            self.metrics.webhook_trigger("ImageStream");
            triggered += 1;
        }
        for mirror in targets.mirrors.state().iter().filter(|m| m.spec.source.oci.as_ref().is_some_and(hit)) {
            schedules.mirrors.expedite(mirror);
            targets.mirror_queue.push(ObjectRef::from_obj(mirror.as_ref()));
            self.metrics.webhook_trigger("ArtifactMirror");
            triggered += 1;
        }
        triggered
    }
}

/// Why the receiver has no token: every request is refused until the Secret is fixed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum TokenError {
    #[error("Secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {TOKEN_KEY:?}, or it is empty or only whitespace")]
    NoToken { namespace: String, name: String },
}

/// The digest of the token in `secret` (key [`TOKEN_KEY`], read as every key is:
/// trimmed, and refused when empty or only whitespace), or why there is none.
fn token_of(secret: Option<&Secret>, namespace: &str, name: &str) -> Result<[u8; 32], TokenError> {
    let Some(secret) = secret else {
        return Err(TokenError::NotFound { namespace: namespace.to_owned(), name: name.to_owned() });
    };
    let value = secret.data.as_ref().and_then(|d| d.get(TOKEN_KEY));
    value
        .and_then(|t| updraft_core::secret::key(&t.0))
        .map(digest)
        .ok_or_else(|| TokenError::NoToken { namespace: namespace.to_owned(), name: name.to_owned() })
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn reject(status: StatusCode, reason: &str) -> Response {
    (status, Json(serde_json::json!({ "error": reason }))).into_response()
}

/// `POST /webhook`: authenticate, parse, trigger.
async fn webhook(State(receiver): State<Receiver>, request: Request) -> Response {
    let metrics = &receiver.metrics;
    if let Err(reason) = receiver.authorized(request.headers()) {
        metrics.webhook_event("unauthorized");
        debug!(reason, "webhook rejected");
        return reject(StatusCode::UNAUTHORIZED, reason);
    }
    let Some(targets) = receiver.targets.get() else {
        metrics.webhook_event("unavailable");
        return reject(StatusCode::SERVICE_UNAVAILABLE, "the controllers are not running on this replica");
    };
    let body = match axum::body::to_bytes(Body::new(request.into_body()), BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            metrics.webhook_event("invalid");
            return reject(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB or unreadable");
        }
    };
    let pushes = match pushes(&body) {
        Ok(pushes) => pushes,
        Err(e) => {
            metrics.webhook_event("invalid");
            return reject(
                StatusCode::BAD_REQUEST,
                &format!("neither a distribution envelope nor a Harbor event: {e}"),
            );
        }
    };
    let triggered = if pushes.is_empty() { 0 } else { receiver.trigger(targets, &pushes) };
    metrics.webhook_event(if triggered > 0 { "triggered" } else { "ignored" });
    debug!(pushes = pushes.len(), triggered, "webhook");
    Json(serde_json::json!({ "pushes": pushes.len(), "triggered": triggered })).into_response()
}

/// The distribution registry's envelope.
#[derive(Deserialize)]
struct Envelope {
    events: Vec<DistributionEvent>,
}

#[derive(Deserialize)]
struct DistributionEvent {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: DistributionTarget,
    #[serde(default)]
    request: DistributionRequest,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DistributionTarget {
    #[serde(default)]
    repository: String,
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    url: String,
}

#[derive(Default, Deserialize)]
struct DistributionRequest {
    #[serde(default)]
    host: String,
}

/// Harbor's webhook payload.
#[derive(Deserialize)]
struct HarborEvent {
    #[serde(rename = "type")]
    type_: String,
    event_data: HarborData,
}

#[derive(Deserialize)]
struct HarborData {
    #[serde(default)]
    resources: Vec<HarborResource>,
    repository: HarborRepository,
}

#[derive(Deserialize)]
struct HarborResource {
    #[serde(default)]
    resource_url: String,
}

#[derive(Deserialize)]
struct HarborRepository {
    repo_full_name: String,
}

/// [`pushes`] as (host, repository) pairs, for the fuzz tests (`operator/tests/fuzz_*.rs`).
#[doc(hidden)]
pub fn pushed_repositories(body: &[u8]) -> Result<Vec<(Option<String>, String)>, serde_json::Error> {
    Ok(pushes(body)?.into_iter().map(|p| (p.host, p.repository)).collect())
}

/// The pushed repositories a notification names (empty: nothing pushed, e.g. pulls or
/// blob uploads, which come before their manifest).
fn pushes(body: &[u8]) -> Result<Vec<Push>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    if value.get("events").is_some() {
        let envelope: Envelope = serde_json::from_value(value)?;
        let manifest = |t: &DistributionTarget| {
            !t.tag.is_empty() || t.url.contains("/manifests/") || t.media_type.contains("manifest")
        };
        let mut pushes: Vec<Push> = Vec::new();
        for e in envelope.events.into_iter().filter(|e| e.action == "push" && manifest(&e.target)) {
            let push =
                Push { host: (!e.request.host.is_empty()).then_some(e.request.host), repository: e.target.repository };
            if !pushes.contains(&push) {
                pushes.push(push);
            }
        }
        return Ok(pushes);
    }
    let event: HarborEvent = serde_json::from_value(value)?;
    if event.type_ != "PUSH_ARTIFACT" {
        return Ok(Vec::new());
    }
    let repository = event.event_data.repository.repo_full_name;
    let mut hosts: Vec<Option<String>> = event
        .event_data
        .resources
        .iter()
        .map(|r| r.resource_url.split_once('/').map(|(host, _)| host.to_owned()))
        .collect();
    hosts.dedup();
    if hosts.is_empty() {
        hosts.push(None);
    }
    Ok(hosts.into_iter().map(|host| Push { host, repository: repository.clone() }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISTRIBUTION: &str = r#"{"events": [
        {"id": "1", "action": "push", "target": {"mediaType": "application/octet-stream", "digest": "sha256:aa",
         "repository": "fw/esp32", "url": "http://r:5000/v2/fw/esp32/blobs/sha256:aa"},
         "request": {"host": "r:5000", "method": "PUT"}},
        {"id": "2", "action": "push", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": "sha256:bb", "repository": "fw/esp32", "url": "http://r:5000/v2/fw/esp32/manifests/sha256:bb",
         "tag": "1.2.0"}, "request": {"host": "r:5000", "method": "PUT"}},
        {"id": "3", "action": "pull", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "repository": "fw/stm32", "tag": "1.0.0"}, "request": {"host": "r:5000"}}
    ]}"#;

    const HARBOR: &str = r#"{"type": "PUSH_ARTIFACT", "occur_at": 1700000000, "operator": "ci",
        "event_data": {"resources": [{"digest": "sha256:cc", "tag": "2.0.0",
          "resource_url": "harbor.example.com/library/fw:2.0.0"}],
         "repository": {"date_created": 1, "name": "fw", "namespace": "library",
          "repo_full_name": "library/fw", "repo_type": "private"}}}"#;

    #[test]
    fn distribution_pushes_of_manifests_count_blobs_and_pulls_do_not() {
        let pushes = pushes(DISTRIBUTION.as_bytes()).unwrap();
        assert_eq!(pushes, [Push { host: Some("r:5000".into()), repository: "fw/esp32".into() }]);
    }

    #[test]
    fn harbor_push_artifact_names_the_repository_and_host() {
        let pushes = pushes(HARBOR.as_bytes()).unwrap();
        assert_eq!(pushes, [Push { host: Some("harbor.example.com".into()), repository: "library/fw".into() }]);
        let deleted = HARBOR.replace("PUSH_ARTIFACT", "DELETE_ARTIFACT");
        assert_eq!(super::pushes(deleted.as_bytes()).unwrap(), []);
    }

    #[test]
    fn other_bodies_are_invalid() {
        assert!(pushes(b"not json").is_err());
        assert!(pushes(br#"{"hello": "world"}"#).is_err());
    }

    fn receiver_with(token: &str) -> Receiver {
        let receiver = Receiver::new(false, Metrics::default());
        *receiver.token.write().unwrap() = Some(digest(token.as_bytes()));
        receiver
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = authorization {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_token_is_authorized() {
        let receiver = receiver_with("s3cret");
        assert_eq!(receiver.authorized(&headers(Some("Bearer s3cret"))), Ok(()));
        assert_eq!(receiver.authorized(&headers(Some("s3cret"))), Ok(()), "Harbor sends the header verbatim");
        assert_eq!(receiver.authorized(&headers(Some("Bearer s3cre"))), Err("wrong token"));
        assert_eq!(receiver.authorized(&headers(Some("Bearer "))), Err("empty token"));
        assert_eq!(receiver.authorized(&headers(None)), Err("missing Authorization header"));
        let unset = Receiver::new(false, Metrics::default());
        assert_eq!(unset.authorized(&headers(Some("Bearer s3cret"))), Err("the receiver has no token configured"));
    }

    /// A token Secret holding only whitespace is no token (it used to be accepted as
    /// configured and then trim to empty); a newline around a real one is not part of it.
    #[test]
    fn a_whitespace_token_secret_configures_no_token() {
        let secret = |value: &str| Secret {
            data: Some([(TOKEN_KEY.to_owned(), k8s_openapi::ByteString(value.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        let no_token = TokenError::NoToken { namespace: "ns".into(), name: "hook".into() };
        for blank in ["", " ", "\n", " \t\r\n"] {
            assert_eq!(token_of(Some(&secret(blank)), "ns", "hook"), Err(no_token.clone()), "{blank:?}");
        }
        assert_eq!(token_of(Some(&Secret::default()), "ns", "hook"), Err(no_token.clone()), "no data");
        assert!(
            no_token.to_string().ends_with("has no key \"token\", or it is empty or only whitespace"),
            "{no_token}"
        );
        let not_found = token_of(None, "ns", "hook").unwrap_err();
        assert_eq!(not_found.to_string(), "Secret ns/hook not found");
        assert_eq!(token_of(Some(&secret("s3cret\n")), "ns", "hook"), Ok(digest(b"s3cret")));
        let receiver = receiver_with("s3cret");
        assert_eq!(receiver.authorized(&headers(Some("Bearer  s3cret "))), Ok(()));
        assert_eq!(receiver.authorized(&headers(Some("Bearer   "))), Err("empty token"));
    }

    struct NoRegistry;

    impl crate::resolve::Resolver for NoRegistry {
        fn resolve<'a>(
            &'a self,
            _request: crate::resolve::ResolveRequest<'a>,
        ) -> futures::future::BoxFuture<'a, crate::error::Result<crate::resolve::Resolution>> {
            unreachable!("matching a notification asks no registry")
        }
    }

    fn filled<K>(objects: Vec<K>) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (store, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
        for o in objects {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(o));
        }
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        store
    }

    fn oci(registry: &str, repository: &str) -> OciSource {
        OciSource { registry: registry.into(), repository: repository.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn a_push_triggers_exactly_the_objects_on_that_repository() {
        use updraft_crds::{ArtifactMirrorSpec, ImageStreamSpec};
        let client = crate::fixtures::api(|_, _, _| (200, b"{}".to_vec()));
        let mut ctx = crate::fixtures::context(client, Arc::new(NoRegistry));
        let mut on_repo = crate::fixtures::channel("esp32", None, None); // fw/esp32 on 127.0.0.1:15000
        on_repo.metadata.uid = Some("u1".into());
        let mut elsewhere = crate::fixtures::channel("esp32", None, None);
        elsewhere.metadata.name = Some("elsewhere".into());
        elsewhere.spec.source.registry = "other.example:5000".into();
        let other_repo = crate::fixtures::channel("stm32", None, None);
        ctx.channels = filled(vec![on_repo.clone(), elsewhere, other_repo]);
        let mut stream = ImageStream::new("imgs", ImageStreamSpec::default());
        stream.metadata.namespace = Some("fleet".into());
        stream.spec.source.oci = Some(oci("127.0.0.1:15000", "fw/esp32"));
        let mut mirror = ArtifactMirror::new("amir", ArtifactMirrorSpec::default());
        mirror.metadata.namespace = Some("fleet".into());
        mirror.spec.source.oci = Some(oci("127.0.0.1:15000", "fw/other"));
        // The channel was checked an hour ago: a push makes it due now.
        ctx.schedules.channels.checked(
            &on_repo,
            Err(crate::schedule::Failure::from(&crate::error::Error::RegistryUnreachable("x".into()))),
            Duration::from_secs(3600),
        );
        assert!(ctx.schedules.channels.due_in(&on_repo).is_some());

        let (channel_queue, channels) = Queue::new();
        let (stream_queue, streams) = Queue::new();
        let (mirror_queue, mirrors) = Queue::new();
        let targets = Targets {
            ctx: Arc::new(ctx),
            streams: filled(vec![stream]),
            mirrors: filled(vec![mirror]),
            channel_queue,
            stream_queue,
            mirror_queue,
        };
        let push = |host: Option<&str>| Push { host: host.map(Into::into), repository: "fw/esp32".into() };

        let any_host = Receiver::new(false, Metrics::default());
        assert_eq!(any_host.trigger(&targets, &[push(Some("registry.lan"))]), 3, "two channels and the stream");
        assert_eq!(targets.ctx.schedules.channels.due_in(&on_repo), None, "checks at once");
        let by_host = Receiver::new(true, Metrics::default());
        assert_eq!(by_host.trigger(&targets, &[push(Some("127.0.0.1:15000"))]), 2);
        assert_eq!(by_host.trigger(&targets, &[push(Some("registry.lan"))]), 0);

        // Each object is queued once however often it was triggered.
        drop(targets);
        let names = |s: std::pin::Pin<Box<dyn Stream<Item = String> + Send>>| s.collect::<Vec<_>>();
        let channels = names(Box::pin(channels.map(|r| r.name))).await;
        assert_eq!(channels.len(), 2, "{channels:?}");
        assert!(channels.contains(&"esp32".to_owned()) && channels.contains(&"elsewhere".to_owned()));
        assert_eq!(names(Box::pin(streams.map(|r| r.name))).await, ["imgs"]);
        assert!(names(Box::pin(mirrors.map(|r| r.name))).await.is_empty(), "the mirror's source is another repository");
    }

    #[tokio::test]
    async fn a_queue_holds_each_object_once_until_taken() {
        let (queue, stream) = Queue::<ImageStream>::new();
        let r = ObjectRef::new("s").within("ns");
        for _ in 0..1000 {
            queue.push(r.clone());
        }
        queue.push(ObjectRef::new("t").within("ns"));
        drop(queue.tx.clone());
        let mut stream = Box::pin(stream);
        assert_eq!(stream.next().await, Some(r.clone()));
        assert_eq!(stream.next().await.map(|r| r.name), Some("t".to_owned()));
        queue.push(r.clone());
        assert_eq!(stream.next().await, Some(r), "taken objects can be queued again");
    }
}
