//! Config delivery: the operator's endpoint gateways long-poll for their rendered config,
//! so a new release or a rollback is served within a second on every replica instead of
//! at kubelet's next sync of the mounted ConfigMap (up to a minute and more).
//!
//! `GET /v1/gateways/{namespace}/{name}/config?revision=R` with
//! `Authorization: Bearer <token>`: answers at once with the config (200, YAML) when its
//! revision is not `R`; otherwise holds the request up to [`HOLD`] and answers with the
//! config as soon as a new one is published, or 304 when none was.
//!
//! One home for "the rendered config": the gateway controller applies the ConfigMap and,
//! once the API server took it, [`Published::publish`]es the same rendering (same
//! revision, same bytes) here. The endpoint never hands out a config the ConfigMap does
//! not hold, so after an operator restart (nothing published until each gateway is
//! reconciled: 404, the gateways keep what they serve) the revisions only go up
//! (`updraft_core::config::delivery::next_revision` counts from the stored ConfigMap).
//!
//! Each gateway has its own random token, in a Secret the operator creates once beside
//! the gateway ([`token_secret_name`]) and mounts into its pods: a gateway's token
//! reads only its own config. The token is not the gateway's only way to its config:
//! without it, or without the operator, the gateway follows the mounted file. A deleted
//! gateway's entry stays until the operator restarts (its pods and token Secret are gone
//! with it; nothing else holds that token).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{IntCounterVec, IntGauge, Opts};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tracing::{debug, info};

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use updraft_core::config::GatewayConfig;
use updraft_crds::OtaGateway;

use crate::metrics::Metrics;
use crate::render;

/// How long a request whose revision is current is held before 304. Under the
/// gateway's client timeout and the usual 60 s idle timeouts of proxies on the way.
pub(crate) const HOLD: Duration = Duration::from_secs(30);

/// The key of the token in its Secret.
pub(crate) const TOKEN_KEY: &str = "token";

/// Name of the Secret holding gateway `name`'s config token.
pub(crate) fn token_secret_name(name: &str) -> String {
    format!("{name}-config-token")
}

/// The path of a gateway's config on the endpoint.
pub(crate) fn config_path(namespace: &str, name: &str) -> String {
    format!("/v1/gateways/{namespace}/{name}/config")
}

/// The endpoint as the gateway controller uses it.
#[derive(Clone)]
pub(crate) struct Delivery {
    pub published: Published,
    /// The endpoint's URL as gateway pods reach it (rendered into their config).
    pub url: String,
    /// When each gateway's ConfigMap and status were last written, and at which
    /// generation of its spec ([`Delivery::hold_writes`]).
    pub written: Arc<Mutex<Written>>,
}

/// A gateway by (namespace, name).
pub(crate) type GatewayKey = (String, String);

/// When each gateway's ConfigMap and status were last written, at which generation.
pub(crate) type Written = HashMap<GatewayKey, (Instant, Option<i64>)>;

/// While a gateway's channels keep changing (thousands created at once), its ConfigMap
/// and status are written at most this often; every rendering still reaches its pods at
/// once through the endpoint. The ConfigMap is the boot config and the fallback, read by
/// kubelet once a minute: a rendering 30 s older there loses nothing. Without this, a
/// gateway of 1,000 channels arriving at the API server's pace rewrote a 500 kB
/// ConfigMap about every 3 s (`e2e/scripts/scale.sh`).
pub(crate) const WRITE_EVERY: Duration = Duration::from_secs(30);

impl Delivery {
    /// How long gateway `key`'s writes wait, when its last ones were less than
    /// [`WRITE_EVERY`] ago at the same `generation` (a change of its own spec is written
    /// at once).
    pub(crate) fn hold_writes(&self, key: &GatewayKey, generation: Option<i64>) -> Option<Duration> {
        let written = self.written.lock().expect("written lock");
        let &(at, was) = written.get(key)?;
        WRITE_EVERY.checked_sub(at.elapsed()).filter(|_| was == generation)
    }

    /// Notes that gateway `key`'s ConfigMap and status were written now.
    pub(crate) fn wrote(&self, key: GatewayKey, generation: Option<i64>) {
        self.written.lock().expect("written lock").insert(key, (Instant::now(), generation));
    }
}

/// Gateway `gateway`'s token: from its Secret, created with a new random token when
/// missing. Never rewritten: a token stays valid as long as the gateway exists (the
/// Secret goes with it, by owner reference).
pub(crate) async fn token(client: &Client, gateway: &OtaGateway) -> Result<String, kube::Error> {
    let ns = gateway.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let name = token_secret_name(&gateway.name_any());
    let stored = |secret: &Secret| {
        let value = secret.data.as_ref()?.get(TOKEN_KEY)?;
        updraft_core::secret::key(&value.0).map(|t| String::from_utf8_lossy(t).into_owned())
    };
    if let Some(token) = secrets.get_opt(&name).await?.as_ref().and_then(stored) {
        return Ok(token);
    }
    let token = new_token().map_err(|e| kube::Error::Service(Box::new(e)))?;
    match secrets.create(&PostParams::default(), &render::config_token_secret(gateway, &token)).await {
        Ok(_) => {
            info!(secret = name, "created the gateway's config token");
            Ok(token)
        }
        // Made meanwhile (another pass), or present without a usable token: a token is
        // never rewritten, so take what is there or say what is wrong.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = secrets.get(&name).await?;
            stored(&secret).ok_or_else(|| {
                kube::Error::Service(
                    format!("Secret {ns}/{name} has no `{TOKEN_KEY}`; delete it to get a new token").into(),
                )
            })
        }
        Err(e) => Err(e),
    }
}

/// One published rendering.
#[derive(Debug, PartialEq, Eq)]
struct Rendering {
    revision: u64,
    yaml: String,
}

struct Entry {
    /// SHA-256 of the gateway's token.
    token: [u8; 32],
    rendering: watch::Sender<Arc<Rendering>>,
}

/// The configs the endpoint serves, by gateway; cheap to clone.
#[derive(Clone)]
pub(crate) struct Published {
    entries: Arc<Mutex<HashMap<(String, String), Entry>>>,
    requests: IntCounterVec,
    waiting: IntGauge,
}

impl Published {
    /// An empty set whose series are registered in `metrics`.
    pub(crate) fn new(metrics: &Metrics) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "config_requests_total",
                "Gateway config requests, by result (sent, unchanged, unauthorized, unknown)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let waiting =
            IntGauge::new("config_polls_waiting", "Gateway config requests held until a change").expect("valid metric");
        metrics.register(Box::new(requests.clone()));
        metrics.register(Box::new(waiting.clone()));
        Self { entries: Arc::default(), requests, waiting }
    }

    /// The revision `config` takes after what gateway (`namespace`, `name`) was last
    /// given: the same when only the revision differs, the next one otherwise; `None`
    /// when nothing was published to it yet.
    pub(crate) fn next_revision(&self, namespace: &str, name: &str, config: &GatewayConfig) -> Option<u64> {
        let entries = self.entries.lock().expect("published lock");
        let last = entries.get(&(namespace.to_owned(), name.to_owned()))?.rendering.borrow().clone();
        drop(entries);
        let same = GatewayConfig { revision: last.revision, ..config.clone() }.to_yaml() == last.yaml;
        Some(if same { last.revision } else { last.revision + 1 })
    }

    /// Makes `yaml` (revision `revision`) what gateway `namespace/name` gets, with
    /// `token` as its credential; wakes the requests it holds when the revision changed.
    pub(crate) fn publish(&self, namespace: &str, name: &str, token: &[u8], revision: u64, yaml: String) {
        let token = digest(token);
        let mut entries = self.entries.lock().expect("published lock");
        let key = (namespace.to_owned(), name.to_owned());
        match entries.get_mut(&key) {
            Some(entry) => {
                entry.token = token;
                entry.rendering.send_if_modified(|r| {
                    let changed = r.revision != revision || r.yaml != yaml;
                    if changed {
                        *r = Arc::new(Rendering { revision, yaml });
                    }
                    changed
                });
            }
            None => {
                let (rendering, _) = watch::channel(Arc::new(Rendering { revision, yaml }));
                entries.insert(key, Entry { token, rendering });
            }
        }
    }

    /// Serves the endpoint on `addr` (bound now, so a taken port fails at start-up).
    pub(crate) async fn serve(&self, addr: SocketAddr) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        info!(%addr, "gateway config endpoint (GET /v1/gateways/{{namespace}}/{{name}}/config)");
        tokio::spawn(crate::serve::serve(listener, self.router()));
        Ok(())
    }

    fn router(&self) -> Router {
        Router::new().route("/v1/gateways/{namespace}/{name}/config", get(config)).with_state(self.clone())
    }

    /// The watch of gateway `key`'s rendering, when `headers` carry its token.
    fn subscribe(
        &self,
        key: &(String, String),
        headers: &HeaderMap,
    ) -> Result<watch::Receiver<Arc<Rendering>>, Refusal> {
        let entries = self.entries.lock().expect("published lock");
        let given = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .and_then(updraft_core::secret::key);
        // Unknown gateways and wrong tokens answer alike until a token matched, so the
        // endpoint does not tell which gateways exist.
        let entry = entries.get(key);
        let authorized = match (entry, given) {
            (Some(entry), Some(given)) => bool::from(digest(given).ct_eq(&entry.token)),
            _ => false,
        };
        match entry {
            Some(entry) if authorized => Ok(entry.rendering.subscribe()),
            Some(_) => Err(Refusal::Unauthorized),
            None if given.is_some() => Err(Refusal::Unknown),
            None => Err(Refusal::Unauthorized),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Unauthorized,
    /// Not published (yet): after an operator restart until the gateway's reconcile, or
    /// a gateway this operator does not render.
    Unknown,
}

#[derive(serde::Deserialize)]
struct Since {
    /// The revision the gateway serves.
    revision: Option<u64>,
}

/// `GET /v1/gateways/{namespace}/{name}/config`.
async fn config(
    State(published): State<Published>,
    Path((namespace, name)): Path<(String, String)>,
    Query(since): Query<Since>,
    headers: HeaderMap,
) -> Response {
    let key = (namespace, name);
    let mut rendering = match published.subscribe(&key, &headers) {
        Ok(r) => r,
        Err(refusal) => {
            let (result, status, text) = match refusal {
                Refusal::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED, "missing or wrong token\n"),
                Refusal::Unknown => ("unknown", StatusCode::NOT_FOUND, "no config published for this gateway\n"),
            };
            published.requests.with_label_values(&[result]).inc();
            debug!(namespace = key.0, name = key.1, result, "config request refused");
            return (status, text).into_response();
        }
    };
    let current = rendering.borrow_and_update().clone();
    if since.revision != Some(current.revision) {
        return sent(&published, &current);
    }
    published.waiting.inc();
    let changed = tokio::time::timeout(HOLD, rendering.changed()).await;
    published.waiting.dec();
    match changed {
        Ok(Ok(())) => {
            let current = rendering.borrow_and_update().clone();
            sent(&published, &current)
        }
        // Held to the end, or the gateway was deleted meanwhile: nothing new.
        Ok(Err(_)) | Err(_) => {
            published.requests.with_label_values(&["unchanged"]).inc();
            StatusCode::NOT_MODIFIED.into_response()
        }
    }
}

fn sent(published: &Published, rendering: &Rendering) -> Response {
    published.requests.with_label_values(&["sent"]).inc();
    let headers =
        [(header::CONTENT_TYPE, "application/yaml".to_owned()), (REVISION_HEADER, rendering.revision.to_string())];
    (headers, rendering.yaml.clone()).into_response()
}

/// The revision of the config in a 200 answer (also inside the YAML; for logs and curl).
const REVISION_HEADER: header::HeaderName = header::HeaderName::from_static("x-updraft-revision");

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// A new random token (32 bytes from the kernel, hex).
pub(crate) fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn request(revision: Option<u64>, token: Option<&str>) -> Request<Body> {
        let query = revision.map(|r| format!("?revision={r}")).unwrap_or_default();
        let mut builder = Request::get(format!("/v1/gateways/ns/gw/config{query}"));
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(Body::empty()).unwrap()
    }

    async fn body(response: Response) -> String {
        String::from_utf8(axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap()
    }

    #[test]
    fn a_rendering_counts_on_from_the_one_published() {
        let published = Published::new(&Metrics::default());
        let config = GatewayConfig { public_url: Some("http://a".into()), ..Default::default() };
        assert_eq!(published.next_revision("ns", "gw", &config), None, "nothing published yet");
        let at_7 = GatewayConfig { revision: 7, ..config.clone() };
        published.publish("ns", "gw", b"t0k", 7, at_7.to_yaml());
        assert_eq!(published.next_revision("ns", "gw", &config), Some(7), "the same content keeps its revision");
        let other = GatewayConfig { public_url: Some("http://b".into()), ..config };
        assert_eq!(published.next_revision("ns", "gw", &other), Some(8));
        assert_eq!(published.next_revision("ns", "other-gw", &other), None);
    }

    #[test]
    fn writes_wait_while_the_last_ones_are_recent_unless_the_spec_changed() {
        let delivery = Delivery {
            published: Published::new(&Metrics::default()),
            url: "http://operator".into(),
            written: Default::default(),
        };
        let key = ("ns".to_owned(), "gw".to_owned());
        assert_eq!(delivery.hold_writes(&key, Some(1)), None, "never written: at once");
        delivery.wrote(key.clone(), Some(1));
        let wait = delivery.hold_writes(&key, Some(1)).expect("written just now: wait");
        assert!(wait > WRITE_EVERY - Duration::from_secs(5) && wait <= WRITE_EVERY, "{wait:?}");
        assert_eq!(delivery.hold_writes(&key, Some(2)), None, "a spec change is written at once");
        let long_ago = Instant::now().checked_sub(WRITE_EVERY + Duration::from_secs(1)).unwrap();
        delivery.written.lock().unwrap().insert(key.clone(), (long_ago, Some(1)));
        assert_eq!(delivery.hold_writes(&key, Some(1)), None, "written long ago: at once");
    }

    #[tokio::test]
    async fn only_the_gateways_token_reads_its_config() {
        let published = Published::new(&Metrics::default());
        let app = published.router();
        let unknown = app.clone().oneshot(request(None, Some("t0k"))).await.unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        published.publish("ns", "gw", b"t0k", 3, "revision: 3\n".into());
        for token in [None, Some("wrong"), Some("")] {
            let refused = app.clone().oneshot(request(None, token)).await.unwrap();
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        }
        let ok = app.clone().oneshot(request(Some(2), Some("t0k"))).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["x-updraft-revision"], "3");
        assert_eq!(body(ok).await, "revision: 3\n");
        assert_eq!(published.requests.with_label_values(&["unauthorized"]).get(), 3);
        let other = app.oneshot(request(None, Some("t0k"))).await.unwrap();
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_current_revision_is_held_until_a_new_one_is_published() {
        let published = Published::new(&Metrics::default());
        published.publish("ns", "gw", b"t0k", 3, "revision: 3\n".into());
        let app = published.router();
        let held = tokio::spawn(app.clone().oneshot(request(Some(3), Some("t0k"))));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(published.waiting.get(), 1);
        // Publishing the same rendering again (every reconcile does) wakes nobody.
        published.publish("ns", "gw", b"t0k", 3, "revision: 3\n".into());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished());
        published.publish("ns", "gw", b"t0k", 4, "revision: 4\n".into());
        let answer = held.await.unwrap().unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(body(answer).await, "revision: 4\n");
        assert_eq!(published.waiting.get(), 0);
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
