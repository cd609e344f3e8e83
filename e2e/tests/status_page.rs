//! The operator's status page in a real browser: the real operator binary against
//! kube-apiserver 1.20 serves `GET /` on its admin port, and Debian's `chromium
//! --headless` loads it, with JavaScript on and off. The test reads the DOM chromium
//! built, as a person would read the page: the channel's chart has a bar per version
//! and state whose figure and height match the census written to the channel's status,
//! the paused rollout is marked with its step and reason, the gateway's channel, stream
//! and mirror rows are there with their status figures, the operator's own events are
//! listed, a condition message holding markup shows as text, and no Secret value is on
//! it. It keeps a screenshot under `target/test-artifacts/status-page.png`.
//!
//! The pause is real: the channel rolls 1.1.0 out in steps and no gateway replica
//! answers for the census, so the operator pauses it at step 1 (`NoFigures`). The
//! census figures are written to the channel's status subresource by the test (a JSON
//! patch, as the API server takes it from any client): with no census gathered the
//! operator keeps the figures it read, and the test checks they stayed before loading.
//! The markup is in an Event's message, as anything able to create Events could write it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::conditions::is;
use e2e::procs::{oras_push, wait_for};
use e2e::world::World;
use e2e::{cluster, kubectl, repo_root};
use serde_json::{json, Value};

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const SECRET_VALUE: &str = "s3cr3t-w4n-k3y-never-shown";
const XSS: &str = "<script>alert(1)</script>";

/// The census written to the channel: (version, offered, downloaded, running), newest first.
const CENSUS: [(&str, i64, i64, i64); 2] = [("1.1.0", 40, 36, 12), ("1.0.0", 90, 88, 85)];
/// The tallest bar's height in pixels (`operator/src/page/chart.rs`).
const PLOT_HEIGHT: i64 = 160;

/// PATCHes `body` (a JSON patch) to `path` on the API server, with the kubeconfig's
/// token and CA (kubectl 1.20 cannot patch a subresource).
fn json_patch(path: &str, body: &Value) {
    let kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&cluster().kubeconfig).unwrap()).unwrap();
    let server = kubeconfig["clusters"][0]["cluster"]["server"].as_str().unwrap();
    let ca = kubeconfig["clusters"][0]["cluster"]["certificate-authority"].as_str().unwrap();
    let token = kubeconfig["users"][0]["user"]["token"].as_str().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert", ca, "-X", "PATCH"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json-patch+json"])
        .args(["--data-binary", &body.to_string(), &format!("{server}{path}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PATCH {path}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's chromium, headless, on a fresh profile, with nothing in the background;
/// with `javascript` false, the profile blocks every script. (Not
/// `--blink-settings=scriptEnabled=false`: headless chromium then dumps no DOM and
/// takes no screenshot, since it drives the page through script itself.)
fn chromium(javascript: bool, args: &[&str]) -> String {
    let profile = e2e::procs::TempDir::new("chromium-profile");
    if !javascript {
        std::fs::create_dir_all(profile.0.join("Default")).unwrap();
        let preferences = json!({"profile": {"default_content_setting_values": {"javascript": 2}}});
        std::fs::write(profile.0.join("Default/Preferences"), preferences.to_string()).unwrap();
    }
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(args)
        .output()
        .expect("chromium runs (cluster.sh tools installs it)");
    assert!(out.status.success(), "chromium {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Proves the profile [`chromium`] uses without JavaScript runs no script: a page whose
/// script would rewrite a paragraph keeps it.
fn javascript_is_off(dir: &Path) {
    let probe = dir.join("probe.html");
    std::fs::write(
        &probe,
        "<!DOCTYPE html><p id=p>scripts-off</p><script>document.getElementById('p').textContent='scripts-on'</script>",
    )
    .unwrap();
    let url = format!("file://{}", probe.display());
    assert!(chromium(true, &["--dump-dom", &url]).contains("<p id=\"p\">scripts-on</p>"), "the probe's script runs");
    assert!(chromium(false, &["--dump-dom", &url]).contains("<p id=\"p\">scripts-off</p>"), "JavaScript is not off");
}

/// The DOM without its `<time>` elements (ages move between two loads).
fn timeless(dom: &str) -> String {
    let mut out = String::new();
    let mut rest = dom;
    while let Some(start) = rest.find("<time") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("</time>").expect("a closed <time>") + start + "</time>".len();
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The value of attribute `name` in the tag text `tag` (`<rect a="1" ...`).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[start..start + tag[start..].find('"')?])
}

/// Every `<rect` tag of the chart: (version, state, devices, height).
fn bars(dom: &str) -> Vec<(String, String, i64, i64)> {
    dom.split("<rect ")
        .skip(1)
        .map(|t| {
            let tag = &t[..t.find('>').unwrap()];
            let get = |n: &str| attr(tag, n).unwrap_or_else(|| panic!("a bar without {n}: {tag}"));
            (
                get("data-version").into(),
                get("data-state").into(),
                get("data-devices").parse().unwrap(),
                get("height").parse().unwrap(),
            )
        })
        .collect()
}

/// `target/test-artifacts`, created.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_browser_shows_the_fleet_as_the_status_says() {
    let w = World::new("status-page").ready();
    let ns = w.ns.clone();
    let fw = w.dir.0.join("fw.bin");
    std::fs::write(&fw, vec![7u8; 2048]).unwrap();
    oras_push(&w.repository, "v1.0.0", &fw, MEDIA_TYPE);
    kubectl(
        &["create", "secret", "generic", "wan-key", "-n", &ns, &format!("--from-literal=key={SECRET_VALUE}")],
        None,
    )
    .ok();
    let registry = &cluster().registry;
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  interval: 2s\n  source: {{registry: \"{registry}\", repository: \"{}\", insecure: true}}\n  rollout: {{steps: [5, 25, 50, 100], dwell: 1s, timeout: 3s}}\n",
        w.repository
    ));
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: ImageStream\nmetadata: {{name: images}}\nspec:\n  interval: 1h\n  source: {{oci: {{registry: \"{registry}\", repository: \"e2e/{ns}/images\", insecure: true}}}}\n"
    ));
    w.apply(
        "apiVersion: updraft.dev/v1alpha1\nkind: ArtifactMirror\nmetadata: {name: to-wan}\nspec:\n  interval: 1h\n  dryRun: true\n  include: [\"*.bin\"]\n  source: {oci: {registry: \"127.0.0.1:15000\", repository: e2e/releases, insecure: true}}\n  destination: {http: {url: \"http://127.0.0.1:9\", keySecret: wan-key, allowPlainHttp: true}}\n",
    );

    // The first release goes to every device; the next one rolls out in steps and, with
    // no census to judge them by, pauses at the first.
    w.wait("fwc/esp32", "1.0.0 resolved and Ready", |v| {
        v["status"]["latest"]["version"] == "1.0.0" && is(v, "Ready", "True")
    });
    oras_push(&w.repository, "v1.1.0", &fw, MEDIA_TYPE);
    w.wait("fwc/esp32", "1.1.0 paused at step 1", |v| {
        v["status"]["latest"]["version"] == "1.1.0" && v["status"]["rollout"]["paused"] == true
    });
    w.wait("imagestream/images", "a status with conditions", |v| v["status"]["conditions"].is_array());
    w.wait("artifactmirror/to-wan", "a status with conditions", |v| v["status"]["conditions"].is_array());
    let census: Vec<Value> = CENSUS
        .iter()
        .map(|&(version, offered, downloaded, running)| {
            json!({"version": version, "offered": offered, "downloaded": downloaded, "running": running})
        })
        .collect();
    let stamp = e2e::run(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])).trim().to_owned();
    json_patch(
        &format!("/apis/updraft.dev/v1alpha1/namespaces/{ns}/firmwarechannels/esp32/status"),
        &json!([
            {"op": "add", "path": "/status/devices", "value": {
                "window": "24h", "total": 130, "byVersion": census, "replicas": 2, "observedAt": &stamp}},
        ]),
    );
    // An event whose message holds markup.
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "esp32.markup", "namespace": &ns},
        "involvedObject": {"apiVersion": "updraft.dev/v1alpha1", "kind": "FirmwareChannel", "name": "esp32", "namespace": &ns},
        "reason": "Annotated", "type": "Normal", "message": format!("a note {XSS}"),
        "firstTimestamp": &stamp, "lastTimestamp": &stamp, "count": 1,
        "source": {"component": "e2e"}
    });
    kubectl(&["create", "-f", "-"], Some(&event.to_string())).ok();
    // The operator saw the change (a watch event, a reconcile) and left the figures alone.
    std::thread::sleep(Duration::from_secs(3));
    let ch = w.get("fwc/esp32").unwrap();
    assert_eq!(ch["status"]["devices"]["byVersion"][1]["running"], 85, "{ch:#}");
    assert_eq!(ch["status"]["rollout"]["paused"], true, "{ch:#}");
    let stream = w.get("imagestream/images").unwrap();
    let mirror = w.get("artifactmirror/to-wan").unwrap();

    let url = format!("http://127.0.0.1:{}/", w.admin);
    // The operator's own events (NewVersion at least) are listed before the browser looks.
    wait_for(Duration::from_secs(30), "the NewVersion event on the page", || {
        let (code, body) = e2e::curl(&[&url]);
        (code == 200 && String::from_utf8_lossy(&body).contains("data-reason=\"NewVersion\"")).then_some(())
    });

    javascript_is_off(&w.dir.0);
    let dom = chromium(true, &["--dump-dom", &url]);
    let dom_without_js = chromium(false, &["--dump-dom", &url]);
    assert!(dom.contains("<h1>Updraft status</h1>"), "{dom}");

    // The chart: one bar per version and state, oldest version left, its figure and a
    // height proportional to it (the tallest: 90 devices offered 1.0.0).
    let max = CENSUS.iter().flat_map(|v| [v.1, v.2, v.3]).max().unwrap();
    let mut expected = Vec::new();
    for &(version, offered, downloaded, running) in CENSUS.iter().rev() {
        for (state, n) in [("offered", offered), ("downloaded", downloaded), ("running", running)] {
            expected.push((version.to_owned(), state.to_owned(), n, (n * PLOT_HEIGHT + max / 2) / max));
        }
    }
    assert_eq!(bars(&dom), expected);
    assert!(dom.contains("<title>1.0.0: Running 85 devices</title>"));
    // The paused rollout, its step and why; the markup in its message is text.
    let paused = &dom[dom.find("data-paused=\"true\"").expect("the paused badge")..];
    let paused = &paused[..paused.find("</p>").unwrap()];
    assert!(paused.contains("Rollout paused at step 1 (5 %)"), "{paused}");
    assert!(paused.contains("NoFigures: paused at step 1 (5 %): no device census from gateway"), "{paused}");
    assert!(dom.contains("data-adoption=\"33\""), "12 of 36 run the newest release");
    assert!(dom.contains("5 % · step 1 of 4"), "{dom}");
    // The markup in the event's message is text.
    assert!(dom.contains("a note &lt;script&gt;alert(1)&lt;/script&gt;"), "{dom}");
    // The rows, with the figures their status holds.
    assert!(dom.contains("<tr data-channel=\"esp32\"><td>esp32</td><td><code>1.1.0</code></td>"));
    let row = |kind: &str, name: &str| {
        let start = dom.find(&format!("<tr data-{kind}=\"{name}\">")).unwrap_or_else(|| panic!("no {kind} row: {dom}"));
        dom[start..start + dom[start..].find("</tr>").unwrap()].to_owned()
    };
    let stream_row = row("stream", "images");
    let figures = format!(
        "<td class=\"num\">{}</td><td class=\"num\">{}</td>",
        stream["status"]["products"].as_i64().unwrap_or(0),
        stream["status"]["versions"].as_i64().unwrap_or(0)
    );
    assert!(stream_row.contains(&figures), "{stream_row} vs {:#}", stream["status"]);
    let mirror_row = row("mirror", "to-wan");
    let figures = format!(
        "<td class=\"num\">{}</td><td class=\"num\">{}</td>",
        mirror["status"]["inSync"].as_i64().unwrap_or(0),
        mirror["status"]["pending"].as_i64().unwrap_or(0)
    );
    assert!(mirror_row.contains(&figures) && mirror_row.contains("dry run"), "{mirror_row} vs {:#}", mirror["status"]);
    assert!(dom.contains("id=\"gateway-") && dom.contains(&format!("in {ns}")));
    // The events, from the API server.
    assert!(dom.contains("data-reason=\"NewVersion\""), "{dom}");
    // Nothing that loads or runs anything; no Secret value.
    for absent in ["<script", "<link", "<img", "<iframe", " src=", " href=", "url(", "@import", "=\"http", SECRET_VALUE]
    {
        assert!(!dom.contains(absent), "{absent} in the page:\n{dom}");
    }
    // With JavaScript off the browser builds the same document.
    assert_eq!(timeless(&dom), timeless(&dom_without_js), "the page differs with JavaScript off");

    let png = artifacts().join("status-page.png");
    let _ = std::fs::remove_file(&png);
    // As a person with JavaScript off sees it.
    chromium(
        false,
        &[&format!("--screenshot={}", png.display()), "--window-size=1280,1600", "--hide-scrollbars", &url],
    );
    check_png(&png);
    println!("status page screenshot: {}", png.display());
}

/// A PNG of the window's size, and not a blank one.
fn check_png(png: &Path) {
    let bytes = std::fs::read(png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (width, height) =
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert_eq!((width, height), (1280, 1600));
    assert!(bytes.len() > 20_000, "a {}-byte screenshot is blank", bytes.len());
}
