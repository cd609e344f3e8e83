//! The artifact store driven with `curl` exactly as filuxe users drive it: whole and
//! chunked uploads, force and refusal, downloads with Range/ETag/HEAD, listings,
//! deletes, and every bad input answered with a 4xx while nothing is stored.

mod store_support;

use store_support::*;

const ZIP: &str = "first/a:1.2.3:anytrack:anyarch:unknown.zip";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_uploads_downloads_force_and_delete() {
    let work = tempfile::tempdir().unwrap();
    let s = TestStore::start(store_config(&work.path().join("store"), "127.0.0.1:0", 1 << 30)).await;
    let data = pseudo_random(300_000, 1);
    let file = work.path().join("a.zip");
    std::fs::write(&file, &data).unwrap();
    let body = format!("@{}", file.display());
    let key = format!("key: {KEY}");
    let url = |q: &str| format!("{}/upload/{ZIP}{q}", s.url);

    assert_eq!(
        status(&["-X", "POST", "-H", &key, "--data-binary", &body, &url("?time=1600000000.25&force=False")]).await,
        201
    );
    // Exists and not forced: refused, as filuxe does.
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &body, &url("?force=False")]).await, 403);
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &body, &url("")]).await, 403);

    let out =
        curl(&["-D", "-", "-o", work.path().join("got").to_str().unwrap(), &format!("{}/download/{ZIP}", s.url)]).await;
    let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert_eq!(std::fs::read(work.path().join("got")).unwrap(), data);
    let etag = format!("etag: \"{}\"", sha256_hex(&data));
    assert!(headers.contains(&etag), "{headers}");
    assert!(headers.contains("accept-ranges: bytes"));
    assert!(headers.contains("content-disposition: attachment; filename=\"a:1.2.3:anytrack:anyarch:unknown.zip\""));

    // HEAD, Range, If-None-Match.
    let head = curl(&["-I", &format!("{}/download/{ZIP}", s.url)]).await;
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.contains("content-length: 300000") && head.contains(&etag), "{head}");
    let part = curl(&["-r", "1000-1999", &format!("{}/download/{ZIP}", s.url)]).await;
    assert_eq!(part.stdout, data[1000..2000]);
    let inm = format!("If-None-Match: \"{}\"", sha256_hex(&data));
    assert_eq!(status(&["-H", &inm, &format!("{}/download/{ZIP}", s.url)]).await, 304);
    assert_eq!(status(&["-r", "400000-", &format!("{}/download/{ZIP}", s.url)]).await, 416);

    // Forced replace (Python's spelling, as filuxe's client sends it), bearer key.
    let replacement = pseudo_random(1000, 2);
    std::fs::write(&file, &replacement).unwrap();
    let bearer = format!("Authorization: Bearer {KEY}");
    assert_eq!(
        status(&["-X", "POST", "-H", &bearer, "--data-binary", &body, &url("?force=True&time=1700000000")]).await,
        201
    );
    let got = curl(&[&format!("{}/download/{ZIP}", s.url)]).await;
    assert_eq!(got.stdout, replacement);

    // Listing: filuxe's shape, times as sent, no server root.
    let list = curl(&[&format!("{}/filelist/?recursive=True", s.url)]).await;
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["info"]["files"], 1);
    assert_eq!(list["info"]["dirs"], 1);
    assert!(list["info"].get("fileroot").is_none(), "{list}");
    assert_eq!(list["dirlist"], serde_json::json!(["first"]));
    let entry = &list["filelist"]["first"]["a:1.2.3:anytrack:anyarch:unknown.zip"];
    assert_eq!(entry["size"], 1000);
    assert_eq!(entry["time"], 1_700_000_000.0);
    assert_eq!(entry["sha256"], sha256_hex(&replacement));
    let flat = curl(&[&format!("{}/filelist/", s.url)]).await;
    let flat: serde_json::Value = serde_json::from_slice(&flat.stdout).unwrap();
    assert_eq!(flat["info"]["files"], 0);
    assert_eq!(flat["dirlist"], serde_json::json!(["first"]));
    let sub = curl(&[&format!("{}/filelist/first", s.url)]).await;
    let sub: serde_json::Value = serde_json::from_slice(&sub.stdout).unwrap();
    assert_eq!(sub["info"]["files"], 1);
    assert!(!String::from_utf8_lossy(&curl(&[&format!("{}/filelist/?recursive=true", s.url)]).await.stdout)
        .contains(work.path().to_str().unwrap()));
    assert_eq!(status(&[&format!("{}/filelist/nope", s.url)]).await, 404);

    // stats and status.
    let stats: serde_json::Value = serde_json::from_slice(&curl(&[&format!("{}/stats", s.url)]).await.stdout).unwrap();
    assert!(stats["version"].is_string());
    let st: serde_json::Value =
        serde_json::from_slice(&curl(&[&format!("{}/api/status", s.url)]).await.stdout).unwrap();
    assert_eq!(st["status"], "ready");

    // Delete with a GET: key needed, then 200, then 404.
    let del = format!("{}/delete/{ZIP}", s.url);
    assert_eq!(status(&[&del]).await, 401);
    assert_eq!(status(&["-H", "key: wrong", &del]).await, 403);
    assert_eq!(status(&["-H", &key, &del]).await, 200);
    assert_eq!(status(&["-H", &key, &del]).await, 404);
    assert_eq!(status(&[&format!("{}/download/{ZIP}", s.url)]).await, 404);
    assert!(files_under(&s.dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_appear_only_when_complete() {
    let work = tempfile::tempdir().unwrap();
    let s = TestStore::start(store_config(&work.path().join("store"), "127.0.0.1:0", 1 << 30)).await;
    let data = pseudo_random(5 * (1 << 20) + 12345, 3);
    let file = work.path().join("big.zip");
    std::fs::write(&file, &data).unwrap();
    let size = data.len();
    let key = format!("key: {KEY}");
    let piece = work.path().join("piece");
    let send = |from: usize, to: usize| {
        std::fs::write(&piece, &data[from..=to]).unwrap();
        let range = format!("Content-Range: bytes {from}-{to}/{size}");
        let target = format!("{}/upload/r/big.zip?time=1650000000&force=False", s.url);
        let body = format!("@{}", piece.display());
        let key = key.clone();
        async move { status(&["-X", "POST", "-H", &key, "-H", &range, "--data-binary", &body, &target]).await }
    };
    // First two chunks (filuxe's 1 MiB): nothing visible yet.
    assert_eq!(send(0, (1 << 20) - 1).await, 201);
    assert_eq!(send(1 << 20, (2 << 20) - 1).await, 201);
    assert_eq!(status(&[&format!("{}/download/r/big.zip", s.url)]).await, 404);
    let list = curl(&[&format!("{}/filelist/?recursive=true", s.url)]).await;
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["info"]["files"], 0, "{list}");
    // A chunk overlapping a received one differently: 409, nothing changes.
    assert_eq!(send(1000, 2_000_000).await, 409);
    // Out of order: the tail first, then the middle.
    assert_eq!(send(5 << 20, size - 1).await, 201);
    assert_eq!(status(&[&format!("{}/download/r/big.zip", s.url)]).await, 404);
    for i in 2..5 {
        assert_eq!(send(i << 20, ((i + 1) << 20) - 1).await, 201);
    }
    let got = curl(&[&format!("{}/download/r/big.zip", s.url)]).await;
    assert_eq!(got.stdout.len(), size);
    assert!(got.stdout == data, "bytes differ");

    // The filuxe client's sequence over a fresh name, then refused without force,
    // accepted with it.
    assert_eq!(upload_chunked(&s.url, "r/seq.zip", &file, 1 << 20, 1650000000.0, false).await, 201);
    assert_eq!(curl(&[&format!("{}/download/r/seq.zip", s.url)]).await.stdout, data);
    assert_eq!(upload_chunked(&s.url, "r/seq.zip", &file, 1 << 20, 1650000000.0, false).await, 403);
    let other = pseudo_random(3 << 20, 4);
    std::fs::write(&file, &other).unwrap();
    assert_eq!(upload_chunked(&s.url, "r/seq.zip", &file, 1 << 20, 1650000001.0, true).await, 201);
    assert_eq!(curl(&[&format!("{}/download/r/seq.zip", s.url)]).await.stdout, other);
    assert_eq!(files_under(&s.dir), ["r/big.zip", "r/seq.zip"]);
}

/// filuxe's forwarder starts by listing the root as `/filelist//?recursive=True`
/// (`fwd_util.get_http_filelist(path='/')`); filuxe's server merges the slashes. Every
/// spelling of the root lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_is_listed_however_filuxe_spells_it() {
    let work = tempfile::tempdir().unwrap();
    let s = TestStore::start(store_config(&work.path().join("store"), "127.0.0.1:0", 1 << 30)).await;
    let key = format!("key: {KEY}");
    let url = format!("{}/upload/{ZIP}?force=False", s.url);
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", "zip", &url]).await, 201);
    for spelling in ["/filelist", "/filelist/", "/filelist//", "/filelist///", "/filelist//first//"] {
        let out = curl(&["-w", "\n%{http_code}", &format!("{}{spelling}?recursive=True", s.url)]).await;
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap();
        assert_eq!(code, "200", "{spelling}: {body}");
        let listing: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(listing["filelist"]["first"]["a:1.2.3:anytrack:anyarch:unknown.zip"]["size"], 3, "{spelling}");
    }
}

/// A path longer than PATH_MAX, or short enough itself but too long under the store's
/// directory (the kernel's ENAMETOOLONG), is the client's error on every route: a 4xx,
/// with or without the key (reads are public), never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_beyond_path_max_are_a_4xx() {
    let work = tempfile::tempdir().unwrap();
    let s = TestStore::start(store_config(&work.path().join("store"), "127.0.0.1:0", 1 << 30)).await;
    let key = format!("key: {KEY}");
    let beyond = vec!["x".repeat(250); 17].join("/");
    // 4,090 bytes: under PATH_MAX alone, beyond it under the store's directory.
    let under = format!("{}/{}", vec!["y".repeat(200); 20].join("/"), "z".repeat(70));
    assert!(beyond.len() > 4096 && under.len() < 4096);
    for path in [&beyond, &under] {
        let upload = format!("{}/upload/{path}?force=True", s.url);
        let code = status(&["-X", "POST", "-H", &key, "--data-binary", "x", &upload]).await;
        assert!((400..500).contains(&code), "upload of {} bytes: {code}", path.len());
        let range = "Content-Range: bytes 0-0/2";
        let code = status(&["-X", "POST", "-H", &key, "-H", range, "--data-binary", "x", &upload]).await;
        assert!((400..500).contains(&code), "chunk of {} bytes: {code}", path.len());
        for route in ["download", "filelist", "delete"] {
            for keyed in [false, true] {
                let url = format!("{}/{route}/{path}", s.url);
                let mut args = vec![url.as_str()];
                if keyed {
                    args.extend(["-H", &key]);
                }
                let code = status(&args).await;
                assert!((400..500).contains(&code), "{route} of {} bytes (key {keyed}): {code}", path.len());
            }
        }
    }
    assert!(files_under(&s.dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dir = work.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("escape")).unwrap();
    let s = TestStore::start(store_config(&dir, "127.0.0.1:0", 100_000)).await;
    let small = work.path().join("small");
    std::fs::write(&small, b"hello").unwrap();
    let body = format!("@{}", small.display());
    let key = format!("key: {KEY}");
    let post = |path: &str| format!("{}/upload/{path}", s.url);

    for (path, expected) in [
        ("../x", 400),
        ("a/../../x", 400),
        ("%2e%2e/x", 400),
        ("a/%2E%2E/%2e%2e/x", 400),
        ("a%2f..%2f..%2fx", 400),
        ("a/%252e%252e/x", 400),
        ("/etc/x", 400),
        ("%2fetc/x", 400),
        ("a//b", 400),
        ("./x", 400),
        ("escape/x", 400),
        ("escape/new/dir/x", 400),
        (".updraft/partial/x", 400),
        ("a%5c..%5cx", 400),
    ] {
        assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &body, &post(path)]).await, expected, "{path}");
        assert_eq!(status(&[&format!("{}/download/{path}", s.url)]).await / 100, 4, "download {path}");
        assert_eq!(status(&["-H", &key, &format!("{}/delete/{path}", s.url)]).await / 100, 4, "delete {path}");
    }
    assert_eq!(status(&[&format!("{}/filelist/escape", s.url)]).await, 400);
    assert_eq!(status(&[&format!("{}/filelist/..", s.url)]).await, 400);

    // Keys.
    assert_eq!(status(&["-X", "POST", "--data-binary", &body, &post("k")]).await, 401);
    // `key:` with no value (curl then sends no such header) and `key;` (an empty one,
    // what filuxe sends when it has no key).
    assert_eq!(status(&["-X", "POST", "-H", "key: ", "--data-binary", &body, &post("k")]).await, 401);
    assert_eq!(status(&["-X", "POST", "-H", "key;", "--data-binary", &body, &post("k")]).await, 403);
    assert_eq!(status(&["-X", "POST", "-H", "key: wrong", "--data-binary", &body, &post("k")]).await, 403);
    assert_eq!(
        status(&["-X", "POST", "-H", "Authorization: Bearer wrong", "--data-binary", &body, &post("k")]).await,
        403
    );

    // Size limit (100 000 bytes): a whole body, a declared chunked size.
    let big = work.path().join("big");
    std::fs::write(&big, vec![7u8; 100_001]).unwrap();
    let big_body = format!("@{}", big.display());
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &big_body, &post("big")]).await, 413);
    assert_eq!(
        status(&[
            "-X",
            "POST",
            "-H",
            &key,
            "-H",
            "Content-Range: bytes 0-4/200000",
            "--data-binary",
            &body,
            &post("big")
        ])
        .await,
        413
    );
    // Chunks that do not add up.
    for range in ["bytes 5-4/10", "bytes 0-9/5", "bytes 0-4", "bytes x-4/5", "items 0-4/5"] {
        let header = format!("Content-Range: {range}");
        assert_eq!(
            status(&["-X", "POST", "-H", &key, "-H", &header, "--data-binary", &body, &post("c")]).await,
            400,
            "{range}"
        );
    }
    // A body shorter or longer than its Content-Range.
    assert_eq!(
        status(&["-X", "POST", "-H", &key, "-H", "Content-Range: bytes 0-9/20", "--data-binary", &body, &post("c")])
            .await,
        400
    );
    assert_eq!(
        status(&["-X", "POST", "-H", &key, "-H", "Content-Range: bytes 0-1/20", "--data-binary", &body, &post("c")])
            .await,
        400
    );
    // Bad query values.
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &body, &post("q?time=yesterday")]).await, 400);
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &body, &post("q?force=maybe")]).await, 400);
    // A checksum that does not match.
    let wrong = format!("q?sha256={}", "0".repeat(64));
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &body, &post(&wrong)]).await, 422);

    assert!(files_under(&dir).iter().all(|f| f == "escape"), "{:?}", files_under(&dir));
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something was written outside the store");
    // And a good upload still works.
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &body, &post("ok/hello.txt")]).await, 201);
    assert_eq!(curl(&[&format!("{}/download/ok/hello.txt", s.url)]).await.stdout, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_reads_need_a_key() {
    let work = tempfile::tempdir().unwrap();
    let key_file = work.path().join("read-key");
    std::fs::write(&key_file, "reader\n").unwrap();
    let mut config = store_config(&work.path().join("store"), "127.0.0.1:0", 1 << 20);
    config.public_reads = false;
    config.read_key_file = Some(key_file);
    let s = TestStore::start(config).await;
    let key = format!("key: {KEY}");
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", "x", &format!("{}/upload/f", s.url)]).await, 201);
    assert_eq!(status(&[&format!("{}/download/f", s.url)]).await, 401);
    assert_eq!(status(&[&format!("{}/filelist/", s.url)]).await, 401);
    assert_eq!(status(&["-H", "key: nope", &format!("{}/download/f", s.url)]).await, 403);
    assert_eq!(status(&["-H", "key: reader", &format!("{}/download/f", s.url)]).await, 200);
    assert_eq!(status(&["-H", "Authorization: Bearer reader", &format!("{}/filelist/", s.url)]).await, 200);
    // The read key does not write.
    assert_eq!(
        status(&["-X", "POST", "-H", "key: reader", "--data-binary", "y", &format!("{}/upload/g", s.url)]).await,
        403
    );
}

/// The gateway binary with a store and no `tls` section: writes over plain HTTP are
/// refused (403, naming `allowPlainWrites`, whatever the key) and nothing is stored,
/// reads still work; with `allowPlainWrites: true` the same writes are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_writes_are_refused_unless_allowed() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let setup = StoreSetup { allow_plain_writes: false, tls: None };
    let gw = Gateway::start_with(w, "plain", free_port(), setup).await;
    let data = pseudo_random(3_000_000, 11);
    let file = w.join("app.zip");
    std::fs::write(&file, &data).unwrap();
    let body = format!("@{}", file.display());
    let key = format!("key: {KEY}");
    let upload = format!("{}/upload/rel/app.zip?force=True", gw.url);

    let refused = curl(&["-X", "POST", "-H", &key, "--data-binary", &body, "-w", "\n%{http_code}", &upload]).await;
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(text.ends_with("\n403"), "{text}");
    assert!(text.contains("allowPlainWrites"), "the refusal names the setting: {text}");
    // Bearer key, no key, a wrong key: the same answer (TLS is checked first).
    let bearer = format!("Authorization: Bearer {KEY}");
    for auth in [bearer.as_str(), "key: wrong", "x-nothing: 1"] {
        assert_eq!(status(&["-X", "POST", "-H", auth, "--data-binary", &body, &upload]).await, 403, "{auth}");
    }
    assert_eq!(upload_chunked(&gw.url, "rel/chunked.zip", &file, 1 << 20, 1_700_000_000.0, true).await, 403);
    assert!(files_under(&gw.dir).is_empty(), "{:?}", files_under(&gw.dir));
    assert_eq!(std::fs::read_dir(state_of(&gw.dir).join("partial")).unwrap().count(), 0, "no partial upload kept");

    // A file put on the volume by other means: readable, not deletable over plain HTTP.
    std::fs::create_dir_all(gw.dir.join("rel")).unwrap();
    std::fs::write(gw.dir.join("rel/placed.bin"), b"placed").unwrap();
    assert_eq!(curl(&[&format!("{}/download/rel/placed.bin", gw.url)]).await.stdout, b"placed");
    assert_eq!(status(&["-H", &key, &format!("{}/delete/rel/placed.bin", gw.url)]).await, 403);
    assert_eq!(status(&["-X", "DELETE", "-H", &key, &format!("{}/delete/rel/placed.bin", gw.url)]).await, 403);
    assert!(gw.dir.join("rel/placed.bin").exists());
    drop(gw);

    let setup = StoreSetup { allow_plain_writes: true, tls: None };
    let gw = Gateway::start_with(w, "allowed", free_port(), setup).await;
    let upload = format!("{}/upload/rel/app.zip?force=True", gw.url);
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &body, &upload]).await, 201);
    assert_eq!(upload_chunked(&gw.url, "rel/chunked.zip", &file, 1 << 20, 1_700_000_000.0, true).await, 201);
    assert_eq!(std::fs::read(gw.dir.join("rel/app.zip")).unwrap(), data);
    assert_eq!(std::fs::read(gw.dir.join("rel/chunked.zip")).unwrap(), data);
    assert_eq!(status(&["-H", &key, &format!("{}/delete/rel/app.zip", gw.url)]).await, 200);
    assert!(!gw.dir.join("rel/app.zip").exists());
}

/// With the gateway's `tls` section the store listens with HTTPS on its own port (the
/// same certificate as the HTTPS listener): whole and chunked uploads with
/// `curl --cacert`, and filuxe's own client library (Python `requests` with
/// `verify=<certificate>`, as filuxe does with `lan_certificate`), are stored; reads
/// and deletes work; plain HTTP on that port is refused before any key is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_tls_are_accepted() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (cert, tls_key) = self_signed(w);
    let setup = StoreSetup { allow_plain_writes: false, tls: Some((cert.clone(), tls_key)) };
    let port = free_port();
    let gw = Gateway::start_with(w, "tls", port, setup).await;
    assert!(gw.url.starts_with("https://"));
    let ca = cert.to_str().unwrap();
    let data = pseudo_random(2_500_000, 12);
    let file = w.join("app.zip");
    std::fs::write(&file, &data).unwrap();
    let body = format!("@{}", file.display());
    let key = format!("key: {KEY}");

    let whole = format!("{}/upload/rel/whole.zip?time=1700000000", gw.url);
    assert_eq!(status(&["--cacert", ca, "-X", "POST", "-H", &key, "--data-binary", &body, &whole]).await, 201);
    let trust = ["--cacert", ca];
    let chunked = upload_chunked_with(&gw.url, "rel/chunked.zip", &file, 1 << 20, 1_700_000_000.0, false, &trust);
    assert_eq!(chunked.await, 201);
    for name in ["whole.zip", "chunked.zip"] {
        assert_eq!(std::fs::read(gw.dir.join("rel").join(name)).unwrap(), data, "{name}");
        let got = curl(&["--cacert", ca, &format!("{}/download/rel/{name}", gw.url)]).await;
        assert!(got.stdout == data, "{name} downloaded over TLS differs");
    }
    // The certificate is checked: without trusting it curl refuses to talk.
    assert!(!curl(&["-f", &format!("{}/api/status", gw.url)]).await.status.success());
    // Plain HTTP on the store's port: answered 400 by the TLS listener, nothing stored.
    let plain = format!("http://127.0.0.1:{port}/upload/rel/plain.zip");
    assert_eq!(status(&["-X", "POST", "-H", &key, "--data-binary", &body, &plain]).await, 400);
    assert!(!gw.dir.join("rel/plain.zip").exists());

    // filuxe's client: requests.post with the chunk headers it sends, verify=<cert>.
    let script = r#"
import requests, sys
url, cert, key, path = sys.argv[1:5]
data = open(path, "rb").read()
size, step = len(data), 1 << 20
for start in range(0, size, step):
    end = min(start + step, size) - 1
    r = requests.post(f"{url}/upload/rel/filuxe.zip", params={"time": 1700000000, "force": True},
                      headers={"key": key, "Content-Range": f"bytes {start}-{end}/{size}"},
                      data=data[start:end + 1], verify=cert)
    if r.status_code != 201:
        sys.exit(f"{r.status_code} {r.text}")
r = requests.get(f"{url}/filelist/rel", verify=cert)
print(r.json()["filelist"]["rel"]["filuxe.zip"]["size"])
r = requests.get(f"{url}/delete/rel/whole.zip", headers={"key": key}, verify=cert)
print(r.status_code)
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &gw.url, ca, KEY, file.to_str().unwrap()])
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.split_whitespace().collect::<Vec<_>>(), [data.len().to_string(), "200".into()]);
    assert_eq!(std::fs::read(gw.dir.join("rel/filuxe.zip")).unwrap(), data);
    assert!(!gw.dir.join("rel/whole.zip").exists(), "deleted over TLS");
}
