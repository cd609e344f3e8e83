//! The metadata bomb of issue #19 and what the tests measure with it.
//!
//! [`metadata_bomb`]: a tar holding one member of 3 GiB of zeros (a sparse file, which
//! GNU tar without `--sparse` writes out as zeros), compressed with `xz -0`: about
//! 468 KB that decompress to 3 GiB. Making it takes ~30 s on the project's machines
//! (2 cores), so it is made once per machine and kept in `~/.cache/updraft/`.
//!
//! [`RssWatch`]: the peak resident set (`VmRSS` of `/proc/<pid>/status`) of a process,
//! sampled every 20 ms by a thread until dropped.
//!
//! Used by the gateway's `simplestreams.rs` and `e2e/tests/streams.rs`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The bytes the bomb's one member holds (3 GiB of zeros).
pub const BOMB_UNPACKED: u64 = 3 << 30;

/// `~/.cache/updraft/metadata-bomb-3g.tar.xz`, made on first use (see the module docs).
pub fn metadata_bomb() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    let cache = home.join(".cache/updraft");
    let bomb = cache.join("metadata-bomb-3g.tar.xz");
    if std::fs::metadata(&bomb).is_ok_and(|m| m.len() > 100_000) {
        return bomb;
    }
    // Made in a directory of its own and renamed: parallel test processes never see a
    // half-written bomb (the last rename wins; all make the same bytes).
    let work = cache.join(format!("bomb-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::File::create(work.join("zeros")).unwrap().set_len(BOMB_UNPACKED).unwrap();
    let out = Command::new("sh")
        .args(["-c", "tar -cf - zeros | xz -0 -T1 > bomb.tar.xz"])
        .current_dir(&work)
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "making the bomb (GNU tar, xz-utils): {}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(work.join("bomb.tar.xz"), &bomb).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    bomb
}

/// The peak `VmRSS` of a process, sampled by a thread until this is dropped.
pub struct RssWatch {
    peak_kib: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssWatch {
    pub fn new(pid: u32) -> RssWatch {
        let (peak_kib, samples, stop) = (Arc::default(), Arc::default(), Arc::new(AtomicBool::new(false)));
        let thread = {
            let (peak_kib, samples, stop): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicBool>) =
                (Arc::clone(&peak_kib), Arc::clone(&samples), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match vm_rss_kib(pid) {
                        Some(kib) => {
                            peak_kib.fetch_max(kib, Ordering::Relaxed);
                            samples.fetch_add(1, Ordering::Relaxed);
                        }
                        None => return,
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        RssWatch { peak_kib, samples, stop, thread: Some(thread) }
    }

    /// The largest `VmRSS` seen so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed) * 1024
    }

    /// How many samples were taken (a watch that took none measured nothing).
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `VmRSS` of `pid` in KiB, `None` once the process is gone.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A size `field` (`VmRSS:`, `VmHWM:`…) of `/proc/<pid>/status` in KiB, `None` once
/// the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
