//! [`World`]: one operator test's world — a fresh namespace, the real operator
//! watching it, a scratch directory — and the kubectl steps every such test takes
//! (apply, get, wait for a condition with the operator's log on failure).
//!
//! One home for `operator.rs`, `verify.rs`, `mirrors.rs`, `streams.rs` and
//! `webhook.rs`. What only one test file needs (pushing its firmware, reading its
//! metrics) stays in that file, as an extension trait or a wrapper around `World`.
//! Where the copies this replaced differed, the difference is a parameter:
//! [`World::with_operator`] (extra operator arguments and setup before it starts),
//! [`World::ready`] (waiting for `/readyz`), [`World::patience`] and
//! [`World::on_unknown_field`].

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::procs::{operator, wait_for, Proc, TempDir};
use crate::{install_crds, kubectl, namespace};

/// How long [`World::wait`] waits unless [`World::patience`] says otherwise.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(60);

/// What [`World::apply`] does when kubectl rejects a field as unknown. Right after the
/// CRDs change, kubectl's validation may still see the API server's previous schema,
/// and the API server is shared: another checkout's tests may have just applied older
/// CRDs.
#[derive(Debug, Clone, Copy)]
pub enum OnUnknownField {
    /// Take kubectl's answer as it is (the default).
    Accept,
    /// Try again for up to the given time.
    Retry(Duration),
    /// Put this checkout's CRDs back and try again, for up to the given time.
    ReinstallCrds(Duration),
}

/// A namespace, the operator watching it, and a scratch directory.
pub struct World {
    pub ns: String,
    pub dir: TempDir,
    pub operator: Proc,
    /// The operator's admin port (`/readyz`, `/metrics`).
    pub admin: u16,
    /// This test's firmware repository in the shared registry: `e2e/<ns>/firmware`.
    pub repository: String,
    /// How long [`World::wait`], [`World::wait_until`] and [`World::ready`] wait.
    pub patience: Duration,
    /// What [`World::apply`] does about an "unknown field".
    pub on_unknown_field: OnUnknownField,
}

impl World {
    /// The CRDs installed, a fresh namespace named after `name`, a scratch directory and
    /// the operator started, without waiting for it to be ready.
    pub fn new(name: &str) -> World {
        World::with_operator(name, |_| Vec::new())
    }

    /// As [`World::new`]; `setup` runs with the new namespace before the operator
    /// starts and returns the operator's extra arguments.
    pub fn with_operator(name: &str, setup: impl FnOnce(&str) -> Vec<String>) -> World {
        install_crds();
        let ns = namespace(name);
        let dir = TempDir::new(name);
        let extra = setup(&ns);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (operator, admin) = operator(&ns, &dir.0, "operator", &extra);
        World {
            repository: format!("e2e/{ns}/firmware"),
            ns,
            dir,
            operator,
            admin,
            patience: DEFAULT_PATIENCE,
            on_unknown_field: OnUnknownField::Accept,
        }
    }

    /// Waits until the operator's `/readyz` answers 200 (once its caches are filled;
    /// without leader election, straight away).
    pub fn ready(self) -> World {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        wait_for(self.patience, "operator /readyz", || {
            let out =
                Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).output().unwrap();
            (out.stdout == b"200").then_some(())
        });
        self
    }

    /// Sets how long the waits wait.
    pub fn patience(mut self, patience: Duration) -> World {
        self.patience = patience;
        self
    }

    /// Sets what [`World::apply`] does about an "unknown field".
    pub fn on_unknown_field(mut self, on_unknown_field: OnUnknownField) -> World {
        self.on_unknown_field = on_unknown_field;
        self
    }

    /// Applies `yaml` (server-side) in the namespace; see [`OnUnknownField`].
    pub fn apply(&self, yaml: &str) {
        let apply = || kubectl(&["apply", "--server-side", "-n", &self.ns, "-f", "-"], Some(yaml));
        let unknown = |out: &crate::Kubectl| !out.success && out.stderr.contains("unknown field");
        let out = match self.on_unknown_field {
            OnUnknownField::Accept => apply(),
            OnUnknownField::Retry(timeout) => wait_for(timeout, "kubectl apply", || {
                let out = apply();
                (!unknown(&out)).then_some(out)
            }),
            OnUnknownField::ReinstallCrds(timeout) => wait_for(timeout, "kubectl apply", || {
                let out = apply();
                if unknown(&out) {
                    let crds = crate::repo_root().join("crds/crds.yaml");
                    kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crds.to_str().unwrap()], None);
                    std::thread::sleep(Duration::from_millis(500));
                    return None;
                }
                Some(out)
            }),
        };
        out.ok();
    }

    /// `what` (e.g. `fwc/esp32`) in the namespace as JSON, `None` when kubectl fails.
    pub fn get(&self, what: &str) -> Option<Value> {
        let out = kubectl(&["get", "-n", &self.ns, what, "-o", "json"], None);
        out.success.then(|| serde_json::from_str(&out.stdout).unwrap())
    }

    /// Waits until `f` holds; panics with the operator's log when it never does.
    pub fn wait_until(&self, description: &str, mut f: impl FnMut() -> bool) {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(self.patience, description, || f().then_some(()))
        }));
        if found.is_err() {
            panic!("{description} never happened; operator log:\n{}", self.operator.output());
        }
    }

    /// Waits until `what`'s JSON satisfies `pred`, then returns it; panics with the last
    /// JSON seen and the operator's log when it never does.
    pub fn wait(&self, what: &str, description: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(self.patience, description, || {
                let v = self.get(what)?;
                last = v.clone();
                pred(&v).then_some(v)
            })
        }));
        found.unwrap_or_else(|_| {
            panic!(
                "{what}: {description} never happened; last seen:\n{last:#}\noperator log:\n{}",
                self.operator.output()
            )
        })
    }
}
