//! The OtaGateway's forwarding side end to end: the real operator binary against
//! kube-apiserver 1.20. `spec.store` is served from its PVC on its own Service port. An
//! attached ArtifactMirror renders the gateway's `mirrors` section (the store key as a
//! mounted Secret file, `dryRun` passed on; the real `--mirror` worker takes the
//! rendered file) and the singleton worker Deployment `<gateway>-mirror`
//! (replicas 1, Recreate, `--mirror`, the store's PVC mounted), which is deleted again
//! when the last mirror goes; a malformed mirror (bad interval, unsupported glob)
//! is `Stalled` naming the field and is never rendered; one naming a missing Secret is
//! `Stalled` (`SecretNotFound`) naming the field until the Secret appears. A store with
//! two replicas waits for its claim and refuses one that is not ReadWriteMany.
//!
//! The controller observes: a store → store mirror between two real gateway stores on
//! loopback reports what is pending (and in a dry run the plan, with nothing copied),
//! turns `Behind` when nothing forwards it for two intervals, goes in sync once the
//! real worker runs the rendered config, and reports the destination unreachable when
//! it stops. A real Prometheus scrapes that operator and evaluates the chart's rules
//! (`for: 5s`): UpdraftMirrorBehind fires while the mirror is behind and resolves once
//! it is in sync.

use std::process::Command;
use std::time::Duration;

use e2e::conditions::condition;
use e2e::kubectl;
use e2e::procs::{binary, free_port, wait_for, Proc, TempDir};
use e2e::prometheus::{rules_with_for, tools, Prometheus};
use e2e::world::World;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The steps only this file takes.
trait Mirrors {
    fn config(&self) -> Value;
}

impl Mirrors for World {
    /// The gateway's rendered `gateway.yaml`.
    fn config(&self) -> Value {
        e2e::rendered_config(&self.get("configmap/default-config").unwrap_or_default())
    }
}

fn mirror_yaml(name: &str, interval: &str) -> String {
    mirror_with(name, interval, "*.bin", "wan-key")
}

/// A loopback port nothing listens on, for a destination that must stay unreachable
/// (a fixed one, 18081, was taken by a gateway left running on the machine).
fn closed_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(free_port)
}

fn mirror_with(name: &str, interval: &str, include: &str, key_secret: &str) -> String {
    let closed = closed_port();
    format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: ArtifactMirror\nmetadata: {{name: {name}}}\nspec:\n  interval: {interval}\n  dryRun: true\n  include: [\"{include}\"]\n  retention: {{keepLast: 2}}\n  source: {{oci: {{registry: \"127.0.0.1:15000\", repository: e2e/releases, insecure: true}}}}\n  destination: {{http: {{url: \"http://127.0.0.1:{closed}\", keySecret: {key_secret}, allowPlainHttp: true}}}}\n"
    )
}

/// Waits for `Stalled=True` with `reason`; returns its message.
fn stalled(w: &World, what: &str, reason: &str) -> String {
    let v = w.wait(what, &format!("Stalled {reason}"), |v| {
        condition(v, "Stalled").is_some_and(|c| c["status"] == "True" && c["reason"] == reason)
    });
    condition(&v, "Stalled").unwrap()["message"].as_str().unwrap().to_owned()
}

/// Waits for `Ready=False` with `reason` (and `Stalled=False`); returns its message.
fn not_ready(w: &World, what: &str, reason: &str) -> String {
    let v = w.wait(what, &format!("Ready=False {reason}"), |v| {
        condition(v, "Ready").is_some_and(|c| c["status"] == "False" && c["reason"] == reason)
            && condition(v, "Stalled").is_some_and(|c| c["status"] == "False")
    });
    condition(&v, "Ready").unwrap()["message"].as_str().unwrap().to_owned()
}

#[test]
fn the_mirror_worker_exists_only_while_a_mirror_is_attached() {
    let w = World::new("mirrors").ready();
    kubectl(&["create", "secret", "generic", "wan-key", "-n", &w.ns, "--from-literal=key=w"], None).ok();
    let gateway = |claim: &str| {
        format!("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {{name: default}}\nspec:\n  replicas: 2\n  store: {{claimName: {claim}, writeKeySecret: {{name: wan-key, key: key}}}}\n")
    };
    let claim = |name: &str, mode: &str| {
        format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [{mode}]\n  resources: {{requests: {{storage: 1Gi}}}}\n")
    };
    // No claim yet: a clear waiting state naming the field; nothing is rendered.
    w.apply(&gateway("artifacts"));
    let message = stalled(&w, "otagw/default", "ClaimNotFound");
    assert!(message.starts_with("spec.store.claimName: PersistentVolumeClaim \"artifacts\" not found"), "{message}");
    assert!(w.get("deploy/default").is_none(), "nothing runs without the store's volume");
    // Two replicas on a ReadWriteOnce claim: Stalled naming spec.store.
    w.apply(&claim("single", "ReadWriteOnce"));
    w.apply(&gateway("single"));
    let message = stalled(&w, "otagw/default", "StoreNotShared");
    assert!(message.starts_with("spec.store: 2 replicas") && message.contains("ReadWriteOnce"), "{message}");
    // A ReadWriteMany claim: served.
    w.apply(&claim("artifacts", "ReadWriteMany"));
    w.apply(&gateway("artifacts"));
    w.wait("deploy/default", "the gateway Deployment", |_| true);
    w.wait("otagw/default", "no longer stalled", |v| condition(v, "Stalled").is_some_and(|c| c["status"] == "False"));
    assert!(w.get("deploy/default-mirror").is_none(), "no worker without a mirror");
    // The store: served from the PVC on its own port, on the Service too.
    let svc = w.wait("svc/default", "the store port", |v| {
        v["spec"]["ports"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "store"))
    });
    let port = svc["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == "store").unwrap().clone();
    assert_eq!((port["port"].as_i64(), port["protocol"].as_str()), (Some(8081), Some("TCP")), "{port:#}");
    let store = &w.config()["stores"][0];
    assert_eq!(
        (store["listen"].as_str(), store["dir"].as_str()),
        (Some("0.0.0.0:8081"), Some("/var/lib/updraft/store/files"))
    );

    // A malformed mirror is Stalled naming the field, and renders nothing.
    w.apply(&mirror_yaml("broken", "often"));
    let message = stalled(&w, "amir/broken", "InvalidSpec");
    assert!(message.contains("interval"), "{message}");
    w.apply(&mirror_with("classes", "1m", "fw-[ab].bin", "wan-key"));
    let message = stalled(&w, "amir/classes", "InvalidSpec");
    assert!(message.starts_with("include[0] \"fw-[ab].bin\""), "{message}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(w.get("deploy/default-mirror").is_none(), "a malformed mirror starts no worker");
    assert!(w.config()["mirrors"].is_null(), "{:#}", w.config());

    // A valid mirror: rendered, and the one worker runs it.
    w.apply(&mirror_yaml("to-wan", "30s"));
    let d = w.wait("deploy/default-mirror", "the worker Deployment", |_| true);
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1, "{d:#}");
    assert_eq!(spec["strategy"]["type"], "Recreate", "{d:#}");
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(args.last(), Some(&"--mirror"), "{args:?}");
    assert_eq!(pod["automountServiceAccountToken"], false, "the worker never talks to the API");
    let gateway = w.get("deploy/default").unwrap();
    assert_eq!(container["image"], gateway["spec"]["template"]["spec"]["containers"][0]["image"]);
    assert_eq!(d["metadata"]["ownerReferences"][0]["kind"], "OtaGateway");
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["configMap"]["name"] == "default-config"), "{volumes:?}");
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "wan-key"), "{volumes:?}");
    assert!(volumes.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == "artifacts"), "the store volume");
    // The gateway's Deployment selector does not pick the worker's pods.
    let selector = gateway["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let labels = &spec["template"]["metadata"]["labels"];
    assert!(selector.iter().any(|(k, v)| &labels[k] != v), "{labels:#}");
    assert_eq!(gateway["spec"]["replicas"], 2, "the serving replicas are unchanged");

    let config = w.config();
    let mirrors = config["mirrors"].as_array().unwrap_or_else(|| panic!("{config:#}"));
    assert_eq!(mirrors.len(), 1, "only the valid mirror: {config:#}");
    let m = &mirrors[0];
    assert_eq!(m["name"], format!("{}/to-wan", w.ns));
    assert_eq!((m["interval"].as_str(), m["include"][0].as_str()), (Some("30s"), Some("*.bin")));
    assert_eq!(m["retention"]["keepLast"], 2);
    assert_eq!(m["destination"]["http"]["keyFile"], "/etc/updraft/mirror-keys/wan-key/key");
    assert_eq!(m["dryRun"], true);
    // The real worker takes the rendered file (admin port moved to a free local one).
    let admin = free_port();
    let mut rendered = config.clone();
    rendered["adminListen"] = format!("127.0.0.1:{admin}").into();
    let file = w.dir.0.join("gateway.yaml");
    std::fs::write(&file, serde_yaml::to_string(&rendered).unwrap()).unwrap();
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--mirror", "--config", file.to_str().unwrap()]);
    let worker = Proc::spawn(cmd, &w.dir.0.join("worker.log"));
    let name = format!("{}/to-wan", w.ns);
    let listed = std::panic::catch_unwind(|| {
        wait_for(WAIT, "the worker lists the mirror after a pass", || {
            let out = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{admin}/mirrors")]).output().ok()?;
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let m = v.as_array().and_then(|a| a.iter().find(|m| m["name"] == name.as_str()).cloned())?;
            m["error"].is_string().then_some(m)
        })
    });
    let listed = listed.unwrap_or_else(|_| panic!("worker log:\n{}", worker.output()));
    assert_eq!(listed["source"], "oci://127.0.0.1:15000/e2e/releases", "{listed:#}");
    // Outside the pod the key is not mounted: the worker looks for it where the
    // Deployment mounts it.
    let error = listed["error"].as_str().unwrap_or_default();
    assert!(error.contains("/etc/updraft/mirror-keys/wan-key/key"), "{listed:#}");
    drop(worker);
    // Its Secrets exist: it observes, and nothing listens at the destination's URL.
    not_ready(&w, "amir/to-wan", "DestinationUnreachable");

    // A missing Secret is named by its field, and noticed when it appears.
    w.apply(&mirror_with("locked", "1m", "*.bin", "absent"));
    let message = stalled(&w, "amir/locked", "SecretNotFound");
    assert!(message.contains("destination.http.keySecret: Secret \"absent\" not found"), "{message}");
    kubectl(&["create", "secret", "generic", "absent", "-n", &w.ns, "--from-literal=key=k"], None).ok();
    not_ready(&w, "amir/locked", "DestinationUnreachable");
    kubectl(&["delete", "-n", &w.ns, "amir/locked", "amir/classes"], None).ok();
    let gw = w.wait("otagw/default", "one mirror attached", |v| {
        v["status"]["attached"]
            .as_array()
            .is_some_and(|a| a.iter().filter(|r| r["kind"] == "ArtifactMirror").count() == 1)
    });
    let attached = gw["status"]["attached"].as_array().unwrap();
    assert!(attached.iter().any(|r| r["kind"] == "ArtifactMirror" && r["name"] == "to-wan"), "{attached:?}");

    // The last mirror gone: the worker is deleted (not merely no longer rendered).
    kubectl(&["delete", "-n", &w.ns, "amir/to-wan"], None).ok();
    w.wait_until("the worker Deployment deleted", || w.get("deploy/default-mirror").is_none());
    assert!(w.config()["mirrors"].is_null(), "{:#}", w.config());
    assert!(w.get("deploy/default").is_some(), "the gateway stays");
}

/// The write key of the test stores.
const KEY: &str = "e2e-store-key";

/// A gateway process serving one store (plain HTTP writes allowed) on `port`.
struct StoreGateway {
    proc: Proc,
    url: String,
}

impl StoreGateway {
    fn start(dir: &std::path::Path, name: &str, port: u16) -> StoreGateway {
        let config = dir.join(format!("{name}.yaml"));
        let text = format!(
            "listen: 127.0.0.1:{}\nadminListen: 127.0.0.1:{}\ncache: {{dir: {}}}\nstores:\n- name: {name}\n  listen: 127.0.0.1:{port}\n  dir: {}\n  writeKey: {KEY}\n  allowPlainWrites: true\n",
            free_port(),
            free_port(),
            dir.join(format!("{name}-cache")).display(),
            dir.join(format!("{name}-store")).display(),
        );
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(binary("ota-gateway"));
        cmd.args(["--config", config.to_str().unwrap()]);
        let proc = Proc::spawn(cmd, &dir.join(format!("{name}.log")));
        let url = format!("http://127.0.0.1:{port}");
        wait_for(WAIT, &format!("store {name}"), || {
            (curl_code(&[&format!("{url}/api/status")]) == "200").then_some(())
        });
        StoreGateway { proc, url }
    }

    /// filuxe-style upload of `body` as `path` with file time `time`.
    fn upload(&self, dir: &std::path::Path, path: &str, body: &[u8], time: u64) {
        let file = dir.join("upload.bin");
        std::fs::write(&file, body).unwrap();
        let url = format!("{}/upload/{path}?time={time}", self.url);
        let code = curl_code(&[
            "-X",
            "POST",
            "-H",
            &format!("key: {KEY}"),
            "--data-binary",
            &format!("@{}", file.display()),
            &url,
        ]);
        assert_eq!(code, "201", "upload {path}: {}", self.proc.output());
    }

    /// `path` → sha256 of every file the store lists.
    fn files(&self) -> std::collections::BTreeMap<String, String> {
        let out =
            Command::new("curl").args(["-sf", &format!("{}/filelist/?recursive=true", self.url)]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut found = std::collections::BTreeMap::new();
        for (dir, entries) in v["filelist"].as_object().into_iter().flatten() {
            for (name, e) in entries.as_object().into_iter().flatten() {
                let path = if dir == "." { name.clone() } else { format!("{dir}/{name}") };
                found.insert(path, e["sha256"].as_str().unwrap_or_default().to_owned());
            }
        }
        found
    }
}

fn curl_code(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ready_reason(v: &Value) -> Option<(&str, &str)> {
    condition(v, "Ready").map(|c| (c["status"].as_str().unwrap_or_default(), c["reason"].as_str().unwrap_or_default()))
}

#[test]
fn a_store_to_store_mirror_reports_pending_behind_in_sync_and_unreachable() {
    let w = World::new("mirror-observe").ready();
    // kubectl validates against the API server's OpenAPI, which publishes a changed CRD
    // a moment after it is applied (and another checkout may have applied its own).
    wait_for(WAIT, "spec.version in the published ArtifactMirror schema", || {
        kubectl(&["explain", "artifactmirrors.spec.version.range"], None).success.then_some(())
    });
    let dir = w.dir.0.clone();
    kubectl(&["create", "secret", "generic", "wan-key", "-n", &w.ns, &format!("--from-literal=key={KEY}")], None).ok();
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec:\n  replicas: 1\n");
    let lan = StoreGateway::start(&dir, "lan", free_port());
    let wan_port = free_port();
    let wan = StoreGateway::start(&dir, "wan", wan_port);
    let released = [
        ("rel/app-1.0.0.zip", 1_700_000_000u64),
        ("rel/app-1.1.0.zip", 1_700_000_100),
        ("rel/app-2.0.0.zip", 1_700_000_200),
    ];
    for (i, (path, time)) in released.iter().enumerate() {
        lan.upload(&dir, path, format!("release {i} {}", "x".repeat(1000 * (i + 1))).as_bytes(), *time);
    }
    lan.upload(&dir, "rel/notes.txt", b"not a zip", 1_700_000_300);

    // A dry run: what would be copied (the range drops 1.0.0, the glob notes.txt), and nothing is.
    let mirror = |dry_run: bool| {
        format!(
            "apiVersion: updraft.dev/v1alpha1\nkind: ArtifactMirror\nmetadata: {{name: lan-wan}}\nspec:\n  interval: 2s\n  dryRun: {dry_run}\n  include: [\"*.zip\"]\n  version: {{range: \">=1.1\"}}\n  source: {{http: {{url: \"{}\"}}}}\n  destination: {{http: {{url: \"{}\", keySecret: wan-key, allowPlainHttp: true}}}}\n",
            lan.url, wan.url
        )
    };
    w.apply(&mirror(true));
    let v = w.wait("amir/lan-wan", "the dry-run plan", |v| ready_reason(v) == Some(("True", "DryRun")));
    let status = &v["status"];
    assert_eq!((status["pending"].as_i64(), status["inSync"].as_i64()), (Some(2), Some(0)), "{status:#}");
    let plan = &status["plan"];
    assert_eq!(plan["copy"], serde_json::json!(["rel/app-1.1.0.zip", "rel/app-2.0.0.zip"]), "{status:#}");
    assert_eq!((plan["copyTotal"].as_i64(), plan["deleteTotal"].as_i64()), (Some(2), Some(0)), "{status:#}");
    assert_eq!(status["oldestPending"], "2023-11-14T22:15:00Z", "the older pending file's own time: {status:#}");
    assert!(status["lastSync"].is_null() && status["latestVersion"].is_null(), "{status:#}");
    assert!(wan.files().is_empty(), "a dry run copies nothing");
    eprintln!("{}", kubectl(&["get", "artifactmirrors", "-n", &w.ns], None).stdout);

    // Not a dry run, and nothing forwards yet: Behind once pending outlasts two
    // intervals, and the alert fires once that has lasted its `for`.
    tools();
    let prom_dir = TempDir::new("mirror-prometheus");
    let prom = Prometheus::start(&prom_dir.0, &[("operator", format!("127.0.0.1:{}", w.admin))], &rules_with_for("5s"));
    let behind_alert = [("namespace", w.ns.as_str()), ("mirror", "lan-wan")];
    w.apply(&mirror(false));
    let v = w.wait("amir/lan-wan", "Behind", |v| ready_reason(v) == Some(("False", "Behind")));
    let alert = prom.wait_firing(WAIT, "UpdraftMirrorBehind", &behind_alert);
    assert_eq!(alert["labels"]["severity"], "warning", "{alert:#}");
    assert!(v["status"]["plan"].is_null(), "the plan is a dry run's: {:#}", v["status"]);
    let since = v["status"]["pendingSince"].as_str().unwrap().to_owned();

    // The real worker runs the rendered config (the key where the Deployment would mount it moved to a local file).
    let config = w.wait("configmap/default-config", "the mirror rendered without dryRun", |cm| {
        let c = e2e::rendered_config(cm);
        c["mirrors"][0]["dryRun"].is_null() && c["mirrors"][0]["version"]["range"] == ">=1.1"
    });
    let mut rendered: Value = serde_yaml::from_str(config["data"]["gateway.yaml"].as_str().unwrap()).unwrap();
    let admin = free_port();
    rendered["adminListen"] = format!("127.0.0.1:{admin}").into();
    let key = dir.join("wan-key");
    std::fs::write(&key, KEY).unwrap();
    rendered["mirrors"][0]["destination"]["http"]["keyFile"] = key.to_str().unwrap().into();
    let file = dir.join("worker.yaml");
    std::fs::write(&file, serde_yaml::to_string(&rendered).unwrap()).unwrap();
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--mirror", "--config", file.to_str().unwrap()]);
    let worker = Proc::spawn(cmd, &dir.join("worker.log"));
    let synced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.wait("amir/lan-wan", "in sync", |v| ready_reason(v) == Some(("True", "InSync")))
    }))
    .unwrap_or_else(|_| panic!("worker log:\n{}", worker.output()));
    let status = &synced["status"];
    assert_eq!((status["pending"].as_i64(), status["inSync"].as_i64()), (Some(0), Some(2)), "{status:#}");
    assert_eq!(status["latestVersion"], "2.0.0", "{status:#}");
    eprintln!("{}", kubectl(&["get", "artifactmirrors", "-n", &w.ns], None).stdout);
    assert!(status["lastSync"].is_string() && status["pendingSince"].is_null() && status["oldestPending"].is_null());
    assert!(status["lastSync"].as_str().unwrap() >= since.as_str(), "{status:#}");
    let lan_files = lan.files();
    let wan_files = wan.files();
    assert_eq!(wan_files.keys().collect::<Vec<_>>(), ["rel/app-1.1.0.zip", "rel/app-2.0.0.zip"]);
    for (path, sha) in &wan_files {
        assert_eq!(Some(sha), lan_files.get(path), "{path} byte-exact");
    }
    let metrics = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{}/metrics", w.admin)]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let series = format!("updraft_operator_mirror_pending{{mirror=\"lan-wan\",namespace=\"{}\"}} 0", w.ns);
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
    prom.wait_resolved(WAIT, "UpdraftMirrorBehind", &behind_alert);

    // The destination stops, then the source: each reported with the error, one event each.
    drop(worker);
    drop(wan);
    let message = not_ready(&w, "amir/lan-wan", "DestinationUnreachable");
    assert!(message.contains(&wan_port.to_string()), "{message}");
    let lan_url = lan.url.clone();
    drop(lan);
    let message = not_ready(&w, "amir/lan-wan", "SourceUnreachable");
    assert!(message.contains(&lan_url), "{message}");
    std::thread::sleep(Duration::from_secs(6));
    let events = kubectl(&["get", "events.v1.events.k8s.io", "-n", &w.ns, "-o", "json"], None);
    let events: Value = serde_json::from_str(&events.stdout).unwrap();
    let of = |reason: &str| -> Vec<Value> {
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["regarding"]["name"] == "lan-wan" && e["reason"] == reason)
            .cloned()
            .collect()
    };
    for reason in ["DryRun", "Behind", "InSync", "DestinationUnreachable", "SourceUnreachable"] {
        let found = of(reason);
        assert_eq!(found.len(), 1, "{reason}: {found:#?}");
        assert!(found[0]["series"].is_null(), "published once, never repeated: {:#}", found[0]);
    }
}
