//! The operator's config endpoint is a shortcut, never a dependency: a gateway whose
//! `operator` cannot be reached keeps serving, follows its config file as before, and
//! still refuses a file older than the config it serves (the real binary, its file
//! rewritten under it as kubelet does). The endpoint itself is exercised with the real
//! operator in `e2e/tests/webhook.rs` (push and pin served by three replicas).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{curl, free_port, GatewayProcess};

fn config(dir: &std::path::Path, port: u16, admin: u16, dead: u16, revision: u64, url: &str) -> String {
    format!(
        "revision: {revision}\nlisten: 127.0.0.1:{port}\nadminListen: 127.0.0.1:{admin}\npublicUrl: {url}\n\
         cache: {{dir: {}}}\noperator:\n  url: http://127.0.0.1:{dead}/v1/gateways/fleet/default/config\n  \
         tokenFile: {}\n",
        dir.join("cache").display(),
        dir.join("token").display()
    )
}

/// The first sample of `name` whose labels contain every one of `labels`, 0 when absent.
fn metric(admin: u16, name: &str, labels: &[&str]) -> f64 {
    let (text, _) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]);
    text.lines()
        .find(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn wait_until(what: &str, log: &dyn Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}; gateway log:\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_the_operator_the_gateway_serves_and_follows_its_file_never_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin, dead) = (free_port(), free_port(), free_port());
    std::fs::write(dir.path().join("token"), "t0k\n").unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), config(dir.path(), port, admin, dead, 5, "https://five")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota-gateway"));
    cmd.env("RUST_LOG", "info");
    let gw = GatewayProcess::start(cmd, dir.path(), port);
    let log = || gw.log_text();
    let rewrite = |revision: u64, url: &str| {
        let next = dir.path().join("gateway.yaml.next");
        std::fs::write(&next, config(dir.path(), port, admin, dead, revision, url)).unwrap();
        std::fs::rename(&next, dir.path().join("gateway.yaml")).unwrap();
    };

    wait_until("the endpoint's failures counted", &log, || {
        metric(admin, "updraft_gateway_config_poll_errors_total", &[]) >= 1.0
    });
    assert!(log().contains("cannot get the config from the operator"), "{}", log());
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/health"), "-o", "/dev/null", "-w", "%{http_code}"]).0, "200");

    rewrite(6, "https://six");
    wait_until("revision 6 from the file", &log, || metric(admin, "updraft_gateway_config_revision", &[]) == 6.0);
    let applied = ["source=\"file\"", "result=\"applied\""];
    assert_eq!(metric(admin, "updraft_gateway_config_updates_total", &applied), 1.0);

    // An older file (a restored backup, a stale copy) does not roll it back.
    rewrite(5, "https://five");
    wait_until("the older file seen", &log, || {
        metric(admin, "updraft_gateway_config_updates_total", &["source=\"file\"", "result=\"stale\""]) == 1.0
    });
    assert_eq!(metric(admin, "updraft_gateway_config_revision", &[]), 6.0);
    assert!(log().contains("config older than the one served; ignored"), "{}", log());
}
