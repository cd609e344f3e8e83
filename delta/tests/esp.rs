//! `esp::patch` checked by the reference implementations: every patch is applied by
//! `detools apply_patch` (the Python package whose C library `esp_delta_ota` runs on the
//! device) and must give the target byte for byte; sizes are compared with
//! `detools create_patch -c heatshrink` on the same pair. `esp::image_digest` is checked
//! against `esptool.py image_info`'s validation hash.
//!
//! Both tools come from `bash e2e/scripts/cluster.sh tools`; `eval "$(bash
//! e2e/scripts/cluster.sh env)"` puts them on PATH. Without them these tests fail.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{tool, Rng};
use sha2::{Digest, Sha256};
use updraft_delta::esp::{image_digest, patch, HEADER_LEN};

/// Our patch may be this much larger than detools' own on the same pair (plus a few bytes,
/// for tiny inputs). Measured on these pairs: 0.999-1.001x; the same bsdiff stream, and
/// detools may start with a back-reference into the decoder's zeroed window, which we do
/// not (a byte at most).
const MAX_RATIO_TO_DETOOLS: f64 = 1.01;

fn run(command: &mut Command) -> String {
    let output = command.output().expect("start the tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

struct Sizes {
    ours: usize,
    detools: usize,
}

/// Builds our patch, checks its header, has detools apply it, and builds detools' own
/// patch of the same pair for comparison (both sizes without the 64-byte header).
fn check(name: &str, base: &[u8], target: &[u8]) -> Sizes {
    let detools = tool("detools");
    let started = Instant::now();
    let ours = patch(base, target);
    let elapsed = started.elapsed();

    assert_eq!(ours[..4], 0xfccd_de10u32.to_le_bytes(), "{name}: magic");
    assert_eq!(ours[4..36], image_digest(base), "{name}: base digest");
    assert_eq!(ours[4..36], *Sha256::digest(base), "{name}: raw base digest");
    assert!(ours[36..HEADER_LEN].iter().all(|b| *b == 0), "{name}: reserved");

    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(n);
    std::fs::write(file("base"), base).unwrap();
    std::fs::write(file("target"), target).unwrap();
    std::fs::write(file("ours.patch"), &ours[HEADER_LEN..]).unwrap();
    run(Command::new(&detools).args(["apply_patch"]).args([file("base"), file("ours.patch"), file("out")]));
    let out = std::fs::read(file("out")).unwrap();
    assert!(out == target, "{name}: detools applied our patch to something else");

    run(Command::new(&detools).args(["create_patch", "-c", "heatshrink"]).args([
        file("base"),
        file("target"),
        file("theirs.patch"),
    ]));
    let sizes = Sizes {
        ours: ours.len() - HEADER_LEN,
        detools: std::fs::metadata(file("theirs.patch")).unwrap().len() as usize,
    };
    eprintln!(
        "{name}: base {} B, target {} B: ours {} B in {:.3} s, detools {} B (ratio {:.3})",
        base.len(),
        target.len(),
        sizes.ours,
        elapsed.as_secs_f64(),
        sizes.detools,
        sizes.ours as f64 / sizes.detools as f64
    );
    assert!(
        sizes.ours as f64 <= sizes.detools as f64 * MAX_RATIO_TO_DETOOLS + 4.0,
        "{name}: ours {} B against detools' {} B",
        sizes.ours,
        sizes.detools
    );
    sizes
}

/// 1 MiB: the size of a small ESP32 app, and still quick in a debug build.
const FIRMWARE_LEN: usize = 1 << 20;

/// A base and a new build of it: bytes changed here and there, a constant bumped in
/// every 4 KiB page (what a moved symbol does to literal pools), bytes inserted and
/// deleted, and a region moved elsewhere.
fn firmware_pair() -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(0x5eed);
    let base = rng.bytes(FIRMWARE_LEN);
    let mut target = base.clone();
    for _ in 0..20 {
        let at = rng.below(target.len());
        target[at] ^= 0xff;
    }
    for at in (0..target.len()).step_by(4096) {
        target[at] = target[at].wrapping_add(4);
    }
    let inserted = rng.bytes(500);
    target.splice(300_000..300_000, inserted);
    target.drain(600_000..600_300);
    let moved: Vec<u8> = target.drain(700_000..710_000).collect();
    target.splice(100_000..100_000, moved);
    (base, target)
}

#[test]
fn firmware_update() {
    let (base, target) = firmware_pair();
    let sizes = check("firmware update", &base, &target);
    assert!(
        sizes.ours * 20 < target.len(),
        "a small change should give a patch under 5 % of the target, got {} B",
        sizes.ours
    );
}

#[test]
fn small_edit_gives_tiny_patch() {
    let mut rng = Rng(7);
    let base = rng.bytes(64 << 10);
    let mut target = base.clone();
    target[1234] ^= 1;
    target.splice(40_000..40_000, *b"v1.2.4");
    let sizes = check("one edit, one insertion", &base, &target);
    // Mostly the zeros of two diff blocks: 64 KiB in 2-byte back-references.
    assert!(sizes.ours < 1200, "{} B", sizes.ours);
}

#[test]
fn empty_base() {
    check("empty base", b"", &Rng(1).bytes(10_000));
}

#[test]
fn empty_target() {
    let sizes = check("empty target", &Rng(2).bytes(10_000), b"");
    assert_eq!(sizes.ours, 2, "header byte and a zero size");
}

#[test]
fn both_empty() {
    check("both empty", b"", b"");
}

#[test]
fn identical() {
    let base = Rng(3).bytes(FIRMWARE_LEN);
    let sizes = check("identical", &base, &base);
    // One diff block of zeros: 1 MiB at 16 bits per 128 bytes.
    assert!(sizes.ours < FIRMWARE_LEN / 60, "{} B", sizes.ours);
}

#[test]
fn unrelated() {
    let mut rng = Rng(4);
    let (base, target) = (rng.bytes(256 << 10), rng.bytes(256 << 10));
    let sizes = check("unrelated random", &base, &target);
    // Literals cost 9 bits.
    assert!(sizes.ours <= target.len() * 9 / 8 + 1024, "{} B", sizes.ours);
}

#[test]
fn all_zeros_target() {
    let base = Rng(5).bytes(FIRMWARE_LEN);
    let sizes = check("all-zeros target", &base, &vec![0; FIRMWARE_LEN]);
    // Maximal back-references: 128 bytes in 16 bits.
    assert!(sizes.ours < FIRMWARE_LEN / 60, "{} B", sizes.ours);
}

#[test]
fn tiny_inputs() {
    for (base, target) in
        [(&b"a"[..], &b"b"[..]), (b"abc", b"abcabcabcabcabc"), (b"same", b"same"), (b"\0\0\0\0", b"\0")]
    {
        check("tiny", base, target);
    }
}

/// A synthetic ESP32 app image as ESP-IDF lays it out: header, two segments, padding,
/// XOR checksum at the end of a 16-byte block, the SHA-256 of all that appended.
fn esp32_app_image(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut image = vec![0xE9, 2, 2, 0x20]; // magic, segments, DIO, 4MB at 40 MHz
    image.extend_from_slice(&0x4008_0400u32.to_le_bytes()); // entry point
    image.extend_from_slice(&[0xEE, 0, 0, 0]); // WP pin disabled, drive settings
    image.extend_from_slice(&[0, 0, 0, 0, 0]); // chip ESP32, minimal revisions
    image.extend_from_slice(&99u16.to_le_bytes()); // maximal revision v0.99
    image.extend_from_slice(&[0, 0, 0, 0, 1]); // reserved, hash appended
    assert_eq!(image.len(), 24);
    let mut checksum = 0xEFu8;
    for (load, len) in [(0x3F40_0020u32, 0x100u32), (0x4008_0000, 0x204)] {
        let data = rng.bytes(len as usize);
        checksum = data.iter().fold(checksum, |c, b| c ^ b);
        image.extend_from_slice(&load.to_le_bytes());
        image.extend_from_slice(&len.to_le_bytes());
        image.extend_from_slice(&data);
    }
    while image.len() % 16 != 15 {
        image.push(0);
    }
    image.push(checksum);
    let hash = Sha256::digest(&image);
    image.extend_from_slice(&hash);
    image
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// esptool's validation hash of `path` (esptool v4 and v5 both print
/// "Validation hash: <hex> (valid)", v4 with a capital H).
fn esptool_validation_hash(path: &Path) -> String {
    let output = run(Command::new(tool("esptool.py")).args(["--chip", "esp32", "image_info"]).arg(path));
    let line = output
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("validation hash:"))
        .unwrap_or_else(|| panic!("no validation hash in esptool's output:\n{output}"));
    assert!(line.ends_with("(valid)"), "esptool: {line}");
    line["validation hash:".len()..].split_whitespace().next().unwrap().to_owned()
}

#[test]
fn image_digest_is_esptool_validation_hash() {
    let dir = tempfile::tempdir().unwrap();
    let image = esp32_app_image(9);
    let path = dir.path().join("app.bin");
    std::fs::write(&path, &image).unwrap();
    let digest = image_digest(&image);
    assert_eq!(hex(&digest), esptool_validation_hash(&path));
    assert_ne!(digest, *Sha256::digest(&image), "not the whole file's hash");

    // Padding after the image (a partition dump) does not change it.
    let mut padded = image.clone();
    padded.resize(64 << 10, 0xff);
    assert_eq!(image_digest(&padded), digest);

    // And the patch header names it.
    let target = esp32_app_image(10);
    assert_eq!(patch(&image, &target)[4..36], digest);
}

#[test]
fn image_digest_of_anything_else_is_file_sha256() {
    let raw = Rng(11).bytes(5000);
    assert_eq!(image_digest(&raw), *Sha256::digest(&raw));

    // An app image whose appended hash does not verify, one without the flag, and a
    // truncated one: the whole file's hash.
    let mut corrupt = esp32_app_image(12);
    corrupt[100] ^= 1;
    assert_eq!(image_digest(&corrupt), *Sha256::digest(&corrupt));
    let mut unflagged = esp32_app_image(13);
    unflagged[23] = 0;
    assert_eq!(image_digest(&unflagged), *Sha256::digest(&unflagged));
    let truncated = &esp32_app_image(14)[..200];
    assert_eq!(image_digest(truncated), *Sha256::digest(truncated));
    assert_eq!(image_digest(b""), *Sha256::digest(b""));
}
