//! The forwarder end to end with real parts: two gateway processes ("LAN" and
//! "WAN", each serving a store of its own) on loopback, the worker process
//! (`ota-gateway --mirror`), filuxe-style `curl` uploads, and the local registry
//! with `oras`/`skopeo` for OCI to OCI.

mod store_support;

use std::path::Path;
use std::time::Duration;

use store_support::*;

const SERIES_TIME: f64 = 1_700_000_000.0;

fn mirror_yaml(admin_port: u16, body: &str) -> String {
    format!("adminListen: 127.0.0.1:{admin_port}\nlisten: 127.0.0.1:{}\nmirrors:\n{body}", free_port())
}

fn start_worker(work: &Path, config: &Path, n: u32) -> Proc {
    Proc::gateway(&["--config", config.to_str().unwrap(), "--mirror"], &work.join(format!("worker-{n}.log")))
}

async fn listing(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/filelist/?recursive=true")).await.unwrap().json().await.unwrap()
}

/// `dir/file` → (size, time, sha256) of what a store lists.
async fn files(url: &str) -> std::collections::BTreeMap<String, (u64, f64, Option<String>)> {
    let list = listing(url).await;
    let mut found = std::collections::BTreeMap::new();
    for (dir, entries) in list["filelist"].as_object().unwrap() {
        for (name, e) in entries.as_object().unwrap() {
            let path = if dir == "." { name.clone() } else { format!("{dir}/{name}") };
            found.insert(
                path,
                (e["size"].as_u64().unwrap(), e["time"].as_f64().unwrap(), e["sha256"].as_str().map(str::to_owned)),
            );
        }
    }
    found
}

async fn download(url: &str, path: &str) -> Vec<u8> {
    reqwest::get(format!("{url}/download/{path}")).await.unwrap().bytes().await.unwrap().to_vec()
}

async fn put_series(work: &Path, url: &str, names: &[&str], seed: u64) {
    for (i, name) in names.iter().enumerate() {
        let file = work.join("upload.bin");
        std::fs::write(&file, pseudo_random(1_500_000 + i * 1000, seed + i as u64)).unwrap();
        let code = upload_chunked(url, &format!("rel/{name}"), &file, 1 << 20, SERIES_TIME + i as f64, false).await;
        assert_eq!(code, 201, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_to_wan_with_rules_retention_and_a_dry_run() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let lan = Gateway::start(w, "lan", free_port()).await;
    let wan = Gateway::start(w, "wan", free_port()).await;
    let key = format!("key: {KEY}");
    // A file at the WAN the rules do not select: never touched.
    assert_eq!(
        status(&["-X", "POST", "-H", &key, "--data-binary", "notes", &format!("{}/upload/rel/readme.txt", wan.url)])
            .await,
        201
    );

    let series = [
        "a:1.0.0:stable:arm:fw.zip",
        "a:1.1.0:stable:arm:fw.zip",
        "a:2.0.0:stable:arm:fw.zip",
        "b:0.9.0:stable:arm:fw.zip",
        "b:1.0.0:stable:arm:fw.zip",
        "unversioned_a.zip",
        "a:0.1.0:stable:arm:fw.zip",
    ];
    put_series(w, &lan.url, &series, 10).await;
    // Refused without force, replaced with it: the WAN must get the replacement.
    let file = w.join("upload.bin");
    let replacement = pseudo_random(2_100_000, 99);
    std::fs::write(&file, &replacement).unwrap();
    assert_eq!(
        upload_chunked(&lan.url, "rel/b:1.0.0:stable:arm:fw.zip", &file, 1 << 20, SERIES_TIME + 50.0, false).await,
        403
    );
    assert_eq!(
        upload_chunked(&lan.url, "rel/b:1.0.0:stable:arm:fw.zip", &file, 1 << 20, SERIES_TIME + 50.0, true).await,
        201
    );

    let key_file = w.join("wan-key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let admin_port = free_port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let mirror = |dry_run: bool| {
        format!(
            r#"- name: lan-to-wan
  source: {{http: {{url: "{}", path: rel}}}}
  destination: {{http: {{url: "{}", path: rel, keyFile: {}, allowPlainHttp: true}}}}
  include: ["*.zip"]
  exclude: ["unversioned_*"]
  version: {{regex: ':(\d+\.\d+\.\d+):', groups: ['(.*?):\d+\.\d+\.\d+:(.*)'], range: ">=0.5"}}
  retention: {{keepLast: 2}}
  interval: 1s
  dryRun: {dry_run}
"#,
            lan.url,
            wan.url,
            key_file.display()
        )
    };
    let config = w.join("worker.yaml");
    std::fs::write(&config, mirror_yaml(admin_port, &mirror(true))).unwrap();
    let worker = start_worker(w, &config, 1);

    // Dry run: the plan is reported, nothing changes.
    let planned = wait_for(Duration::from_secs(30), || async {
        mirror_status(&admin, "lan-to-wan").await.is_some_and(|s| s["lastSync"].is_number())
    })
    .await;
    assert!(planned, "no dry-run pass:\n{}", worker.log_text());
    let s = mirror_status(&admin, "lan-to-wan").await.unwrap();
    assert_eq!(s["dryRun"], true);
    let expected = [
        "a:1.1.0:stable:arm:fw.zip",
        "a:2.0.0:stable:arm:fw.zip",
        "b:0.9.0:stable:arm:fw.zip",
        "b:1.0.0:stable:arm:fw.zip",
    ];
    let mut to_copy: Vec<String> = serde_json::from_value(s["toCopy"].clone()).unwrap();
    to_copy.sort();
    assert_eq!(to_copy, expected);
    assert_eq!(s["pending"], 4);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(files_under(&wan.dir), ["rel/readme.txt"], "a dry run changed the destination");

    // The real thing, by editing the config the worker watches.
    std::fs::write(&config, mirror_yaml(admin_port, &mirror(false))).unwrap();
    let synced = wait_for(Duration::from_secs(60), || async {
        mirror_status(&admin, "lan-to-wan")
            .await
            .is_some_and(|s| s["dryRun"] == false && s["pending"] == 0 && s["inSync"] == 4)
    })
    .await;
    assert!(synced, "not in sync: {:?}\n{}", mirror_status(&admin, "lan-to-wan").await, worker.log_text());
    let mut at_wan: Vec<String> = expected.iter().map(|n| format!("rel/{n}")).collect();
    at_wan.push("rel/readme.txt".into());
    at_wan.sort();
    assert_eq!(files_under(&wan.dir), at_wan);
    let (lan_files, wan_files) = (files(&lan.url).await, files(&wan.url).await);
    for name in expected {
        let path = format!("rel/{name}");
        let got = download(&wan.url, &path).await;
        assert!(got == download(&lan.url, &path).await, "{path} differs");
        assert_eq!(wan_files[&path], lan_files[&path], "{path}: size, time and sha256 as at the LAN");
    }
    assert_eq!(download(&wan.url, "rel/b:1.0.0:stable:arm:fw.zip").await, replacement);

    // A new release: copied, and the oldest of its group beyond two deleted at the
    // WAN only.
    put_series(w, &lan.url, &["a:2.1.0:stable:arm:fw.zip"], 20).await;
    let rotated = wait_for(Duration::from_secs(30), || async {
        let f = files_under(&wan.dir);
        f.contains(&"rel/a:2.1.0:stable:arm:fw.zip".to_owned())
            && !f.contains(&"rel/a:1.1.0:stable:arm:fw.zip".to_owned())
    })
    .await;
    assert!(rotated, "{:?}\n{}", files_under(&wan.dir), worker.log_text());
    assert_eq!(files_under(&lan.dir).len(), series.len() + 1, "the source lost files");
    let metrics = reqwest::get(format!("{admin}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("updraft_mirror_copied_total{mirror=\"lan-to-wan\"} 5"), "{metrics}");
    assert!(metrics.contains("updraft_mirror_deleted_total{mirror=\"lan-to-wan\"} 1"), "{metrics}");
    assert!(metrics.contains("updraft_mirror_pending{mirror=\"lan-to-wan\"} 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_down_then_back_and_a_worker_killed_mid_copy() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let lan = Gateway::start(w, "lan", free_port()).await;
    let wan_port = free_port();
    let mut wan = Gateway::start(w, "wan", wan_port).await;
    // The worker reaches the WAN through a throttle, so a large copy takes seconds.
    let (proxy, _proxy_task) = throttle(format!("127.0.0.1:{wan_port}"), 48 << 20).await;
    let key_file = w.join("wan-key");
    std::fs::write(&key_file, KEY).unwrap();
    let admin_port = free_port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let config = w.join("worker.yaml");
    let body = format!(
        "- name: m\n  source: {{http: {{url: \"{}\"}}}}\n  destination: {{http: {{url: \"http://{proxy}\", keyFile: {}, allowPlainHttp: true}}}}\n  interval: 1s\n",
        lan.url,
        key_file.display()
    );
    std::fs::write(&config, mirror_yaml(admin_port, &body)).unwrap();
    let mut worker = start_worker(w, &config, 1);
    let in_sync = |n: u64| {
        let admin = admin.clone();
        move || {
            let admin = admin.clone();
            async move { mirror_status(&admin, "m").await.is_some_and(|s| s["pending"] == 0 && s["inSync"] == n) }
        }
    };

    put_series(w, &lan.url, &["f1.bin"], 1).await;
    assert!(wait_for(Duration::from_secs(30), in_sync(1)).await, "{}", worker.log_text());

    // The WAN goes away; uploads go on; the work is pending, visibly.
    wan.proc.kill();
    put_series(w, &lan.url, &["f2.bin", "f3.bin"], 2).await;
    let pending = wait_for(Duration::from_secs(30), || async {
        mirror_status(&admin, "m").await.is_some_and(|s| s["pending"].as_u64() >= Some(2) && s["error"].is_string())
    })
    .await;
    assert!(pending, "{:?}", mirror_status(&admin, "m").await);
    let metrics = reqwest::get(format!("{admin}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("updraft_mirror_pending{mirror=\"m\"} 2"), "{metrics}");
    assert!(metrics.contains("updraft_mirror_up{mirror=\"m\",side=\"destination\"} 0"), "{metrics}");

    // It comes back: everything lands, nothing lost or doubled.
    wan = Gateway::start(w, "wan", wan_port).await;
    assert!(wait_for(Duration::from_secs(60), in_sync(3)).await, "{:?}", mirror_status(&admin, "m").await);
    assert_eq!(files_under(&wan.dir), files_under(&lan.dir));
    for f in files_under(&lan.dir) {
        assert!(download(&wan.url, &f).await == download(&lan.url, &f).await, "{f} differs");
    }

    // A 256 MiB file; the worker is killed with SIGKILL in the middle of its copy.
    let big: Vec<u8> = (0..256u64).flat_map(|i| pseudo_random(1 << 20, 1000 + i)).collect();
    let big_sha = sha256_hex(&big);
    let big_file = w.join("big.bin");
    std::fs::write(&big_file, &big).unwrap();
    drop(big);
    // Watch the WAN all along: the file is either absent or whole, never partial.
    let watch_url = wan.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, expected) = (stop.clone(), big_sha.clone());
        tokio::spawn(async move {
            let mut looks = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((size, _, sha)) = files(&watch_url).await.get("big.bin") {
                    assert_eq!(*size, 256 << 20, "a partial big.bin was visible");
                    assert_eq!(sha.as_deref(), Some(expected.as_str()), "big.bin visible with other content");
                }
                looks += 1;
                let head = reqwest::Client::new().head(format!("{watch_url}/download/big.bin")).send().await.unwrap();
                if head.status() == 200 {
                    assert_eq!(head.headers()["content-length"], (256u64 << 20).to_string().as_str());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            looks
        })
    };
    let body = format!("@{}", big_file.display());
    let key = format!("key: {KEY}");
    assert_eq!(
        status(&[
            "-X",
            "POST",
            "-H",
            &key,
            "--data-binary",
            &body,
            &format!("{}/upload/big.bin?time={SERIES_TIME}", lan.url)
        ])
        .await,
        201
    );
    let partial_dir = state_of(&wan.dir).join("partial");
    let mut rss_kb = 0;
    let copying = wait_for(Duration::from_secs(60), || {
        rss_kb = rss_kb.max(worker.rss_anon_kb().unwrap_or(0));
        let found = std::fs::read_dir(&partial_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::metadata(e.path().join("data")).is_ok_and(|m| m.len() > 64 << 20));
        async move { found }
    })
    .await;
    assert!(copying, "the big copy never started:\n{}", worker.log_text());
    worker.kill();
    assert!(rss_kb > 0 && rss_kb < 64 * 1024, "worker RssAnon {rss_kb} kB while copying");
    assert_eq!(status(&[&format!("{}/download/big.bin", wan.url)]).await, 404, "the copy finished before the kill");
    assert!(!files(&wan.url).await.contains_key("big.bin"));

    // The next worker's pass completes it.
    let worker = start_worker(w, &config, 2);
    assert!(
        wait_for(Duration::from_secs(120), in_sync(4)).await,
        "{:?}\n{}",
        mirror_status(&admin, "m").await,
        worker.log_text()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let looks = watcher.await.expect("the watcher saw no partial file");
    assert!(looks > 20, "the watcher looked only {looks} times");
    assert_eq!(sha256_hex(&download(&wan.url, "big.bin").await), big_sha);
    assert_eq!(files_under(&wan.dir), files_under(&lan.dir));
    println!("worker RssAnon while copying 256 MiB: {rss_kb} kB");
}

fn oras(args: &[&str], dir: &Path) -> String {
    let out = std::process::Command::new("oras").current_dir(dir).args(args).output().expect("run oras");
    assert!(out.status.success(), "oras {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_to_oci_keeps_digests_and_signature_tags() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (src, dst) = (format!("mirror-test/src-{nanos}"), format!("mirror-test/dst-{nanos}"));
    let push = |tag: &str, file: &str, data: &[u8], media: &str| {
        std::fs::write(w.join(file), data).unwrap();
        oras(&["push", "--plain-http", &format!("{reg}/{src}:{tag}"), &format!("{file}:{media}")], w);
        oras(&["resolve", "--plain-http", &format!("{reg}/{src}:{tag}")], w)
    };
    push("v1.0.0", "fw-1.bin", &pseudo_random(300_000, nanos as u64), "application/vnd.updraft.firmware.v1");
    let d2 =
        push("v1.1.0", "fw-2.bin", &pseudo_random(400_000, nanos as u64 + 1), "application/vnd.updraft.firmware.v1");
    push("latest", "fw-3.bin", &pseudo_random(1000, nanos as u64 + 2), "application/vnd.updraft.firmware.v1");
    let sig_tag = format!("sha256-{}.sig", d2.trim_start_matches("sha256:"));
    push(&sig_tag, "sig.json", br#"{"critical":{}}"#, "application/vnd.dev.cosign.simplesigning.v1+json");

    let admin_port = free_port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let body = format!(
        "- name: oci\n  source: {{oci: {{registry: \"{reg}\", repository: {src}, insecure: true}}}}\n  destination: {{oci: {{registry: \"{reg}\", repository: {dst}, insecure: true}}}}\n  include: [\"v*\"]\n  interval: 1s\n"
    );
    let config = w.join("worker.yaml");
    std::fs::write(&config, mirror_yaml(admin_port, &body)).unwrap();
    let worker = start_worker(w, &config, 1);
    let synced = wait_for(Duration::from_secs(60), || async {
        mirror_status(&admin, "oci").await.is_some_and(|s| s["pending"] == 0 && s["inSync"] == 2)
    })
    .await;
    assert!(synced, "{:?}\n{}", mirror_status(&admin, "oci").await, worker.log_text());
    for tag in ["v1.0.0", "v1.1.0", sig_tag.as_str()] {
        let a = oras(&["resolve", "--plain-http", &format!("{reg}/{src}:{tag}")], w);
        let b = oras(&["resolve", "--plain-http", &format!("{reg}/{dst}:{tag}")], w);
        assert_eq!(a, b, "{tag}");
    }
    let raw = |repo: &str| {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reg}/{repo}:v1.1.0")])
            .output()
            .expect("run skopeo");
        assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    assert_eq!(raw(&src), raw(&dst), "manifests differ");
    let tags = oras(&["repo", "tags", "--plain-http", &format!("{reg}/{dst}")], w);
    assert!(!tags.lines().any(|t| t == "latest"), "an excluded tag was copied: {tags}");
    // Blobs are the same by digest: pulling from the destination gives the bytes.
    let pulled = w.join("pulled");
    oras(&["pull", "--plain-http", "-o", pulled.to_str().unwrap(), &format!("{reg}/{dst}:v1.1.0")], w);
    assert_eq!(std::fs::read(pulled.join("fw-2.bin")).unwrap(), std::fs::read(w.join("fw-2.bin")).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_to_oci_to_store_by_titles() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let lan = Gateway::start(w, "lan", free_port()).await;
    let wan = Gateway::start(w, "wan", free_port()).await;
    put_series(w, &lan.url, &["app-1.0.0.zip", "app-1.1.0.zip"], 40).await;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let repo = format!("mirror-test/files-{nanos}");
    // An artifact pushed by someone else, its file titled by oras.
    let pushed = pseudo_random(70_000, 77);
    std::fs::write(w.join("tool-2.0.0.bin"), &pushed).unwrap();
    oras(&["push", "--plain-http", &format!("{reg}/{repo}:tool"), "tool-2.0.0.bin:application/octet-stream"], w);

    let key_file = w.join("wan-key");
    std::fs::write(&key_file, KEY).unwrap();
    let admin_port = free_port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let body = format!(
        "- name: lan-to-oci\n  source: {{http: {{url: \"{lan}\"}}}}\n  destination: {{oci: {{registry: \"{reg}\", repository: {repo}, insecure: true}}}}\n  interval: 1s\n\
         - name: oci-to-wan\n  source: {{oci: {{registry: \"{reg}\", repository: {repo}, insecure: true}}}}\n  destination: {{http: {{url: \"{wan}\", keyFile: {key}, allowPlainHttp: true}}}}\n  interval: 1s\n",
        lan = lan.url,
        wan = wan.url,
        key = key_file.display()
    );
    let config = w.join("worker.yaml");
    std::fs::write(&config, mirror_yaml(admin_port, &body)).unwrap();
    let worker = start_worker(w, &config, 1);
    let done = wait_for(Duration::from_secs(60), || async {
        let a = mirror_status(&admin, "lan-to-oci").await;
        let b = mirror_status(&admin, "oci-to-wan").await;
        a.is_some_and(|s| s["pending"] == 0 && s["inSync"] == 2)
            && b.is_some_and(|s| s["pending"] == 0 && s["inSync"] == 3)
    })
    .await;
    assert!(
        done,
        "{:?} {:?}\n{}",
        mirror_status(&admin, "lan-to-oci").await,
        mirror_status(&admin, "oci-to-wan").await,
        worker.log_text()
    );
    // Each store file is a one-layer artifact whose layer is the file, titled with its name.
    // Tags are the names made valid (`rel/` has a slash: `rel_app-1.1.0.zip-<hash>`).
    let tags = oras(&["repo", "tags", "--plain-http", &format!("{reg}/{repo}")], w);
    let tag = tags.lines().find(|t| t.starts_with("rel_app-1.1.0.zip-")).unwrap_or_else(|| panic!("tags: {tags}"));
    let pulled = w.join("pulled");
    oras(&["pull", "--plain-http", "-o", pulled.to_str().unwrap(), &format!("{reg}/{repo}:{tag}")], w);
    assert_eq!(std::fs::read(pulled.join("rel/app-1.1.0.zip")).unwrap(), download(&lan.url, "rel/app-1.1.0.zip").await);
    // And every titled file of the repository reached the other store, byte-exact.
    assert_eq!(files_under(&wan.dir), ["rel/app-1.0.0.zip", "rel/app-1.1.0.zip", "tool-2.0.0.bin"]);
    for f in ["rel/app-1.0.0.zip", "rel/app-1.1.0.zip"] {
        assert!(download(&wan.url, f).await == download(&lan.url, f).await, "{f} differs");
    }
    assert_eq!(download(&wan.url, "tool-2.0.0.bin").await, pushed);
}
