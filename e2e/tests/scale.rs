//! The operator at scale, reduced to run in CI: a few hundred channels, streams and
//! mirrors across two gateways, all Ready, with at most 3 writes per object and none
//! while idle. `e2e/scripts/scale.sh` runs the full figure (10,000 channels, 1,000
//! streams, 1,000 mirrors, 10 gateways) by hand with the release operator.
//!
//! Writes are counted as `e2e/scripts/scale.sh` counts them: every write to a watched
//! object is one watch event (ADDED for a creation, MODIFIED after), read from
//! `kubectl get --watch --output-watch-events`, so counting never polls the API server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
/// the operator applies for them.
const KINDS: [&str; 7] =
    ["firmwarechannels", "imagestreams", "artifactmirrors", "otagateways", "configmaps", "deployments", "services"];

/// `kubectl get KIND --watch --output-watch-events -o json` into a file, stopped on drop.
struct Watch {
    child: Child,
    file: PathBuf,
}

impl Watch {
    fn start(ns: &str, kind: &str, dir: &Path) -> Watch {
        let file = dir.join(format!("watch-{kind}.json"));
        let child = Command::new("kubectl")
            .args(["get", kind, "-n", ns, "--watch", "--output-watch-events", "-o", "json"])
            .env("KUBECONFIG", &cluster().kubeconfig)
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl runs");
        Watch { child, file }
    }

    /// Per object: (creations, updates, the last Ready condition's status and message).
    fn tally(&self) -> BTreeMap<String, Tally> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let mut objects: BTreeMap<String, Tally> = BTreeMap::new();
        // The last document may be half written: stop at the first that does not parse.
        for event in serde_json::Deserializer::from_str(&text).into_iter::<Value>().map_while(Result::ok) {
            let Some(name) = event["object"]["metadata"]["name"].as_str() else { continue };
            let tally = objects.entry(name.to_owned()).or_default();
            match event["type"].as_str() {
                Some("ADDED") => tally.added += 1,
                Some("MODIFIED") => tally.modified += 1,
                _ => continue,
            }
            let ready = event["object"]["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .cloned()
                .unwrap_or(Value::Null);
            tally.ready = ready["status"] == "True";
            tally.message = ready["message"].as_str().unwrap_or_default().to_owned();
        }
        objects
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Default, Clone)]
struct Tally {
    added: usize,
    modified: usize,
    ready: bool,
    message: String,
}

/// Writes (creations and updates) of every object of every kind so far.
fn writes(watches: &[Watch]) -> BTreeMap<&'static str, BTreeMap<String, Tally>> {
    KINDS.iter().zip(watches).map(|(kind, w)| (*kind, w.tally())).collect()
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

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn hundreds_of_objects_become_ready_with_few_writes_and_none_while_idle() {
    let w = World::new("scale").ready().patience(Duration::from_secs(120));
    let prefix = push_sources(&w);
    let watches: Vec<Watch> = KINDS.iter().map(|k| Watch::start(&w.ns, k, &w.dir.0)).collect();
    std::thread::sleep(Duration::from_secs(1)); // the watches are established

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
        let all = writes(&watches);
        let count = |kind: &str| all[kind].values().filter(|t| t.ready).count();
        let rendered = all["otagateways"]
            .values()
            .filter(|t| t.message.contains(&format!("serving {per_gateway} channels")))
            .count();
        (count("firmwarechannels") == CHANNELS
            && count("imagestreams") == STREAMS
            && count("artifactmirrors") == MIRRORS
            && rendered == GATEWAYS)
            .then(|| start.elapsed())
    });
    std::thread::sleep(Duration::from_secs(3)); // the gateways' last render lands (debounced)
    let at_ready = writes(&watches);
    let peak_kib = rss_kib(w.operator.child.id(), "VmHWM:");

    std::thread::sleep(IDLE);
    let after_idle = writes(&watches);

    let mut report = format!(
        "{CHANNELS} channels, {STREAMS} streams, {MIRRORS} mirrors on {GATEWAYS} gateways (debug build): created in \
         {created:.1?}, all Ready and rendered {ready:.1?} after the first; operator peak RSS {:.1} MiB\n",
        peak_kib as f64 / 1024.0
    );
    let mut idle_writes = BTreeMap::new();
    for kind in KINDS {
        let objects = &at_ready[kind];
        let updates: usize = objects.values().map(|t| t.modified).sum();
        let most = objects.values().map(|t| t.modified).max().unwrap_or(0);
        report += &format!(
            "  {kind:17} {:4} objects, {updates:4} updates ({:.2} an object, at most {most})\n",
            objects.len(),
            updates as f64 / objects.len().max(1) as f64
        );
        let total = |t: &BTreeMap<String, Tally>| t.values().map(|t| t.added + t.modified).sum::<usize>();
        let idle = total(&after_idle[kind]) - total(objects);
        if idle > 0 {
            idle_writes.insert(kind, idle);
        }
    }
    report += &format!("  writes in {IDLE:?} idle (a check every {INTERVAL} on every object): {idle_writes:?}");
    println!("{report}");

    for kind in ["firmwarechannels", "imagestreams", "artifactmirrors"] {
        let over: Vec<_> = at_ready[kind].iter().filter(|(_, t)| t.modified > 3).collect();
        assert!(over.is_empty(), "{kind} written more than 3 times: {over:?}\n{report}");
    }
    assert!(idle_writes.is_empty(), "writes while idle\n{report}");
    // The namespace goes with the test's objects (the World does not delete it).
    kubectl(&["delete", "namespace", &w.ns, "--wait=false"], None);
}
