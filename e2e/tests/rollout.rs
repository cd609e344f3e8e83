//! Rollout steps that advance and pause by themselves, end to end: the real operator
//! and gateway binaries, the shared registry and API server, and 40 simulated devices
//! that poll the OtaFlux routes with their unique id and the version they run
//! (`/version?device=D&id=X&current=V`, then `/firmware?...` when offered another), as
//! the gateway's device census counts them. The operator reads that census from the
//! gateway's admin port (`UPDRAFT_CENSUS_REPLICAS=<ns>/default=host:port`, every 2 s).
//!
//! One channel, steps `[25, 50, 100]`, `dwell: 5s`, `timeout: 30s`, `minDevices: 2`:
//!
//! - (a) 1.0.0 is the first release: 100 % at once. 1.1.0, which every device runs after
//!   downloading it, advances through 25, 50 and 100 % to complete, with the figures
//!   in status.
//! - (b) 1.2.0: the devices first offered it at step 2 fail every other one (download,
//!   keep reporting 1.1.0). The rollout pauses at step 2 (50 %), `RolloutPaused=True`
//!   with the figures, a Warning event and one `rollout.paused` webhook, and stays
//!   exactly so over several census intervals (no flapping).
//! - (c) an edit of the spec (`successThreshold: 30`) judges step 2 again: it advances,
//!   and the rollout completes.
//!
//! A real Prometheus scrapes the operator and evaluates the chart's rules (`for: 5s`):
//! UpdraftRolloutPaused fires for the channel while it is paused, and only then.
//!
//! Timings are printed. No device id is printed or written anywhere.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::conditions::condition;
use e2e::config_sync::ConfigSync;
use e2e::hooks::receiver;
use e2e::procs::{binary, free_port, operator_with_env, oras_push, wait_for, Proc, TempDir};
use e2e::prometheus::{rules_with_for, tools, Prometheus};
use e2e::{cluster, curl, install_crds, kubectl, namespace};
use serde_json::Value;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const DEVICE: &str = "steps-dev";
const DEVICES: usize = 40;
/// At most this many devices fail an update (scenario b and c).
const FAILERS: usize = 10;
const WAIT: Duration = Duration::from_secs(60);

fn firmware(tag: &str, size: usize) -> Vec<u8> {
    (0..size).map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(tag.len() as u32 + 3) as u8 ^ 0x5a).collect()
}

/// One simulated device.
struct Device {
    id: String,
    /// The version it runs (and reports as `current=`).
    current: String,
    /// Versions it downloaded and failed to run: it keeps reporting `current`.
    failed: BTreeSet<String>,
}

/// What the devices do with a version they are offered, and what they did.
#[derive(Default)]
struct Fleet {
    /// From this version on, devices first offered a version while the rollout is
    /// past step 1 fail every other one (at most [`FAILERS`]).
    failing_from: Option<String>,
    failures: usize,
    /// Devices first offered a version past step 1, so far (the alternation).
    late: usize,
    /// (version, step read after the round) of every failed update.
    failed_at: Vec<(String, i64)>,
    downloads: usize,
}

/// The devices, polling in rounds on their own thread until dropped.
struct Devices {
    fleet: Arc<Mutex<Fleet>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Devices {
    fn start(base: String, ns: String) -> Devices {
        let fleet = Arc::new(Mutex::new(Fleet::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, flag) = (fleet.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut devices: Vec<Device> = (0..DEVICES)
                .map(|_| Device {
                    id: format!("{:016x}", rand::random::<u64>()),
                    current: "1.0.0".into(),
                    failed: BTreeSet::new(),
                })
                .collect();
            while !flag.load(Ordering::Relaxed) {
                // Who was offered a new version in this round, and the download done.
                let mut offered = Vec::new();
                for (i, d) in devices.iter().enumerate() {
                    let query = format!("device={DEVICE}&id={}&current={}", d.id, d.current);
                    let (status, body) = curl(&[&format!("{base}/version?{query}")]);
                    let body = String::from_utf8_lossy(&body);
                    let Some(version) = body.lines().next().filter(|_| status == 200) else { continue };
                    if version == d.current || d.failed.contains(version) {
                        continue;
                    }
                    let (status, bytes) = curl(&[&format!("{base}/firmware?{query}")]);
                    if status == 200 && !bytes.is_empty() {
                        offered.push((i, version.to_owned()));
                    }
                }
                // The step as status has it after the round: a device offered a version
                // because the share rose to step 2 finds status at step 2 already
                // (status is written before the gateway's configuration is rendered).
                let step = kubectl(&["get", "-n", &ns, "fwc/steps", "-o", "jsonpath={.status.rollout.step}"], None)
                    .stdout
                    .trim()
                    .parse::<i64>()
                    .unwrap_or(0);
                let mut fleet = shared.lock().unwrap();
                for (i, version) in offered {
                    fleet.downloads += 1;
                    let failing = fleet.failing_from.as_deref().is_some_and(|from| version.as_str() >= from);
                    let fails = failing && step >= 2 && {
                        fleet.late += 1;
                        fleet.late % 2 == 1 && fleet.failures < FAILERS
                    };
                    if fails {
                        fleet.failures += 1;
                        fleet.failed_at.push((version.clone(), step));
                        devices[i].failed.insert(version);
                    } else {
                        devices[i].current = version;
                    }
                }
                drop(fleet);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Devices { fleet, stop, thread: Some(thread) }
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The events about the channel, oldest first: (reason, type, note, how often). kube's
/// recorder publishes an event of the same reason again as a series of the first one
/// (`series.count`, the first note), so occurrences are counted from the series.
fn events(ns: &str) -> Vec<(String, String, String, i64)> {
    let out = kubectl(&["get", "events.v1.events.k8s.io", "-n", ns, "-o", "json"], None);
    let list: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    let mut events: Vec<(String, (String, String, String, i64))> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == "FirmwareChannel" && e["regarding"]["name"] == "steps")
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            let count = e["series"]["count"].as_i64().unwrap_or(1);
            (field("eventTime"), (field("reason"), field("type"), field("note"), count))
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, e)| e).collect()
}

/// How often an event of `reason` was published about the channel.
fn occurrences(ns: &str, reason: &str) -> i64 {
    events(ns).iter().filter(|e| e.0 == reason).map(|e| e.3).sum()
}

/// The rollout as status shows it: (version, step, percentage, paused, complete).
fn stage(v: &Value) -> (String, i64, i64, bool, bool) {
    let r = &v["status"]["rollout"];
    (
        r["version"].as_str().unwrap_or_default().to_owned(),
        r["step"].as_i64().unwrap_or(0),
        r["percentage"].as_i64().unwrap_or(-1),
        r["paused"].as_bool().unwrap_or(false),
        r["complete"].as_bool().unwrap_or(false),
    )
}

#[test]
fn rollout_steps_advance_pause_without_flapping_and_resume_on_an_edit() {
    install_crds();
    let ns = namespace("rollout");
    let dir = TempDir::new("rollout");
    let repository = format!("e2e/{ns}/firmware");
    let push = |tag: &str| {
        let file = dir.0.join(format!("fw-{tag}.bin"));
        std::fs::write(&file, firmware(tag, 4096 + tag.len())).unwrap();
        oras_push(&repository, tag, &file, MEDIA_TYPE);
    };
    push("1.0.0");
    let (hook_port, hooks) = receiver();
    let (port, gw_admin) = (free_port(), free_port());
    let replicas = format!("{ns}/default=127.0.0.1:{gw_admin}");
    let env = [("UPDRAFT_CENSUS_REPLICAS", replicas.as_str()), ("UPDRAFT_CENSUS_INTERVAL", "2s")];
    let endpoint = e2e::procs::config_endpoint();
    let endpoint: Vec<&str> = endpoint.iter().map(String::as_str).collect();
    let (operator, admin) = operator_with_env(&ns, &dir.0, "operator", &endpoint, &env);
    tools();
    let prom_dir = TempDir::new("rollout-prometheus");
    let prom = Prometheus::start(&prom_dir.0, &[("operator", format!("127.0.0.1:{admin}"))], &rules_with_for("5s"));
    let paused_alert = [("namespace", ns.as_str()), ("channel", "steps")];
    let apply = |yaml: &str| kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(yaml)).ok();
    let get = || -> Value {
        let out = kubectl(&["get", "-n", &ns, "fwc/steps", "-o", "json"], None);
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
    };
    apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {{name: default}}\nspec:\n  notifications:\n    webhooks: [{{url: \"http://127.0.0.1:{hook_port}/hook\"}}]\n"
    ));
    let channel = |threshold: i32| {
        format!(
            "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: steps}}\nspec:\n  device: {DEVICE}\n  interval: 2s\n  source: {{registry: \"{}\", repository: \"{repository}\", insecure: true}}\n  rollout:\n    steps: [25, 50, 100]\n    dwell: 5s\n    timeout: 30s\n    successThreshold: {threshold}\n    minDevices: 2\n",
            cluster().registry
        )
    };
    apply(&channel(95));
    let wait_status = |timeout: Duration, what: &str, pred: &dyn Fn(&Value) -> bool| -> Value {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(timeout, what, || {
                let v = get();
                pred(&v).then_some(v)
            })
        }));
        found.unwrap_or_else(|_| panic!("{what}; last: {:#}\noperator log:\n{}", get(), operator.output()))
    };

    // A first release reaches every device at once.
    let v = wait_status(WAIT, "1.0.0 at 100 %", &|v| stage(v) == ("1.0.0".into(), 3, 100, false, true));
    let paused = condition(&v, "RolloutPaused").expect("RolloutPaused with steps");
    assert_eq!((paused["status"].as_str(), paused["reason"].as_str()), (Some("False"), Some("Complete")), "{v:#}");

    let config_path = dir.0.join("gateway.yaml");
    let _sync = ConfigSync::start(&ns, &config_path, port, gw_admin, &dir.0.join("cache"));
    wait_for(WAIT, "the rendered gateway config", || config_path.exists().then_some(()));
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config_path.to_str().unwrap()]);
    let gateway = Proc::spawn(cmd, &dir.0.join("gateway.log"));
    let base = format!("http://127.0.0.1:{port}");
    let served = || String::from_utf8(curl(&[&format!("{base}/version?device={DEVICE}")]).1).unwrap_or_default();
    let found = std::panic::catch_unwind(|| {
        wait_for(WAIT, "the gateway serves 1.0.0", || served().starts_with("1.0.0\n").then_some(()))
    });
    assert!(found.is_ok(), "gateway log:\n{}", gateway.output());
    let devices = Devices::start(base.clone(), ns.clone());

    // Follows the rollout of `version` until `done`, printing each change with its time:
    // (seconds, share, paused) of each stage seen.
    let follow = |version: &str, timeout: Duration, done: &dyn Fn(&Value) -> bool| -> (Vec<(f64, i64, bool)>, Value) {
        let start = Instant::now();
        let seen: RefCell<Vec<(f64, i64, bool)>> = RefCell::new(Vec::new());
        let v = wait_status(timeout, &format!("the rollout of {version}"), &|v| {
            let (ver, _, percentage, paused, _) = stage(v);
            let mut seen = seen.borrow_mut();
            if ver == version && seen.last().map(|s| (s.1, s.2)) != Some((percentage, paused)) {
                let (t, r) = (start.elapsed().as_secs_f64(), &v["status"]["rollout"]);
                println!(
                    "{version}: {percentage:>3} %{} at {t:5.1} s (downloaded {}, running {}, adoption {})",
                    if paused { " paused" } else { "" },
                    r["downloaded"],
                    r["running"],
                    r["adoption"]
                );
                seen.push((t, percentage, paused));
            }
            done(v)
        });
        (seen.into_inner(), v)
    };

    // (a) Every device runs 1.1.0 after downloading it: 25, 50, 100 %, complete.
    push("1.1.0");
    let (stages, v) = follow("1.1.0", Duration::from_secs(120), &|v| stage(v) == ("1.1.0".into(), 3, 100, false, true));
    let shares: Vec<i64> = stages.iter().map(|s| s.1).collect();
    assert_eq!(shares, [25, 50, 100], "each step in turn, none skipped, none paused: {stages:?}");
    let r = &v["status"]["rollout"];
    let (downloaded, running) = (r["downloaded"].as_i64().unwrap_or(0), r["running"].as_i64().unwrap_or(0));
    assert!(downloaded >= 2 && running * 100 >= 95 * downloaded, "the last step's figures: {r}");
    let census = &v["status"]["devices"];
    let total = census["total"].as_i64().unwrap_or(0);
    assert!((39..=41).contains(&total), "status.devices counts the {DEVICES} devices (±1): {census}");
    let by_version = census["byVersion"].as_array().cloned().unwrap_or_default();
    let newest = by_version.iter().find(|b| b["version"] == "1.1.0").unwrap_or_else(|| panic!("{census}"));
    assert!(newest["running"].as_i64().unwrap_or(0) >= 39, "every device runs 1.1.0: {census}");
    let counts: Vec<i64> = ["RolloutStarted", "RolloutAdvanced", "RolloutComplete", "RolloutPaused"]
        .iter()
        .map(|reason| occurrences(&ns, reason))
        .collect();
    // Complete twice: 1.0.0 (a first release) and 1.1.0.
    assert_eq!(counts, [1, 2, 2, 0], "Started, Advanced, Complete, Paused: {:?}", events(&ns));

    wait_for(WAIT, "the operator scraped", || (prom.query("up == 1").len() == 1).then_some(()));
    assert_eq!(prom.alert("UpdraftRolloutPaused", &paused_alert), None, "no alert for a rollout that completed");

    // (b) Half the devices first offered 1.2.0 at step 2 fail: it pauses at step 2.
    devices.fleet.lock().unwrap().failing_from = Some("1.2.0".into());
    push("1.2.0");
    let (stages, v) = follow("1.2.0", Duration::from_secs(120), &|v| stage(v).3);
    assert_eq!(stage(&v), ("1.2.0".into(), 2, 50, true, false), "paused at step 2: {stages:?}\n{v:#}");
    let failed_at: Vec<(String, i64)> = devices.fleet.lock().unwrap().failed_at.clone();
    assert!(!failed_at.is_empty(), "devices failed");
    assert!(failed_at.iter().all(|(version, step)| version == "1.2.0" && *step == 2), "{failed_at:?}");
    let r = v["status"]["rollout"].clone();
    let (downloaded, running) = (r["downloaded"].as_i64().unwrap_or(0), r["running"].as_i64().unwrap_or(0));
    assert!(downloaded >= 2 && running < downloaded, "the step's figures: {r}");
    let paused = condition(&v, "RolloutPaused").cloned().expect("RolloutPaused");
    assert_eq!((paused["status"].as_str(), paused["reason"].as_str()), (Some("True"), Some("BelowThreshold")));
    let message = paused["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("paused at step 2 (50 %): ")
            && message.contains(&format!("{running} of {downloaded} devices that downloaded 1.2.0"))
            && message.contains("< 95 %)"),
        "{message}"
    );
    let hook = wait_for(Duration::from_secs(20), "the rollout.paused webhook", || {
        let hooks = hooks.lock().unwrap();
        hooks.iter().find(|h| h.event() == Some("rollout.paused")).map(|h| h.json())
    });
    assert_eq!((hook["version"].as_str(), hook["reason"].as_str()), (Some("1.2.0"), Some("BelowThreshold")), "{hook}");
    assert_eq!((hook["rollout"]["step"].as_i64(), hook["rollout"]["percentage"].as_i64()), (Some(2), Some(50)));
    assert_eq!(hook["rollout"]["downloaded"].as_i64(), Some(downloaded), "{hook}");
    assert_eq!((hook["namespace"].as_str(), hook["channel"].as_str()), (Some(ns.as_str()), Some("steps")));
    let warning = events(&ns).into_iter().find(|e| e.0 == "RolloutPaused").expect("a RolloutPaused event");
    assert_eq!(warning.1, "Warning");

    // No flapping: over six census intervals nothing about the rollout moves.
    let before = (v["status"]["rollout"].clone(), paused.clone());
    let still = Instant::now();
    while still.elapsed() < Duration::from_secs(12) {
        let now = get();
        let current = (now["status"]["rollout"].clone(), condition(&now, "RolloutPaused").cloned().unwrap_or_default());
        assert_eq!(current, before, "the pause moved after {:?}", still.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    let pauses = occurrences(&ns, "RolloutPaused");
    let posts = hooks.lock().unwrap().iter().filter(|h| h.event() == Some("rollout.paused")).count();
    assert_eq!((pauses, posts), (1, 1), "one event and one webhook for one pause");
    println!(
        "1.2.0: held at 50 % for 12 s over 6 census intervals; {} downloads in all",
        devices.fleet.lock().unwrap().downloads
    );
    // The alert people act on: the pause has lasted longer than the rule's `for`.
    let alert = prom.wait_firing(Duration::from_secs(20), "UpdraftRolloutPaused", &paused_alert);
    assert_eq!(alert["labels"]["severity"], "warning", "{alert:#}");

    // (c) A lower threshold in the spec: step 2 is judged again and passes; it completes.
    apply(&channel(30));
    let (stages, v) = follow("1.2.0", Duration::from_secs(90), &|v| stage(v) == ("1.2.0".into(), 3, 100, false, true));
    // The first stage seen may still be the pause (the edit is not judged yet); none after.
    assert!(stages.iter().skip(1).all(|s| !s.2), "no pause after the edit: {stages:?}");
    assert!(stages.iter().any(|s| (s.1, s.2) == (100, false)), "{stages:?}");
    let paused = condition(&v, "RolloutPaused").expect("RolloutPaused");
    assert_eq!((paused["status"].as_str(), paused["reason"].as_str()), (Some("False"), Some("Complete")));
    assert_eq!(occurrences(&ns, "RolloutComplete"), 3, "1.0.0, 1.1.0, 1.2.0: {:?}", events(&ns));
    assert_eq!(occurrences(&ns, "RolloutPaused"), 1, "{:?}", events(&ns));
    prom.wait_resolved(Duration::from_secs(20), "UpdraftRolloutPaused", &paused_alert);
    let failed = devices.fleet.lock().unwrap().failures;
    assert!(failed <= FAILERS, "{failed}");
    let done = stages.last().map_or(0.0, |s| s.0);
    println!("1.2.0: resumed by the edit and complete {done:.1} s after it");
}
