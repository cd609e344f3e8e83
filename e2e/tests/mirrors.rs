//! The OtaGateway's forwarding side end to end: the real operator binary against
//! kube-apiserver 1.20. `spec.store` is served from its PVC on its own Service port. An
//! attached ArtifactMirror renders the gateway's `mirrors` section (the store key as a
//! mounted Secret file, `dryRun` passed on; the real `--mirror` worker takes the
//! rendered file) and the singleton worker Deployment `<gateway>-mirror`
//! (replicas 1, Recreate, `--mirror`, the store's PVC mounted), which is deleted again
//! when the last mirror goes; a malformed mirror (bad interval, unsupported glob)
//! is `Stalled` naming the field and is never rendered; one naming a missing Secret is
//! `Stalled` (`SecretNotFound`) naming the field until the Secret appears.

use std::process::Command;
use std::time::Duration;

use e2e::procs::{binary, free_port, operator, wait_for, Proc, TempDir};
use e2e::{install_crds, kubectl, namespace};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

struct World {
    ns: String,
    dir: TempDir,
    operator: Proc,
}

impl World {
    fn new(name: &str) -> World {
        install_crds();
        let ns = namespace(name);
        let dir = TempDir::new(name);
        let (operator, admin) = operator(&ns, &dir.0, "operator", &[]);
        wait_for(WAIT, "operator /readyz", || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{admin}/readyz")])
                .output()
                .unwrap();
            (out.stdout == b"200").then_some(())
        });
        World { ns, dir, operator }
    }

    fn apply(&self, yaml: &str) {
        kubectl(&["apply", "--server-side", "-n", &self.ns, "-f", "-"], Some(yaml)).ok();
    }

    fn get(&self, what: &str) -> Option<Value> {
        let out = kubectl(&["get", "-n", &self.ns, what, "-o", "json"], None);
        out.success.then(|| serde_json::from_str(&out.stdout).unwrap())
    }

    fn wait_until(&self, description: &str, mut f: impl FnMut() -> bool) {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(WAIT, description, || f().then_some(()))
        }));
        if found.is_err() {
            panic!("{description} never happened; operator log:\n{}", self.operator.output());
        }
    }

    fn wait(&self, what: &str, description: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = None;
        self.wait_until(&format!("{what}: {description}"), || {
            last = self.get(what);
            last.as_ref().is_some_and(&pred)
        });
        last.unwrap()
    }

    /// The gateway's rendered `gateway.yaml`.
    fn config(&self) -> Value {
        let cm = self.get("configmap/default-config").unwrap_or_default();
        serde_yaml::from_str(cm["data"]["gateway.yaml"].as_str().unwrap_or("{}")).unwrap()
    }
}

fn condition<'a>(v: &'a Value, type_: &str) -> Option<&'a Value> {
    v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

fn mirror_yaml(name: &str, interval: &str) -> String {
    mirror_with(name, interval, "*.bin", "wan-key")
}

fn mirror_with(name: &str, interval: &str, include: &str, key_secret: &str) -> String {
    format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: ArtifactMirror\nmetadata: {{name: {name}}}\nspec:\n  interval: {interval}\n  dryRun: true\n  include: [\"{include}\"]\n  retention: {{keepLast: 2}}\n  source: {{oci: {{registry: \"127.0.0.1:15000\", repository: e2e/releases, insecure: true}}}}\n  destination: {{http: {{url: \"http://127.0.0.1:18081\", keySecret: {key_secret}}}}}\n"
    )
}

/// Waits for `Stalled=True` with `reason`; returns its message.
fn stalled(w: &World, what: &str, reason: &str) -> String {
    let v = w.wait(what, &format!("Stalled {reason}"), |v| {
        condition(v, "Stalled").is_some_and(|c| c["status"] == "True" && c["reason"] == reason)
    });
    condition(&v, "Stalled").unwrap()["message"].as_str().unwrap().to_owned()
}

#[test]
fn the_mirror_worker_exists_only_while_a_mirror_is_attached() {
    let w = World::new("mirrors");
    kubectl(&["create", "secret", "generic", "wan-key", "-n", &w.ns, "--from-literal=key=w"], None).ok();
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec:\n  replicas: 2\n  store: {claimName: artifacts, writeKeySecret: {name: wan-key, key: key}}\n");
    w.wait("deploy/default", "the gateway Deployment", |_| true);
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
        (Some("0.0.0.0:8081"), Some("/var/lib/updraft/store"))
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
    // Its Secrets exist: not stalled on them (observation is not implemented yet).
    stalled(&w, "amir/to-wan", "NotImplemented");

    // A missing Secret is named by its field, and noticed when it appears.
    w.apply(&mirror_with("locked", "1m", "*.bin", "absent"));
    let message = stalled(&w, "amir/locked", "SecretNotFound");
    assert!(message.contains("destination.http.keySecret: Secret \"absent\" not found"), "{message}");
    kubectl(&["create", "secret", "generic", "absent", "-n", &w.ns, "--from-literal=key=k"], None).ok();
    stalled(&w, "amir/locked", "NotImplemented");
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
