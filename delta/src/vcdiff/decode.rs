//! Decoding VCDIFF (RFC 3284) to check a delta before it is listed: [`verify`] applies a
//! delta to its source window by window and returns the size and SHA-256 of what it
//! makes, holding one target window at a time. A delta is hostile input (a cache can be
//! damaged, a bug can write a wrong one): every length is checked against what is left
//! and a window is at most [`MAX_WINDOW`] bytes, so nothing it says can take memory it
//! does not have or panic.
//!
//! Read: the header (`D6 C3 C4 00`; an xdelta3 application header is skipped; a
//! secondary compressor or a custom code table is refused), then windows with
//! `VCD_SOURCE` or no source (`VCD_TARGET` is refused), xdelta3's Adler-32 skipped, and
//! the default code table with its address cache (near 4, same 3).

use sha2::{Digest, Sha256};

use super::MAGIC;

/// The largest target window decoded (xdelta3 writes at most 16 MiB; we write 8 MiB).
pub const MAX_WINDOW: usize = 64 << 20;

const VCD_DECOMPRESS: u8 = 0x01;
const VCD_CODETABLE: u8 = 0x02;
const VCD_APPHEADER: u8 = 0x04;
const VCD_SOURCE: u8 = 0x01;
const VCD_TARGET: u8 = 0x02;
const VCD_ADLER32: u8 = 0x04;

/// What a delta makes from its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub len: u64,
    pub sha256: [u8; 32],
}

/// Why a delta could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not VCDIFF: the magic is missing")]
    Magic,
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    #[error("the delta ends in the middle of {0}")]
    Truncated(&'static str),
    #[error("a number is longer than 64 bits")]
    Overflow,
    #[error("a window of {0} bytes is over the {MAX_WINDOW} decoded")]
    WindowTooLarge(u64),
    #[error("the source segment {0}+{1} is outside the {2}-byte source")]
    Segment(u64, u64, usize),
    #[error("an instruction reads past its section or writes past its window")]
    Bounds,
    #[error("a COPY address {0} is not before the current position {1}")]
    Address(u64, u64),
    #[error("a window's sections do not add up to its encoding length")]
    Lengths,
}

/// Instruction kinds of the code table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Noop,
    Add,
    Run,
    Copy,
}

#[derive(Clone, Copy)]
struct Half {
    kind: Kind,
    size: u8,
    mode: u8,
}

const NOOP: Half = Half { kind: Kind::Noop, size: 0, mode: 0 };

/// RFC 3284's default code table (section 5.6).
fn default_table() -> [[Half; 2]; 256] {
    let half = |kind, size, mode| Half { kind, size, mode };
    let mut table = Vec::with_capacity(256);
    table.push([half(Kind::Run, 0, 0), NOOP]);
    for size in 0..=17 {
        table.push([half(Kind::Add, size, 0), NOOP]);
    }
    for mode in 0..=8 {
        table.push([half(Kind::Copy, 0, mode), NOOP]);
        for size in 4..=18 {
            table.push([half(Kind::Copy, size, mode), NOOP]);
        }
    }
    for mode in 0..=5 {
        for add in 1..=4 {
            for copy in 4..=6 {
                table.push([half(Kind::Add, add, 0), half(Kind::Copy, copy, mode)]);
            }
        }
    }
    for mode in 6..=8 {
        for add in 1..=4 {
            table.push([half(Kind::Add, add, 0), half(Kind::Copy, 4, mode)]);
        }
    }
    for mode in 0..=8 {
        table.push([half(Kind::Copy, 4, mode), half(Kind::Add, 1, 0)]);
    }
    table.try_into().unwrap_or_else(|t: Vec<_>| panic!("the default code table has 256 entries, not {}", t.len()))
}

/// A reader over one section.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, at: 0, what }
    }

    fn done(&self) -> bool {
        self.at == self.data.len()
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.data.get(self.at).ok_or(DecodeError::Truncated(self.what))?;
        self.at += 1;
        Ok(b)
    }

    /// RFC 3284's integer: base 128, most significant digit first.
    fn int(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        loop {
            let b = self.byte()?;
            if value >> 57 != 0 {
                return Err(DecodeError::Overflow);
            }
            value = value << 7 | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.int()?).map_err(|_| DecodeError::Overflow)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len()).ok_or(DecodeError::Truncated(self.what))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }
}

/// The address cache (near 4, same 3), reset at every window.
struct Addresses {
    near: [u64; 4],
    next: usize,
    same: [u64; 768],
}

impl Addresses {
    fn new() -> Self {
        Addresses { near: [0; 4], next: 0, same: [0; 768] }
    }

    fn decode(&mut self, mode: u8, here: u64, addrs: &mut Reader<'_>) -> Result<u64, DecodeError> {
        let addr = match mode {
            0 => addrs.int()?,
            1 => here.checked_sub(addrs.int()?).ok_or(DecodeError::Address(u64::MAX, here))?,
            2..=5 => self.near[usize::from(mode - 2)].checked_add(addrs.int()?).ok_or(DecodeError::Overflow)?,
            _ => self.same[usize::from(mode - 6) * 256 + usize::from(addrs.byte()?)],
        };
        if addr >= here {
            return Err(DecodeError::Address(addr, here));
        }
        self.near[self.next] = addr;
        self.next = (self.next + 1) % self.near.len();
        self.same[(addr % 768) as usize] = addr;
        Ok(addr)
    }
}

/// Applies `delta` to `source`; the size and SHA-256 of the target it makes.
pub fn verify(source: &[u8], delta: &[u8]) -> Result<Decoded, DecodeError> {
    let table = default_table();
    let mut input = Reader::new(delta, "the header");
    if input.take(4).map_err(|_| DecodeError::Magic)? != MAGIC {
        return Err(DecodeError::Magic);
    }
    let indicator = input.byte()?;
    if indicator & VCD_DECOMPRESS != 0 {
        return Err(DecodeError::Unsupported("a secondary compressor"));
    }
    if indicator & VCD_CODETABLE != 0 {
        return Err(DecodeError::Unsupported("a custom code table"));
    }
    if indicator & VCD_APPHEADER != 0 {
        let n = input.len()?;
        input.take(n)?;
    }
    let (mut hasher, mut total, mut window) = (Sha256::new(), 0u64, Vec::new());
    while !input.done() {
        input.what = "a window header";
        let win = input.byte()?;
        if win & VCD_TARGET != 0 {
            return Err(DecodeError::Unsupported("a window copying from the target (VCD_TARGET)"));
        }
        let segment: &[u8] = if win & VCD_SOURCE != 0 {
            let (len, pos) = (input.int()?, input.int()?);
            let end = pos.checked_add(len).filter(|&e| e <= source.len() as u64);
            let end = end.ok_or(DecodeError::Segment(pos, len, source.len()))?;
            &source[pos as usize..end as usize]
        } else {
            &[]
        };
        let encoding_len = input.len()?;
        let mut encoding = Reader::new(input.take(encoding_len)?, "a window's encoding");
        let target_len = encoding.int()?;
        if target_len > MAX_WINDOW as u64 {
            return Err(DecodeError::WindowTooLarge(target_len));
        }
        if encoding.byte()? != 0 {
            return Err(DecodeError::Unsupported("compressed sections"));
        }
        let (data_len, inst_len, addr_len) = (encoding.len()?, encoding.len()?, encoding.len()?);
        if win & VCD_ADLER32 != 0 {
            encoding.take(4)?;
        }
        let mut data = Reader::new(encoding.take(data_len)?, "the data section");
        let mut insts = Reader::new(encoding.take(inst_len)?, "the instructions");
        let mut addrs = Reader::new(encoding.take(addr_len)?, "the addresses");
        if !encoding.done() {
            return Err(DecodeError::Lengths);
        }
        window.clear();
        let target_len = target_len as usize;
        let mut cache = Addresses::new();
        while !insts.done() {
            for half in table[usize::from(insts.byte()?)] {
                if half.kind == Kind::Noop {
                    continue;
                }
                let size = if half.size == 0 { insts.len()? } else { usize::from(half.size) };
                if size > target_len - window.len() {
                    return Err(DecodeError::Bounds);
                }
                match half.kind {
                    Kind::Add => window.extend_from_slice(data.take(size)?),
                    Kind::Run => {
                        let byte = data.byte()?;
                        window.resize(window.len() + size, byte);
                    }
                    Kind::Copy => {
                        let here = (segment.len() + window.len()) as u64;
                        let addr = cache.decode(half.mode, here, &mut addrs)? as usize;
                        if addr < segment.len() {
                            // The source segment, then on into this window's start
                            // (RFC 3284 addresses the segment and the window as one string).
                            let from = &segment[addr..];
                            let n = size.min(from.len());
                            window.extend_from_slice(&from[..n]);
                            for i in 0..size - n {
                                window.push(window[i]);
                            }
                        } else {
                            let start = addr - segment.len();
                            for i in 0..size {
                                window.push(window[start + i]);
                            }
                        }
                    }
                    Kind::Noop => {}
                }
            }
        }
        if window.len() != target_len || !data.done() || !addrs.done() {
            return Err(DecodeError::Lengths);
        }
        hasher.update(&window);
        total += target_len as u64;
    }
    Ok(Decoded { len: total, sha256: hasher.finalize().into() })
}
