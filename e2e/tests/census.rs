//! The device census, end to end: three replicas of the real gateway binary (run here
//! from the ConfigMap the operator renders, on 127.0.0.1, .2 and .3 with the same
//! ports, as three pods would be), found by the real operator through an EndpointSlice
//! of the gateway's Service (`discovery.k8s.io/v1beta1` on this 1.20 API server), as
//! Kubernetes' EndpointSlice controller would write it for three ready pods.
//!
//! Simulated devices poll the OtaFlux routes with `id` and `current`, some on one
//! replica, some on two (a device whose requests a load balancer spreads), and some
//! download. `status.devices` must equal, figure for figure, what one replica that saw
//! every request estimates (computed here with the same sketch); the operator's metrics
//! carry the same figures; no device id reaches a log. A replica that goes away is left
//! out of the merge and counted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, SystemTime};

use e2e::config_sync::ConfigSync;
use e2e::procs::{binary, free_port, operator, oras_push, wait_for, Proc, TempDir};
use e2e::{cluster, install_crds, kubectl, namespace};
use serde_json::Value;
use updraft_core::census::{Census, Merged, State, WINDOWS};

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const WAIT: Duration = Duration::from_secs(90);
const REPLICAS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// One plain HTTP/1.1 GET (a device's request); returns the status and body (status 0
/// when nothing listens yet).
fn get(host: &str, port: u16, path: &str) -> (u16, Vec<u8>) {
    let Ok(mut stream) = TcpStream::connect((host, port)) else { return (0, Vec::new()) };
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let head_end = reply.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
    let status = std::str::from_utf8(&reply[9..12]).unwrap().parse().unwrap();
    (status, reply[head_end + 4..].to_vec())
}

fn firmware(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(11) as u8).collect()
}

#[test]
fn three_replicas_merge_to_what_one_would_count() {
    install_crds();
    let ns = namespace("census");
    let dir = TempDir::new("census");
    let repository = format!("e2e/{ns}/firmware");
    let file = dir.0.join("fw.bin");
    std::fs::write(&file, firmware(20_000)).unwrap();
    oras_push(&repository, "1.0.0", &file, MEDIA_TYPE);

    let mut flags = e2e::procs::config_endpoint();
    flags.extend(["--census-interval".to_owned(), "2s".to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (operator, op_admin) = operator(&ns, &dir.0, "operator", &flags);
    let apply = |yaml: &str| kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(yaml)).ok();
    let fwc = || -> Value {
        let out = kubectl(&["get", "-n", &ns, "fwc/esp32", "-o", "json"], None);
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
    };
    apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  device: esp32-devkit\n  interval: 1m\n  source: {{registry: \"{}\", repository: \"{repository}\", insecure: true}}\n",
        cluster().registry
    ));
    wait_for(WAIT, "1.0.0 resolved", || (fwc()["status"]["latest"]["version"] == "1.0.0").then_some(()));

    // Three replicas from the rendered config, same ports on three loopback addresses.
    let (port, admin) = (free_port(), free_port());
    let mut replicas = Vec::new();
    for (i, host) in REPLICAS.iter().enumerate() {
        let config = dir.0.join(format!("gateway-{i}.yaml"));
        let sync = ConfigSync::start_on(&ns, host, &config, port, admin, &dir.0.join(format!("cache-{i}")));
        wait_for(WAIT, "the rendered gateway config", || config.exists().then_some(()));
        let mut cmd = Command::new(binary("ota-gateway"));
        // Debug logs: every request is logged, and still no device id may appear.
        cmd.args(["--config", config.to_str().unwrap()]).env("RUST_LOG", "debug");
        let proc = Proc::spawn(cmd, &dir.0.join(format!("gateway-{i}.log")));
        replicas.push((sync, proc));
    }
    for host in REPLICAS {
        wait_for(WAIT, "a replica serves 1.0.0", || {
            let (status, body) = get(host, port, "/version?device=esp32-devkit");
            (status == 200 && body.starts_with(b"1.0.0\n")).then_some(())
        });
    }

    // The gateway Service's endpoints, as the EndpointSlice controller writes them for
    // three ready pods: what the operator discovers the replicas through.
    let endpoints: Vec<String> =
        REPLICAS.iter().map(|h| format!("  - addresses: [\"{h}\"]\n    conditions: {{ready: true}}\n")).collect();
    apply(&format!(
        "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: default-replicas\n  labels: {{kubernetes.io/service-name: default}}\naddressType: IPv4\nports:\n  - {{name: admin, port: {admin}, protocol: TCP}}\n  - {{name: http, port: {port}, protocol: TCP}}\nendpoints:\n{}",
        endpoints.concat()
    ));

    // 3,000 devices: each polls one replica; the first 1,000 poll a second one too
    // (overlap); every third one downloads; a tenth report running 0.9.0 and the rest
    // nothing. One replica's view of all of it is the reference.
    let reference = Census::new(16 << 20);
    let started = SystemTime::now();
    for i in 0..3000 {
        let id = format!("census-device-{i:05}");
        let current = if i % 10 == 0 { "&current=0.9.0" } else { "" };
        let path = format!("/version?device=esp32-devkit&id={id}{current}");
        let mut hosts = vec![REPLICAS[i % 3]];
        if i < 1000 {
            hosts.push(REPLICAS[(i + 1) % 3]);
        }
        for host in &hosts {
            let (status, body) = get(host, port, &path);
            assert_eq!((status, body.starts_with(b"1.0.0\n")), (200, true), "{}", String::from_utf8_lossy(&body));
        }
        reference.record("esp32", "1.0.0", State::Offered, &id, started);
        if i % 10 == 0 {
            reference.record("esp32", "0.9.0", State::Running, &id, started);
        }
        if i % 3 == 0 {
            let (status, body) = get(hosts[hosts.len() - 1], port, &format!("/firmware?device=esp32-devkit&id={id}"));
            assert_eq!((status, body.len()), (200, 20_000));
            reference.record("esp32", "1.0.0", State::Downloaded, &id, started);
        }
    }
    // Devices that send no id are served as before and counted as anonymous polls.
    for host in REPLICAS {
        assert_eq!(get(host, port, "/version?device=esp32-devkit").0, 200);
    }
    let mut one = Merged::default();
    one.add(&reference.report(SystemTime::now())).unwrap();
    let (_, day) = WINDOWS[1];
    let now = SystemTime::now();
    let expect = |version: &str, state| one.devices("esp32", version, state, day, now) as i64;
    let expected = (
        one.total("esp32", day, now) as i64,
        expect("1.0.0", State::Offered),
        expect("1.0.0", State::Downloaded),
        expect("0.9.0", State::Running),
    );
    println!(
        "one replica's estimate: total {}, offered {}, downloaded {}, running 0.9.0 {}",
        expected.0, expected.1, expected.2, expected.3
    );
    assert!((2940..=3060).contains(&expected.0), "the sketch is within 2 % of 3,000: {expected:?}");

    let figures = |v: &Value| -> Option<(i64, i64, i64, i64, i64)> {
        let d = &v["status"]["devices"];
        let of = |version: &str, state: &str| {
            d["byVersion"].as_array()?.iter().find(|x| x["version"] == version)?[state].as_i64()
        };
        Some((
            d["replicas"].as_i64()?,
            d["total"].as_i64()?,
            of("1.0.0", "offered")?,
            of("1.0.0", "downloaded")?,
            of("0.9.0", "running")?,
        ))
    };
    let want = (3, expected.0, expected.1, expected.2, expected.3);
    let found = std::panic::catch_unwind(|| {
        wait_for(WAIT, "status.devices merges the three replicas", || (figures(&fwc()) == Some(want)).then_some(()))
    });
    assert!(found.is_ok(), "status: {:#}\nwant {want:?}\noperator log:\n{}", fwc()["status"], operator.output());
    let status = fwc();
    assert_eq!(status["status"]["devices"]["window"], "24h");
    let versions: Vec<&str> = status["status"]["devices"]["byVersion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.0.0", "0.9.0"], "newest first");
    println!("status.devices: {:#}", status["status"]["devices"]);

    // The operator's metrics carry the same figures.
    let metrics = String::from_utf8(get("127.0.0.1", op_admin, "/metrics").1).unwrap();
    let series = format!(
        "updraft_operator_channel_devices{{channel=\"esp32\",namespace=\"{ns}\",state=\"downloaded\",version=\"1.0.0\",window=\"24h\"}} {}",
        expected.2
    );
    assert!(metrics.contains(&series), "{series} not in\n{metrics}");
    assert!(metrics.contains(&format!("updraft_operator_census_replicas{{gateway=\"default\",namespace=\"{ns}\"}} 3")));
    // And each replica counted its own anonymous poll.
    let gateway_metrics = String::from_utf8(get("127.0.0.2", admin, "/metrics").1).unwrap();
    assert!(
        gateway_metrics
            .lines()
            .any(|l| l.starts_with("updraft_gateway_anonymous_polls_total{channel=\"esp32\"}") && !l.ends_with(" 0")),
        "{gateway_metrics}"
    );
    // /census is on the admin port only.
    assert_eq!(get("127.0.0.1", port, "/census").0, 404);

    // A replica that goes away is left out of the merge, and counted.
    let (sync, mut gone) = replicas.pop().unwrap();
    drop(sync);
    let _ = gone.child.kill();
    let _ = gone.child.wait();
    wait_for(WAIT, "status.devices merges the two replicas left", || {
        (fwc()["status"]["devices"]["replicas"] == 2).then_some(())
    });
    let metrics = String::from_utf8(get("127.0.0.1", op_admin, "/metrics").1).unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(&format!(
            "updraft_operator_census_errors_total{{gateway=\"default\",namespace=\"{ns}\",reason=\"unreachable\"}}"
        ))),
        "{metrics}"
    );

    // No device id reached a log.
    let mut logs = operator.output();
    for (_, proc) in &replicas {
        logs.push_str(&proc.output());
    }
    logs.push_str(&gone.output());
    assert!(!logs.contains("census-device-"), "a device id was logged");
}
