//! The operator end to end: the real operator binary against kube-apiserver 1.20 (with
//! kube-controller-manager for garbage collection) and a real OCI registry; then the
//! gateway binary run locally from the ConfigMap the operator rendered.

use std::process::Command;
use std::time::Duration;

use e2e::conditions::{condition, is};
use e2e::procs::{binary, free_port, operator, oras_push, wait_for, Proc, TempDir};
use e2e::world::World;
use e2e::{cluster, curl, install_crds, kubectl, namespace};
use serde_json::Value;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const WAIT: Duration = Duration::from_secs(60);

/// The steps only this file takes.
trait Firmware {
    fn push(&self, tag: &str, size: usize) -> Vec<u8>;
    fn metric(&self, series: &str) -> f64;
    fn channel_yaml(&self, name: &str, extra: &str) -> String;
}

impl Firmware for World {
    /// Pushes a firmware file of `size` pseudo-random bytes as `tag`; returns its bytes.
    fn push(&self, tag: &str, size: usize) -> Vec<u8> {
        let bytes: Vec<u8> =
            (0..size).map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(tag.len() as u32) as u8).collect();
        let file = self.dir.0.join(format!("fw-{tag}.bin"));
        std::fs::write(&file, &bytes).unwrap();
        oras_push(&self.repository, tag, &file, MEDIA_TYPE);
        bytes
    }

    /// A sample from the operator's `/metrics`, 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        let (_, body) = curl(&[&format!("http://127.0.0.1:{}/metrics", self.admin)]);
        String::from_utf8_lossy(&body)
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    fn channel_yaml(&self, name: &str, extra: &str) -> String {
        format!(
            "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: {name}}}\nspec:\n  device: {name}-dev\n  interval: 2s\n  source: {{registry: \"{}\", repository: \"{}\", insecure: true}}\n{extra}",
            cluster().registry,
            self.repository
        )
    }
}

const GATEWAY: &str = "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n";

#[test]
fn channel_resolves_new_versions_and_pins() {
    let w = World::new("op-resolve").ready();
    w.push("v1.0.0", 4096);
    w.push("1.1.0-rc.1", 4096);
    w.push("not-a-version", 64);
    w.apply(GATEWAY);
    w.apply(&w.channel_yaml("esp32", ""));

    let ch = w.wait("fwc/esp32", "latest = 1.0.0 and Ready", |v| {
        v["status"]["latest"]["version"] == "1.0.0" && is(v, "Ready", "True")
    });
    assert_eq!(ch["status"]["latest"]["tag"], "v1.0.0");
    assert_eq!(ch["status"]["latest"]["size"], 4096);
    assert!(ch["status"]["previous"].is_null());
    assert!(is(&ch, "Stalled", "False"));
    assert_eq!(ch["status"]["url"], format!("http://default.{}.svc:8080/api/v1/channels/esp32", w.ns));

    // A newer push moves latest to previous.
    w.push("1.2.0", 5000);
    let ch = w.wait("fwc/esp32", "latest = 1.2.0", |v| v["status"]["latest"]["version"] == "1.2.0");
    assert_eq!(ch["status"]["previous"]["version"], "1.0.0");
    // One NewVersion event per new version; the recorder folds repeats into a series.
    let events: Value =
        serde_json::from_str(&kubectl(&["get", "events.events.k8s.io", "-n", &w.ns, "-o", "json"], None).ok()).unwrap();
    let new_versions: u64 = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "NewVersion" && e["regarding"]["name"] == "esp32")
        .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(new_versions, 2, "expected NewVersion events for 1.0.0 and 1.2.0: {events:#}");

    // Pre-releases only when allowed.
    w.apply(&w.channel_yaml("esp32", "  version: {prerelease: true, range: \">=1.0.0, <1.2.0\"}\n"));
    w.wait("fwc/esp32", "latest = 1.1.0-rc.1", |v| v["status"]["latest"]["version"] == "1.1.0-rc.1");

    // A pin wins over the range.
    w.apply(&w.channel_yaml("esp32", "  version: {pin: v1.0.0}\n"));
    let ch = w.wait("fwc/esp32", "latest = pinned 1.0.0", |v| {
        v["status"]["latest"]["version"] == "1.0.0" && is(v, "Ready", "True")
    });
    assert_eq!(ch["status"]["latest"]["tag"], "v1.0.0");

    // The gateway's rendered config pins the digest status shows.
    let rendered =
        |v: &Value| -> Value { serde_yaml::from_str(v["data"]["gateway.yaml"].as_str().unwrap_or("{}")).unwrap() };
    // Both digests: the config from the test's start also had 1.0.0 as current.
    let cm = w.wait("configmap/default-config", "the pinned digest rendered", |v| {
        let channel = &rendered(v)["channels"][0];
        channel["current"]["digest"] == ch["status"]["latest"]["digest"]
            && channel["previous"]["digest"] == ch["status"]["previous"]["digest"]
    });
    let config = rendered(&cm);
    assert_eq!(config["channels"][0]["current"]["version"], "1.0.0");
    assert_eq!(config["channels"][0]["previous"]["version"], "1.1.0-rc.1");
    assert_eq!(config["channels"][0]["device"], "esp32-dev");
}

#[test]
fn invalid_spec_stalls_until_fixed() {
    let w = World::new("op-invalid").ready();
    w.push("1.0.0", 100);
    w.apply(GATEWAY);
    w.apply(&w.channel_yaml("bad", "  version: {range: \">=banana\"}\n"));
    let ch = w.wait("fwc/bad", "Stalled", |v| is(v, "Stalled", "True"));
    let stalled = condition(&ch, "Stalled").unwrap();
    assert_eq!(stalled["reason"], "InvalidSpec");
    assert!(stalled["message"].as_str().unwrap().contains("version.range"), "{stalled}");
    assert!(is(&ch, "Ready", "False"));
    assert_eq!(ch["status"]["observedGeneration"], ch["metadata"]["generation"]);
    let events = kubectl(&["get", "events.events.k8s.io", "-n", &w.ns, "-o", "json"], None).ok();
    assert!(events.contains("InvalidSpec"), "no InvalidSpec event: {events}");

    w.apply(&w.channel_yaml("bad", "  version: {range: \">=1.0.0\"}\n"));
    w.wait("fwc/bad", "recovered", |v| is(v, "Stalled", "False") && is(v, "Ready", "True"));
}

#[test]
fn missing_gateway_and_unreachable_registry_are_explained() {
    let w = World::new("op-explain").ready();
    w.push("1.0.0", 100);
    w.apply(&w.channel_yaml("orphan", "  gatewayRef: nowhere\n"));
    let ch = w.wait("fwc/orphan", "Ready=False GatewayNotFound", |v| {
        condition(v, "Ready").is_some_and(|c| c["reason"] == "GatewayNotFound")
    });
    let message = condition(&ch, "Ready").unwrap()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("\"nowhere\"") && message.contains("kubectl apply"), "{message}");
    assert_eq!(ch["status"]["latest"]["version"], "1.0.0", "still resolved");

    // Creating the gateway makes the channel Ready (by watch, not by polling).
    w.apply(&GATEWAY.replace("name: default", "name: nowhere"));
    w.wait("fwc/orphan", "Ready once the gateway exists", |v| is(v, "Ready", "True"));

    let unreachable = "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {name: down}\nspec:\n  interval: 2s\n  source: {registry: \"127.0.0.1:9\", repository: x/y, insecure: true}\n";
    w.apply(unreachable);
    let ch = w.wait("fwc/down", "RegistryUnreachable", |v| {
        condition(v, "Ready").is_some_and(|c| c["reason"] == "RegistryUnreachable")
    });
    assert!(is(&ch, "Reconciling", "True"), "a transient error keeps Reconciling: {ch:#}");
    assert!(is(&ch, "Stalled", "False"), "an unreachable registry is not a bad spec: {ch:#}");
}

#[test]
fn registry_outage_keeps_the_last_resolved_version() {
    let w = World::new("op-outage").ready();
    // A registry of this test's own, so stopping it disturbs nobody.
    let (registry, port) = private_registry(&w, "");
    oras_push_to(&w, &format!("127.0.0.1:{port}/fw/outage:1.0.0"), &[]);

    w.apply(GATEWAY);
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: outage}}\nspec:\n  interval: 2s\n  source: {{registry: \"127.0.0.1:{port}\", repository: fw/outage, insecure: true}}\n"
    ));
    w.wait("fwc/outage", "resolved", |v| v["status"]["latest"]["version"] == "1.0.0" && is(v, "Ready", "True"));
    drop(registry);

    let ch = w.wait("fwc/outage", "RegistryReachable=False", |v| is(v, "RegistryReachable", "False"));
    assert_eq!(ch["status"]["latest"]["version"], "1.0.0", "the last resolved version stays");
    assert!(is(&ch, "Ready", "True"), "still serving: {ch:#}");
    let message = condition(&ch, "Ready").unwrap()["message"].as_str().unwrap();
    assert!(message.contains("last registry check failed"), "{message}");
}

/// A registry of the test's own on a free port; `extra` is appended to its config.
fn private_registry(w: &World, extra: &str) -> (Proc, u16) {
    let port = free_port();
    let storage = w.dir.0.join(format!("registry-{port}"));
    let config = w.dir.0.join(format!("registry-{port}.yml"));
    std::fs::write(
        &config,
        format!("version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n{extra}", storage.display()),
    )
    .unwrap();
    let mut cmd = Command::new("docker-registry");
    cmd.args(["serve", config.to_str().unwrap()]);
    let registry = Proc::spawn(cmd, &w.dir.0.join(format!("registry-{port}.log")));
    wait_for(Duration::from_secs(10), "private registry", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    (registry, port)
}

/// Pushes a small firmware to `reference` with `oras`, passing `flags` (e.g. credentials).
fn oras_push_to(w: &World, reference: &str, flags: &[&str]) {
    std::fs::write(w.dir.0.join("fw.bin"), b"firmware").unwrap();
    let out = Command::new("oras")
        .args(["push", "--plain-http"])
        .args(flags)
        .args([reference, &format!("fw.bin:{MEDIA_TYPE}")])
        .current_dir(&w.dir.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "oras push {reference}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn registry_credentials_come_from_the_named_secret() {
    let w = World::new("op-creds").ready();
    let htpasswd =
        Command::new("htpasswd").args(["-Bbn", "updraft", "s3cret"]).output().expect("htpasswd (apache2-utils)");
    let htpasswd_file = w.dir.0.join("htpasswd");
    std::fs::write(&htpasswd_file, &htpasswd.stdout).unwrap();
    let auth = format!("auth: {{htpasswd: {{realm: updraft, path: {}}}}}\n", htpasswd_file.display());
    let (_registry, port) = private_registry(&w, &auth);
    let registry = format!("127.0.0.1:{port}");
    oras_push_to(&w, &format!("{registry}/fw/private:1.0.0"), &["-u", "updraft", "-p", "s3cret"]);

    w.apply(GATEWAY);
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: private}}\nspec:\n  interval: 2s\n  source: {{registry: \"{registry}\", repository: fw/private, insecure: true, credentialsSecret: regcred}}\n"
    ));
    let ch = w.wait("fwc/private", "CredentialsError", |v| {
        condition(v, "Ready").is_some_and(|c| c["reason"] == "CredentialsError")
    });
    let message = condition(&ch, "Ready").unwrap()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("\"regcred\" not found"), "{message}");

    kubectl(
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "-n",
            &w.ns,
            &format!("--docker-server={registry}"),
            "--docker-username=updraft",
            "--docker-password=s3cret",
        ],
        None,
    )
    .ok();
    w.wait("fwc/private", "resolved with the Secret's credentials", |v| {
        v["status"]["latest"]["version"] == "1.0.0" && is(v, "Ready", "True")
    });
    // The gateway gets the same Secret, mounted where its rendered config points.
    let deploy = w.wait("deployment/default", "the credentials mounted", |v| v.to_string().contains("regcred"));
    let volumes = deploy["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "regcred"), "{volumes:#?}");
    w.wait("configmap/default-config", "the config points at the mounted Secret", |v| {
        v["data"]["gateway.yaml"]
            .as_str()
            .is_some_and(|y| y.contains("dockerConfig: /etc/updraft/credentials/regcred/.dockerconfigjson"))
    });
}

#[test]
fn workloads_are_owned_and_garbage_collected() {
    let w = World::new("op-gc").ready();
    w.apply(GATEWAY);
    let gw =
        w.wait("otagw/default", "status written", |v| v["status"]["observedGeneration"] == v["metadata"]["generation"]);
    assert_eq!(gw["status"]["url"], format!("http://default.{}.svc:8080", w.ns));
    let uid = gw["metadata"]["uid"].as_str().unwrap().to_owned();
    for what in ["configmap/default-config", "deployment/default", "service/default"] {
        let obj = w.wait(what, "created", |_| true);
        let owner = &obj["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], uid.as_str(), "{what} is not owned by the OtaGateway");
        assert_eq!(owner["controller"], true);
        assert_eq!(
            obj["metadata"]["managedFields"][0]["manager"], "updraft-operator",
            "{what} not server-side applied"
        );
    }
    let svc = w.get("service/default").unwrap();
    assert!(svc["spec"]["ports"].as_array().unwrap().iter().all(|p| p["protocol"] == "TCP"));
    let deploy = w.get("deployment/default").unwrap();
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "updraft/ota-gateway:e2e");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The Deployment controller made a ReplicaSet (no kubelet: its pods never run).
    w.wait("replicasets", "a ReplicaSet", |v| v["items"].as_array().is_some_and(|i| !i.is_empty()));
    let gw = w.get("otagw/default").unwrap();
    assert!(is(&gw, "Ready", "False"), "no pods run here, so the gateway is not ready: {gw:#}");
    assert!(condition(&gw, "Ready").unwrap()["message"].as_str().unwrap().contains("0/1 replicas ready"));

    kubectl(&["delete", "-n", &w.ns, "otagw/default", "--wait=true"], None).ok();
    for what in ["configmap/default-config", "deployment/default", "service/default"] {
        wait_for(WAIT, &format!("{what} garbage-collected"), || w.get(what).is_none().then_some(()));
    }
}

#[test]
fn steady_state_makes_no_writes() {
    let w = World::new("op-idle").ready();
    w.push("1.0.0", 256);
    w.apply(GATEWAY);
    w.apply(&w.channel_yaml("idle", ""));
    w.wait("fwc/idle", "Ready", |v| is(v, "Ready", "True"));
    w.wait("configmap/default-config", "rendered", |v| {
        v["data"]["gateway.yaml"].as_str().is_some_and(|y| y.contains("idle"))
    });
    std::thread::sleep(Duration::from_secs(3)); // let the last watch events settle
    let versions = || -> Vec<(String, String)> {
        ["fwc/idle", "otagw/default", "configmap/default-config", "deployment/default", "service/default"]
            .iter()
            .map(|w_| (w_.to_string(), w.get(w_).unwrap()["metadata"]["resourceVersion"].as_str().unwrap().to_owned()))
            .collect()
    };
    let before = versions();
    let checks_before = w.metric("updraft_operator_registry_checks_total{result=\"ok\"}");
    // The channel checks its registry every 2 s: ~30 checks in a minute, none may write.
    std::thread::sleep(Duration::from_secs(60));
    assert_eq!(before, versions(), "objects were rewritten while nothing changed");
    let checks = w.metric("updraft_operator_registry_checks_total{result=\"ok\"}") - checks_before;
    assert!(checks >= 20.0, "only {checks} registry checks in a minute at a 2 s interval");
    assert!(w.metric("updraft_operator_reconcile_duration_seconds_count{controller=\"firmwarechannel\"}") >= checks);
    assert_eq!(
        w.metric(&format!(
            "updraft_operator_resolved_version_info{{channel=\"idle\",namespace=\"{}\",version=\"1.0.0\"}}",
            w.ns
        )),
        1.0
    );
}

#[test]
fn gateway_serves_what_the_operator_rendered() {
    let w = World::new("op-serve").ready();
    let firmware = w.push("2.3.4", 70_000);
    w.apply(GATEWAY);
    w.apply(&w.channel_yaml("stm32", ""));
    w.wait("fwc/stm32", "Ready", |v| is(v, "Ready", "True"));
    let cm = w.wait("configmap/default-config", "rendered", |v| {
        v["data"]["gateway.yaml"].as_str().is_some_and(|y| y.contains("2.3.4"))
    });

    // No kubelet here: run the gateway binary locally from the rendered ConfigMap, with
    // only the listeners and cache directory moved to this machine.
    let (port, admin) = (free_port(), free_port());
    let mut config: Value = serde_yaml::from_str(cm["data"]["gateway.yaml"].as_str().unwrap()).unwrap();
    config["listen"] = format!("127.0.0.1:{port}").into();
    config["adminListen"] = format!("127.0.0.1:{admin}").into();
    config["cache"]["dir"] = w.dir.0.join("cache").to_str().unwrap().into();
    let config_path = w.dir.0.join("gateway.yaml");
    std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config_path.to_str().unwrap()]);
    let gateway = Proc::spawn(cmd, &w.dir.0.join("gateway.log"));

    let base = format!("http://127.0.0.1:{port}");
    let version = wait_for(WAIT, "the gateway answers /version", || {
        let out = curl(&[&format!("{base}/version?device=stm32-dev")]);
        (out.0 == 200).then_some(out.1)
    });
    let crc = crc32fast::hash(&firmware);
    assert_eq!(
        String::from_utf8(version).unwrap(),
        format!("2.3.4\n{crc}\n{}", firmware.len()),
        "{}",
        gateway.output()
    );
    let (status, body) = curl(&[&format!("{base}/firmware?device=stm32-dev")]);
    assert_eq!(status, 200);
    assert!(body == firmware, "the device got different bytes than were pushed");
    assert_eq!(curl(&[&format!("{base}/version?device=unknown")]).0, 404);
}

#[test]
fn leader_election_lets_one_replica_reconcile_and_hands_over() {
    install_crds();
    let ns = namespace("op-leader");
    let dir = TempDir::new("op-leader");
    let flags = |id: &'static str| ["--leader-elect", "--lease-namespace", "LEASE_NS", "--identity", id];
    let spawn = |id: &'static str| {
        let args: Vec<&str> = flags(id).iter().map(|a| if *a == "LEASE_NS" { ns.as_str() } else { a }).collect();
        operator(&ns, &dir.0, id, &args)
    };
    let (first, first_admin) = spawn("replica-a");
    wait_for(WAIT, "replica-a leads", || first.output().contains("acquired leadership").then_some(()));
    let (second, second_admin) = spawn("replica-b");
    wait_for(WAIT, "replica-b stands by", || second.output().contains("standing by").then_some(()));
    let lease =
        kubectl(&["get", "lease", "-n", &ns, "updraft-operator", "-o", "jsonpath={.spec.holderIdentity}"], None).ok();
    assert_eq!(lease, "replica-a");

    // Only the leader reconciles.
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(GATEWAY)).ok();
    wait_for(WAIT, "the leader renders the gateway", || {
        kubectl(&["get", "-n", &ns, "configmap/default-config"], None).success.then_some(())
    });
    let reconciles = |port: u16| -> u64 {
        let (_, body) = curl(&[&format!("http://127.0.0.1:{port}/metrics")]);
        String::from_utf8_lossy(&body)
            .lines()
            .find(|l| l.starts_with("updraft_operator_reconciles_total{controller=\"otagateway\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(reconciles(first_admin) >= 1, "the leader did not reconcile");
    assert_eq!(reconciles(second_admin), 0, "the standby reconciled");
    assert_eq!(curl(&[&format!("http://127.0.0.1:{second_admin}/readyz")]).0, 200, "a standby is ready");

    // The standby takes over when the leader dies (its lease expires after 15 s).
    drop(first);
    wait_for(Duration::from_secs(45), "replica-b takes over", || {
        second.output().contains("acquired leadership").then_some(())
    });
    let lease =
        kubectl(&["get", "lease", "-n", &ns, "updraft-operator", "-o", "jsonpath={.spec.holderIdentity}"], None).ok();
    assert_eq!(lease, "replica-b");
}

#[test]
fn deleting_a_channel_or_gateway_is_seen_at_once() {
    let w = World::new("op-delete").ready();
    w.push("1.0.0", 128);
    w.apply(GATEWAY);
    w.apply(&w.channel_yaml("alpha", ""));
    w.apply(&w.channel_yaml("beta", ""));
    let rendered = |v: &Value, device: &str| v["data"]["gateway.yaml"].as_str().is_some_and(|y| y.contains(device));
    w.wait("configmap/default-config", "both channels rendered", |v| {
        rendered(v, "alpha-dev") && rendered(v, "beta-dev")
    });

    // The gateway re-renders without the deleted channel (not at its 10-minute requeue).
    kubectl(&["delete", "-n", &w.ns, "fwc/beta"], None).ok();
    let cm = w.wait("configmap/default-config", "beta gone", |v| !rendered(v, "beta-dev"));
    assert!(rendered(&cm, "alpha-dev"), "{cm:#}");
    w.wait("otagw/default", "one attached channel", |v| {
        v["status"]["attached"].as_array().is_some_and(|a| a.len() == 1)
    });

    // A channel deleted and created again under the same name (here with another
    // repository) is checked at once, not at the interval its namesake left behind.
    let hourly = |repository: &str| {
        format!(
            "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: gamma}}\nspec:\n  interval: 1h\n  source: {{registry: \"{}\", repository: \"{repository}\", insecure: true}}\n",
            cluster().registry
        )
    };
    w.apply(&hourly(&w.repository));
    w.wait("fwc/gamma", "1.0.0 resolved", |v| v["status"]["latest"]["version"] == "1.0.0");
    let other = format!("{}-other", w.repository);
    let file = w.dir.0.join("other.bin");
    std::fs::write(&file, b"other firmware").unwrap();
    oras_push(&other, "2.0.0", &file, MEDIA_TYPE);
    kubectl(&["delete", "-n", &w.ns, "fwc/gamma"], None).ok();
    w.apply(&hourly(&other));
    w.wait("fwc/gamma", "the namesake resolves its own repository", |v| v["status"]["latest"]["version"] == "2.0.0");

    // A deleted gateway makes its channels explain why they are no longer Ready.
    kubectl(&["delete", "-n", &w.ns, "otagw/default"], None).ok();
    w.wait("fwc/alpha", "Ready=False GatewayNotFound", |v| {
        condition(v, "Ready").is_some_and(|c| c["status"] == "False" && c["reason"] == "GatewayNotFound")
    });
}

const ARTIFACT_MIRROR: &str = "apiVersion: updraft.dev/v1alpha1\nkind: ArtifactMirror\nmetadata: {name: releases}\nspec:\n  source: {oci: {registry: \"127.0.0.1:15000\", repository: releases/app, insecure: true}}\n  destination: {http: {url: \"http://127.0.0.1:9\"}}\n";

/// `Ready=False` with one of `reasons` and `Stalled=False`.
fn not_ready_for(v: &Value, reasons: &[&str]) -> bool {
    is(v, "Ready", "False")
        && is(v, "Stalled", "False")
        && condition(v, "Ready").is_some_and(|c| reasons.iter().any(|r| c["reason"] == *r))
}

/// An ArtifactMirror is reconciled (it used to say NotImplemented): it observes its sides
/// and says why it is not Ready (here: its gateway does not exist, and nothing listens at
/// its destination), in a way `kubectl wait` and `kubectl get` show; a bad spec is
/// Stalled naming the field until fixed; nothing is rewritten while nothing changes.
/// (ImageStreams: tests/streams.rs; mirrors in sync: tests/mirrors.rs.)
#[test]
fn unreconciled_kinds_say_so_in_their_status() {
    let w = World::new("op-unreconciled").ready();
    let reasons = ["GatewayNotFound", "DestinationUnreachable"];
    w.apply(ARTIFACT_MIRROR);
    let v = w.wait("amir/releases", "Ready=False, not stalled", |v| not_ready_for(v, &reasons));
    assert_eq!(v["status"]["observedGeneration"], v["metadata"]["generation"]);
    let ready = condition(&v, "Ready").unwrap().clone();
    assert!(!ready["message"].as_str().unwrap().is_empty(), "{ready:#}");
    assert!(is(&v, "Stalled", "False"), "{v:#}");

    // `kubectl wait` ends at its timeout with an error instead of waiting on nothing, and
    // `kubectl get` shows why.
    let out = kubectl(&["wait", "--for=condition=Ready", "--timeout=2s", "-n", &w.ns, "amir/releases"], None);
    assert!(!out.success && out.stderr.contains("timed out"), "{out:?}");
    let table = kubectl(&["get", "-n", &w.ns, "amir/releases", "--no-headers"], None).ok();
    let reason = ready["reason"].as_str().unwrap();
    assert!(table.contains("False") && table.contains(reason), "{table}");
    let events = kubectl(&["get", "events.events.k8s.io", "-n", &w.ns, "-o", "json"], None).ok();
    let events: Value = serde_json::from_str(&events).unwrap();
    let warnings = |name: &str| {
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == reason && e["regarding"]["name"] == name && e["type"] == "Warning")
            .count()
    };
    assert_eq!(warnings("releases"), 1, "{events:#}");

    // A bad spec says what to fix; fixing it brings back what it observed.
    let both = ARTIFACT_MIRROR.replace("source: {oci:", "source: {http: {url: \"http://lan:8090\"}, oci:");
    w.apply(&both);
    let v = w.wait("amir/releases", "InvalidSpec", |v| {
        condition(v, "Stalled").is_some_and(|c| c["reason"] == "InvalidSpec") && is(v, "Stalled", "True")
    });
    let message = condition(&v, "Stalled").unwrap()["message"].as_str().unwrap();
    assert!(message.contains("source must set exactly one of oci, http"), "{message}");
    // (A JSON patch: server-side apply on 1.20 turns a removed object field into null.)
    let fix = r#"[{"op": "remove", "path": "/spec/source/http"}]"#;
    kubectl(&["patch", "-n", &w.ns, "amir/releases", "--type=json", "-p", fix], None).ok();
    w.wait("amir/releases", "not Ready again, not stalled", |v| not_ready_for(v, &reasons));

    // Nothing new to say: no further writes.
    std::thread::sleep(Duration::from_secs(3));
    let version = |what: &str| w.get(what).unwrap()["metadata"]["resourceVersion"].clone();
    let before = version("amir/releases");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(before, version("amir/releases"), "status rewritten while nothing changed");
}
