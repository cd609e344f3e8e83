//! The census through the gateway's routers (`app`, `admin_app`, driven with
//! `oneshot`): what each route records, anonymous polls, unchanged answers, `/census`
//! on the admin port only, and no id in the logs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;
use updraft_core::census::{Census, Merged, Report, State};
use updraft_core::config::{ArtifactConfig, GatewayConfig};

use crate::cache::artifact_key;
use crate::unpack::Digesting;
use crate::AppState;

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const PAYLOAD: &[u8] = b"the firmware of esp32, release 1.0.0";
const HOUR: Duration = Duration::from_secs(3600);

/// A gateway with one channel `esp32` (device `dev-esp32`) serving 1.0.0 from its
/// cache, with a census unless `census` is `None`.
struct Gateway {
    state: AppState,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn new(census: Option<Arc<Census>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "cache: {{dir: {}, maxBytes: 1000000}}\nchannels:\n- name: esp32\n  device: dev-esp32\n  source: {{registry: 127.0.0.1:1, repository: fw/esp32, insecure: true}}\n  current: {{version: 1.0.0, tag: v1.0.0, digest: \"{DIGEST}\"}}\n",
            dir.path().join("cache").display()
        );
        let state = AppState::from_config_with_census(GatewayConfig::parse(yaml.as_bytes()).unwrap(), census).unwrap();
        let cache = state.cache();
        let mut writer = Digesting::new(cache.temp_file().unwrap());
        writer.write_all(PAYLOAD).unwrap();
        let (summary, file) = writer.finish().unwrap();
        cache.commit(&artifact_key(DIGEST, &ArtifactConfig::default()), file, summary).unwrap();
        Self { state, _dir: dir }
    }

    fn with_census() -> Self {
        Self::new(Some(Arc::new(Census::new(crate::census::DEFAULT_MEMORY))))
    }

    async fn send(router: Router, request: Request<Body>) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned())).collect();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec();
        (status, headers, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
        Self::send(crate::app(self.state.clone()), Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn admin(&self, uri: &str) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
        Self::send(crate::admin_app(self.state.clone()), Request::get(uri).body(Body::empty()).unwrap()).await
    }

    /// The census as the operator reads it: `GET /census` on the admin port, merged.
    async fn merged(&self) -> Merged {
        let (status, _, body) = self.admin("/census").await;
        assert_eq!(status, StatusCode::OK);
        let report: Report = serde_json::from_slice(&body).unwrap();
        let mut merged = Merged::default();
        merged.add(&report).unwrap();
        merged
    }

    async fn devices(&self, version: &str, state: State) -> u64 {
        self.merged().await.devices("esp32", version, state, HOUR, SystemTime::now())
    }

    async fn metric(&self, line_start: &str) -> String {
        let (_, _, body) = self.admin("/metrics").await;
        let text = String::from_utf8(body).unwrap();
        text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("no {line_start} in\n{text}")).into()
    }
}

#[tokio::test]
async fn version_with_id_and_current_counts_offered_and_running_and_answers_the_same() {
    let gateway = Gateway::with_census();
    let plain = gateway.get("/version?device=dev-esp32").await;
    let crc = crc32fast::hash(PAYLOAD);
    assert_eq!(plain.0, StatusCode::OK);
    assert_eq!(plain.2, format!("1.0.0\n{crc}\n{}", PAYLOAD.len()).into_bytes());
    for uri in [
        "/version?device=dev-esp32&id=dev-1&current=0.9.0",
        "/version?device=dev-esp32&id=dev-2&current=v0.9.0",
        "/version?device=dev-esp32&id=dev-3&current=1.0.0",
        "/version?device=dev-esp32&id=dev-1&current=0.9.0",
        "/version?device=dev-esp32&id=dev-4",
    ] {
        assert_eq!(gateway.get(uri).await, plain, "{uri}: the answer is byte-identical");
    }
    assert_eq!(gateway.devices("1.0.0", State::Offered).await, 4);
    assert_eq!(gateway.devices("0.9.0", State::Running).await, 2, "v0.9.0 is 0.9.0");
    assert_eq!(gateway.devices("1.0.0", State::Running).await, 1);
    assert_eq!(gateway.devices("1.0.0", State::Downloaded).await, 0);
    let merged = gateway.merged().await;
    assert_eq!(merged.versions("esp32"), ["0.9.0", "1.0.0"]);
    assert_eq!(merged.total("esp32", HOUR, SystemTime::now()), 4);
    // The one request without an id was an anonymous poll.
    assert_eq!(
        gateway.metric("updraft_gateway_anonymous_polls_total{").await,
        r#"updraft_gateway_anonymous_polls_total{channel="esp32"} 1"#
    );
    assert!(gateway.metric("updraft_gateway_census_series ").await.ends_with(" 3"));
    let bytes = gateway.metric("updraft_gateway_census_bytes ").await;
    assert_ne!(bytes, "updraft_gateway_census_bytes 0");
}

#[tokio::test]
async fn firmware_served_with_its_body_counts_downloaded() {
    let gateway = Gateway::with_census();
    let (status, _, body) = gateway.get("/firmware?device=dev-esp32&id=dev-1").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, PAYLOAD));
    // HEAD serves no binary: not counted.
    let head = Request::builder().method(Method::HEAD).uri("/firmware?device=dev-esp32&id=dev-2");
    let (status, _, _) = Gateway::send(crate::app(gateway.state.clone()), head.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    // A range of it is: 206.
    let range = Request::get("/firmware?device=dev-esp32&id=dev-3").header(header::RANGE, "bytes=0-3");
    let (status, _, body) = Gateway::send(crate::app(gateway.state.clone()), range.body(Body::empty()).unwrap()).await;
    assert_eq!((status, body.as_slice()), (StatusCode::PARTIAL_CONTENT, &PAYLOAD[..4]));
    // The channel API's download, by version with an id.
    let (status, _, _) = gateway.get("/api/v1/channels/esp32/firmware?version=1.0.0&id=dev-4").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gateway.devices("1.0.0", State::Downloaded).await, 3);
    assert_eq!(gateway.devices("1.0.0", State::Offered).await, 0);
}

#[tokio::test]
async fn the_channel_api_and_the_check_count_offered_and_running() {
    let gateway = Gateway::with_census();
    let (status, _, _) = gateway.get("/api/v1/channels/esp32?id=dev-1").await;
    assert_eq!(status, StatusCode::OK);
    let check = |body: &'static str| {
        Request::post("/api/v1/channels/esp32/check")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let app = || crate::app(gateway.state.clone());
    let (status, _, _) = Gateway::send(app(), check(r#"{"version":"0.9.0","id":"dev-2"}"#)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = Gateway::send(app(), check(r#"{"version":"1.0.0","id":"dev-3"}"#)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = Gateway::send(app(), check(r#"{"version":"0.8.0"}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gateway.devices("1.0.0", State::Offered).await, 3, "dev-1, dev-2 and dev-3 (up to date)");
    assert_eq!(gateway.devices("0.9.0", State::Running).await, 1);
    assert_eq!(gateway.devices("1.0.0", State::Running).await, 1);
    assert_eq!(gateway.devices("0.8.0", State::Running).await, 0, "no id: anonymous");
    assert_eq!(
        gateway.metric("updraft_gateway_anonymous_polls_total{").await,
        r#"updraft_gateway_anonymous_polls_total{channel="esp32"} 1"#
    );
}

/// A request on a connection with a verified client certificate (mutual TLS) carries
/// its subject (`server::ClientSubject`, put there by the connection loop): every
/// device route counts the device by it when the request names no `id`, and an `id`
/// wins over it.
#[tokio::test]
async fn a_client_certificate_subject_counts_as_the_device_unless_an_id_is_given() {
    use crate::server::ClientSubject;
    let gateway = Gateway::with_census();
    let app = || crate::app(gateway.state.clone());
    let as_client = |request: axum::http::request::Builder, subject: &str| {
        request.extension(ClientSubject::new(subject.to_owned()))
    };
    let get = |uri: &str, subject: &str| as_client(Request::get(uri), subject).body(Body::empty()).unwrap();
    for (uri, subject) in [
        ("/version?device=dev-esp32", "CN=dev-a,O=Acme"),
        ("/version?device=dev-esp32", "CN=dev-a,O=Acme"),
        ("/api/v1/channels/esp32", "CN=dev-b,O=Acme"),
        // An explicit id wins: a third device, not dev-a again.
        ("/version?device=dev-esp32&id=dev-c", "CN=dev-a,O=Acme"),
    ] {
        let (status, _, _) = Gateway::send(app(), get(uri, subject)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    assert_eq!(gateway.devices("1.0.0", State::Offered).await, 3);
    let (status, _, _) = Gateway::send(app(), get("/firmware?device=dev-esp32", "CN=dev-a,O=Acme")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = Gateway::send(app(), get("/api/v1/channels/esp32/firmware", "CN=dev-b,O=Acme")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gateway.devices("1.0.0", State::Downloaded).await, 2);
    let check = as_client(Request::post("/api/v1/channels/esp32/check"), "CN=dev-d,O=Acme")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"version":"0.9.0"}"#))
        .unwrap();
    assert_eq!(Gateway::send(app(), check).await.0, StatusCode::OK);
    assert_eq!(gateway.devices("0.9.0", State::Running).await, 1);
    assert_eq!(gateway.devices("1.0.0", State::Offered).await, 4);
    // An empty subject is none: anonymous.
    let (status, _, _) = Gateway::send(app(), get("/version?device=dev-esp32", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        gateway.metric("updraft_gateway_anonymous_polls_total{").await,
        r#"updraft_gateway_anonymous_polls_total{channel="esp32"} 1"#
    );
    // Its Debug, the form a log would take, never shows it.
    assert_eq!(format!("{:?}", ClientSubject::new("CN=dev-a".into())), "ClientSubject(<redacted>)");
}

#[tokio::test]
async fn an_id_over_256_bytes_is_not_recorded_but_counted_anonymous() {
    let gateway = Gateway::with_census();
    let long = "x".repeat(257);
    let plain = gateway.get("/version?device=dev-esp32").await;
    assert_eq!(gateway.get(&format!("/version?device=dev-esp32&id={long}&current=0.9.0")).await, plain);
    let fits = "y".repeat(256);
    gateway.get(&format!("/version?device=dev-esp32&id={fits}")).await;
    assert_eq!(gateway.devices("1.0.0", State::Offered).await, 1);
    assert_eq!(gateway.devices("0.9.0", State::Running).await, 0);
    assert_eq!(
        gateway.metric("updraft_gateway_anonymous_polls_total{").await,
        r#"updraft_gateway_anonymous_polls_total{channel="esp32"} 2"#
    );
}

#[tokio::test]
async fn census_is_served_on_the_admin_port_only_and_holds_no_id() {
    let gateway = Gateway::with_census();
    gateway.get("/version?device=dev-esp32&id=serial-0042-secret&current=0.9.0").await;
    let (status, headers, body) = gateway.admin("/census").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains(&("content-type".into(), "application/json".into())), "{headers:?}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains(r#""precision":14"#) && !text.contains("serial-0042"), "{text}");
    let (status, _, _) = gateway.get("/census").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not on the device port");
}

#[tokio::test]
async fn without_a_census_nothing_is_recorded_and_census_is_404() {
    let gateway = Gateway::new(None);
    let with = Gateway::with_census();
    let uri = "/version?device=dev-esp32&id=dev-1&current=0.9.0";
    assert_eq!(gateway.get(uri).await, with.get(uri).await);
    gateway.get("/version?device=dev-esp32").await;
    let (status, _, _) = gateway.admin("/census").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, body) = gateway.admin("/metrics").await;
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("updraft_gateway_anonymous_polls_total{"), "{text}");
    assert!(text.contains("updraft_gateway_census_bytes 0"), "{text}");
}

/// A writer into a shared buffer, for a subscriber whose output the test reads.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test process, at debug level: a global subscriber (a scoped
/// one misses spans whose interest other test threads cached before it existed).
fn debug_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of the tests");
        captured
    })
}

/// Debug-level logs of the routes show their query, never the device id.
#[tokio::test]
async fn debug_logs_of_a_request_with_an_id_do_not_contain_it() {
    let captured = debug_logs();
    let gateway = Gateway::with_census();
    for uri in [
        "/version?device=dev-esp32&id=SECRET-ID-4711&current=0.9.0&test=logs",
        "/firmware?device=dev-esp32&id=SECRET-ID-4711&test=logs",
        "/firmware?device=dev-esp32&%69d=SECRET-ID-4711&test=logs-encoded",
        "/api/v1/channels/esp32?id=SECRET-ID-4711",
        "/api/v1/channels/esp32/firmware?id=SECRET-ID-4711",
    ] {
        assert_eq!(gateway.get(uri).await.0, StatusCode::OK, "{uri}");
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The handlers' spans were logged, with the query…
    assert!(logs.contains("version{query=device=dev-esp32&id=REDACTED&current=0.9.0&test=logs}"), "{logs}");
    assert!(logs.contains("firmware{query=device=dev-esp32&id=REDACTED&test=logs}"), "{logs}");
    assert!(logs.contains("firmware{query=device=dev-esp32&id=REDACTED&test=logs-encoded}"), "{logs}");
    // …and no id anywhere.
    assert!(!logs.contains("SECRET-ID"), "{logs}");
}

#[test]
fn sizes_parse_with_binary_and_decimal_units() {
    use crate::census::{parse_size, SizeError};
    assert_eq!(parse_size("16MiB"), Ok(16 << 20));
    assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("20MB"), Ok(20_000_000));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("4096B"), Ok(4096));
    for bad in ["", "MiB", "16 parsecs", "-1MiB", "1.5MiB", "99999999999999999999GiB"] {
        assert_eq!(parse_size(bad), Err(SizeError(bad.trim().to_owned())), "{bad}");
    }
}
