//! Notifications end to end: an OtaGateway whose `spec.notifications` names Secrets
//! (broker CA, a kubernetes.io/tls client certificate, kubernetes.io/basic-auth
//! credentials, a webhook HMAC key); the real operator renders and mounts them; the
//! gateway binary runs locally with those Secrets written where the Deployment mounts
//! them (as kubelet would) and notifies a real `mosquitto` over TLS, with `mosquitto_sub`
//! as the device, and an HTTP receiver whose signatures `openssl` checks.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use e2e::pki::make_pki;
use e2e::procs::{binary, free_port, operator, oras_push, wait_for, Proc, TempDir};
use e2e::{cluster, install_crds, kubectl, namespace, repo_root, run};
use serde_json::Value;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const WAIT: Duration = Duration::from_secs(60);

fn ensure_mosquitto() {
    let have = || Path::new("/usr/sbin/mosquitto").exists();
    if !have() {
        Command::new("bash").arg(repo_root().join("e2e/scripts/cluster.sh")).arg("tools").status().unwrap();
    }
    assert!(have(), "mosquitto is not installed and `cluster.sh tools` did not install it");
}

/// One request the receiver got: lower-case headers and the raw body.
type Request = (HashMap<String, String>, Vec<u8>);

/// A minimal HTTP/1.1 receiver on loopback that records each POST and answers 204.
fn receiver() -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/updraft", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            record.lock().unwrap().push((headers, body));
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (url, seen)
}

fn secret(ns: &str, args: &[&str]) {
    let mut all = vec!["create", "secret", "-n", ns];
    all.extend_from_slice(args);
    kubectl(&all, None).ok();
}

/// Writes each Secret volume of the gateway Deployment where its pod would see it,
/// under `root`, as kubelet does: one file per projected key.
fn mount_secrets_like_kubelet(ns: &str, deployment: &Value, root: &Path) {
    let pod = &deployment["spec"]["template"]["spec"];
    for volume in pod["volumes"].as_array().unwrap() {
        let Some(secret) = volume["secret"]["secretName"].as_str() else { continue };
        let mount = pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("volume {} is not mounted", volume["name"]));
        let data: Value =
            serde_json::from_str(&kubectl(&["get", "secret", "-n", ns, secret, "-o", "json"], None).ok()).unwrap();
        let dir = root.join(mount["mountPath"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        for item in volume["secret"]["items"].as_array().unwrap() {
            let value = data["data"][item["key"].as_str().unwrap()].as_str().unwrap();
            let bytes = base64::engine::general_purpose::STANDARD.decode(value).unwrap();
            std::fs::write(dir.join(item["path"].as_str().unwrap()), bytes).unwrap();
        }
    }
}

#[test]
fn otagateway_notifications_reach_a_tls_broker_and_a_webhook() {
    ensure_mosquitto();
    install_crds();
    let ns = namespace("notify");
    let dir = TempDir::new("notify");
    let (operator, _admin) = operator(&ns, &dir.0, "operator", &[]);
    let pki = dir.0.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki);
    let p = |f: &str| pki.join(f).to_str().unwrap().to_owned();

    // The broker: TLS with client certificates and a password file.
    run(Command::new("mosquitto_passwd").args(["-b", "-c", &p("passwd"), "gateway", "s3cret"]));
    let port = free_port();
    let conf = dir.0.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\npersistence false\nlistener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nallow_anonymous false\npassword_file {}\n",
            p("ca.crt"), p("server.crt"), p("server.key"), p("passwd")
        ),
    )
    .unwrap();
    let mut cmd = Command::new("/usr/sbin/mosquitto");
    cmd.arg("-c").arg(&conf);
    let _broker = Proc::spawn(cmd, &dir.0.join("mosquitto.log"));
    let (hook_url, seen) = receiver();

    // The Secrets, as a platform team would create them.
    secret(&ns, &["generic", "broker-ca", &format!("--from-file=ca.crt={}", p("ca.crt"))]);
    secret(&ns, &["tls", "gateway-mqtt", "--cert", &p("client.crt"), "--key", &p("client.key")]);
    secret(
        &ns,
        &["generic", "mqtt-login", "--type=kubernetes.io/basic-auth"]
            .into_iter()
            .chain(["--from-literal=username=gateway", "--from-literal=password=s3cret"])
            .collect::<Vec<_>>(),
    );
    secret(&ns, &["generic", "hook-key", "--from-literal=hmac=team-secret"]);

    let repository = format!("e2e/{ns}/firmware");
    let firmware: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let file = dir.0.join("fw.bin");
    std::fs::write(&file, &firmware).unwrap();
    oras_push(&repository, "1.4.2", &file, MEDIA_TYPE);
    let gateway = format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {{name: default}}\nspec:\n  notifications:\n    mqtt:\n      url: mqtts://127.0.0.1:{port}\n      topicPrefix: fleet/ota\n      caSecret: broker-ca\n      clientCertSecret: gateway-mqtt\n      credentialsSecret: mqtt-login\n    webhooks:\n    - url: {hook_url}\n      secretRef: {{name: hook-key, key: hmac}}\n"
    );
    let channel = format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  device: esp32-sensor\n  interval: 2s\n  source: {{registry: \"{}\", repository: \"{repository}\", insecure: true}}\n",
        cluster().registry
    );
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(&gateway)).ok();
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(&channel)).ok();

    let get = |what: &str| -> Option<Value> {
        let out = kubectl(&["get", "-n", &ns, what, "-o", "json"], None);
        out.success.then(|| serde_json::from_str(&out.stdout).unwrap())
    };
    let yaml = wait_for(WAIT, "the config rendered with notifications and 1.4.2", || {
        let cm = get("configmap/default-config")?;
        let y = cm["data"]["gateway.yaml"].as_str()?.to_owned();
        (y.contains("notifications") && y.contains("1.4.2")).then_some(y)
    });
    let deployment = wait_for(WAIT, "the gateway Deployment", || get("deployment/default"));
    let root = dir.0.join("pod");
    mount_secrets_like_kubelet(&ns, &deployment, &root);

    // No kubelet here: the gateway binary runs locally from the rendered config, with
    // listeners, cache and the pod's file system root moved to this machine.
    let yaml = yaml.replace("/etc/updraft/", &format!("{}/etc/updraft/", root.display()));
    let mut config: Value = serde_yaml::from_str(&yaml).unwrap();
    let (http, admin) = (free_port(), free_port());
    config["listen"] = format!("127.0.0.1:{http}").into();
    config["adminListen"] = format!("127.0.0.1:{admin}").into();
    config["cache"]["dir"] = dir.0.join("cache").to_str().unwrap().into();
    let config_path = dir.0.join("gateway.yaml");
    std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config_path.to_str().unwrap()]);
    let gw = Proc::spawn(cmd, &dir.0.join("gateway.log"));

    // The device: mosquitto_sub over TLS, as the device would subscribe.
    let device = || {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", "fleet/ota/esp32-sensor"])
            .args(["--cafile", &p("ca.crt"), "--cert", &p("client.crt"), "--key", &p("client.key")])
            .args(["-u", "gateway", "-P", "s3cret", "-C", "1", "-W", "10", "-F", "%r %p"])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!line.is_empty()).then_some(line)
    };
    let line = wait_for(WAIT, "a retained message for esp32-sensor", || device().filter(|l| l.starts_with("1 ")))
        .split_once(' ')
        .unwrap()
        .1
        .to_owned();
    let message: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(message["version"], "1.4.2", "{}", gw.output());
    assert_eq!(message["size"], firmware.len());
    assert_eq!(message["crc32"], crc32fast::hash(&firmware));
    assert_eq!(message["url"], "/firmware?device=esp32-sensor");

    // The webhook: signed with the key from the Secret, checked by openssl.
    let (headers, body) = wait_for(WAIT, "a release.ready webhook", || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(h, _)| h.get("x-updraft-event").is_some_and(|e| e == "release.ready"))
            .cloned()
    });
    let body_file = dir.0.join("hook-body.json");
    std::fs::write(&body_file, &body).unwrap();
    let digest = run(Command::new("openssl").args(["dgst", "-sha256", "-hmac", "team-secret", "-r"]).arg(&body_file));
    assert_eq!(headers["x-updraft-signature"], format!("sha256={}", digest.split_whitespace().next().unwrap()));
    assert_eq!(headers["x-updraft-delivery"].len(), 36);
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((json["channel"].as_str(), json["device"].as_str()), (Some("esp32"), Some("esp32-sensor")));
    assert_eq!(json["version"], "1.4.2");
    drop(operator);
}
