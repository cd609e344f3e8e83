//! detools' sequential patch (detools 0.53, `detools create_patch -c heatshrink`, the
//! default `--heatshrink-window-sz2 8 --heatshrink-lookahead-sz2 7`), which
//! `esp_delta_ota` applies with detools' C library.
//!
//! Layout, as `detools/apply.py` reads it:
//!
//! ```text
//! header      1 byte: patch type (0, sequential) << 4 | compression (4, heatshrink)
//! to_size     size (see `pack_size`), not compressed
//! -- if to_size > 0, one heatshrink stream to the end of the file holding: --
//! data format size (0: none)
//! chunks      until to_size bytes are written:
//!               size, diff bytes (target - base, wrapping), added to the base as read
//!               size, extra bytes, copied
//!               size, adjustment: signed step of the base read position
//! ```

use super::bsdiff;
use super::heatshrink;

/// Patch type in the high nibble (0, sequential), compression in the low (4,
/// heatshrink): `bitstruct.pack('p1u3u4', 0, 4)`.
const HEADER_SEQUENTIAL_HEATSHRINK: u8 = 0x04;

/// The detools sequential patch turning `base` into `target`.
pub fn sequential_patch(base: &[u8], target: &[u8]) -> Vec<u8> {
    let mut patch = vec![HEADER_SEQUENTIAL_HEATSHRINK];
    pack_size(target.len() as i64, &mut patch);
    if target.is_empty() {
        return patch;
    }
    // The uncompressed stream is at most a little over the target's size (every byte
    // of the target is in one diff or extra block, plus three sizes per chunk).
    let mut stream = Vec::with_capacity(target.len() + target.len() / 16 + 16);
    pack_size(0, &mut stream); // no data format
    bsdiff::diff(base, target, |chunk| {
        pack_size(chunk.diff.len() as i64, &mut stream);
        stream.extend(chunk.diff.iter().zip(&base[chunk.base_pos..]).map(|(t, b)| t.wrapping_sub(*b)));
        pack_size(chunk.extra.len() as i64, &mut stream);
        stream.extend_from_slice(chunk.extra);
        pack_size(chunk.adjustment, &mut stream);
    });
    heatshrink::compress(&stream, &mut patch);
    patch
}

/// detools' variable-length integer (`detools.common.pack_size`, read back by
/// `unpack_size`): the first byte carries a continuation bit (7), a sign bit (6, the
/// magnitude follows) and the low 6 bits; each following byte a continuation bit and
/// the next 7 bits.
pub fn pack_size(value: i64, out: &mut Vec<u8>) {
    let mut magnitude = value.unsigned_abs();
    let mut byte = (magnitude & 0x3f) as u8;
    if value < 0 {
        byte |= 0x40;
    }
    magnitude >>= 6;
    while magnitude > 0 {
        out.push(byte | 0x80);
        byte = (magnitude & 0x7f) as u8;
        magnitude >>= 7;
    }
    out.push(byte);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        pack_size(value, &mut out);
        out
    }

    /// The encodings `detools.common.pack_size` gives for these values (detools 0.53).
    #[test]
    fn pack_size_matches_detools() {
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (63, &[0x3f]),
            (64, &[0x80, 0x01]),
            (-1, &[0x41]),
            (-64, &[0xc0, 0x01]),
            (127, &[0xbf, 0x01]),
            (8191, &[0xbf, 0x7f]),
            (8192, &[0x80, 0x80, 0x01]),
            (1_048_576, &[0x80, 0x80, 0x80, 0x01]),
            (-1_048_577, &[0xc1, 0x80, 0x80, 0x01]),
            (1 << 40, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x40]),
        ];
        for (value, expected) in cases {
            assert_eq!(packed(*value), *expected, "pack_size({value})");
        }
    }

    #[test]
    fn empty_target_is_header_and_size_only() {
        assert_eq!(sequential_patch(b"base", b""), [0x04, 0x00]);
    }
}
