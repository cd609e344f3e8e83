//! Bad input at the simplestreams upload endpoint (docker-simplestreams-server's API),
//! through the gateway binary's real listener with an upload stream stored in the real registry:
//! multipart bodies (boundaries, headers, truncation, parts without a name or a file
//! name), `filename=` upload paths (traversal, encodings, serials, file names),
//! `metadata.json` text and metadata tarballs, and the paths of deletes and file reads.
//! Every answer is a 2xx or a 4xx, never a 5xx, and only a well-formed path is ever
//! stored. Each target runs through `e2e::fuzz::check` (`UPDRAFT_FUZZ_SECS` for a long
//! campaign).

mod common;

use axum::http::header;
use common::*;
use e2e::fuzz;
use proptest::prelude::*;

const TOKEN: &str = "fuzz-upload-token";
const BOUNDARY: &str = "fuzzBoundary7MA4YWxkTrZu0gW";

/// A gateway binary serving an upload stream; killed when dropped.
struct Fixture {
    rt: tokio::runtime::Runtime,
    url: String,
    http: reqwest::Client,
    _gateway: Proc,
}

/// Starts the gateway binary (the simplestreams routes are built by its `serve`) and
/// checks that a well-formed upload is stored, so the targets hit a live endpoint.
fn start() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let reg = registry();
    let work = tempfile::tempdir().unwrap().keep();
    std::fs::write(work.join("token"), TOKEN).unwrap();
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nadminListen: 127.0.0.1:{admin}\ncache: {{dir: {cache}}}\nstreams:\n- name: s\n  source:\n    upload:\n      registry: {registry}\n      repository: {repo}\n      insecure: true\n      tokenFile: {work}/token\n      interval: 1s\n      maxBytes: 65536\n      allowDelete: true\n      allowOverwrite: true\n      allowPlainWrites: true\n",
        cache = work.join("cache").display(),
        registry = reg.addr,
        repo = unique_repo("fuzz-streams"),
        work = work.display(),
    );
    std::fs::write(work.join("gateway.yaml"), yaml).unwrap();
    let gateway = Proc::gateway(&work.join("gateway.yaml"), &[], &work.join("gateway.log"));
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap();
    let f = Fixture { rt, url, http, _gateway: gateway };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{}", std::fs::read_to_string(work.join("gateway.log")).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let body = multipart(&[(
        "debian/bookworm/amd64/default/20260101_00:00/metadata.json".into(),
        br#"{"os": "Debian", "aliases": "d"}"#.to_vec(),
        Framing::Good,
    )]);
    let (status, answer) = f.post(body, true);
    assert_eq!(status, 201, "a well-formed upload: {answer}");
    f
}

/// How often each status was answered, printed after a target.
#[derive(Default)]
struct Tally(std::sync::Mutex<std::collections::BTreeMap<u16, u64>>);

impl Tally {
    fn count(&self, status: u16) {
        *self.0.lock().unwrap().entry(status).or_default() += 1;
    }

    fn print(&self, target: &str) {
        println!("FIGURE {target} statuses: {:?}", self.0.lock().unwrap());
    }
}

impl Fixture {
    /// POSTs a multipart body to the stream's upload endpoint.
    fn post(&self, body: Vec<u8>, token: bool) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}/streams/s/images/", self.url))
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"));
        if token {
            req = req.bearer_auth(TOKEN);
        }
        self.send(req.body(body))
    }

    fn send(&self, req: reqwest::RequestBuilder) -> (u16, String) {
        self.rt.block_on(async {
            let r = req.send().await.expect("the gateway answers");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    }
}

/// An upload path as a client might write it: mostly the grammar's six segments, with
/// hostile or malformed pieces mixed in.
fn upload_path() -> impl Strategy<Value = String> {
    prop_oneof![2 => well_formed_path(), 3 => any_path()]
}

/// A path of the grammar, so that some uploads are stored.
fn well_formed_path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["debian", "alpine", "ubuntu"]),
        prop::sample::select(vec!["bookworm", "3.20", "noble"]),
        prop::sample::select(vec!["amd64", "arm64"]),
        prop::sample::select(vec!["default", "cloud"]),
        (2020u32..2030, 1u32..13, 1u32..29, 0u32..24, 0u32..60),
        prop::sample::select(vec!["lxd.tar.xz", "incus.tar.xz", "rootfs.squashfs", "root.tar.xz", "metadata.json"]),
    )
        .prop_map(|(os, release, arch, variant, (y, m, d, h, mi), file)| {
            format!("{os}/{release}/{arch}/{variant}/{y:04}{m:02}{d:02}_{h:02}:{mi:02}/{file}")
        })
}

/// Six-ish segments with hostile or malformed pieces mixed in.
fn any_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        6 => "[a-z0-9]{1,8}",
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just("".to_owned()),
        1 => Just("%2e%2e".to_owned()),
        1 => Just("a\\b".to_owned()),
        1 => Just("UPPER".to_owned()),
        1 => "[ -~]{1,6}",
        1 => "\\PC{1,4}",
    ];
    let serial = prop_oneof![
        4 => (2000u32..2100, 1u32..13, 1u32..29, 0u32..24, 0u32..60)
            .prop_map(|(y, m, d, h, mi)| format!("{y:04}{m:02}{d:02}_{h:02}:{mi:02}")),
        1 => "[0-9_:]{0,16}",
        1 => Just("20261399_25:61".to_owned()),
        1 => Just("99999999999999999999_00:00".to_owned()),
    ];
    let file = prop::sample::select(vec![
        "lxd.tar.xz",
        "incus.tar.xz",
        "rootfs.squashfs",
        "root.tar.xz",
        "disk-kvm.img",
        "metadata.json",
        "metadata.yaml",
        "../../etc/passwd",
        "",
    ]);
    (prop::collection::vec(segment, 4), serial, file, any::<bool>(), prop::collection::vec(segment_noise(), 0..2))
        .prop_map(|(segs, serial, file, lead, noise)| {
            let mut parts: Vec<String> = segs;
            parts.push(serial);
            parts.push(file.to_owned());
            parts.extend(noise);
            let p = parts.join("/");
            if lead {
                format!("/{p}")
            } else {
                p
            }
        })
}

fn segment_noise() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z]{1,4}", Just("..".to_owned())]
}

/// The content of a part: random bytes, `metadata.json`-like text, or a small
/// (possibly damaged) metadata tarball.
fn content() -> impl Strategy<Value = Vec<u8>> {
    let json = prop_oneof![
        Just(r#"{"os": "Debian", "release_title": "12", "aliases": "a, b"}"#.to_owned()),
        Just(r#"{"aliases": ["x", "", " y "]}"#.to_owned()),
        "\\{\"(os|release_title|aliases)\": ?(\"[ -~]{0,12}\"|[0-9]{1,22}|null|\\[\\]|\\[\"a\", ?7\\]|\\{\\})\\}",
        "[ -~]{0,64}",
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json.prop_map(String::into_bytes),
        (prop::collection::vec(any::<u8>(), 0..128), any::<bool>(), 0usize..2048).prop_map(|(yaml, damage, cut)| {
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(yaml.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, "metadata.yaml", &yaml[..]).unwrap();
            let mut tar = builder.into_inner().unwrap();
            if damage {
                tar.truncate(cut.min(tar.len()));
            }
            tar
        }),
    ]
}

/// How a part is framed: well-formed, or with one thing wrong.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Good,
    NoFilename,
    OtherName,
    NoClosingBoundary,
    WrongBoundary,
    NoHeaders,
    QuotedFilename,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        6 => Just(Framing::Good),
        1 => Just(Framing::NoFilename),
        1 => Just(Framing::OtherName),
        1 => Just(Framing::NoClosingBoundary),
        1 => Just(Framing::WrongBoundary),
        1 => Just(Framing::NoHeaders),
        1 => Just(Framing::QuotedFilename),
    ]
}

fn multipart(parts: &[(String, Vec<u8>, Framing)]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut closing = true;
    for (name, data, framing) in parts {
        let boundary = if matches!(framing, Framing::WrongBoundary) { "other" } else { BOUNDARY };
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match framing {
            Framing::NoFilename => "Content-Disposition: form-data; name=\"upload\"".to_owned(),
            Framing::OtherName => format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\""),
            Framing::QuotedFilename => format!("Content-Disposition: form-data; name=upload; filename*=UTF-8''{name}"),
            Framing::NoHeaders => String::new(),
            _ => format!("Content-Disposition: form-data; name=\"upload\"; filename=\"{name}\""),
        };
        if !disposition.is_empty() {
            body.extend_from_slice(disposition.as_bytes());
            body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n");
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
        if matches!(framing, Framing::NoClosingBoundary) {
            closing = false;
        }
    }
    if closing {
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    }
    body
}

/// Any multipart upload: never 5xx; 201 only when every `upload` part's file name is a
/// well-formed upload path, and then each is listed in the answer.
#[test]
fn any_multipart_upload_gets_a_4xx_or_stores_well_formed_paths() {
    let part = (upload_path(), content(), framing());
    let strategy = (prop::collection::vec(part, 0..3), any::<bool>(), 0usize..4096, any::<bool>());
    let f = start();
    let tally = Tally::default();
    fuzz::check_with("streams-multipart", Some(128), strategy, |(parts, tokened, cut, truncate)| {
        let mut body = multipart(&parts);
        if truncate {
            body.truncate(cut.min(body.len()));
        }
        let (status, answer) = f.post(body, tokened);
        tally.count(status);
        prop_assert!(status < 500, "answered {}: {}", status, answer);
        prop_assert!(tokened || status == 401, "no token, answered {}: {}", status, answer);
        if status == 201 {
            let stored: serde_json::Value = serde_json::from_str(&answer).unwrap();
            for path in stored["stored"].as_array().unwrap() {
                let path = path.as_str().unwrap();
                prop_assert!(path.starts_with("images/") && !path.contains(".."), "stored {:?}", path);
                prop_assert!(parts.iter().any(|(name, _, _)| path.contains(name.rsplit_once('/').unwrap().0)));
            }
        }
        Ok(())
    });
    tally.print("streams-multipart");
}

/// Any `filename=` (the upload path grammar) in a well-formed body, with a
/// `metadata.json`-like or random content: never 5xx.
#[test]
fn any_upload_path_and_metadata_json_get_a_4xx_or_a_201() {
    let strategy = (upload_path(), content());
    let f = start();
    let tally = Tally::default();
    fuzz::check_with("streams-filename-metadata", Some(64), strategy, |(name, data)| {
        let (status, answer) = f.post(multipart(&[(name.clone(), data, Framing::Good)]), true);
        tally.count(status);
        prop_assert!(status < 500, "filename {:?} answered {}: {}", name, status, answer);
        if status == 201 {
            prop_assert!(!name.starts_with('/') && !name.contains("..") && name.split('/').count() == 6, "{:?}", name);
        }
        Ok(())
    });
    tally.print("streams-filename-metadata");
}

/// Deletes and file reads of any path under the stream: never 5xx.
#[test]
fn any_delete_or_read_path_never_fails() {
    let f = start();
    let tally = Tally::default();
    fuzz::check_with("streams-delete-read", Some(128), (upload_path(), any::<bool>()), |(path, delete)| {
        let uri = format!("{}/streams/s/images/{}", f.url, path.trim_start_matches('/'));
        let Ok(url) = reqwest::Url::parse(&uri) else { return Ok(()) };
        let method = if delete { reqwest::Method::DELETE } else { reqwest::Method::GET };
        let (status, answer) = f.send(f.http.request(method, url).bearer_auth(TOKEN));
        tally.count(status);
        prop_assert!(status < 500, "{} answered {}: {}", uri, status, answer);
        Ok(())
    });
    tally.print("streams-delete-read");
}
