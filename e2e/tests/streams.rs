//! The ImageStream controller end to end: the real operator binary against
//! kube-apiserver 1.20 and the real registry. An OtaGateway with TLS and an upload
//! token serves an upload stream: the stream's status (URL over https, remote-add
//! commands, products and versions from the manifests' annotations, Ready), the rendered
//! ConfigMap's `streams` and `tls` sections, the Service's https port, the Secrets
//! mounted; malformed streams are `Stalled` naming the field and never rendered. An OCI
//! stream pushed with `oras` as `incus image export` writes it is counted from the
//! images' own `metadata.yaml` and, under `spec.verify`, only signed versions count
//! (signatures made with openssl, independently of the verifier); an upstream stream
//! counts what nginx serves as a static simplestreams tree, and keeps its counts when
//! nginx is gone.

use std::process::Command;
use std::time::Duration;

use e2e::conditions::{condition, is};
use e2e::cosign::{Key, Repository};
use e2e::images::{image_client, make_image, Pki};
use e2e::procs::{binary, free_port, wait_for, Proc};
use e2e::run;
use e2e::world::{OnUnknownField, World};
use e2e::{cluster, kubectl};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The steps only this file takes.
trait Streams {
    fn tls_secret(&self, name: &str);
}

impl Streams for World {
    /// A self-signed certificate for the gateway's Service name, as a `kubernetes.io/tls`
    /// Secret (what cert-manager writes).
    fn tls_secret(&self, name: &str) {
        let (crt, key) = (self.dir.0.join("tls.crt"), self.dir.0.join("tls.key"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", &format!("/CN=default.{}.svc", self.ns)])
            .args(["-keyout", key.to_str().unwrap(), "-out", crt.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cert = format!("--cert={}", crt.display());
        let key = format!("--key={}", key.display());
        kubectl(&["create", "secret", "tls", name, "-n", &self.ns, &cert, &key], None).ok();
    }
}

/// The operator ready; applying puts this checkout's CRDs back for up to 30 s when
/// kubectl reports an unknown field.
fn world(name: &str) -> World {
    World::new(name).ready().on_unknown_field(OnUnknownField::ReinstallCrds(Duration::from_secs(30)))
}

fn stream_yaml(name: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: ImageStream\nmetadata: {{name: {name}}}\nspec:\n  interval: 2s\n  source: {source}\n{extra}"
    )
}

#[test]
fn an_upload_stream_on_a_tls_gateway_is_indexed_rendered_and_ready() {
    let w = world("streams");
    let registry = &cluster().registry;
    let repository = format!("e2e/{}/images", w.ns);
    w.tls_secret("gateway-cert");
    kubectl(&["create", "secret", "generic", "upload", "-n", &w.ns, "--from-literal=token=s3cret"], None).ok();
    w.apply(
        "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec:\n  tls: {secretName: gateway-cert}\n  uploadTokenSecret: {name: upload, key: token}\n",
    );
    let upload = format!(
        "{{upload: {{registry: \"{registry}\", repository: \"{repository}\", insecure: true, allowDelete: true}}}}"
    );
    w.apply(&stream_yaml("images", &upload, "  keepVersions: 2\n"));

    // No upload yet: the repository does not exist, the stream is served and empty.
    let v = w.wait("imgs/images", "Ready with 0 versions", |v| is(v, "Ready", "True"));
    assert_eq!((v["status"]["products"].as_i64(), v["status"]["versions"].as_i64()), (Some(0), Some(0)), "{v:#}");
    let url = format!("https://default.{}.svc:8443/streams/images", w.ns);
    assert_eq!(v["status"]["url"], url);
    assert_eq!(
        v["status"]["remoteAdd"],
        serde_json::json!([
            format!("incus remote add images {url} --protocol simplestreams --public"),
            format!("lxc remote add images {url} --protocol simplestreams --public"),
        ])
    );
    assert!(is(&v, "Stalled", "False") && is(&v, "Reconciling", "False"), "{v:#}");

    // Two versions of one product and one of another, stored as the gateway stores
    // uploads (tag and annotations); the operator reads the annotations, not the bytes.
    let file = w.dir.0.join("lxd.tar.xz");
    std::fs::write(&file, b"not really an image: the operator reads the annotations").unwrap();
    for (product, serial) in [
        ("debian:bookworm:amd64:default", "20260101_00:00"),
        ("debian:bookworm:amd64:default", "20260102_00:00"),
        ("debian:bookworm:arm64:default", "20260101_00:00"),
    ] {
        push_upload(&repository, product, serial, &file, false);
    }
    // A tombstone (an upload deleted through the gateway) is not a version.
    push_upload(&repository, "debian:bookworm:arm64:default", "20251231_00:00", &file, true);
    let v = w.wait("imgs/images", "3 versions of 2 products", |v| {
        v["status"]["versions"] == 3 && v["status"]["products"] == 2 && is(v, "Ready", "True")
    });
    assert!(v["status"]["lastIndexed"].is_string(), "{v:#}");
    let ready = condition(&v, "Ready").unwrap()["message"].as_str().unwrap().to_owned();
    assert!(ready.contains("3 versions of 2 products") && !ready.contains("https only"), "{ready}");
    let table = kubectl(&["get", "-n", &w.ns, "imgs/images", "--no-headers"], None).ok();
    assert!(table.contains(&url) && table.contains("True"), "{table}");
    let events = kubectl(&["get", "events.events.k8s.io", "-n", &w.ns, "-o", "json"], None).ok();
    assert!(events.contains("\"Ready\"") && events.contains("\"Indexed\""), "{events}");
    assert!(events.contains("3 versions of 2 products (were 0 of 0)"), "{events}");

    // The gateway renders the stream's source (not its versions), TLS, and mounts both Secrets.
    let rendered = |v: &Value| -> Value { serde_yaml::from_str(v["data"]["gateway.yaml"].as_str().unwrap()).unwrap() };
    let cm =
        w.wait("configmap/default-config", "the stream rendered", |v| rendered(v)["streams"][0]["name"] == "images");
    let config = rendered(&cm);
    let source = &config["streams"][0]["source"]["upload"];
    assert_eq!(source["repository"].as_str(), Some(repository.as_str()), "{config:#?}");
    assert_eq!(source["tokenFile"], "/etc/updraft/upload-token/token");
    assert_eq!(source["allowDelete"], true);
    assert_eq!(config["streams"][0]["keepVersions"], 2);
    assert_eq!(config["tls"]["listen"], "0.0.0.0:8443");
    assert_eq!(config["tls"]["certFile"], "/etc/updraft/tls/tls.crt");
    assert!(!cm["data"]["gateway.yaml"].as_str().unwrap().contains("20260101"), "versions are never rendered");
    let svc = w.get("service/default").unwrap();
    let https = svc["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == "https").cloned();
    let https = https.unwrap_or_else(|| panic!("no https port: {svc:#}"));
    assert_eq!((https["port"].as_i64(), https["protocol"].as_str()), (Some(8443), Some("TCP")));
    let deployment = w.get("deployment/default").unwrap();
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    let secret_of = |name: &str| {
        volumes.as_array().unwrap().iter().find(|v| v["name"] == name).map(|v| v["secret"]["secretName"].clone())
    };
    assert_eq!(secret_of("tls"), Some("gateway-cert".into()), "{volumes:#}");
    assert_eq!(secret_of("upload-token"), Some("upload".into()), "{volumes:#}");
    w.wait("otagw/default", "the stream attached", |v| {
        v["status"]["attached"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["kind"] == "ImageStream" && r["name"] == "images"))
    });

    // Malformed streams stall naming the field, and are never rendered.
    w.apply(&stream_yaml("filtered", &upload, "  filters: [colour=red]\n"));
    w.apply(&stream_yaml("mirror", "{upstream: {url: \"images.example.org\"}}", ""));
    w.apply(&stream_yaml("badrepo", &upload.replace(&repository, "Upper/Case"), ""));
    for (name, field) in
        [("filtered", "filters"), ("mirror", "source.upstream.url"), ("badrepo", "source.upload.repository")]
    {
        let v = w.wait(&format!("imgs/{name}"), "Stalled", |v| is(v, "Stalled", "True"));
        let stalled = condition(&v, "Stalled").unwrap();
        assert_eq!(stalled["reason"], "InvalidSpec");
        assert!(stalled["message"].as_str().unwrap().starts_with(field), "{name}: {stalled}");
        assert!(is(&v, "Ready", "False"));
    }
    let cm = w.get("configmap/default-config").unwrap();
    let names: Vec<Value> = rendered(&cm)["streams"].as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, ["images"]);

    // Without the upload token on its gateway, an upload stream cannot work: Stalled.
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: plain}\nspec: {}\n");
    w.apply(&stream_yaml("tokenless", &upload, "  gatewayRef: plain\n"));
    let v = w.wait("imgs/tokenless", "Stalled", |v| is(v, "Stalled", "True"));
    let message = condition(&v, "Stalled").unwrap()["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("source.upload") && message.contains("uploadTokenSecret"), "{message}");
    // Giving the gateway a token un-stalls it, over plain http with a hint about https.
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: plain}\nspec:\n  uploadTokenSecret: {name: upload, key: token}\n");
    let v = w.wait("imgs/tokenless", "Ready over http", |v| is(v, "Ready", "True") && is(v, "Stalled", "False"));
    assert_eq!(v["status"]["url"], format!("http://plain.{}.svc:8080/streams/tokenless", w.ns));
    let message = condition(&v, "Ready").unwrap()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("https only: set spec.tls"), "{message}");
}

/// Pushes `file` as the metadata layer of a version stored the way the gateway stores
/// uploads, with a stand-in rootfs layer (a version without one is not listed, so not
/// counted): tag `<os>_<release>_<arch>_<variant>_<YYYYMMDD>_<HHMM>` and the product and
/// serial annotations (`deleted`: a tombstone).
fn push_upload(repository: &str, product: &str, serial: &str, file: &std::path::Path, deleted: bool) -> String {
    let tag = format!("{}_{}", product.replace(':', "_"), serial.replace(':', ""));
    let mut cmd = Command::new("oras");
    cmd.current_dir(file.parent().unwrap())
        .args(["push", "--plain-http", &format!("{}/{repository}:{tag}", cluster().registry)])
        .args(["--annotation", &format!("dev.updraft.simplestreams.product={product}")])
        .args(["--annotation", &format!("dev.updraft.simplestreams.serial={serial}")]);
    if deleted {
        cmd.args(["--annotation", "dev.updraft.simplestreams.deleted=true"]);
    }
    let name = file.file_name().unwrap().to_str().unwrap();
    std::fs::write(file.with_file_name("rootfs.squashfs"), b"rootfs stand-in").unwrap();
    cmd.arg(format!("{name}:application/vnd.updraft.simplestreams.metadata.v1.tar+xz"));
    cmd.arg("rootfs.squashfs:application/vnd.updraft.simplestreams.rootfs.v1.squashfs");
    let out = run(&mut cmd);
    out.lines().find_map(|l| l.strip_prefix("Digest: ")).unwrap_or_else(|| panic!("no digest: {out}")).trim().to_owned()
}

#[test]
fn incus_lists_what_is_uploaded_through_the_gateway_the_operator_configured() {
    let w = world("streams-serve");
    let registry = &cluster().registry;
    let repository = format!("e2e/{}/uploads", w.ns);
    let pki = w.dir.0.join("pki");
    Pki::new(&pki);
    let (crt, key) =
        (format!("--cert={}", pki.join("tls.crt").display()), format!("--key={}", pki.join("tls.key").display()));
    kubectl(&["create", "secret", "tls", "gateway-cert", "-n", &w.ns, &crt, &key], None).ok();
    kubectl(&["create", "secret", "generic", "upload", "-n", &w.ns, "--from-literal=token=s3cret"], None).ok();
    w.apply(
        "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec:\n  tls: {secretName: gateway-cert}\n  uploadTokenSecret: {name: upload, key: token}\n",
    );
    let upload = format!("{{upload: {{registry: \"{registry}\", repository: \"{repository}\", insecure: true}}}}");
    w.apply(&stream_yaml("lab", &upload, ""));
    w.wait("imgs/lab", "Ready", |v| is(v, "Ready", "True"));
    let cm = w.wait("configmap/default-config", "the stream rendered", |v| {
        v["data"]["gateway.yaml"].as_str().is_some_and(|y| y.contains("name: lab"))
    });

    // No kubelet here: run the gateway binary from the rendered ConfigMap, with the
    // listeners, the cache and the mounted Secret files moved to this machine.
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let mut config: Value = serde_yaml::from_str(cm["data"]["gateway.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(config["tls"]["certFile"], "/etc/updraft/tls/tls.crt");
    assert_eq!(config["streams"][0]["source"]["upload"]["tokenFile"], "/etc/updraft/upload-token/token");
    config["listen"] = format!("127.0.0.1:{http}").into();
    config["adminListen"] = format!("127.0.0.1:{admin}").into();
    config["cache"]["dir"] = w.dir.0.join("cache").to_str().unwrap().into();
    config["tls"]["listen"] = format!("127.0.0.1:{https}").into();
    config["tls"]["certFile"] = pki.join("tls.crt").to_str().unwrap().into();
    config["tls"]["keyFile"] = pki.join("tls.key").to_str().unwrap().into();
    std::fs::write(pki.join("token"), "s3cret\n").unwrap();
    config["streams"][0]["source"]["upload"]["tokenFile"] = pki.join("token").to_str().unwrap().into();
    let config_path = w.dir.0.join("gateway.yaml");
    std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let mut cmd = Command::new(binary("ota-gateway"));
    cmd.args(["--config", config_path.to_str().unwrap()]);
    let gateway = Proc::spawn(cmd, &w.dir.0.join("gateway.log"));
    let base = format!("https://127.0.0.1:{https}/streams/lab");
    let ca = pki.join("ca.pem");
    let curl = |args: &[&str]| -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "--cacert", ca.to_str().unwrap(), "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    };
    wait_for(WAIT, "the gateway serves the stream over https", || {
        (curl(&[&format!("{base}/streams/v1/index.json")]).0 == 200).then_some(())
    });

    // Upload one image (docker-simplestreams-server's API) with the token the Secret holds.
    let img = w.dir.0.join("img");
    std::fs::create_dir_all(&img).unwrap();
    make_image(&img, &w.ns);
    let dir = "debian/bookworm/amd64/default/20260101_00:00";
    for (file, name) in [("incus.tar.xz", "lxd.tar.xz"), ("rootfs.squashfs", "rootfs.squashfs")] {
        let form = format!("upload=@{};filename={dir}/{name}", img.join(file).display());
        let (code, body) =
            curl(&["-F", &form, "-X", "POST", "-H", "Authorization: Bearer s3cret", &format!("{base}/images/")]);
        assert_eq!(code, 201, "{name}: {body}\n{}", gateway.output());
    }

    // The upload landed in the repository the operator observes.
    w.wait("imgs/lab", "1 version of 1 product", |v| v["status"]["versions"] == 1 && v["status"]["products"] == 1);

    // incus and lxc add the remote with the command status gives (the URL pointed here).
    let v = w.get("imgs/lab").unwrap();
    let home = w.dir.0.join("home");
    for (i, tool) in ["incus", "lxc"].into_iter().enumerate() {
        let command =
            v["status"]["remoteAdd"][i].as_str().unwrap().replace(v["status"]["url"].as_str().unwrap(), &base);
        let args: Vec<&str> = command.split(' ').collect();
        assert_eq!(args[0], tool);
        let client = |args: &[&str]| image_client(tool, &home, &ca, args);
        client(&args[1..]);
        let csv = client(&["image", "list", "lab:", "--format", "csv", "-c", "lat"]);
        assert!(csv.to_lowercase().contains("debian") && csv.contains("x86_64"), "{tool} image list:\n{csv}");
    }
}

/// An image as `incus image export` writes it, with no annotations: its metadata
/// tarball (`meta-<n>.tar.xz`, `metadata.yaml` created at `created`) and a root file
/// system, pushed with `oras` under their file names. Returns the manifest digest.
fn push_exported(dir: &std::path::Path, repository: &str, tag: &str, arch: &str, created: i64) -> String {
    let work = dir.join(format!("export-{tag}-{arch}"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("metadata.yaml"),
        format!(
            "architecture: {arch}\ncreation_date: {created}\nproperties:\n  os: Debian\n  release: bookworm\n  variant: default\n  description: Debian bookworm\ntemplates: {{}}\n"
        ),
    )
    .unwrap();
    let meta = format!("meta-{tag}.tar.xz");
    run(Command::new("tar").args(["-cJf", &meta, "metadata.yaml"]).current_dir(&work));
    let rootfs = format!("{tag}.squashfs");
    std::fs::write(work.join(&rootfs), format!("a root file system of {tag} {arch}")).unwrap();
    let out = run(Command::new("oras").current_dir(&work).args([
        "push",
        "--plain-http",
        &format!("{}/{repository}:{tag}", cluster().registry),
        &meta,
        &rootfs,
    ]));
    out.lines().find_map(|l| l.strip_prefix("Digest: ")).unwrap_or_else(|| panic!("no digest: {out}")).trim().to_owned()
}

fn message<'a>(v: &'a Value, type_: &str) -> &'a str {
    condition(v, type_).and_then(|c| c["message"].as_str()).unwrap_or("")
}

#[test]
fn an_oci_stream_counts_exported_images_and_under_verify_only_signed_ones() {
    let w = world("streams-oci");
    let registry = &cluster().registry;
    let repository = format!("e2e/{}/exported", w.ns);
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    let oci = format!("{{oci: {{registry: \"{registry}\", repository: \"{repository}\", insecure: true}}}}");

    // Two versions of amd64, one of arm64: products and serials from metadata.yaml only.
    let v1 = push_exported(&w.dir.0, &repository, "20260101", "x86_64", 1767225600);
    let v2 = push_exported(&w.dir.0, &repository, "20260102", "x86_64", 1767312000);
    let arm = push_exported(&w.dir.0, &repository, "20260101-arm", "aarch64", 1767225600);
    w.apply(&stream_yaml("lab", &oci, ""));
    let v = w.wait("imgs/lab", "3 versions of 2 products", |v| {
        v["status"]["versions"] == 3 && v["status"]["products"] == 2 && is(v, "Ready", "True")
    });
    assert!(is(&v, "SourceReachable", "True"), "{v:#}");
    assert!(condition(&v, "Verified").is_none(), "no spec.verify, no Verified: {v:#}");
    // keepVersions counts as the gateway indexes: at most one per product.
    w.apply(&stream_yaml("lab", &oci, "  keepVersions: 1\n"));
    w.wait("imgs/lab", "2 versions of 2 products", |v| v["status"]["versions"] == 2 && v["status"]["products"] == 2);

    // Under spec.verify with no key Secret yet: Stalled naming the field.
    let verify = "  verify: {provider: cosign, publicKeySecret: {name: stream-keys}}\n";
    w.apply(&stream_yaml("lab", &oci, verify));
    let v = w.wait("imgs/lab", "Stalled on the missing Secret", |v| is(v, "Stalled", "True"));
    let stalled = condition(&v, "Stalled").unwrap();
    assert_eq!(stalled["reason"], "SecretNotFound");
    assert!(message(&v, "Stalled").starts_with("spec.verify.publicKeySecret"), "{stalled}");

    // The key appears: v1 signed in cosign 2's tag scheme, v2 and arm unsigned.
    let keys = w.dir.0.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = Key::generate(&keys, "cosign");
    let signed = Repository { registry, name: &repository, dir: &keys };
    signed.sign_with_tag(&key, &v1);
    let from_file = format!("--from-file=cosign.pub={}", key.public_file().display());
    kubectl(&["create", "secret", "generic", "stream-keys", "-n", &w.ns, &from_file], None).ok();
    let v = w.wait("imgs/lab", "1 signed version indexed, Verified=False", |v| {
        is(v, "Stalled", "False") && is(v, "Verified", "False") && v["status"]["versions"] == 1
    });
    assert_eq!(v["status"]["products"], 1, "{v:#}");
    let refused = message(&v, "Verified");
    assert!(refused.contains("2 of 3 image versions are not indexed"), "{refused}");
    for (tag, digest) in [("20260102", &v2), ("20260101-arm", &arm)] {
        assert!(refused.contains(&format!("tag {tag} ({digest})")), "{tag}: {refused}");
    }
    assert!(refused.contains("no cosign signature"), "{refused}");
    assert_eq!(condition(&v, "Verified").unwrap()["reason"], "NoSignature");
    assert!(!refused.contains(&v1), "v1 verifies: {refused}");

    // Signing the rest (v2 as cosign 3 does, a bundle referrer) indexes them.
    signed.sign_with_bundle(&key, &v2);
    signed.sign_with_tag(&key, &arm);
    let v = w.wait("imgs/lab", "Verified", |v| is(v, "Verified", "True") && v["status"]["versions"] == 3);
    assert!(message(&v, "Verified").contains("all 3 image versions"), "{v:#}");
    let events = kubectl(&["get", "events.events.k8s.io", "-n", &w.ns, "-o", "json"], None).ok();
    assert!(events.contains("\"Unverified\"") && events.contains("\"Verified\""), "{events}");
    assert!(events.contains(&format!("tag 20260102 ({v2})")), "the event names tag and digest: {events}");

    // The gateway's config points at the key file its Deployment mounts.
    let rendered = |v: &Value| -> Value { serde_yaml::from_str(v["data"]["gateway.yaml"].as_str().unwrap()).unwrap() };
    let cm = w.wait("configmap/default-config", "the stream's verify rendered", |v| {
        !rendered(v)["streams"][0]["verify"].is_null()
    });
    assert_eq!(
        rendered(&cm)["streams"][0]["verify"]["publicKeyFiles"],
        serde_json::json!(["/etc/updraft/verify/lab/cosign.pub"])
    );
    let deployment = w.get("deployment/default").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/updraft/verify/lab")
        .unwrap_or_else(|| panic!("no key mount: {pod:#}"))
        .clone();
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(volume["secret"]["secretName"], "stream-keys");
    assert_eq!(volume["secret"]["items"][0]["key"], "cosign.pub");

    // verify with an upstream source is refused, naming the field.
    w.apply(&stream_yaml("mirror", "{upstream: {url: \"https://images.example.org\"}}", verify));
    let v = w.wait("imgs/mirror", "Stalled", |v| is(v, "Stalled", "True"));
    assert!(message(&v, "Stalled").starts_with("verify:"), "{v:#}");
}

/// nginx serving `root` on `port` (a static simplestreams tree), stopped on drop.
/// nginx serving `root` on `port`, and over TLS with `pki`'s leaf on `tls_port`.
fn nginx(dir: &std::path::Path, root: &std::path::Path, port: u16, tls_port: u16, pki: &Pki) -> Proc {
    let conf = dir.join("nginx.conf");
    let (crt, key) = pki.cert();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nerror_log stderr;\npid {pid};\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n  uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n  types {{ application/json json; }}\n  server {{ listen 127.0.0.1:{port}; root {root}; }}\n  server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {crt}; ssl_certificate_key {key}; root {root}; }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            tmp = dir.display(),
            root = root.display(),
            crt = crt.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new("nginx");
    cmd.args(["-p", dir.to_str().unwrap(), "-c", conf.to_str().unwrap()]);
    let proc = Proc::spawn(cmd, &dir.join("nginx.log"));
    wait_for(WAIT, "nginx listening", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    proc
}

#[test]
fn an_upstream_stream_counts_what_the_upstream_serves_and_keeps_its_counts_when_it_is_gone() {
    let w = world("streams-upstream");
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    // A static simplestreams tree: index.json names images.json; three products.
    let root = w.dir.0.join("www");
    std::fs::create_dir_all(root.join("streams/v1")).unwrap();
    let item = |ftype: &str| serde_json::json!({"ftype": ftype, "path": format!("images/{ftype}"), "sha256": "ab".repeat(32), "size": 4});
    // The combined fingerprint makes the squashfs an image the gateway can list.
    let mut meta = item("lxd.tar.xz");
    meta["combined_squashfs_sha256"] = "cd".repeat(32).into();
    let version = serde_json::json!({"items": {"lxd.tar.xz": meta, "root.squashfs": item("squashfs")}});
    let versions = |n: usize| -> Value {
        (1..=n).map(|d| (format!("202601{d:02}_00:00"), version.clone())).collect::<serde_json::Map<_, _>>().into()
    };
    let images = serde_json::json!({"content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
    "products": {
        "debian:bookworm:amd64:default": {"os": "Debian", "release": "bookworm", "arch": "amd64", "variant": "default", "versions": versions(3)},
        "debian:bookworm:arm64:default": {"os": "Debian", "release": "bookworm", "arch": "arm64", "variant": "default", "versions": versions(1)},
        "alpine:3.20:amd64:default": {"os": "Alpine", "release": "3.20", "arch": "amd64", "variant": "default", "versions": versions(2)},
    }});
    std::fs::write(root.join("streams/v1/images.json"), images.to_string()).unwrap();
    let index = serde_json::json!({"format": "index:1.0", "index": {"images": {"datatype": "image-downloads",
        "path": "streams/v1/images.json", "format": "products:1.0", "products": []}}});
    std::fs::write(root.join("streams/v1/index.json"), index.to_string()).unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let pki = Pki::new(&w.dir.0.join("pki"));
    let server = nginx(&w.dir.0, &root, port, tls_port, &pki);

    let upstream = format!("{{upstream: {{url: \"http://127.0.0.1:{port}\"}}}}");
    w.apply(&stream_yaml("mirror", &upstream, "  filters: [os=debian]\n  keepVersions: 2\n"));
    let v = w.wait("imgs/mirror", "3 versions of 2 products", |v| {
        v["status"]["versions"] == 3 && v["status"]["products"] == 2 && is(v, "Ready", "True")
    });
    assert!(is(&v, "SourceReachable", "True") && v["status"]["lastIndexed"].is_string(), "{v:#}");
    // Another filter, another count; all of them without filters.
    w.apply(&stream_yaml("mirror", &upstream, "  filters: [os=debian, arch=amd64]\n  keepVersions: 5\n"));
    w.wait("imgs/mirror", "3 versions of 1 product", |v| v["status"]["versions"] == 3 && v["status"]["products"] == 1);
    w.apply(&stream_yaml("mirror", &upstream, "  keepVersions: 5\n"));
    w.wait("imgs/mirror", "6 versions of 3 products", |v| v["status"]["versions"] == 6 && v["status"]["products"] == 3);

    // Over https with a private CA: named by caConfigMap, missing at first, then there.
    let tls = format!("{{upstream: {{url: \"https://127.0.0.1:{tls_port}\", caConfigMap: upstream-ca}}}}");
    w.apply(&stream_yaml("mirror", &tls, "  filters: [os=alpine]\n"));
    let v = w.wait("imgs/mirror", "the missing CA bundle named", |v| {
        condition(v, "Ready").is_some_and(|c| c["reason"] == "CaBundleError" && c["status"] == "False")
    });
    assert!(message(&v, "Ready").contains("spec.source.upstream.caConfigMap"), "{v:#}");
    let ca = format!("--from-file=ca.crt={}", pki.ca().display());
    kubectl(&["create", "configmap", "upstream-ca", "-n", &w.ns, &ca], None).ok();
    let v = w.wait("imgs/mirror", "2 versions of 1 product over https", |v| {
        v["status"]["versions"] == 2 && v["status"]["products"] == 1 && is(v, "SourceReachable", "True")
    });
    let cm = w.wait("configmap/default-config", "the CA file rendered", |v| {
        v["data"]["gateway.yaml"].as_str().is_some_and(|y| y.contains("/etc/updraft/upstream-ca/mirror/ca.crt"))
    });
    assert!(cm["data"]["gateway.yaml"].as_str().unwrap().contains(&format!("https://127.0.0.1:{tls_port}")), "{v:#}");
    w.apply(&stream_yaml("mirror", &upstream, "  keepVersions: 5\n"));
    w.wait("imgs/mirror", "6 versions of 3 products", |v| v["status"]["versions"] == 6 && v["status"]["products"] == 3);

    // The upstream goes away: the counts stay, the conditions say why.
    drop(server);
    let v = w.wait("imgs/mirror", "SourceReachable=False", |v| is(v, "SourceReachable", "False"));
    assert_eq!((v["status"]["versions"].as_i64(), v["status"]["products"].as_i64()), (Some(6), Some(3)), "{v:#}");
    assert_eq!(condition(&v, "SourceReachable").unwrap()["reason"], "UpstreamUnreachable");
    assert!(message(&v, "SourceReachable").contains(&format!("127.0.0.1:{port}")), "{v:#}");
    assert!(is(&v, "Ready", "True"), "the gateway keeps serving its last index: {v:#}");
    assert!(message(&v, "Ready").contains("the last look at the source failed"), "{v:#}");
}

/// Issue #19: the metadata bomb (468 KB of `xz -0`, a tar of 3 GiB of zeros) pushed
/// with the recommended metadata media type under 8 tags of a watched repository (8
/// manifests, read 8 at a time), beside an image exported by `incus image export`. The
/// operator stays under 128 MiB of RSS (sampled every 20 ms throughout), counts the
/// good image, names each bomb and why in `Ready`, and keeps reconciling: an image
/// pushed afterwards is counted.
#[test]
fn a_metadata_bomb_is_left_out_with_its_reason_and_the_operator_stays_under_128_mib() {
    let w = world("streams-bomb");
    let rss = e2e::bomb::RssWatch::new(w.operator.child.id());
    let registry = &cluster().registry;
    let repository = format!("e2e/{}/bombed", w.ns);
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    let work = w.dir.0.join("bomb");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(e2e::bomb::metadata_bomb(), work.join("bomb.tar.xz")).unwrap();
    std::fs::write(work.join("root.squashfs"), b"a root file system").unwrap();
    for i in 1..=8 {
        run(Command::new("oras").current_dir(&work).args([
            "push",
            "--plain-http",
            &format!("{registry}/{repository}:bomb-{i}"),
            "--annotation",
            &format!("copy={i}"),
            "bomb.tar.xz:application/vnd.updraft.simplestreams.metadata.v1.tar+xz",
            "root.squashfs:application/vnd.updraft.simplestreams.rootfs.v1.squashfs",
        ]));
    }
    push_exported(&w.dir.0, &repository, "20260101", "x86_64", 1767225600);
    let oci = format!("{{oci: {{registry: \"{registry}\", repository: \"{repository}\", insecure: true}}}}");
    w.apply(&stream_yaml("lab", &oci, ""));
    let v = w.wait("imgs/lab", "1 version of 1 product, 8 tags left out", |v| {
        v["status"]["versions"] == 1 && is(v, "Ready", "True") && message(v, "Ready").contains("8 tags left out")
    });
    let ready = message(&v, "Ready");
    assert!(ready.contains("tag bomb-1 (sha256:") && ready.contains("and 5 more"), "{ready}");
    assert!(ready.contains("no metadata.yaml in the first 16 MiB of the tar stream"), "{ready}");

    // Still reconciling: an image pushed now is counted.
    push_exported(&w.dir.0, &repository, "20260102", "x86_64", 1767312000);
    w.wait("imgs/lab", "2 versions", |v| {
        v["status"]["versions"] == 2 && message(v, "Ready").contains("8 tags left out")
    });
    assert!(rss.samples() > 50, "RSS sampled {} times only", rss.samples());
    let peak = rss.peak();
    eprintln!("operator peak VmRSS with 8 bombs: {:.1} MiB ({} samples)", peak as f64 / 1048576.0, rss.samples());
    assert!(peak < 128 << 20, "operator VmRSS reached {} MiB\n{}", peak >> 20, w.operator.output());
}
