//! heatshrink compression as detools frames it (`detools/compression/heatshrink.py` over
//! the `heatshrink2` package): one byte `(window_sz2 - 4) << 4 | (lookahead_sz2 - 3)`,
//! then heatshrink's LZSS bit stream, most significant bit first:
//!
//! - `1`, then 8 bits: a literal byte;
//! - `0`, then `WINDOW_BITS` bits of distance - 1, then `LOOKAHEAD_BITS` bits of
//!   length - 1: copy `length` bytes from `distance` back, byte by byte (so a copy may
//!   overlap its own output).
//!
//! The last byte is padded with zero bits, fewer than a token needs, which the decoder
//! ignores. Parameters are detools' defaults, window 2^8 and lookahead 2^7, which the
//! detools C library on the device is built for.
//!
//! Every back-reference costs the same 16 bits whatever its length and distance, and a
//! literal 9, so the parse is chosen optimally by dynamic programming over the longest
//! match at each position (see [`compress`]).

use crate::common_prefix;

const WINDOW_BITS: u32 = 8;
const LOOKAHEAD_BITS: u32 = 7;
const MAX_DISTANCE: usize = 1 << WINDOW_BITS;
const MAX_LENGTH: usize = 1 << LOOKAHEAD_BITS;
const LITERAL_BITS: u32 = 1 + 8;
const BACKREF_BITS: u32 = 1 + WINDOW_BITS + LOOKAHEAD_BITS;
/// Shortest back-reference worth its bits: two literals cost 18.
const MIN_LENGTH: usize = 2;

/// The detools framing byte for window 2^8, lookahead 2^7.
pub const HEADER: u8 = (((WINDOW_BITS - 4) << 4) | (LOOKAHEAD_BITS - 3)) as u8;

/// Appends to `out` the detools heatshrink stream of `data`: [`HEADER`], then the bits.
///
/// The parse is optimal for heatshrink's fixed token costs. With `cost[i]` the bits to
/// encode `data[i..]`, `cost` never increases with `i` (drop a leading literal, or
/// shorten a leading back-reference by one byte, or turn a 2-byte one into a literal),
/// so of all back-references starting at `i` the longest is best:
/// `cost[i] = min(9 + cost[i + 1], 16 + cost[i + longest_match(i)])`.
pub fn compress(data: &[u8], out: &mut Vec<u8>) {
    out.push(HEADER);
    let matches = longest_matches(data);

    // Backwards: the cheapest encoding of each suffix and its first step.
    let n = data.len();
    let mut cost = vec![0u64; n + 1];
    let mut take = vec![0u8; n]; // 0: literal, else the back-reference's length - 1
    for i in (0..n).rev() {
        cost[i] = LITERAL_BITS as u64 + cost[i + 1];
        let m = matches[i];
        if m.length as usize >= MIN_LENGTH {
            let via_match = BACKREF_BITS as u64 + cost[i + m.length as usize];
            if via_match < cost[i] {
                cost[i] = via_match;
                take[i] = (m.length - 1) as u8;
            }
        }
    }

    let mut bits = BitWriter::new(out);
    let mut i = 0;
    while i < n {
        if take[i] == 0 {
            bits.put(1, 1);
            bits.put(data[i] as u32, 8);
            i += 1;
        } else {
            let length = take[i] as usize + 1;
            bits.put(0, 1);
            bits.put(matches[i].distance as u32 - 1, WINDOW_BITS);
            bits.put(length as u32 - 1, LOOKAHEAD_BITS);
            i += length;
        }
    }
    bits.finish();
}

#[derive(Clone, Copy, Default)]
struct Match {
    /// 1..=MAX_DISTANCE when `length > 0`.
    distance: u16,
    /// 0..=MAX_LENGTH, never past the end of the input.
    length: u16,
}

/// The longest earlier occurrence within the window of what starts at each position,
/// found through hash chains on the next two bytes. Only positions inside the input are
/// referenced (the decoder's window starts zeroed, but nothing relies on that).
fn longest_matches(data: &[u8]) -> Vec<Match> {
    const NONE: u32 = u32::MAX;
    let n = data.len();
    let mut matches = vec![Match::default(); n];
    // Most recent position of each two-byte prefix; the previous one with the same
    // prefix, for positions still in the window (indexed modulo the window).
    let mut head = vec![NONE; 1 << 16];
    let mut prev = [NONE; MAX_DISTANCE];
    for i in 0..n.saturating_sub(1) {
        let key = (data[i] as usize) << 8 | data[i + 1] as usize;
        let limit = (n - i).min(MAX_LENGTH);
        let mut best = Match::default();
        let mut candidate = head[key];
        // Every candidate in the window is tried (as heatshrink's own encoder does): in
        // bsdiff's mostly-zero blocks the one that matters is often the one that also
        // matches the next non-zero byte, far down a chain of zero pairs.
        while candidate != NONE && i - candidate as usize <= MAX_DISTANCE {
            let c = candidate as usize;
            candidate = prev[c % MAX_DISTANCE];
            // Only a candidate that agrees one byte past the best so far can beat it.
            let b = best.length as usize;
            if b >= MIN_LENGTH && data[c + b] != data[i + b] {
                continue;
            }
            // The first two bytes agree by construction of the chain.
            let length = 2 + common_prefix(&data[c + 2..], &data[i + 2..i + limit]);
            if length > best.length as usize {
                best = Match { distance: (i - c) as u16, length: length as u16 };
                if length == limit {
                    break;
                }
            }
        }
        matches[i] = best;
        prev[i % MAX_DISTANCE] = head[key];
        head[key] = i as u32;
    }
    matches
}

/// Bits, most significant first, into bytes.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    current: u8,
    used: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, current: 0, used: 0 }
    }

    fn put(&mut self, value: u32, count: u32) {
        for shift in (0..count).rev() {
            self.current = self.current << 1 | ((value >> shift) & 1) as u8;
            self.used += 1;
            if self.used == 8 {
                self.out.push(self.current);
                self.current = 0;
                self.used = 0;
            }
        }
    }

    /// Pads the last byte with zero bits (at most 7: fewer than any token).
    fn finish(self) {
        if self.used > 0 {
            self.out.push(self.current << (8 - self.used));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heatshrink decoder for the tests: reads tokens while a whole one remains.
    fn decompress(stream: &[u8]) -> Vec<u8> {
        assert_eq!(stream[0], 0x44, "window 8, lookahead 7");
        let bits = &stream[1..];
        let total = bits.len() * 8;
        let bit = |i: usize| (bits[i / 8] >> (7 - i % 8)) & 1;
        let read = |at: &mut usize, count: usize| {
            let mut v = 0usize;
            for _ in 0..count {
                v = v << 1 | bit(*at) as usize;
                *at += 1;
            }
            v
        };
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            if at + 9 > total {
                break;
            }
            if read(&mut at, 1) == 1 {
                out.push(read(&mut at, 8) as u8);
            } else {
                if at + 15 > total {
                    break;
                }
                let distance = read(&mut at, 8) + 1;
                let length = read(&mut at, 7) + 1;
                assert!(distance <= out.len(), "reference before the stream start");
                for _ in 0..length {
                    out.push(out[out.len() - distance]);
                }
            }
        }
        out
    }

    fn round_trip(data: &[u8]) -> usize {
        let mut stream = Vec::new();
        compress(data, &mut stream);
        assert_eq!(decompress(&stream), data);
        stream.len()
    }

    #[test]
    fn header_is_detools_default() {
        assert_eq!(HEADER, 0x44);
    }

    #[test]
    fn round_trips() {
        assert_eq!(round_trip(b""), 1);
        round_trip(b"a");
        round_trip(b"abababababababababab");
        let mut x = 12345u32;
        let noise: Vec<u8> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        round_trip(&noise);
        // Mostly zeros with sparse changes, like bsdiff's diff blocks.
        let sparse: Vec<u8> = noise.iter().map(|b| if b % 37 == 0 { *b } else { 0 }).collect();
        round_trip(&sparse);
    }

    #[test]
    fn zeros_use_maximal_back_references() {
        // One literal, then 128-byte copies of 16 bits each.
        let n = 1 + 128 * 100;
        let size = round_trip(&vec![0u8; n]);
        assert_eq!(size, 1 + (9 + 100 * 16_usize).div_ceil(8));
    }
}
