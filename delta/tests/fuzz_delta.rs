//! Property tests of the patch writers on inputs nobody chose: any pair of byte strings
//! gives a patch that turns the one into the other, and no input panics.
//!
//! - `esp::patch` is applied by a small applier written here from detools' format (the
//!   header byte, the target size, the heatshrink stream, then pack_size-framed
//!   (diff, extra, adjustment) chunks), so hundreds of pairs run in a second;
//!   `tests/esp.rs` holds the same writer to `detools apply_patch` itself on chosen pairs.
//! - `esp::apply`, the applier gateways check patches with, agrees with that one on
//!   every patch, and damaged or truncated patches are refused or applied, never a panic;
//! - `esp::image_digest` on arbitrary bytes and on damaged app images: the appended hash
//!   only when it verifies, else the whole file's SHA-256, never a panic.
//! - `vcdiff::encode` of any pair, decoded by Debian's `xdelta3 -d` (fewer cases: each
//!   starts a process).
//!
//! PROPTEST_CASES raises the case count.

use std::process::Command;

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use updraft_delta::{esp, vcdiff};

/// detools' size encoding: 6 bits and a sign in the first byte, 7 bits in each next one.
fn unpack_size(data: &[u8], at: &mut usize) -> i64 {
    let mut byte = data[*at];
    *at += 1;
    let negative = byte & 0x40 != 0;
    let mut value = i64::from(byte & 0x3f);
    let mut shift = 6;
    while byte & 0x80 != 0 {
        byte = data[*at];
        *at += 1;
        value |= i64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    if negative {
        -value
    } else {
        value
    }
}

/// Heatshrink, window 2^8 and lookahead 2^7: tokens while a whole one remains.
fn heatshrink_decode(bits: &[u8]) -> Vec<u8> {
    let total = bits.len() * 8;
    let mut at = 0;
    let mut read = |count: usize| {
        let mut v = 0usize;
        for _ in 0..count {
            v = v << 1 | usize::from((bits[at / 8] >> (7 - at % 8)) & 1);
            at += 1;
        }
        v
    };
    let mut out = Vec::new();
    let mut left = total;
    while left >= 9 {
        if read(1) == 1 {
            out.push(read(8) as u8);
            left -= 9;
        } else {
            if left < 16 {
                break;
            }
            let (distance, length) = (read(8) + 1, read(7) + 1);
            assert!(distance <= out.len(), "a reference before the start of the stream");
            for _ in 0..length {
                out.push(out[out.len() - distance]);
            }
            left -= 16;
        }
    }
    out
}

/// Applies an `esp_delta_ota` patch file to `base`, as the device's detools does.
fn apply(base: &[u8], patch: &[u8]) -> Vec<u8> {
    assert_eq!(&patch[..4], &0xfccd_de10u32.to_le_bytes(), "magic");
    let body = &patch[esp::HEADER_LEN..];
    assert_eq!(body[0], 0x04, "sequential, heatshrink");
    let mut at = 1;
    let to_size = unpack_size(body, &mut at) as usize;
    if to_size == 0 {
        assert_eq!(at, body.len(), "nothing after an empty target's size");
        return Vec::new();
    }
    assert_eq!(body[at], 0x44, "heatshrink window 8, lookahead 7");
    let stream = heatshrink_decode(&body[at + 1..]);
    let mut at = 0;
    assert_eq!(unpack_size(&stream, &mut at), 0, "no data format");
    let (mut out, mut from) = (Vec::with_capacity(to_size), 0i64);
    while out.len() < to_size {
        let diff = unpack_size(&stream, &mut at) as usize;
        for i in 0..diff {
            out.push(stream[at + i].wrapping_add(base[from as usize + i]));
        }
        (at, from) = (at + diff, from + diff as i64);
        let extra = unpack_size(&stream, &mut at) as usize;
        out.extend_from_slice(&stream[at..at + extra]);
        at += extra;
        from += unpack_size(&stream, &mut at);
        assert!(out.len() <= to_size, "chunks past the target size");
    }
    assert_eq!(at, stream.len(), "the stream ends with the target");
    out
}

/// A pair of byte strings that share something: the target is the base edited (bytes
/// changed, inserted, removed), or anything at all.
fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..3000);
    let edited = (bytes(), prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 0..20)).prop_map(
        |(base, edits)| {
            let mut target = base.clone();
            for (at, kind, byte) in edits {
                let i = if target.is_empty() { 0 } else { at.index(target.len()) };
                match kind {
                    0 if !target.is_empty() => target[i] = byte,
                    1 => target.insert(i, byte),
                    _ if !target.is_empty() => {
                        target.remove(i);
                    }
                    _ => target.push(byte),
                }
            }
            (base, target)
        },
    );
    prop_oneof![edited, (bytes(), bytes())]
}

proptest! {
    #[test]
    fn every_esp_patch_turns_its_base_into_its_target((base, target) in pair()) {
        let patch = esp::patch(&base, &target);
        prop_assert_eq!(&patch[4..36], &esp::image_digest(&base)[..]);
        prop_assert!(patch[36..64].iter().all(|&b| b == 0));
        prop_assert_eq!(&apply(&base, &patch), &target);
        prop_assert_eq!(esp::apply(&base, &patch, target.len()), Ok(target));
    }

    #[test]
    fn a_damaged_patch_is_refused_or_applied_never_a_panic(
        (base, target) in pair(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut patch = esp::patch(&base, &target);
        for (at, byte) in damage {
            let i = at.index(patch.len());
            patch[i] = byte;
        }
        let _ = esp::apply(&base, &patch, 1 << 16);
        let _ = esp::apply(&base, &patch[..cut.index(patch.len())], 1 << 16);
    }

    #[test]
    fn image_digest_is_the_files_sha256_unless_an_appended_hash_verifies(
        mut image in prop::collection::vec(any::<u8>(), 0..600),
        segments in 0u8..4,
        flip in any::<prop::sample::Index>(),
    ) {
        // Arbitrary bytes: the whole file's hash.
        let whole: [u8; 32] = Sha256::digest(&image).into();
        if image.first() != Some(&0xE9) {
            prop_assert_eq!(esp::image_digest(&image), whole);
        }
        // A well-formed app image of `segments` segments: its appended hash; any one byte
        // changed: the whole (changed) file's hash, unless the change left it well-formed.
        image.truncate(200);
        let mut app = vec![0xE9, segments];
        app.resize(24, 0);
        app[23] = 1;
        let per = image.len() / 4;
        for s in 0..segments as usize {
            app.extend_from_slice(&0x4008_0000u32.to_le_bytes());
            app.extend_from_slice(&(per as u32).to_le_bytes());
            app.extend_from_slice(&image[s * per..(s + 1) * per]);
        }
        while app.len() % 16 != 15 {
            app.push(0);
        }
        app.push(0xEF);
        let hash: [u8; 32] = Sha256::digest(&app).into();
        app.extend_from_slice(&hash);
        prop_assert_eq!(esp::image_digest(&app), hash);
        let i = flip.index(app.len());
        app[i] ^= 0x01;
        let digest = esp::image_digest(&app);
        let changed_whole: [u8; 32] = Sha256::digest(&app).into();
        prop_assert!(digest == changed_whole || digest == hash, "neither hash");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_vcdiff_is_decoded_by_xdelta3_into_its_target((source, target) in pair()) {
        let mut delta = Vec::new();
        vcdiff::encode(&source, &target, &mut delta).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (s, d, out) = (dir.path().join("source"), dir.path().join("delta"), dir.path().join("out"));
        std::fs::write(&s, &source).unwrap();
        std::fs::write(&d, &delta).unwrap();
        let status = Command::new("xdelta3").arg("-d").arg("-f").arg("-s").arg(&s).arg(&d).arg(&out).status();
        let status = status.expect("xdelta3 runs: install it with `bash e2e/scripts/cluster.sh tools`");
        prop_assert!(status.success(), "xdelta3 -d refused the delta");
        prop_assert_eq!(std::fs::read(&out).unwrap(), target);
    }
}

proptest! {
    #[test]
    fn every_vcdiff_verifies_to_its_targets_size_and_hash((source, target) in pair()) {
        let mut delta = Vec::new();
        vcdiff::encode(&source, &target, &mut delta).unwrap();
        let decoded = vcdiff::verify(&source, &delta).unwrap();
        prop_assert_eq!(decoded.len, target.len() as u64);
        prop_assert_eq!(decoded.sha256, <[u8; 32]>::from(Sha256::digest(&target)));
    }

    #[test]
    fn a_damaged_vcdiff_is_refused_or_decoded_never_a_panic(
        (source, target) in pair(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut delta = Vec::new();
        vcdiff::encode(&source, &target, &mut delta).unwrap();
        for (at, byte) in damage {
            let i = at.index(delta.len());
            delta[i] = byte;
        }
        let _ = vcdiff::verify(&source, &delta);
        let _ = vcdiff::verify(&source, &delta[..cut.index(delta.len())]);
    }
}
