//! The ImageStream controller end to end: the real operator binary against
//! kube-apiserver 1.20 and the real registry. An OtaGateway with TLS and an upload
//! token serves an upload stream: the stream's status (URL over https, remote-add
//! commands, products and versions from the repository's tags, Ready), the rendered
//! ConfigMap's `streams` and `tls` sections, the Service's https port, the Secrets
//! mounted; malformed streams are `Stalled` naming the field and never rendered.

use std::process::Command;
use std::time::Duration;

use e2e::images::{image_client, make_image, run, Pki};
use e2e::procs::{binary, free_port, operator, wait_for, Proc, TempDir};
use e2e::{cluster, install_crds, kubectl, namespace};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

struct World {
    ns: String,
    dir: TempDir,
    operator: Proc,
}

impl World {
    fn new(name: &str) -> World {
        install_crds();
        let ns = namespace(name);
        let dir = TempDir::new(name);
        let (operator, admin) = operator(&ns, &dir.0, "operator", &[]);
        wait_for(WAIT, "operator /readyz", || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{admin}/readyz")])
                .output()
                .unwrap();
            (out.stdout == b"200").then_some(())
        });
        World { ns, dir, operator }
    }

    fn apply(&self, yaml: &str) {
        kubectl(&["apply", "--server-side", "-n", &self.ns, "-f", "-"], Some(yaml)).ok();
    }

    fn get(&self, what: &str) -> Option<Value> {
        let out = kubectl(&["get", "-n", &self.ns, what, "-o", "json"], None);
        out.success.then(|| serde_json::from_str(&out.stdout).unwrap())
    }

    fn wait(&self, what: &str, description: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(WAIT, description, || {
                let v = self.get(what)?;
                last = v.clone();
                pred(&v).then_some(v)
            })
        }));
        found.unwrap_or_else(|_| {
            panic!(
                "{what}: {description} never happened; last seen:\n{last:#}\noperator log:\n{}",
                self.operator.output()
            )
        })
    }

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

fn condition<'a>(v: &'a Value, type_: &str) -> Option<&'a Value> {
    v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

fn is(v: &Value, type_: &str, status: &str) -> bool {
    condition(v, type_).is_some_and(|c| c["status"] == status && c["observedGeneration"] == v["metadata"]["generation"])
}

fn stream_yaml(name: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: ImageStream\nmetadata: {{name: {name}}}\nspec:\n  interval: 2s\n  source: {source}\n{extra}"
    )
}

#[test]
fn an_upload_stream_on_a_tls_gateway_is_indexed_rendered_and_ready() {
    let w = World::new("streams");
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

    // Two versions of one product and one of another, tagged and annotated as the
    // gateway stores uploads (the operator reads the annotations, not the files).
    std::fs::write(w.dir.0.join("lxd.tar.xz"), b"not really an image: the operator reads annotations only").unwrap();
    for (tag, product, serial) in [
        ("debian_bookworm_amd64_default_20260101_0000", "debian:bookworm:amd64:default", "20260101_00:00"),
        ("debian_bookworm_amd64_default_20260102_0000", "debian:bookworm:amd64:default", "20260102_00:00"),
        ("debian_bookworm_arm64_default_20260101_0000", "debian:bookworm:arm64:default", "20260101_00:00"),
    ] {
        run(Command::new("oras").current_dir(&w.dir.0).args([
            "push",
            "--plain-http",
            &format!("{registry}/{repository}:{tag}"),
            "--annotation",
            &format!("dev.updraft.simplestreams.product={product}"),
            "--annotation",
            &format!("dev.updraft.simplestreams.serial={serial}"),
            "lxd.tar.xz:application/vnd.updraft.simplestreams.metadata.v1.tar+xz",
        ]));
    }
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

#[test]
fn incus_lists_what_is_uploaded_through_the_gateway_the_operator_configured() {
    let w = World::new("streams-serve");
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
