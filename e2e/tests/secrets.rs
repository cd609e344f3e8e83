//! Secrets never reach events, status or rendered objects, on the real API server:
//! planted values (registry credentials, a malformed docker config around one, the
//! store write key, the upload token, the webhook HMAC key, the MQTT password, a key
//! under the wrong name, the receiver's token) sit in Secrets that an OtaGateway,
//! FirmwareChannels and ArtifactMirrors reference. The real operator runs them through
//! success (a release resolved and rendered) and failure (a registry that refuses
//! connections, a missing repository, a docker config that does not parse, a Secret
//! without its key, a missing Secret). Then every Event (core/v1 and events.k8s.io/v1),
//! every status, the rendered ConfigMap, Deployments and Services, the operator's log
//! (`RUST_LOG=debug`) and its `/metrics` are searched for each planted value, as is and
//! base64-encoded. (`ota-gateway/tests/faults_secrets.rs` covers the gateway's logs,
//! metrics and answers.)

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use e2e::conditions::condition;
use e2e::procs::{free_port, operator, oras_push, wait_for, TempDir};
use e2e::{cluster, install_crds, kubectl, namespace};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";

/// Unique values that must never be seen outside their Secrets.
struct Planted {
    registry_password: String,
    malformed_config: String,
    store_key: String,
    upload_token: String,
    hmac_key: String,
    mqtt_password: String,
    misnamed_key: String,
    receiver_token: String,
}

impl Planted {
    fn new() -> Self {
        let v = |what: &str| format!("planted-{what}-{:016x}", rand::random::<u64>());
        Self {
            registry_password: v("registry-password"),
            malformed_config: v("malformed-config"),
            store_key: v("store-key"),
            upload_token: v("upload-token"),
            hmac_key: v("hmac-key"),
            mqtt_password: v("mqtt-password"),
            misnamed_key: v("misnamed-key"),
            receiver_token: v("receiver-token"),
        }
    }

    fn all(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("registry password", &self.registry_password),
            ("malformed docker config", &self.malformed_config),
            ("store write key", &self.store_key),
            ("upload token", &self.upload_token),
            ("webhook HMAC key", &self.hmac_key),
            ("MQTT password", &self.mqtt_password),
            ("key under another name", &self.misnamed_key),
            ("receiver token", &self.receiver_token),
        ]
    }
}

fn apply(ns: &str, yaml: &str) {
    kubectl(&["apply", "--server-side", "-n", ns, "-f", "-"], Some(yaml)).ok();
}

fn get(ns: &str, what: &str) -> Option<Value> {
    let out = kubectl(&["get", "-n", ns, what, "-o", "json"], None);
    out.success.then(|| serde_json::from_str(&out.stdout).unwrap())
}

/// Waits until `what` satisfies `pred`; returns it.
fn wait(ns: &str, what: &str, description: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(WAIT, &format!("{what}: {description}"), || get(ns, what).filter(|v| pred(v)))
}

fn docker_config(registry: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({"auths": {registry: {"username": user, "password": password, "auth": auth}}}).to_string()
}

fn secret_from_file(ns: &str, name: &str, type_: &str, key: &str, content: &str, dir: &Path) {
    let file = dir.join(format!("{name}.{key}"));
    std::fs::write(&file, content).unwrap();
    kubectl(
        &["create", "secret", "generic", "-n", ns, name, &format!("--type={type_}")]
            .into_iter()
            .chain([format!("--from-file={key}={}", file.display()).as_str()])
            .collect::<Vec<_>>(),
        None,
    )
    .ok();
}

fn secret_literal(ns: &str, name: &str, type_: &str, pairs: &[(&str, &str)]) {
    let mut args: Vec<String> =
        ["create", "secret", "generic", "-n", ns, name, &format!("--type={type_}")].map(String::from).to_vec();
    args.extend(pairs.iter().map(|(k, v)| format!("--from-literal={k}={v}")));
    kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>(), None).ok();
}

fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

fn post(port: u16, path: &str, token: &str, body: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[test]
fn planted_secrets_never_appear_in_events_status_or_rendered_objects() {
    install_crds();
    let ns = namespace("secrets");
    let dir = TempDir::new("secrets");
    let planted = Planted::new();
    let registry = cluster().registry.clone();

    // The Secrets, as a platform team would create them.
    let cfg = docker_config(&registry, "ci", &planted.registry_password);
    secret_from_file(&ns, "regcred", "kubernetes.io/dockerconfigjson", ".dockerconfigjson", &cfg, &dir.0);
    let down_cfg = docker_config("127.0.0.1:1", "ci", &planted.registry_password);
    secret_from_file(&ns, "downcred", "kubernetes.io/dockerconfigjson", ".dockerconfigjson", &down_cfg, &dir.0);
    // Not JSON: an error message that quoted its input would show the value.
    let malformed = format!("{{\"auths\": {{\"{registry}\": {{\"auth\": \"{}", planted.malformed_config);
    secret_from_file(&ns, "badcred", "Opaque", ".dockerconfigjson", &malformed, &dir.0);
    secret_literal(&ns, "store-key", "Opaque", &[("key", &planted.store_key)]);
    secret_literal(&ns, "upload", "Opaque", &[("token", &planted.upload_token)]);
    secret_literal(&ns, "hook", "Opaque", &[("hmac", &planted.hmac_key)]);
    secret_literal(
        &ns,
        "mqtt-login",
        "kubernetes.io/basic-auth",
        &[("username", "gw"), ("password", &planted.mqtt_password)],
    );
    // The key a mirror asks for is absent; another key holds a planted value.
    secret_literal(&ns, "wrong-key", "Opaque", &[("other", &planted.misnamed_key)]);
    secret_literal(&ns, "receiver", "Opaque", &[("token", &planted.receiver_token)]);

    let hook = free_port();
    let (operator_proc, admin) = operator(
        &ns,
        &dir.0,
        "operator",
        &[
            "--webhook-addr",
            &format!("127.0.0.1:{hook}"),
            "--webhook-token-secret",
            "receiver",
            "--lease-namespace",
            &ns,
        ],
    );

    // A release to resolve, and the resources that reference the Secrets.
    let repository = format!("e2e/{ns}/firmware");
    let file = dir.0.join("fw.bin");
    std::fs::write(&file, (0..10_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>()).unwrap();
    oras_push(&repository, "1.0.0", &file, MEDIA_TYPE);
    // The store's volume claim must exist (no provisioner here: it stays Pending).
    apply(
        &ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: artifacts}\nspec: {accessModes: [ReadWriteMany], resources: {requests: {storage: 1Gi}}}\n",
    );
    apply(
        &ns,
        "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec:\n  uploadTokenSecret: {name: upload, key: token}\n  store: {claimName: artifacts, writeKeySecret: {name: store-key, key: key}}\n  notifications:\n    mqtt: {url: \"mqtt://127.0.0.1:1\", credentialsSecret: mqtt-login}\n    webhooks:\n    - url: http://127.0.0.1:1/hook\n      secretRef: {name: hook, key: hmac}\n",
    );
    let channel = |name: &str, registry: &str, repository: &str, secret: &str| {
        format!(
            "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: {name}}}\nspec:\n  device: {name}-dev\n  interval: 2s\n  source: {{registry: \"{registry}\", repository: \"{repository}\", insecure: true, credentialsSecret: {secret}}}\n"
        )
    };
    apply(&ns, &channel("ok", &registry, &repository, "regcred"));
    apply(&ns, &channel("down", "127.0.0.1:1", &repository, "downcred"));
    apply(&ns, &channel("missing", &registry, &format!("e2e/{ns}/absent"), "regcred"));
    apply(&ns, &channel("badcfg", &registry, &repository, "badcred"));
    let mirror = |name: &str, key_secret: &str| {
        format!(
            "apiVersion: updraft.dev/v1alpha1\nkind: ArtifactMirror\nmetadata: {{name: {name}}}\nspec:\n  interval: 2s\n  dryRun: true\n  include: [\"*.bin\"]\n  source: {{oci: {{registry: \"{registry}\", repository: \"{repository}\", insecure: true, credentialsSecret: regcred}}}}\n  destination: {{http: {{url: \"http://127.0.0.1:1\", keySecret: {key_secret}, allowPlainHttp: true}}}}\n"
        )
    };
    apply(&ns, &mirror("to-wan", "store-key"));
    apply(&ns, &mirror("wrong", "wrong-key"));
    apply(&ns, &mirror("absent", "no-such-secret"));

    // Success: the release resolved and rendered (credentials used); failures visible.
    wait(&ns, "fwc/ok", "latest 1.0.0, Ready", |v| {
        v["status"]["latest"]["version"] == "1.0.0" && condition(v, "Ready").is_some_and(|c| c["status"] == "True")
    });
    for name in ["down", "missing", "badcfg"] {
        wait(&ns, &format!("fwc/{name}"), "a failure in its conditions", |v| {
            condition(v, "Ready").is_some_and(|c| c["status"] == "False" && c["message"].as_str().is_some())
        });
    }
    for name in ["wrong", "absent"] {
        wait(&ns, &format!("artifactmirror/{name}"), "Stalled", |v| {
            condition(v, "Stalled").is_some_and(|c| c["status"] == "True")
        });
    }
    let rendered = wait(&ns, "configmap/default-config", "rendered with 1.0.0 and the store", |v| {
        v["data"]["gateway.yaml"].as_str().is_some_and(|y| y.contains("1.0.0") && y.contains("stores"))
    });
    // The receiver: a wrong token and a right one (a failure and a success).
    wait_for(WAIT, "the receiver answers", || (!post(hook, "/webhook", "nope", "{}").is_empty()).then_some(()));
    let body =
        serde_json::json!({"events": [{"action": "push", "target": {"repository": repository, "tag": "1.0.0"}}]});
    let answer = post(hook, "/webhook", &planted.receiver_token, &body.to_string());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Let the failing objects retry a few times (events on transitions, status rewrites).
    std::thread::sleep(Duration::from_secs(8));

    // Everything a user, a dashboard or a log collector may read.
    let mut haystack: Vec<(String, String)> = Vec::new();
    for what in [
        "events",
        "events.v1.events.k8s.io",
        "otagateways",
        "firmwarechannels",
        "imagestreams",
        "artifactmirrors",
        "configmaps",
        "deployments",
        "services",
    ] {
        let out = kubectl(&["get", "-n", &ns, what, "-o", "json"], None).ok();
        haystack.push((what.to_owned(), out));
    }
    haystack.push(("operator /metrics".into(), http_get(admin, "/metrics")));
    drop(operator_proc);
    let log = std::fs::read_to_string(dir.0.join("operator.log")).unwrap();
    haystack.push(("operator log".into(), log));

    // The search is not vacuous: events were written, statuses name the failures.
    let events: Value = serde_json::from_str(&haystack[0].1).unwrap();
    let event_count = events["items"].as_array().map_or(0, Vec::len);
    assert!(event_count > 0, "no events to search");
    let statuses = format!("{}{}", haystack[3].1, haystack[5].1);
    for reason in ["127.0.0.1:1", "wrong-key", "no-such-secret"] {
        assert!(statuses.contains(reason), "the statuses do not name {reason}");
    }
    assert!(rendered["data"]["gateway.yaml"].as_str().unwrap().contains("writeKeyFile"), "the key as a file");

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut found = Vec::new();
    for (name, value) in planted.all() {
        let forms = [value.to_owned(), b64(value), b64(&format!("ci:{value}")), b64(&format!("gw:{value}"))];
        for (place, text) in &haystack {
            if forms.iter().any(|f| text.contains(f.as_str())) {
                found.push(format!("{name} in {place}"));
            }
        }
    }
    // The control: the same search finds every value where it belongs, in the Secrets.
    let secrets = kubectl(&["get", "-n", &ns, "secrets", "-o", "json"], None).ok();
    for (name, value) in planted.all() {
        let forms = [value.to_owned(), b64(value), b64(&format!("ci:{value}")), b64(&format!("gw:{value}"))];
        let in_secrets = forms.iter().any(|f| secrets.contains(f.as_str()))
            // The docker configs are stored whole, base64 of the JSON around the value.
            || ["regcred", "downcred", "badcred"].iter().any(|s| {
                let data = kubectl(&["get", "-n", &ns, "secret", s, "-o", "jsonpath={.data.\\.dockerconfigjson}"], None).ok();
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data.trim()).unwrap_or_default())
                    .unwrap_or_default()
                    .contains(value)
            });
        assert!(in_secrets, "the search does not find the {name} even in its Secret");
    }
    let bytes: usize = haystack.iter().map(|(_, t)| t.len()).sum();
    println!(
        "FIGURE secrets: {} of {} planted values found in {} places ({} kB: {event_count} core events, statuses of 4 kinds, rendered objects, operator log and metrics)",
        found.len(),
        planted.all().len(),
        haystack.len(),
        bytes / 1024
    );
    assert!(found.is_empty(), "planted secrets found: {found:?}");
}
