//! The operator's config endpoint is a shortcut, never a dependency: a gateway whose
//! `operator` cannot be reached keeps serving, follows its config file as before, and
//! still refuses a file older than the config it serves (the real binary, its file
//! rewritten under it as kubelet does). The mirror worker (`--mirror`) follows the
//! endpoint the same way. The endpoint itself is exercised with the real operator in
//! `e2e/tests/webhook.rs` (push and pin served by three replicas) and
//! `e2e/tests/deltas.rs` (the worker's `deltas.build`).

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

/// An operator whose rendering is older than what the gateway serves (its ConfigMap was
/// re-created, counting from 1 again) answers every poll at once: the gateway ignores
/// that config and asks again only after a pause, instead of spinning on the endpoint.
/// The stand-in answers as the operator does while revisions differ: 200 with the YAML.
#[test]
fn an_older_config_from_the_operator_is_ignored_without_spinning() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let operator = listener.local_addr().unwrap().port();
    let older = config(dir.path(), port, admin, operator, 3, "https://three");
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = polls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/yaml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                older.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(older.as_bytes()));
        }
    });
    std::fs::write(dir.path().join("token"), "t0k\n").unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), config(dir.path(), port, admin, operator, 5, "https://five"))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota-gateway"));
    cmd.env("RUST_LOG", "info");
    let gw = GatewayProcess::start(cmd, dir.path(), port);
    let log = || gw.log_text();

    let stale = ["source=\"operator\"", "result=\"stale\""];
    wait_until("the operator's older config seen", &log, || {
        metric(admin, "updraft_gateway_config_updates_total", &stale) >= 1.0
    });
    std::thread::sleep(Duration::from_secs(3));
    // Without the pause this was a request per round trip: thousands in 3 s.
    let asked = polls.load(Ordering::SeqCst);
    assert!(asked <= 2, "{asked} polls in about 3 s after an older config\n{}", log());
    assert_eq!(metric(admin, "updraft_gateway_config_revision", &[]), 5.0);
    assert!(log().contains("the operator's config is older than the one served; ignored"), "{}", log());
}

/// The names of the mirrors the worker on `admin` runs (`/mirrors`).
fn mirrors(admin: u16) -> Vec<String> {
    let (text, _) = curl(&[&format!("http://127.0.0.1:{admin}/mirrors")]);
    let statuses: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    statuses.iter().filter_map(|s| s["name"].as_str().map(str::to_owned)).collect()
}

/// The mirror worker follows the operator's endpoint as the gateway does: a rendering
/// with another mirror reaches it within a couple of seconds while its file is unchanged
/// (before, it waited for kubelet's sync of the ConfigMap); its file's older revision does
/// not roll that back, and the endpoint's older revision does not roll back a newer file.
/// The stand-in answers as the operator does: at once with its rendering (revision 2)
/// while the revision asked about differs, else after a hold with 304.
#[test]
fn the_mirror_worker_follows_the_endpoint_and_the_newer_revision_wins() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_port(), free_port());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let operator = listener.local_addr().unwrap().port();
    let worker = |revision: u64, mirror: &str| {
        format!(
            "revision: {revision}\nlisten: 127.0.0.1:{listen}\nadminListen: 127.0.0.1:{admin}\ncache: {{dir: {}}}\n\
             operator:\n  url: http://127.0.0.1:{operator}/v1/gateways/fleet/default/config\n  tokenFile: {}\n\
             mirrors:\n- name: fleet/{mirror}\n  interval: 1h\n  source: {{http: {{url: 'http://127.0.0.1:1'}}}}\n  \
             destination: {{http: {{url: 'http://127.0.0.1:1/wan'}}}}\n",
            dir.path().join("cache").display(),
            dir.path().join("token").display()
        )
    };
    let rendering = worker(2, "b");
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (rendering, seen) = (rendering.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let current = request.lines().next().is_some_and(|l| l.contains("?revision=2 "));
                seen.lock().unwrap().push(request);
                let answer = if current {
                    std::thread::sleep(Duration::from_secs(2));
                    "HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/yaml\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{rendering}",
                        rendering.len()
                    )
                };
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    std::fs::write(dir.path().join("token"), "t0k\n").unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), worker(1, "a")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota-gateway"));
    cmd.env("RUST_LOG", "info").arg("--mirror");
    let started = Instant::now();
    let gw = GatewayProcess::start(cmd, dir.path(), admin);
    let log = || gw.log_text();
    let rewrite = |revision: u64, mirror: &str| {
        let next = dir.path().join("gateway.yaml.next");
        std::fs::write(&next, worker(revision, mirror)).unwrap();
        std::fs::rename(&next, dir.path().join("gateway.yaml")).unwrap();
    };

    wait_until("the endpoint's mirror running", &log, || mirrors(admin) == ["fleet/b"]);
    let took = started.elapsed();
    println!("the worker ran the endpoint's rendering {took:?} after it started");
    assert!(took < Duration::from_secs(3), "{took:?}\n{}", log());
    let first = requests.lock().unwrap()[0].clone();
    assert!(first.starts_with("GET /v1/gateways/fleet/default/config?revision=1 "), "{first}");
    assert!(first.to_ascii_lowercase().contains("authorization: bearer t0k\r\n"), "{first}");
    assert_eq!(metric(admin, "updraft_mirror_config_revision", &[]), 2.0);
    let applied = ["source=\"operator\"", "result=\"applied\""];
    assert_eq!(metric(admin, "updraft_mirror_config_updates_total", &applied), 1.0);

    // The file's older revision (kubelet's late copy) is ignored.
    rewrite(1, "c");
    wait_until("the older file seen", &log, || {
        metric(admin, "updraft_mirror_config_updates_total", &["source=\"file\"", "result=\"stale\""]) == 1.0
    });
    assert_eq!(mirrors(admin), ["fleet/b"]);
    assert!(log().contains("config older than the one in use; ignored"), "{}", log());

    // A newer file wins, and the endpoint's revision 2, sent again since the worker now
    // asks about 3, is ignored.
    rewrite(3, "d");
    wait_until("the newer file applied", &log, || mirrors(admin) == ["fleet/d"]);
    wait_until("the endpoint's older config seen", &log, || {
        metric(admin, "updraft_mirror_config_updates_total", &["source=\"operator\"", "result=\"stale\""]) == 1.0
    });
    assert_eq!(mirrors(admin), ["fleet/d"]);
    assert_eq!(metric(admin, "updraft_mirror_config_revision", &[]), 3.0);
    assert_eq!(metric(admin, "updraft_mirror_config_poll_errors_total", &[]), 0.0);
}
