//! The container images, built without a Docker engine by `e2e/scripts/images.sh`:
//! pushed to the local registry, pulled back with skopeo, unpacked, and run from the
//! unpacked root filesystem alone (chroot, as the image's user 65532) — the operator
//! against the real API server, the gateway answering its health check. A second run
//! of the script rebuilds and pushes nothing; the chart's image references resolve.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::helm::{chart_dir, helm};
use e2e::procs::{free_port, wait_for, Proc, TempDir};
use e2e::{cluster, install_crds, kubectl, namespace, repo_root, run};

/// One line of `images.sh` output.
#[derive(Debug, Clone, PartialEq)]
struct Image {
    name: String,
    reference: String,
    digest: String,
    built: String,
    pushed: String,
}

fn images_sh() -> Vec<Image> {
    let cluster = cluster();
    let out = Command::new("bash")
        .arg(repo_root().join("e2e/scripts/images.sh"))
        .arg("push")
        .env("UPDRAFT_REGISTRY", &cluster.registry)
        .env_remove("UPDRAFT_IMAGE_TAG")
        .env_remove("UPDRAFT_IMAGE_PREFIX")
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "images.sh failed (its messages are above)");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "unexpected images.sh line {l:?}");
            Image {
                name: f[0].into(),
                reference: f[1].into(),
                digest: f[2].into(),
                built: f[3].into(),
                pushed: f[4].into(),
            }
        })
        .collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn blob(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// Pulls `image` back from the registry into an OCI layout, checks its manifest and
/// config, and unpacks its layers into `rootfs`. Returns the image config.
fn pull_and_unpack(image: &Image, dir: &Path, rootfs: &Path) -> serde_json::Value {
    let layout = dir.join(format!("pulled-{}", image.name));
    let tag = image.reference.rsplit_once(':').unwrap().1;
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}", image.reference),
        &format!("oci:{}:{tag}", layout.display()),
    ]));
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["manifests"][0]["digest"], image.digest.as_str(), "the registry serves another manifest");
    let manifest = read_json(&blob(&layout, &image.digest));
    let config = read_json(&blob(&layout, manifest["config"]["digest"].as_str().unwrap()));
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    std::fs::create_dir_all(rootfs).unwrap();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        let file = blob(&layout, layer["digest"].as_str().unwrap());
        // The uncompressed layer is the one the config promises.
        let sum = run(Command::new("sh").arg("-c").arg(format!("gzip -dc '{}' | sha256sum", file.display())));
        assert_eq!(format!("sha256:{}", sum.split_whitespace().next().unwrap()), diff_id.as_str().unwrap());
        run(Command::new("tar").arg("-xzf").arg(&file).arg("-C").arg(rootfs));
    }
    config
}

/// Runs `/usr/local/bin/<bin> args` from `rootfs` and nothing else: chrooted as the
/// image's user when root, otherwise through the packaged loader and libraries only.
fn command_in(rootfs: &Path, bin: &str, args: &[&str]) -> Command {
    if is_root() {
        // Found on the host's PATH: the child's own PATH is the image's.
        let chroot = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join("chroot"))
            .find(|p| p.is_file())
            .expect("chroot is installed (coreutils)");
        let mut cmd = Command::new(chroot);
        cmd.arg("--userspec=65532:65532").arg(rootfs).arg(format!("/usr/local/bin/{bin}")).args(args);
        cmd.env_clear().env("PATH", "/usr/local/bin");
        cmd
    } else {
        let loader = rootfs.join("lib64/ld-linux-x86-64.so.2");
        let libs: Vec<String> = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib"]
            .iter()
            .map(|d| rootfs.join(d).display().to_string())
            .collect();
        let mut cmd = Command::new(loader);
        cmd.args(["--inhibit-cache", "--library-path", &libs.join(":")])
            .arg(rootfs.join("usr/local/bin").join(bin))
            .args(args);
        cmd
    }
}

fn http_status(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn images_are_pushed_pulled_back_and_run_from_their_own_root_filesystem() {
    let cluster = cluster();
    let version = env!("CARGO_PKG_VERSION");
    let images = images_sh();
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["operator", "ota-gateway"]);
    for image in &images {
        assert_eq!(image.reference, format!("{}/updraft/{}:{version}", cluster.registry, image.name));
        assert!(image.digest.starts_with("sha256:") && image.digest.len() == 71, "{image:?}");
        assert!(["pushed", "present"].contains(&image.pushed.as_str()), "{image:?}");
    }

    let dir = TempDir::new("images");
    for (image, bin) in images.iter().zip(["updraft-operator", "ota-gateway"]) {
        let rootfs = dir.0.join(format!("rootfs-{}", image.name));
        let config = pull_and_unpack(image, &dir.0, &rootfs);
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["Entrypoint"], serde_json::json!([format!("/usr/local/bin/{bin}")]));
        assert_eq!(config["config"]["Labels"]["org.opencontainers.image.version"], version);

        let out = command_in(&rootfs, bin, &["--version"]).output().unwrap();
        assert!(
            out.status.success(),
            "{bin} --version from the image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{bin} {version}"));
    }

    if is_root() {
        serve_from_images(&dir.0);
    }

    // Nothing changed: nothing is rebuilt or pushed, and the digests are the same.
    let again = images_sh();
    for (first, second) in images.iter().zip(&again) {
        assert_eq!((&second.reference, &second.digest), (&first.reference, &first.digest));
        assert_eq!((second.built.as_str(), second.pushed.as_str()), ("unchanged", "present"), "{second:?}");
    }

    // The chart, pointed at this registry, references exactly these images.
    let operator_repo = format!("{}/updraft/operator", cluster.registry);
    let gateway_repo = format!("{}/updraft/ota-gateway", cluster.registry);
    let rendered = helm(&[
        "template",
        "updraft",
        chart_dir().to_str().unwrap(),
        "--set",
        &format!("image.repository={operator_repo}"),
        "--set",
        &format!("gatewayImage.repository={gateway_repo}"),
        "--show-only",
        "templates/deployment.yaml",
    ])
    .ok();
    let deployment: serde_yaml::Value = serde_yaml::from_str(&rendered).unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let operator_ref = container["image"].as_str().unwrap().to_owned();
    let gateway_ref = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--gateway-image="))
        .expect("the operator is told the gateway image")
        .to_owned();
    for (reference, image) in [(operator_ref, &images[0]), (gateway_ref, &images[1])] {
        assert_eq!(reference, image.reference);
        let raw = run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ]));
        use sha2::Digest;
        assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(raw.as_bytes()))), image.digest);
    }
}

/// The unpacked images do their jobs: the operator, chrooted with a kubeconfig copied in,
/// reaches the real API server over TLS, wins leader election and starts its
/// controllers; the gateway starts from a config file and serves its admin port.
fn serve_from_images(dir: &Path) {
    let cluster = cluster();
    install_crds();
    let ns = namespace("images");

    let rootfs = dir.join("rootfs-operator");
    let kubeconfig = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let ca_line = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("certificate-authority:"))
        .expect("kubeconfig has a CA file");
    let ca_path = ca_line.split_once(':').unwrap().1.trim();
    let run_dir = rootfs.join("run/updraft");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::copy(ca_path, run_dir.join("ca.crt")).unwrap();
    std::fs::write(run_dir.join("kubeconfig"), kubeconfig.replace(ca_path, "/run/updraft/ca.crt")).unwrap();
    let admin = free_port();
    let identity = format!("image-test-{:08x}", rand::random::<u32>());
    let mut cmd = command_in(
        &rootfs,
        "updraft-operator",
        &["--namespace", &ns, "--admin-addr", &format!("127.0.0.1:{admin}"), "--leader-elect"],
    );
    cmd.env("KUBECONFIG", "/run/updraft/kubeconfig").env("POD_NAMESPACE", &ns).env("POD_NAME", &identity);
    let operator = Proc::spawn(cmd, &dir.join("operator.log"));
    // It takes the Lease, as the chart runs it: a write over TLS with the service's identity.
    wait_for(Duration::from_secs(60), "the operator from its image to take the Lease", || {
        let holder =
            kubectl(&["get", "lease", "updraft-operator", "-n", &ns, "-o", "jsonpath={.spec.holderIdentity}"], None);
        (holder.success && holder.stdout == identity && operator.output().contains("controllers started")).then_some(())
    });
    assert_eq!(
        http_status(&format!("http://127.0.0.1:{admin}/healthz")).as_deref(),
        Some("200"),
        "{}",
        operator.output()
    );
    drop(operator);

    let rootfs = dir.join("rootfs-ota-gateway");
    let (http, admin) = (free_port(), free_port());
    let config = format!("listen: 127.0.0.1:{http}\nadminListen: 127.0.0.1:{admin}\ncache:\n  dir: /tmp/cache\n  maxBytes: 1048576\nchannels: []\n");
    std::fs::create_dir_all(rootfs.join("etc/updraft")).unwrap();
    std::fs::write(rootfs.join("etc/updraft/gateway.yaml"), config).unwrap();
    let gateway = Proc::spawn(
        command_in(&rootfs, "ota-gateway", &["--config", "/etc/updraft/gateway.yaml"]),
        &dir.join("gateway.log"),
    );
    wait_for(Duration::from_secs(30), "the gateway from its image to answer /healthz", || {
        (http_status(&format!("http://127.0.0.1:{admin}/healthz")).as_deref() == Some("200")).then_some(())
    });
    let metrics = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{admin}/metrics")]).output().unwrap();
    assert!(String::from_utf8_lossy(&metrics.stdout).contains("updraft_gateway_"), "{}", gateway.output());
}
