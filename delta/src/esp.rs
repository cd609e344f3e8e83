//! ESP-IDF's `esp_delta_ota` patches, as the component's generator
//! (`tools/esp_delta_ota_patch_gen.py` in idf-extra-components) writes them and its
//! applier on the device reads them:
//!
//! ```text
//! 0   4   magic 0xfccdde10, little-endian
//! 4   32  the base image's digest (image_digest), checked by the device against
//!         esp_partition_get_sha256 of its running partition before patching
//! 36  28  zeros
//! 64  ..  a detools sequential patch, heatshrink window 2^8 lookahead 2^7
//!         (`detools create_patch -c heatshrink`; esp::detools)
//! ```

mod apply;
mod bsdiff;
mod detools;
mod heatshrink;
mod image;

pub use apply::{apply, ApplyError};

/// Length of the `esp_delta_ota` header before the detools patch.
pub const HEADER_LEN: usize = 64;

/// `esp_delta_ota`'s magic number, stored little-endian in the header's first 4 bytes.
pub const MAGIC: u32 = 0xfccd_de10;

/// The patch file that turns `base` into `target`: the 64-byte header (magic, the base's
/// [`image_digest`], reserved zeros), then a detools sequential patch (heatshrink,
/// window 2^8, lookahead 2^7).
///
/// The patch is what `detools apply_patch BASE PATCH[64..] OUT` turns into `target`.
/// Time goes to the compressor's match search, the suffix array of `base` and bsdiff's
/// scan, about linear in practice (0.7 s for 4 MiB in a release build, detools 0.4 s);
/// memory is about 4 bytes per base byte (its suffix array) and 15 per target
/// byte (the uncompressed patch stream and the compressor's per-position tables).
pub fn patch(base: &[u8], target: &[u8]) -> Vec<u8> {
    let body = detools::sequential_patch(base, target);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&image_digest(base));
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(&body);
    out
}

/// The SHA-256 a device running `image` reports (`esp_partition_get_sha256`), which is
/// what `esp_delta_ota` compares with a patch's header before applying it.
///
/// - For a valid ESP-IDF app image with an appended hash, that hash: the image is parsed
///   (magic 0xE9, the 24-byte header whose byte 1 is the segment count and byte 23 the
///   hash-appended flag, each segment's 8-byte header and data, the padding that ends
///   the checksum byte on a 16-byte boundary), and the 32 bytes after the checksum are
///   used only if they are the SHA-256 of everything before them. It is the
///   "Validation hash" `esptool.py image_info` prints, and it ignores whatever follows
///   it in the file (a signature block, padding to the partition size).
/// - Otherwise (raw firmware, an image without an appended hash, a truncated or
///   corrupt image) the SHA-256 of the whole file. For an app image without an appended
///   hash the device hashes the image's own length, which is the file's when the file
///   is just the image.
///
/// The XOR checksum is not checked: the SHA-256 covers it.
pub fn image_digest(image: &[u8]) -> [u8; 32] {
    image::appended_hash(image).unwrap_or_else(|| image::sha256(image))
}
