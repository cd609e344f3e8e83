//! Image streams end to end, with real components only: the gateway binary over
//! HTTPS (test CA from `openssl`), the real registry as the store, uploads with
//! `curl -F` exactly as docker-simplestreams-server's README shows them, artifacts
//! pushed with `oras push` as `incus image export` writes them, and the real clients
//! reading the result: `incus` and `lxc` (`image list`, `image info`, `image export`
//! without a daemon) and `sstream-query`; three replicas behind nginx. Fixtures are made with GNU
//! tar/xz and `mksquashfs` the way `shared/simplestreams-clients.md` describes.
//!
//! The client tools come from `e2e/scripts/cluster.sh tools`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, registry, sha256_hex, unique_repo, GatewayProcess};
use e2e::images::{cached_tool, ensure_tools, fingerprint, image_client, make_image, Pki};
use e2e::run;

const BIN: &str = env!("CARGO_BIN_EXE_ota-gateway");
const TOKEN: &str = "s3cret-upload-token";

/// What the tests here start from: the client tools, a scratch directory (removed on
/// drop), a test CA with a leaf for 127.0.0.1 in its `pki/` and an empty `img/` for
/// [`make_image`]. Returns the directory and the two paths.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    ensure_tools();
    let tmp = tempfile::tempdir().unwrap();
    let (pki, img) = (tmp.path().join("pki"), tmp.path().join("img"));
    std::fs::create_dir_all(&img).unwrap();
    Pki::new(&pki);
    (tmp, pki, img)
}

/// Runs a client (`incus` or `lxc`) with a throwaway config and cache, trusting the test CA.
fn client(tool: &str, home: &Path, pki: &Path, args: &[&str]) -> String {
    image_client(tool, home, &pki.join("ca.pem"), args)
}

fn sstream_query() -> PathBuf {
    cached_tool("sstream-query")
}

/// A running gateway (killed on drop) and where it listens.
struct Gateway {
    process: GatewayProcess,
    http: u16,
    https: u16,
    admin: u16,
    config: GatewayConfig,
}

fn start_gateway(dir: &Path, name: &str, pki: &Path, repo: &str, extra: &str) -> Gateway {
    std::fs::write(pki.join("token"), format!("{TOKEN}\n")).unwrap();
    let source = format!(
        "    upload:\n      registry: {registry}\n      repository: {repo}\n      insecure: true\n      tokenFile: {pki}/token\n      interval: 1s\n{extra}",
        registry = registry().addr,
        pki = pki.display(),
    );
    start_gateway_with(dir, name, pki, &source)
}

fn start_gateway_with(dir: &Path, name: &str, pki: &Path, source: &str) -> Gateway {
    start_streams(dir, pki, &format!("- name: {name}\n  source:\n{source}"))
}

/// The gateway binary over `dir`, serving `streams` (the YAML list of the `streams`
/// section) over HTTP and HTTPS.
fn start_streams(dir: &Path, pki: &Path, streams: &str) -> Gateway {
    let (http, admin, https) = (free_port(), free_port(), free_port());
    std::fs::create_dir_all(dir).unwrap();
    let config = GatewayConfig { dir: dir.to_owned(), pki: pki.to_owned(), http, https, admin };
    config.write(streams);
    let process = GatewayProcess::start(Command::new(BIN), dir, https);
    Gateway { process, http, https, admin, config }
}

/// Where a test gateway listens and keeps its files: enough to write its config again.
struct GatewayConfig {
    dir: PathBuf,
    pki: PathBuf,
    http: u16,
    https: u16,
    admin: u16,
}

impl GatewayConfig {
    /// Writes `gateway.yaml` with `streams` as its `streams` section (the running
    /// gateway reloads it).
    fn write(&self, streams: &str) {
        let config = format!(
            "listen: 127.0.0.1:{http}\nadminListen: 127.0.0.1:{admin}\ncache: {{dir: {cache}}}\n\
             tls: {{listen: 127.0.0.1:{https}, certFile: {pki}/tls.crt, keyFile: {pki}/tls.key}}\n\
             streams:\n{streams}",
            http = self.http,
            admin = self.admin,
            https = self.https,
            cache = self.dir.join("cache").display(),
            pki = self.pki.display(),
        );
        // Written beside and renamed: the watcher never reads half a file.
        std::fs::write(self.dir.join("gateway.yaml.new"), config).unwrap();
        std::fs::rename(self.dir.join("gateway.yaml.new"), self.dir.join("gateway.yaml")).unwrap();
    }
}

/// curl with the test CA; returns (HTTP status, body).
fn curl(pki: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "60", "--cacert"])
        .arg(pki.join("ca.pem"))
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Uploads one file the way docker-simplestreams-server's README does.
fn upload(pki: &Path, base: &str, file: &Path, name: &str, token: Option<&str>) -> (u16, String) {
    let form = format!("upload=@{};filename={name}", file.display());
    let auth = format!("Authorization: Bearer {}", token.unwrap_or(""));
    let mut args = vec!["-F", &form, "-X", "POST"];
    if token.is_some() {
        args.extend(["-H", &auth]);
    }
    let url = format!("{base}/images/");
    args.push(&url);
    curl(pki, &args)
}

fn images_json(pki: &Path, base: &str) -> serde_json::Value {
    let (code, body) = curl(pki, &[&format!("{base}/streams/v1/images.json")]);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn uploads_are_listed_and_exported_by_incus_and_lxc() {
    let (tmp, pki, img) = scratch();
    make_image(&img, &format!("{}", std::process::id()));
    let repo = unique_repo("streams-upload");
    let gw = start_gateway(&tmp.path().join("gw"), "images", &pki, &repo, "      allowDelete: true\n");
    let base = format!("https://127.0.0.1:{}/streams/images", gw.https);

    // Empty but valid before any upload.
    assert_eq!(images_json(&pki, &base)["products"], serde_json::json!({}));

    let dir = "debian/bookworm/amd64/default/20260101_00:00";
    // Writes need TLS (no allowPlainWrites here): the same upload and a DELETE over
    // plain HTTP are refused before the token is even looked at, naming the setting.
    let plain_base = format!("http://127.0.0.1:{}/streams/images", gw.http);
    let (code, body) = upload(&pki, &plain_base, &img.join("incus.tar.xz"), &format!("{dir}/lxd.tar.xz"), Some(TOKEN));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("need TLS") && body.contains("allowPlainWrites"), "{body}");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = curl(&pki, &["-X", "DELETE", "-H", &auth, &format!("{plain_base}/images/{dir}")]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(images_json(&pki, &base)["products"], serde_json::json!({}), "a plain-HTTP upload was stored");
    // A VM disk beside the container rootfs (the clients never read its content).
    std::fs::write(img.join("disk-kvm.img"), common::random_bytes(96 * 1024)).unwrap();
    for (file, name) in [
        ("incus.tar.xz", "lxd.tar.xz"),
        ("rootfs.squashfs", "rootfs.squashfs"),
        ("root.tar.xz", "root.tar.xz"),
        ("disk-kvm.img", "disk-kvm.img"),
    ] {
        let (code, body) = upload(&pki, &base, &img.join(file), &format!("{dir}/{name}"), Some(TOKEN));
        assert_eq!(code, 201, "{name}: {body}");
    }
    let squash_fp = fingerprint(&img.join("incus.tar.xz"), &img.join("rootfs.squashfs"));
    let rootxz_fp = fingerprint(&img.join("incus.tar.xz"), &img.join("root.tar.xz"));
    let vm_fp = fingerprint(&img.join("incus.tar.xz"), &img.join("disk-kvm.img"));

    // The index promises what we compute independently.
    let images = images_json(&pki, &base);
    let product = &images["products"]["debian:bookworm:amd64:default"];
    let items = &product["versions"]["20260101_00:00"]["items"];
    assert_eq!(
        items["incus.tar.xz"]["combined_squashfs_sha256"],
        squash_fp.as_str(),
        "{images:#}\n{}",
        std::fs::read_to_string(&gw.process.log).unwrap()
    );
    assert_eq!(items["lxd.tar.xz"]["combined_rootxz_sha256"], rootxz_fp.as_str());
    assert_eq!(
        items["root.squashfs"]["sha256"],
        sha256_hex(&std::fs::read(img.join("rootfs.squashfs")).unwrap()).as_str()
    );

    // The files: Range, ETag, HEAD, and plain HTTP serving the same bytes.
    let meta_path = items["incus.tar.xz"]["path"].as_str().unwrap().to_owned();
    let meta = std::fs::read(img.join("incus.tar.xz")).unwrap();
    let plain = format!("http://127.0.0.1:{}/streams/images/{meta_path}", gw.http);
    let part = tmp.path().join("part");
    let (code, _) = curl(&pki, &["-r", "0-9", "-o", part.to_str().unwrap(), &plain]);
    assert_eq!(code, 206);
    assert_eq!(std::fs::read(&part).unwrap(), meta[..10]);
    let (code, head) = curl(&pki, &["-I", &plain]);
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains(&format!("etag: \"{}\"", sha256_hex(&meta))), "{head}");

    // incus: list, info, export (no daemon).
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    for tool in ["incus", "lxc"] {
        client(tool, &home, &pki, &["remote", "add", "up", &base, "--protocol", "simplestreams", "--public"]);
        let csv = client(tool, &home, &pki, &["image", "list", "up:", "--format", "csv", "-c", "lFdat"]);
        assert!(csv.contains(&squash_fp), "{tool} image list:\n{csv}");
        assert!(csv.contains(&rootxz_fp), "{tool} image list:\n{csv}");
        let line = csv.lines().find(|l| l.contains(&squash_fp)).unwrap();
        assert!(line.contains("debian/bookworm"), "{tool}: alias missing: {line}");
        let aliases = client(tool, &home, &pki, &["image", "alias", "list", "up:", "--format", "csv"]);
        for alias in ["debian/bookworm/default,", "debian/bookworm,", "debian/bookworm/default/amd64,"] {
            assert!(aliases.contains(&format!("{alias}{}", &squash_fp[..12])), "{tool}: {alias}\n{aliases}");
        }
        assert!(line.contains("x86_64"), "{tool}: {line}");
        assert!(line.contains("Debian bookworm amd64 (20260101_00:00)"), "{tool}: {line}");
        let info = client(tool, &home, &pki, &["image", "info", "up:debian/bookworm/default"]);
        assert!(info.contains(&squash_fp), "{tool} image info:\n{info}");
        let out = home.join(format!("{tool}-export"));
        std::fs::create_dir_all(&out).unwrap();
        client(tool, &home, &pki, &["image", "export", "up:debian/bookworm/default", &format!("{}/", out.display())]);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort_by_key(|p| !p.to_string_lossy().contains("incus.tar.xz"));
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(fingerprint(&files[0], &files[1]), squash_fp, "{tool} exported {files:?}");
        // The VM image: listed as a virtual machine, exported whole.
        let vm = csv.lines().find(|l| l.contains(&vm_fp)).unwrap_or_else(|| panic!("{tool}: no VM image:\n{csv}"));
        assert!(vm.contains("VIRTUAL-MACHINE"), "{tool}: {vm}");
        let out = home.join(format!("{tool}-vm-export"));
        std::fs::create_dir_all(&out).unwrap();
        client(
            tool,
            &home,
            &pki,
            &["image", "export", &format!("up:{}", &vm_fp[..12]), &format!("{}/", out.display())],
        );
        let mut files: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort_by_key(|p| !p.to_string_lossy().contains("incus.tar.xz"));
        assert_eq!(fingerprint(&files[0], &files[1]), vm_fp, "{tool} exported {files:?}");
    }

    // index.json and images.json: ETag, 304 on If-None-Match, gzip when asked.
    let (etag, _) = document(&pki, &format!("{base}/streams/v1/images.json"));
    let inm = format!("If-None-Match: {etag}");
    let (code, _) = curl(&pki, &["-H", &inm, &format!("{base}/streams/v1/images.json")]);
    assert_eq!(code, 304);
    let gz = tmp.path().join("images.json.gz");
    let (code, _) = curl(
        &pki,
        &["-H", "Accept-Encoding: gzip", "-o", gz.to_str().unwrap(), &format!("{base}/streams/v1/images.json")],
    );
    assert_eq!(code, 200);
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()), &mut unzipped)
        .unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&unzipped).unwrap(), images_json(&pki, &base));

    // sstream-query reads the index.
    let q = run(Command::new(sstream_query())
        .args(["--no-verify", "--json", &format!("{base}/streams/v1/index.json")])
        .env("SSL_CERT_FILE", pki.join("ca.pem")));
    assert!(q.contains(&squash_fp), "sstream-query:\n{q}");
    assert!(q.contains("debian:bookworm:amd64:default"));

    // DELETE (allowDelete): one file, then the whole version; each needs the token.
    let file_url = format!("{base}/images/{dir}/root.tar.xz");
    assert_eq!(curl(&pki, &["-X", "DELETE", &file_url]).0, 401);
    let (code, body) = curl(&pki, &["-X", "DELETE", "-H", &auth, &file_url]);
    assert_eq!(code, 200, "{body}");
    let items = images_json(&pki, &base)["products"]["debian:bookworm:amd64:default"]["versions"]["20260101_00:00"]
        ["items"]
        .clone();
    assert!(items["root.tar.xz"].is_null() && !items["root.squashfs"].is_null(), "{items:#}");
    let (code, body) = curl(&pki, &["-X", "DELETE", "-H", &auth, &format!("{base}/images/{dir}")]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(images_json(&pki, &base)["products"], serde_json::json!({}));
    assert_eq!(curl(&pki, &["-X", "DELETE", "-H", &auth, &format!("{base}/images/{dir}")]).0, 404);
}

#[test]
fn bad_uploads_are_refused_and_store_nothing() {
    let (tmp, pki, img) = scratch();
    make_image(&img, "bad-input");
    std::fs::write(img.join("big"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(img.join("not.json"), "os: [this is yaml").unwrap();
    let repo = unique_repo("streams-bad");
    // allowPlainWrites: the truncated upload below is sent over plain HTTP.
    let gw = start_gateway(
        &tmp.path().join("gw"),
        "bad",
        &pki,
        &repo,
        "      maxBytes: 2097152\n      allowPlainWrites: true\n",
    );
    let base = format!("https://127.0.0.1:{}/streams/bad", gw.https);
    let meta = img.join("incus.tar.xz");
    let ok_dir = "debian/bookworm/amd64/default/20260101_00:00";

    let cases: Vec<(&str, PathBuf, String, Option<&str>, u16)> = vec![
        ("parent escape", meta.clone(), format!("../{ok_dir}/lxd.tar.xz"), Some(TOKEN), 400),
        ("inner escape", meta.clone(), "debian/../../amd64/default/20260101_00:00/lxd.tar.xz".into(), Some(TOKEN), 400),
        ("absolute", meta.clone(), format!("/{ok_dir}/lxd.tar.xz"), Some(TOKEN), 400),
        ("encoded", meta.clone(), "debian/%2e%2e/amd64/default/20260101_00:00/lxd.tar.xz".into(), Some(TOKEN), 400),
        ("wrong serial", meta.clone(), "debian/bookworm/amd64/default/2026-01-01/lxd.tar.xz".into(), Some(TOKEN), 400),
        ("unknown file", meta.clone(), format!("{ok_dir}/evil.sh"), Some(TOKEN), 400),
        ("no token", meta.clone(), format!("{ok_dir}/lxd.tar.xz"), None, 401),
        ("wrong token", meta.clone(), format!("{ok_dir}/lxd.tar.xz"), Some("nope"), 403),
        ("oversized", img.join("big"), format!("{ok_dir}/rootfs.squashfs"), Some(TOKEN), 413),
        ("metadata.json not JSON", img.join("not.json"), format!("{ok_dir}/metadata.json"), Some(TOKEN), 400),
    ];
    for (what, file, name, token, want) in &cases {
        let (code, body) = upload(&pki, &base, file, name, *token);
        assert_eq!(code, *want, "{what}: {body}");
    }
    // DELETE is off unless allowDelete.
    let (code, body) = curl(
        &pki,
        &["-X", "DELETE", "-H", &format!("Authorization: Bearer {TOKEN}"), &format!("{base}/images/{ok_dir}")],
    );
    assert_eq!(code, 405, "{body}");
    // Nothing reached the registry.
    let tags = Command::new("oras")
        .args(["repo", "tags", "--plain-http", &format!("{}/{repo}", registry().addr)])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tags.stdout).trim().is_empty(),
        "stored: {}",
        String::from_utf8_lossy(&tags.stdout)
    );

    // A duplicate without allowOverwrite: 409, and the first file stays.
    assert_eq!(upload(&pki, &base, &meta, &format!("{ok_dir}/lxd.tar.xz"), Some(TOKEN)).0, 201);
    let (code, body) = upload(&pki, &base, &meta, &format!("{ok_dir}/lxd.tar.xz"), Some(TOKEN));
    assert_eq!(code, 409, "{body}");
    // A metadata tarball without metadata.yaml is refused.
    let (code, body) = upload(&pki, &base, &img.join("root.tar.xz"), &format!("{ok_dir}/incus.tar.xz"), Some(TOKEN));
    assert_eq!(code, 400, "{body}");

    // A truncated upload (the client dies mid-body) never appears.
    let squash = std::fs::read(img.join("rootfs.squashfs")).unwrap();
    let boundary = "XyZzY";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"{ok_dir}/rootfs.squashfs\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let full_len = head.len() + squash.len() + format!("\r\n--{boundary}--\r\n").len();
    let request = format!(
        "POST /streams/bad/images/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {full_len}\r\n\r\n{head}"
    );
    {
        use std::io::Write as _;
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", gw.http)).unwrap();
        tcp.write_all(request.as_bytes()).unwrap();
        tcp.write_all(&squash[..squash.len() / 2]).unwrap();
        // Dropped here: the body ends halfway.
    }
    std::thread::sleep(Duration::from_secs(3));
    let images = images_json(&pki, &base);
    assert_eq!(images["products"], serde_json::json!({}), "an incomplete version was published: {images:#}");
    let (code, body) = curl(&pki, &[&format!("{base}/streams/v1/images.json")]);
    assert_eq!(code, 200, "{body}");

    // An index that fails validation is not published: the previous one keeps
    // serving, and status and metrics say why.
    assert_eq!(
        upload(&pki, &base, &img.join("rootfs.squashfs"), &format!("{ok_dir}/rootfs.squashfs"), Some(TOKEN)).0,
        201
    );
    let good = images_json(&pki, &base);
    assert!(!good["products"]["debian:bookworm:amd64:default"].is_null(), "{good:#}");
    let other = "debian/trixie/amd64/default/20260101_00:00";
    std::fs::write(img.join("metadata.json"), r#"{"aliases": ["debian/bookworm"]}"#).unwrap();
    for (file, name) in
        [("metadata.json", "metadata.json"), ("incus.tar.xz", "lxd.tar.xz"), ("rootfs.squashfs", "rootfs.squashfs")]
    {
        assert_eq!(upload(&pki, &base, &img.join(file), &format!("{other}/{name}"), Some(TOKEN)).0, 201, "{name}");
    }
    assert_eq!(images_json(&pki, &base), good, "an index with a duplicate alias was published");
    let (code, status) = curl(&pki, &[&format!("{base}/status")]);
    assert_eq!(code, 200);
    assert!(status.contains("alias \\\"debian/bookworm\\\" is claimed by products"), "{status}");
    let metrics = run(Command::new("curl").args(["-sS", &format!("http://127.0.0.1:{}/metrics", gw.admin)]));
    assert!(metrics.contains("updraft_gateway_stream_index_valid{stream=\"bad\"} 0"), "{metrics}");
    assert!(metrics.contains("updraft_gateway_stream_versions{stream=\"bad\"} 1"), "{metrics}");
}

/// An nginx master process, stopped with SIGTERM when dropped (its workers exit with
/// it; a SIGKILL would leave them running).
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// nginx as a round-robin load balancer over the plain ports of `backends`; returns
/// the process and its port.
fn start_nginx(dir: &Path, backends: &[u16]) -> (Nginx, u16) {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
    let servers: String = backends.iter().map(|p| format!("    server 127.0.0.1:{p};\n")).collect();
    let user = run(Command::new("id").arg("-un")).trim().to_owned();
    let d = dir.display();
    let conf = format!(
        "user {user};\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n  upstream gateways {{\n{servers}  }}\n  server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n    location / {{ proxy_pass http://gateways; proxy_request_buffering off; }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Nginx(
        Command::new("nginx")
            .args(["-c", &format!("{d}/nginx.conf"), "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (cluster.sh tools)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start: {:?}", std::fs::read_to_string(dir.join("error.log")));
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// (ETag, body) of a document from one URL.
fn document(pki: &Path, url: &str) -> (String, String) {
    let out =
        run(Command::new("curl").args(["-sS", "-m", "10", "-D", "-", "--cacert"]).arg(pki.join("ca.pem")).arg(url));
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let etag = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("etag:").map(|v| v.trim().to_owned()));
    (etag.unwrap_or_default(), body.to_owned())
}

#[test]
fn replicas_behind_a_load_balancer_serve_the_same_index_and_see_every_upload() {
    let (tmp, pki, img) = scratch();
    let repo = unique_repo("streams-scale");
    // Uploads go through the plain-HTTP balancer: allowed by allowPlainWrites.
    let replicas: Vec<Gateway> = (0..3)
        .map(|i| {
            start_gateway(&tmp.path().join(format!("gw{i}")), "images", &pki, &repo, "      allowPlainWrites: true\n")
        })
        .collect();
    let (_nginx, lb) = start_nginx(&tmp.path().join("nginx"), &replicas.iter().map(|g| g.http).collect::<Vec<_>>());
    let lb_base = format!("http://127.0.0.1:{lb}/streams/images");

    for (round, serial) in ["20260101_00:00", "20260102_00:00"].iter().enumerate() {
        let seed = format!("scale-{round}-{}", std::process::id());
        make_image(&img, &seed);
        let dir = format!("debian/bookworm/amd64/default/{serial}");
        // Each file through the balancer: the parts land on different replicas.
        for (file, name) in [("incus.tar.xz", "lxd.tar.xz"), ("rootfs.squashfs", "rootfs.squashfs")] {
            let (code, body) = upload(&pki, &lb_base, &img.join(file), &format!("{dir}/{name}"), Some(TOKEN));
            assert_eq!(code, 201, "{name}: {body}");
        }
        let fp = fingerprint(&img.join("incus.tar.xz"), &img.join("rootfs.squashfs"));
        let uploaded = Instant::now();
        // Every replica lists it within seconds, with the same bytes and ETag.
        loop {
            let docs: Vec<(String, String)> = replicas
                .iter()
                .map(|g| {
                    document(&pki, &format!("https://127.0.0.1:{}/streams/images/streams/v1/images.json", g.https))
                })
                .collect();
            if docs.iter().all(|(_, body)| body.contains(&fp)) {
                assert!(docs.windows(2).all(|w| w[0] == w[1]), "replicas differ: {docs:?}");
                eprintln!("version {serial}: listed by all 3 replicas {:?} after the upload", uploaded.elapsed());
                break;
            }
            assert!(uploaded.elapsed() < Duration::from_secs(15), "not listed everywhere within 15 s: {docs:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        // Every replica fetches the newest files ahead of the first request.
        let squash_sha = sha256_hex(&std::fs::read(img.join("rootfs.squashfs")).unwrap());
        let deadline = Instant::now() + Duration::from_secs(15);
        for i in 0..replicas.len() {
            let blob = tmp.path().join(format!("gw{i}/cache/blobs/{squash_sha}"));
            while !blob.exists() {
                assert!(Instant::now() < deadline, "replica {i} did not prefetch {squash_sha}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Through the balancer (round robin), every answer is the same document.
        let through: Vec<(String, String)> =
            (0..6).map(|_| document(&pki, &format!("{lb_base}/streams/v1/index.json"))).collect();
        assert!(through.windows(2).all(|w| w[0] == w[1]), "index.json differs between replicas: {through:?}");
        assert!(!through[0].0.is_empty(), "no ETag");
    }
}

/// Waits until `images.json` names `product`.
fn wait_listed(pki: &Path, base: &str, product: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let images = images_json(pki, base);
        if !images["products"][product].is_null() {
            return images;
        }
        assert!(Instant::now() < deadline, "{product} not listed: {images:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn oci_artifacts_pushed_with_oras_are_listed_and_exported() {
    let (tmp, pki, img) = scratch();
    make_image(&img, &format!("oci-{}", std::process::id()));
    let fp = fingerprint(&img.join("incus.tar.xz"), &img.join("rootfs.squashfs"));
    let rootxz_fp = fingerprint(&img.join("incus.tar.xz"), &img.join("root.tar.xz"));
    // What `incus image export` writes: meta-<fp>.tar.xz and <fp>.squashfs.
    let (meta_name, root_name) = (format!("meta-{fp}.tar.xz"), format!("{fp}.squashfs"));
    std::fs::copy(img.join("incus.tar.xz"), img.join(&meta_name)).unwrap();
    std::fs::copy(img.join("rootfs.squashfs"), img.join(&root_name)).unwrap();
    let repo = unique_repo("streams-oci");
    let reg = &registry().addr;
    // 1. Plain `oras push` of the two exported files: properties from metadata.yaml.
    run(Command::new("oras").current_dir(&img).args([
        "push",
        "--plain-http",
        &format!("{reg}/{repo}:debian-12"),
        &meta_name,
        &root_name,
    ]));
    // 2. The recommended media types and annotations: properties from the annotations.
    run(Command::new("oras").current_dir(&img).args([
        "push",
        "--plain-http",
        &format!("{reg}/{repo}:lab-1"),
        "--annotation",
        "dev.updraft.simplestreams.product=labos:1.0:amd64:minimal",
        "--annotation",
        "dev.updraft.simplestreams.serial=20260301_12:00",
        "--annotation",
        "dev.updraft.simplestreams.os=LabOS",
        "--annotation",
        "dev.updraft.simplestreams.aliases=labos/1,labos/current",
        "incus.tar.xz:application/vnd.updraft.simplestreams.metadata.v1.tar+xz",
        "root.tar.xz:application/vnd.updraft.simplestreams.rootfs.v1.tar+xz",
    ]));
    // Under verify: the two are signed (tag scheme and bundle); a third, unsigned
    // version is never shown to the clients.
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = e2e::cosign::Key::generate(&keys, "release");
    let signing = e2e::cosign::Repository { registry: reg, name: &repo, dir: &keys };
    signing.sign_with_tag(&key, &signing.resolve("debian-12"));
    signing.sign_with_bundle(&key, &signing.resolve("lab-1"));
    let other = tmp.path().join("unsigned");
    make_image(&other, &format!("unsigned-{}", std::process::id()));
    let unsigned_fp = fingerprint(&other.join("incus.tar.xz"), &other.join("root.tar.xz"));
    let unsigned = push_annotated(&other, &repo, "unsigned-1", "unsig:1.0:amd64:default", "20260302_12:00");
    let source = format!(
        "    oci:\n      registry: {reg}\n      repository: {repo}\n      insecure: true\n      interval: 1s\n  verify: {{publicKeyFiles: [{}]}}\n",
        key.public_file().display()
    );
    let gw = start_gateway_with(&tmp.path().join("gw"), "oci", &pki, &source);
    let base = format!("https://127.0.0.1:{}/streams/oci", gw.https);
    wait_listed(&pki, &base, "debian:bookworm:amd64:default");
    let images = wait_listed(&pki, &base, "labos:1.0:amd64:minimal");
    assert!(images["products"]["unsig:1.0:amd64:default"].is_null(), "the unsigned version is listed: {images:#}");
    let why = status(&pki, &base)["rejected"]["unsigned-1"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("NoSignature") && why.contains(&unsigned), "{why}");
    let debian = &images["products"]["debian:bookworm:amd64:default"];
    assert_eq!(debian["os"], "Debian");
    let items = &debian["versions"]["20260101_00:00"]["items"];
    assert_eq!(items["incus.tar.xz"]["combined_squashfs_sha256"], fp.as_str(), "{images:#}");
    let lab = &images["products"]["labos:1.0:amd64:minimal"];
    assert_eq!(lab["aliases"], "labos/1,labos/current");
    assert_eq!(lab["versions"]["20260301_12:00"]["items"]["lxd.tar.xz"]["combined_rootxz_sha256"], rootxz_fp.as_str());

    let home = tmp.path().join("home");
    for tool in ["incus", "lxc"] {
        client(tool, &home, &pki, &["remote", "add", "oci", &base, "--protocol", "simplestreams", "--public"]);
        let csv = client(tool, &home, &pki, &["image", "list", "oci:", "--format", "csv", "-c", "lFdat"]);
        assert!(!csv.contains(&unsigned_fp) && !csv.to_lowercase().contains("unsig"), "{tool} lists it:\n{csv}");
        let line = csv.lines().find(|l| l.contains(&fp)).unwrap_or_else(|| panic!("{tool}: {fp} not listed:\n{csv}"));
        assert!(line.contains("Debian bookworm amd64 (20260101_00:00)") && line.contains("x86_64"), "{tool}: {line}");
        let line = csv.lines().find(|l| l.contains(&rootxz_fp)).unwrap_or_else(|| panic!("{tool}: labos:\n{csv}"));
        assert!(line.contains("LabOS 1.0 amd64 (20260301_12:00)"), "{tool}: {line}");
        let info = client(tool, &home, &pki, &["image", "info", "oci:labos/current"]);
        assert!(info.contains(&rootxz_fp), "{tool} image info:\n{info}");
        let out = home.join(format!("{tool}-oci-export"));
        std::fs::create_dir_all(&out).unwrap();
        client(tool, &home, &pki, &["image", "export", "oci:debian/bookworm", &format!("{}/", out.display())]);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort_by_key(|p| !p.to_string_lossy().contains("incus.tar.xz"));
        assert_eq!(fingerprint(&files[0], &files[1]), fp, "{tool} exported {files:?}");
    }
}

/// For the same two files, the index of Incus's own `incus-simplestreams add` (the
/// peer) and ours agree on the fingerprint and on what is read from metadata.yaml.
#[test]
fn the_peer_incus_simplestreams_agrees_on_fingerprint_and_properties() {
    ensure_tools();
    let peer = cached_tool("incus-simplestreams");
    if !peer.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/scripts/cluster.sh");
        run(Command::new("bash").arg(script).arg("tools"));
    }
    let (tmp, pki, img) = scratch();
    let tree = tmp.path().join("peer");
    std::fs::create_dir_all(&tree).unwrap();
    make_image(&img, &format!("peer-{}", std::process::id()));
    // The peer wants properties.architecture too (exported images carry it).
    std::fs::write(
        img.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1767225600\nproperties:\n  architecture: amd64\n  os: Debian\n  release: bookworm\n  variant: cloud\n  description: Debian bookworm\ntemplates: {}\n",
    )
    .unwrap();
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@1767225600",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cJf",
            "incus.tar.xz",
            "metadata.yaml",
        ])
        .current_dir(&img));
    run(Command::new(&peer)
        .current_dir(&tree)
        .arg("add")
        .arg(img.join("incus.tar.xz"))
        .arg(img.join("rootfs.squashfs")));
    let theirs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tree.join("streams/v1/images.json")).unwrap()).unwrap();
    let (_, their_product) = theirs["products"].as_object().unwrap().iter().next().unwrap();
    let their_version = their_product["versions"].as_object().unwrap().values().next().unwrap();

    let repo = unique_repo("streams-peer");
    let reg = &registry().addr;
    run(Command::new("oras").current_dir(&img).args([
        "push",
        "--plain-http",
        &format!("{reg}/{repo}:v1"),
        "incus.tar.xz",
        "rootfs.squashfs",
    ]));
    let source = format!(
        "    oci:\n      registry: {reg}\n      repository: {repo}\n      insecure: true\n      interval: 1s\n"
    );
    let gw = start_gateway_with(&tmp.path().join("gw"), "peer", &pki, &source);
    let base = format!("https://127.0.0.1:{}/streams/peer", gw.https);
    let ours = wait_listed(&pki, &base, "debian:bookworm:amd64:cloud");
    let our_product = &ours["products"]["debian:bookworm:amd64:cloud"];
    let our_version = &our_product["versions"]["20260101_00:00"];

    let fp = fingerprint(&img.join("incus.tar.xz"), &img.join("rootfs.squashfs"));
    assert_eq!(their_version["items"]["incus.tar.xz"]["combined_squashfs_sha256"], fp.as_str(), "{theirs:#}");
    assert_eq!(our_version["items"]["incus.tar.xz"]["combined_squashfs_sha256"], fp.as_str(), "{ours:#}");
    for field in ["os", "release", "arch", "release_title", "variant"] {
        assert_eq!(our_product[field], their_product[field], "{field}: ours {ours:#} theirs {theirs:#}");
    }
    for item in ["incus.tar.xz"] {
        for field in ["sha256", "size"] {
            assert_eq!(our_version["items"][item][field], their_version["items"][item][field], "{item}.{field}");
        }
    }
    assert_eq!(our_version["items"]["root.squashfs"]["sha256"], their_version["items"]["squashfs"]["sha256"]);
}

/// A mirror of another gateway over HTTPS (its CA in `caFile`), with a filter: the
/// clients list and export through the mirror, files verified against the upstream's
/// hashes; when the upstream goes away the mirror keeps serving what it had.
#[test]
fn a_mirror_of_another_gateway_serves_its_filtered_images_and_outlives_it() {
    let (tmp, pki, img) = scratch();
    make_image(&img, &format!("mirror-{}", std::process::id()));
    let fp = fingerprint(&img.join("incus.tar.xz"), &img.join("rootfs.squashfs"));
    let mut origin = start_gateway(&tmp.path().join("origin"), "images", &pki, &unique_repo("streams-origin"), "");
    let origin_base = format!("https://127.0.0.1:{}/streams/images", origin.https);
    for (dir, file, name) in [
        ("debian/bookworm/amd64/default/20260101_00:00", "incus.tar.xz", "lxd.tar.xz"),
        ("debian/bookworm/amd64/default/20260101_00:00", "rootfs.squashfs", "rootfs.squashfs"),
        ("alpine/edge/amd64/default/20260101_00:00", "incus.tar.xz", "lxd.tar.xz"),
        ("alpine/edge/amd64/default/20260101_00:00", "root.tar.xz", "root.tar.xz"),
    ] {
        assert_eq!(upload(&pki, &origin_base, &img.join(file), &format!("{dir}/{name}"), Some(TOKEN)).0, 201);
    }
    let source = format!(
        "    upstream:\n      url: {origin_base}\n      caFile: {}\n      filters: [os=debian]\n      interval: 1s\n",
        pki.join("ca.pem").display()
    );
    let mirror = start_gateway_with(&tmp.path().join("mirror"), "mirror", &pki, &source);
    let base = format!("https://127.0.0.1:{}/streams/mirror", mirror.https);
    let images = wait_listed(&pki, &base, "debian:bookworm:amd64:default");
    assert!(images["products"]["alpine:edge:amd64:default"].is_null(), "the filter let alpine through: {images:#}");

    let home = tmp.path().join("home");
    for tool in ["incus", "lxc"] {
        client(tool, &home, &pki, &["remote", "add", "mirror", &base, "--protocol", "simplestreams", "--public"]);
        let csv = client(tool, &home, &pki, &["image", "list", "mirror:", "--format", "csv", "-c", "lFdat"]);
        assert!(csv.contains(&fp), "{tool}:\n{csv}");
        let out = home.join(format!("{tool}-mirror-export"));
        std::fs::create_dir_all(&out).unwrap();
        client(tool, &home, &pki, &["image", "export", "mirror:debian/bookworm", &format!("{}/", out.display())]);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort_by_key(|p| !p.to_string_lossy().contains("incus.tar.xz"));
        assert_eq!(fingerprint(&files[0], &files[1]), fp, "{tool} exported {files:?}");
    }

    // The upstream goes away: the mirror keeps its index and says why in its status.
    let before = images_json(&pki, &base);
    let _ = origin.process.child.kill();
    let _ = origin.process.child.wait();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, status) = curl(&pki, &[&format!("{base}/status")]);
        if status.contains("upstream") && status.contains("\"error\":\"") {
            break;
        }
        assert!(Instant::now() < deadline, "status does not report the upstream down: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(images_json(&pki, &base), before);
}

/// Pushes the image in `img` (its metadata tarball and `root.tar.xz`, with the
/// recommended media types) to `repo:tag`, annotated as version `serial` of `product`
/// (whose os part is also the display name); returns the manifest digest.
fn push_annotated(img: &Path, repo: &str, tag: &str, product: &str, serial: &str) -> String {
    let reference = format!("{}/{repo}:{tag}", registry().addr);
    let os = product.split(':').next().unwrap();
    run(Command::new("oras").current_dir(img).args([
        "push",
        "--plain-http",
        &reference,
        "--annotation",
        &format!("dev.updraft.simplestreams.product={product}"),
        "--annotation",
        &format!("dev.updraft.simplestreams.serial={serial}"),
        "--annotation",
        &format!("dev.updraft.simplestreams.os={os}"),
        "incus.tar.xz:application/vnd.updraft.simplestreams.metadata.v1.tar+xz",
        "root.tar.xz:application/vnd.updraft.simplestreams.rootfs.v1.tar+xz",
    ]));
    run(Command::new("oras").args(["resolve", "--plain-http", &reference])).trim().to_owned()
}

fn status(pki: &Path, base: &str) -> serde_json::Value {
    let (code, body) = curl(pki, &[&format!("{base}/status")]);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `pred` holds for `images.json` of `base` (404 counts as `Null`).
fn wait_images(pki: &Path, base: &str, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = curl(pki, &[&format!("{base}/streams/v1/images.json")]);
        let doc = if code == 200 { serde_json::from_str(&body).unwrap() } else { serde_json::Value::Null };
        if pred(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "{what}: never happened; last ({code}): {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The gateway's log without its colour codes.
fn plain_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

fn product_keys(images: &serde_json::Value) -> Vec<String> {
    images["products"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

/// The `streams` section follows the config file without a restart: a stream added is
/// served, a changed filter gives a new index, a config that cannot be applied changes
/// nothing, a removed stream answers 404, and a stream whose config did not change
/// keeps its state all along (its sync rounds continue; it is started once).
#[test]
fn streams_follow_the_config_file_without_a_restart() {
    let (tmp, pki, img) = scratch();
    make_image(&img, &format!("reload-{}", std::process::id()));
    let repo = unique_repo("streams-reload");
    push_annotated(&img, &repo, "a", "alpha:1:amd64:default", "20260101_00:00");
    push_annotated(&img, &repo, "b", "beta:1:amd64:default", "20260101_00:00");
    let oci = format!(
        "- name: oci\n  source:\n    oci: {{registry: \"{}\", repository: {repo}, insecure: true, interval: 1s}}\n",
        registry().addr
    );
    let gw = start_streams(&tmp.path().join("gw"), &pki, &oci);
    let base = |name: &str| format!("https://127.0.0.1:{}/streams/{name}", gw.https);
    wait_images(&pki, &base("oci"), "both products listed", |i| product_keys(i).len() == 2);
    assert_eq!(curl(&pki, &[&format!("{}/streams/v1/images.json", base("mirror"))]).0, 404);
    let rounds = |pki: &Path| status(pki, &base("oci"))["rounds"].as_u64().unwrap();
    while rounds(&pki) < 3 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mirror = |filter: &str, ca: &Path| {
        format!(
            "- name: mirror\n  source:\n    upstream: {{url: \"{}\", caFile: {}, filters: [{filter}], interval: 1s}}\n",
            base("oci"),
            ca.display()
        )
    };
    let ca = pki.join("ca.pem");

    // Added: served at once, with its filter.
    let before = rounds(&pki);
    gw.config.write(&format!("{oci}{}", mirror("os=alpha", &ca)));
    wait_images(&pki, &base("mirror"), "the added mirror lists alpha only", |i| {
        product_keys(i) == ["alpha:1:amd64:default"]
    });
    // Changed filter: a new index.
    gw.config.write(&format!("{oci}{}", mirror("os=beta", &ca)));
    wait_images(&pki, &base("mirror"), "the changed mirror lists beta only", |i| {
        product_keys(i) == ["beta:1:amd64:default"]
    });
    // A config that cannot be applied (an unreadable caFile) changes nothing, not even
    // the stream that was valid in it.
    let log_len = std::fs::read_to_string(&gw.process.log).unwrap().len();
    gw.config.write(&format!(
        "{oci}{}{}",
        mirror("os=alpha", &ca),
        mirror("os=alpha", Path::new("/nonexistent/ca.pem")).replace("name: mirror", "name: broken")
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&gw.process.log).unwrap()[log_len..].contains("new config rejected") {
        assert!(
            Instant::now() < deadline,
            "the bad config was not refused: {}",
            std::fs::read_to_string(&gw.process.log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(product_keys(&images_json(&pki, &base("mirror"))), ["beta:1:amd64:default"]);
    assert_eq!(curl(&pki, &[&format!("{}/streams/v1/images.json", base("broken"))]).0, 404);
    // Removed: 404, and its metrics are gone.
    gw.config.write(&oci);
    wait_images(&pki, &base("mirror"), "the removed mirror answers 404", |i| i.is_null());
    let metrics = run(Command::new("curl").args(["-sS", &format!("http://127.0.0.1:{}/metrics", gw.admin)]));
    assert!(!metrics.contains("stream=\"mirror\""), "{metrics}");
    assert!(metrics.contains("updraft_gateway_stream_versions{stream=\"oci\"} 2"), "{metrics}");

    // The unchanged stream kept its state through all of it: started once, its rounds
    // counted on (a new stream would start again from 1).
    assert!(rounds(&pki) > before, "rounds went from {before} to {}", rounds(&pki));
    let log = plain_log(&gw.process.log);
    let started = |name: &str| log.lines().filter(|l| l.contains("stream started") && l.contains(name)).count();
    assert_eq!(started("stream=oci"), 1, "{log}");
    assert_eq!(started("stream=mirror"), 2, "added, then replaced by the changed filter:\n{log}");
    assert_eq!(product_keys(&images_json(&pki, &base("oci"))).len(), 2);
}

/// Under `verify`, an OCI stream lists a version only when its manifest digest carries
/// a cosign signature by a trusted key, in either scheme (a `.sig` tag, or a sigstore
/// bundle found through the referrers tag schema, as this registry has no referrers
/// API). Signatures are made by `e2e::cosign` (openssl), pushed with `oras`. Each
/// failure is left out, named in the status with tag, digest and reason, logged once
/// and counted once however many rounds pass; a signed version pushed later appears at
/// once, and a signature arriving late for a refused digest is seen on a full round.
#[test]
fn an_oci_stream_under_verify_lists_only_signed_versions() {
    use e2e::cosign::{dsse_bundle, simple_signing, statement, Key, Repository};
    let (tmp, pki, img) = scratch();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    make_image(&img, &format!("verify-{}", std::process::id()));
    let (ours, theirs) = (Key::generate(&keys, "ours"), Key::generate(&keys, "theirs"));
    let repo = unique_repo("streams-verify");
    let reg = registry().addr.clone();
    let signing = Repository { registry: &reg, name: &repo, dir: &keys };
    let docker_reference = format!("{reg}/{repo}");
    let serial = "20260101_00:00";
    let push = |tag: &str| push_annotated(&img, &repo, tag, &format!("{tag}:1:amd64:default"), serial);

    let tagged = push("tagged");
    signing.sign_with_tag(&ours, &tagged);
    let bundled = push("bundled");
    signing.sign_with_bundle(&ours, &bundled);
    let unsigned = push("unsigned");
    let wrong = push("wrong");
    signing.sign_with_tag(&theirs, &wrong);
    // `tagged`'s genuine signature copied to `copied`'s signature tag.
    let copied = push("copied");
    let payload = simple_signing(&docker_reference, &tagged);
    signing.push_tag_signature(&copied, &payload, Some(&ours.sign(&payload)));
    // A bundle our key signed for `tagged`, its statement swapped for one naming `swapped`.
    let swapped = push("swapped");
    let (genuine, forged) = (statement(&docker_reference, &tagged), statement(&docker_reference, &swapped));
    signing.attach_bundle(&swapped, &dsse_bundle(&ours, &forged, &genuine));

    let streams = format!(
        "- name: signed\n  verify: {{publicKeyFiles: [{}]}}\n  source:\n    oci: {{registry: \"{reg}\", repository: {repo}, insecure: true, interval: 1s}}\n",
        ours.public_file().display()
    );
    let gw = start_streams(&tmp.path().join("gw"), &pki, &streams);
    let base = format!("https://127.0.0.1:{}/streams/signed", gw.https);
    let listed = ["bundled:1:amd64:default", "tagged:1:amd64:default"];
    let images = wait_images(&pki, &base, "the two signed versions listed", |i| product_keys(i) == listed);
    assert_eq!(product_keys(&images), listed, "{images:#}");

    // Each refusal in the status, with its reason and digest; never a cosign tag.
    let want = [
        ("unsigned", &unsigned, "NoSignature"),
        ("wrong", &wrong, "WrongKey"),
        ("copied", &copied, "OtherDigest"),
        ("swapped", &swapped, "Tampered"),
    ];
    let st = status(&pki, &base);
    let rejected = st["rejected"].as_object().unwrap();
    assert_eq!(rejected.len(), want.len(), "{st:#}");
    for (tag, digest, reason) in want {
        let why = rejected[tag].as_str().unwrap_or_else(|| panic!("{tag} not rejected: {st:#}"));
        assert!(why.contains(&format!("({reason})")) && why.contains(digest.as_str()), "{tag}: {why}");
    }
    // Logged and counted once per digest, however many rounds pass.
    let rounds = st["rounds"].as_u64().unwrap();
    while status(&pki, &base)["rounds"].as_u64().unwrap() < rounds + 4 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = plain_log(&gw.process.log);
    for (tag, digest, reason) in want {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("version left out") && l.contains(digest)).collect();
        assert_eq!(lines.len(), 1, "{tag}: {lines:#?}");
        assert!(
            lines[0].contains(&format!("tag={tag}")) && lines[0].contains(&format!("reason={reason}")),
            "{lines:?}"
        );
    }
    let metrics = run(Command::new("curl").args(["-sS", &format!("http://127.0.0.1:{}/metrics", gw.admin)]));
    for (_, _, reason) in want {
        let series = format!("updraft_gateway_stream_unverified_total{{reason=\"{reason}\",stream=\"signed\"}} 1");
        assert!(metrics.contains(&series), "{series}:\n{metrics}");
    }

    // A signed version pushed after the unsigned one appears at once.
    let later = push("later");
    signing.sign_with_bundle(&ours, &later);
    wait_images(&pki, &base, "the later signed version listed", |i| {
        product_keys(i).contains(&"later:1:amd64:default".to_owned())
    });
    // A signature arriving for the refused digest is seen on a full round (every 12).
    signing.sign_with_tag(&ours, &unsigned);
    wait_images(&pki, &base, "the late-signed version listed", |i| {
        product_keys(i).contains(&"unsigned:1:amd64:default".to_owned())
    });
    let st = status(&pki, &base);
    assert!(st["rejected"].get("unsigned").is_none(), "{st:#}");
    assert_eq!(product_keys(&images_json(&pki, &base)).len(), 4);
}

/// Under `verify`, an upload stream serves a version once the digest of the manifest
/// its uploads made is signed: until then it is left out and the status says why.
#[test]
fn an_upload_stream_under_verify_lists_a_version_once_it_is_signed() {
    let (tmp, pki, img) = scratch();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    make_image(&img, &format!("upload-verify-{}", std::process::id()));
    let key = e2e::cosign::Key::generate(&keys, "release");
    let repo = unique_repo("streams-upload-verify");
    let reg = registry().addr.clone();
    let extra = format!("  verify: {{publicKeyFiles: [{}]}}\n", key.public_file().display());
    let gw = start_gateway(&tmp.path().join("gw"), "up", &pki, &repo, &extra);
    let base = format!("https://127.0.0.1:{}/streams/up", gw.https);
    let dir = "debian/bookworm/amd64/default/20260101_00:00";
    for (file, name) in [("incus.tar.xz", "lxd.tar.xz"), ("rootfs.squashfs", "rootfs.squashfs")] {
        let (code, body) = upload(&pki, &base, &img.join(file), &format!("{dir}/{name}"), Some(TOKEN));
        assert_eq!(code, 201, "{name}: {body}");
    }
    let tags = run(Command::new("oras").args(["repo", "tags", "--plain-http", &format!("{reg}/{repo}")]));
    let tag = tags.lines().next().unwrap_or_else(|| panic!("no tag stored: {tags}")).to_owned();
    let signing = e2e::cosign::Repository { registry: &reg, name: &repo, dir: &keys };
    let digest = signing.resolve(&tag);
    let st = status(&pki, &base);
    let why = st["rejected"][&tag].as_str().unwrap_or_else(|| panic!("{tag} not rejected: {st:#}"));
    assert!(why.contains("NoSignature") && why.contains(&digest), "{why}");
    assert_eq!(images_json(&pki, &base)["products"], serde_json::json!({}));

    signing.sign_with_tag(&key, &digest);
    let images =
        wait_images(&pki, &base, "the signed upload listed", |i| !i["products"].as_object().unwrap().is_empty());
    let fp = fingerprint(&img.join("incus.tar.xz"), &img.join("rootfs.squashfs"));
    assert!(images.to_string().contains(&fp), "{images:#}");
    assert!(status(&pki, &base)["rejected"].as_object().unwrap().is_empty());
}

/// Issue #19: the metadata bomb (468 KB of `xz -0`, a tar of 3 GiB of zeros) pushed
/// with the recommended media type to a watched repository, and uploaded to an upload
/// stream. The gateway binary stays under 128 MiB of RSS (sampled every 20 ms
/// throughout), answers `/health` all along, indexes the good version beside the
/// bomb, and says why the bomb is left out: in the stream status (OCI) and in the
/// upload's answer. An artifact whose layers are named otherwise is refused with a
/// message naming the accepted names and media type.
#[test]
fn a_metadata_bomb_is_refused_within_128_mib_and_the_gateway_keeps_serving() {
    let (tmp, pki, img) = scratch();
    let bomb = e2e::bomb::metadata_bomb();
    make_image(&img, &format!("bomb-{}", std::process::id()));
    std::fs::copy(&bomb, img.join("bomb.tar.xz")).unwrap();
    for (from, to) in [("incus.tar.xz", "meta-good.tar.xz"), ("rootfs.squashfs", "good.squashfs")] {
        std::fs::copy(img.join(from), img.join(to)).unwrap();
    }
    // A metadata tarball under a name that is not one (and no media type).
    std::fs::copy(img.join("incus.tar.xz"), img.join("image-meta.tar.zst")).unwrap();
    let (repo, uploads) = (unique_repo("streams-bomb"), unique_repo("streams-bomb-upload"));
    let reg = &registry().addr;
    let push = |tag: &str, files: &[&str]| {
        run(Command::new("oras")
            .current_dir(&img)
            .args(["push", "--plain-http", &format!("{reg}/{repo}:{tag}")])
            .args(files));
    };
    push(
        "bomb",
        &[
            "bomb.tar.xz:application/vnd.updraft.simplestreams.metadata.v1.tar+xz",
            "root.tar.xz:application/vnd.updraft.simplestreams.rootfs.v1.tar+xz",
        ],
    );
    push("unnamed", &["image-meta.tar.zst", "good.squashfs"]);
    push("good", &["meta-good.tar.xz", "good.squashfs"]);
    std::fs::write(pki.join("token"), format!("{TOKEN}\n")).unwrap();
    let streams = format!(
        "- name: watched\n  source:\n    oci:\n      registry: {reg}\n      repository: {repo}\n      insecure: true\n      interval: 1s\n\
         - name: uploads\n  source:\n    upload:\n      registry: {reg}\n      repository: {uploads}\n      insecure: true\n      tokenFile: {token}\n      interval: 1s\n",
        token = pki.join("token").display()
    );
    let gw = start_streams(&tmp.path().join("gw"), &pki, &streams);
    let rss = e2e::bomb::RssWatch::new(gw.process.child.id());
    let health = || curl(&pki, &[&format!("http://127.0.0.1:{}/health", gw.http)]).0;
    let base = format!("https://127.0.0.1:{}/streams/watched", gw.https);

    // The bomb is left out with its reason; /health answers while the gateway reads it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rejected = loop {
        assert_eq!(health(), 200, "/health while the bomb is read\n{}", plain_log(&gw.process.log));
        let (code, body) = curl(&pki, &[&format!("{base}/status")]);
        let st: serde_json::Value = if code == 200 { serde_json::from_str(&body).unwrap() } else { Default::default() };
        if st["rejected"]["bomb"].is_string() && st["rejected"]["unnamed"].is_string() {
            break st["rejected"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the bomb was never rejected; status ({code}): {body}; peak RSS {} MiB\n{}",
            rss.peak() >> 20,
            plain_log(&gw.process.log)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let why = rejected["bomb"].as_str().unwrap();
    assert!(why.contains("no metadata.yaml in the first 16 MiB") && why.contains("decompression bomb"), "{why}");
    let unnamed = rejected["unnamed"].as_str().unwrap();
    for named in [
        "the artifact has no metadata tarball layer",
        "application/vnd.updraft.simplestreams.metadata.v1.tar+xz",
        "lxd.tar.xz",
        "incus.tar.xz",
        "meta-*.tar.xz",
    ] {
        assert!(unnamed.contains(named), "{named} not in {unnamed}");
    }
    let images = wait_listed(&pki, &base, "debian:bookworm:amd64:default");
    assert_eq!(product_keys(&images), ["debian:bookworm:amd64:default"], "{images:#}");

    // The same bomb uploaded as a metadata tarball: refused with the reason, nothing stored.
    let ubase = format!("https://127.0.0.1:{}/streams/uploads", gw.https);
    let name = "debian/bookworm/amd64/default/20260101_00:00/lxd.tar.xz";
    let (code, body) = upload(&pki, &ubase, &img.join("bomb.tar.xz"), name, Some(TOKEN));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no metadata.yaml in the first 16 MiB"), "{body}");
    let tags =
        Command::new("oras").args(["repo", "tags", "--plain-http", &format!("{reg}/{uploads}")]).output().unwrap();
    assert!(String::from_utf8_lossy(&tags.stdout).trim().is_empty(), "the bomb was stored");

    // Still serving, still syncing: rounds go on after the bomb.
    let rounds = status(&pki, &base)["rounds"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(status(&pki, &base)["rounds"].as_u64().unwrap() > rounds, "the watched stream stopped its rounds");
    assert_eq!(health(), 200);
    assert!(rss.samples() > 50, "RSS sampled {} times only", rss.samples());
    let peak = rss.peak();
    eprintln!("gateway peak VmRSS with the bomb: {:.1} MiB ({} samples)", peak as f64 / 1048576.0, rss.samples());
    assert!(peak < 128 << 20, "gateway VmRSS reached {} MiB", peak >> 20);
}
