//! updraft-delta: the delta patches Updraft builds, as pure functions of two byte
//! strings. No I/O beyond the writer handed in, no async, no knowledge of registries.
//!
//! - [`esp`]: ESP-IDF's `esp_delta_ota` format (a 64-byte header naming the base image's
//!   digest, then a detools sequential patch compressed with heatshrink), for firmware;
//! - [`vcdiff`]: VCDIFF (RFC 3284), which `xdelta3 -d` and LXD/Incus apply, for
//!   simplestreams images.

#![deny(unsafe_code)]

pub mod esp;
pub mod vcdiff;

/// Length of the common prefix of `a` and `b`, compared a block at a time (a slice
/// comparison is a `memcmp`, fast even in an unoptimised build).
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 32;
    let n = a.len().min(b.len());
    let mut k = 0;
    while k + BLOCK <= n && a[k..k + BLOCK] == b[k..k + BLOCK] {
        k += BLOCK;
    }
    while k < n && a[k] == b[k] {
        k += 1;
    }
    k
}
