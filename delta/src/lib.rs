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
