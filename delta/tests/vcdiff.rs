//! `vcdiff::encode` against the reference decoder: every delta is applied with Debian's
//! `xdelta3 -d` and must give the target back byte for byte (and so its SHA-256). Sizes
//! are compared with `xdelta3 -e -9 -S none` (no secondary compression, as ours) on the
//! same pair and printed; run with `--nocapture` to see them.
//!
//! xdelta3 and mksquashfs come from `bash e2e/scripts/cluster.sh tools`; a test FAILS
//! when one is missing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{tool, Rng};
use sha2::{Digest, Sha256};
use updraft_delta::vcdiff;

struct Sizes {
    ours: u64,
    xdelta3: u64,
}

/// Encodes, decodes with `xdelta3 -d` and checks the result; encodes the same pair with
/// `xdelta3 -e -9 -S none` for comparison; `vcdiff::verify` decodes both deltas.
fn roundtrip(name: &str, source: &[u8], target: &[u8]) -> Sizes {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = (dir.path().join("source"), dir.path().join("target"));
    let (delta, out) = (dir.path().join("delta"), dir.path().join("out"));
    std::fs::write(&src, source).unwrap();
    std::fs::write(&tgt, target).unwrap();

    let started = Instant::now();
    let mut file = std::io::BufWriter::new(std::fs::File::create(&delta).unwrap());
    vcdiff::encode(source, target, &mut file).unwrap();
    drop(file);
    let took = started.elapsed();

    let status = Command::new(tool("xdelta3")).args(["-d", "-f", "-s"]).args([&src, &delta, &out]).status().unwrap();
    assert!(status.success(), "{name}: xdelta3 -d failed: {status}");
    let decoded = std::fs::read(&out).unwrap();
    assert_eq!(decoded.len(), target.len(), "{name}: decoded size");
    assert!(decoded == target, "{name}: decoded bytes differ from the target");
    assert_eq!(Sha256::digest(&decoded), Sha256::digest(target), "{name}: sha256");

    let reference = dir.path().join("reference");
    let status = Command::new(tool("xdelta3"))
        .args(["-e", "-9", "-S", "none", "-f", "-s"])
        .args([&src, &tgt, &reference])
        .status()
        .unwrap();
    assert!(status.success(), "{name}: xdelta3 -e failed: {status}");
    // Our decoder (what the gateway checks a delta with before listing it) agrees with
    // xdelta3 on our deltas, and decodes the reference encoder's too.
    let want = vcdiff::Decoded { len: target.len() as u64, sha256: Sha256::digest(target).into() };
    assert_eq!(vcdiff::verify(source, &std::fs::read(&delta).unwrap()), Ok(want.clone()), "{name}: verify ours");
    assert_eq!(vcdiff::verify(source, &std::fs::read(&reference).unwrap()), Ok(want), "{name}: verify xdelta3's");
    let sizes =
        Sizes { ours: std::fs::metadata(&delta).unwrap().len(), xdelta3: std::fs::metadata(&reference).unwrap().len() };
    println!(
        "{name}: source {} B, target {} B: ours {} B in {:?}, xdelta3 -e -9 -S none {} B",
        source.len(),
        target.len(),
        sizes.ours,
        took,
        sizes.xdelta3
    );
    sizes
}

/// Ours within `ratio` of xdelta3's, plus `slack` bytes for headers on tiny inputs.
fn assert_near(name: &str, sizes: &Sizes, ratio: f64, slack: u64) {
    let bound = (sizes.xdelta3 as f64 * ratio) as u64 + slack;
    assert!(
        sizes.ours <= bound,
        "{name}: ours {} B > {bound} B ({ratio} × xdelta3's {} B + {slack})",
        sizes.ours,
        sizes.xdelta3
    );
}

#[test]
fn empty_source() {
    let target = Rng(1).bytes(100_000);
    let s = roundtrip("empty source", &[], &target);
    assert_near("empty source", &s, 1.01, 64);
}

#[test]
fn empty_target() {
    let source = Rng(2).bytes(100_000);
    roundtrip("empty target", &source, &[]);
    roundtrip("both empty", &[], &[]);
}

#[test]
fn identical() {
    let data = Rng(3).text(3_000_000);
    let s = roundtrip("identical", &data, &data);
    assert!(s.ours < 100, "identical: {} B", s.ours);
}

#[test]
fn unrelated() {
    let source = Rng(4).bytes(1_000_000);
    let target = Rng(5).bytes(1_000_000);
    let s = roundtrip("unrelated", &source, &target);
    assert_near("unrelated", &s, 1.01, 64);
}

#[test]
fn tiny_and_unaligned() {
    roundtrip("one byte", b"a", b"b");
    roundtrip("short", b"hello world, hello world", b"hello, world! hello world");
    let mut rng = Rng(6);
    let source = rng.bytes(1000);
    let mut target = source[3..900].to_vec();
    target.extend_from_slice(&source[100..140]);
    roundtrip("shifted small", &source, &target);
}

/// Pseudo-random data with substitutions, insertions, deletions and a moved block,
/// over several target windows.
#[test]
fn edits_and_shifts_over_several_windows() {
    let mut rng = Rng(7);
    let len = 2 * vcdiff::WINDOW + 3_000_000;
    let source = rng.bytes(len);
    let mut target = Vec::with_capacity(len + 100_000);
    let mut at = 0;
    while at < source.len() {
        let keep = 50_000 + rng.below(400_000);
        let end = source.len().min(at + keep);
        target.extend_from_slice(&source[at..end]);
        at = end;
        match rng.below(4) {
            0 => {
                // insertion
                let n = 1 + rng.below(3000);
                target.extend(rng.bytes(n));
            }
            1 => at += rng.below(3000), // deletion
            2 => {
                // substitution of a few bytes
                let n = 1 + rng.below(16);
                target.extend(rng.bytes(n));
                at += n;
            }
            _ => {
                // a block copied from elsewhere in the source
                let from = rng.below(source.len() - 10_000);
                target.extend_from_slice(&source[from..from + 10_000]);
            }
        }
    }
    assert!(target.len() > 2 * vcdiff::WINDOW);
    let s = roundtrip("edits over windows", &source, &target);
    assert_near("edits over windows", &s, 1.1, 0);
}

fn mksquashfs(dir: &Path, image: &Path) {
    let status = Command::new(tool("mksquashfs"))
        .arg(dir)
        .arg(image)
        .args(["-noappend", "-quiet", "-no-progress", "-all-root", "-mkfs-time", "0"])
        .args(["-all-time", "0"])
        .status()
        .unwrap();
    assert!(status.success(), "mksquashfs: {status}");
}

/// The case deltas exist for: two squashfs images of a root filesystem in which one
/// package's file changed, so everything after it in the image is shifted.
#[test]
fn squashfs_images_differing_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(8);
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    for root in [&old, &new] {
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(root.join("usr/share/doc")).unwrap();
    }
    for i in 0..60 {
        let (path, content) = if i % 3 == 0 {
            let n = 40_000 + rng.below(200_000);
            (format!("usr/lib/lib{i}.so"), rng.bytes(n))
        } else {
            let n = 100_000 + rng.below(400_000);
            (format!("usr/share/doc/pkg{i}.txt"), rng.text(n))
        };
        std::fs::write(old.join(&path), &content).unwrap();
        let content = if i == 30 {
            // the upgraded package: a different, longer file
            rng.bytes(content.len() + 12_345)
        } else {
            content
        };
        std::fs::write(new.join(&path), &content).unwrap();
    }
    let (a, b) = (dir.path().join("a.squashfs"), dir.path().join("b.squashfs"));
    mksquashfs(&old, &a);
    mksquashfs(&new, &b);
    let (source, target) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let s = roundtrip("squashfs", &source, &target);
    assert_near("squashfs", &s, 1.1, 0);
}
