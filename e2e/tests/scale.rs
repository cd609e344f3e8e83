//! The operator at scale, reduced to run in CI: a few hundred channels, streams and
//! mirrors across two gateways, all Ready, with at most 3 writes per object and none
//! while idle. `e2e/scripts/scale.sh` runs the full figure (10,000 channels, 1,000
//! streams, 1,000 mirrors, 10 gateways) by hand with the release operator.
//!
//! Writes are counted as `e2e/scripts/scale.sh` counts them: write requests (create,
//! update, patch) to the test's namespace in the API server's audit log (`cluster.sh`
//! turns it on), so a write is counted even when it changed nothing. Readiness is read
//! by listing, once a second. (The first version followed `kubectl get --watch`: the API
//! server closes a watch whose reader falls behind, and on a busy machine kubectl did,
//! silently, so the count stopped and the test waited for objects it no longer saw.)

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::procs::wait_for;
use e2e::world::World;
use e2e::{cluster, kubectl, run};
use serde_json::Value;

const GATEWAYS: usize = 2;
const CHANNELS: usize = 200;
const STREAMS: usize = 40;
const MIRRORS: usize = 40;
const REPOSITORIES: usize = 10;
/// Every object re-checks its source this often, so the idle period sees checks.
const INTERVAL: &str = "5s";
const IDLE: Duration = Duration::from_secs(20);
const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";

/// The kinds whose writes are counted: the three attached kinds, the gateways and what
/// the operator applies for them (as the audit log names their resources).
const KINDS: [&str; 7] =
    ["firmwarechannels", "imagestreams", "artifactmirrors", "otagateways", "configmaps", "deployments", "services"];

/// The API server's audit log, read from where the test began.
struct Audit {
    path: String,
    from: u64,
}

/// One object's writes: creations (201, by create or server-side apply) and updates.
#[derive(Debug, Default, Clone, Copy)]
struct Writes {
    created: usize,
    updated: usize,
}

impl Audit {
    fn start() -> Audit {
        let path = std::env::var("UPDRAFT_AUDIT_LOG").expect("cluster.sh exports UPDRAFT_AUDIT_LOG");
        let from = std::fs::metadata(&path)
            .unwrap_or_else(|e| {
                panic!("{path}: {e} (a control plane started before the audit log: cluster.sh down, up)")
            })
            .len();
        Audit { path, from }
    }

    /// Successful write requests to `ns` since the start, per kind and object.
    fn writes(&self, ns: &str) -> BTreeMap<String, BTreeMap<String, Writes>> {
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(SeekFrom::Start(self.from)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let mut all: BTreeMap<String, BTreeMap<String, Writes>> =
            KINDS.iter().map(|k| (k.to_string(), BTreeMap::new())).collect();
        // The last line may be half written: it does not parse and is skipped.
        for event in text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
            let (object, code) = (&event["objectRef"], event["responseStatus"]["code"].as_u64().unwrap_or(0));
            let Some(kind) = object["resource"].as_str().and_then(|r| all.get_mut(r)) else { continue };
            if object["namespace"] != ns || !(200..300).contains(&code) {
                continue;
            }
            if !matches!(event["verb"].as_str(), Some("create" | "update" | "patch")) {
                continue;
            }
            let writes = kind.entry(object["name"].as_str().unwrap_or_default().to_owned()).or_default();
            if code == 201 {
                writes.created += 1;
            } else {
                writes.updated += 1;
            }
        }
        all
    }
}

/// Per kind: the objects whose `Ready` condition is `True`, and the gateways' `Ready`
/// messages.
fn readiness(ns: &str) -> (BTreeMap<String, usize>, Vec<String>) {
    let out =
        kubectl(&["get", "firmwarechannels,imagestreams,artifactmirrors,otagateways", "-n", ns, "-o", "json"], None);
    let list: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let mut ready = BTreeMap::new();
    let mut messages = Vec::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let condition = item["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or_default();
        let kind = item["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "OtaGateway" {
            messages.push(condition["message"].as_str().unwrap_or_default().to_owned());
        }
        *ready.entry(kind).or_insert(0) += usize::from(condition["status"] == "True");
    }
    (ready, messages)
}

/// The channels, streams and mirrors, spread over the gateways; their repositories are
/// under `prefix` in `registry`.
fn objects(registry: &str, prefix: &str) -> String {
    let head = |kind: &str, name: String, i: usize| {
        format!(
            "---\napiVersion: updraft.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: gw{}\n  interval: {INTERVAL}\n",
            i % GATEWAYS + 1
        )
    };
    let mut yaml = String::new();
    for c in 0..CHANNELS {
        yaml += &head("FirmwareChannel", format!("ch{c}"), c);
        yaml += &format!(
            "  source: {{registry: \"{registry}\", repository: {prefix}/fw{}, insecure: true}}\n",
            c % REPOSITORIES
        );
    }
    for s in 0..STREAMS {
        yaml += &head("ImageStream", format!("is{s}"), s);
        yaml +=
            &format!("  source: {{oci: {{registry: \"{registry}\", repository: {prefix}/images, insecure: true}}}}\n");
    }
    for m in 0..MIRRORS {
        let r = m % REPOSITORIES;
        yaml += &head("ArtifactMirror", format!("am{m}"), m);
        yaml +=
            &format!("  source: {{oci: {{registry: \"{registry}\", repository: {prefix}/fw{r}, insecure: true}}}}\n");
        yaml += &format!(
            "  destination: {{oci: {{registry: \"{registry}\", repository: {prefix}/mirror{r}, insecure: true}}}}\n"
        );
    }
    yaml
}

/// Pushes the same two firmware versions to each source repository and to its mirror's
/// destination (identical manifests: the mirrors are in sync, so steady), and one image
/// as `incus image export` writes it. Returns the repositories' prefix.
fn push_sources(w: &World) -> String {
    let file = w.dir.0.join("fw.bin");
    std::fs::write(&file, vec![7u8; 4096]).unwrap();
    let prefix = format!("e2e/{}/scale", w.ns);
    let created = "org.opencontainers.image.created=2026-01-01T00:00:00Z";
    for r in 0..REPOSITORIES {
        for repo in [format!("{prefix}/fw{r}"), format!("{prefix}/mirror{r}")] {
            for tag in ["1.0.0", "1.1.0"] {
                run(Command::new("oras").current_dir(&w.dir.0).args([
                    "push",
                    "--plain-http",
                    "--annotation",
                    created,
                    &format!("{}/{repo}:{tag}", cluster().registry),
                    &format!("fw.bin:{MEDIA_TYPE}"),
                ]));
            }
        }
    }
    let image = w.dir.0.join("image");
    std::fs::create_dir_all(&image).unwrap();
    std::fs::write(image.join("metadata.yaml"), e2e::images::METADATA_YAML).unwrap();
    run(Command::new("tar").args(["-cJf", "meta-1.tar.xz", "metadata.yaml"]).current_dir(&image));
    std::fs::write(image.join("rootfs-1.squashfs"), "a root file system").unwrap();
    run(Command::new("oras").current_dir(&image).args([
        "push",
        "--plain-http",
        &format!("{}/{prefix}/images:bookworm", cluster().registry),
        "meta-1.tar.xz",
        "rootfs-1.squashfs",
    ]));
    prefix
}

#[test]
fn hundreds_of_objects_become_ready_with_few_writes_and_none_while_idle() {
    let mut w = World::new("scale").ready().patience(Duration::from_secs(120));
    let prefix = push_sources(&w);
    let audit = Audit::start();

    let start = Instant::now();
    let gateways: String = (1..=GATEWAYS)
        .map(|g| {
            format!("---\napiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {{name: gw{g}}}\nspec: {{}}\n")
        })
        .collect();
    w.apply(&gateways);
    w.apply(&objects(&cluster().registry, &prefix));
    let created = start.elapsed();

    let per_gateway = CHANNELS / GATEWAYS;
    let ready = wait_for(w.patience, "every channel, stream and mirror Ready, every gateway rendered", || {
        let (ready, messages) = readiness(&w.ns);
        let count = |kind: &str| ready.get(kind).copied().unwrap_or(0);
        let rendered = messages.iter().filter(|m| m.contains(&format!("serving {per_gateway} channels"))).count();
        (count("FirmwareChannel") == CHANNELS
            && count("ImageStream") == STREAMS
            && count("ArtifactMirror") == MIRRORS
            && rendered == GATEWAYS)
            .then(|| start.elapsed())
    });
    std::thread::sleep(Duration::from_secs(3)); // the gateways' last render lands (debounced)
    let at_ready = audit.writes(&w.ns);
    let peak_kib = e2e::bomb::status_kib(w.operator.child.id(), "VmHWM:").unwrap_or(0);

    std::thread::sleep(IDLE);
    let after_idle = audit.writes(&w.ns);

    // A restart (an upgrade, a new leader): every object is checked again at once and
    // nothing that did not change is written. (A restarted operator once rendered each
    // gateway before its channel cache was filled and wrote `channels: []`: seen with
    // `scale.sh`'s 10,000 channels, not at this size, where the gateway controller's
    // 500 ms debounce outlasts listing 200 channels.)
    let _ = w.operator.child.kill();
    let _ = w.operator.child.wait();
    let (operator, admin) = e2e::procs::operator(&w.ns, &w.dir.0, "operator-restarted", &[]);
    (w.operator, w.admin) = (operator, admin);
    let w = w.ready();
    let wanted_checks = (CHANNELS + STREAMS + MIRRORS) as f64;
    wait_for(w.patience, "every source checked again after the restart", || {
        let metrics =
            Command::new("curl").arg("-s").arg(format!("http://127.0.0.1:{}/metrics", w.admin)).output().ok()?;
        let checks: f64 = String::from_utf8_lossy(&metrics.stdout)
            .lines()
            .filter(|l| l.starts_with("updraft_operator_registry_checks_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (checks >= wanted_checks).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3)); // a render the checks caused lands (debounced)
    let after_restart = audit.writes(&w.ns);

    let mut report = format!(
        "{CHANNELS} channels, {STREAMS} streams, {MIRRORS} mirrors on {GATEWAYS} gateways (debug build): created in \
         {created:.1?}, all Ready and rendered {ready:.1?} after the first; operator peak RSS {:.1} MiB\n",
        peak_kib as f64 / 1024.0
    );
    // Writes of every object of a kind, creations included.
    let total = |t: &BTreeMap<String, Writes>| t.values().map(|w| w.created + w.updated).sum::<usize>();
    let mut idle_writes = BTreeMap::new();
    for kind in KINDS {
        let objects = &at_ready[kind];
        let created: usize = objects.values().map(|w| w.created).sum();
        let updates: usize = objects.values().map(|w| w.updated).sum();
        let most = objects.values().map(|w| w.updated).max().unwrap_or(0);
        report += &format!(
            "  {kind:17} {:4} objects, {created:4} created, {updates:4} updates ({:.2} an object, at most {most})\n",
            objects.len(),
            updates as f64 / objects.len().max(1) as f64
        );
        let idle = total(&after_idle[kind]) - total(objects);
        if idle > 0 {
            idle_writes.insert(kind, idle);
        }
    }
    let mut restart_writes = BTreeMap::new();
    for kind in KINDS {
        let written = total(&after_restart[kind]) - total(&after_idle[kind]);
        if written > 0 {
            restart_writes.insert(kind, written);
        }
    }
    report += &format!("  writes in {IDLE:?} idle (a check every {INTERVAL} on every object): {idle_writes:?}\n");
    report += &format!("  writes after a restart, every source checked again: {restart_writes:?}");
    println!("{report}");

    let wanted = [("firmwarechannels", CHANNELS), ("imagestreams", STREAMS), ("artifactmirrors", MIRRORS)];
    for (kind, count) in wanted {
        assert_eq!(at_ready[kind].len(), count, "every {kind} written (created by the test)\n{report}");
        assert!(at_ready[kind].values().all(|w| w.created == 1), "{kind} created once each\n{report}");
    }
    for kind in KINDS {
        let over: Vec<_> = at_ready[kind].iter().filter(|(_, w)| w.updated > 3).collect();
        assert!(over.is_empty(), "{kind} written more than 3 times after its creation: {over:?}\n{report}");
    }
    assert!(idle_writes.is_empty(), "writes while idle\n{report}");
    assert!(restart_writes.is_empty(), "writes after a restart\n{report}");
    // The namespace goes with the test's objects (the World does not delete it).
    kubectl(&["delete", "namespace", &w.ns, "--wait=false"], None);
}
