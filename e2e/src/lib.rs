//! The harness of Updraft's end-to-end tests.
//!
//! [`cluster()`] starts the local control plane once per test process through
//! `e2e/scripts/cluster.sh up` (etcd, kube-apiserver 1.20, kube-controller-manager and
//! an OCI registry on loopback; idempotent, so parallel test processes share it) and
//! exports `KUBECONFIG`, `UPDRAFT_REGISTRY` and the PATH with the matching `kubectl`.

pub mod bomb;
pub mod conditions;
pub mod config_sync;
pub mod cosign;
pub mod faults;
pub mod fuzz;
pub mod helm;
pub mod hooks;
pub mod images;
pub mod pki;
pub mod plane;
pub mod procs;
pub mod prometheus;
pub mod relay;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// What `cluster.sh up` exported.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    /// `host:port` of the plain-HTTP OCI registry.
    pub registry: String,
    /// The registry's storage directory.
    pub registry_dir: PathBuf,
}

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e sits in the workspace").to_owned()
}

/// Runs `cluster.sh <command>` and applies the `export` lines it prints to this process.
pub fn cluster_script(command: &str) -> Vec<(String, String)> {
    let script = repo_root().join("e2e/scripts/cluster.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(command)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(out.status.success(), "`{} {command}` failed (its messages are above)", script.display());
    let exports: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.replace("$PATH", &std::env::var("PATH").unwrap_or_default());
            (k.to_owned(), v)
        })
        .collect();
    for (k, v) in &exports {
        // Tests in one process agree on these values; set once under the OnceLock.
        unsafe { std::env::set_var(k, v) };
    }
    exports
}

/// Starts (or reuses) the local control plane and registry.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let exports = cluster_script("up");
        cluster_script("tools");
        let get = |k: &str| {
            exports
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("cluster.sh printed no {k}"))
        };
        Cluster {
            kubeconfig: get("KUBECONFIG").into(),
            registry: get("UPDRAFT_REGISTRY"),
            registry_dir: get("UPDRAFT_REGISTRY_DIR").into(),
        }
    })
}

/// Runs `cmd`, panicking with its stdout and stderr when it fails; returns its stdout.
pub fn run_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    out.stdout
}

/// [`run_bytes`], its stdout as text.
pub fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_bytes(cmd)).into_owned()
}

/// `curl -s ARGS` as a device would: the HTTP status (0 when there was none) and the body.
pub fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out_file = std::env::temp_dir().join(format!("updraft-curl-{:08x}", rand::random::<u32>()));
    let out = Command::new("curl")
        .args(["-s", "-o", out_file.to_str().unwrap(), "-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    let body = std::fs::read(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    (status, body)
}

/// The result of a `kubectl` run.
#[derive(Debug)]
pub struct Kubectl {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Kubectl {
    fn from(o: Output) -> Self {
        Self {
            success: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    /// Panics with kubectl's messages unless it succeeded; returns stdout.
    pub fn ok(self) -> String {
        assert!(self.success, "kubectl failed:\n{}\n{}", self.stdout, self.stderr);
        self.stdout
    }
}

/// The gateway config a rendered ConfigMap (as JSON from `kubectl get -o json`) holds
/// (`{}` when it holds none yet).
pub fn rendered_config(config_map: &serde_json::Value) -> serde_json::Value {
    serde_yaml::from_str(config_map["data"]["gateway.yaml"].as_str().unwrap_or("{}")).unwrap()
}

/// Runs the cluster's `kubectl` (1.20, from the cache) with `args`, feeding `stdin`.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Kubectl {
    let cluster = cluster();
    let mut cmd = Command::new("kubectl");
    cmd.args(args).env("KUBECONFIG", &cluster.kubeconfig).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("kubectl runs (cluster.sh puts it on PATH)");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap().into()
}

/// Installs (server-side applies) Updraft's CRDs and waits until they are served;
/// once per test process.
pub fn install_crds() {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let crds = repo_root().join("crds/crds.yaml");
        kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crds.to_str().unwrap()], None).ok();
        // kubectl 1.20's wait fails at once on a CRD whose status has no conditions yet
        // (just created: "accessor error: <nil>"), so ask again until all are Established.
        let start = std::time::Instant::now();
        loop {
            let wait = kubectl(&["wait", "--for=condition=Established", "--timeout=30s", "crd", "--all"], None);
            if wait.success {
                break;
            }
            assert!(start.elapsed() < std::time::Duration::from_secs(60), "CRDs not Established: {}", wait.stderr);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
}

/// A fresh namespace named `prefix-<random>`, so tests never see each other's objects.
pub fn namespace(prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    kubectl(&["create", "namespace", &name], None).ok();
    name
}
