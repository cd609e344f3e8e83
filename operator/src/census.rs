//! The device census, merged: every gateway replica's sketches (`GET /census` on its
//! admin port) merged per OtaGateway, for each FirmwareChannel's `status.devices`, its
//! rollout's adoption figures and Prometheus.
//!
//! Every interval (60 s; `--census-interval`) [`run`] reads each gateway's replicas,
//! merges their reports (`updraft_core::census::Merged`: a union of sketches, so a device
//! seen by several replicas counts once) and keeps the result here; then the gateway's
//! channels are reconciled, which writes `status.devices` and judges rollout steps from
//! these figures. Replicas are the ready endpoints of the EndpointSlices of the gateway's
//! Service (label `kubernetes.io/service-name`; `discovery.k8s.io/v1`, or `v1beta1` on
//! API servers before 1.21) at the port named `admin`. `--census-replicas` names them
//! instead, for gateways that run without pods (the tests: there is no kubelet).
//!
//! A replica that cannot be read is left out of the merge (and counted in
//! `updraft_operator_census_errors_total`); `status.devices.replicas` says how many were
//! merged. When none can be read, the last figures stay, with the time they were
//! gathered. No device id reaches the operator: reports hold only registers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::ResourceExt;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde_json::Value;
use tracing::{debug, warn};
use updraft_core::census::{Merged, Report, State, WINDOWS};
use updraft_crds::{DeviceCensus, FirmwareChannel, OtaGateway, VersionDevices};

use crate::attach::attached_refs;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::receiver::Queue;

/// The window `status.devices` reports (`24h`).
const STATUS_WINDOW: usize = 1;
/// A replica that does not answer in this time is left out of the merge.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest report read from one replica. A replica's sketches are bounded by its
/// `--census-memory` (16 MiB by default); its JSON is at most about twice that.
const MAX_REPORT: usize = 128 << 20;

/// Unique devices that downloaded a version, and of those the ones that report running
/// it, over a rollout step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Adoption {
    pub downloaded: u64,
    pub running: u64,
}

/// One OtaGateway, by namespace and name.
pub(crate) type GatewayKey = (String, String);

/// Replica addresses (`host:port` of the admin port) named by `--census-replicas`, by
/// gateway.
pub type Overrides = HashMap<GatewayKey, Vec<String>>;

/// `--census-replicas` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("--census-replicas {entry:?}: {reason} (expected namespace/gateway=host:port[,host:port...][;...])")]
pub struct OverridesError {
    entry: String,
    reason: &'static str,
}

/// Reads `namespace/gateway=host:port,host:port;namespace/gateway=...`.
pub fn parse_overrides(text: &str) -> Result<Overrides, OverridesError> {
    let mut overrides = Overrides::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let error = |reason| OverridesError { entry: entry.to_owned(), reason };
        let (gateway, addresses) = entry.split_once('=').ok_or_else(|| error("no '='"))?;
        let (namespace, name) =
            gateway.trim().split_once('/').ok_or_else(|| error("the gateway is not namespace/name"))?;
        if namespace.is_empty() || name.is_empty() {
            return Err(error("the gateway is not namespace/name"));
        }
        let addresses: Vec<String> =
            addresses.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
        if addresses.is_empty()
            || addresses.iter().any(|a| a.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()))
        {
            return Err(error("every replica must be host:port"));
        }
        overrides.insert((namespace.to_owned(), name.to_owned()), addresses);
    }
    Ok(overrides)
}

/// What one gather of a gateway's replicas found.
struct Gathered {
    merged: Merged,
    /// Replicas whose reports were merged.
    replicas: usize,
    at: SystemTime,
}

/// The merged figures of every OtaGateway whose replicas were read.
#[derive(Default)]
pub(crate) struct Census {
    gathered: RwLock<HashMap<GatewayKey, Arc<Gathered>>>,
    /// The `status.devices` last handed out per channel: its `observedAt` stays while
    /// the figures do not change, so a steady census does not rewrite status.
    published: RwLock<HashMap<(GatewayKey, String), DeviceCensus>>,
}

impl Census {
    fn get(&self, gateway: &GatewayKey) -> Option<Arc<Gathered>> {
        self.gathered.read().expect("census lock").get(gateway).cloned()
    }

    /// `status.devices` of `channel` served by `gateway`, when the gateway's replicas
    /// were read: unique devices in the last 24 hours, in total and per version (newest
    /// first) and state.
    pub(crate) fn devices(&self, gateway: &GatewayKey, channel: &str) -> Option<DeviceCensus> {
        let gathered = self.get(gateway)?;
        let (label, window) = WINDOWS[STATUS_WINDOW];
        let (merged, at) = (&gathered.merged, gathered.at);
        let count = |version: &str, state| merged.devices(channel, version, state, window, at) as i64;
        let mut by_version: Vec<VersionDevices> = merged
            .versions(channel)
            .into_iter()
            .map(|version| VersionDevices {
                offered: count(&version, State::Offered),
                downloaded: count(&version, State::Downloaded),
                running: count(&version, State::Running),
                version,
            })
            .filter(|v| v.offered + v.downloaded + v.running > 0)
            .collect();
        by_version.sort_by(|a, b| newest_first(&a.version, &b.version));
        let mut devices = DeviceCensus {
            window: label.to_owned(),
            total: merged.total(channel, window, at) as i64,
            by_version,
            replicas: gathered.replicas as i32,
            observed_at: Time(k8s_openapi::jiff::Timestamp::try_from(at).unwrap_or_default()),
        };
        let key = (gateway.clone(), channel.to_owned());
        let mut published = self.published.write().expect("census lock");
        if let Some(before) = published.get(&key) {
            let same = DeviceCensus { observed_at: before.observed_at.clone(), ..devices.clone() };
            if same == *before {
                devices.observed_at = before.observed_at.clone();
            }
        }
        published.insert(key, devices.clone());
        Some(devices)
    }

    /// Of the devices that downloaded `version` of `channel` since `since` (from the
    /// start of its minute: the census counts whole minutes), how many there are and how
    /// many report running it since then, when the gateway's replicas
    /// were read. "Downloaded and running" is |D| + |R| - |D ∪ R| of the two sketches:
    /// near exact while the counts are small next to the sketch's 16,384 registers,
    /// which is where rollout steps are judged.
    pub(crate) fn adoption(
        &self,
        gateway: &GatewayKey,
        channel: &str,
        version: &str,
        since: SystemTime,
    ) -> Option<Adoption> {
        let gathered = self.get(gateway)?;
        let (merged, at) = (&gathered.merged, gathered.at);
        // The census keeps whole minutes and a window holds the minutes after its start:
        // cover the minute `since` falls in (a download a few seconds after the step
        // began is in it), so also up to a minute before.
        let minute = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60);
        let minutes = minute(at).saturating_sub(minute(since)) + 1;
        let window = Duration::from_secs(minutes * 60).min(WINDOWS[2].1);
        let downloaded = merged.devices(channel, version, State::Downloaded, window, at);
        let running = merged.devices(channel, version, State::Running, window, at);
        let either = merged.union(channel, &[(version, State::Downloaded), (version, State::Running)], window, at);
        let both = (downloaded + running).saturating_sub(either).min(downloaded);
        Some(Adoption { downloaded, running: both })
    }

    /// Keeps what a gather found for `gateway`, or forgets the gateway.
    fn keep(&self, gateway: &GatewayKey, gathered: Option<Gathered>) {
        let mut all = self.gathered.write().expect("census lock");
        match gathered {
            Some(g) => all.insert(gateway.clone(), Arc::new(g)),
            None => all.remove(gateway),
        };
    }

    /// Forgets gateways that no longer exist.
    fn retain(&self, alive: &[GatewayKey]) {
        self.gathered.write().expect("census lock").retain(|k, _| alive.contains(k));
        self.published.write().expect("census lock").retain(|(k, _), _| alive.contains(k));
    }
}

/// Newest version first: semantic versions by precedence (a `v` prefix ignored), then
/// any other text, descending.
fn newest_first(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |v: &str| semver::Version::parse(v.trim_start_matches('v')).ok();
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => b.cmp(&a),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => b.cmp(a),
    }
}

/// The states, as metric labels.
const STATES: [(State, &str); 3] =
    [(State::Offered, "offered"), (State::Downloaded, "downloaded"), (State::Running, "running")];

/// The labels of one `channel_devices` series: namespace, channel, version, state, window.
type SeriesLabels = [String; 5];

/// The census's Prometheus series.
pub(crate) struct CensusMetrics {
    devices: IntGaugeVec,
    unique: IntGaugeVec,
    replicas: IntGaugeVec,
    errors: IntCounterVec,
    /// The `channel_devices` label sets each channel published last, so versions that
    /// leave the windows leave the metrics too.
    published: std::sync::Mutex<HashMap<(String, String), Vec<SeriesLabels>>>,
}

impl CensusMetrics {
    pub(crate) fn new(metrics: &Metrics) -> Self {
        let devices = IntGaugeVec::new(
            Opts::new(
                "channel_devices",
                "Unique devices (census estimate) per FirmwareChannel, version, state (offered, downloaded, running) and window",
            ),
            &["namespace", "channel", "version", "state", "window"],
        )
        .expect("valid metric");
        let unique = IntGaugeVec::new(
            Opts::new("channel_unique_devices", "Unique devices (census estimate) per FirmwareChannel and window"),
            &["namespace", "channel", "window"],
        )
        .expect("valid metric");
        let replicas = IntGaugeVec::new(
            Opts::new("census_replicas", "Gateway replicas whose census the last gather merged"),
            &["namespace", "gateway"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new("census_errors_total", "Census gathers that failed, by reason (discovery, unreachable, invalid)"),
            &["namespace", "gateway", "reason"],
        )
        .expect("valid metric");
        metrics.register(Box::new(devices.clone()));
        metrics.register(Box::new(unique.clone()));
        metrics.register(Box::new(replicas.clone()));
        metrics.register(Box::new(errors.clone()));
        Self { devices, unique, replicas, errors, published: Default::default() }
    }

    /// Publishes the figures of every channel in `gathered` (and drops the series of
    /// versions that left the windows).
    fn publish(&self, gateway: &GatewayKey, gathered: &Gathered) {
        let namespace = gateway.0.as_str();
        self.replicas.with_label_values(&[namespace, &gateway.1]).set(gathered.replicas as i64);
        let mut published = self.published.lock().expect("census metrics lock");
        for channel in gathered.merged.channels() {
            let mut labels = Vec::new();
            for (window_label, window) in WINDOWS {
                let unique = gathered.merged.total(&channel, window, gathered.at) as i64;
                self.unique.with_label_values(&[namespace, &channel, window_label]).set(unique);
                for version in gathered.merged.versions(&channel) {
                    for (state, name) in STATES {
                        let n = gathered.merged.devices(&channel, &version, state, window, gathered.at) as i64;
                        let set = [namespace, &channel, &version, name, window_label].map(str::to_owned);
                        self.devices.with_label_values(&set).set(n);
                        labels.push(set);
                    }
                }
            }
            let before = published.insert((namespace.to_owned(), channel.clone()), labels.clone()).unwrap_or_default();
            for gone in before.iter().filter(|l| !labels.contains(l)) {
                let _ = self.devices.remove_label_values(gone);
            }
        }
    }

    fn error(&self, gateway: &GatewayKey, reason: &str) {
        self.errors.with_label_values(&[&gateway.0, &gateway.1, reason]).inc();
    }
}

/// Gathers the census of every gateway every `interval`, until the process ends; after
/// each gather the gateway's channels are reconciled (`channels`).
pub(crate) async fn run(ctx: Arc<Context>, channels: Queue<FirmwareChannel>, interval: Duration, overrides: Overrides) {
    let metrics = CensusMetrics::new(&ctx.metrics);
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(crate::clients::USER_AGENT)
        .build()
        .expect("a plain HTTP client builds");
    let mut slices = SliceApi::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let gateways = ctx.gateways.state();
        let alive: Vec<GatewayKey> = gateways.iter().map(|g| key(g)).collect();
        ctx.census.retain(&alive);
        for gateway in &gateways {
            let key = key(gateway);
            let addresses = match overrides.get(&key) {
                Some(named) => named.clone(),
                None => match slices.replicas(&ctx.client, gateway).await {
                    Ok(found) => found,
                    Err(e) => {
                        warn!(namespace = key.0, gateway = key.1, error = %e, "census: cannot list the gateway's endpoints");
                        metrics.error(&key, "discovery");
                        continue;
                    }
                },
            };
            if addresses.is_empty() {
                ctx.census.keep(&key, None);
                continue;
            }
            let Some(gathered) = gather(&http, &key, &addresses, &metrics).await else { continue };
            metrics.publish(&key, &gathered);
            ctx.census.keep(&key, Some(gathered));
            for channel in attached_refs(&ctx.channels, gateway) {
                channels.push(channel);
            }
        }
    }
}

fn key(gateway: &OtaGateway) -> GatewayKey {
    (gateway.namespace().unwrap_or_default(), gateway.name_any())
}

/// Reads and merges the reports of `addresses`; `None` when none could be read.
async fn gather(
    http: &reqwest::Client,
    gateway: &GatewayKey,
    addresses: &[String],
    metrics: &CensusMetrics,
) -> Option<Gathered> {
    let at = SystemTime::now();
    let reports = join_all(addresses.iter().map(|a| report(http, a))).await;
    let mut merged = Merged::default();
    let mut replicas = 0;
    for (address, report) in addresses.iter().zip(reports) {
        let added = match report {
            Ok(report) => merged.add(&report).map_err(|e| ("invalid", e.to_string())),
            Err(e) => Err(e),
        };
        match added {
            Ok(()) => replicas += 1,
            Err((reason, error)) => {
                warn!(namespace = gateway.0, gateway = gateway.1, replica = address, error, "census: replica left out");
                metrics.error(gateway, reason);
            }
        }
    }
    debug!(namespace = gateway.0, gateway = gateway.1, replicas, of = addresses.len(), "census gathered");
    (replicas > 0).then_some(Gathered { merged, replicas, at })
}

/// One replica's `GET /census`, read up to [`MAX_REPORT`] bytes.
async fn report(http: &reqwest::Client, address: &str) -> Result<Report, (&'static str, String)> {
    let unreachable = |e: reqwest::Error| ("unreachable", e.to_string());
    let response = http.get(format!("http://{address}/census")).send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(("unreachable", format!("GET /census answered {}", response.status())));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(unreachable)?);
        if body.len() > MAX_REPORT {
            return Err(("invalid", format!("the report is larger than {MAX_REPORT} bytes")));
        }
    }
    serde_json::from_slice(&body).map_err(|e| ("invalid", format!("the report is not a census: {e}")))
}

/// The EndpointSlice API the server has: `discovery.k8s.io/v1`, or `v1beta1` before
/// Kubernetes 1.21. Found on first use.
#[derive(Default)]
struct SliceApi {
    resource: Option<ApiResource>,
}

impl SliceApi {
    /// The admin addresses (`host:port`) of the ready endpoints of `gateway`'s Service.
    async fn replicas(&mut self, client: &kube::Client, gateway: &OtaGateway) -> Result<Vec<String>, kube::Error> {
        let namespace = gateway.namespace().unwrap_or_default();
        let params = ListParams::default().labels(&format!("kubernetes.io/service-name={}", gateway.name_any()));
        let versions = match &self.resource {
            Some(known) => vec![known.clone()],
            None => ["v1", "v1beta1"]
                .iter()
                .map(|v| ApiResource::from_gvk(&GroupVersionKind::gvk("discovery.k8s.io", v, "EndpointSlice")))
                .collect(),
        };
        let mut last = None;
        for resource in versions {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
            match api.list(&params).await {
                Ok(list) => {
                    self.resource = Some(resource);
                    return Ok(list.items.iter().flat_map(|s| admin_addresses(&s.data)).collect());
                }
                Err(kube::Error::Api(e)) if e.code == 404 => last = Some(kube::Error::Api(e)),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("two versions were tried"))
    }
}

/// `host:port` of every ready endpoint of one EndpointSlice (`v1` and `v1beta1` share
/// these fields), at its port named `admin`.
fn admin_addresses(slice: &Value) -> Vec<String> {
    let Some(port) =
        slice["ports"].as_array().into_iter().flatten().find(|p| p["name"] == "admin").and_then(|p| p["port"].as_u64())
    else {
        return Vec::new();
    };
    let mut out = BTreeMap::new();
    for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
        // An absent `ready` means ready (the API's own rule).
        if endpoint["conditions"]["ready"] == Value::Bool(false) {
            continue;
        }
        for address in endpoint["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let mut text = String::new();
            if address.contains(':') {
                let _ = write!(text, "[{address}]:{port}");
            } else {
                let _ = write!(text, "{address}:{port}");
            }
            out.insert(text, ());
        }
    }
    out.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replicas_named_by_the_flag() {
        let o = parse_overrides("ns/gw=127.0.0.1:9001, 127.0.0.2:9001 ; other/edge=[::1]:80").unwrap();
        assert_eq!(o[&("ns".into(), "gw".into())], ["127.0.0.1:9001", "127.0.0.2:9001"]);
        assert_eq!(o[&("other".into(), "edge".into())], ["[::1]:80"]);
        assert!(parse_overrides("").unwrap().is_empty());
        for bad in ["gw=127.0.0.1:1", "ns/gw", "ns/gw=", "ns/gw=host", "ns/gw=host:99999", "/gw=h:1"] {
            let e = parse_overrides(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split(';').next().unwrap()), "{e}");
        }
    }

    #[test]
    fn ready_endpoints_at_the_admin_port() {
        let slice = json!({
            "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                {"addresses": ["fd00::4"], "conditions": {"ready": true}}
            ]
        });
        assert_eq!(admin_addresses(&slice), ["10.0.0.1:9090", "10.0.0.2:9090", "[fd00::4]:9090"]);
        assert!(admin_addresses(
            &json!({"ports": [{"name": "http", "port": 1}], "endpoints": [{"addresses": ["10.0.0.1"]}]})
        )
        .is_empty());
        assert!(admin_addresses(&json!({})).is_empty());
    }

    #[test]
    fn versions_newest_first() {
        let mut v = vec!["1.2.0", "v1.10.0", "dev", "1.9.9", "1.10.0-rc.1"];
        v.sort_by(|a, b| newest_first(a, b));
        assert_eq!(v, ["v1.10.0", "1.10.0-rc.1", "1.9.9", "1.2.0", "dev"]);
    }

    fn census_of(devices: &[(&str, &str, State)], at: SystemTime) -> Merged {
        let census = updraft_core::census::Census::new(16 << 20);
        for (id, version, state) in devices {
            census.record("esp32", version, *state, id, at);
        }
        let mut merged = Merged::default();
        merged.add(&census.report(at)).unwrap();
        merged
    }

    #[test]
    fn adoption_counts_a_download_in_the_minute_the_step_began() {
        let minute = |m: u64, s: u64| UNIX_EPOCH + Duration::from_secs(29_000_000 * 60 + m * 60 + s);
        let (since, download, at) = (minute(0, 10), minute(0, 20), minute(1, 5));
        let census = updraft_core::census::Census::new(16 << 20);
        census.record("esp32", "1.1.0", State::Downloaded, "device-1", download);
        census.record("esp32", "1.1.0", State::Running, "device-1", minute(1, 0));
        // Ten seconds before the step began, in the same minute: counted too (a whole minute).
        census.record("esp32", "1.1.0", State::Downloaded, "device-2", minute(0, 0));
        let mut merged = Merged::default();
        merged.add(&census.report(at)).unwrap();
        let gateway: GatewayKey = ("ns".into(), "gw".into());
        let figures = Census::default();
        figures.keep(&gateway, Some(Gathered { merged, replicas: 1, at }));
        let adoption = figures.adoption(&gateway, "esp32", "1.1.0", since).unwrap();
        assert_eq!((adoption.downloaded, adoption.running), (2, 1), "both downloads are in the step's minute");
        let later = figures.adoption(&gateway, "esp32", "1.1.0", minute(1, 0)).unwrap();
        assert_eq!(later, Adoption { downloaded: 0, running: 0 }, "a step that began a minute later saw none");
    }

    #[test]
    fn adoption_counts_the_devices_that_downloaded_and_run_the_version() {
        let at = SystemTime::now();
        let mut devices = Vec::new();
        let ids: Vec<String> = (0..400).map(|i| format!("device-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            if i < 300 {
                devices.push((id.as_str(), "1.1.0", State::Downloaded));
            }
            // 270 of the 300 run it; 100 others run it without a download in the window.
            if !(270..300).contains(&i) {
                devices.push((id.as_str(), "1.1.0", State::Running));
            }
            if (270..300).contains(&i) {
                devices.push((id.as_str(), "1.0.0", State::Running));
            }
        }
        let census = Census::default();
        let gateway: GatewayKey = ("ns".into(), "gw".into());
        census.keep(&gateway, Some(Gathered { merged: census_of(&devices, at), replicas: 1, at }));
        let adoption = census.adoption(&gateway, "esp32", "1.1.0", at - Duration::from_secs(600)).unwrap();
        // Estimates, within 1 % here (the sketch's linear range).
        assert!((297..=303).contains(&adoption.downloaded), "{adoption:?}");
        assert!((265..=275).contains(&adoption.running), "{adoption:?}");
        assert_eq!(census.adoption(&("ns".into(), "other".into()), "esp32", "1.1.0", at), None);

        let devices = census.devices(&gateway, "esp32").unwrap();
        assert_eq!((devices.window.as_str(), devices.replicas), ("24h", 1));
        assert!((396..=404).contains(&devices.total), "{devices:?}");
        let near = |n: i64, want: i64| (n - want).abs() <= want / 100 + 1;
        let [new, old] = &devices.by_version[..] else { panic!("two versions: {devices:?}") };
        assert_eq!((new.version.as_str(), old.version.as_str()), ("1.1.0", "1.0.0"), "newest first");
        assert!(near(new.downloaded, 300) && near(new.running, 370) && new.offered == 0, "{new:?}");
        assert!(old.downloaded == 0 && near(old.running, 30), "{old:?}");
        // The same figures again keep their time; status is not rewritten.
        let again = census.devices(&gateway, "esp32").unwrap();
        assert_eq!(again, devices);
    }
}
