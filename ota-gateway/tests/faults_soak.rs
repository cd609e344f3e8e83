//! A short soak of the gateway binary under mixed load: wrk on `/version`, clients
//! downloading a 1 MB payload at a gigabit link's rate (each checked byte for byte), the config
//! rewritten (the channel flipped between two releases) every 2 s, the registry
//! (behind `e2e::faults::FaultProxy`) down one second in four, a file uploaded in
//! filuxe-style chunks (`Content-Range`, the write key) to the gateway's "lan" store
//! every second, and the mirror worker (`ota-gateway --mirror`, a process of its own)
//! forwarding them to the gateway's "wan" store. Upload times are floats as filuxe's
//! client sends them; every upload answered 201 is read back byte for byte and listed
//! with the float sent, on both stores. RSS (anonymous), open descriptors and
//! threads (`/proc/<pid>/task`: the gateway exports no tokio task count, and its tasks
//! run on a fixed pool of worker threads, so the threads bound the blocking pool, not
//! the async tasks) of the gateway and of the worker are sampled every second; they
//! must stay flat (bounded growth), no request or upload may fail, every uploaded file
//! must reach the second store byte for byte, and p99 `/version` under the load must
//! stay within 2x of the same wrk run on an otherwise idle gateway (the worse of one
//! run before and one after the load, the machine being shared).
//!
//! The gateway runs on a core of its own, as a 1-CPU pod would (tokio sizes its pool
//! from the CPUs it may use: one worker thread), and every load generator (wrk, the
//! downloaders, the uploader, the mirror worker) on another, as if on other machines;
//! the downloaders and the uploader also at nice 19, so they never delay wrk. With all of
//! it sharing two cores, p99 measured the scheduler, not the gateway: a CI run on a
//! quiet machine saw 2.29 ms under the load against 604 µs idle, wrk's own rate halved
//! by the test hashing ~850 MB/s of back-to-back downloads, and the same run with the
//! gateway alone on a core but two worker threads had p99 4 ms idle and loaded alike
//! (the threads taking turns on it).//!
//! CI runs 60 s (`cargo test -p ota-gateway --test faults_soak`); by hand
//! `UPDRAFT_SOAK_SECS=1800 bash e2e/scripts/soak.sh` runs 30 minutes. Figures printed as
//! `FIGURE …` (`-- --nocapture`).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use e2e::faults::FaultProxy;

const RAW: &str = "application/vnd.updraft.firmware.v1";
/// wrk's connections, in both the idle and the loaded run.
const WRK_CONNECTIONS: u32 = 8;
/// Each of the two downloaders starts a 1 MB download this often: together 100 MB/s,
/// what a gateway behind a saturated gigabit link sends.
const DOWNLOAD_EVERY: Duration = Duration::from_millis(20);
/// The stores' write key.
const STORE_KEY: &str = "soak-store-key";
/// Size of each uploaded file and of its chunks.
const UPLOAD_BYTES: usize = 64 * 1024;
const CHUNK_BYTES: usize = 16 * 1024;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open descriptors: (all but files under `stores`, files under `stores`).
fn open_fds(pid: u32, stores: &Path) -> (u64, u64) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return (0, 0) };
    let (mut other, mut store) = (0, 0);
    for entry in dir.flatten() {
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(stores)) {
            store += 1;
        } else {
            other += 1;
        }
    }
    (other, store)
}

/// Which core the gateway runs on and which the load generators do (the first two this
/// process may use); `None` on a single core, where everything shares it.
#[derive(Clone, Copy, Debug)]
struct Cores {
    gateway: Option<usize>,
    load: Option<usize>,
}

fn cores() -> Cores {
    // SAFETY: sched_getaffinity fills the zeroed set it is given, of the size it is told.
    let allowed: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    };
    match allowed[..] {
        [load, gateway, ..] => Cores { gateway: Some(gateway), load: Some(load) },
        _ => Cores { gateway: None, load: None },
    }
}

/// `program`, started on `cpu` alone (with `taskset`, from util-linux) when there is one.
fn on_cpu(cpu: Option<usize>, program: &str) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["--cpu-list", &cpu.to_string(), program]);
            command
        }
        None => Command::new(program),
    }
}

/// Keeps the calling thread on `cpu` (when there is one) at nice 19: a load generator's
/// thread. On Linux both are per thread.
fn load_thread(cpu: Option<usize>) {
    // SAFETY: plain syscalls on the calling thread, with a zeroed set of the size given.
    unsafe {
        if let Some(cpu) = cpu {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
        }
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        assert_eq!(libc::setpriority(libc::PRIO_PROCESS, tid, 19), 0);
    }
}

/// Runs wrk on the load generators' core on `url` for `secs`; returns (requests, non-2xx
/// or socket errors, p50, p99).
fn wrk(cores: Cores, url: &str, secs: u64) -> (u64, u64, Duration, Duration) {
    let out = on_cpu(cores.load, "wrk")
        .args(["-t", "1", "-c", &WRK_CONNECTIONS.to_string(), "-d", &format!("{secs}s"), "--latency", url])
        .output()
        .expect("wrk (cluster.sh tools installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk: {text} {}", String::from_utf8_lossy(&out.stderr));
    let percentile = |p: &str| {
        let line = text.lines().find(|l| l.trim_start().starts_with(p)).unwrap_or_else(|| panic!("no {p} in {text}"));
        parse_duration(line.split_whitespace().nth(1).unwrap())
    };
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in {text}"));
    let errors: u64 = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .flat_map(|l| l.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).collect::<Vec<_>>())
        .sum();
    (requests, errors, percentile("50%"), percentile("99%"))
}

/// wrk's `123.45us`, `1.20ms`, `1.00s`.
fn parse_duration(s: &str) -> Duration {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap();
    Duration::from_secs_f64(match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        other => panic!("unit {other}"),
    })
}

/// One sample of the gateway process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rss_anon_kb: u64,
    /// Descriptors other than the stores' files.
    fds: u64,
    /// Files of the stores held open: the download mapping cache keeps one per recently
    /// served file (up to 512 per store, then it starts over), plus open partials.
    store_fds: u64,
    threads: u64,
}

fn sample(pid: u32, stores: &Path) -> Sample {
    let (fds, store_fds) = open_fds(pid, stores);
    Sample { rss_anon_kb: status_field(pid, "RssAnon:"), fds, store_fds, threads: status_field(pid, "Threads:") }
}

/// `path → time` of every file a store lists under `soak/` (times compared as bits).
async fn listed_times(http: &reqwest::Client, store: &str) -> std::collections::HashMap<String, f64> {
    let mut times = std::collections::HashMap::new();
    let Ok(answer) = http.get(format!("{store}/filelist/soak")).send().await else { return times };
    let Ok(listing) = answer.json::<serde_json::Value>().await else { return times };
    if let Some(files) = listing["filelist"]["soak"].as_object() {
        for (name, entry) in files {
            if let Some(time) = entry["time"].as_f64() {
                times.insert(format!("soak/{name}"), time);
            }
        }
    }
    times
}

fn write_config(path: &Path, cfg: &updraft_core::config::GatewayConfig) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, cfg.to_yaml()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load_stays_flat() {
    let secs: u64 = std::env::var("UPDRAFT_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let work = tempfile::tempdir().unwrap();
    let reg = registry();
    let repo = unique_repo("soak");
    let (v1, v2) = (random_bytes(1_000_000), random_bytes(1_000_000));
    let d1 = push_file(&reg.addr, &repo, "1.0.0", work.path(), "v1.bin", RAW, &v1);
    let d2 = push_file(&reg.addr, &repo, "1.1.0", work.path(), "v2.bin", RAW, &v2);
    let proxy = Arc::new(FaultProxy::start(&reg.addr).await.unwrap());
    let release = |n: u32| {
        if n.is_multiple_of(2) {
            channel("fw", &proxy.addr(), &repo, ("1.0.0", "1.0.0", &d1))
        } else {
            channel("fw", &proxy.addr(), &repo, ("1.1.0", "1.1.0", &d2))
        }
    };
    let mut cfg = config(&work.path().join("cache"), vec![release(0)]);
    let port = free_port();
    cfg.listen = format!("127.0.0.1:{port}");
    cfg.admin_listen = format!("127.0.0.1:{}", free_port());
    // Two stores on the gateway: uploads land on "lan", the worker forwards them to "wan".
    let (lan_port, wan_port) = (free_port(), free_port());
    let store = |name: &str, port: u16| updraft_core::config::StoreConfig {
        name: name.into(),
        listen: format!("127.0.0.1:{port}"),
        dir: work.path().join("stores").join(name),
        write_key: Some(STORE_KEY.into()),
        write_key_file: None,
        public_reads: true,
        read_key_file: None,
        max_upload_bytes: 1 << 30,
        allow_plain_writes: true,
    };
    for name in ["lan", "wan"] {
        std::fs::create_dir_all(work.path().join("stores").join(name)).unwrap();
    }
    cfg.stores = vec![store("lan", lan_port), store("wan", wan_port)];
    let config_path = work.path().join("gateway.yaml");
    write_config(&config_path, &cfg);
    std::fs::write(work.path().join("store.key"), STORE_KEY).unwrap();
    let worker_config = work.path().join("worker.yaml");
    std::fs::write(
        &worker_config,
        format!(
            "adminListen: 127.0.0.1:{}\nlisten: 127.0.0.1:{}\nmirrors:\n- name: soak\n  source: {{http: {{url: \"http://127.0.0.1:{lan_port}\", path: soak}}}}\n  destination: {{http: {{url: \"http://127.0.0.1:{wan_port}\", path: soak, keyFile: {}, allowPlainHttp: true}}}}\n  interval: 1s\n",
            free_port(),
            free_port(),
            work.path().join("store.key").display()
        ),
    )
    .unwrap();
    let worker_log = std::fs::File::create(work.path().join("worker.log")).unwrap();
    let cores = cores();
    let worker = Proc(
        on_cpu(cores.load, env!("CARGO_BIN_EXE_ota-gateway"))
            .arg("--config")
            .arg(&worker_config)
            .arg("--mirror")
            .stdout(worker_log.try_clone().unwrap())
            .stderr(worker_log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let worker_pid = worker.0.id();
    let log = std::fs::File::create(work.path().join("gateway.log")).unwrap();
    let gw = Proc(
        on_cpu(cores.gateway, env!("CARGO_BIN_EXE_ota-gateway"))
            .arg("--config")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = gw.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/firmware?device=fw")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "the gateway never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both releases cached once, so flipping between them exercises the reload path.
    cfg.channels = vec![release(1)];
    write_config(&config_path, &cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{base}/version?device=fw"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .starts_with("1.1.0")
    {
        assert!(Instant::now() < deadline, "the reload to 1.1.0 never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let version_url = format!("{base}/version?device=fw");
    let idle_url = version_url.clone();
    let (idle_requests, idle_errors, idle_p50, idle_p99) =
        tokio::task::spawn_blocking(move || wrk(cores, &idle_url, 5)).await.unwrap();
    assert_eq!(idle_errors, 0);

    // The downloaders' and the uploader's runtime, on the load generators' core at nice 19.
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || load_thread(cores.load))
        .build()
        .unwrap();
    let load_http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (downloads, download_failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let good = Arc::new([v1.clone(), v2.clone()]);
    let downloaders: Vec<_> = (0..2)
        .map(|_| {
            let (http, url, stop, ok, bad, good) = (
                load_http.clone(),
                format!("{base}/firmware?device=fw"),
                stop.clone(),
                downloads.clone(),
                download_failures.clone(),
                good.clone(),
            );
            load.spawn(async move {
                let mut next = tokio::time::interval(DOWNLOAD_EVERY);
                next.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    next.tick().await;
                    let body = match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => r.bytes().await.ok(),
                        _ => None,
                    };
                    match body {
                        Some(b) if good.iter().any(|g| b[..] == g[..]) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => bad.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let (reloads, reload_stop) = (Arc::new(AtomicU64::new(0)), stop.clone());
    let reloads_done = reloads.clone();
    let (reload_cfg, reload_path) = (cfg.clone(), config_path.clone());
    let channels: Vec<_> = (0..2).map(release).collect();
    let proxy_flap = proxy.clone();
    let churn = tokio::spawn(async move {
        let mut cfg = reload_cfg;
        let mut tick = 0u32;
        while !reload_stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            tick += 1;
            proxy_flap.set_down(tick % 8 < 2); // down 1 s in 4
            if tick.is_multiple_of(4) {
                cfg.channels = vec![channels[(tick / 4 % 2) as usize].clone()];
                write_config(&reload_path, &cfg);
                reloads_done.fetch_add(1, Ordering::Relaxed);
            }
        }
        proxy_flap.set_down(false);
    });
    // Chunked uploads to the lan store, one file a second, with the time as filuxe's
    // client sends it (Python's repr of `time.time()`: a float, the shortest digits that
    // read back as it; issue #19 lost uploads on such times, which whole-second times
    // never showed). Every upload whose last chunk got 201 is read back at once, byte
    // for byte, and listed with the very float sent; each file's SHA-256 and time kept.
    let (uploads_ok, upload_failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (lost_after_201, times_differ) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let uploader = {
        let (http, stop, ok, bad) = (load_http.clone(), stop.clone(), uploads_ok.clone(), upload_failures.clone());
        let (lost, differ) = (lost_after_201.clone(), times_differ.clone());
        let lan = format!("http://127.0.0.1:{lan_port}");
        load.spawn(async move {
            let mut sent = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (name, data) = (format!("soak/f{n:06}.bin"), random_bytes(UPLOAD_BYTES));
                let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
                let mut failed = false;
                for from in (0..UPLOAD_BYTES).step_by(CHUNK_BYTES) {
                    let to = (from + CHUNK_BYTES).min(UPLOAD_BYTES) - 1;
                    let answer = http
                        .post(format!("{lan}/upload/{name}?time={time}&force=False"))
                        .header("key", STORE_KEY)
                        .header("content-range", format!("bytes {from}-{to}/{UPLOAD_BYTES}"))
                        .body(data[from..=to].to_vec())
                        .send()
                        .await;
                    if !answer.is_ok_and(|r| r.status() == 201) {
                        failed = true;
                        break;
                    }
                }
                if failed {
                    bad.fetch_add(1, Ordering::Relaxed);
                } else {
                    ok.fetch_add(1, Ordering::Relaxed);
                    let body = match http.get(format!("{lan}/download/{name}")).send().await {
                        Ok(r) if r.status() == 200 => r.bytes().await.ok(),
                        _ => None,
                    };
                    if body.is_none_or(|b| b[..] != data[..]) {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    if listed_times(&http, &lan).await.get(&name).map(|t| t.to_bits()) != Some(time.to_bits()) {
                        differ.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.push((name, sha256_hex(&data), time));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            sent
        })
    };
    let sampler_stop = stop.clone();
    let stores = work.path().join("stores").canonicalize().unwrap();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while !sampler_stop.load(Ordering::Relaxed) {
            samples.push((sample(pid, &stores), sample(worker_pid, &stores)));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples
    });
    let load_url = version_url.clone();
    let (requests, errors, load_p50, load_p99) =
        tokio::task::spawn_blocking(move || wrk(cores, &load_url, secs)).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for d in downloaders {
        d.await.unwrap();
    }
    churn.await.unwrap();
    let sent = uploader.await.unwrap();
    let (samples, worker_samples): (Vec<Sample>, Vec<Sample>) = sampler.await.unwrap().into_iter().unzip();
    // Every uploaded file reaches the wan store, byte for byte.
    let wan = format!("http://127.0.0.1:{wan_port}");
    let forwarding = Instant::now();
    let mut missing: Vec<(String, String)> = sent.iter().map(|(name, sum, _)| (name.clone(), sum.clone())).collect();
    while !missing.is_empty() && forwarding.elapsed() < Duration::from_secs(60) {
        let mut still = Vec::new();
        for (name, sum) in missing {
            let body = match http.get(format!("{wan}/download/{name}")).send().await {
                Ok(r) if r.status() == 200 => r.bytes().await.ok(),
                _ => None,
            };
            if body.is_none_or(|b| sha256_hex(&b) != sum) {
                still.push((name, sum));
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let forwarded_after = forwarding.elapsed();
    // The worker forwards each file's time: the wan store lists the float first sent.
    let wan_times = listed_times(&http, &wan).await;
    let forwarded_times_differ =
        sent.iter().filter(|(name, _, time)| wan_times.get(name).map(|t| t.to_bits()) != Some(time.to_bits())).count();
    load.shutdown_background();
    // Idle again after the load: on a shared machine the reference is the worse of the
    // two idle runs around the load.
    let idle_url = version_url.clone();
    let (_, idle_errors_after, _, idle_p99_after) =
        tokio::task::spawn_blocking(move || wrk(cores, &idle_url, 5)).await.unwrap();
    assert_eq!(idle_errors_after, 0);
    let idle_ref = idle_p99.max(idle_p99_after);

    // Flat: the last fifth against the second fifth (the first is warm-up).
    let fifth = (samples.len() / 5).max(1);
    let avg = |s: &[Sample], f: fn(&Sample) -> u64| s.iter().map(f).sum::<u64>() / s.len().max(1) as u64;
    let early = &samples[fifth..(2 * fifth).min(samples.len())];
    let late = &samples[samples.len() - fifth..];
    let (rss_early, rss_late) = (avg(early, |s| s.rss_anon_kb), avg(late, |s| s.rss_anon_kb));
    let (fds_early, fds_late) = (avg(early, |s| s.fds), avg(late, |s| s.fds));
    let max = |f: fn(&Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let min = |f: fn(&Sample) -> u64| samples.iter().map(f).min().unwrap_or(0);
    let (downloads, download_failures) = (downloads.load(Ordering::Relaxed), download_failures.load(Ordering::Relaxed));
    let (uploads, upload_failures) = (uploads_ok.load(Ordering::Relaxed), upload_failures.load(Ordering::Relaxed));
    let (lost, differ) = (lost_after_201.load(Ordering::Relaxed), times_differ.load(Ordering::Relaxed));
    let wmax = |f: fn(&Sample) -> u64| worker_samples.iter().map(f).max().unwrap_or(0);
    let wmin = |f: fn(&Sample) -> u64| worker_samples.iter().map(f).min().unwrap_or(0);
    let wfifth = (worker_samples.len() / 5).max(1);
    let (wrss_early, wrss_late) = (
        avg(&worker_samples[wfifth..(2 * wfifth).min(worker_samples.len())], |s| s.rss_anon_kb),
        avg(&worker_samples[worker_samples.len() - wfifth..], |s| s.rss_anon_kb),
    );
    println!(
        "FIGURE soak: {secs} s of wrk ({WRK_CONNECTIONS} connections) on /version + 2 1 MB downloaders at 50 MB/s each + a \
         reload every 2 s + registry down 1 s in 4 (gateway on CPU {:?}, the load on CPU {:?}): {requests} /version requests, {errors} errors; {downloads} \
         downloads, {download_failures} failed; {} reloads; /version p50/p99 idle {idle_p50:?}/{idle_p99:?} \
         ({idle_requests} requests in 5 s; p99 {idle_p99_after:?} idle after), under the load {load_p50:?}/{load_p99:?}; RssAnon {}..{} kB (second \
         fifth avg {rss_early} kB, last fifth avg {rss_late} kB); fds {}..{} (second fifth avg {fds_early}, last \
         fifth avg {fds_late}; store files held open {}..{}); threads {}..{}; {} samples",
        cores.gateway,
        cores.load,
        reloads.load(Ordering::Relaxed),
        min(|s| s.rss_anon_kb),
        max(|s| s.rss_anon_kb),
        min(|s| s.fds),
        max(|s| s.fds),
        min(|s| s.store_fds),
        max(|s| s.store_fds),
        min(|s| s.threads),
        max(|s| s.threads),
        samples.len()
    );
    println!(
        "FIGURE soak uploads+mirror: {uploads} files of {UPLOAD_BYTES} B uploaded in {CHUNK_BYTES} B chunks with \
         float times, {upload_failures} failed, {lost} answered 201 but not there byte for byte, {differ} listed \
         with another time; {} of {} forwarded to the second store byte for byte ({:.1} s after the load \
         for the last), {forwarded_times_differ} with another time there; mirror worker RssAnon {}..{} kB (second fifth avg {wrss_early}, last fifth avg {wrss_late}); \
         fds {}..{}; threads {}..{}",
        sent.len() - missing.len(),
        sent.len(),
        forwarded_after.as_secs_f64(),
        wmin(|s| s.rss_anon_kb),
        wmax(|s| s.rss_anon_kb),
        wmin(|s| s.fds),
        wmax(|s| s.fds),
        wmin(|s| s.threads),
        wmax(|s| s.threads),
    );
    assert_eq!(upload_failures, 0, "chunked uploads failed");
    assert_eq!(lost, 0, "uploads answered 201 on their last chunk but not there byte for byte");
    assert_eq!(differ, 0, "uploads listed with another time than the one sent");
    assert_eq!(forwarded_times_differ, 0, "forwarded files listed with another time than the one first sent");
    assert!(uploads > 0);
    assert!(missing.is_empty(), "not forwarded (or other bytes) within 60 s: {missing:?}");
    assert!(wrss_late <= wrss_early + wrss_early / 5 + 4096, "worker RssAnon grew: {wrss_early} kB → {wrss_late} kB");
    assert!(wmax(|s| s.fds) - wmin(|s| s.fds) < 64, "worker descriptors not flat");
    assert!(wmax(|s| s.threads) - wmin(|s| s.threads) < 16, "worker threads not flat");
    drop(worker);
    assert_eq!(errors, 0, "/version errors under the load");
    assert_eq!(download_failures, 0, "downloads failed or carried other bytes");
    // The load really ran: at least half the downloads the pace allows. (The
    // downloaders run at nice 19 and yield to anything else on the machine: a CI run
    // with a build beside it made 5,273 of 6,000, under the 90 % this once asked.)
    let paced = secs * 2 * 1000 / DOWNLOAD_EVERY.as_millis() as u64;
    assert!(downloads >= paced / 2, "downloads fell far behind their pace: {downloads} of {paced}");
    assert!(rss_late <= rss_early + rss_early / 5 + 4096, "RssAnon grew: {rss_early} kB → {rss_late} kB");
    // Descriptors other than store files (connections come and go): flat. Store files:
    // the download mapping cache holds up to 512 per store, then starts over.
    assert!(fds_late <= fds_early + 16, "open descriptors grew: {fds_early} → {fds_late}");
    assert!(max(|s| s.fds) - min(|s| s.fds) < 64, "open descriptors not flat");
    assert!(max(|s| s.store_fds) <= 2 * 512 + 16, "store files held open beyond the mapping caches' bound");
    assert!(max(|s| s.threads) - min(|s| s.threads) < 16, "threads not flat");
    // 2x of idle; 200 µs of slack for the scheduler of a shared 2-core machine.
    assert!(
        load_p99 <= idle_ref * 2 + Duration::from_micros(200),
        "p99 under load {load_p99:?} beyond 2x idle {idle_p99:?} (before) / {idle_p99_after:?} (after)"
    );
}
