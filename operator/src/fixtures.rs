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
    use kube::runtime::events::{Recorder, Reporter};
    use kube::runtime::reflector;
    let reporter = Reporter { controller: "updraft-operator".into(), instance: None };
    crate::context::Context {
        client: client.clone(),
        resolver,
        clients: crate::clients::Clients::new(),
        metrics: crate::metrics::Metrics::default(),
        recorder: Recorder::new(client, reporter),
        gateway_image: "updraft/ota-gateway:test".into(),
        channels: reflector::store().0,
        gateways: reflector::store().0,
        streams: reflector::store().0,
        mirrors: reflector::store().0,
        schedules: Default::default(),
        census: Default::default(),
    }
}
