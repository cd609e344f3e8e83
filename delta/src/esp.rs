//! ESP-IDF's `esp_delta_ota` patches. (Stub: being written.)

/// Length of the `esp_delta_ota` header before the detools patch.
pub const HEADER_LEN: usize = 64;

/// The patch file that turns `base` into `target`: the 64-byte header (magic, the base's
/// [`image_digest`], reserved zeros), then a detools sequential patch (heatshrink,
/// window 2^8, lookahead 2^7).
pub fn patch(base: &[u8], target: &[u8]) -> Vec<u8> {
    let _ = (base, target);
    unimplemented!("esp::patch is being written")
}

/// The SHA-256 a device running `image` reports (`esp_partition_get_sha256`): the hash
/// appended to a valid ESP-IDF app image, else the SHA-256 of the whole file.
pub fn image_digest(image: &[u8]) -> [u8; 32] {
    let _ = image;
    unimplemented!("esp::image_digest is being written")
}
