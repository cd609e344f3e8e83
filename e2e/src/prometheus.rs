//! A real Prometheus (Debian's `prometheus`, installed by `cluster.sh tools`) on
//! loopback, evaluating the chart's alert rules as `helm` renders them, so a test can
//! make an alert fire in the scenario it is named for.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helm::chart_dir;
use crate::procs::{free_port, wait_for, Proc};
use crate::{cluster_script, curl, run};

/// `helm`, `prometheus` and `promtool` on PATH, without the control plane.
pub fn tools() {
    cluster_script("tools");
    cluster_script("env");
}

/// The chart's PrometheusRule rendered by `helm template` with `sets`, as a Prometheus
/// rules file (its `spec`).
pub fn render_rules(sets: &[String]) -> String {
    let chart = chart_dir();
    let mut cmd = Command::new("helm");
    cmd.args(["template", "updraft", chart.to_str().unwrap(), "--show-only", "templates/prometheusrule.yaml"])
        .args(["--set", "monitoring.rules.enabled=true"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let rendered: Value = serde_yaml::from_str(&run(&mut cmd)).unwrap();
    assert_eq!(rendered["kind"], "PrometheusRule", "{rendered:#}");
    serde_yaml::to_string(&rendered["spec"]).unwrap()
}

/// The alert names in a rules file.
pub fn alert_names(rules: &str) -> BTreeSet<String> {
    let rules: Value = serde_yaml::from_str(rules).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

/// The chart's rules with every alert's `for` set to `duration` (the durations the
/// chart ships are `promtool test rules`' to check; a live test cannot wait them out).
pub fn rules_with_for(duration: &str) -> String {
    let sets: Vec<String> =
        alert_names(&render_rules(&[])).iter().map(|name| format!("monitoring.rules.for.{name}={duration}")).collect();
    render_rules(&sets)
}

/// A Prometheus on loopback and its HTTP API.
pub struct Prometheus {
    pub proc: Proc,
    pub url: String,
}

impl Prometheus {
    /// Scrapes `targets` (job name, `host:port`) every second and evaluates `rules`
    /// every second, its storage in `dir`.
    pub fn start(dir: &Path, targets: &[(&str, String)], rules: &str) -> Prometheus {
        std::fs::write(dir.join("rules.yaml"), rules).unwrap();
        let mut config = String::from(
            "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\nrule_files: [rules.yaml]\nscrape_configs:\n",
        );
        for (job, target) in targets {
            config.push_str(&format!("  - job_name: {job}\n    static_configs: [{{targets: [\"{target}\"]}}]\n"));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        run(Command::new("promtool").arg("check").arg("config").arg(&file));
        let port = free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let proc = Proc::spawn(cmd, &dir.join("prometheus.log"));
        let url = format!("http://127.0.0.1:{port}");
        wait_for(Duration::from_secs(90), "prometheus ready", || {
            (curl(&[&format!("{url}/-/ready")]).0 == 200).then_some(())
        });
        Prometheus { proc, url }
    }

    /// `GET /api/v1/<path>` with `query` form-encoded; the `data` of a success.
    pub fn api(&self, path: &str, query: Option<&str>) -> Value {
        let mut args = vec!["-G".to_owned(), format!("{}/api/v1/{path}", self.url)];
        if let Some(q) = query {
            args.extend(["--data-urlencode".to_owned(), format!("query={q}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, body) = curl(&args);
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert!(status == 200 && v["status"] == "success", "{path} {query:?}: {status} {v}\n{}", self.proc.output());
        v["data"].clone()
    }

    /// The series an instant query returns now.
    pub fn query(&self, q: &str) -> Vec<Value> {
        self.api("query", Some(q))["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerts pending or firing now.
    pub fn alerts(&self) -> Vec<Value> {
        self.api("alerts", None)["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The alert `name` whose labels include `labels`, if it is pending or firing.
    pub fn alert(&self, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        self.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == name && labels.iter().all(|(label, value)| a["labels"][*label] == *value)
        })
    }

    /// Waits up to `timeout` for the alert `name` with `labels` to fire; returns it.
    pub fn wait_firing(&self, timeout: Duration, name: &str, labels: &[(&str, &str)]) -> Value {
        wait_for(timeout, &format!("{name} {labels:?} firing"), || {
            self.alert(name, labels).filter(|a| a["state"] == "firing")
        })
    }

    /// Waits up to `timeout` for the alert `name` with `labels` to be neither pending
    /// nor firing.
    pub fn wait_resolved(&self, timeout: Duration, name: &str, labels: &[(&str, &str)]) {
        wait_for(timeout, &format!("{name} {labels:?} resolved"), || self.alert(name, labels).is_none().then_some(()))
    }
}

/// Writes `samples` (OpenMetrics text, timestamps in seconds, ending in `# EOF`) into
/// the storage of a Prometheus to be started in `dir` with `promtool tsdb
/// create-blocks-from openmetrics`: the history an alert comparing with the past needs,
/// which no test can wait for.
pub fn backfill(dir: &Path, samples: &str) {
    let file = dir.join("backfill.om");
    std::fs::write(&file, samples).unwrap();
    run(Command::new("promtool").args(["tsdb", "create-blocks-from", "openmetrics"]).arg(&file).arg(dir.join("data")));
}
