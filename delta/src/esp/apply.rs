//! Applying an `esp_delta_ota` patch, as the device does, to check one before it is
//! offered: a gateway serves a patch only once applying it to the base it names gives
//! the target it names. The patch comes from a registry, so it is hostile input: every
//! size is checked against what is left and against the expected target length, and a
//! malformed patch is an [`ApplyError`], never a panic or an allocation it asks for.
//!
//! What is read: the 64-byte header (magic, base digest, 28 zeros), a detools sequential
//! patch (header byte `0x04`, the target size), then one heatshrink stream of any window
//! and lookahead detools can write (its framing byte), holding a data-format size of 0
//! and (diff, extra, adjustment) chunks. As heatshrink's decoder, a back-reference before
//! the start of the stream reads zeros (its window starts zeroed; detools' own encoder
//! uses that).

use super::{image_digest, HEADER_LEN, MAGIC};

/// Why a patch could not be applied.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("shorter than the 64-byte esp_delta_ota header")]
    NoHeader,
    #[error("magic {0:#010x} is not esp_delta_ota's 0xfccdde10")]
    Magic(u32),
    #[error("the header's reserved bytes are not zero")]
    Reserved,
    #[error("the header names another base image than the one given")]
    OtherBase,
    #[error("detools patch header {0:#04x} is not sequential with heatshrink (0x04)")]
    Kind(u8),
    #[error("heatshrink parameters {0:#04x} are outside what detools writes")]
    Heatshrink(u8),
    #[error("the patch produces {0} bytes, more than the {1} expected")]
    TooLong(u64, usize),
    #[error("a size field is malformed or past the end of the patch")]
    Size,
    #[error("the patch data ends before the target is complete")]
    Truncated,
    #[error("a diff reads the base outside its {0} bytes")]
    OutsideBase(usize),
    #[error("a chunk goes past the target size")]
    PastTarget,
    #[error("data follows the end of the patch")]
    Trailing,
}

/// The target `patch` turns `base` into, at most `max_len` bytes long.
pub fn apply(base: &[u8], patch: &[u8], max_len: usize) -> Result<Vec<u8>, ApplyError> {
    let header = patch.get(..HEADER_LEN).ok_or(ApplyError::NoHeader)?;
    let magic = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    if magic != MAGIC {
        return Err(ApplyError::Magic(magic));
    }
    if header[36..].iter().any(|&b| b != 0) {
        return Err(ApplyError::Reserved);
    }
    if header[4..36] != image_digest(base) {
        return Err(ApplyError::OtherBase);
    }
    let body = &patch[HEADER_LEN..];
    let kind = *body.first().ok_or(ApplyError::Truncated)?;
    if kind != 0x04 {
        return Err(ApplyError::Kind(kind));
    }
    let mut at = 1;
    let to_size = read_size(body, &mut at)?;
    let to_size =
        usize::try_from(to_size).ok().filter(|&n| n <= max_len).ok_or(ApplyError::TooLong(to_size as u64, max_len))?;
    if to_size == 0 {
        return if at == body.len() { Ok(Vec::new()) } else { Err(ApplyError::Trailing) };
    }
    let framing = *body.get(at).ok_or(ApplyError::Truncated)?;
    let (window, lookahead) = (u32::from(framing >> 4) + 4, u32::from(framing & 0x0f) + 3);
    if window > 15 || lookahead >= window {
        return Err(ApplyError::Heatshrink(framing));
    }
    // The stream holds the target's bytes plus chunk sizes: it is bounded by the target
    // (each chunk adds at most 30 bytes of sizes, and a chunk carries at least one byte).
    let stream = decode(&body[at + 1..], window, lookahead, to_size.saturating_mul(32).saturating_add(16))?;
    let mut at = 0;
    if read_size(&stream, &mut at)? != 0 {
        return Err(ApplyError::Size); // a data format: detools' ELF/ARM modes, not written here
    }
    let mut target = Vec::with_capacity(to_size);
    let mut from: i64 = 0;
    while target.len() < to_size {
        let diff = chunk_len(&stream, &mut at, to_size - target.len())?;
        let start = usize::try_from(from).ok().filter(|s| s.checked_add(diff).is_some_and(|end| end <= base.len()));
        let start = start.ok_or(ApplyError::OutsideBase(base.len()))?;
        let bytes = stream.get(at..at + diff).ok_or(ApplyError::Truncated)?;
        target.extend(bytes.iter().zip(&base[start..start + diff]).map(|(d, b)| d.wrapping_add(*b)));
        at += diff;
        from += diff as i64;
        let extra = chunk_len(&stream, &mut at, to_size - target.len())?;
        target.extend_from_slice(stream.get(at..at + extra).ok_or(ApplyError::Truncated)?);
        at += extra;
        from = from.checked_add(read_size(&stream, &mut at)?).ok_or(ApplyError::Size)?;
    }
    if at != stream.len() {
        return Err(ApplyError::Trailing);
    }
    Ok(target)
}

/// A chunk's length: not negative, and at most `left` (what the target still lacks).
fn chunk_len(stream: &[u8], at: &mut usize, left: usize) -> Result<usize, ApplyError> {
    let len = read_size(stream, at)?;
    let len = usize::try_from(len).map_err(|_| ApplyError::Size)?;
    if len > left {
        return Err(ApplyError::PastTarget);
    }
    Ok(len)
}

/// detools' size (see `detools::pack_size`), at most 9 bytes (63 bits).
fn read_size(data: &[u8], at: &mut usize) -> Result<i64, ApplyError> {
    let mut byte = *data.get(*at).ok_or(ApplyError::Truncated)?;
    *at += 1;
    let negative = byte & 0x40 != 0;
    let mut value = i64::from(byte & 0x3f);
    let mut shift = 6;
    while byte & 0x80 != 0 {
        if shift > 55 {
            return Err(ApplyError::Size);
        }
        byte = *data.get(*at).ok_or(ApplyError::Truncated)?;
        *at += 1;
        value |= i64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    Ok(if negative { -value } else { value })
}

/// The heatshrink bit stream `bits` decoded, refusing to grow past `max_len`.
fn decode(bits: &[u8], window: u32, lookahead: u32, max_len: usize) -> Result<Vec<u8>, ApplyError> {
    let total = bits.len() * 8;
    let (mut at, mut out) = (0usize, Vec::new());
    let read = |at: &mut usize, count: u32| {
        let mut v = 0usize;
        for _ in 0..count {
            v = v << 1 | usize::from((bits[*at / 8] >> (7 - *at % 8)) & 1);
            *at += 1;
        }
        v
    };
    let backref = (1 + window + lookahead) as usize;
    while total - at >= 9 {
        if read(&mut at, 1) == 1 {
            out.push(read(&mut at, 8) as u8);
        } else {
            if total - at + 1 < backref {
                break; // the final byte's zero padding
            }
            let (distance, length) = (read(&mut at, window) + 1, read(&mut at, lookahead) + 1);
            for _ in 0..length {
                let byte = out.len().checked_sub(distance).map_or(0, |i| out[i]);
                out.push(byte);
            }
        }
        if out.len() > max_len {
            return Err(ApplyError::TooLong(out.len() as u64, max_len));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::patch;

    fn pair() -> (Vec<u8>, Vec<u8>) {
        let base: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut target = base.clone();
        target[100] ^= 0xff;
        target.splice(2000..2000, [7u8; 40]);
        target.truncate(4500);
        (base, target)
    }

    #[test]
    fn a_patch_gives_its_target() {
        let (base, target) = pair();
        assert_eq!(apply(&base, &patch(&base, &target), target.len()), Ok(target.clone()));
        assert_eq!(apply(&base, &patch(&base, &[]), 0), Ok(Vec::new()));
        assert_eq!(apply(&[], &patch(&[], &target), target.len()), Ok(target));
    }

    #[test]
    fn a_damaged_or_foreign_patch_is_an_error() {
        let (base, target) = pair();
        let good = patch(&base, &target);
        let with = |i: usize, byte: u8| {
            let mut p = good.clone();
            p[i] = byte;
            p
        };
        assert_eq!(apply(&base, &good[..63], 10_000), Err(ApplyError::NoHeader));
        assert!(matches!(apply(&base, &with(0, 0), 10_000), Err(ApplyError::Magic(_))));
        assert_eq!(apply(&base, &with(40, 1), 10_000), Err(ApplyError::Reserved));
        assert_eq!(apply(&target, &good, 10_000), Err(ApplyError::OtherBase));
        assert_eq!(apply(&base, &with(64, 0x01), 10_000), Err(ApplyError::Kind(0x01)));
        assert!(matches!(apply(&base, &good, 100), Err(ApplyError::TooLong(_, 100))));
        assert!(apply(&base, &good[..good.len() - 20], 10_000).is_err(), "truncated");
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0xff; 8]);
        assert!(apply(&base, &trailing, 10_000).is_err(), "trailing data");
    }

    #[test]
    fn hostile_sizes_are_refused_before_anything_is_allocated() {
        let base = b"base".to_vec();
        let mut p = patch(&base, b"target");
        p.truncate(HEADER_LEN + 1);
        // A target of 2^62 bytes.
        p.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(apply(&base, &p, 1 << 20), Err(ApplyError::TooLong(..) | ApplyError::Size)));
        // Endless continuation bytes.
        p.truncate(HEADER_LEN + 1);
        p.extend_from_slice(&[0xff; 32]);
        assert_eq!(apply(&base, &p, 1 << 20), Err(ApplyError::Size));
    }
}
