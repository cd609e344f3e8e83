//! The project's binaries and helper processes, started by tests and stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{cluster, repo_root};

/// Path of a workspace binary, built once per test process: the debug build, or the
/// release build with `UPDRAFT_E2E_RELEASE=1` (for the long runs by hand, whose figures
/// should not be a debug build's).
pub fn binary(bin: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let release = std::env::var("UPDRAFT_E2E_RELEASE").is_ok_and(|v| v == "1");
    BUILT.get_or_init(|| {
        let mut args = vec!["build", "--bins", "-p", "updraft-operator", "-p", "ota-gateway"];
        if release {
            args.push("--release");
        }
        let status = Command::new(env!("CARGO")).args(args).current_dir(repo_root()).status().expect("cargo runs");
        assert!(status.success(), "building the operator and gateway binaries failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    target.join(if release { "release" } else { "debug" }).join(bin)
}

/// A child process killed (and reaped) when dropped; its output goes to a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let file = std::fs::File::create(log).unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file).stdin(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc { child, log: log.to_owned() }
    }

    /// The process's output so far, for failure messages.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    /// Kills the process; when a test is failing, prints the end of its log first, so
    /// a timeout says what the process was doing (its log is in a directory the test
    /// removes).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let output = self.output();
            let lines: Vec<&str> = output.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- the last {} lines of {} ---\n{tail}\n---", lines.len().min(40), self.log.display());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A temporary directory for one test, under the target dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("updraft-{prefix}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The operator binary against the local cluster, watching one namespace; `extra`
/// adds flags. Returns the process and its admin port.
pub fn operator(namespace: &str, dir: &Path, name: &str, extra: &[&str]) -> (Proc, u16) {
    operator_with_env(namespace, dir, name, extra, &[])
}

/// [`operator`] with environment variables besides (e.g. `UPDRAFT_CENSUS_REPLICAS`, the
/// gateway replicas a test runs as local processes).
pub fn operator_with_env(namespace: &str, dir: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> (Proc, u16) {
    let cluster = cluster();
    let admin = free_port();
    let mut cmd = Command::new(binary("updraft-operator"));
    cmd.args(["--namespace", namespace, "--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--gateway-image", "updraft/ota-gateway:e2e"])
        .args(extra)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("RUST_LOG", "info,updraft_operator=debug")
        .envs(env.iter().copied());
    (Proc::spawn(cmd, &dir.join(format!("{name}.log"))), admin)
}

/// Flags that start the operator's gateway config endpoint on a free local port: the
/// gateways a test runs locally long-poll it (what [`crate::config_sync::ConfigSync`]
/// writes names it), as gateway pods do in a cluster.
pub fn config_endpoint() -> Vec<String> {
    let port = free_port();
    vec!["--config-addr".into(), format!("127.0.0.1:{port}"), "--config-url".into(), format!("http://127.0.0.1:{port}")]
}

/// Pushes `file` as a single-layer OCI artifact to `repository:tag` of the cluster's
/// registry with the real `oras` client; returns the manifest digest.
pub fn oras_push(repository: &str, tag: &str, file: &Path, media_type: &str) -> String {
    let cluster = cluster();
    let dir = file.parent().unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let out = Command::new("oras")
        .args([
            "push",
            "--plain-http",
            &format!("{}/{repository}:{tag}", cluster.registry),
            &format!("{name}:{media_type}"),
        ])
        .current_dir(dir)
        .output()
        .expect("oras runs (cluster.sh tools installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "oras push failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("oras printed no digest: {stdout}"))
        .trim()
        .to_owned()
}
