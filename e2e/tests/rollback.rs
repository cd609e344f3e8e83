//! A rollback reaches devices, end to end: the real operator and gateway binaries, the
//! shared registry, Debian's `mosquitto` as the broker and `mosquitto_sub` as the
//! device listening. A channel that served 1.1.0 is pinned back to 1.0.0: status and
//! `/version` move, `POST .../check` from a device on 1.1.0 answers 200 with 1.0.0 and
//! `"downgrade": true`, the download is 1.0.0's bytes, and MQTT publishes 1.0.0. A
//! development build (1.2.0, never served) still gets 204 unless `spec.downgrade` says
//! `Always`; `Never` leaves every newer device alone.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::config_sync::ConfigSync;
use e2e::procs::{binary, free_port, operator, oras_push, wait_for, Proc, TempDir};
use e2e::{cluster, curl, install_crds, kubectl, namespace};
use serde_json::Value;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const WAIT: Duration = Duration::from_secs(60);

/// `POST /api/v1/channels/{channel}/check` as a device running `version`.
fn check(base: &str, channel: &str, version: &str) -> (u16, Value) {
    let body = serde_json::json!({"version": version, "id": "device-7"}).to_string();
    let url = format!("{base}/api/v1/channels/{channel}/check");
    let (status, reply) = curl(&["-X", "POST", "-H", "Content-Type: application/json", "-d", &body, &url]);
    (status, serde_json::from_slice(&reply).unwrap_or(Value::Null))
}

/// A mosquitto broker of the test's own on a free port.
fn broker(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let config = dir.join("mosquitto.conf");
    std::fs::write(&config, format!("user root\npersistence false\nlistener {port} 127.0.0.1\nallow_anonymous true\n"))
        .unwrap();
    let mut cmd = Command::new("/usr/sbin/mosquitto");
    cmd.arg("-c").arg(&config);
    let proc = Proc::spawn(cmd, &dir.join("mosquitto.log"));
    wait_for(WAIT, "mosquitto listens", || std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()));
    (proc, port)
}

/// The MQTT messages `mosquitto_sub` received so far, as JSON.
fn messages(sub: &Proc) -> Vec<Value> {
    sub.output().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn firmware(tag: &str, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2246822519).rotate_left(tag.len() as u32 + 7) as u8 ^ tag.len() as u8)
        .collect()
}

#[test]
fn pinning_back_reaches_devices_that_ran_the_newer_version() {
    if !Path::new("/usr/sbin/mosquitto").exists() {
        e2e::cluster_script("tools");
    }
    install_crds();
    let ns = namespace("rollback");
    let dir = TempDir::new("rollback");
    let repository = format!("e2e/{ns}/firmware");
    let mut images = Vec::new();
    for (tag, size) in [("1.0.0", 30_000), ("1.1.0", 31_000)] {
        let bytes = firmware(tag, size);
        let file = dir.0.join(format!("fw-{tag}.bin"));
        std::fs::write(&file, &bytes).unwrap();
        oras_push(&repository, tag, &file, MEDIA_TYPE);
        images.push(bytes);
    }
    let (_broker, mqtt) = broker(&dir.0);
    let endpoint = e2e::procs::config_endpoint();
    let endpoint: Vec<&str> = endpoint.iter().map(String::as_str).collect();
    let (operator, _admin) = operator(&ns, &dir.0, "operator", &endpoint);
    let apply = |yaml: &str| kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(yaml)).ok();
    let get = |what: &str| -> Value {
        let out = kubectl(&["get", "-n", &ns, what, "-o", "json"], None);
        if out.success {
            serde_json::from_str(&out.stdout).unwrap()
        } else {
            Value::Null
        }
    };
    apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {{name: default}}\nspec:\n  notifications:\n    mqtt: {{url: \"mqtt://127.0.0.1:{mqtt}\"}}\n"
    ));
    let channel = |extra: &str| {
        format!(
            "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: roll}}\nspec:\n  device: roll-dev\n  interval: 2s\n  source: {{registry: \"{}\", repository: \"{repository}\", insecure: true}}\n{extra}",
            cluster().registry
        )
    };
    apply(&channel(""));
    let wait_status = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(WAIT, what, || {
                let v = get("fwc/roll");
                pred(&v).then_some(v)
            })
        }));
        found.unwrap_or_else(|_| panic!("{what}; last: {:#}\noperator log:\n{}", get("fwc/roll"), operator.output()))
    };
    let status = wait_status("1.1.0 resolved", &|v| v["status"]["latest"]["version"] == "1.1.0");
    assert_eq!(status["status"]["highestServed"], "1.1.0");

    // The gateway, run here from what the operator renders; a device listens on MQTT.
    let (port, gw_admin) = (free_port(), free_port());
    let config_path = dir.0.join("gateway.yaml");
    let _sync = ConfigSync::start(&ns, &config_path, port, gw_admin, &dir.0.join("cache"));
    wait_for(WAIT, "the rendered gateway config", || config_path.exists().then_some(()));
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config_path.to_str().unwrap()]);
    let gateway = Proc::spawn(cmd, &dir.0.join("gateway.log"));
    let mut sub = Command::new("mosquitto_sub");
    sub.args(["-h", "127.0.0.1", "-p", &mqtt.to_string(), "-q", "1", "-t", "firmware/updates/roll-dev"]);
    let sub = Proc::spawn(sub, &dir.0.join("mqtt-device.log"));
    let base = format!("http://127.0.0.1:{port}");
    let version =
        |base: &str| String::from_utf8(curl(&[&format!("{base}/version?device=roll-dev")]).1).unwrap_or_default();
    wait_for(WAIT, "the gateway serves 1.1.0", || version(&base).starts_with("1.1.0\n").then_some(()));
    wait_for(WAIT, "MQTT announces 1.1.0", || messages(&sub).iter().any(|m| m["version"] == "1.1.0").then_some(()));

    // An ordinary upgrade: no downgrade field at all.
    let (status, upgrade) = check(&base, "roll", "1.0.0");
    assert_eq!(status, 200, "{upgrade}");
    assert_eq!(upgrade["version"], "1.1.0");
    assert!(upgrade.get("downgrade").is_none(), "an upgrade's answer is unchanged: {upgrade}");
    assert_eq!(check(&base, "roll", "1.1.0").0, 204);

    // Pin back.
    apply(&channel("  version: {pin: \"1.0.0\"}\n"));
    let status = wait_status("pinned back to 1.0.0", &|v| v["status"]["latest"]["version"] == "1.0.0");
    assert_eq!(status["status"]["highestServed"], "1.1.0", "a pin back keeps the high-water mark");
    let crc = crc32fast::hash(&images[0]);
    let found = std::panic::catch_unwind(|| {
        wait_for(WAIT, "the gateway serves 1.0.0", || {
            (version(&base) == format!("1.0.0\n{crc}\n{}", images[0].len())).then_some(())
        })
    });
    assert!(found.is_ok(), "gateway log:\n{}", gateway.output());

    // The device on 1.1.0 is told to roll back, and gets 1.0.0's bytes.
    let (status, rollback) = wait_for(WAIT, "the check offers the rollback", || {
        let answer = check(&base, "roll", "1.1.0");
        (answer.0 != 202).then_some(answer)
    });
    assert_eq!(status, 200, "{rollback}\n{}", gateway.output());
    assert_eq!(rollback["version"], "1.0.0");
    assert_eq!(rollback["downgrade"], true);
    let url = format!("{base}{}", rollback["url"].as_str().expect("a download URL"));
    let (status, bytes) = curl(&[&url]);
    assert_eq!(status, 200);
    assert!(bytes == images[0], "the rollback download is 1.0.0's bytes");
    // A development build the channel never served, and a device already on 1.0.0.
    assert_eq!(check(&base, "roll", "1.2.0").0, 204);
    assert_eq!(check(&base, "roll", "v1.0.0").0, 204);
    // MQTT publishes the rollback to devices.
    wait_for(WAIT, "MQTT announces 1.0.0 after 1.1.0", || {
        let versions: Vec<Value> = messages(&sub).iter().map(|m| m["version"].clone()).collect();
        let first_new = versions.iter().position(|v| v == "1.1.0")?;
        versions[first_new..].iter().any(|v| v == "1.0.0").then_some(())
    });
    let announced = messages(&sub).into_iter().rfind(|m| m["version"] == "1.0.0").unwrap();
    assert_eq!(announced["crc32"], crc);
    assert_eq!(announced["size"], images[0].len());

    // The channel decides about other downgrades.
    apply(&channel("  version: {pin: \"1.0.0\"}\n  downgrade: Never\n"));
    wait_for(WAIT, "downgrade: Never leaves the 1.1.0 device alone", || {
        (check(&base, "roll", "1.1.0").0 == 204).then_some(())
    });
    apply(&channel("  version: {pin: \"1.0.0\"}\n  downgrade: Always\n"));
    let (_, forced) = wait_for(WAIT, "downgrade: Always reaches the development build", || {
        let answer = check(&base, "roll", "1.2.0");
        (answer.0 == 200).then_some(answer)
    });
    assert_eq!((forced["version"].clone(), forced["downgrade"].clone()), ("1.0.0".into(), true.into()));
}
