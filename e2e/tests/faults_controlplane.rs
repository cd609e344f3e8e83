//! The control plane gone: the operator, kube-apiserver, etcd and
//! kube-controller-manager stopped while devices poll and download from a gateway
//! running from the config the operator rendered. No device request may fail over the
//! window (CI: 30 s; by hand `UPDRAFT_OUTAGE_SECS=600`), and when the control plane and
//! the operator return, the operator makes no write storm: the objects it owns change
//! no more often in the 10 s after its return than in 10 s of normal running.
//!
//! This test runs its own control plane (`cluster.sh up` with a private state
//! directory and ports, set before the harness first calls it), so stopping it never
//! disturbs other tests on the shared one; a drop guard stops it and removes its state
//! however the test ends. Figures printed as `FIGURE …` (`-- --nocapture`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::procs::{binary, free_port, operator, oras_push, wait_for, Proc, TempDir};
use e2e::{cluster, cluster_script, install_crds, kubectl, namespace, repo_root};
use serde_json::Value;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const WAIT: Duration = Duration::from_secs(90);
const GATEWAY: &str = "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n";
/// What the operator owns and writes, in the test's namespace.
const OWNED: &str = "firmwarechannels,otagateways,configmaps,deployments,services";

/// A port P that is free with P+1 and P+10 (cluster.sh derives the controller-manager's
/// port and etcd's peer port from it), taken below the kernel's ephemeral range so that
/// no outgoing connection grabs one of them before the daemons bind.
fn port_with_neighbours() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let p = 20_000 + rand::random::<u16>() % 12_000;
        if [p, p + 1, p + 10].into_iter().all(free) {
            return p;
        }
    }
}

/// The private control plane: stopped and its state removed when dropped.
struct PrivatePlane {
    state: PathBuf,
}

impl PrivatePlane {
    /// Points the harness at a private state directory and ports; must run before
    /// anything calls `e2e::cluster()`.
    fn configure() -> PrivatePlane {
        let state = std::env::temp_dir().join(format!("updraft-private-plane-{}", std::process::id()));
        std::env::set_var("UPDRAFT_STATE", &state);
        std::env::set_var("UPDRAFT_ETCD_PORT", port_with_neighbours().to_string());
        std::env::set_var("UPDRAFT_APISERVER_PORT", port_with_neighbours().to_string());
        std::env::set_var("UPDRAFT_REGISTRY_PORT", port_with_neighbours().to_string());
        // The controller-manager's insecure port (10252) is taken by the shared one.
        std::env::set_var("UPDRAFT_KCM_INSECURE_PORT", "0");
        PrivatePlane { state }
    }

    /// Stops the control plane's processes (the registry stays: the gateway's cache
    /// is what matters here, and the operator needs it on return).
    fn stop_control_plane(&self) {
        for name in ["kube-controller-manager", "kube-apiserver", "etcd"] {
            let pid = std::fs::read_to_string(self.state.join(format!("{name}.pid"))).unwrap();
            let pid = pid.trim();
            Command::new("kill").arg(pid).status().unwrap();
            let gone = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(100));
                !PathBuf::from(format!("/proc/{pid}")).exists()
            });
            if !gone {
                Command::new("kill").args(["-9", pid]).status().unwrap();
            }
        }
    }
}

impl Drop for PrivatePlane {
    fn drop(&mut self) {
        let script = repo_root().join("e2e/scripts/cluster.sh");
        let _ = Command::new("bash").arg(script).arg("down").status();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl").args(["-s", "-o", "-", "-w", "\n%{http_code}"]).args(args).output().unwrap();
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&body[split..]).trim().parse().unwrap_or(0);
    body.truncate(split);
    (status, body)
}

/// resourceVersion of every object the operator owns in `ns`.
fn versions(ns: &str) -> BTreeMap<String, String> {
    let out = kubectl(&["get", "-n", ns, OWNED, "-o", "json"], None).ok();
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let key = format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap());
            (key, o["metadata"]["resourceVersion"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// How many object changes `ns` sees over `window`, sampled every 500 ms.
fn changes_over(ns: &str, window: Duration) -> u64 {
    let mut last = versions(ns);
    let mut changes = 0;
    let end = Instant::now() + window;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        let now = versions(ns);
        changes += now.iter().filter(|(k, v)| last.get(*k) != Some(*v)).count() as u64;
        last = now;
    }
    changes
}

fn operator_ready(admin: u16) {
    wait_for(WAIT, "operator /readyz", || {
        (curl(&[&format!("http://127.0.0.1:{admin}/readyz")]).0 == 200).then_some(())
    });
}

#[test]
fn control_plane_gone_devices_unaffected_and_no_write_storm_on_return() {
    let outage: u64 = std::env::var("UPDRAFT_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let plane = PrivatePlane::configure();
    let started = Instant::now();
    cluster();
    let plane_up = started.elapsed();
    install_crds();
    let ns = namespace("cp-gone");
    let dir = TempDir::new("cp-gone");
    let (op, admin) = operator(&ns, &dir.0, "operator", &[]);
    operator_ready(admin);

    let firmware: Vec<u8> = (0..2_000_000u32).map(|i| i.wrapping_mul(2654435761) as u8).collect();
    let file = dir.0.join("fw.bin");
    std::fs::write(&file, &firmware).unwrap();
    let repository = format!("e2e/{ns}/firmware");
    oras_push(&repository, "1.0.0", &file, MEDIA_TYPE);
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(GATEWAY)).ok();
    let channel = format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: dev}}\nspec:\n  device: dev\n  \
         interval: 2s\n  source: {{registry: \"{}\", repository: \"{repository}\", insecure: true}}\n",
        cluster().registry
    );
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(&channel)).ok();
    let rendered = wait_for(WAIT, "the channel rendered into the gateway config", || {
        let out = kubectl(&["get", "-n", &ns, "configmap/default-config", "-o", "json"], None);
        let cm: Value = serde_json::from_str(&out.stdout).ok()?;
        let yaml = cm["data"]["gateway.yaml"].as_str()?.to_owned();
        yaml.contains("1.0.0").then_some(yaml)
    });

    // The gateway binary from the rendered config (no kubelet: listeners and cache moved).
    let (port, gw_admin) = (free_port(), free_port());
    let mut config: Value = serde_yaml::from_str(&rendered).unwrap();
    config["listen"] = format!("127.0.0.1:{port}").into();
    config["adminListen"] = format!("127.0.0.1:{gw_admin}").into();
    config["cache"]["dir"] = dir.0.join("cache").to_str().unwrap().into();
    let config_path = dir.0.join("gateway.yaml");
    std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config_path.to_str().unwrap()]);
    let _gateway = Proc::spawn(cmd, &dir.0.join("gateway.log"));
    let base = format!("http://127.0.0.1:{port}");
    wait_for(WAIT, "the gateway serves the firmware", || {
        (curl(&[&format!("{base}/firmware?device=dev")]).0 == 200).then_some(())
    });

    // Baseline: how often the operator's objects change in normal running.
    let baseline = changes_over(&ns, Duration::from_secs(10));

    // Devices: /version pollers and back-to-back downloads, byte-checked.
    let stop = Arc::new(AtomicBool::new(false));
    let (requests, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())));
    let want_version = format!("1.0.0\n{}\n{}", crc32fast::hash(&firmware), firmware.len());
    let firmware = Arc::new(firmware);
    let devices: Vec<_> = (0..3)
        .map(|i| {
            let (stop, requests, failures, base, want, firmware) = (
                stop.clone(),
                requests.clone(),
                failures.clone(),
                base.clone(),
                want_version.clone(),
                firmware.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let path = if i == 0 { "/firmware?device=dev" } else { "/version?device=dev" };
                    let (status, body) = curl(&[&format!("{base}{path}")]);
                    let ok = if i == 0 { body == *firmware } else { body == want.as_bytes() };
                    requests.fetch_add(1, Ordering::Relaxed);
                    if status != 200 || !ok {
                        failures.lock().unwrap().push(format!("{path}: {status}"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();

    // The outage: operator and control plane gone.
    std::thread::sleep(Duration::from_secs(2));
    drop(op);
    plane.stop_control_plane();
    let down_at = Instant::now();
    let down_requests = requests.load(Ordering::Relaxed);
    assert!(!kubectl(&["get", "ns", &ns], None).success, "the API server still answers");
    std::thread::sleep(Duration::from_secs(outage));
    let during = requests.load(Ordering::Relaxed) - down_requests;
    let failed_during = failures.lock().unwrap().len();

    // Return: control plane up again, a new operator.
    let returned = Instant::now();
    let outage_took = returned - down_at;
    cluster_script("up");
    let plane_back = returned.elapsed();
    let (op, admin) = operator(&ns, &dir.0, "operator-2", &[]);
    operator_ready(admin);
    let after = changes_over(&ns, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for d in devices {
        d.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let total = requests.load(Ordering::Relaxed);
    let reconciles = {
        let (_, body) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]);
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with("updraft_operator_reconciles_total"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    println!(
        "FIGURE control-plane-gone: private control plane up in {plane_up:?}; outage of {:?} (operator, \
         kube-apiserver, etcd, controller-manager stopped): {during} device requests (/version and 2 MB downloads) \
         during it, {failed_during} failed; {total} in all, {} failed; control plane back in {plane_back:?}; object \
         changes in 10 s: {baseline} in normal running, {after} after the operator's return; operator-2 {reconciles:?}",
        outage_took,
        failures.len()
    );
    assert!(failures.is_empty(), "{} device requests failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(during > 10, "no device traffic during the outage: the test proved nothing");
    assert!(after <= baseline + 5, "write storm on return: {after} object changes in 10 s (normal: {baseline})");
    drop(op);
}
