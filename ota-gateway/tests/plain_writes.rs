//! `sendfile: false`: downloads are the same bytes with the same headers, and none
//! leaves through sendfile. A test binary of its own: the sendfile byte counter is
//! process-wide, so no other download may run beside this one.

mod common;

use std::time::Duration;

use common::*;

const RAW: &str = "application/vnd.updraft.firmware.v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendfile_off_serves_with_plain_writes() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let firmware = random_bytes(300_000);
    let repo = unique_repo("plain");
    let digest = push_file(&reg.addr, &repo, "1.0.0", work.path(), "fw.bin", RAW, &firmware);
    let mut cfg =
        config(&work.path().join("cache"), vec![channel("esp32", &reg.addr, &repo, ("1.0.0", "1.0.0", &digest))]);
    cfg.sendfile = false;
    let gw = Gateway::start(cfg).await;
    gw.wait_ok("/version?device=esp32").await;
    let url = format!("{}/firmware?device=esp32", gw.url);

    let before = ota_gateway::sendfile::bytes_sent();
    let whole = gw.http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["etag"], format!("\"{}\"", sha256_hex(&firmware)).as_str());
    assert_eq!(whole.headers()["content-length"], firmware.len().to_string().as_str());
    assert!(whole.bytes().await.unwrap() == firmware, "whole body differs");
    let part = gw.http.get(&url).header("range", "bytes=20000-289999").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert!(part.bytes().await.unwrap() == firmware[20_000..290_000], "range differs");
    // The counter moves just after the syscall, which can be after the client has read
    // the bytes: give a late increment time to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ota_gateway::sendfile::bytes_sent(), before, "sendfile is off");

    // The same gateway state with sendfile on sends the same bodies without a copy:
    // the counter above could have moved.
    let mut on = gw.state.config().as_ref().clone();
    on.sendfile = true;
    let zero_copy = Gateway::start(on).await;
    let again = zero_copy.wait_ok("/firmware?device=esp32").await.bytes().await.unwrap();
    assert!(again == firmware, "body differs with sendfile on");
    let zero_copied = zero_copied_since(before, 200_000).await;
    assert!(zero_copied >= 200_000, "sendfile on did not use sendfile: {zero_copied} bytes");
}
