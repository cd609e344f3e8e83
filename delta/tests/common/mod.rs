//! What the reference-tool tests share: finding a tool on PATH, and deterministic bytes.
#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;

/// `name` on PATH, or a failure saying how to install it (`cluster.sh tools` installs
/// detools, esptool, xdelta3 and mksquashfs; `cluster.sh env` puts them on PATH).
pub fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file()));
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not on PATH: run `bash e2e/scripts/cluster.sh tools`, then \
             `eval \"$(bash e2e/scripts/cluster.sh env)\"`"
        )
    })
}

/// Deterministic pseudo-random bytes (xorshift64*), no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }

    /// Compressible text: words from a small vocabulary.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "package", "version", "depends", "libc6", "squashfs", "image", "kernel", "the", "of", "and", "/usr/lib",
            "x86_64", "amd64", "0.1.2", "config", "\n",
        ];
        let mut out = Vec::with_capacity(n + 16);
        while out.len() < n {
            out.extend_from_slice(WORDS[self.below(WORDS.len())].as_bytes());
            out.push(b' ');
        }
        out.truncate(n);
        out
    }
}
