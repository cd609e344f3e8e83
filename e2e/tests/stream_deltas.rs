//! `.vcdiff` items in a simplestreams index (#23), against the real gateway binary,
//! the real registry and the real clients. Two builds of one image are uploaded: xz
//! squashfs images of about 10 MB of real files (this machine's Python library), the
//! second one package apart (a directory added, a file modified). The gateway builds the
//! delta in the background and lists it on the newest version as lxd-imagebuilder's
//! `--diff-products` does (`ftype` `squashfs.vcdiff`, `delta_base` the previous version).
//! The previous squashfs and the delta are downloaded, Debian's `xdelta3 -d` applies
//! the one to the other, and the result is the newest squashfs: its sha256 and size are
//! the ones the index advertises. The delta is under 10 % of the target; its size and
//! `xdelta3 -e -9`'s on the same pair are printed. `sstream-query` lists the delta item
//! with its base, and the base's metadata items carry the fingerprint the clients look
//! the base up by; `incus image list` and `lxc image list` still list the two images.
//! The build is counted on `/metrics`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::images::{cached_tool, ensure_tools, fingerprint, image_client, make_image, Pki};
use e2e::procs::{binary, free_port, wait_for, Proc, TempDir};
use e2e::{cluster, run};
use serde_json::Value;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(60);

/// The Python standard library of this machine (`/usr/lib/python3.N`): real files to
/// build a root file system from.
fn python_lib() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3.")))
        .find(|p| p.join("os.py").exists() && p.join("json").is_dir() && p.join("email").is_dir())
        .expect("a /usr/lib/python3.N with os.py, json/ and email/")
}

/// An image in `dir` whose root file system is about 10 MB of real files (Python's
/// top-level modules and a dozen of its packages, without bytecode). `upgraded` is the
/// next build after a one-package change: one package directory added
/// (`usr/lib/python3/dist-packages/newpkg`, a copy of `json/`) and one file modified
/// (a line of `os.py`). Compressed with xz, as LXD images are.
fn image(dir: &Path, upgraded: bool) {
    make_image(dir, "bookworm");
    let py = python_lib();
    let lib = dir.join("rootdir/usr/lib").join(py.file_name().unwrap());
    std::fs::create_dir_all(&lib).unwrap();
    for entry in std::fs::read_dir(&py).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, lib.join(path.file_name().unwrap())).unwrap();
        }
    }
    let packages = [
        "asyncio",
        "concurrent",
        "email",
        "http",
        "importlib",
        "json",
        "logging",
        "multiprocessing",
        "unittest",
        "urllib",
        "xml",
    ];
    for package in packages.iter().filter(|p| py.join(p).is_dir()) {
        run(Command::new("cp").arg("-r").arg(py.join(package)).arg(&lib));
    }
    if upgraded {
        let added = dir.join("rootdir/usr/lib/python3/dist-packages");
        std::fs::create_dir_all(&added).unwrap();
        run(Command::new("cp").arg("-r").arg(py.join("json")).arg(added.join("newpkg")));
        let os_py = lib.join("os.py");
        let text = std::fs::read_to_string(&os_py).unwrap();
        std::fs::write(&os_py, text.replacen("import abc", "import abc  # patched in the next build", 1)).unwrap();
    }
    run(Command::new("find").arg(dir.join("rootdir")).args([
        "-name",
        "__pycache__",
        "-prune",
        "-exec",
        "rm",
        "-rf",
        "{}",
        "+",
    ]));
    e2e::images::mksquashfs(&dir.join("rootdir"), &dir.join("rootfs.squashfs"));
}

/// The items `sstream-query --json` lists for the stream at `index_url`, trusting `ca`.
fn sstream_query(index_url: &str, ca: &Path) -> Vec<Value> {
    let out = Command::new(cached_tool("sstream-query"))
        .args(["--no-verify", "--json", index_url])
        .env("SSL_CERT_FILE", ca)
        .env("REQUESTS_CA_BUNDLE", ca)
        .output()
        .expect("sstream-query runs: `bash e2e/scripts/cluster.sh tools` installs it");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sstream-query: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("sstream-query --json: {e}\n{stdout}")))
        .flat_map(|v| match v {
            Value::Array(items) => items,
            item => vec![item],
        })
        .collect()
}

#[test]
fn the_newest_version_lists_a_vcdiff_that_xdelta3_applies_and_the_clients_list_the_stream_unchanged() {
    let started = Instant::now();
    ensure_tools();
    let xdelta3 = Path::new("/usr/bin/xdelta3");
    assert!(xdelta3.exists(), "xdelta3 is not installed: run `bash e2e/scripts/cluster.sh tools`");
    let dir = TempDir::new("stream-deltas");
    let pki_dir = dir.0.join("pki");
    let pki = Pki::new(&pki_dir);
    let (crt, key) = pki.cert();
    let ca = pki.ca();
    let token = dir.0.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let registry = &cluster().registry;
    let repository = format!("e2e/stream-deltas-{}", std::process::id());
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        "listen: 127.0.0.1:{http}\nadminListen: 127.0.0.1:{admin}\ncache: {{dir: \"{}\"}}\ntls: {{listen: \"127.0.0.1:{https}\", certFile: \"{}\", keyFile: \"{}\"}}\nchannels: []\nstreams:\n  - name: lab\n    source: {{upload: {{registry: \"{registry}\", repository: \"{repository}\", insecure: true, tokenFile: \"{}\", interval: 1s}}}}\n",
        dir.0.join("cache").display(),
        crt.display(),
        key.display(),
        token.display(),
    );
    let config_path = dir.0.join("gateway.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config_path.to_str().unwrap()]);
    let gateway = Proc::spawn(cmd, &dir.0.join("gateway.log"));
    let base = format!("https://127.0.0.1:{https}/streams/lab");
    let curl = |args: &[&str]| -> (u16, Vec<u8>) {
        let out = Command::new("curl")
            .args(["-s", "--cacert", ca.to_str().unwrap(), "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let at = out.stdout.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&out.stdout[at..]).trim().parse().unwrap_or(0);
        (code, out.stdout[..at].to_vec())
    };
    wait_for(WAIT, "the gateway serves the stream", || {
        (curl(&[&format!("{base}/streams/v1/index.json")]).0 == 200).then_some(())
    });

    // Two builds of one image, one package apart.
    let serials = ["20260101_00:00", "20260102_00:00"];
    let mut fingerprints = Vec::new();
    for (i, serial) in serials.iter().enumerate() {
        let img = dir.0.join(format!("img{i}"));
        image(&img, i == 1);
        fingerprints.push(fingerprint(&img.join("incus.tar.xz"), &img.join("rootfs.squashfs")));
        let at = format!("debian/bookworm/amd64/default/{serial}");
        for (file, name) in [("incus.tar.xz", "lxd.tar.xz"), ("rootfs.squashfs", "rootfs.squashfs")] {
            let form = format!("upload=@{};filename={at}/{name}", img.join(file).display());
            let (code, body) =
                curl(&["-F", &form, "-X", "POST", "-H", "Authorization: Bearer s3cret", &format!("{base}/images/")]);
            assert_eq!(code, 201, "{name}: {}\n{}", String::from_utf8_lossy(&body), gateway.output());
        }
    }

    // The delta is listed once built, on the newest version.
    let images: Value = wait_for(WAIT, "the index lists the delta", || {
        let (code, body) = curl(&[&format!("{base}/streams/v1/images.json")]);
        let v: Value = serde_json::from_slice(&body).ok()?;
        let items = &v["products"]["debian:bookworm:amd64:default"]["versions"][serials[1]]["items"];
        (code == 200 && items.as_object()?.values().any(|i| i["ftype"] == "squashfs.vcdiff")).then_some(v)
    });
    let versions = &images["products"]["debian:bookworm:amd64:default"]["versions"];
    let old = &versions[serials[0]]["items"];
    let new = &versions[serials[1]]["items"];
    assert!(old.as_object().unwrap().values().all(|i| i["ftype"] != "squashfs.vcdiff"), "the oldest has no base");
    let deltas: Vec<&Value> = new.as_object().unwrap().values().filter(|i| i["ftype"] == "squashfs.vcdiff").collect();
    assert_eq!(deltas.len(), 1, "{new:#}");
    let delta = deltas[0];
    assert_eq!(delta["delta_base"], serials[0]);
    let (old_root, new_root) = (&old["root.squashfs"], &new["root.squashfs"]);

    let download = |item: &Value, to: &Path| {
        let (code, body) = curl(&[&format!("{base}/{}", item["path"].as_str().unwrap())]);
        assert_eq!(code, 200, "{}: {}", item["path"], String::from_utf8_lossy(&body));
        assert_eq!(body.len() as u64, item["size"].as_u64().unwrap(), "{} size", item["path"]);
        assert_eq!(hex::encode(Sha256::digest(&body)), item["sha256"].as_str().unwrap(), "{} sha256", item["path"]);
        std::fs::write(to, body).unwrap();
    };
    let (base_file, delta_file, out) = (dir.0.join("base.squashfs"), dir.0.join("delta.vcdiff"), dir.0.join("out"));
    download(old_root, &base_file);
    download(delta, &delta_file);
    let status = Command::new(xdelta3).args(["-d", "-f", "-s"]).args([&base_file, &delta_file, &out]).status().unwrap();
    assert!(status.success(), "xdelta3 -d: {status}");
    let rebuilt = std::fs::read(&out).unwrap();
    assert_eq!(rebuilt.len() as u64, new_root["size"].as_u64().unwrap(), "size of base + delta");
    assert_eq!(hex::encode(Sha256::digest(&rebuilt)), new_root["sha256"].as_str().unwrap(), "sha256 of base + delta");
    // The size, against xdelta3 -e -9 on the same pair.
    let reference = dir.0.join("xdelta3.vcdiff");
    let new_file = dir.0.join("img1/rootfs.squashfs");
    let status =
        Command::new(xdelta3).args(["-e", "-9", "-f", "-s"]).args([&base_file, &new_file, &reference]).status();
    assert!(status.unwrap().success(), "xdelta3 -e");
    let (target, ours) = (new_root["size"].as_u64().unwrap(), delta["size"].as_u64().unwrap());
    let theirs = std::fs::metadata(&reference).unwrap().len();
    let pct = |n: u64| n as f64 * 100.0 / target as f64;
    println!(
        "squashfs (xz) base {} B, target {target} B; delta: gateway {ours} B ({:.2} %), xdelta3 -e -9 {theirs} B ({:.2} %)",
        old_root["size"],
        pct(ours),
        pct(theirs)
    );
    assert!(ours * 10 < target, "the delta is {:.2} % of the target (xdelta3 -e -9: {:.2} %)", pct(ours), pct(theirs));

    // python-simplestreams lists the delta item with its base, as the clients read it.
    let items = sstream_query(&format!("{base}/streams/v1/index.json"), &ca);
    let listed: Vec<&Value> = items.iter().filter(|i| i["ftype"] == "squashfs.vcdiff").collect();
    assert_eq!(listed.len(), 1, "sstream-query lists one squashfs.vcdiff: {items:#?}");
    let item = listed[0];
    assert_eq!(item["delta_base"], serials[0], "{item:#}");
    assert_eq!(item["version_name"], serials[1], "{item:#}");
    assert_eq!(item["product_name"], "debian:bookworm:amd64:default", "{item:#}");
    assert_eq!((&item["sha256"], &item["path"]), (&delta["sha256"], &delta["path"]), "{item:#}");
    // What Incus and LXD look the base up by: the base version's metadata items carry the
    // base image's combined squashfs fingerprint.
    for meta in items
        .iter()
        .filter(|i| i["version_name"] == serials[0] && (i["ftype"] == "incus.tar.xz" || i["ftype"] == "lxd.tar.xz"))
    {
        assert_eq!(meta["combined_squashfs_sha256"], fingerprints[0].as_str(), "{meta:#}");
    }

    // Both clients list the two images by their fingerprints, the delta notwithstanding.
    let home = dir.0.join("home");
    for tool in ["incus", "lxc"] {
        let client = |args: &[&str]| image_client(tool, &home, &ca, args);
        client(&["remote", "add", "lab", &base, "--protocol", "simplestreams", "--public"]);
        let csv = client(&["image", "list", "lab:", "--format", "csv", "-c", "Fl"]);
        let rows: Vec<&str> = csv.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(rows.len(), 2, "{tool} image list:\n{csv}");
        for f in &fingerprints {
            assert!(csv.contains(f.as_str()), "{tool} image list lacks {f}:\n{csv}");
        }
    }
    let metrics = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{admin}/metrics")]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let built = "updraft_gateway_stream_delta_builds_total{result=\"built\",stream=\"lab\"} 1";
    assert!(metrics.contains(built), "{built} in /metrics:\n{metrics}");
    drop(gateway);
    println!("stream_deltas: {:.1} s", started.elapsed().as_secs_f64());
}
