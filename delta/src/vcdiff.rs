//! VCDIFF (RFC 3284) encoding. (Stub: being written.)

use std::io::{self, Write};

/// Writes to `out` the VCDIFF delta that turns `source` into `target`.
pub fn encode(source: &[u8], target: &[u8], out: &mut impl Write) -> io::Result<()> {
    let _ = (source, target, out);
    unimplemented!("vcdiff::encode is being written")
}
