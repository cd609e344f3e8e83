//! Wiring: both controllers, their shared context, the admin server and leader election.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tracing::info;
use updraft_crds::{FirmwareChannel, OtaGateway};

use crate::admin::{self, AdminState};
use crate::context::Context;
use crate::leader::LeaderElection;
use crate::metrics::Metrics;
use crate::resolve::OciResolver;
use crate::{channel, gateway};

/// What `main` hands over after parsing flags.
pub struct Settings {
    pub gateway_image: String,
    pub admin_addr: std::net::SocketAddr,
    /// Watch one namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Lease namespace for leader election; no election when `None`.
    pub leader_election: Option<String>,
    pub identity: String,
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));

    let listener = tokio::net::TcpListener::bind(settings.admin_addr).await?;
    info!(addr = %settings.admin_addr, "admin server (/metrics, /healthz, /readyz)");
    let admin = admin::router(AdminState { metrics: metrics.clone(), ready: ready.clone() });
    tokio::spawn(async move { axum::serve(listener, admin).await });

    if let Some(lease_ns) = &settings.leader_election {
        let election = LeaderElection::new(client.clone(), lease_ns, "updraft-operator", settings.identity.clone());
        ready.store(true, Ordering::Relaxed); // a standby replica is healthy and ready
        election.acquire().await;
        tokio::select! {
            result = controllers(client, metrics, ready, &settings) => result,
            () = election.hold() => anyhow::bail!("lost leadership; exiting so a fresh replica can take over"),
        }
    } else {
        controllers(client, metrics, ready, &settings).await
    }
}

async fn controllers(
    client: Client,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    settings: &Settings,
) -> anyhow::Result<()> {
    let ns = &settings.namespace;
    let config = watcher::Config::default();

    // One watch of FirmwareChannels feeds one cache and triggers both controllers, and a
    // trigger arrives only after the cache holds the change: the gateway controller never
    // renders from a cache older than the event that woke it.
    let (channel_store, writer) = reflector::store_shared(1024);
    let channel_events = writer.subscribe().expect("a shared store has subscribers");
    let gateway_events = writer.subscribe().expect("a shared store has subscribers");
    let channel_watch = watcher(api::<FirmwareChannel>(&client, ns), config.clone())
        .default_backoff()
        .reflect_shared(writer)
        .for_each(|_| futures::future::ready(()));

    let channels_of_gateway = channel_store.clone();
    let channels = Controller::for_shared_stream(channel_events, channel_store.clone()).watches(
        api::<OtaGateway>(&client, ns),
        config.clone(),
        move |gw: OtaGateway| {
            // A gateway appearing, changing or going away changes its channels' readiness.
            let (name, namespace) = (gw.name_any(), gw.namespace());
            channels_of_gateway
                .state()
                .into_iter()
                .filter(|c| c.spec.gateway_ref == name && c.namespace() == namespace)
                .map(|c| ObjectRef::from(c.as_ref()))
                .collect::<Vec<_>>()
        },
    );

    let managed = || config.clone().labels("app.kubernetes.io/managed-by=updraft-operator");
    let gateways = Controller::new(api::<OtaGateway>(&client, ns), config.clone())
        .owns(api::<ConfigMap>(&client, ns), managed())
        .owns(api::<Service>(&client, ns), managed())
        .owns(api::<Deployment>(&client, ns), managed())
        .watches_shared_stream(gateway_events, |ch: Arc<FirmwareChannel>| {
            let namespace = ch.namespace().unwrap_or_default();
            Some(ObjectRef::<OtaGateway>::new(&ch.spec.gateway_ref).within(&namespace))
        })
        // Many channels resolving at once re-render their gateway once, not once each.
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)));

    let reporter = Reporter { controller: "updraft-operator".into(), instance: Some(settings.identity.clone()) };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(OciResolver::default()),
        metrics,
        Recorder::new(client, reporter),
        settings.gateway_image.clone(),
        channel_store.clone(),
        gateways.store(),
    ));

    let gateway_store = ctx.gateways.clone();
    tokio::spawn(async move {
        // The controllers wait on the same stores; a waiter that is not the last to poll
        // may not be woken, so ask again every second until both are filled.
        loop {
            let both = async {
                channel_store.wait_until_ready().await.is_ok() && gateway_store.wait_until_ready().await.is_ok()
            };
            match tokio::time::timeout(Duration::from_secs(1), both).await {
                Ok(true) => break,
                Ok(false) => return, // the controllers stopped before their caches filled
                Err(_elapsed) => continue,
            }
        }
        info!("caches synced");
        ready.store(true, Ordering::Relaxed);
    });

    let channel_run = channels
        .shutdown_on_signal()
        .run(channel::reconcile, channel::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let gateway_run = gateways
        .shutdown_on_signal()
        .run(gateway::reconcile, gateway::error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    info!("controllers started");
    tokio::select! {
        _ = async { tokio::join!(channel_run, gateway_run) } => {}
        () = channel_watch => {}
    }
    info!("controllers stopped");
    Ok(())
}
