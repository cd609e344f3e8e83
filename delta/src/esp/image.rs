//! Just enough of the ESP-IDF app image format (`esp_image_format.h`) to find the
//! SHA-256 appended to an image.

use sha2::{Digest, Sha256};

const IMAGE_MAGIC: u8 = 0xE9;
/// `esp_image_header_t`: 8 common bytes and 16 extended ones.
const HEADER_LEN: usize = 24;
const SEGMENT_HEADER_LEN: usize = 8;
const HASH_APPENDED_AT: usize = 23;
/// The checksum byte ends on a multiple of this.
const CHECKSUM_ALIGN: usize = 16;

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The hash appended to a well-formed app image, when it is the SHA-256 of the image
/// before it; `None` for anything else.
pub fn appended_hash(image: &[u8]) -> Option<[u8; 32]> {
    if image.len() < HEADER_LEN || image[0] != IMAGE_MAGIC || image[HASH_APPENDED_AT] != 1 {
        return None;
    }
    let segments = image[1] as usize;
    let mut at = HEADER_LEN;
    for _ in 0..segments {
        let header = image.get(at..at + SEGMENT_HEADER_LEN)?;
        let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
        at = at.checked_add(SEGMENT_HEADER_LEN)?.checked_add(len)?;
        if at > image.len() {
            return None;
        }
    }
    // Padding, then the checksum byte as the last of a 16-byte block.
    let checksum_at = at + (CHECKSUM_ALIGN - 1) - at % CHECKSUM_ALIGN;
    let hashed_len = checksum_at + 1;
    let hash: [u8; 32] = image.get(hashed_len..hashed_len + 32)?.try_into().ok()?;
    (sha256(&image[..hashed_len]) == hash).then_some(hash)
}
