//! Replicas serving one fleet (issue 22), the correctness part with small numbers; the
//! figures (requests/s, CPU per request, TLS handshakes, the 1 M device extrapolation)
//! come from `e2e/scripts/scaleout.sh` and are in SCALE.md, never asserted here.
//!
//! Three gateway processes (the binary) with one config, as the replicas of a
//! Deployment have: each its own cache (a pod's emptyDir), one store directory shared by
//! the three (the ReadWriteMany volume). Debian's nginx stands in for the Service
//! (round robin over the three) and, on one port per replica, for the registry's access
//! log: each replica pulls from the real registry through its own nginx port, so the
//! log counts each replica's pulls. It proves:
//!
//! - **At most one registry pull per replica per release**, with devices polling and
//!   downloading while the replicas start (the fetch is single-flight per replica).
//! - **Rollout agreement**: 10,000 device ids asked on every replica, over `/version`
//!   and the check API, get byte-identical answers, before and after the rollout goes
//!   from 30 % to 60 % on all replicas; while the change lands every answer is the old
//!   or the new one of that id (never an error); a device on the new release stays on it
//!   when the percentage grows.
//! - **Chunked uploads across replicas**: filuxe's own requests (its Python client's,
//!   `tests/filuxe/filuxe_upload.py`, float `time` included) through nginx, so a file's
//!   chunks land on different replicas: 0 lost, every time listed as sent.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use updraft_core::config::StoreConfig;

const RAW: &str = "application/vnd.updraft.firmware.v1";
const REPLICAS: usize = 3;
const IDS: usize = 10_000;
const KEY: &str = "replicas-write-key";
/// filuxe's client run through nginx: files, of which several-chunk ones (1-3 MiB).
const FILES: usize = 120;
const BIG: usize = 15;

/// One replica: its listeners, the nginx port it pulls through, its config and process.
struct Replica {
    port: u16,
    admin: u16,
    store: u16,
    pulls_via: u16,
    config: PathBuf,
    proc: Option<Proc>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_pull_once_and_keep_every_chunk() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let reg = registry();
    let repo = unique_repo("replicas");
    let (old, new) = (random_bytes(48 << 10), random_bytes(96 << 10));
    let old_digest = push_file(&reg.addr, &repo, "1.0.0", work, "old.bin", RAW, &old);
    let new_digest = push_file(&reg.addr, &repo, "2.0.0", work, "new.bin", RAW, &new);
    let layers = [format!("sha256:{}", sha256_hex(&old)), format!("sha256:{}", sha256_hex(&new))];

    let mut replicas: Vec<Replica> = (0..REPLICAS)
        .map(|i| Replica {
            port: free_port(),
            admin: free_port(),
            store: free_port(),
            pulls_via: free_port(),
            config: work.join(format!("gateway-{i}.yaml")),
            proc: None,
        })
        .collect();
    let store_lb = free_port();
    let nginx_dir = work.join("nginx");
    let _nginx = nginx(&nginx_dir, &nginx_conf(&nginx_dir, &replicas, store_lb, &reg.addr));
    let store_dir = work.join("volume/files");
    std::fs::create_dir_all(&store_dir).unwrap();
    let write_config = |replica: &Replica, i: usize, rollout: u8| {
        let mut fw = channel("fw", &format!("127.0.0.1:{}", replica.pulls_via), &repo, ("2.0.0", "2.0.0", &new_digest));
        fw.previous = Some(pinned(("1.0.0", "1.0.0", &old_digest)));
        fw.rollout = rollout;
        let mut cfg = config(&work.join(format!("cache-{i}")), vec![fw]);
        cfg.listen = format!("127.0.0.1:{}", replica.port);
        cfg.admin_listen = format!("127.0.0.1:{}", replica.admin);
        cfg.stores = vec![StoreConfig {
            name: "files".into(),
            listen: format!("127.0.0.1:{}", replica.store),
            dir: store_dir.clone(),
            write_key: Some(KEY.into()),
            write_key_file: None,
            public_reads: true,
            read_key_file: None,
            max_upload_bytes: StoreConfig::DEFAULT_MAX_UPLOAD_BYTES,
            // nginx (the Service) speaks plain HTTP to the pods here.
            allow_plain_writes: true,
        }];
        // Written whole and renamed, as kubelet swaps a ConfigMap: never half a file.
        let tmp = replica.config.with_extension("tmp");
        std::fs::write(&tmp, cfg.to_yaml()).unwrap();
        std::fs::rename(&tmp, &replica.config).unwrap();
    };
    for (i, replica) in replicas.iter_mut().enumerate() {
        write_config(replica, i, 30);
        replica.proc = Some(Proc::gateway(&replica.config, &[], &work.join(format!("gateway-{i}.log"))));
    }

    // Devices poll and download while the replicas start and fetch.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let started = Instant::now();
    let mut early = Vec::new();
    for replica in &replicas {
        for n in 0..8 {
            let (http, port) = (http.clone(), replica.port);
            early.push(tokio::spawn(async move {
                let path = if n % 2 == 0 { "firmware" } else { "version" };
                let url = format!("http://127.0.0.1:{port}/{path}?device=fw&id=early-{n}");
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                        return;
                    }
                    assert!(Instant::now() < deadline, "{url} never answered 200");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
    }
    for task in early {
        task.await.unwrap();
    }
    // Every replica serves both releases: ids on each side of the 30 % line.
    let version = |port: u16, id: String| {
        let http = http.clone();
        async move {
            let url = format!("http://127.0.0.1:{port}/version?device=fw&id={id}");
            let r = http.get(&url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            format!("{} {}", r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for replica in &replicas {
        let mut seen = std::collections::HashSet::new();
        for n in 0..40 {
            seen.insert(version(replica.port, format!("warm-{n}")).await);
        }
        assert_eq!(seen.len(), 2, "replica on {} does not serve both releases: {seen:?}", replica.port);
    }
    println!("FIGURE replicas-ready: 3 replicas serving both releases {:?} after start", started.elapsed());

    // Registry pulls: per replica (its nginx port), per layer.
    let pulls = pulls_by_replica(&nginx_dir);
    for (i, replica) in replicas.iter().enumerate() {
        for layer in &layers {
            let n = pulls.get(&(replica.pulls_via, layer.clone())).copied().unwrap_or(0);
            assert_eq!(n, 1, "replica {i} pulled {layer} {n} times (log: {:?})", pulls);
        }
    }
    println!(
        "FIGURE registry-pulls: {} blob GETs for 2 releases on 3 replicas (1 per replica per release)",
        pulls.values().sum::<usize>()
    );

    // Rollout agreement at 30 %.
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let at_30 = agreement(&http, &ports, "30 %").await;
    let on_new_30 = share_on(&at_30, "2.0.0");
    assert!((0.27..0.33).contains(&on_new_30), "{on_new_30} of the ids on 2.0.0 at 30 %");

    // The step to 60 % on every replica, with devices polling while it lands.
    let reloads: Vec<u64> = replicas.iter().map(|r| applied_reloads(r.admin)).collect();
    let during = {
        let (http, ports, before) = (http.clone(), ports.clone(), at_30.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for round in 0..20 {
                for (n, port) in ports.iter().enumerate() {
                    for k in 0..25 {
                        let id = (round * 997 + n * 131 + k * 17) % IDS;
                        let url = format!("http://127.0.0.1:{port}/version?device=fw&id=dev-{id}");
                        let r = http.get(&url).send().await.unwrap();
                        answers.push((id, format!("{} {}", r.status().as_u16(), r.text().await.unwrap())));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (answers, before)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, replica) in replicas.iter().enumerate() {
        write_config(replica, i, 60);
    }
    for (replica, before) in replicas.iter().zip(&reloads) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while applied_reloads(replica.admin) <= *before {
            assert!(Instant::now() < deadline, "replica on {} never applied the 60 % config", replica.port);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (answers_during, before) = during.await.unwrap();
    let at_60 = agreement(&http, &ports, "60 %").await;
    let mut neither = Vec::new();
    for (id, answer) in &answers_during {
        if *answer != before[*id].0 && *answer != at_60[*id].0 {
            neither.push((id, answer));
        }
    }
    assert!(neither.is_empty(), "answers during the step that were neither the old nor the new: {neither:?}");
    let on_new_60 = share_on(&at_60, "2.0.0");
    assert!((0.57..0.63).contains(&on_new_60), "{on_new_60} of the ids on 2.0.0 at 60 %");
    let left_new = (0..IDS).filter(|&i| at_30[i].0.contains("2.0.0") && !at_60[i].0.contains("2.0.0")).count();
    assert_eq!(left_new, 0, "ids on 2.0.0 at 30 % that went back to 1.0.0 at 60 %");
    // The step pulled nothing: both releases were already cached on every replica.
    assert_eq!(pulls_by_replica(&nginx_dir), pulls, "the rollout step made registry pulls");
    println!(
        "FIGURE rollout-agreement: {IDS} ids x 3 replicas x (/version + check), 0 disagreements at 30 % ({:.1} % on \
         2.0.0) and at 60 % ({:.1} %); {} answers while the step landed, each the old or the new one of its id",
        on_new_30 * 100.0,
        on_new_60 * 100.0,
        answers_during.len()
    );

    // filuxe's client through nginx: its chunks land on different replicas.
    let python = clients_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/filuxe/filuxe_upload.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .arg(format!("http://127.0.0.1:{store_lb}"))
        .arg(KEY)
        .arg(work.join("client"))
        .arg(FILES.to_string())
        .arg(BIG.to_string())
        .output()
        .await
        .expect("run the clients venv's python");
    let figures = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "filuxe's requests through nginx lost files: {figures}\n{}",
        String::from_utf8_lossy(&out.stderr).lines().take(40).collect::<Vec<_>>().join("\n")
    );
    let figures: serde_json::Value = serde_json::from_str(figures.trim()).unwrap();
    for zero in ["upload_failed", "lost", "wrong_bytes", "unlisted", "time_differs"] {
        assert_eq!(figures[zero], 0, "{zero}");
    }
    let (split, multi) = uploads_split_across_replicas(&nginx_dir);
    assert!(multi >= BIG, "only {multi} several-chunk uploads in nginx's log");
    assert!(split * 2 >= multi, "only {split} of {multi} several-chunk uploads had chunks on two replicas");
    println!(
        "FIGURE chunked-across-replicas: {FILES} files as filuxe sends them through nginx over 3 replicas, {split} of \
         {multi} several-chunk uploads split across replicas, 0 lost, every float time listed as sent: {figures}"
    );
}

/// Asks every replica, for each of [`IDS`] ids, `/version` and the check API (as a
/// device on 0.9.0). Fails on any disagreement; returns replica 0's answers by id.
async fn agreement(http: &reqwest::Client, ports: &[u16], when: &str) -> Vec<(String, String)> {
    let mut by_replica = Vec::new();
    for &port in ports {
        let answers: Vec<(usize, String, String)> = futures::stream::iter(0..IDS)
            .map(|i| {
                let http = http.clone();
                async move {
                    let id = format!("dev-{i}");
                    let url = format!("http://127.0.0.1:{port}/version?device=fw&id={id}");
                    let r = http.get(&url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
                    let version = format!("{} {}", r.status().as_u16(), r.text().await.unwrap());
                    let url = format!("http://127.0.0.1:{port}/api/v1/channels/fw/check");
                    let body = serde_json::json!({"version": "0.9.0", "id": id});
                    let r = http.post(&url).json(&body).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
                    let check = format!("{} {}", r.status().as_u16(), r.text().await.unwrap());
                    (i, version, check)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut answers: Vec<_> = answers.into_iter().map(|(i, v, c)| (i, (v, c))).collect();
        answers.sort_by_key(|(i, _)| *i);
        by_replica.push(answers.into_iter().map(|(_, a)| a).collect::<Vec<_>>());
    }
    let mut disagreements = Vec::new();
    for i in 0..IDS {
        for other in &by_replica[1..] {
            if other[i] != by_replica[0][i] {
                disagreements.push((i, by_replica[0][i].clone(), other[i].clone()));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements at {when}, e.g. {:?}",
        disagreements.len(),
        &disagreements[..disagreements.len().min(3)]
    );
    for (version, check) in &by_replica[0] {
        assert!(version.starts_with("200 "), "a /version answer at {when}: {version}");
        assert!(check.starts_with("200 "), "a check answer at {when}: {check}");
    }
    by_replica.swap_remove(0)
}

fn share_on(answers: &[(String, String)], version: &str) -> f64 {
    let on = answers.iter().filter(|(v, _)| v.starts_with(&format!("200 {version}\n"))).count();
    on as f64 / answers.len() as f64
}

/// `config_reloads_total{result="applied"}` of the replica whose admin port is `admin`.
fn applied_reloads(admin: u16) -> u64 {
    let (metrics, _) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]);
    metrics
        .lines()
        .find(|l| l.contains("config_reloads_total") && l.contains("result=\"applied\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// nginx's registry log: blob GETs answered 200, by (nginx port = replica, digest).
fn pulls_by_replica(nginx_dir: &Path) -> HashMap<(u16, String), usize> {
    let log = std::fs::read_to_string(nginx_dir.join("registry.log")).unwrap_or_default();
    let mut pulls = HashMap::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if let [port, "GET", uri, "200"] = f[..] {
            if let Some((_, digest)) = uri.split_once("/blobs/") {
                *pulls.entry((port.parse().unwrap(), digest.to_owned())).or_default() += 1;
            }
        }
    }
    pulls
}

/// nginx's store log: of the uploads sent in several chunks, how many had chunks on
/// more than one replica, and how many there were.
fn uploads_split_across_replicas(nginx_dir: &Path) -> (usize, usize) {
    let log = std::fs::read_to_string(nginx_dir.join("store.log")).unwrap();
    let mut by_upload: HashMap<(String, String), Vec<String>> = HashMap::new();
    for line in log.lines() {
        // `$request_uri $http_content_range $upstream_addr`; `time` tells uploads of one path apart.
        let f: Vec<&str> = line.split(' ').collect();
        if let [uri, "bytes", _, upstream] = f[..] {
            if uri.starts_with("/upload/") {
                let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
                by_upload.entry((path.to_owned(), query.to_owned())).or_default().push(upstream.to_owned());
            }
        }
    }
    let multi: Vec<_> = by_upload.values().filter(|ups| ups.len() > 1).collect();
    let split = multi.iter().filter(|ups| ups.iter().any(|u| *u != ups[0])).count();
    (split, multi.len())
}

/// nginx: round robin over the replicas' store ports on `store_lb` (a new upstream
/// connection per request, so a file's chunks go to different replicas, as a Service
/// spreads filuxe's new connection per chunk), its log naming the replica of each
/// chunk; and one port per replica in front of the registry, its log counting pulls.
fn nginx_conf(dir: &Path, replicas: &[Replica], store_lb: u16, registry: &str) -> String {
    let stores: String = replicas.iter().map(|r| format!("  server 127.0.0.1:{};\n", r.store)).collect();
    let pulls: String = replicas.iter().map(|r| format!("  listen 127.0.0.1:{};\n", r.pulls_via)).collect();
    format!(
        "worker_processes 1;\npid {dir}/nginx.pid;\ndaemon off;\nevents {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path {dir}/tmp/body;\n proxy_temp_path {dir}/tmp/proxy;\n\
         client_max_body_size 0;\n\
         log_format pulls '$server_port $request_method $uri $status';\n\
         log_format chunks '$request_uri $http_content_range $upstream_addr';\n\
         upstream stores {{\n{stores} }}\n\
         server {{\n  listen 127.0.0.1:{store_lb};\n  access_log {dir}/store.log chunks;\n\
           location / {{ proxy_pass http://stores; proxy_request_buffering off; }}\n }}\n\
         server {{\n{pulls}  access_log {dir}/registry.log pulls;\n\
           location / {{ proxy_pass http://{registry}; proxy_set_header Host $http_host; proxy_buffering off; }}\n }}\n}}\n",
        dir = dir.display(),
    )
}

/// Starts Debian's nginx on `conf` in `dir` and waits until it listens.
fn nginx(dir: &Path, conf: &str) -> Proc {
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let bin = ["/usr/sbin/nginx", "nginx"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("nginx");
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(dir).arg("-c").arg(dir.join("nginx.conf")).arg("-e").arg(dir.join("error.log"));
    let proc = Proc::spawn(&mut cmd, &dir.join("stdout.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("nginx.pid").exists() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    proc
}

/// The python of the clients venv `cluster.sh tools` makes (with `requests`).
fn clients_python() -> PathBuf {
    let cache = std::env::var_os("UPDRAFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/updraft"));
    let python = cache.join("clients-venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash e2e/scripts/cluster.sh tools`", python.display());
    python
}
