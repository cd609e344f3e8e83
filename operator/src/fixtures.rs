//! Objects for unit tests: a gateway and channels in namespace `fleet`, as the API
//! server would hand them over.

use updraft_crds::ResolvedVersion;
use updraft_crds::{FirmwareChannel, FirmwareChannelSpec, FirmwareChannelStatus, OtaGateway, OtaGatewaySpec};

pub const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The OtaGateway `default` in `fleet`.
pub fn gateway() -> OtaGateway {
    let mut gw = OtaGateway::new("default", OtaGatewaySpec::default());
    gw.metadata.namespace = Some("fleet".into());
    gw.metadata.uid = Some("uid-1".into());
    gw
}

pub fn resolved(version: &str, digest: &str) -> ResolvedVersion {
    ResolvedVersion {
        version: version.into(),
        tag: format!("v{version}"),
        digest: digest.into(),
        size: Some(10),
        resolved_at: updraft_crds::conditions::now(),
    }
}

/// A channel of gateway `default` in `fleet`; with `latest`, resolved (0.9.0 before it).
pub fn channel(name: &str, device: Option<&str>, latest: Option<ResolvedVersion>) -> FirmwareChannel {
    let spec: FirmwareChannelSpec = serde_json::from_value(serde_json::json!({
        "source": {"registry": "127.0.0.1:15000", "repository": format!("fw/{name}"), "insecure": true},
        "rollout": {"percentage": 30},
    }))
    .unwrap();
    let mut ch = FirmwareChannel::new(name, FirmwareChannelSpec { device: device.map(Into::into), ..spec });
    ch.metadata.namespace = Some("fleet".into());
    ch.status = latest.map(|l| FirmwareChannelStatus {
        latest: Some(l),
        previous: Some(resolved("0.9.0", DIGEST_B)),
        ..Default::default()
    });
    ch
}

/// A client whose API server is `answer`: each request (method, path and query, body)
/// gets a status code and a JSON body. For the unit tests of retry timing only.
pub fn api(answer: impl Fn(&str, &str, &[u8]) -> (u16, Vec<u8>) + Send + Sync + 'static) -> kube::Client {
    use std::sync::Arc;

    use kube::client::Body;
    let answer = Arc::new(answer);
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let answer = answer.clone();
        async move {
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let body = request.into_body().collect_bytes().await.unwrap_or_default();
            let (status, reply) = answer(&method, &uri, &body);
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(reply))
                .expect("a valid response");
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    kube::Client::new(service, "default")
}

/// A `Status` body with `code`, as the API server refuses a request.
pub fn refusal(code: u16) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "refused by the test", "reason": "InternalError", "code": code,
    }))
    .unwrap()
}

/// A context on `client` with empty caches and `resolver`.
pub fn context(
    client: kube::Client,
    resolver: std::sync::Arc<dyn crate::resolve::Resolver>,
) -> crate::context::Context {
    use kube::runtime::events::Reporter;
    use kube::runtime::reflector;
    let reporter = Reporter { controller: "updraft-operator".into(), instance: None };
    crate::context::Context {
        client: client.clone(),
        resolver,
        clients: crate::clients::Clients::new(),
        metrics: crate::metrics::Metrics::default(),
        recorder: crate::context::Events::new(client, reporter),
        gateway_image: "updraft/ota-gateway:test".into(),
        channels: reflector::store().0,
        gateways: reflector::store().0,
        streams: reflector::store().0,
        mirrors: reflector::store().0,
        schedules: Default::default(),
        census: Default::default(),
        delivery: None,
        synced: tokio::sync::watch::channel(true).1,
    }
}

/// `channel`, rolling out 1.1.0 (after 1.0.0) in steps `[5, 25, 50, 100]`, at step 2
/// (25 %), with a census of `by_version` (`version`, offered, downloaded, running).
pub fn channel_with_census(name: &str, by_version: &[(&str, i64, i64, i64)]) -> FirmwareChannel {
    use updraft_crds::{DeviceCensus, RolloutStatus, VersionDevices};
    let mut ch = channel(name, None, Some(resolved("1.1.0", DIGEST_A)));
    ch.spec.rollout = serde_json::from_value(serde_json::json!({"steps": [5, 25, 50, 100]})).unwrap();
    let status = ch.status.as_mut().unwrap();
    status.previous = Some(resolved("1.0.0", DIGEST_B));
    status.rollout = Some(RolloutStatus {
        version: "1.1.0".into(),
        percentage: 25,
        step: Some(2),
        downloaded: Some(40),
        running: Some(30),
        adoption: Some(75),
        ..Default::default()
    });
    status.devices = Some(DeviceCensus {
        window: "24h".into(),
        total: by_version.iter().map(|v| v.1).sum(),
        by_version: by_version
            .iter()
            .map(|&(version, offered, downloaded, running)| VersionDevices {
                version: version.into(),
                offered,
                downloaded,
                running,
            })
            .collect(),
        replicas: 2,
        observed_at: updraft_crds::conditions::now(),
    });
    ch
}

/// An ImageStream of gateway `default` in `fleet`, with `status`.
pub fn stream(name: &str, status: serde_json::Value) -> updraft_crds::ImageStream {
    let mut s: updraft_crds::ImageStream = serde_json::from_value(serde_json::json!({
        "apiVersion": "updraft.dev/v1alpha1", "kind": "ImageStream",
        "metadata": {"name": name, "namespace": "fleet"},
        "spec": {"source": {"oci": {"registry": "127.0.0.1:15000", "repository": "images", "insecure": true}}},
    }))
    .unwrap();
    s.status = Some(serde_json::from_value(status).unwrap());
    s
}

/// An ArtifactMirror of gateway `default` in `fleet`, with `status`.
pub fn mirror(name: &str, status: serde_json::Value) -> updraft_crds::ArtifactMirror {
    let mut m: updraft_crds::ArtifactMirror = serde_json::from_value(serde_json::json!({
        "apiVersion": "updraft.dev/v1alpha1", "kind": "ArtifactMirror",
        "metadata": {"name": name, "namespace": "fleet"},
        "spec": {
            "source": {"oci": {"registry": "127.0.0.1:15000", "repository": "releases", "insecure": true}},
            "destination": {"http": {"url": "https://store.example/", "keySecret": "wan-key"}},
        },
    }))
    .unwrap();
    m.status = Some(serde_json::from_value(status).unwrap());
    m
}
