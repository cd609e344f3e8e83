//! Notifications against real components: Debian's `mosquitto` broker (plain, and TLS
//! with a test CA made by `openssl`, client certificates and a password file),
//! `mosquitto_sub` as the device, and an HTTP receiver in the test process whose
//! signatures are checked with `openssl dgst -hmac`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use common::*;
use e2e::pki::make_pki;
use e2e::run;
use updraft_core::config::{GatewayConfig, MqttConfig, WebhookConfig};

const RAW: &str = "application/vnd.updraft.firmware.v1";
const PREFIX: &str = "firmware/updates";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Installs mosquitto and its clients through `cluster.sh tools` when missing.
fn ensure_mosquitto() {
    let have = || Path::new("/usr/sbin/mosquitto").exists() && which("mosquitto_sub");
    if have() {
        return;
    }
    let out =
        Command::new("bash").arg(workspace().join("e2e/scripts/cluster.sh")).arg("tools").output().expect("cluster.sh");
    assert!(
        have(),
        "mosquitto is not installed and `cluster.sh tools` did not install it:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

/// A mosquitto process of the test's own, killed on drop. No persistence: a restarted
/// broker has forgotten every retained message.
struct Broker {
    port: u16,
    dir: PathBuf,
    extra: String,
    child: Option<Child>,
}

impl Broker {
    fn start(dir: &Path, extra: &str) -> Self {
        ensure_mosquitto();
        let mut broker = Self { port: free_port(), dir: dir.to_owned(), extra: extra.to_owned(), child: None };
        broker.restart();
        broker
    }

    /// Starts the broker (again) on the same port.
    fn restart(&mut self) {
        let config = self.dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("user root\npersistence false\nlistener {} 127.0.0.1\n{}\n", self.port, self.extra),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen; see {}",
                self.dir.join("mosquitto.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `mosquitto_sub` as a device: each message as `(arrival, topic, qos, retained, payload)`.
struct Device {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

#[derive(Debug)]
struct Message {
    at: Instant,
    qos: u8,
    retained: bool,
    json: serde_json::Value,
}

impl Device {
    /// Subscribes to `topic` with QoS 1; `args` adds TLS and credentials.
    fn subscribe(port: u16, topic: &str, args: &[&str]) -> Self {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-F", "%t %q %r %p"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto_sub");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        Self { child, lines }
    }

    fn try_next(&self) -> Option<Message> {
        self.lines.try_recv().ok().map(parse)
    }

    fn next(&self, within: Duration) -> Message {
        parse(self.lines.recv_timeout(within).unwrap_or_else(|e| panic!("no MQTT message within {within:?}: {e}")))
    }
}

/// The retained message of `topic` once the gateway has published it: waits for a
/// first message (live or retained), then subscribes anew, as a device that boots
/// later does.
fn retained(port: u16, topic: &str, args: &[&str]) -> Message {
    let once = [args, &["-C", "1", "-W", "30"]].concat();
    Device::subscribe(port, topic, &once).next(Duration::from_secs(30));
    let msg = Device::subscribe(port, topic, &once).next(Duration::from_secs(30));
    assert!(msg.retained, "retained: {msg:?}");
    msg
}

fn parse((at, line): (Instant, String)) -> Message {
    let mut parts = line.splitn(4, ' ');
    let (_topic, qos, retained, payload) =
        (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
    Message {
        at,
        qos: qos.parse().unwrap(),
        retained: retained == "1",
        json: serde_json::from_str(payload).unwrap_or_else(|e| panic!("payload {payload:?}: {e}")),
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mqtt(url: String) -> MqttConfig {
    MqttConfig {
        url,
        topic_prefix: PREFIX.into(),
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        username_file: None,
        password_file: None,
    }
}

/// The message devices get must say what the OtaFlux API serves, field for field.
async fn assert_matches_otaflux(gw: &Gateway, msg: &Message, version: &str, payload: &[u8]) {
    let body = gw.wait_ok("/version?device=esp32").await.text().await.unwrap();
    let lines: Vec<&str> = body.split('\n').collect();
    assert_eq!(lines[0], version);
    assert_eq!(msg.json["version"], version, "{}", msg.json);
    assert_eq!(msg.json["size"].as_u64(), Some(payload.len() as u64));
    assert_eq!(msg.json["size"].to_string(), lines[2]);
    assert_eq!(msg.json["crc32"].to_string(), lines[1]);
    assert_eq!(msg.json["sha256"], sha256_hex(payload));
    assert_eq!(msg.json["url"], "/firmware?device=esp32");
    assert_eq!(msg.qos, 1, "QoS 1");
}

/// OtaFlux's topic and payload, retained with QoS 1; a new release and a rollback are
/// each published, and a device that reacts at once to the message downloads the
/// release it announces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_announces_ready_releases_as_otaflux_does() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let broker = Broker::start(work.path(), "allow_anonymous true");
    let repo = unique_repo("notify");
    let (v1, v2) = (random_bytes(5000), random_bytes(4 << 20));
    let d1 = push_file(&reg.addr, &repo, "1.0.0", work.path(), "v1.bin", RAW, &v1);
    let d2 = push_file(&reg.addr, &repo, "2.0.0", work.path(), "v2.bin", RAW, &v2);
    let cache = work.path().join("cache");
    let config = |current: (&str, &str, &str), previous: Option<(&str, &str, &str)>| {
        let mut ch = channel("esp32", &reg.addr, &repo, current);
        ch.previous = previous.map(pinned);
        let mut c = config(&cache, vec![ch]);
        c.notifications.mqtt = Some(mqtt(format!("mqtt://127.0.0.1:{}", broker.port)));
        c
    };
    let gw = Gateway::start(config(("1.0.0", "1.0.0", &d1), None)).await;

    // A device that subscribes later still gets the release: the message is retained.
    let msg = retained(broker.port, &format!("{PREFIX}/esp32"), &[]);
    assert_matches_otaflux(&gw, &msg, "1.0.0", &v1).await;

    // A new release: announced once it is cached and verified, never before.
    let device = Device::subscribe(broker.port, &format!("{PREFIX}/esp32"), &["-W", "60"]);
    assert_eq!(device.next(Duration::from_secs(10)).json["version"], "1.0.0", "the retained message first");
    let applied = Instant::now();
    gw.state.apply(config(("2.0.0", "2.0.0", &d2), Some(("1.0.0", "1.0.0", &d1)))).unwrap();
    // Measurement: a poller asks /version back to back and notes when 2.0.0 is first
    // served; the device notes when the message arrives.
    let poller = {
        let (http, url) = (gw.http.clone(), gw.url.clone());
        tokio::spawn(async move {
            loop {
                let body = http.get(format!("{url}/version?device=esp32")).send().await.unwrap().text().await.unwrap();
                if body.starts_with("2.0.0") {
                    return Instant::now();
                }
            }
        })
    };
    let announced = loop {
        if let Some(msg) = device.try_next() {
            assert_eq!(msg.json["version"], "2.0.0", "nothing but the new release: {msg:?}");
            // The device reacts at once: the download is the announced release.
            let body = gw.get("/firmware?device=esp32").await;
            assert_eq!(body.status(), 200);
            assert_eq!(sha256_hex(&body.bytes().await.unwrap()), sha256_hex(&v2));
            break msg;
        }
        assert!(applied.elapsed() < Duration::from_secs(60), "no message for 2.0.0");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_matches_otaflux(&gw, &announced, "2.0.0", &v2).await;
    let served = poller.await.unwrap();
    let (to_msg, to_served) = (announced.at.duration_since(applied), served.duration_since(applied));
    let gap = if announced.at >= served {
        format!("+{:?}", announced.at - served)
    } else {
        format!("-{:?}", served - announced.at)
    };
    eprintln!("MEASURED 4 MiB release: apply->served {to_served:?}, apply->MQTT message at mosquitto_sub {to_msg:?}, served->message {gap}");

    // Reapplying the same config publishes nothing new; a rollback publishes again.
    gw.state.apply(config(("2.0.0", "2.0.0", &d2), Some(("1.0.0", "1.0.0", &d1)))).unwrap();
    gw.state.apply(config(("1.0.0", "1.0.0", &d1), Some(("2.0.0", "2.0.0", &d2)))).unwrap();
    let rollback = device.next(Duration::from_secs(30));
    assert_matches_otaflux(&gw, &rollback, "1.0.0", &v1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(device.try_next().is_none(), "one message per release");
}

/// `mqtts://` with the broker's certificate checked against a test CA, a client
/// certificate and a user name and password from files; the device uses TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_with_client_certificate_and_credentials() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let pki = work.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_pki(&pki);
    let passwd = pki.join("passwd");
    run(Command::new("mosquitto_passwd").args(["-b", "-c"]).arg(&passwd).args(["gateway", "s3cret"]));
    let p = |f: &str| pki.join(f).display().to_string();
    let broker = Broker::start(
        work.path(),
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nallow_anonymous false\npassword_file {}",
            p("ca.crt"),
            p("server.crt"),
            p("server.key"),
            passwd.display()
        ),
    );
    std::fs::write(pki.join("user"), "gateway\n").unwrap();
    std::fs::write(pki.join("password"), "s3cret\n").unwrap();
    let repo = unique_repo("notify-tls");
    let v1 = random_bytes(7000);
    let d1 = push_file(&reg.addr, &repo, "1.0.0", work.path(), "v1.bin", RAW, &v1);
    let mut c = config(&work.path().join("cache"), vec![channel("esp32", &reg.addr, &repo, ("1.0.0", "1.0.0", &d1))]);
    c.notifications.mqtt = Some(MqttConfig {
        ca_file: Some(pki.join("ca.crt")),
        client_cert_file: Some(pki.join("client.crt")),
        client_key_file: Some(pki.join("client.key")),
        username_file: Some(pki.join("user")),
        password_file: Some(pki.join("password")),
        ..mqtt(format!("mqtts://127.0.0.1:{}", broker.port))
    });
    let gw = Gateway::start(c.clone()).await;

    let (ca, cert, key) = (p("ca.crt"), p("client.crt"), p("client.key"));
    let tls = ["--cafile", &ca, "--cert", &cert, "--key", &key, "-u", "gateway", "-P", "s3cret"];
    let msg = retained(broker.port, &format!("{PREFIX}/esp32"), &tls);
    assert_matches_otaflux(&gw, &msg, "1.0.0", &v1).await;

    // A wrong password is refused by the broker: nothing is published, serving goes on.
    let work2 = tempfile::tempdir().unwrap();
    let mut wrong = Broker::start(work2.path(), &broker.extra);
    std::fs::write(pki.join("password"), "wrong").unwrap();
    let mut c2 = c;
    c2.cache.dir = work2.path().join("cache");
    c2.notifications.mqtt.as_mut().unwrap().url = format!("mqtts://127.0.0.1:{}", wrong.port);
    let gw2 = Gateway::start(c2).await;
    gw2.wait_ok("/firmware?device=esp32").await;
    let tls_short =
        ["--cafile", &ca, "--cert", &cert, "--key", &key, "-u", "gateway", "-P", "s3cret", "-C", "1", "-W", "3"];
    let none = Device::subscribe(wrong.port, &format!("{PREFIX}/esp32"), &tls_short);
    assert!(none.lines.recv_timeout(Duration::from_secs(5)).is_err(), "a refused client publishes nothing");
    wrong.stop();
}

/// A broker that is down delays the message and loses nothing: serving goes on, and
/// the latest release is retained as soon as the (restarted, empty) broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_delays_and_loses_nothing() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(work.path(), "allow_anonymous true");
    let port = broker.port;
    let repo = unique_repo("notify-down");
    let (v1, v2) = (random_bytes(5000), random_bytes(6000));
    let d1 = push_file(&reg.addr, &repo, "1.0.0", work.path(), "v1.bin", RAW, &v1);
    let d2 = push_file(&reg.addr, &repo, "2.0.0", work.path(), "v2.bin", RAW, &v2);
    let cache = work.path().join("cache");
    let config = |current: (&str, &str, &str)| {
        let mut c = config(&cache, vec![channel("esp32", &reg.addr, &repo, current)]);
        c.notifications.mqtt = Some(mqtt(format!("mqtt://127.0.0.1:{port}")));
        c
    };
    let gw = Gateway::start(config(("1.0.0", "1.0.0", &d1))).await;
    let first = Device::subscribe(broker.port, &format!("{PREFIX}/esp32"), &["-C", "1", "-W", "30"]);
    assert_eq!(first.next(Duration::from_secs(30)).json["version"], "1.0.0");

    broker.stop();
    gw.state.apply(config(("2.0.0", "2.0.0", &d2))).unwrap();
    // Serving is unaffected while the broker is down.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = Instant::now();
        let body = gw.get("/version?device=esp32").await.text().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "a request took {:?}", started.elapsed());
        if body.starts_with("2.0.0") {
            break;
        }
        assert!(Instant::now() < deadline, "2.0.0 not served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let download = gw.get("/firmware?device=esp32").await;
    assert_eq!(sha256_hex(&download.bytes().await.unwrap()), sha256_hex(&v2));

    // The broker comes back with no retained state; the gateway reconnects and
    // publishes the latest release, which a new device gets as a retained message.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let back = Instant::now();
    broker.restart();
    let device = Device::subscribe(broker.port, &format!("{PREFIX}/esp32"), &["-W", "60"]);
    let msg = device.next(Duration::from_secs(30));
    eprintln!("MEASURED broker restart->latest message at a device {:?}", msg.at.duration_since(back));
    assert_matches_otaflux(&gw, &msg, "2.0.0", &v2).await;
}

/// What the receiver saw: headers and raw body of each request.
type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// An HTTP receiver that answers 500 to the first attempt of every delivery (by its
/// `X-Updraft-Delivery`), then 204.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = state.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                let id = headers.get("x-updraft-delivery").cloned();
                let first = !seen.iter().any(|(h, _)| h.get("x-updraft-delivery") == id.as_ref());
                seen.push((headers, body.to_vec()));
                if first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// `openssl dgst -sha256 -hmac KEY` over `body`, as `sha256=<hex>`.
fn openssl_hmac(dir: &Path, key: &str, body: &[u8]) -> String {
    let file = dir.join("body.json");
    std::fs::write(&file, body).unwrap();
    let out = run(Command::new("openssl").args(["dgst", "-sha256", "-hmac", key, "-r"]).arg(&file));
    format!("sha256={}", out.split_whitespace().next().unwrap())
}

async fn wait_for(seen: &Seen, n: usize, within: Duration) -> Vec<(HeaderMap, Vec<u8>)> {
    let deadline = Instant::now() + within;
    loop {
        let now = seen.lock().unwrap().clone();
        if now.len() >= n {
            return now;
        }
        assert!(Instant::now() < deadline, "{} of {n} webhook requests within {within:?}", now.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JSON POST per ready release, signed with HMAC-SHA256 over the body (checked with
/// openssl), retried with the same delivery id after a 500; a failed verification is
/// reported too; a receiver that never answers blocks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_never_block_serving() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let (url, seen) = receiver().await;
    // A receiver that accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}/hook", hang.local_addr().unwrap());
    let key = work.path().join("hmac-key");
    std::fs::write(&key, "team-secret\n").unwrap();

    let repo = unique_repo("notify-hook");
    let good = random_bytes(9000);
    let d1 = push_file(&reg.addr, &repo, "1.0.0", work.path(), "good.bin", RAW, &good);
    let bad_repo = unique_repo("notify-corrupt");
    let bad = random_bytes(8000);
    let bad_digest = push_file(&reg.addr, &bad_repo, "3.0.0", work.path(), "bad.bin", RAW, &bad);
    let hex = sha256_hex(&bad);
    std::fs::write(
        reg.dir.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2])),
        random_bytes(8000),
    )
    .unwrap();

    let mut broken = channel("broken", &reg.addr, &bad_repo, ("3.0.0", "v3.0.0", &bad_digest));
    broken.device = Some("stm32".into());
    let mut c: GatewayConfig =
        config(&work.path().join("cache"), vec![channel("esp32", &reg.addr, &repo, ("1.0.0", "v1.0.0", &d1)), broken]);
    c.notifications.webhooks = vec![
        WebhookConfig { url: hang_url, secret_file: None },
        WebhookConfig { url: url.clone(), secret_file: Some(key.clone()) },
    ];
    let gw = Gateway::start(c).await;
    let started = Instant::now();
    gw.wait_ok("/version?device=esp32").await;
    assert!(started.elapsed() < Duration::from_secs(10), "serving waited for webhooks");

    // ready and failed, each refused once with a 500 and retried.
    let requests = wait_for(&seen, 4, Duration::from_secs(30)).await;
    let event = |h: &HeaderMap| h["x-updraft-event"].to_str().unwrap().to_owned();
    let ready: Vec<_> = requests.iter().filter(|(h, _)| event(h) == "release.ready").collect();
    assert_eq!(ready.len(), 2, "one delivery, retried once after the 500");
    assert_eq!(ready[0].0["x-updraft-delivery"], ready[1].0["x-updraft-delivery"], "a retry keeps its delivery id");
    assert_eq!(ready[0].1, ready[1].1, "a retry sends the same body");
    let id = ready[0].0["x-updraft-delivery"].to_str().unwrap();
    assert_eq!(id.len(), 36, "uuid-like: {id}");
    for (headers, body) in &requests {
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-updraft-signature"].to_str().unwrap(), openssl_hmac(work.path(), "team-secret", body));
    }
    let json: serde_json::Value = serde_json::from_slice(&ready[0].1).unwrap();
    assert_eq!(json["event"], "release.ready");
    assert_eq!(json["channel"], "esp32");
    assert_eq!(json["device"], "esp32");
    assert_eq!(json["version"], "1.0.0");
    assert_eq!(json["tag"], "v1.0.0");
    assert_eq!(json["digest"], d1.as_str());
    assert_eq!(json["size"], good.len() as u64);
    assert_eq!(json["sha256"], sha256_hex(&good));

    let failed: Vec<_> = requests.iter().filter(|(h, _)| event(h) == "release.failed").collect();
    assert_eq!(failed.len(), 2, "the corrupted release is reported once (and retried once)");
    assert_eq!(failed[0].0["x-updraft-delivery"], failed[1].0["x-updraft-delivery"]);
    assert_ne!(failed[0].0["x-updraft-delivery"], ready[0].0["x-updraft-delivery"]);
    let json: serde_json::Value = serde_json::from_slice(&failed[0].1).unwrap();
    assert_eq!(json["channel"], "broken");
    assert_eq!(json["digest"], bad_digest.as_str());
    assert!(json["reason"].as_str().unwrap().contains("digest"), "{json}");
    assert_eq!(gw.get("/version?device=stm32").await.status(), 502, "the corrupted release is not served");

    // The hanging receiver is still being waited on; serving does not care.
    let t = Instant::now();
    assert_eq!(gw.get("/version?device=esp32").await.status(), 200);
    assert!(t.elapsed() < Duration::from_millis(500));
    // A reload that rebuilds the channel without changing its release announces nothing.
    let mut again = gw.state.config().as_ref().clone();
    again.channels[0].rollout = 50;
    gw.state.apply(again).unwrap();
    gw.wait_ok("/version?device=esp32").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(seen.lock().unwrap().len(), 4, "no more deliveries than events and retries");

    // A new release, then a rollback to the old one: each announced, the rollback flagged.
    let newer = random_bytes(9500);
    let d2 = push_file(&reg.addr, &repo, "2.0.0", work.path(), "newer.bin", RAW, &newer);
    let pin = |current: (&str, &str, &str), previous: (&str, &str, &str)| {
        let mut c = gw.state.config().as_ref().clone();
        c.channels[0].rollout = 100;
        c.channels[0].current = Some(pinned(current));
        c.channels[0].previous = Some(pinned(previous));
        c
    };
    gw.state.apply(pin(("2.0.0", "v2.0.0", &d2), ("1.0.0", "v1.0.0", &d1))).unwrap();
    let requests = wait_for(&seen, 6, Duration::from_secs(30)).await;
    let upgrade: serde_json::Value = serde_json::from_slice(&requests[5].1).unwrap();
    assert_eq!((upgrade["version"].as_str(), upgrade.get("rollback")), (Some("2.0.0"), None), "{upgrade}");
    gw.state.apply(pin(("1.0.0", "v1.0.0", &d1), ("2.0.0", "v2.0.0", &d2))).unwrap();
    let requests = wait_for(&seen, 8, Duration::from_secs(30)).await;
    let rollback: serde_json::Value = serde_json::from_slice(&requests[7].1).unwrap();
    assert_eq!((rollback["version"].as_str(), rollback["rollback"].as_bool()), (Some("1.0.0"), Some(true)));
    assert_eq!(
        requests[7].0["x-updraft-signature"].to_str().unwrap(),
        openssl_hmac(work.path(), "team-secret", &requests[7].1)
    );
    drop(hang);
}
