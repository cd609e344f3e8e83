//! The network clients every controller shares, built once per process and handed out
//! through [`crate::context::Context`], never kept in statics: a registry client caches
//! bearer tokens and an HTTP client pools connections, so one of each per purpose serves
//! every object (STYLE idiom 10), and a test builds its own context with its own clients.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use oci_client::client::ClientProtocol;
use updraft_core::notify::WebhookSender;

/// How the operator introduces itself to registries and stores.
pub(crate) const USER_AGENT: &str = concat!("updraft-operator/", env!("CARGO_PKG_VERSION"));

/// One registry client per protocol, the HTTP clients of store listings and of
/// upstream simplestreams servers, and the webhook sender.
/// Cloning shares them (their token caches, connection pools and queue included).
#[derive(Clone)]
pub(crate) struct Clients {
    https: oci_client::Client,
    http: oci_client::Client,
    /// Listings of filuxe-compatible stores (ArtifactMirror sides).
    pub store: reqwest::Client,
    /// Upstream simplestreams servers (ImageStream sources) trusted with the system's
    /// roots; a stream with its own CA bundle builds from [`upstream_builder`].
    pub upstream: reqwest::Client,
    /// Started on first use: its delivery task needs the runtime, a `Clients` does not.
    webhooks: Arc<OnceLock<WebhookSender>>,
}

/// The settings of every upstream simplestreams client (the shared one, and those
/// built per stream to trust a `caConfigMap`).
pub(crate) fn upstream_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
}

impl Clients {
    pub fn new() -> Self {
        Self {
            https: updraft_core::oci::build_client(USER_AGENT, ClientProtocol::Https),
            http: updraft_core::oci::build_client(USER_AGENT, ClientProtocol::Http),
            store: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .user_agent(USER_AGENT)
                // The store key is sent with listings: never to another origin.
                .redirect(updraft_core::mirror::redirect::policy())
                .build()
                .expect("an HTTP client builds"),
            upstream: upstream_builder().build().expect("an HTTP client with defaults"),
            webhooks: Arc::default(),
        }
    }

    /// The process's webhook sender (`release.failed` announcements).
    pub fn webhooks(&self) -> &WebhookSender {
        self.webhooks.get_or_init(|| WebhookSender::start(USER_AGENT))
    }

    /// The registry client for a source: plain HTTP when it is `insecure`.
    pub fn registry(&self, insecure: bool) -> &oci_client::Client {
        if insecure {
            &self.http
        } else {
            &self.https
        }
    }
}
