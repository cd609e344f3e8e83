//! Operator faults on a real control plane: the API server and etcd restarted
//! mid-reconcile, watches cut and expired (410 Gone on resume), the leader killed, and
//! many FirmwareChannels while the registry flaps. The operator is the real binary;
//! etcd, kube-apiserver and the registry are real, on a private plane
//! ([`e2e::plane::Plane`]) so stopping them never disturbs the shared one. The API
//! server's audit log, with one bearer token per operator replica, counts every
//! request each replica makes (writes, lists, watches); a TCP relay
//! ([`e2e::relay::TcpRelay`]) between an operator and the API server counts its
//! connection attempts and cuts its connections; the fault proxy sits between the
//! operator and the registry.
//!
//! Every scenario asserts its outcome and a bound and prints its figure (`FIGURE …`,
//! `-- --nocapture`). The tests share one plane and run one at a time. Longer versions
//! by hand: `UPDRAFT_FLAP_CHANNELS=1000 UPDRAFT_FLAP_SECS=600` (see RELIABILITY.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use e2e::conditions::{condition, has_status};
use e2e::faults::{Fault, FaultProxy, Rule};
use e2e::plane::{Audited, Daemon, Plane};
use e2e::procs::{free_port, Proc, TempDir};
use e2e::relay::TcpRelay;
use e2e::repo_root;
use serde_json::Value;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const REPOSITORY: &str = "faults/firmware";
const USERS: &[&str] = &["operator", "operator-a", "operator-b", "operator-c"];
const GATEWAY: &str = "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n";

static SERIAL: Mutex<()> = Mutex::new(());
static PLANE: OnceLock<Plane> = OnceLock::new();

/// The shared private plane, with CRDs and two releases (1.0.0, 2.0.0) pushed; one
/// test at a time holds it.
fn plane() -> (MutexGuard<'static, ()>, &'static Plane) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let plane = PLANE.get_or_init(|| {
        let started = Instant::now();
        let plane = Plane::start("faults-op", USERS);
        let crds = repo_root().join("crds/crds.yaml");
        plane.kubectl_ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()], None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !plane.kubectl(&["wait", "--for=condition=Established", "--timeout=30s", "crd", "--all"], None).0 {
            assert!(Instant::now() < deadline, "CRDs not Established");
            std::thread::sleep(Duration::from_millis(200));
        }
        let dir = TempDir::new("faults-op-fw");
        for (tag, seed) in [("1.0.0", 1u32), ("2.0.0", 2)] {
            let file = dir.0.join(format!("fw-{tag}.bin"));
            let bytes: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) ^ seed) as u8).collect();
            std::fs::write(&file, bytes).unwrap();
            plane.push(REPOSITORY, tag, &file, MEDIA_TYPE);
        }
        println!("FIGURE operator-faults setup: private plane with audit log up in {:?}", started.elapsed());
        plane
    });
    plane.ensure_up();
    (guard, plane)
}

/// The operator binary (`e2e::procs::binary`: debug, or release with
/// `UPDRAFT_E2E_RELEASE=1`).
fn operator_binary() -> std::path::PathBuf {
    e2e::procs::binary("updraft-operator")
}

fn namespace(plane: &Plane, prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    plane.kubectl_ok(&["create", "namespace", &name], None);
    name
}

/// An operator binary watching `ns` as `user`, reaching the API server at `server`.
struct Operator {
    proc: Proc,
    user: String,
}

impl Operator {
    fn start(plane: &Plane, dir: &Path, ns: &str, user: &str, server: &str, extra: &[&str]) -> Operator {
        let kubeconfig = dir.join(format!("{user}.kubeconfig"));
        plane.kubeconfig_for(user, server, &kubeconfig);
        let admin = free_port();
        let mut cmd = Command::new(operator_binary());
        cmd.args(["--namespace", ns, "--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--gateway-image", "updraft/ota-gateway:e2e"])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,updraft_operator=debug");
        let proc = Proc::spawn(cmd, &dir.join(format!("{user}.log")));
        Operator { proc, user: user.to_owned() }
    }

    fn alive(&mut self) -> bool {
        self.proc.child.try_wait().unwrap().is_none()
    }

    /// Resident memory of the process, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

fn channel_yaml(i: usize, registry: &str, pin: &str, interval: &str) -> String {
    format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: ch-{i}}}\nspec:\n  device: d{i}\n  \
         interval: {interval}\n  version: {{pin: \"{pin}\"}}\n  source: {{registry: \"{registry}\", repository: \
         \"{REPOSITORY}\", insecure: true}}\n"
    )
}

/// Applies `count` channels ch-0… and the gateway `default` in one kubectl call.
fn apply_channels(plane: &Plane, ns: &str, count: usize, registry: &str, pin: &str, interval: &str) {
    let mut docs = vec![GATEWAY.to_owned()];
    docs.extend((0..count).map(|i| channel_yaml(i, registry, pin, interval)));
    plane.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-n", ns, "-f", "-"], Some(&docs.join("---\n")));
}

fn set_pin(plane: &Plane, ns: &str, channel: &str, pin: &str) {
    let patch = format!("{{\"spec\":{{\"version\":{{\"pin\":\"{pin}\"}}}}}}");
    plane.kubectl_ok(&["patch", "-n", ns, "fwc", channel, "--type", "merge", "-p", &patch], None);
}

/// Channels of `ns` (by name) whose status resolved `version` and is Ready.
fn ready_at(plane: &Plane, ns: &str, version: &str) -> BTreeMap<String, bool> {
    let Some(list) = plane.get_json(&["fwc", "-n", ns]) else { return BTreeMap::new() };
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|c| {
                    let ok = c["status"]["latest"]["version"] == version && has_status(c, "Ready", "True");
                    (c["metadata"]["name"].as_str().unwrap_or_default().to_owned(), ok)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every channel of `ns` named in `names` (all when empty) is Ready at
/// `version`; returns how long that took, or panics with `what` after `timeout`.
fn wait_ready(plane: &Plane, ns: &str, names: &[&str], version: &str, timeout: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let states = ready_at(plane, ns, version);
        let done = if names.is_empty() {
            !states.is_empty() && states.values().all(|&ok| ok)
        } else {
            names.iter().all(|n| states.get(*n) == Some(&true))
        };
        if done {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: not Ready at {version} after {timeout:?}: {} of {} ready",
            states.values().filter(|&&ok| ok).count(),
            states.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The version the gateway's rendered config serves for `channel`.
fn rendered(plane: &Plane, ns: &str, channel: &str) -> Option<String> {
    let cm = plane.get_json(&["configmap", "default-config", "-n", ns])?;
    let config: Value = serde_yaml::from_str(cm["data"]["gateway.yaml"].as_str()?).ok()?;
    let channels = config["channels"].as_array()?;
    let c = channels.iter().find(|c| c["name"] == channel)?;
    c["current"]["version"].as_str().map(str::to_owned)
}

/// Waits until the gateway's config serves `version` for `channel`; returns how long.
fn wait_rendered(plane: &Plane, ns: &str, channel: &str, version: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    while rendered(plane, ns, channel).as_deref() != Some(version) {
        assert!(
            start.elapsed() < timeout,
            "the gateway config does not serve {version} for {channel} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    start.elapsed()
}

/// Counts of one user's requests by kind.
#[derive(Debug, Default)]
struct Tally {
    status_writes: usize,
    events: usize,
    owned_writes: usize,
    lease_writes: usize,
    lists: usize,
    watches: usize,
    gone: usize,
}

fn tally(events: &[Audited], user: &str) -> Tally {
    let mut t = Tally::default();
    for e in events.iter().filter(|e| e.user == user) {
        let complete = e.stage == "ResponseComplete";
        match (e.verb.as_str(), e.resource.as_str()) {
            ("watch", _) if e.code == 410 && complete => t.gone += 1,
            ("watch", _) if e.stage == "ResponseStarted" => t.watches += 1,
            ("list", _) if complete => t.lists += 1,
            (_, "leases") if e.is_write() && complete => t.lease_writes += 1,
            (_, "events") if e.is_write() && complete => t.events += 1,
            (_, _) if e.is_write() && complete && e.subresource == "status" && e.resource == "firmwarechannels" => {
                t.status_writes += 1
            }
            (_, _) if e.is_write() && complete => t.owned_writes += 1,
            _ => {}
        }
    }
    t
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Waits until the operator's writes stop (none for 3 s in a row), at most 30 s.
fn settle(plane: &Plane, user: &str) {
    let start = Instant::now();
    let mut mark = plane.audit_mark();
    let mut quiet_since = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
        let now = plane.audit_mark();
        if plane.audit_since(mark).iter().any(|e| e.user == user && e.is_write()) {
            quiet_since = Instant::now();
        }
        mark = now;
        if quiet_since.elapsed() >= Duration::from_secs(3) {
            return;
        }
    }
}

const CHANNELS: usize = 20;

#[test]
fn api_server_and_etcd_restarts_mid_reconcile_converge_without_crash_or_retry_storm() {
    let (_serial, plane) = plane();
    let rt = runtime();
    let _rt = rt.enter();
    let ns = namespace(plane, "restart");
    let dir = TempDir::new("restart");
    let relay = rt.block_on(TcpRelay::start(&plane.apiserver)).unwrap();
    let registry = rt.block_on(FaultProxy::start(&plane.registry)).unwrap();
    let mut op = Operator::start(plane, &dir.0, &ns, "operator", &relay.addr(), &[]);
    apply_channels(plane, &ns, CHANNELS, &registry.addr(), "1.0.0", "30s");
    let first = wait_ready(plane, &ns, &[], "1.0.0", Duration::from_secs(90), "first resolution");
    settle(plane, &op.user);

    let mut figures = Vec::new();
    for (daemon, pin) in [(Daemon::ApiServer, "2.0.0"), (Daemon::Etcd, "1.0.0")] {
        // Mid-reconcile: every registry request takes 2 s, the pins change, and the
        // daemon is killed while the checks (then the status writes) are under way.
        registry.set_rules(vec![Rule::new("/v2/", Fault::Latency(Duration::from_secs(2)))]);
        let mark = plane.audit_mark();
        apply_channels(plane, &ns, CHANNELS, &registry.addr(), pin, "30s");
        std::thread::sleep(Duration::from_millis(2500));
        let in_flight = registry.seen().len();
        let before = relay.accepted();
        plane.stop(daemon, "KILL");
        let down_at = Instant::now();
        std::thread::sleep(Duration::from_secs(5));
        let first_half = relay.accepted() - before;
        std::thread::sleep(Duration::from_secs(5));
        let second_half = relay.accepted() - before - first_half;
        plane.launch(daemon);
        let ready = plane.wait_ready(Duration::from_secs(90));
        let outage = down_at.elapsed();
        let attempts = relay.accepted() - before;
        registry.clear();
        // The changes made before the kill converge, and a change made now too.
        let back = Instant::now();
        let in_flight_converged =
            wait_ready(plane, &ns, &[], pin, Duration::from_secs(60), "changes in flight at the kill");
        let in_flight_rendered = {
            let start = Instant::now();
            for i in 0..CHANNELS {
                wait_rendered(plane, &ns, &format!("ch-{i}"), pin, Duration::from_secs(60));
            }
            in_flight_converged + start.elapsed()
        };
        let other = if pin == "2.0.0" { "1.0.0" } else { "2.0.0" };
        set_pin(plane, &ns, "ch-0", other);
        let change = wait_ready(plane, &ns, &["ch-0"], other, Duration::from_secs(30), "a change after the restart");
        let render = wait_rendered(plane, &ns, "ch-0", other, Duration::from_secs(90));
        let since_back = back.elapsed();
        assert!(op.alive(), "the operator exited:\n{}", op.proc.output());
        set_pin(plane, &ns, "ch-0", pin);
        wait_ready(plane, &ns, &["ch-0"], pin, Duration::from_secs(30), "ch-0 back");
        let t = tally(&plane.audit_since(mark), &op.user);
        figures.push(format!(
            "{daemon:?} killed (-9) with {in_flight} registry requests of the pin change under way: down {outage:.1?} \
             (ready {ready:.1?} after its start); operator connection attempts: {first_half} in the first 5 s down, \
             {second_half} in the next 5 s, {attempts} until it was ready; the {CHANNELS} changes in flight converged {in_flight_converged:.1?} \
             after the API server was ready (status), {in_flight_rendered:.1?} (the gateway config); a \
             change made then reached status in {change:.1?} and the gateway config {render:.1?} later; {since_back:.1?} in all; requests of the operator from the pin change to convergence: {} status writes, {} events, {} \
             other writes, {} lists, {} watches started ({} answered 410)",
            t.status_writes, t.events, t.owned_writes, t.lists, t.watches, t.gone
        ));
        assert!(in_flight_converged <= Duration::from_secs(30), "changes in flight took {in_flight_converged:?}");
        assert!(in_flight_rendered <= Duration::from_secs(30), "rendering them took {in_flight_rendered:?}");
        assert!(change <= Duration::from_secs(30), "a change after the restart took {change:?}");
        assert!(render <= Duration::from_secs(30), "the gateway config took {render:?} more");
        assert!(attempts <= 400, "{attempts} connection attempts in {outage:?}: a retry storm");
        assert!(second_half <= first_half.max(10), "retries do not back off: {first_half} then {second_half}");
        assert!(
            t.status_writes <= 4 * CHANNELS,
            "{} status writes for {CHANNELS} pin changes: a write storm",
            t.status_writes
        );
        settle(plane, &op.user);
    }
    let failed = op.proc.output().matches("reconcile failed").count();
    println!(
        "FIGURE operator-restarts: first resolution of {CHANNELS} channels in {first:.1?}; {}; failed reconciles \
         the operator logged (retried on its backoff): {failed}",
        figures.join("; ")
    );
    assert!(op.alive(), "the operator exited:\n{}", op.proc.output());
    assert!(!op.proc.output().contains("panicked"), "the operator panicked:\n{}", op.proc.output());
}

#[test]
fn cut_and_expired_watches_resume_relist_and_converge_without_a_write_storm() {
    let (_serial, plane) = plane();
    let rt = runtime();
    let _rt = rt.enter();
    let ns = namespace(plane, "watch");
    let dir = TempDir::new("watch");
    let relay = rt.block_on(TcpRelay::start(&plane.apiserver)).unwrap();
    let mut op = Operator::start(plane, &dir.0, &ns, "operator", &relay.addr(), &[]);
    apply_channels(plane, &ns, CHANNELS, &plane.registry, "1.0.0", "30s");
    wait_ready(plane, &ns, &[], "1.0.0", Duration::from_secs(90), "first resolution");
    settle(plane, &op.user);

    // Watches cut: every connection of the operator reset, three times, 3 s apart.
    let mark = plane.audit_mark();
    for _ in 0..3 {
        relay.cut();
        std::thread::sleep(Duration::from_secs(3));
    }
    set_pin(plane, &ns, "ch-0", "2.0.0");
    let cut_change = wait_ready(plane, &ns, &["ch-0"], "2.0.0", Duration::from_secs(30), "a change after the cuts");
    let cut_render = wait_rendered(plane, &ns, "ch-0", "2.0.0", Duration::from_secs(60));
    settle(plane, &op.user);
    let cuts = tally(&plane.audit_since(mark), &op.user);

    // Watches expired: the operator cut off, a write elsewhere, the API server restarted
    // (its watch cache starts at the newest revision), the operator back: its watches
    // resume from revisions the cache no longer has, get 410 Gone and must re-list.
    let mark = plane.audit_mark();
    relay.set_down(true);
    relay.cut();
    plane.kubectl_ok(&["create", "configmap", &format!("churn-{:08x}", rand::random::<u32>()), "-n", "default"], None);
    plane.stop(Daemon::ApiServer, "TERM");
    plane.launch(Daemon::ApiServer);
    plane.wait_ready(Duration::from_secs(90));
    let refused = relay.refused();
    relay.set_down(false);
    let back = Instant::now();
    let relisted = loop {
        let t = tally(&plane.audit_since(mark), &op.user);
        // A watch resumed at a revision the fresh cache lacks is refused (410 Gone, as
        // the response or in the stream); the watcher then lists again. Without that
        // it would only watch again.
        if t.lists >= 4 {
            break back.elapsed();
        }
        assert!(back.elapsed() < Duration::from_secs(20), "no re-list within 20 s: {t:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // No write storm after the re-list: nothing changed, so nothing to write.
    std::thread::sleep(Duration::from_secs(10));
    let quiet = tally(&plane.audit_since(mark), &op.user);
    let mark_change = plane.audit_mark();
    set_pin(plane, &ns, "ch-1", "2.0.0");
    let gone_change = wait_ready(plane, &ns, &["ch-1"], "2.0.0", Duration::from_secs(30), "a change after the 410");
    let gone_render = wait_rendered(plane, &ns, "ch-1", "2.0.0", Duration::from_secs(60));
    settle(plane, &op.user);
    let change = tally(&plane.audit_since(mark_change), &op.user);
    println!(
        "FIGURE operator-watch-expiry: {CHANNELS} channels; 3 cuts of every operator connection 3 s apart: {} \
         watches started again, {} lists (re-lists), {} status writes, {} events, {} other writes (the pin change \
         after them included), the change reached status in {cut_change:.1?} and the gateway config in \
         {cut_render:.1?}; operator cut off while the API \
         server restarted ({refused} connections refused): {} watches answered 410 Gone, re-listed {relisted:.1?} \
         after it could reach the API server again, then in 10 s: {} lists, {} watches started, {} status writes, \
         {} events, {} other writes; a change after the re-list reached status in {gone_change:.1?} and the gateway config \
         in {gone_render:.1?} ({} status \
         writes, {} events, {} other writes)",
        cuts.watches,
        cuts.lists,
        cuts.status_writes,
        cuts.events,
        cuts.owned_writes,
        quiet.gone,
        quiet.lists,
        quiet.watches,
        quiet.status_writes,
        quiet.events,
        quiet.owned_writes,
        change.status_writes,
        change.events,
        change.owned_writes
    );
    assert!(cut_render <= Duration::from_secs(30), "the gateway config took {cut_render:?} after the cuts");
    assert!(gone_render <= Duration::from_secs(30), "the gateway config took {gone_render:?} after the re-list");
    assert!(cuts.watches >= 3, "the watches were not re-established after the cuts: {cuts:?}");
    assert!(cuts.status_writes <= 2 && cuts.events <= 2, "writes beyond the one change after cuts: {cuts:?}");
    assert_eq!(quiet.status_writes, 0, "status rewritten after a re-list that changed nothing: {quiet:?}");
    assert_eq!(quiet.events, 0, "events published after a re-list that changed nothing: {quiet:?}");
    assert!(quiet.owned_writes <= 8, "write storm after the re-list: {quiet:?}");
    assert!(quiet.lists <= 20, "re-list storm: {quiet:?}");
    assert!(op.alive(), "the operator exited:\n{}", op.proc.output());
}

/// The leader-election Lease of `ns`: (holder, renewTime as written).
fn lease(plane: &Plane, ns: &str) -> Option<(String, String)> {
    let l = plane.get_json(&["lease", "updraft-operator", "-n", ns])?;
    Some((l["spec"]["holderIdentity"].as_str()?.to_owned(), l["spec"]["renewTime"].as_str()?.to_owned()))
}

fn wait_holder(plane: &Plane, ns: &str, holder: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if lease(plane, ns).is_some_and(|(h, _)| h == holder) {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "{holder} did not take the lease within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes by `user` other than to its Lease, and the position of its first successful
/// Lease write (its acquisition) in `events`.
fn writes_and_acquisition(events: &[Audited], user: &str) -> (Vec<usize>, Option<usize>) {
    let mine = |e: &&Audited| e.user == user && e.is_write() && e.stage == "ResponseComplete";
    let writes = events.iter().enumerate().filter(|(_, e)| mine(e) && e.resource != "leases").map(|(i, _)| i);
    let acquired = events.iter().position(|e| mine(&e) && e.resource == "leases" && e.code < 300);
    (writes.collect(), acquired)
}

#[test]
fn leader_killed_hands_over_within_the_lease_and_only_the_leader_writes() {
    const LEASE: Duration = Duration::from_secs(15);
    const RETRY: Duration = Duration::from_secs(5); // a standby asks every LEASE / 3
    let (_serial, plane) = plane();
    let ns = namespace(plane, "leader");
    let dir = TempDir::new("leader");
    let elect = |id: &'static str| ["--leader-elect", "--lease-namespace", &ns, "--identity", id].map(String::from);
    let start = |user: &str, id: &'static str| {
        let args = elect(id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Operator::start(plane, &dir.0, &ns, user, &plane.apiserver, &args)
    };
    let mark = plane.audit_mark();
    let mut a = start("operator-a", "op-a");
    wait_holder(plane, &ns, "op-a", Duration::from_secs(60));
    let mut b = start("operator-b", "op-b");
    apply_channels(plane, &ns, 10, &plane.registry, "1.0.0", "30s");
    wait_ready(plane, &ns, &[], "1.0.0", Duration::from_secs(90), "first resolution");
    set_pin(plane, &ns, "ch-0", "2.0.0");
    wait_ready(plane, &ns, &["ch-0"], "2.0.0", Duration::from_secs(30), "a change under op-a");
    settle(plane, &a.user);
    assert!(b.alive(), "the standby exited:\n{}", b.proc.output());

    // Kill the leader just after a renewal seen: the standby's worst case.
    let (_, renewed) = lease(plane, &ns).unwrap();
    let wait_renewal = Instant::now();
    while lease(plane, &ns).is_some_and(|(_, r)| r == renewed) {
        assert!(wait_renewal.elapsed() < 2 * RETRY, "op-a stopped renewing its lease");
        std::thread::sleep(Duration::from_millis(50));
    }
    let renewal = Instant::now();
    a.proc.child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    wait_holder(plane, &ns, "op-b", LEASE + RETRY + Duration::from_secs(10));
    let (after_kill, after_renewal) = (killed.elapsed(), renewal.elapsed());
    set_pin(plane, &ns, "ch-1", "2.0.0");
    let converged = wait_ready(plane, &ns, &["ch-1"], "2.0.0", Duration::from_secs(60), "a change under op-b");
    settle(plane, &b.user);

    // A paused leader (SIGSTOP beyond its lease) that comes back after another took
    // over must not write.
    let mut c = start("operator-c", "op-c");
    std::thread::sleep(Duration::from_secs(2));
    let pid = b.proc.child.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let paused = Instant::now();
    wait_holder(plane, &ns, "op-c", LEASE + RETRY + Duration::from_secs(10));
    let c_took = paused.elapsed();
    set_pin(plane, &ns, "ch-2", "2.0.0");
    wait_ready(plane, &ns, &["ch-2"], "2.0.0", Duration::from_secs(60), "a change under op-c");
    let resumed_mark = plane.audit_mark();
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let resumed = Instant::now();
    let b_exit = loop {
        if !b.alive() {
            break Some(resumed.elapsed());
        }
        if resumed.elapsed() > Duration::from_secs(15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    set_pin(plane, &ns, "ch-3", "2.0.0");
    wait_ready(plane, &ns, &["ch-3"], "2.0.0", Duration::from_secs(60), "a change under op-c after op-b resumed");
    let stale = writes_and_acquisition(&plane.audit_since(resumed_mark), "operator-b").0.len();

    let events = plane.audit_since(mark);
    let (a_writes, a_acquired) = writes_and_acquisition(&events, "operator-a");
    let (b_writes, b_acquired) = writes_and_acquisition(&events, "operator-b");
    let (c_writes, c_acquired) = writes_and_acquisition(&events, "operator-c");
    let b_acquired = b_acquired.expect("op-b's acquisition is in the audit log");
    let c_acquired = c_acquired.expect("op-c's acquisition is in the audit log");
    let b_early = b_writes.iter().filter(|&&i| i < b_acquired).count();
    let c_early = c_writes.iter().filter(|&&i| i < c_acquired).count();
    let a_late = a_writes.iter().filter(|&&i| i > b_acquired).count();
    println!(
        "FIGURE operator-leader: lease {LEASE:?}, standby retry {RETRY:?}; op-a killed (-9) right after a renewal: \
         op-b held the lease {after_kill:.1?} after the kill ({after_renewal:.1?} after op-a's last renewal); a \
         change under op-b reached status {converged:.1?} after the pin; writes (audit log, per replica's own \
         token, leases excluded): op-a {} (first lease write at #{a_acquired:?}), op-b {} (none before its \
         acquisition: {b_early} early), op-c {} ({c_early} early); op-a after op-b's acquisition: {a_late}; op-b \
         paused (SIGSTOP): op-c held the lease {c_took:.1?} after the pause; op-b resumed (SIGCONT) after op-c \
         took over: {stale} writes, exited {b_exit:.1?} after resuming",
        a_writes.len(),
        b_writes.len(),
        c_writes.len()
    );
    assert!(a_acquired.is_some() && !a_writes.is_empty(), "op-a never led: nothing proved");
    assert_eq!(b_early, 0, "op-b wrote while standing by");
    assert_eq!(c_early, 0, "op-c wrote while standing by");
    assert_eq!(a_late, 0, "op-a's writes after op-b took over");
    assert!(after_renewal <= LEASE + RETRY + Duration::from_secs(1), "hand-over took {after_renewal:?}");
    assert_eq!(stale, 0, "op-b, paused past its lease, wrote after op-c took over");
    assert!(b_exit.is_some(), "op-b, resumed without the lease, did not exit:\n{}", b.proc.output());
    assert!(c.alive(), "op-c exited:\n{}", c.proc.output());
}

#[test]
fn many_channels_while_the_registry_flaps_bounded_writes_events_and_memory() {
    let count: usize = std::env::var("UPDRAFT_FLAP_CHANNELS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let secs: u64 = std::env::var("UPDRAFT_FLAP_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    const INTERVAL: Duration = Duration::from_secs(15);
    const HALF: Duration = Duration::from_secs(5); // down 5 s, up 5 s
    let (_serial, plane) = plane();
    let rt = runtime();
    let _rt = rt.enter();
    let ns = namespace(plane, "flap");
    let dir = TempDir::new("flap");
    let registry = rt.block_on(FaultProxy::start(&plane.registry)).unwrap();
    let mut op = Operator::start(plane, &dir.0, &ns, "operator", &plane.apiserver, &[]);
    let created = Instant::now();
    apply_channels(plane, &ns, count, &registry.addr(), "1.0.0", &format!("{}s", INTERVAL.as_secs()));
    wait_ready(plane, &ns, &[], "1.0.0", Duration::from_secs(60 + count as u64 / 2), "first resolution");
    let resolved = created.elapsed();
    settle(plane, &op.user);
    let rss_idle = op.rss();
    let config_before = plane.get_json(&["configmap", "default-config", "-n", &ns]).unwrap();

    let mark = plane.audit_mark();
    registry.reset_seen();
    let (refused_before, start) = (registry.refused(), Instant::now());
    let mut rss = Vec::new();
    let mut downs = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        downs += 1;
        for down in [true, false] {
            registry.set_down(down);
            let until = Instant::now() + HALF;
            while Instant::now() < until {
                rss.push(op.rss());
                std::thread::sleep(Duration::from_millis(1000));
            }
        }
    }
    // End on an outage, so recovery is measured from the registry's return.
    registry.set_down(true);
    std::thread::sleep(HALF);
    downs += 1;
    let flap_secs = start.elapsed().as_secs_f64();
    let requests = registry.seen().len() as u64 + registry.refused() - refused_before;
    registry.set_down(false);
    let back = Instant::now();
    // How long until every channel is healthy again (waited for up to 3 minutes, so the
    // figure is printed even when the bound below fails).
    let (recovered, healthy) = loop {
        let list = plane.get_json(&["fwc", "-n", &ns]).unwrap();
        let items = list["items"].as_array().unwrap();
        let healthy = items
            .iter()
            .filter(|c| has_status(c, "RegistryReachable", "True") && has_status(c, "Ready", "True"))
            .count();
        if healthy == count || back.elapsed() > Duration::from_secs(180) {
            break (back.elapsed(), healthy);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    settle(plane, &op.user);
    let events = plane.audit_since(mark);
    let t = tally(&events, &op.user);
    let mut per_channel: BTreeMap<&str, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.user == op.user && e.subresource == "status" && e.is_write()) {
        *per_channel.entry(e.name.as_str()).or_default() += 1;
    }
    let max_per_channel = per_channel.values().copied().max().unwrap_or(0);
    let config_after = plane.get_json(&["configmap", "default-config", "-n", &ns]).unwrap();
    let config_changed = config_before["metadata"]["resourceVersion"] != config_after["metadata"]["resourceVersion"];
    let rss_max = rss.iter().copied().max().unwrap_or(0);
    let rss_first = rss.iter().take(10).copied().max().unwrap_or(0);
    let rss_last = rss.iter().rev().take(10).copied().max().unwrap_or(0);
    let mb = |b: u64| b as f64 / 1_048_576.0;
    println!(
        "FIGURE operator-flap: {count} channels (interval {INTERVAL:?}) resolved in {resolved:.1?}; registry down \
         {HALF:?} / up {HALF:?} for {flap_secs:.0} s ({downs} outages): {requests} registry requests or connection \
         attempts ({:.1} per channel per minute); operator writes (audit log) {} status ({:.2} per channel per \
         minute, at most {max_per_channel} for one channel), {} events, {} other writes ({} of the rendered \
         config: changed {config_changed}); {healthy} of {count} Ready and RegistryReachable again \
         {recovered:.1?} after the registry returned; operator RSS {:.1} MB idle, {:.1} MB in the first 10 s of flapping, {:.1} MB in \
         the last 10 s, {:.1} MB at most",
        requests as f64 / count as f64 / (flap_secs / 60.0),
        t.status_writes,
        t.status_writes as f64 / count as f64 / (flap_secs / 60.0),
        t.events,
        t.owned_writes,
        events.iter().filter(|e| e.user == op.user && e.resource == "configmaps" && e.is_write()).count(),
        mb(rss_idle),
        mb(rss_first),
        mb(rss_last),
        mb(rss_max)
    );
    // A channel checks at most every 5 s (the first backoff step) however the registry
    // flaps, and writes its status at most once per check.
    let checks_per_channel = (flap_secs / 5.0).ceil() as usize + 2;
    assert!(max_per_channel <= checks_per_channel, "{max_per_channel} status writes for one channel: a storm");
    assert!(t.status_writes <= count * checks_per_channel, "status write storm: {t:?}");
    assert!(t.events <= count, "event storm: {} events for {count} channels", t.events);
    assert!(!config_changed, "the gateway config changed while only the registry flapped");
    assert_eq!(healthy, count, "{healthy} of {count} channels recovered in {recovered:?}");
    assert!(recovered <= INTERVAL + Duration::from_secs(30), "recovery took {recovered:?}");
    assert!(rss_max < 512 * 1_048_576, "operator RSS {:.1} MB", mb(rss_max));
    assert!(rss_last <= rss_first + rss_first / 2 + 32 * 1_048_576, "operator memory grows while the registry flaps");
    assert!(op.alive(), "the operator exited:\n{}", op.proc.output());
}

/// A registry answering 429 with `Retry-After` longer than the channel's interval is
/// not asked again before that (the backoff alone would ask after 5 s); the channel
/// says why, and checks again once the wait is over.
#[test]
fn a_registry_asking_to_wait_is_not_asked_sooner() {
    const INTERVAL: Duration = Duration::from_secs(10);
    const ASKED: Duration = Duration::from_secs(30);
    let (_serial, plane) = plane();
    let rt = runtime();
    let _rt = rt.enter();
    let ns = namespace(plane, "busy");
    let dir = TempDir::new("busy");
    let registry = rt.block_on(FaultProxy::start(&plane.registry)).unwrap();
    let op = Operator::start(plane, &dir.0, &ns, "operator", &plane.apiserver, &[]);
    apply_channels(plane, &ns, 1, &registry.addr(), "1.0.0", &format!("{}s", INTERVAL.as_secs()));
    wait_ready(plane, &ns, &["ch-0"], "1.0.0", Duration::from_secs(60), "first resolution");
    registry.set_rules(vec![Rule::new(REPOSITORY, Fault::Status { code: 429, retry_after: Some(ASKED.as_secs()) })]);
    registry.reset_seen();
    let window = Instant::now();
    // Until the first 429, then the whole wait and a little more.
    let mut first: Option<Instant> = None;
    while first.is_none_or(|at| at.elapsed() < ASKED + Duration::from_secs(3)) {
        assert!(window.elapsed() < INTERVAL + ASKED + Duration::from_secs(15), "the channel never checked again");
        first = first.or_else(|| registry.seen().first().map(|s| s.at));
        std::thread::sleep(Duration::from_millis(250));
    }
    let channel = plane.get_json(&["fwc", "ch-0", "-n", &ns]).unwrap();
    let reachable = condition(&channel, "RegistryReachable");
    let message = reachable.map(|c| c["message"].to_string()).unwrap_or_default();
    assert!(has_status(&channel, "RegistryReachable", "False"), "{channel}");
    assert!(message.contains("429") && message.contains("retry after 30 s"), "the condition says why: {message}");
    let seen: Vec<Instant> = registry.seen().iter().map(|s| s.at).collect();
    let gaps: Vec<u128> = seen.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    println!(
        "FIGURE operator-retry-after: registry answered 429 with Retry-After {ASKED:?} (channel interval \
         {INTERVAL:?}): {} requests in {:.1?}, gaps {gaps:?} ms; condition: {message}",
        seen.len(),
        window.elapsed()
    );
    assert!(seen.len() >= 2, "checked again after the wait: {} requests", seen.len());
    assert!(gaps.iter().all(|&g| g >= ASKED.as_millis() - 500), "asked again sooner than {ASKED:?}: {gaps:?} ms");
    registry.clear();
    let back = Instant::now();
    loop {
        let channel = plane.get_json(&["fwc", "ch-0", "-n", &ns]).unwrap();
        if has_status(&channel, "RegistryReachable", "True") {
            break;
        }
        assert!(back.elapsed() < ASKED + INTERVAL + Duration::from_secs(15), "not reachable again: {channel}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let back = back.elapsed();
    wait_ready(plane, &ns, &["ch-0"], "1.0.0", Duration::from_secs(5), "after recovery");
    println!("FIGURE operator-retry-after: Ready and reachable again {back:.1?} after the registry stopped throttling");
    drop(op);
}
