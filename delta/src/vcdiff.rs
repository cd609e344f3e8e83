//! VCDIFF (RFC 3284) encoding, as `xdelta3 -d` and LXD/Incus (which runs xdelta3) apply it.
//!
//! The output is plain RFC 3284: header `D6 C3 C4 00`, `Hdr_Indicator` 0 (no secondary
//! compressor, default code table, no application header), then one window per
//! [`WINDOW`] bytes of target. A window that copies from the source declares `VCD_SOURCE`
//! with the smallest source segment that covers its copies, so a decoder reads only that
//! segment; the segment is kept under [`MAX_SEGMENT`] because xdelta3 holds window
//! addresses in 32 bits.
//!
//! Matching: the source is cut into aligned blocks of `block` bytes whose polynomial
//! hashes go into a table of `u32` block numbers; a rolling hash of the same width moves
//! over the target, and a hit is verified, then extended forward and backward. Any run of
//! `2 × block − 1` bytes that also occurs in the source is therefore found wherever it
//! sits in the source, so a squashfs image in which one file changed (everything after it
//! shifted) is mostly COPYs. Beside the table, the position that continues the previous
//! match at the same offset is tried at every byte, which finds the short matches that
//! follow a small substitution. Bytes left over are ADDs, with RUNs for long runs of one
//! byte. Copies within the target are not searched for.
//!
//! Memory besides the inputs: the table, `4 × 2^bits` bytes with
//! `2^bits ≥ source / block`, where `block` starts at 32 and doubles until the table
//! has at most 2^24 slots (64 MiB: a 512 MiB source at 32-byte blocks, a 4 GiB one at
//! 256), plus the current window's sections, O([`WINDOW`]). The inputs are only read, so
//! callers may pass memory maps of multi-GB files.
//!
//! Instructions use the default code table with its address cache (near 4, same 3) and
//! its combined ADD+COPY / COPY+ADD opcodes where they apply.
//!
//! [`verify`] decodes a delta (one window in memory at a time) and gives the size and
//! SHA-256 of what it makes, so a delta is checked before anyone is offered it.

use std::io::{self, Write};

use crate::common_prefix;

mod decode;

pub use decode::{verify, DecodeError, Decoded, MAX_WINDOW};

/// The VCDIFF magic and version byte.
const MAGIC: [u8; 4] = [0xD6, 0xC3, 0xC4, 0x00];
/// `Win_Indicator` bit: the window copies from the source.
const VCD_SOURCE: u8 = 0x01;
/// Target bytes per window.
pub const WINDOW: usize = 8 << 20;
/// The largest source segment one window declares (addresses fit in 32 bits with the
/// window added).
pub const MAX_SEGMENT: usize = 1 << 31;
/// The smallest block the source index hashes.
const MIN_BLOCK: usize = 32;
/// The index has at most `2^MAX_INDEX_BITS` slots.
const MAX_INDEX_BITS: u32 = 24;
/// The shortest match taken at the previous match's offset (one not found by the index).
const MIN_CONTINUATION: usize = 8;
/// The shortest run of one byte written as a RUN inside literal bytes.
const MIN_RUN: usize = 8;

/// Writes to `out` the VCDIFF delta that turns `source` into `target`.
pub fn encode(source: &[u8], target: &[u8], out: &mut impl Write) -> io::Result<()> {
    // Hdr_Indicator 0: no secondary compressor, default code table, no app header.
    out.write_all(&MAGIC)?;
    out.write_all(&[0])?;
    let index = Index::new(source);
    let mut window = Window::default();
    let mut start = 0;
    // An empty target still gets one (empty) window: xdelta3 rejects a delta without
    // any ("nothing to output").
    loop {
        let end = target.len().min(start + WINDOW);
        let insts = index.matches(target, start, end);
        window.encode(&insts, target, end - start);
        window.write_to(out)?;
        start = end;
        if start == target.len() {
            return Ok(());
        }
    }
}

/// One instruction of a window, before its addresses are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inst {
    /// Target bytes `start..start + len` (absolute target positions), copied as data.
    Add { start: usize, len: usize },
    /// `len` copies of `byte`.
    Run { byte: u8, len: usize },
    /// Source bytes `from..from + len` (absolute source positions).
    Copy { from: usize, len: usize },
}

/// The aligned-block hash index of the source.
struct Index<'a> {
    source: &'a [u8],
    block: usize,
    /// `MUL^(block - 1)`, to roll the oldest byte out.
    out_factor: u64,
    bits: u32,
    /// Block number + 1 for each slot; 0 is empty.
    table: Vec<u32>,
}

const MUL: u64 = 0x0000_0100_0000_01B3;
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl<'a> Index<'a> {
    fn new(source: &'a [u8]) -> Self {
        let mut block = MIN_BLOCK;
        while source.len() / block > 1 << MAX_INDEX_BITS {
            block *= 2;
        }
        let blocks = source.len() / block;
        let bits = if blocks == 0 { 0 } else { blocks.next_power_of_two().trailing_zeros().max(4) };
        let mut index = Index {
            source,
            block,
            out_factor: (1..block).fold(1u64, |f, _| f.wrapping_mul(MUL)),
            bits,
            table: vec![0; if blocks == 0 { 0 } else { 1 << bits }],
        };
        for b in 0..blocks {
            let h = hash(&source[b * block..(b + 1) * block]);
            let slot = index.slot(h);
            // u32 holds it: blocks <= 2^MAX_INDEX_BITS.
            index.table[slot] = (b + 1) as u32;
        }
        index
    }

    fn slot(&self, h: u64) -> usize {
        (h.wrapping_mul(MIX) >> (64 - self.bits)) as usize
    }

    /// The source position whose block hashes like `h`, if any.
    fn lookup(&self, h: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        match self.table[self.slot(h)] {
            0 => None,
            b => Some((b as usize - 1) * self.block),
        }
    }

    fn roll(&self, h: u64, gone: u8, new: u8) -> u64 {
        h.wrapping_sub(u64::from(gone).wrapping_mul(self.out_factor)).wrapping_mul(MUL).wrapping_add(u64::from(new))
    }

    /// The instructions that build `target[start..end]`, greedy, left to right.
    fn matches(&self, target: &[u8], start: usize, end: usize) -> Vec<Inst> {
        let source = self.source;
        let block = self.block;
        let mut insts = Vec::new();
        // The source segment the window's copies span so far.
        let mut segment: Option<(usize, usize)> = None;
        // Target bytes from `literal` to `p` are not covered yet.
        let mut literal = start;
        let mut p = start;
        // source position - target position of the last copy.
        let mut offset: Option<isize> = None;
        // The rolling hash of target[p..p + block], valid while p + block <= end.
        let mut h = if p + block <= end { hash(&target[p..p + block]) } else { 0 };
        while p < end {
            let mut best: Option<(usize, usize, usize)> = None; // (target start, source start, len)
            let mut consider = |t: usize, s: usize, fwd: usize| {
                // Extend backward into the literal bytes.
                let back = common_suffix(&source[..s], &target[literal..t]);
                let (t, s, len) = (t - back, s - back, fwd + back);
                let (lo, hi) = match segment {
                    Some((lo, hi)) => (lo.min(s), hi.max(s + len)),
                    None => (s, s + len),
                };
                if hi - lo <= MAX_SEGMENT && best.is_none_or(|(bt, _, bl)| t + len > bt + bl) {
                    best = Some((t, s, len));
                }
            };
            if let Some(off) = offset {
                let s = p as isize + off;
                if s >= 0 && (s as usize) < source.len() {
                    let s = s as usize;
                    let fwd = common_prefix(&source[s..], &target[p..end]);
                    if fwd >= MIN_CONTINUATION {
                        consider(p, s, fwd);
                    }
                }
            }
            if p + block <= end {
                if let Some(s) = self.lookup(h) {
                    if source[s..s + block] == target[p..p + block] {
                        let fwd = block + common_prefix(&source[s + block..], &target[p + block..end]);
                        consider(p, s, fwd);
                    }
                }
            }
            if let Some((t, s, len)) = best {
                literal_insts(target, literal, t, &mut insts);
                insts.push(Inst::Copy { from: s, len });
                segment = Some(match segment {
                    Some((lo, hi)) => (lo.min(s), hi.max(s + len)),
                    None => (s, s + len),
                });
                offset = Some(s as isize - t as isize);
                p = t + len;
                literal = p;
                if p + block <= end {
                    h = hash(&target[p..p + block]);
                }
                continue;
            }
            if p + block < end {
                h = self.roll(h, target[p], target[p + block]);
            }
            p += 1;
        }
        literal_insts(target, literal, end, &mut insts);
        insts
    }
}

fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, &b| h.wrapping_mul(MUL).wrapping_add(u64::from(b)))
}

/// The number of equal trailing bytes of `a` and `b`.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_be_bytes(a[n - i - 8..n - i].try_into().unwrap());
        let y = u64::from_be_bytes(b[n - i - 8..n - i].try_into().unwrap());
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[n - i - 1] == b[n - i - 1] {
        i += 1;
    }
    i
}

/// ADDs (and RUNs for long runs of one byte) for `target[from..to]`.
fn literal_insts(target: &[u8], from: usize, to: usize, insts: &mut Vec<Inst>) {
    let mut add = from;
    let mut i = from;
    while i < to {
        let byte = target[i];
        let run = target[i..to].iter().take_while(|&&b| b == byte).count();
        if run >= MIN_RUN {
            if add < i {
                insts.push(Inst::Add { start: add, len: i - add });
            }
            insts.push(Inst::Run { byte, len: run });
            add = i + run;
        }
        i += run;
    }
    if add < to {
        insts.push(Inst::Add { start: add, len: to - add });
    }
}

/// RFC 3284 section 5.1: the address cache, `s_near` 4 and `s_same` 3 as the default
/// code table has them.
struct AddressCache {
    near: [usize; 4],
    next: usize,
    same: [usize; 3 * 256],
}

impl AddressCache {
    fn new() -> Self {
        AddressCache { near: [0; 4], next: 0, same: [0; 768] }
    }

    /// The mode and the encoded address for a COPY from `addr` at `here`; `true` when the
    /// address is one byte (the `same` modes) rather than an integer.
    fn encode(&mut self, addr: usize, here: usize) -> (u8, usize, bool) {
        let slot = addr % self.same.len();
        let chosen = if self.same[slot] == addr {
            (6 + (slot / 256) as u8, slot % 256, true)
        } else {
            let mut best = (0u8, addr);
            if here - addr < best.1 {
                best = (1, here - addr);
            }
            for (i, &n) in self.near.iter().enumerate() {
                if addr >= n && addr - n < best.1 {
                    best = (2 + i as u8, addr - n);
                }
            }
            (best.0, best.1, false)
        };
        self.near[self.next] = addr;
        self.next = (self.next + 1) % self.near.len();
        self.same[slot] = addr;
        chosen
    }
}

/// The sections of one window, reused from window to window.
#[derive(Default)]
struct Window {
    header: Vec<u8>,
    data: Vec<u8>,
    inst: Vec<u8>,
    addr: Vec<u8>,
}

/// What the last opcode written was, for the combined opcodes.
#[derive(Clone, Copy)]
enum Last {
    Other,
    /// A lone ADD of size 1..=4 (no size byte), at `inst[at]`.
    Add {
        at: usize,
        size: usize,
    },
    /// A lone COPY of size 4 in `mode` (no size byte), at `inst[at]`.
    Copy4 {
        at: usize,
        mode: u8,
    },
}

impl Window {
    /// Fills the sections for a window of `len` bytes built by `insts` (whose ADDs
    /// name bytes of `target`).
    fn encode(&mut self, insts: &[Inst], target: &[u8], len: usize) {
        self.data.clear();
        self.inst.clear();
        self.addr.clear();
        self.header.clear();
        let (lo, hi) = insts
            .iter()
            .filter_map(|i| match *i {
                Inst::Copy { from, len } => Some((from, from + len)),
                _ => None,
            })
            .fold((usize::MAX, 0), |(lo, hi), (a, b)| (lo.min(a), hi.max(b)));
        let segment = (lo < hi).then_some((lo, hi));
        let seg_len = segment.map_or(0, |(lo, hi)| hi - lo);
        let mut cache = AddressCache::new();
        let mut last = Last::Other;
        // Position in the window's target.
        let mut pos = 0usize;
        for inst in insts {
            match *inst {
                Inst::Add { start, len } => {
                    self.data.extend_from_slice(&target[start..start + len]);
                    if let Last::Copy4 { at, mode } = last {
                        if len == 1 {
                            self.inst[at] = 247 + mode;
                            last = Last::Other;
                            pos += len;
                            continue;
                        }
                    }
                    if (1..=17).contains(&len) {
                        last = if len <= 4 { Last::Add { at: self.inst.len(), size: len } } else { Last::Other };
                        self.inst.push(1 + len as u8);
                    } else {
                        self.inst.push(1);
                        varint(&mut self.inst, len);
                        last = Last::Other;
                    }
                }
                Inst::Run { byte, len } => {
                    self.data.push(byte);
                    self.inst.push(0);
                    varint(&mut self.inst, len);
                    last = Last::Other;
                }
                Inst::Copy { from, len } => {
                    let addr = from - segment.expect("a COPY sets the segment").0;
                    let (mode, value, byte) = cache.encode(addr, seg_len + pos);
                    if byte {
                        self.addr.push(value as u8);
                    } else {
                        varint(&mut self.addr, value);
                    }
                    let combined = match last {
                        Last::Add { at, size } if mode <= 5 && (4..=6).contains(&len) => {
                            Some((at, 163 + 12 * mode + 3 * (size as u8 - 1) + (len as u8 - 4)))
                        }
                        Last::Add { at, size } if mode >= 6 && len == 4 => {
                            Some((at, 235 + 4 * (mode - 6) + (size as u8 - 1)))
                        }
                        _ => None,
                    };
                    if let Some((at, opcode)) = combined {
                        self.inst[at] = opcode;
                        last = Last::Other;
                    } else if (4..=18).contains(&len) {
                        last = if len == 4 { Last::Copy4 { at: self.inst.len(), mode } } else { Last::Other };
                        self.inst.push(19 + 16 * mode + (len as u8 - 3));
                    } else {
                        self.inst.push(19 + 16 * mode);
                        varint(&mut self.inst, len);
                        last = Last::Other;
                    }
                }
            }
            pos += inst_len(inst);
        }
        debug_assert_eq!(pos, len);

        let mut header = std::mem::take(&mut self.header);
        match segment {
            Some((lo, hi)) => {
                header.push(VCD_SOURCE);
                varint(&mut header, hi - lo);
                varint(&mut header, lo);
            }
            None => header.push(0),
        }
        let mut delta = Vec::with_capacity(32);
        varint(&mut delta, len);
        delta.push(0); // Delta_Indicator: no section compressed
        varint(&mut delta, self.data.len());
        varint(&mut delta, self.inst.len());
        varint(&mut delta, self.addr.len());
        varint(&mut header, delta.len() + self.data.len() + self.inst.len() + self.addr.len());
        header.extend_from_slice(&delta);
        self.header = header;
    }

    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.header)?;
        out.write_all(&self.data)?;
        out.write_all(&self.inst)?;
        out.write_all(&self.addr)
    }
}

fn inst_len(inst: &Inst) -> usize {
    match *inst {
        Inst::Add { len, .. } | Inst::Run { len, .. } | Inst::Copy { len, .. } => len,
    }
}

/// RFC 3284 section 2: base 128, most significant digit first, the high bit set on
/// every byte but the last.
fn varint(out: &mut Vec<u8>, mut n: usize) {
    let mut buf = [0u8; 10];
    let mut i = buf.len() - 1;
    buf[i] = (n & 0x7f) as u8;
    n >>= 7;
    while n > 0 {
        i -= 1;
        buf[i] = 0x80 | (n & 0x7f) as u8;
        n >>= 7;
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_is_rfc_3284s() {
        // RFC 3284 section 2's example: 123456789 = 58 111 26 21 in base 128.
        let mut v = Vec::new();
        varint(&mut v, 123_456_789);
        assert_eq!(v, [58 | 0x80, 111 | 0x80, 26 | 0x80, 21]);
        v.clear();
        varint(&mut v, 0);
        assert_eq!(v, [0]);
    }

    #[test]
    fn prefix_and_suffix_count_equal_bytes() {
        let a = b"0123456789abcdefXYZ";
        let b = b"0123456789abcdefXYq";
        assert_eq!(common_prefix(a, b), 18);
        assert_eq!(common_suffix(b"zz0123456789abcdef", b"y0123456789abcdef"), 16);
        assert_eq!(common_suffix(b"", b"abc"), 0);
    }

    #[test]
    fn literal_bytes_become_runs_and_adds() {
        let t = b"ab\0\0\0\0\0\0\0\0\0cd";
        let mut insts = Vec::new();
        literal_insts(t, 0, t.len(), &mut insts);
        assert_eq!(
            insts,
            [Inst::Add { start: 0, len: 2 }, Inst::Run { byte: 0, len: 9 }, Inst::Add { start: 11, len: 2 }]
        );
    }
}
