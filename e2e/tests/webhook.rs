//! Registry webhooks end to end: a CNCF distribution registry of the test's own (its own
//! port and storage, `notifications.endpoints` pointing at the operator's receiver
//! with the token header) and the real operator and gateway binaries. A push reaches
//! the channel's status and the gateway in seconds although the channel's interval is
//! an hour; anything without the token gets 401; a flood of notifications coalesces.
//!
//! The shared registry of `cluster.sh` is left alone: its config has no notification
//! endpoint, so no other test depends on a receiver being up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::config_sync::ConfigSync;
use e2e::kubectl;
use e2e::procs::{binary, free_port, wait_for, Proc};
use e2e::world::World;
use serde_json::Value;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "e2e-webhook-token-5f1c";
const TOKEN_SECRET: &str = "registry-hook";

/// A namespace, the operator with its receiver, and a registry that notifies it.
struct Hooked {
    world: World,
    hook: u16,
    /// The operator's gateway config endpoint.
    config_port: u16,
    _registry: Proc,
    registry: String,
}

impl std::ops::Deref for Hooked {
    type Target = World;

    fn deref(&self) -> &World {
        &self.world
    }
}

impl Hooked {
    fn new(name: &str) -> Hooked {
        let hook = free_port();
        let hook_addr = format!("127.0.0.1:{hook}");
        let endpoint = e2e::procs::config_endpoint();
        let config_port = endpoint[1].rsplit(':').next().and_then(|p| p.parse().ok()).expect("--config-addr HOST:PORT");
        let world = World::with_operator(name, |ns| {
            kubectl(
                &["create", "secret", "generic", "-n", ns, TOKEN_SECRET, &format!("--from-literal=token={TOKEN}")],
                None,
            )
            .ok();
            let mut flags = [
                "--webhook-addr",
                &hook_addr,
                "--webhook-token-secret",
                TOKEN_SECRET,
                "--lease-namespace",
                ns,
                "--webhook-match-host",
            ]
            .map(str::to_owned)
            .to_vec();
            flags.extend(endpoint.iter().cloned());
            flags
        })
        .ready();
        let (registry_proc, registry) = notifying_registry(&world.dir.0, &format!("http://{hook_addr}/webhook"));
        Hooked { world, hook, config_port, _registry: registry_proc, registry }
    }

    /// Pushes `size` bytes as `repository:tag` with `oras`; returns the bytes and the digest.
    fn push(&self, repository: &str, tag: &str, size: usize) -> (Vec<u8>, String) {
        let bytes: Vec<u8> =
            (0..size).map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(tag.len() as u32 + 3) as u8).collect();
        let file = format!("fw-{tag}.bin");
        std::fs::write(self.dir.0.join(&file), &bytes).unwrap();
        let out = Command::new("oras")
            .args([
                "push",
                "--plain-http",
                &format!("{}/{repository}:{tag}", self.registry),
                &format!("{file}:{MEDIA_TYPE}"),
            ])
            .current_dir(&self.dir.0)
            .output()
            .expect("oras runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "oras push failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let digest = stdout.lines().find_map(|l| l.strip_prefix("Digest: ")).expect("oras prints the digest");
        (bytes, digest.trim().to_owned())
    }

    fn channel_yaml(&self, name: &str, repository: &str, extra: &str) -> String {
        format!(
            "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: {name}}}\nspec:\n  device: {name}-dev\n  interval: 1h\n  source: {{registry: \"{}\", repository: \"{repository}\", insecure: true}}\n{extra}",
            self.registry
        )
    }

    /// A sample from the operator's `/metrics`, 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        let (_, body) = http_get(self.admin, "/metrics");
        body.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    }

    fn digest_of(&self, channel: &str) -> String {
        let out = kubectl(
            &["get", "-n", &self.ns, &format!("fwc/{channel}"), "-o", "jsonpath={.status.latest.digest}"],
            None,
        );
        out.stdout.trim().to_owned()
    }
}

/// Starts `docker-registry` (CNCF distribution) on a free port with its own storage,
/// sending notifications to `url` with the receiver's token.
fn notifying_registry(dir: &Path, url: &str) -> (Proc, String) {
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nnotifications:\n  endpoints:\n    - name: updraft\n      url: {url}\n      headers:\n        Authorization: [\"Bearer {TOKEN}\"]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n",
        dir.join("registry").display()
    );
    let path = dir.join("registry.yml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve").arg(&path);
    let registry = Proc::spawn(cmd, &dir.join("registry.log"));
    wait_for(WAIT, "the notifying registry", || (http_get(port, "/v2/").0 == 200).then_some(()));
    (registry, format!("127.0.0.1:{port}"))
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the body.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    http_on("127.0.0.1", port, method, path, headers, body)
}

/// [`http`] to `host` (another loopback address: a second or third replica).
fn http_on(host: &str, port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect((host, port)) else { return (0, String::new()) };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    http(port, "GET", path, &[], "")
}

/// A distribution notification envelope for a manifest push to `repository`.
fn envelope(host: &str, repository: &str, tag: &str) -> String {
    serde_json::json!({"events": [{
        "id": "e2e", "timestamp": "2026-01-01T00:00:00Z", "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:00",
                   "repository": repository, "url": format!("http://{host}/v2/{repository}/manifests/{tag}"), "tag": tag},
        "request": {"id": "r", "addr": "127.0.0.1:1", "host": host, "method": "PUT", "useragent": "e2e"},
        "actor": {}, "source": {"addr": "x", "instanceID": "y"}
    }]})
    .to_string()
}

/// The gateway binary serving what the operator renders for `w`'s namespace.
fn local_gateway(w: &World) -> (Proc, ConfigSync, u16) {
    let (port, admin) = (free_port(), free_port());
    let config_path = w.dir.0.join("gateway.yaml");
    let sync = ConfigSync::start(&w.ns, &config_path, port, admin, &w.dir.0.join("cache"));
    wait_for(WAIT, "the rendered gateway config", || config_path.exists().then_some(()));
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config_path.to_str().unwrap()]);
    (Proc::spawn(cmd, &w.dir.0.join("gateway.log")), sync, port)
}

const GATEWAY: &str = "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n";

#[test]
fn a_push_reaches_status_and_the_gateway_in_seconds_not_at_the_interval() {
    let w = Hooked::new("hook-push");
    let repository = "fw/hooked";
    let (_, first) = w.push(repository, "1.0.0", 40_000);
    w.apply(GATEWAY);
    w.apply(&w.channel_yaml("hooked", repository, ""));
    w.wait("fwc/hooked", "1.0.0 resolved", |v| v["status"]["latest"]["digest"] == first.as_str());
    let (gateway, _sync, port) = local_gateway(&w);
    wait_for(WAIT, "the gateway serves 1.0.0", || {
        http_get(port, "/version?device=hooked-dev").1.starts_with("1.0.0\n").then_some(())
    });
    let triggered_before = w.metric("updraft_operator_webhook_events_total{result=\"triggered\"}");

    // The interval is an hour: only the notification can explain a quick update.
    let (firmware, digest) = w.push(repository, "1.1.0", 50_000);
    let pushed = Instant::now();
    wait_for(Duration::from_secs(15), "status names the pushed digest", || {
        (w.digest_of("hooked") == digest).then_some(())
    });
    let to_status = pushed.elapsed();
    let crc = crc32fast::hash(&firmware);
    let expected = format!("1.1.0\n{crc}\n{}", firmware.len());
    let served = std::panic::catch_unwind(|| {
        wait_for(Duration::from_secs(15), "the gateway serves 1.1.0", || {
            (http_get(port, "/version?device=hooked-dev").1 == expected).then_some(())
        })
    });
    let to_serve = pushed.elapsed();
    assert!(served.is_ok(), "gateway log:\n{}", gateway.output());
    println!("push-to-status: {:.2} s, push-to-serve: {:.2} s", to_status.as_secs_f64(), to_serve.as_secs_f64());
    assert!(to_status < Duration::from_secs(15) && to_serve < Duration::from_secs(15));
    assert!(
        w.metric("updraft_operator_webhook_events_total{result=\"triggered\"}") > triggered_before,
        "the update came through the receiver"
    );
}

#[test]
fn anything_without_the_token_gets_401_and_no_work() {
    let w = Hooked::new("hook-auth");
    let repository = "fw/guarded";
    w.push(repository, "1.0.0", 1000);
    w.apply(&w.channel_yaml("guarded", repository, ""));
    w.wait("fwc/guarded", "resolved", |v| v["status"]["latest"]["version"] == "1.0.0");
    // Wait for the receiver's first token read.
    let body = envelope(&w.registry, repository, "1.0.0");
    let bearer = format!("Bearer {TOKEN}");
    wait_for(WAIT, "the receiver has its token", || {
        (http(w.hook, "POST", "/webhook", &[("Authorization", &bearer)], &body).0 == 200).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let checks = w.metric("updraft_operator_registry_checks_total{result=\"ok\"}");
    let reconciles = w.metric("updraft_operator_reconciles_total{controller=\"firmwarechannel\"}");
    let unauthorized = w.metric("updraft_operator_webhook_events_total{result=\"unauthorized\"}");
    let ignored = w.metric("updraft_operator_webhook_events_total{result=\"ignored\"}");

    for auth in [None, Some("Bearer wrong"), Some("Basic ZTJlOmUyZQ=="), Some("Bearer ")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let (status, reply) = http(w.hook, "POST", "/webhook", &headers, &body);
        assert_eq!(status, 401, "{auth:?}: {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert!(reply["error"].is_string(), "a JSON reason: {reply}");
    }
    let (status, _) = http(w.hook, "POST", "/webhook", &[("Authorization", &bearer)], "not json");
    assert_eq!(status, 400);
    let huge = "x".repeat(2 << 20);
    assert_eq!(http(w.hook, "POST", "/webhook", &[("Authorization", &bearer)], &huge).0, 413);
    // Harbor sends its "auth header" verbatim; an event for another repository does nothing.
    let harbor = serde_json::json!({"type": "PUSH_ARTIFACT", "occur_at": 1, "operator": "ci",
        "event_data": {"resources": [{"digest": "sha256:00", "tag": "9.9.9", "resource_url": format!("{}/other/repo:9.9.9", w.registry)}],
                       "repository": {"name": "repo", "namespace": "other", "repo_full_name": "other/repo", "repo_type": "private"}}});
    let (status, reply) = http(w.hook, "POST", "/webhook", &[("Authorization", TOKEN)], &harbor.to_string());
    assert_eq!((status, reply.contains("\"triggered\":0")), (200, true), "{reply}");

    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(w.metric("updraft_operator_registry_checks_total{result=\"ok\"}"), checks, "no registry check");
    assert_eq!(
        w.metric("updraft_operator_reconciles_total{controller=\"firmwarechannel\"}"),
        reconciles,
        "no reconcile"
    );
    assert_eq!(w.metric("updraft_operator_webhook_events_total{result=\"unauthorized\"}") - unauthorized, 4.0);
    assert_eq!(w.metric("updraft_operator_webhook_events_total{result=\"ignored\"}") - ignored, 1.0);
}

#[test]
fn a_flood_of_notifications_coalesces_and_starves_nothing() {
    let w = Hooked::new("hook-flood");
    let (flooded, other) = ("fw/flooded", "fw/other");
    w.push(flooded, "1.0.0", 1000);
    w.push(other, "1.0.0", 1000);
    w.push(other, "2.0.0", 1000);
    w.apply(&w.channel_yaml("flooded", flooded, ""));
    w.apply(&w.channel_yaml("other", other, "  version: {pin: \"1.0.0\"}\n"));
    w.wait("fwc/flooded", "resolved", |v| v["status"]["latest"]["version"] == "1.0.0");
    w.wait("fwc/other", "resolved", |v| v["status"]["latest"]["version"] == "1.0.0");
    let bearer = format!("Bearer {TOKEN}");
    let body = envelope(&w.registry, flooded, "1.0.0");
    wait_for(WAIT, "the receiver has its token", || {
        (http(w.hook, "POST", "/webhook", &[("Authorization", &bearer)], &body).0 == 200).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let checks = w.metric("updraft_operator_registry_checks_total{result=\"ok\"}");
    let reconciles = w.metric("updraft_operator_reconciles_total{controller=\"firmwarechannel\"}");

    // 1,000 notifications from 10 connections at a time, while another channel changes.
    let start = Instant::now();
    let senders: Vec<_> = (0..10)
        .map(|_| {
            let (hook, body, bearer) = (w.hook, body.clone(), bearer.clone());
            std::thread::spawn(move || {
                (0..100)
                    .filter(|_| http(hook, "POST", "/webhook", &[("Authorization", &bearer)], &body).0 == 200)
                    .count()
            })
        })
        .collect();
    let changed = Instant::now();
    w.apply(&w.channel_yaml("other", other, "  version: {pin: \"2.0.0\"}\n"));
    let accepted: usize = senders.into_iter().map(|t| t.join().unwrap()).sum();
    let flood = start.elapsed();
    w.wait("fwc/other", "the other channel follows its new pin", |v| v["status"]["latest"]["version"] == "2.0.0");
    let other_took = changed.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let checks = w.metric("updraft_operator_registry_checks_total{result=\"ok\"}") - checks;
    let reconciles = w.metric("updraft_operator_reconciles_total{controller=\"firmwarechannel\"}") - reconciles;
    println!(
        "flood: {accepted} notifications accepted in {:.2} s; {reconciles} channel reconciles and {checks} registry checks followed (one is the other channel's); the other channel's pin applied in {:.2} s",
        flood.as_secs_f64(),
        other_took.as_secs_f64()
    );
    assert_eq!(accepted, 1000);
    assert!(checks >= 2.0, "the flood made the channel check (and the other channel checked)");
    // Without coalescing every notification would be a check; at most one runs per
    // object and one more waits, so the count follows the check time, not the flood.
    assert!(checks <= 100.0, "{checks} registry checks for 1,000 notifications");
    assert!(reconciles <= 150.0, "{reconciles} reconciles for 1,000 notifications");
    assert!(other_took < Duration::from_secs(15), "the other channel waited {other_took:?}");
}

/// The issue's promise, in a cluster's conditions: the gateways' mounted config changes
/// only at kubelet's sync (`ConfigSync`: 60 s plus jitter), yet a registry push and an
/// emergency pin are served by every one of three replicas within 2 s (p99 over 20 of
/// each), through the operator's config endpoint. Replicas end on one revision.
///
/// Measured 2026-12-07 on a quiet machine, debug build: push p50 606 ms, p99 636 ms; pin
/// p50 743 ms, p99 789 ms (20 each). Earlier runs had one push in 20 at 5.7 s, for two
/// reasons fixed since: a replica mounted without its token (a harness race, fixed in
/// `ConfigSync`), and the operator's check landing between the registry's notification
/// and its linking of the tag, a 404 taken for an outage (the resolver now asks a listed
/// tag again; `core/tests/resolve.rs`). After both: 120 pushes in 6 runs, p99 ≤ 663 ms.
#[test]
fn push_and_pin_are_served_by_every_replica_within_two_seconds() {
    const REPLICAS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    const ROUNDS: usize = 20;
    let w = Hooked::new("hook-fleet");
    let repository = "fw/fleet";
    let version = |i: usize| format!("1.{i}.0");
    let (_, first) = w.push(repository, &version(0), 4_000);
    w.apply(GATEWAY);
    w.apply(&w.channel_yaml("fleet", repository, ""));
    w.wait("fwc/fleet", "1.0.0 resolved", |v| v["status"]["latest"]["digest"] == first.as_str());

    let (port, admin) = (free_port(), free_port());
    let mut replicas = Vec::new();
    for (i, host) in REPLICAS.iter().enumerate() {
        let config = w.dir.0.join(format!("gateway-{i}.yaml"));
        let sync = ConfigSync::start_on(&w.ns, host, &config, port, admin, &w.dir.0.join(format!("cache-{i}")));
        wait_for(WAIT, "the rendered gateway config", || config.exists().then_some(()));
        let mut cmd = Command::new(binary("ota-gateway"));
        cmd.args(["--config", config.to_str().unwrap()]);
        replicas.push((sync, Proc::spawn(cmd, &w.dir.0.join(format!("gateway-{i}.log")))));
    }
    let serving = |host: &str| {
        let (_, body) = http_on(host, port, "GET", "/version?device=fleet-dev", &[], "");
        body.lines().next().unwrap_or_default().to_owned()
    };
    let logs = || replicas.iter().map(|(_, p)| p.output()).collect::<Vec<_>>().join("\n---\n");
    // Time until every replica serves `want`, polled every 20 ms.
    let all_serve = |want: &str, since: Instant| -> Duration {
        let mut pending: Vec<&str> = REPLICAS.to_vec();
        while !pending.is_empty() {
            pending.retain(|host| serving(host) != want);
            assert!(since.elapsed() < Duration::from_secs(30), "{want} not served by {pending:?}\n{}", logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        since.elapsed()
    };
    all_serve(&version(0), Instant::now());

    // Pushes: the registry notifies the operator's receiver; the interval is an hour.
    let mut pushes = Vec::new();
    for i in 1..=ROUNDS {
        w.push(repository, &version(i), 4_000 + i);
        // `oras push` returns after the manifest PUT, the request the notification reports.
        pushes.push(all_serve(&version(i), Instant::now()));
    }
    // Pins back to an older release (an emergency rollback), each to another one.
    let mut pins = Vec::new();
    for i in 0..ROUNDS {
        let pin = format!("  version: {{pin: \"{}\"}}\n", version(i));
        let pinned = Instant::now();
        w.apply(&w.channel_yaml("fleet", repository, &pin));
        pins.push(all_serve(&version(i), pinned));
    }

    let report = |what: &str, samples: &mut Vec<Duration>| -> Duration {
        println!("{what} in order (ms): {:?}", samples.iter().map(Duration::as_millis).collect::<Vec<_>>());
        samples.sort();
        let ms: Vec<u128> = samples.iter().map(Duration::as_millis).collect();
        let rank = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        let (p50, p99) = (rank(0.50), rank(0.99));
        println!(
            "{what} → served by all {} replicas: p50 {} ms, p99 {} ms; all (ms, sorted): {ms:?}",
            REPLICAS.len(),
            p50.as_millis(),
            p99.as_millis()
        );
        p99
    };
    let push_p99 = report("push", &mut pushes);
    let pin_p99 = report("pin", &mut pins);

    // One config on every replica, and it came from the operator's endpoint.
    // The sample of the first series named `name` with every one of `labels`.
    let metric = |host: &str, name: &str, labels: &[&str]| -> f64 {
        let (_, body) = http_on(host, admin, "GET", "/metrics", &[], "");
        body.lines()
            .find(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|want| l.contains(want)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let revisions: Vec<f64> = REPLICAS.iter().map(|h| metric(h, "updraft_gateway_config_revision", &[])).collect();
    println!("config revision per replica: {revisions:?}");
    assert!(revisions.iter().all(|r| *r == revisions[0] && *r > 0.0), "{revisions:?}");
    for host in REPLICAS {
        let applied =
            metric(host, "updraft_gateway_config_updates_total", &["result=\"applied\"", "source=\"operator\""]);
        assert!(applied >= (2 * ROUNDS) as f64 * 0.9, "{host}: {applied} configs applied from the operator");
    }
    assert!(push_p99 < Duration::from_secs(2), "push p99 {push_p99:?}");
    assert!(pin_p99 < Duration::from_secs(2), "pin p99 {pin_p99:?}");
}

/// A deleted gateway ConfigMap is re-created at the revision the gateways were last
/// given, not from 1: the operator counts on from what its endpoint served as well as
/// from the ConfigMap, so running gateways take the configs that follow (they ignore
/// older revisions). Re-created at the end of the 30 s write hold at most. Only an
/// operator restarted in between starts from 1 again (README, "Config delivery").
#[test]
fn a_re_created_configmap_counts_on_from_what_the_gateways_were_given() {
    let w = Hooked::new("hook-recreate");
    let repository = "fw/recreate";
    let digests: Vec<String> = (0..3).map(|i| w.push(repository, &format!("1.{i}.0"), 4_000 + i).1).collect();
    w.apply(GATEWAY);
    let patience = Duration::from_secs(90);
    // The endpoint, as a gateway pod asks it, with the token the operator made for it.
    let token = wait_for(patience, "the gateway's config token", || {
        let template = "go-template={{.data.token | base64decode}}";
        let out = kubectl(&["get", "secret", "default-config-token", "-n", &w.ns, "-o", template], None);
        (out.success && !out.stdout.trim().is_empty()).then(|| out.stdout.trim().to_owned())
    });
    let bearer = format!("Bearer {token}");
    let path = format!("/v1/gateways/{}/default/config", w.ns);
    let served = || -> Option<(u64, String)> {
        let (status, body) = http_on("127.0.0.1", w.config_port, "GET", &path, &[("Authorization", &bearer)], "");
        let revision = serde_yaml::from_str::<Value>(&body).ok()?["revision"].as_u64()?;
        (status == 200).then_some((revision, body))
    };
    let stored = || -> Option<u64> {
        let map = w.get("configmap/default-config")?;
        let text = map["data"]["gateway.yaml"].as_str()?;
        serde_yaml::from_str::<Value>(text).ok()?["revision"].as_u64()
    };
    // Three renderings, each served before the next: the newest release, two pins.
    let mut given = 0;
    for (pin, digest) in [(None, &digests[2]), (Some("1.1.0"), &digests[1]), (Some("1.0.0"), &digests[0])] {
        let pin = pin.map(|p| format!("  version: {{pin: \"{p}\"}}\n")).unwrap_or_default();
        w.apply(&w.channel_yaml("recreate", repository, &pin));
        given = wait_for(patience, "the endpoint serves the rendering", || {
            served().filter(|(_, body)| body.contains(digest.as_str())).map(|(revision, _)| revision)
        });
    }
    assert!(given >= 3, "three renderings served, the last at revision {given}");
    wait_for(patience, "the ConfigMap at the revision served", || (stored() == Some(given)).then_some(()));

    let out = kubectl(&["delete", "configmap", "default-config", "-n", &w.ns], None);
    assert!(out.success, "{}", out.stderr);
    let again = wait_for(patience, "the ConfigMap re-created", stored);
    println!("revision served and stored before the delete: {given}; re-created at: {again}");
    assert!(again >= given, "re-created at revision {again}, below the {given} the gateways were given");
}
