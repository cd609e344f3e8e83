//! The network clients every controller shares, built once per process and handed out
//! through [`crate::context::Context`], never kept in statics: a registry client caches
//! bearer tokens and an HTTP client pools connections, so one of each per purpose serves
//! every object (STYLE idiom 10), and a test builds its own context with its own clients.

use std::time::Duration;

use oci_client::client::ClientProtocol;

/// How the operator introduces itself to registries and stores.
pub(crate) const USER_AGENT: &str = concat!("updraft-operator/", env!("CARGO_PKG_VERSION"));

/// One registry client per protocol and the HTTP client of store listings.
/// Cloning shares them (their token caches and connection pools included).
#[derive(Clone)]
pub(crate) struct Clients {
    https: oci_client::Client,
    http: oci_client::Client,
    /// Listings of filuxe-compatible stores (ArtifactMirror sides).
    pub store: reqwest::Client,
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
        }
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
