//! The real `helm` client against the local control plane, and RBAC questions asked as
//! a ServiceAccount (`kubectl auth can-i --as`), for the chart's end-to-end tests.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{cluster, kubectl, repo_root, Kubectl};

/// `charts/updraft`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/updraft")
}

/// Runs the cluster's `helm` (installed by `cluster.sh tools`) with `args`.
pub fn helm(args: &[&str]) -> Kubectl {
    let cluster = cluster();
    Command::new("helm")
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("helm runs (cluster.sh tools installs it)")
        .into()
}

/// A Helm release that is uninstalled when dropped, so a failing test leaves no
/// cluster-scoped RBAC behind. `name` is unique per test run.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Release {
    /// A release named `updraft-<random>` (the chart's objects are then named exactly
    /// that) in `namespace`. Nothing is installed yet.
    pub fn new(namespace: &str) -> Release {
        Release { name: format!("updraft-{:08x}", rand::random::<u32>()), namespace: namespace.to_owned() }
    }

    /// `helm <command> <release> <chart> -n <namespace> <args...>`.
    pub fn run(&self, command: &str, chart: &str, args: &[&str]) -> Kubectl {
        let mut all = vec![command, &self.name, chart, "--namespace", &self.namespace];
        all.extend_from_slice(args);
        helm(&all)
    }

    /// The ServiceAccount user the operator's pods run as.
    pub fn service_account_user(&self) -> String {
        let sa = kubectl(
            &[
                "get",
                "deployment",
                &self.name,
                "-n",
                &self.namespace,
                "-o",
                "jsonpath={.spec.template.spec.serviceAccountName}",
            ],
            None,
        )
        .ok();
        assert!(!sa.is_empty(), "the Deployment names no ServiceAccount");
        format!("system:serviceaccount:{}:{sa}", self.namespace)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&["uninstall", &self.name, "--namespace", &self.namespace]);
    }
}

/// Whether `user` may do what `question` asks (`["patch", "deployments.apps", "-n", "x"]`),
/// by the API server's own authorizer.
pub fn can_i(user: &str, question: &[&str]) -> bool {
    let mut args = vec!["auth", "can-i", "--as", user];
    args.extend_from_slice(question);
    let out = kubectl(&args, None);
    match out.stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {question:?} answered {other:?}: {}", out.stderr),
    }
}

/// Whether `kubectl get <args>` finds the object (false on NotFound; panics otherwise).
pub fn exists(args: &[&str]) -> bool {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = kubectl(&all, None);
    if out.success {
        return true;
    }
    assert!(
        out.stderr.contains("NotFound") || out.stderr.contains("not found"),
        "kubectl get {args:?}: {}",
        out.stderr
    );
    false
}
