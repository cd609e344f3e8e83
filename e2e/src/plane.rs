//! A private control plane for operator fault tests, which stop and restart etcd and
//! the API server without disturbing the shared one other tests use.
//!
//! [`Plane::start`] runs `cluster.sh up` with a state directory and ports of its own,
//! then restarts its kube-apiserver with the same command line plus an audit log and
//! one bearer token per named user, so a test can tell which operator replica made
//! which request ([`Plane::audit_since`]). A watchdog process stops the plane and
//! removes its state when the test process exits, however it exits, so a plane may be
//! shared by every test of a file (kept in a static) and still never outlive it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::repo_root;

/// The daemons of a plane that tests stop and start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Daemon {
    Etcd,
    ApiServer,
}

impl Daemon {
    /// The name `cluster.sh` gives its PID file and log.
    fn name(self) -> &'static str {
        match self {
            Daemon::Etcd => "etcd",
            Daemon::ApiServer => "kube-apiserver",
        }
    }
}

/// One request the API server logged (stage `ResponseComplete`, or `ResponseStarted`
/// for a watch that was established).
#[derive(Clone, Debug)]
pub struct Audited {
    pub stage: String,
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`…
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
}

impl Audited {
    /// A request that changes state (create, update, patch, delete).
    pub fn is_write(&self) -> bool {
        matches!(self.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
    }
}

/// A running private control plane (etcd, kube-apiserver, kube-controller-manager and a
/// registry on loopback).
pub struct Plane {
    pub state: PathBuf,
    /// The administrator's kubeconfig (user `admin`, not audited for reads).
    pub kubeconfig: PathBuf,
    /// `host:port` of the plane's plain-HTTP OCI registry.
    pub registry: String,
    /// `host:port` of the API server.
    pub apiserver: String,
    kubectl: PathBuf,
    tokens: BTreeMap<String, String>,
    argv: std::sync::Mutex<BTreeMap<&'static str, Vec<String>>>,
}

/// A port P free with P+1 and P+10 (cluster.sh derives the controller-manager's port and
/// etcd's peer port from it), below the ephemeral range so no outgoing connection takes
/// one before the daemons bind.
fn port_with_neighbours() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let p = 20_000 + rand::random::<u16>() % 12_000;
        if [p, p + 1, p + 10].into_iter().all(free) {
            return p;
        }
    }
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- \
                            level: None\n  users: [\"system:apiserver\"]\n- level: None\n  users: [admin]\n  verbs: \
                            [get, list, watch]\n- level: Metadata\n";

impl Plane {
    /// Starts a plane named `name` whose API server knows a bearer token for each of
    /// `users` (all in `system:masters`) and writes an audit log. Takes ~20–30 s.
    pub fn start(name: &str, users: &[&str]) -> Plane {
        let state = std::env::temp_dir().join(format!("updraft-plane-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).unwrap();
        let script = repo_root().join("e2e/scripts/cluster.sh");
        // The watchdog: when this process is gone, stop the plane and remove its state.
        let watchdog = "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; bash \"$2\" down; rm -rf \"$3\"";
        let started = Command::new("bash")
            .args(["-c", "setsid bash -c \"$0\" watchdog \"$@\" >/dev/null 2>&1 </dev/null &", watchdog])
            .arg(std::process::id().to_string())
            .arg(&script)
            .arg(&state)
            .env("UPDRAFT_STATE", &state)
            .status()
            .expect("bash runs");
        assert!(started.success(), "the plane's watchdog did not start");
        let apiserver_port = port_with_neighbours();
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .env("UPDRAFT_STATE", &state)
            .env("UPDRAFT_ETCD_PORT", port_with_neighbours().to_string())
            .env("UPDRAFT_APISERVER_PORT", apiserver_port.to_string())
            .env("UPDRAFT_REGISTRY_PORT", port_with_neighbours().to_string())
            // The controller-manager's insecure port (10252) is taken by the shared one.
            .env("UPDRAFT_KCM_INSECURE_PORT", "0")
            .stderr(Stdio::inherit())
            .output()
            .expect("cluster.sh runs");
        assert!(out.status.success(), "cluster.sh up (private plane {name}) failed; its messages are above");
        let exports: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let kube_bin = exports["PATH"].split(':').next().expect("cluster.sh puts kubectl first on PATH");
        let tokens: BTreeMap<String, String> =
            users.iter().map(|u| (u.to_string(), format!("{:032x}", rand::random::<u128>()))).collect();
        let plane = Plane {
            kubeconfig: exports["KUBECONFIG"].clone().into(),
            registry: exports["UPDRAFT_REGISTRY"].clone(),
            apiserver: format!("127.0.0.1:{apiserver_port}"),
            kubectl: Path::new(kube_bin).join("kubectl"),
            state,
            tokens,
            argv: Default::default(),
        };
        plane.arm_audit_and_tokens();
        plane
    }

    /// Restarts the API server with its command line plus the users' tokens and the
    /// audit log.
    fn arm_audit_and_tokens(&self) {
        let tokens_csv = self.state.join("pki/tokens.csv");
        let mut csv = std::fs::read_to_string(&tokens_csv).unwrap();
        for (user, token) in &self.tokens {
            csv.push_str(&format!("{token},{user},{user},\"system:masters\"\n"));
        }
        std::fs::write(&tokens_csv, csv).unwrap();
        let policy = self.state.join("audit-policy.yaml");
        std::fs::write(&policy, AUDIT_POLICY).unwrap();
        let mut argv = self.read_argv(Daemon::ApiServer);
        argv.extend(
            [
                "--audit-log-path",
                self.audit_log().to_str().unwrap(),
                "--audit-policy-file",
                policy.to_str().unwrap(),
                "--audit-log-maxsize",
                "4000",
            ]
            .map(String::from),
        );
        self.argv.lock().unwrap().insert(Daemon::ApiServer.name(), argv);
        self.stop(Daemon::ApiServer, "TERM");
        self.launch(Daemon::ApiServer);
        self.wait_ready(Duration::from_secs(60));
    }

    fn audit_log(&self) -> PathBuf {
        self.state.join("audit.log")
    }

    fn pid(&self, daemon: Daemon) -> Option<u32> {
        std::fs::read_to_string(self.state.join(format!("{}.pid", daemon.name()))).ok()?.trim().parse().ok()
    }

    /// Whether the daemon's process is alive.
    pub fn running(&self, daemon: Daemon) -> bool {
        self.pid(daemon).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// The daemon's command line, from the running process.
    fn read_argv(&self, daemon: Daemon) -> Vec<String> {
        let pid = self.pid(daemon).unwrap_or_else(|| panic!("{} has no PID file", daemon.name()));
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the daemon runs");
        raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
    }

    /// Sends `signal` (`TERM`, `KILL`…) to the daemon and waits until it is gone.
    pub fn stop(&self, daemon: Daemon, signal: &str) {
        let mut argv = self.argv.lock().unwrap();
        if !argv.contains_key(daemon.name()) {
            argv.insert(daemon.name(), self.read_argv(daemon));
        }
        drop(argv);
        let Some(pid) = self.pid(daemon) else { return };
        Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
        let gone = (0..150).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        if !gone {
            Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Starts the daemon again with the command line it had (detached, as cluster.sh
    /// starts it, and recorded so `cluster.sh down` stops it).
    pub fn launch(&self, daemon: Daemon) {
        let argv = self.argv.lock().unwrap()[daemon.name()].clone();
        let log = self.state.join("logs").join(format!("{}.log", daemon.name()));
        let out = Command::new("bash")
            .args(["-c", "setsid \"$@\" >>\"$LOG\" 2>&1 </dev/null & echo $!", "launch"])
            .args(&argv)
            .env("LOG", &log)
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        std::fs::write(self.state.join(format!("{}.pid", daemon.name())), &pid).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let cmd: Vec<u8> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_else(|e| panic!("{} exited at once ({e}); see {}", daemon.name(), log.display()))
            .into_iter()
            .map(|b| if b == 0 { b' ' } else { b })
            .collect();
        std::fs::write(self.state.join(format!("{}.cmd", daemon.name())), cmd).unwrap();
    }

    /// Waits until the API server answers `/readyz` (and so reaches etcd); returns how
    /// long that took.
    pub fn wait_ready(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.kubectl(&["get", "--raw", "/readyz"], None).0 {
                return start.elapsed();
            }
            assert!(start.elapsed() < timeout, "the private API server not ready after {timeout:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts whatever of etcd and the API server is not running, and waits until the
    /// API server is ready (a test that failed half-way may have left one stopped).
    pub fn ensure_up(&self) {
        for daemon in [Daemon::Etcd, Daemon::ApiServer] {
            if !self.running(daemon) {
                self.launch(daemon);
            }
        }
        self.wait_ready(Duration::from_secs(60));
    }

    /// Runs the plane's kubectl as `admin`; returns success and stdout (stderr is
    /// appended to stdout on failure).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args).env("KUBECONFIG", &self.kubeconfig).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.spawn().expect("the plane's kubectl runs");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            text.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        (out.status.success(), text)
    }

    /// Like [`Plane::kubectl`], panicking unless it succeeded.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.kubectl(args, stdin);
        assert!(ok, "kubectl {args:?} failed: {out}");
        out
    }

    /// `kubectl get -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let (ok, out) = self.kubectl(&all, None);
        ok.then(|| serde_json::from_str(&out).ok()).flatten()
    }

    /// Writes a kubeconfig for `user` that reaches the API server at `server`
    /// (`host:port`: the API server itself, or a relay in front of it).
    pub fn kubeconfig_for(&self, user: &str, server: &str, path: &Path) {
        let token = self.tokens.get(user).unwrap_or_else(|| panic!("no token for {user}: name it in Plane::start"));
        let ca = self.state.join("pki/ca.crt");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: private\n  cluster:\n    server: https://{server}\n    \
             certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: \
             private\n  context: {{cluster: private, user: {user}}}\ncurrent-context: private\n",
            ca.display()
        );
        std::fs::write(path, text).unwrap();
    }

    /// A position in the audit log; [`Plane::audit_since`] reads from there.
    pub fn audit_mark(&self) -> usize {
        std::fs::read_to_string(self.audit_log()).map(|t| t.lines().count()).unwrap_or(0)
    }

    /// The requests logged after `mark` (reads, writes and established watches of
    /// every user but the API server's own and `admin`'s reads).
    pub fn audit_since(&self, mark: usize) -> Vec<Audited> {
        let text = std::fs::read_to_string(self.audit_log()).unwrap_or_default();
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        text.lines()
            .skip(mark)
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete" || e["stage"] == "ResponseStarted")
            .map(|e| Audited {
                stage: s(&e["stage"]),
                user: s(&e["user"]["username"]),
                verb: s(&e["verb"]),
                resource: s(&e["objectRef"]["resource"]),
                subresource: s(&e["objectRef"]["subresource"]),
                namespace: s(&e["objectRef"]["namespace"]),
                name: s(&e["objectRef"]["name"]),
                code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            })
            .collect()
    }

    /// Pushes `file` as a one-layer artifact to `repository:tag` of the plane's registry
    /// with the real `oras` client.
    pub fn push(&self, repository: &str, tag: &str, file: &Path, media_type: &str) {
        let out = Command::new("oras")
            .args(["push", "--plain-http", &format!("{}/{repository}:{tag}", self.registry)])
            .arg(format!("{}:{media_type}", file.file_name().unwrap().to_str().unwrap()))
            .current_dir(file.parent().unwrap())
            .output()
            .expect("oras runs (cluster.sh tools installs it)");
        assert!(out.status.success(), "oras push failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}
