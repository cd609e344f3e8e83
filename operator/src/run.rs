//! Wiring: one shared cache per kind, the four controllers on them, the admin server,
//! the registry notification receiver and leader election.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::NamespaceResourceScope;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::info;
use updraft_crds::{ArtifactMirror, FirmwareChannel, ImageStream, OtaGateway};

use crate::admin::{self, AdminState};
use crate::attach::{attached_refs, gateway_of};
use crate::clients::Clients;
use crate::context::{Context, Schedules};
use crate::error::Error;
use crate::leader::LeaderElection;
use crate::metrics::Metrics;
use crate::receiver::{BindError, Queue, Receiver, WebhookSettings};
use crate::resolve::OciResolver;
use crate::{census, channel, gateway, mirror, page, stream};

/// What `main` hands over after parsing flags.
pub struct Settings {
    /// Image of OtaGateways that name none.
    pub gateway_image: String,
    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`, the status page).
    pub admin_addr: std::net::SocketAddr,
    /// Watch one namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Lease namespace for leader election; no election when `None`.
    pub leader_election: Option<String>,
    /// This replica's name in the Lease and in events.
    pub identity: String,
    /// The registry notification receiver; none when `None`.
    pub webhook: Option<WebhookSettings>,
    /// How often the gateways' census is gathered.
    pub census_interval: Duration,
    /// Census replicas named instead of found through EndpointSlices.
    pub census_replicas: census::Overrides,
    /// The gateways' config endpoint (`delivery`); none when `None`, and gateways then
    /// learn of new configs from their mounted ConfigMap alone.
    pub config_endpoint: Option<ConfigEndpoint>,
}

/// Where the gateways' config endpoint listens and how gateway pods reach it.
pub struct ConfigEndpoint {
    pub addr: std::net::SocketAddr,
    /// E.g. `http://updraft-operator.updraft-system.svc:8082`.
    pub url: String,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable cluster configuration (`KUBECONFIG`, in-cluster service account).
    #[error("cannot reach the cluster: {0}")]
    Client(#[from] kube::Error),
    /// The admin port could not be bound.
    #[error("cannot listen on the admin address {addr}: {source}")]
    Admin { addr: std::net::SocketAddr, source: std::io::Error },
    /// The webhook receiver's port could not be bound.
    #[error(transparent)]
    Webhook(#[from] BindError),
    /// The gateways' config endpoint could not be bound.
    #[error("cannot listen on the config address {addr}: {source}")]
    ConfigEndpoint { addr: std::net::SocketAddr, source: std::io::Error },
    /// Another replica took the Lease (or it could not be renewed in time).
    #[error("lost leadership; exiting so a fresh replica can take over")]
    LostLeadership,
}

/// A kind the operator watches.
trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Kind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// One watch of a kind feeding one cache that every controller reads, and the
/// subscriptions that trigger controllers from it. A trigger arrives only after the
/// cache holds the change, so no controller acts on a cache older than the event that
/// woke it. Make every subscription before [`Shared::watch`]; each must be polled (a
/// controller does), or the watch waits for it.
struct Shared<K: Kind> {
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    /// Receivers of deleted objects (shared subscriptions see only objects in the cache).
    deleted: Arc<Mutex<Vec<mpsc::UnboundedSender<K>>>>,
}

impl<K: Kind> Shared<K> {
    fn new() -> Self {
        let (store, writer) = reflector::store_shared(1024);
        Self { store, writer, deleted: Arc::default() }
    }

    /// Changed (created or updated) objects, for [`Controller::for_shared_stream`].
    fn subscribe(&self) -> ReflectHandle<K> {
        self.writer.subscribe().expect("a shared store has subscribers")
    }

    /// Deleted objects, as [`Controller::watches_stream`] takes them.
    fn deletions(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded();
        self.deleted.lock().expect("deletion subscribers").push(tx);
        rx.map(Ok)
    }

    /// Makes `controller` reconcile the objects `mapper` names whenever an object of
    /// this kind is created, changed or deleted.
    fn trigger<C: Kind, I>(
        &self,
        controller: Controller<C>,
        mapper: impl Fn(&K) -> I + Clone + Send + Sync + 'static,
    ) -> Controller<C>
    where
        I: IntoIterator<Item = ObjectRef<C>> + 'static,
        I::IntoIter: Send,
    {
        self.trigger_when(controller, mapper, |_| true)
    }

    /// As [`Shared::trigger`], but only when an object appears, goes away or its spec
    /// changes (a new `metadata.generation`), not when only its status or metadata is
    /// written: what an attached resource's status takes from its gateway (that it
    /// exists, its Service URL, TLS, upload token) is all spec. A gateway rewrites its
    /// own status as its channels resolve; at 1,000 channels a gateway, re-reconciling
    /// them all on each of those writes cost more than the channels' own work (measured
    /// with `e2e/scripts/scale.sh`).
    fn trigger_on_spec<C: Kind, I>(
        &self,
        controller: Controller<C>,
        mapper: impl Fn(&K) -> I + Clone + Send + Sync + 'static,
    ) -> Controller<C>
    where
        I: IntoIterator<Item = ObjectRef<C>> + 'static,
        I::IntoIter: Send,
    {
        // The (uid, generation) each object was last passed on with; a namesake created
        // after a deletion has another uid. One entry per object name ever seen.
        let mut seen: HashMap<ObjectRef<K>, (Option<String>, Option<i64>)> = HashMap::new();
        self.trigger_when(controller, mapper, move |obj| {
            let now = (obj.meta().uid.clone(), obj.meta().generation);
            seen.insert(ObjectRef::from_obj(obj), now.clone()).as_ref() != Some(&now)
        })
    }

    /// The one wiring of both triggers: changed objects `pass` lets through, and every
    /// deletion, reconcile what `mapper` names.
    fn trigger_when<C: Kind, I>(
        &self,
        controller: Controller<C>,
        mapper: impl Fn(&K) -> I + Clone + Send + Sync + 'static,
        mut pass: impl FnMut(&K) -> bool + Send + 'static,
    ) -> Controller<C>
    where
        I: IntoIterator<Item = ObjectRef<C>> + 'static,
        I::IntoIter: Send,
    {
        let on_delete = mapper.clone();
        let changed = self.subscribe().filter(move |obj| futures::future::ready(pass(obj)));
        controller
            .watches_shared_stream(changed, move |obj| mapper(&obj))
            .watches_stream(self.deletions(), move |obj| on_delete(&obj))
    }

    /// Runs `forget` for every deleted object, until the watch ends.
    fn on_delete(&self, forget: impl Fn(&K) + Send + 'static) -> BoxFuture<'static, ()> {
        self.deletions()
            .for_each(move |obj| {
                if let Ok(obj) = obj {
                    forget(&obj);
                }
                futures::future::ready(())
            })
            .boxed()
    }

    /// The watch that fills the cache and feeds the subscriptions, until it ends.
    fn watch(self, api: Api<K>, config: watcher::Config) -> BoxFuture<'static, ()> {
        let deleted = self.deleted;
        watcher(api, config)
            .backoff(WatchBackoff::default())
            // `managedFields` (which manager set which field, as a JSON tree) is read by
            // nothing here: not kept in the cache.
            .modify(|obj| obj.managed_fields_mut().clear())
            .reflect_shared(self.writer)
            .for_each(move |event| {
                if let Ok(watcher::Event::Delete(obj)) = event {
                    deleted.lock().expect("deletion subscribers").retain(|tx| tx.unbounded_send(obj.clone()).is_ok());
                }
                futures::future::ready(())
            })
            .boxed()
    }
}

/// How watches retry after an error: 0.5 s doubling up to 4 s, back to 0.5 s after
/// anything but an error. kube's default grows to 30 s, and a resume refused with 410
/// Gone after the API server returns costs one step more before the re-list, so an API
/// server restart could hide changes for up to a minute (seen in
/// `e2e/tests/faults_operator.rs`); with 4 s a watch is back within ~8 s, at the cost of
/// one request per watch every 4 s while the API server is unreachable.
/// (kube's `Backoff` trait over [`updraft_core::backoff::Backoff`], the one rule.)
struct WatchBackoff(updraft_core::backoff::Backoff);

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const CEILING: Duration = Duration::from_secs(4);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self(updraft_core::backoff::Backoff::new(Self::FIRST, Self::CEILING))
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.0.wait())
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0.reset();
    }
}

/// The objects of a kind the gateway controller owns, as they change: a watch of their
/// metadata that retries on its own backoff and passes no errors on. (An error reaching
/// the controller would hold every trigger of it, the channels' too, for the controller's
/// backoff: gateway configs lagged ~10 s behind channel status after connections were
/// cut, in `e2e/tests/faults_operator.rs`.)
fn owned<K: Kind>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static {
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .touched_objects()
        .filter_map(|touched| futures::future::ready(touched.ok().map(Ok)))
}

fn api<K: Kind>(client: &Client, namespace: &Option<String>) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the operator until a shutdown signal (or, with leader election, until this
/// replica loses the Lease).
pub async fn run(settings: Settings) -> Result<(), RunError> {
    let client = Client::try_default().await?;
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));

    let addr = settings.admin_addr;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| RunError::Admin { addr, source })?;
    info!(%addr, "admin server (/metrics, /healthz, /readyz, the status page at /)");
    let page = page::Slot::default();
    let admin = admin::router(AdminState { metrics: metrics.clone(), ready: ready.clone(), page: page.clone() });
    tokio::spawn(crate::serve::serve(listener, admin));

    // Served from the start: a standby replica answers 503 until it leads.
    let receiver = match &settings.webhook {
        Some(hook) => {
            let receiver = Receiver::new(hook.match_host, metrics.clone());
            receiver.serve(hook.addr).await?;
            receiver.watch_token(client.clone(), hook.namespace.clone(), hook.token_secret.clone());
            Some(receiver)
        }
        None => None,
    };

    // Served from the start too: a standby replica has published nothing and answers
    // 404, and its gateways keep what they serve and follow their ConfigMap.
    let delivery = match &settings.config_endpoint {
        Some(endpoint) => {
            let published = crate::delivery::Published::new(&metrics);
            let addr = endpoint.addr;
            published.serve(addr).await.map_err(|source| RunError::ConfigEndpoint { addr, source })?;
            Some(crate::delivery::Delivery { published, url: endpoint.url.clone(), written: Default::default() })
        }
        None => None,
    };

    if let Some(lease_ns) = &settings.leader_election {
        let election = LeaderElection::new(client.clone(), lease_ns, "updraft-operator", settings.identity.clone());
        ready.store(true, Ordering::Relaxed); // a standby replica is healthy and ready
        election.acquire().await;
        tokio::select! {
            () = controllers(client, metrics, ready, receiver, delivery, page, &settings) => Ok(()),
            () = election.hold() => Err(RunError::LostLeadership),
        }
    } else {
        controllers(client, metrics, ready, receiver, delivery, page, &settings).await;
        Ok(())
    }
}

/// Reconciles of one kind (channels, streams, mirrors) running at once, each of which may
/// be asking a registry. Unbounded, thousands of objects arriving together (a restart, a
/// GitOps sync) each held a request and its buffers at once.
const CHECKS_AT_ONCE: u16 = 64;

async fn controllers(
    client: Client,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    receiver: Option<Receiver>,
    delivery: Option<crate::delivery::Delivery>,
    page: page::Slot,
    settings: &Settings,
) {
    let ns = &settings.namespace;
    let config = watcher::Config::default();
    let gateways = Shared::<OtaGateway>::new();
    let channels = Shared::<FirmwareChannel>::new();
    let streams = Shared::<ImageStream>::new();
    let mirrors = Shared::<ArtifactMirror>::new();

    // A registry notification reconciles the objects whose source was pushed to.
    let ((channel_queue, channel_pushes), (stream_queue, stream_pushes), (mirror_queue, mirror_pushes)) =
        (Queue::new(), Queue::new(), Queue::new());

    // A gateway appearing, its spec changing or going away changes its channels' readiness.
    let checks = || ControllerConfig::default().concurrency(CHECKS_AT_ONCE);
    let channel_controller = Controller::for_shared_stream(channels.subscribe(), channels.store.clone())
        .reconcile_on(channel_pushes)
        .with_config(checks());
    let channel_store = channels.store.clone();
    let channel_controller = gateways.trigger_on_spec(channel_controller, move |gw| attached_refs(&channel_store, gw));

    let managed = || config.clone().labels("app.kubernetes.io/managed-by=updraft-operator");
    let gateway_controller = Controller::for_shared_stream(gateways.subscribe(), gateways.store.clone())
        .owns_stream(owned(api::<PartialObjectMeta<ConfigMap>>(&client, ns), managed()))
        .owns_stream(owned(api::<PartialObjectMeta<Service>>(&client, ns), managed()))
        .owns_stream(owned(api::<PartialObjectMeta<Deployment>>(&client, ns), managed()))
        // Many channels resolving at once re-render their gateway once, not once each.
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)));
    // Every change of an attached channel re-renders its gateway.
    let gateway_controller = channels.trigger(gateway_controller, |c| Some(gateway_of(c)));
    // And of an attached stream; a gateway's change (its TLS, its upload token) changes
    // its streams' status.
    let gateway_controller = streams.trigger(gateway_controller, |s| Some(gateway_of(s)));
    // And of an attached mirror (its worker Deployment exists only while one is).
    let gateway_controller = mirrors.trigger(gateway_controller, |m| Some(gateway_of(m)));
    let stream_controller = Controller::for_shared_stream(streams.subscribe(), streams.store.clone())
        .reconcile_on(stream_pushes)
        .with_config(checks());
    let stream_store = streams.store.clone();
    let stream_controller = gateways.trigger_on_spec(stream_controller, move |gw| attached_refs(&stream_store, gw));
    let mirror_controller = Controller::for_shared_stream(mirrors.subscribe(), mirrors.store.clone())
        .reconcile_on(mirror_pushes)
        .with_config(checks());

    let reporter = Reporter { controller: "updraft-operator".into(), instance: Some(settings.identity.clone()) };
    let clients = Clients::new();
    let (synced, synced_rx) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(Context {
        client: client.clone(),
        resolver: Arc::new(OciResolver::new(&clients)),
        clients,
        metrics,
        recorder: crate::context::Events::new(client.clone(), reporter),
        gateway_image: settings.gateway_image.clone(),
        channels: channels.store.clone(),
        gateways: gateways.store.clone(),
        streams: streams.store.clone(),
        mirrors: mirrors.store.clone(),
        schedules: Schedules::default(),
        census: Default::default(),
        delivery,
        synced: synced_rx,
    });

    // The status page reads the same caches (set once: a replica runs its controllers once).
    let _ = page.set(page::Source {
        client: client.clone(),
        namespace: ns.clone(),
        gateways: gateways.store.clone(),
        channels: channels.store.clone(),
        streams: streams.store.clone(),
        mirrors: mirrors.store.clone(),
    });

    tokio::spawn(census::run(
        ctx.clone(),
        channel_queue.clone(),
        settings.census_interval,
        settings.census_replicas.clone(),
    ));
    if let Some(receiver) = &receiver {
        let stores = (streams.store.clone(), mirrors.store.clone());
        receiver.start(ctx.clone(), stores, (channel_queue, stream_queue, mirror_queue));
    }

    let stores = (gateways.store.clone(), channels.store.clone(), streams.store.clone(), mirrors.store.clone());
    tokio::spawn(async move {
        // The controllers wait on the same stores; a waiter that is not the last to poll
        // may not be woken, so ask again every second until all are filled.
        loop {
            let all = async {
                stores.0.wait_until_ready().await.is_ok()
                    && stores.1.wait_until_ready().await.is_ok()
                    && stores.2.wait_until_ready().await.is_ok()
                    && stores.3.wait_until_ready().await.is_ok()
            };
            match tokio::time::timeout(Duration::from_secs(1), all).await {
                Ok(true) => break,
                Ok(false) => return, // the controllers stopped before their caches filled
                Err(_elapsed) => continue,
            }
        }
        info!("caches synced");
        synced.send_replace(true);
        ready.store(true, Ordering::Relaxed);
    });

    // A deleted object's schedule goes with it.
    let forget = futures::future::join_all([
        gateways.on_delete({
            let ctx = ctx.clone();
            move |o| ctx.schedules.gateways.forget(o)
        }),
        channels.on_delete({
            let ctx = ctx.clone();
            move |o| {
                ctx.schedules.channels.forget(o);
                ctx.metrics.forget_channel(&o.namespace().unwrap_or_default(), &o.name_any());
            }
        }),
        streams.on_delete({
            let ctx = ctx.clone();
            move |o| {
                ctx.schedules.streams.forget(o);
                ctx.metrics.forget_stream(&o.namespace().unwrap_or_default(), &o.name_any());
            }
        }),
        mirrors.on_delete({
            let ctx = ctx.clone();
            move |o| {
                ctx.schedules.mirrors.forget(o);
                ctx.metrics.forget_mirror(&o.namespace().unwrap_or_default(), &o.name_any());
            }
        }),
    ]);
    let watches = futures::future::join_all([
        gateways.watch(api(&client, ns), config.clone()),
        channels.watch(api(&client, ns), config.clone()),
        streams.watch(api(&client, ns), config.clone()),
        mirrors.watch(api(&client, ns), config),
    ]);
    let runs = futures::future::join_all([
        drive(channel_controller, channel::reconcile, channel::error_policy, &ctx),
        drive(gateway_controller, gateway::reconcile, gateway::error_policy, &ctx),
        drive(stream_controller, stream::reconcile, stream::error_policy, &ctx),
        drive(mirror_controller, mirror::reconcile, mirror::error_policy, &ctx),
    ]);
    info!("controllers started");
    tokio::select! {
        _ = runs => {}
        _ = futures::future::join(watches, forget) => {}
    }
    info!("controllers stopped");
}

/// Runs one controller until shutdown.
fn drive<K, F>(
    controller: Controller<K>,
    reconcile: fn(Arc<K>, Arc<Context>) -> F,
    error_policy: fn(Arc<K>, &Error, Arc<Context>) -> Action,
    ctx: &Arc<Context>,
) -> BoxFuture<'static, ()>
where
    K: Kind,
    F: Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_doubles_to_its_ceiling_and_resets() {
        let mut backoff = WatchBackoff::default();
        let waits: Vec<u64> = (0..6).map(|_| backoff.next().unwrap().as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 4000, 4000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(500)));
    }
}
