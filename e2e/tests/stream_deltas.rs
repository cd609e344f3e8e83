//! `.vcdiff` items in a simplestreams index (#23), against the real gateway binary,
//! the real registry and the real clients. Two versions of one product are uploaded
//! (squashfs images one file apart, made with mksquashfs); the gateway builds the delta
//! in the background and lists it on the newest version as lxd-imagebuilder's
//! `--diff-products` does (`ftype` `squashfs.vcdiff`, `delta_base` the previous version).
//! The previous squashfs and the delta are downloaded, Debian's `xdelta3 -d` applies
//! the one to the other, and the result is the newest squashfs: its sha256 and size are
//! the ones the index advertises. `incus image list` and `lxc image list` still list
//! the two images, by their fingerprints, with the delta present.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::images::{ensure_tools, fingerprint, image_client, make_image, Pki};
use e2e::procs::{binary, free_port, wait_for, Proc, TempDir};
use e2e::{cluster, run};
use serde_json::Value;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(60);

/// An image in `dir` whose root file system holds `shared` (the same in every version)
/// and a file that differs by `seed`.
fn image(dir: &Path, seed: &str, shared: &[u8]) {
    make_image(dir, seed);
    let root = dir.join("rootdir");
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::write(root.join("usr/lib/shared.bin"), shared).unwrap();
    std::fs::write(root.join("usr/lib/package.txt"), format!("package {seed}\n").repeat(2000)).unwrap();
    run(Command::new("mksquashfs").arg(&root).arg(dir.join("rootfs.squashfs")).args([
        "-noappend",
        "-all-root",
        "-comp",
        "xz",
        "-mkfs-time",
        "1767225600",
        "-all-time",
        "1767225600",
        "-quiet",
    ]));
}

#[test]
fn the_newest_version_lists_a_vcdiff_that_xdelta3_applies_and_the_clients_list_the_stream_unchanged() {
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

    // Two versions: 1 MiB of incompressible bytes shared, one file changed.
    let mut shared = vec![0u8; 1 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in shared.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let serials = ["20260101_00:00", "20260102_00:00"];
    let mut fingerprints = Vec::new();
    for (i, serial) in serials.iter().enumerate() {
        let img = dir.0.join(format!("img{i}"));
        image(&img, &format!("v{i}"), &shared);
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
    println!("squashfs {} B → delta {} B (base {} B)", new_root["size"], delta["size"], old_root["size"]);
    assert!(delta["size"].as_u64().unwrap() * 4 < new_root["size"].as_u64().unwrap(), "the delta is small");

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
    drop(gateway);
}
