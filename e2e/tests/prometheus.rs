//! The chart's dashboard and alerts against a real Prometheus (Debian's `prometheus` and
//! `promtool`, installed by `cluster.sh tools`).
//!
//! - promtool: the PrometheusRule rendered by the real `helm` passes `promtool check
//!   rules`, and `charts/updraft/tests/alerts.test.yaml` (every alert in its scenario and
//!   near misses, with the `for` durations the chart ships) passes `promtool test rules`.
//! - Live: Prometheus on loopback scrapes the real gateway binary (standalone, from a
//!   hand-written config) and the real operator binary every second and evaluates the
//!   rules rendered with `for: 5s` (the real durations are promtool's to test). Devices
//!   and failures are made for real: a channel whose newest release is unsigned (the
//!   operator's FirmwareChannel and the gateway's standalone channel both skip it), a
//!   channel whose registry does not answer (502), a stream whose upstream does not
//!   answer (stale index), a certificate that expires in three days, an ArtifactMirror.
//!   Devices send their ids, so the census panels have data (the operator merges the
//!   gateway's census, found through an EndpointSlice), and a channel rolls out to half
//!   its devices: every dashboard query returns data. Five alerts fire. For
//!   UpdraftCensusDropping the hour before is written into Prometheus's storage with
//!   `promtool tsdb create-blocks-from openmetrics` (100 devices an hour ago; the live
//!   census sees the 40 still polling): no test can wait an hour.
//!   UpdraftMirrorBehind fires in `mirrors.rs` (a mirror nothing forwards) and
//!   UpdraftRolloutPaused in `rollout.rs` (devices that fail a release), each with a
//!   Prometheus of its own.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::conditions::condition;
use e2e::cosign::{Key, Repository};
use e2e::helm::chart_dir;
use e2e::procs::{binary, free_port, oras_push, wait_for, Proc, TempDir};
use e2e::prometheus::{alert_names, backfill, render_rules, rules_with_for, tools, Prometheus};
use e2e::world::{OnUnknownField, World};
use e2e::{cluster, curl, kubectl, run};
use serde_json::Value;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const WAIT: Duration = Duration::from_secs(90);

/// The alerts made to fire live, with a label each must carry.
const LIVE_ALERTS: &[(&str, &str, &str)] = &[
    ("UpdraftGateway5xxRate", "route", "/firmware"),
    ("UpdraftReleaseFailedVerification", "channel", "esp32"),
    ("UpdraftStreamIndexInvalid", "stream", "lab"),
    ("UpdraftCertificateExpiring", "job", "gateway"),
    ("UpdraftCensusDropping", "channel", "esp32"),
];

#[test]
fn the_rules_pass_promtool_check_and_the_alert_unit_tests() {
    tools();
    let dir = TempDir::new("promtool");
    let rules = render_rules(&[]);
    std::fs::write(dir.0.join("rules.yaml"), &rules).unwrap();
    let checked = run(Command::new("promtool").arg("check").arg("rules").arg(dir.0.join("rules.yaml")));
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");

    // Every alert has a unit test with a case where it fires and one where it does not.
    let tests_file = chart_dir().join("tests/alerts.test.yaml");
    let tests_text = std::fs::read_to_string(&tests_file).unwrap();
    let tests: Value = serde_yaml::from_str(&tests_text).unwrap();
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().iter())
        .collect();
    let names = alert_names(&rules);
    assert_eq!(names.len(), 7, "{names:?}");
    for name in &names {
        let of = |firing: bool| {
            cases.iter().any(|c| {
                c["alertname"] == name.as_str() && c["exp_alerts"].as_array().is_some_and(|a| a.is_empty() != firing)
            })
        };
        assert!(of(true) && of(false), "{name}: needs a case that fires and one that does not");
    }
    std::fs::write(dir.0.join("alerts.test.yaml"), &tests_text).unwrap();
    let tested = run(Command::new("promtool").args(["test", "rules"]).arg(dir.0.join("alerts.test.yaml")));
    assert!(tested.contains("SUCCESS"), "{tested}");

    // A mutation: the 5xx alert without its rate floor fires on the check-in route's
    // near miss, and promtool says so (the near misses are really asserted).
    let loose = render_rules(&["monitoring.rules.gateway5xxMinRate=0".into()]);
    std::fs::write(dir.0.join("rules.yaml"), loose).unwrap();
    let out = Command::new("promtool").args(["test", "rules"]).arg(dir.0.join("alerts.test.yaml")).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("/api/v1/channels/{name}/check"), "{text}");
}

/// A self-signed certificate for 127.0.0.1 expiring in `days`.
fn certificate(dir: &Path, days: u32) -> (String, String) {
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-days", &days.to_string(), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    (crt.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned())
}

/// The dashboard's panel queries, template variables replaced by what "All" means.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(chart_dir().join("dashboards/updraft.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    for field in ["uid", "title"] {
        assert!(dashboard[field].as_str().is_some_and(|s| !s.is_empty()), "{field}");
    }
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(vars, ["datasource", "namespace", "channel"]);
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_owned();
            p["targets"].as_array().unwrap().iter().map(move |t| {
                let expr = t["expr"].as_str().unwrap();
                let expr = expr.replace("$namespace", ".*").replace("$channel", ".*").replace("$__rate_interval", "1m");
                assert!(!expr.contains('$'), "{title}: an unknown variable in {expr}");
                (title.clone(), expr)
            })
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_both_binaries_and_the_alerts_fire() {
    // The operator merges the gateway's census every 2 s (its replicas found through the
    // Service's EndpointSlice, written below).
    let census = |_: &str| vec!["--census-interval".to_owned(), "2s".to_owned()];
    let w = World::with_operator("prom", census)
        .patience(WAIT)
        .on_unknown_field(OnUnknownField::Retry(Duration::from_secs(20)))
        .ready();
    let registry = cluster().registry.clone();

    // Releases: 1.0.0 signed, 1.1.0 not. The operator's channel and the gateway's
    // standalone one both serve 1.0.0 and skip 1.1.0.
    let key = Key::generate(&w.dir.0, "cosign");
    let public = key.public_file().to_str().unwrap().to_owned();
    kubectl(&["create", "secret", "generic", "cosign", "-n", &w.ns, &format!("--from-file=cosign.pub={public}")], None)
        .ok();
    let push = |tag: &str| {
        let file = w.dir.0.join(format!("fw-{tag}.bin"));
        std::fs::write(&file, format!("firmware {tag} of {}", w.ns).repeat(100)).unwrap();
        oras_push(&w.repository, tag, &file, MEDIA_TYPE)
    };
    let signed = push("v1.0.0");
    Repository { registry: &registry, name: &w.repository, dir: &w.dir.0 }.sign_with_tag(&key, &signed);
    push("v1.1.0");
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  interval: 2s\n  source: {{registry: \"{registry}\", repository: \"{}\", insecure: true}}\n  verify: {{provider: cosign, publicKeySecret: {{name: cosign}}}}\n",
        w.repository
    ));
    // A channel rolling out to half its devices: the rollout panels' series.
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: canary}}\nspec:\n  interval: 1h\n  rollout: {{percentage: 50}}\n  source: {{registry: \"{registry}\", repository: \"{}\", insecure: true}}\n",
        w.repository
    ));
    // A mirror whose destination does not answer: the operator observes it.
    kubectl(&["create", "secret", "generic", "wan-key", "-n", &w.ns, "--from-literal=key=k"], None).ok();
    let nobody = free_port();
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: ArtifactMirror\nmetadata: {{name: to-wan}}\nspec:\n  interval: 30s\n  include: [\"*.bin\"]\n  source: {{oci: {{registry: \"{registry}\", repository: \"{}\", insecure: true}}}}\n  destination: {{http: {{url: \"http://127.0.0.1:{nobody}\", keySecret: wan-key, allowPlainHttp: true}}}}\n",
        w.repository
    ));
    w.wait("fwc/esp32", "1.0.0 served, 1.1.0 skipped", |v| {
        v["status"]["latest"]["digest"] == signed.as_str()
            && condition(v, "Verified").is_some_and(|c| c["status"] == "False" && c["reason"] == "NoSignature")
    });

    // The gateway: the verifying channel, a channel pinned to a release in a registry
    // that does not answer (its downloads answer 502), a stream whose upstream does not
    // answer, TLS with a certificate for three days.
    let (crt, tls_key) = certificate(&w.dir.0, 3);
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        "listen: 127.0.0.1:{http}\nadminListen: 127.0.0.1:{admin}\ncache: {{dir: \"{cache}\"}}\ntls: {{listen: \"127.0.0.1:{https}\", certFile: \"{crt}\", keyFile: \"{tls_key}\"}}\nchannels:\n  - name: esp32\n    source: {{registry: \"{registry}\", repository: \"{repo}\", insecure: true}}\n    policy: {{interval: 1s, verify: {{publicKeyFiles: [\"{public}\"]}}}}\n  - name: dark\n    source: {{registry: \"127.0.0.1:{nobody}\", repository: dark/firmware, insecure: true}}\n    current: {{version: 1.0.0, tag: v1.0.0, digest: \"sha256:{zeros}\"}}\nstreams:\n  - name: lab\n    source: {{upstream: {{url: \"http://127.0.0.1:{nobody}\", interval: 1s}}}}\n",
        cache = w.dir.0.join("cache").display(),
        repo = w.repository,
        zeros = "0".repeat(64),
    );
    let config_file = w.dir.0.join("gateway.yaml");
    std::fs::write(&config_file, config).unwrap();
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config_file.to_str().unwrap()]);
    let gateway = Proc::spawn(cmd, &w.dir.0.join("gateway.log"));
    let base = format!("http://127.0.0.1:{http}");
    wait_for(WAIT, "the gateway serves 1.0.0", || {
        let (status, body) = curl(&[&format!("{base}/version?device=esp32")]);
        (status == 200 && body.starts_with(b"1.0.0\n")).then_some(())
    });

    // The gateway Service's endpoints, as Kubernetes' EndpointSlice controller writes
    // them for a ready pod: how the operator finds the replicas whose census it merges.
    w.apply(&format!(
        "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: default-replicas\n  labels: {{kubernetes.io/service-name: default}}\naddressType: IPv4\nports:\n  - {{name: admin, port: {admin}, protocol: TCP}}\n  - {{name: http, port: {http}, protocol: TCP}}\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n"
    ));

    // Devices, each with its id (the census): version checks (one in two reporting the
    // version it runs), downloads (a miss, then hits), check-ins, and requests for the
    // channel nobody can resolve; over TLS too.
    let stop = Arc::new(AtomicBool::new(false));
    let devices = {
        let (stop, base) = (stop.clone(), base.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (id, running) = (format!("dev-{}", n % 40), if n % 2 == 0 { "1.0.0" } else { "0.9.0" });
                curl(&[&format!("{base}/version?device=esp32&id={id}&current={running}")]);
                curl(&[&format!("{base}/firmware?device=esp32&id={id}")]);
                let check = format!(r#"{{"version":"1.0.0","id":"{id}"}}"#);
                curl(&["-X", "POST", "-d", &check, &format!("{base}/api/v1/channels/esp32/check")]);
                curl(&[&format!("{base}/firmware?device=dark")]);
                curl(&["-k", &format!("https://127.0.0.1:{https}/version?device=esp32&id={id}")]);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let dark = curl(&[&format!("{base}/firmware?device=dark")]).0;
    assert_eq!(dark, 502, "the channel whose registry does not answer");

    // The census an hour ago, before 60 of the channel's 100 devices went dark: a
    // sample every 15 s from 75 to 45 minutes ago (what `offset 1h` reads while the
    // test runs), with the labels the operator gives the series.
    let prom_dir = TempDir::new("prometheus");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut history = String::from("# TYPE updraft_operator_channel_unique_devices gauge\n");
    for at in (now - 75 * 60..now - 45 * 60).step_by(15) {
        history.push_str(&format!(
            "updraft_operator_channel_unique_devices{{channel=\"esp32\",namespace=\"{}\",window=\"1h\"}} 100 {at}\n",
            w.ns
        ));
    }
    history.push_str("# EOF\n");
    backfill(&prom_dir.0, &history);

    // Prometheus: both binaries every second, the rules with `for: 5s`.
    tools();
    let prom = Prometheus::start(
        &prom_dir.0,
        &[("gateway", format!("127.0.0.1:{admin}")), ("operator", format!("127.0.0.1:{}", w.admin))],
        &rules_with_for("5s"),
    );
    wait_for(WAIT, "both targets up", || (prom.query("up == 1").len() == 2).then_some(()));

    // Every alert that can be made here fires, with the labels of its scenario.
    let firing = wait_for(WAIT, "the live alerts firing", || {
        let alerts = prom.alerts();
        let all = LIVE_ALERTS.iter().all(|(name, label, value)| {
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == *name && a["labels"][*label] == *value && a["state"] == "firing")
        });
        all.then_some(alerts)
    });
    let names: BTreeSet<&str> = firing.iter().filter_map(|a| a["labels"]["alertname"].as_str()).collect();
    eprintln!("alerts firing or pending: {names:?}");
    for quiet in ["UpdraftMirrorBehind", "UpdraftRolloutPaused"] {
        assert!(!names.contains(quiet), "{quiet} fired: {firing:#?}");
    }
    let verification: Vec<&Value> =
        firing.iter().filter(|a| a["labels"]["alertname"] == "UpdraftReleaseFailedVerification").collect();
    // The operator's channel (with its namespace) and the gateway's standalone one.
    for namespace in [Value::from(w.ns.as_str()), Value::Null] {
        assert!(
            verification
                .iter()
                .any(|a| a["labels"]["namespace"] == namespace && a["labels"]["reason"] == "NoSignature"),
            "{verification:#?}"
        );
    }
    let cert = firing.iter().find(|a| a["labels"]["alertname"] == "UpdraftCertificateExpiring").unwrap();
    let left: f64 = cert["value"].as_str().unwrap().parse().unwrap();
    assert!(left > 2.0 * 86_400.0 && left <= 3.0 * 86_400.0, "{cert:#}");
    // Only the channel with a past: its value is the census now, the 40 devices polling.
    let dropping: Vec<&Value> = firing.iter().filter(|a| a["labels"]["alertname"] == "UpdraftCensusDropping").collect();
    assert_eq!(dropping.len(), 1, "{dropping:#?}");
    assert_eq!(dropping[0]["labels"]["namespace"], w.ns.as_str(), "{dropping:#?}");
    let now_seen: f64 = dropping[0]["value"].as_str().unwrap().parse().unwrap();
    assert!((39.0..=41.0).contains(&now_seen), "the census of 40 devices: {dropping:#?}");

    // Every dashboard query returns data.
    let mut answered = 0;
    for (title, expr) in dashboard_queries() {
        wait_for(Duration::from_secs(30), &format!("data for {title}: {expr}"), || {
            (!prom.query(&expr).is_empty()).then_some(())
        });
        answered += 1;
    }
    eprintln!("{answered} dashboard queries answered, all of them");
    assert!(answered >= 20, "{answered}");
    // The template variables' values come from the operator's series.
    let namespaces = prom.api("label/namespace/values", None);
    assert!(namespaces.as_array().unwrap().iter().any(|n| n == w.ns.as_str()), "{namespaces}");

    stop.store(true, Ordering::Relaxed);
    devices.join().unwrap();
    drop(gateway);
}
