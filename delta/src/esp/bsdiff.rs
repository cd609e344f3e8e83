//! Colin Percival's bsdiff match search (the algorithm of `bsdiff.c` 4.3, which detools'
//! own `bsdiff.c` follows), over a suffix array of the base.
//!
//! The target is cut into chunks. Each chunk is an approximate match (a stretch of the
//! target that agrees with a stretch of the base in more than half of its bytes: it is
//! sent as a byte-wise difference, mostly zeros), then bytes the base does not have
//! (sent verbatim), then a jump of the read position in the base to the next match.

use std::cmp::Ordering;

use crate::common_prefix;

/// One step of the patch: `diff.len()` bytes of the target matched against the base from
/// `base_pos`, then `extra` copied verbatim, then the base read position (which is at
/// `base_pos + diff.len()`) moved by `adjustment`.
pub struct Chunk<'a> {
    pub base_pos: usize,
    pub diff: &'a [u8],
    pub extra: &'a [u8],
    pub adjustment: i64,
}

/// Calls `emit` with the chunks that turn `base` into `target`, in order; together their
/// `diff` and `extra` cover the target exactly.
pub fn diff<'t>(base: &[u8], target: &'t [u8], mut emit: impl FnMut(Chunk<'t>)) {
    let index = SuffixIndex::new(base);
    let (old, new) = (base, target);
    let (old_len, new_len) = (old.len(), new.len());

    let mut scan = 0usize;
    let mut len = 0usize;
    let mut pos = 0usize;
    let mut last_scan = 0usize;
    let mut last_pos = 0usize;
    // `pos - scan` of the last match: where the current alignment reads the base.
    let mut last_offset = 0isize;
    let old_at = |i: isize| -> Option<u8> {
        if i >= 0 && (i as usize) < old_len {
            Some(old[i as usize])
        } else {
            None
        }
    };

    while scan < new_len {
        // Find the next exact match that the current alignment does not already explain
        // (`old_score` counts the bytes the last alignment gets right over the same span).
        let mut old_score = 0usize;
        scan += len;
        let mut scsc = scan;
        while scan < new_len {
            (len, pos) = index.longest_match(&new[scan..]);
            while scsc < scan + len {
                if old_at(scsc as isize + last_offset) == Some(new[scsc]) {
                    old_score += 1;
                }
                scsc += 1;
            }
            if (len == old_score && len != 0) || len > old_score + 8 {
                break;
            }
            if old_at(scan as isize + last_offset) == Some(new[scan]) {
                old_score = old_score.saturating_sub(1);
            }
            scan += 1;
        }

        if len == old_score && scan != new_len {
            continue;
        }

        // Extend the previous match forwards, as far as it stays better than half right.
        let (mut s, mut best, mut len_f) = (0isize, 0isize, 0usize);
        let mut i = 0usize;
        while last_scan + i < scan && last_pos + i < old_len {
            if old[last_pos + i] == new[last_scan + i] {
                s += 1;
            }
            i += 1;
            if s * 2 - i as isize > best * 2 - len_f as isize {
                best = s;
                len_f = i;
            }
        }

        // Extend the new match backwards, the same way.
        let mut len_b = 0usize;
        if scan < new_len {
            let (mut s, mut best) = (0isize, 0isize);
            let mut i = 1usize;
            while scan >= last_scan + i && pos >= i {
                if old[pos - i] == new[scan - i] {
                    s += 1;
                }
                if s * 2 - i as isize > best * 2 - len_b as isize {
                    best = s;
                    len_b = i;
                }
                i += 1;
            }
        }

        // Where the two extensions overlap, split them at the best point.
        if last_scan + len_f > scan - len_b {
            let overlap = (last_scan + len_f) - (scan - len_b);
            let (mut s, mut best, mut len_s) = (0isize, 0isize, 0usize);
            for i in 0..overlap {
                if new[last_scan + len_f - overlap + i] == old[last_pos + len_f - overlap + i] {
                    s += 1;
                }
                if new[scan - len_b + i] == old[pos - len_b + i] {
                    s -= 1;
                }
                if s > best {
                    best = s;
                    len_s = i + 1;
                }
            }
            len_f = len_f + len_s - overlap;
            len_b -= len_s;
        }

        let extra_end = scan - len_b;
        emit(Chunk {
            base_pos: last_pos,
            diff: &new[last_scan..last_scan + len_f],
            extra: &new[last_scan + len_f..extra_end],
            adjustment: (pos - len_b) as i64 - (last_pos + len_f) as i64,
        });

        last_scan = extra_end;
        last_pos = pos - len_b;
        last_offset = pos as isize - scan as isize;
    }
}

/// The base with its suffix array, for longest-match queries.
struct SuffixIndex<'a> {
    text: &'a [u8],
    /// Start of each suffix in sorted order, the empty suffix first.
    sa: Vec<i32>,
}

impl<'a> SuffixIndex<'a> {
    fn new(text: &'a [u8]) -> Self {
        // divsufsort indexes with i32: a base of 2 GiB or more is not firmware.
        assert!(text.len() < i32::MAX as usize, "base too large for bsdiff");
        let mut sa = vec![0i32; text.len() + 1];
        sa[0] = text.len() as i32;
        divsufsort::sort_in_place(text, &mut sa[1..]);
        SuffixIndex { text, sa }
    }

    /// The longest prefix of `needle` found in the text: (length, position).
    fn longest_match(&self, needle: &[u8]) -> (usize, usize) {
        let suffix = |i: usize| &self.text[self.sa[i] as usize..];
        let (mut lo, mut hi) = (0usize, self.sa.len() - 1);
        while hi - lo >= 2 {
            let mid = lo + (hi - lo) / 2;
            let candidate = suffix(mid);
            let n = candidate.len().min(needle.len());
            if candidate[..n].cmp(&needle[..n]) == Ordering::Less {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let at_lo = common_prefix(suffix(lo), needle);
        let at_hi = common_prefix(suffix(hi), needle);
        if at_lo > at_hi {
            (at_lo, self.sa[lo] as usize)
        } else {
            (at_hi, self.sa[hi] as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies chunks the way detools' applier does.
    fn apply(base: &[u8], target: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut read = 0i64;
        diff(base, target, |c| {
            assert_eq!(c.base_pos as i64, read);
            for (i, t) in c.diff.iter().enumerate() {
                let d = t.wrapping_sub(base[c.base_pos + i]);
                out.push(base[read as usize + i].wrapping_add(d));
            }
            read += c.diff.len() as i64 + c.adjustment;
            out.extend_from_slice(c.extra);
        });
        out
    }

    #[test]
    fn chunks_cover_the_target() {
        let base: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut target = base.clone();
        target[100] ^= 1;
        target.splice(2000..2000, b"inserted".iter().copied());
        target.drain(4000..4100);
        for (b, t) in [
            (&base[..], &target[..]),
            (&[][..], &target[..]),
            (&base[..], &base[..]),
            (&base[..], &[][..]),
            (b"a", b"aaaaaaaa"),
        ] {
            assert_eq!(apply(b, t), t);
        }
    }
}
