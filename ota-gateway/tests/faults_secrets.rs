//! Secrets never leak: the gateway binary runs with planted values in every secret it
//! reads (registry credentials in a docker config, the ed25519 signing key, the MQTT
//! password, a webhook HMAC key) while things fail around it (registry errors through
//! the fault proxy, an unreachable registry, broker and webhook receiver), logging at
//! debug level. Its log, its metrics and every answer of its API are searched for the
//! planted values; the test first proves each secret was in use.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use e2e::faults::{Fault, FaultProxy, Rule};
use updraft_core::config::{MqttConfig, NotificationsConfig, WebhookConfig};

const RAW: &str = "application/vnd.updraft.firmware.v1";

/// Kills the gateway process when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_appear_in_no_log_metric_or_answer() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let tag = format!("{:016x}", rand::random::<u64>());
    let (user, password) = (format!("planted-user-{tag}"), format!("planted-pass-{tag}"));
    let (mqtt_password, hmac_key) = (format!("planted-mqtt-{tag}"), format!("planted-hmac-{tag}"));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));

    let repo = unique_repo("secrets");
    let firmware = random_bytes(20_000);
    let digest = push_file(&reg.addr, &repo, "1.0.0", dir, "fw.bin", RAW, &firmware);
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    // Three failed requests first: errors get logged with the credentials in hand.
    // The registry asks for credentials (a Basic challenge at /v2/), so they are sent.
    proxy.set_rules(vec![
        Rule::new(&repo, Fault::Status { code: 500, retry_after: None }).times(3),
        Rule::new("/v2/", Fault::BasicChallenge).exact(),
    ]);
    let dead = format!("127.0.0.1:{}", free_port());

    let docker_config = dir.join("config.json");
    let auths = serde_json::json!({"auths": {proxy.addr(): {"auth": basic}, dead.clone(): {"auth": basic}}});
    std::fs::write(&docker_config, auths.to_string()).unwrap();
    let key = dir.join("signing.pem");
    let out = Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
    let pem = std::fs::read_to_string(&key).unwrap();
    let key_body = pem.lines().find(|l| !l.starts_with("-----")).unwrap().to_owned();
    for (name, value) in [("mqtt-user", "planted-mqtt-user"), ("mqtt-pass", &mqtt_password), ("hmac", &hmac_key)] {
        std::fs::write(dir.join(name), value).unwrap();
    }

    let mut good = channel("good", &proxy.addr(), &repo, ("1.0.0", "1.0.0", &digest));
    good.source.docker_config = Some(docker_config.clone());
    let mut unreachable = channel("unreachable", &dead, &repo, ("1.0.0", "1.0.0", &digest));
    unreachable.source.docker_config = Some(docker_config.clone());
    let mut cfg = config(&dir.join("cache"), vec![good, unreachable]);
    let (port, admin) = (free_port(), free_port());
    cfg.listen = format!("127.0.0.1:{port}");
    cfg.admin_listen = format!("127.0.0.1:{admin}");
    cfg.signing_key_file = Some(key.clone());
    cfg.notifications = NotificationsConfig {
        mqtt: Some(MqttConfig {
            url: format!("mqtt://127.0.0.1:{}", free_port()),
            topic_prefix: "firmware/updates".into(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username_file: Some(dir.join("mqtt-user")),
            password_file: Some(dir.join("mqtt-pass")),
        }),
        webhooks: vec![WebhookConfig {
            url: format!("http://127.0.0.1:{}/hook", free_port()),
            secret_file: Some(dir.join("hmac")),
        }],
    };
    let config_file = dir.join("gateway.yaml");
    std::fs::write(&config_file, cfg.to_yaml()).unwrap();
    let log = dir.join("gateway.log");
    let file = std::fs::File::create(&log).unwrap();
    let _gateway = Child(
        Command::new(env!("CARGO_BIN_EXE_ota-gateway"))
            .arg("--config")
            .arg(&config_file)
            .env("RUST_LOG", "debug")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        let r = http.get(format!("{url}/firmware?device=good")).send().await;
        if r.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never served; log:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the unreachable registry, broker and webhook fail a few more times.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Each secret was in use, so finding none of them below means something.
    let seen = proxy.seen();
    assert!(seen.iter().any(|s| s.head.contains(&format!("Basic {basic}"))), "the registry credentials were sent");
    let failed = seen.iter().filter(|s| matches!(s.fault, Some(Fault::Status { .. }))).count();
    assert_eq!(failed, 3, "the registry failed first");
    let mut outputs = vec![("log".to_owned(), std::fs::read_to_string(&log).unwrap())];
    for path in [
        "/api/v1/channels",
        "/api/v1/channels/good",
        "/api/v1/channels/unreachable",
        "/version?device=good",
        "/version?device=unreachable",
        "/.well-known/updraft/signing-key.pub",
    ] {
        let body = http.get(format!("{url}{path}")).send().await.unwrap().text().await.unwrap();
        outputs.push((path.to_owned(), body));
    }
    let metrics = http.get(format!("http://127.0.0.1:{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    outputs.push(("/metrics".to_owned(), metrics));
    let info = &outputs.iter().find(|(p, _)| p == "/api/v1/channels/good").unwrap().1;
    assert!(info.contains("signature"), "answers are signed with the planted key: {info}");
    let log_text = &outputs[0].1;
    assert!(log_text.contains("fetch failed"), "failures were logged:\n{log_text}");

    let planted = [
        ("registry password", password.as_str()),
        ("registry auth", &basic),
        ("signing key", &key_body),
        ("MQTT password", &mqtt_password),
        ("HMAC key", &hmac_key),
    ];
    let mut leaks = Vec::new();
    for (what, value) in planted {
        for (place, text) in &outputs {
            if text.contains(value) {
                leaks.push(format!("{what} in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:?}");
    println!(
        "FIGURE secrets: 5 planted values, 0 found in {} bytes of debug log, /metrics and 6 API answers",
        outputs.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
}
