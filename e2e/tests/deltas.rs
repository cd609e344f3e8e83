//! ESP32 delta patches (#23), the whole loop as production runs it, against kube-apiserver
//! 1.20 and the real registry: the real operator, a real gateway run from the config it
//! renders (found through the gateway Service's EndpointSlice, as in `census.rs`, and fed
//! new renderings through the operator's config endpoint), the real `--mirror` worker
//! (started from the ConfigMap as kubelet mounts it, and fed the new renderings through the
//! endpoint too), and `detools` (the reference implementation) on the device's side.
//!
//! "Aimed by the census at the versions devices really run": 60 devices report running
//! 1.0.0, 30 run 1.1.0 and 2 run 0.9.0 (below `minShare: 10`). Once 1.2.0 is pushed the
//! operator asks for patches from 1.0.0 and 1.1.0 (the most run first), never 0.9.0; the
//! worker builds and pushes both; the operator finds them (`status.deltas`, a
//! `DeltaBuilt` event each, the gateway's next rendering); the gateway offers each on the
//! check API to a device that reports the base's version and image SHA-256, serves it,
//! and `detools apply_patch` turns the device's image into 1.2.0 byte for byte. A device
//! on 0.9.0, or reporting 1.0.0 with another image's hash, gets the full image only. The
//! ConfigMap, written at most every 30 s while the channel changes, follows last.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use e2e::config_sync::ConfigSync;
use e2e::procs::{binary, config_endpoint, free_port, oras_push, wait_for, Proc};
use e2e::world::World;
use e2e::{cluster, curl, kubectl, rendered_config};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use updraft_core::census::{Census, Merged, State, WINDOWS};
use updraft_core::delta;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const DEVICE: &str = "esp32-devkit";
const HOST: &str = "127.0.0.1";

/// Devices per version they report running: 60 + 30 + 2; 0.9.0 is 2.2 % (under 10 %).
const FLEET: [(&str, usize); 3] = [("1.0.0", 60), ("1.1.0", 30), ("0.9.0", 2)];

/// A small xorshift generator: the same "firmware" at every run.
struct Rng(u64);

impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 32) as u8
            })
            .collect()
    }
}

/// Writes the version string near the end of `image`, where a build puts its app
/// description.
fn stamp(image: &mut [u8], version: &str) {
    let text = format!("updraft-demo {version}\0");
    let at = image.len() - 1024;
    image[at..at + text.len()].copy_from_slice(text.as_bytes());
}

/// Three builds of one 200 KiB firmware: 1.0.0 (pseudo-random "code", not an ESP app
/// image, so its image digest is the file's SHA-256); 1.1.0 with a fix of a few
/// instructions, a 512-byte function inserted and a constant changed; 1.2.0 with another
/// fix, a table grown by 256 bytes and a string changed.
fn releases() -> [Vec<u8>; 3] {
    let mut rng = Rng(0x05ee_d0f0_da7a);
    let mut v100 = rng.bytes(200 * 1024);
    v100[0] = 0; // no 0xE9 app-image magic
    stamp(&mut v100, "1.0.0");
    let mut v110 = v100.clone();
    v110[40_000..40_012].copy_from_slice(&rng.bytes(12));
    v110.splice(90_000..90_000, rng.bytes(512));
    v110[170_000..170_004].copy_from_slice(&rng.bytes(4));
    stamp(&mut v110, "1.1.0");
    let mut v120 = v110.clone();
    v120[10_000..10_024].copy_from_slice(&rng.bytes(24));
    v120.splice(120_000..120_000, rng.bytes(256));
    v120[180_000..180_040].copy_from_slice(b"connecting to the update server (retry) ");
    stamp(&mut v120, "1.2.0");
    [v100, v110, v120]
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One plain HTTP/1.1 GET (a device's poll): the status and body (status 0 when nothing
/// listens yet).
fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let Ok(mut stream) = TcpStream::connect((HOST, port)) else { return (0, Vec::new()) };
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let head_end = reply.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
    let status = std::str::from_utf8(&reply[9..12]).unwrap().parse().unwrap();
    (status, reply[head_end + 4..].to_vec())
}

/// `POST /api/v1/channels/esp32/check` with `body`: the status and the answer (JSON, or
/// null for an empty body).
fn check(port: u16, body: &Value) -> (u16, Value) {
    let url = format!("http://{HOST}:{port}/api/v1/channels/esp32/check");
    let body = body.to_string();
    let (status, answer) = curl(&["-X", "POST", "-H", "content-type: application/json", "-d", &body, &url]);
    (status, serde_json::from_slice(&answer).unwrap_or(Value::Null))
}

/// The `from` versions of `status.deltas`, in order.
fn bases(ch: &Value) -> Vec<String> {
    let deltas = ch["status"]["deltas"].as_array().cloned().unwrap_or_default();
    deltas.iter().map(|d| d["from"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn the_census_aims_the_patches_the_worker_builds_and_the_gateway_serves() {
    let started = Instant::now();
    // The operator with its config endpoint (the gateway long-polls it, as pods do) and
    // the census read every 2 s.
    let w = World::with_operator("deltas", |_| {
        let mut flags = config_endpoint();
        flags.extend(["--census-interval".to_owned(), "2s".to_owned()]);
        flags
    })
    .patience(Duration::from_secs(60))
    .ready();
    let lap = |what: &str| println!("[{:>5.1} s] {what}", started.elapsed().as_secs_f64());

    let [v100, v110, v120] = releases();
    let push = |version: &str, image: &[u8]| {
        let file = w.dir.0.join(format!("fw-{version}.bin"));
        std::fs::write(&file, image).unwrap();
        oras_push(&w.repository, &format!("v{version}"), &file, MEDIA_TYPE)
    };
    let d100 = push("1.0.0", &v100);
    let d110 = push("1.1.0", &v110);
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  device: {DEVICE}\n  interval: 2s\n  source: {{registry: \"{}\", repository: \"{}\", insecure: true}}\n  delta: {{minShare: 10, maxDeltas: 3}}\n",
        cluster().registry,
        w.repository
    ));
    w.wait("fwc/esp32", "1.1.0 resolved", |v| v["status"]["latest"]["version"] == "1.1.0");
    lap("1.1.0 resolved");

    // A gateway replica from the rendered config, as a pod (kubelet's part emulated),
    // found by the operator through the Service's EndpointSlice.
    let (port, admin) = (free_port(), free_port());
    let config = w.dir.0.join("gateway.yaml");
    let _sync = ConfigSync::start(&w.ns, &config, port, admin, &w.dir.0.join("gateway-cache"));
    wait_for(w.patience, "the rendered gateway config", || config.exists().then_some(()));
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config.to_str().unwrap()]);
    let gateway = Proc::spawn(cmd, &w.dir.0.join("gateway.log"));
    let version = format!("/version?device={DEVICE}");
    wait_for(w.patience, "the gateway serves 1.1.0", || {
        let (status, body) = get(port, &version);
        (status == 200 && body.starts_with(b"1.1.0\n")).then_some(())
    });
    w.apply(&format!(
        "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: default-replicas\n  labels: {{kubernetes.io/service-name: default}}\naddressType: IPv4\nports:\n  - {{name: admin, port: {admin}, protocol: TCP}}\n  - {{name: http, port: {port}, protocol: TCP}}\nendpoints:\n  - addresses: [\"{HOST}\"]\n    conditions: {{ready: true}}\n"
    ));

    // The fleet polls OtaFlux saying what it runs; one replica's sketch of the same
    // requests is what status.devices must show.
    let reference = Census::new(16 << 20);
    let now = SystemTime::now();
    let mut n = 0;
    for (running, count) in FLEET {
        for _ in 0..count {
            let id = format!("dev-{n}");
            let (status, body) = get(port, &format!("/version?device={DEVICE}&id={id}&current={running}"));
            assert_eq!((status, body.starts_with(b"1.1.0\n")), (200, true), "{}", String::from_utf8_lossy(&body));
            reference.record("esp32", running, State::Running, &id, now);
            n += 1;
        }
    }
    let mut one = Merged::default();
    one.add(&reference.report(SystemTime::now())).unwrap();
    let (_, day) = WINDOWS[1];
    let want: Vec<(String, i64)> = FLEET
        .iter()
        .map(|(v, _)| ((*v).to_owned(), one.devices("esp32", v, State::Running, day, SystemTime::now()) as i64))
        .collect();
    let running = |ch: &Value| -> Vec<(String, i64)> {
        FLEET
            .iter()
            .map(|(version, _)| {
                let by_version = ch["status"]["devices"]["byVersion"].as_array().cloned().unwrap_or_default();
                let entry = by_version.iter().find(|e| e["version"] == *version);
                ((*version).to_owned(), entry.and_then(|e| e["running"].as_i64()).unwrap_or(-1))
            })
            .collect()
    };
    let ch = w.wait("fwc/esp32", "status.devices shows what the fleet runs", |v| running(v) == want);
    println!("running, as the census counts it: {want:?}");
    assert_eq!(ch["status"]["devices"]["replicas"], 1, "{:#}", ch["status"]["devices"]);
    // Aimed by the census already: 1.1.0 has no previous release, yet 60 devices run 1.0.0.
    let ch = w.wait("fwc/esp32", "a delta from 1.0.0 to 1.1.0 asked for", |v| bases(v) == ["1.0.0"]);
    assert_eq!(ch["status"]["deltas"][0]["to"], "1.1.0", "{:#}", ch["status"]["deltas"]);
    lap("census in status.devices");

    // 1.2.0: patches from what 60 and 30 devices run, the most run first; not 0.9.0.
    let d120 = push("1.2.0", &v120);
    let ch = w.wait("fwc/esp32", "deltas from 1.0.0 and 1.1.0 to 1.2.0", |v| {
        v["status"]["latest"]["version"] == "1.2.0" && bases(v) == ["1.0.0", "1.1.0"]
    });
    let pairs = [("1.0.0", &d100, &v100), ("1.1.0", &d110, &v110)];
    for (entry, (from, digest, _)) in ch["status"]["deltas"].as_array().unwrap().iter().zip(pairs) {
        assert_eq!((&entry["from"], &entry["fromTag"]), (&json!(from), &json!(format!("v{from}"))), "{entry:#}");
        assert_eq!((&entry["fromDigest"], &entry["toDigest"]), (&json!(digest), &json!(d120)), "{entry:#}");
        assert_eq!((&entry["to"], &entry["tag"]), (&json!("1.2.0"), &json!(delta::tag(digest, &d120))), "{entry:#}");
        assert!(entry["digest"].is_null() && entry["size"].is_null(), "not built yet: {entry:#}");
    }
    lap("1.2.0 resolved, two patches asked for");

    // The worker, started now from what kubelet mounts (the ConfigMap, written at most
    // every 30 s while the channel changes: it may not ask for these patches yet), with
    // its own admin port and cache as a pod would have; the operator's endpoint brings it
    // the rendering that does.
    let (worker_admin, worker_file) = (free_port(), w.dir.0.join("worker.yaml"));
    let worker_sync = ConfigSync::start(&w.ns, &worker_file, free_port(), worker_admin, &w.dir.0.join("worker-cache"));
    wait_for(w.patience, "the worker's mounted config", || worker_file.exists().then_some(()));
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--mirror", "--config", worker_file.to_str().unwrap()]);
    let worker = Proc::spawn(cmd, &w.dir.0.join("worker.log"));

    // The operator finds both patches: status, one event each, rendered to serve.
    let built = |v: &Value| {
        v["status"]["deltas"].as_array().is_some_and(|d| d.len() == 2 && d.iter().all(|e| e["digest"].is_string()))
    };
    let found =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wait("fwc/esp32", "both patches found", built)));
    let ch = found.unwrap_or_else(|_| panic!("worker log:\n{}", worker.output()));
    lap("both patches built and found");
    let entries = ch["status"]["deltas"].as_array().unwrap().clone();
    assert_eq!(bases(&ch), ["1.0.0", "1.1.0"]);
    for (entry, (from, _, image)) in entries.iter().zip(pairs) {
        assert_eq!(entry["baseSha256"], sha256_hex(image), "{from}: the image digest a device reports: {entry:#}");
        assert!(entry["size"].as_i64().is_some_and(|s| s > 64), "{entry:#}");
    }
    let worker_view: Value = serde_json::from_slice(&get(worker_admin, "/deltas").1).unwrap_or_default();
    let views = worker_view.as_array().cloned().unwrap_or_default();
    assert!(views.len() == 2 && views.iter().all(|d| d["target"] == "1.2.0"), "the worker's view: {worker_view}");
    let metrics = String::from_utf8_lossy(&get(worker_admin, "/metrics").1).into_owned();
    let updates: Vec<&str> = metrics.lines().filter(|l| l.starts_with("updraft_mirror_config_updates_total")).collect();
    println!("the worker's config updates: {updates:?}");
    drop((worker, worker_sync));
    w.wait_until("a DeltaBuilt event for each patch, a NewVersion for each release", || {
        let events = kubectl(&["get", "events", "-n", &w.ns, "-o", "json"], None);
        let events: Value = serde_json::from_str(&events.stdout).unwrap_or_default();
        let items = events["items"].as_array().cloned().unwrap_or_default();
        let built: Vec<String> = items
            .iter()
            .filter(|e| e["reason"] == "DeltaBuilt")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        // "resolved 1.1.0 (<digest>)", "1.2.0 (<digest>) replaces 1.1.0 (<digest>)".
        let resolved = |version: &str, digest: &str| {
            let named = format!("{version} ({digest})");
            let new_version = items.iter().filter(|e| e["reason"] == "NewVersion");
            new_version
                .filter_map(|e| e["message"].as_str())
                .any(|m| m.trim_start_matches("resolved ").starts_with(&named))
        };
        built.len() == 2
            && resolved("1.1.0", &d110)
            && resolved("1.2.0", &d120)
            && entries.iter().all(|d| {
                let note = format!(
                    "delta {} -> 1.2.0 found: {} ({}, {} bytes)",
                    d["from"].as_str().unwrap(),
                    d["tag"].as_str().unwrap(),
                    d["digest"].as_str().unwrap(),
                    d["size"]
                );
                built.contains(&note)
            })
    });
    lap("a DeltaBuilt event each");

    // Devices check in with the gateway, now on the newest rendering (its config
    // endpoint); the patch is offered once the gateway has fetched it.
    let (target_sha, full) = (sha256_hex(&v120), v120.len());
    let mut sizes = Vec::new();
    for ((entry, (from, _, image)), id) in entries.iter().zip(pairs).zip(["dev-1", "dev-61"]) {
        let base_sha = sha256_hex(image);
        let asked = json!({"version": from, "sha256": base_sha, "id": id});
        let answer = wait_for(w.patience, &format!("the patch from {from} offered"), || {
            let (status, answer) = check(port, &asked);
            (status == 200 && answer["delta"].is_object()).then_some(answer)
        });
        assert_eq!((&answer["version"], &answer["sha256"]), (&json!("1.2.0"), &json!(target_sha)), "{answer:#}");
        let offered = &answer["delta"];
        assert_eq!(offered["baseSha256"], base_sha, "{answer:#}");
        let url = offered["url"].as_str().unwrap();
        let (status, patch) = curl(&[&format!("http://{HOST}:{port}{url}")]);
        assert_eq!(status, 200, "{url}");
        assert_eq!(
            (offered["size"].as_u64(), entry["size"].as_u64()),
            (Some(patch.len() as u64), Some(patch.len() as u64))
        );
        assert_eq!(offered["sha256"], sha256_hex(&patch), "{answer:#}");
        // The esp_delta_ota header names the base; detools applies the rest to it.
        assert_eq!(hex::encode(&patch[4..36]), base_sha, "the header's base digest");
        let dir = &w.dir.0;
        std::fs::write(dir.join("running.bin"), image).unwrap();
        std::fs::write(dir.join("body.patch"), &patch[64..]).unwrap();
        let out = dir.join("applied.bin");
        let _ = std::fs::remove_file(&out);
        let applied = e2e::images::required_tool("detools")
            .arg("apply_patch")
            .args([dir.join("running.bin"), dir.join("body.patch"), out.clone()])
            .output()
            .unwrap();
        assert!(applied.status.success(), "detools apply_patch: {}", String::from_utf8_lossy(&applied.stderr));
        assert!(std::fs::read(&out).unwrap() == v120, "detools turned {from} into something other than 1.2.0");
        sizes.push((from, patch.len()));
    }
    lap("both patches offered, served and applied by detools");

    // A device on 0.9.0 (under minShare), and one claiming 1.0.0 with 1.1.0's image,
    // get the full image only; the delta route has nothing for the latter.
    for (from, sha, id) in [("0.9.0", sha256_hex(b"a 0.9.0 image"), "dev-90"), ("1.0.0", sha256_hex(&v110), "dev-2")] {
        let (status, answer) = check(port, &json!({"version": from, "sha256": sha, "id": id}));
        assert_eq!(
            (status, &answer["version"], &answer["sha256"]),
            (200, &json!("1.2.0"), &json!(target_sha)),
            "{answer:#}"
        );
        assert!(answer.get("delta").is_none(), "{from} with sha256 {sha}: {answer:#}");
    }
    let wrong = format!("/api/v1/channels/esp32/delta?from=1.0.0&sha256={}", sha256_hex(&v110));
    assert_eq!(get(port, &wrong).0, 404);
    drop(gateway);

    // The ConfigMap (the gateways' boot config, and the worker's) follows: written at most
    // every 30 s while the channel keeps changing (`delivery::WRITE_EVERY`), so last.
    let cm = w.wait("configmap/default-config", "deltas.patches rendered", |cm| {
        let deltas = &rendered_config(cm)["channels"][0]["deltas"];
        deltas["patches"].as_array().is_some_and(|p| p.len() == 2) && deltas["build"].is_null()
    });
    let patches = rendered_config(&cm)["channels"][0]["deltas"]["patches"].as_array().unwrap().clone();
    for (entry, patch) in entries.iter().zip(&patches) {
        assert_eq!(
            (&patch["digest"], &patch["baseSha256"], &patch["base"]["digest"], &patch["target"]["digest"]),
            (&entry["digest"], &entry["baseSha256"], &entry["fromDigest"], &json!(d120)),
            "{patch:#}"
        );
    }
    lap("the ConfigMap serves both patches and builds nothing");

    for (from, size) in &sizes {
        println!(
            "patch {from} -> 1.2.0: {size} bytes for a {full} byte image ({:.2} %)",
            100.0 * *size as f64 / full as f64
        );
    }
    println!("the worker's view: {worker_view}");
    lap("done");
}
