//! Turning a layer's bytes into the payload, on a blocking thread, streaming.
//!
//! The async side feeds verified chunks through a bounded channel
//! ([`ChannelReader`]); a decoder chosen by [`Unpack`] reads from it and writes into
//! a [`Digesting`] writer that computes size, CRC32 and SHA-256 on the way to the
//! cache's temp file. Memory stays bounded by the channel and decoder buffers, and
//! what a decoder produces is capped ([`unpack`]'s `max_unpacked`), so a decompression
//! bomb ends in an error, not a full disk. Each decoder's own memory is bounded too:
//! gzip holds a 32 KiB window; zstd's window is at most 2^[`ZSTD_WINDOW_LOG_MAX`] (a
//! frame asking for more is refused before anything is allocated); tar holds a header.

use std::io::{self, BufRead, BufReader, Read, Write};

use bytes::{Buf, Bytes};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use updraft_core::config::{ArtifactConfig, Unpack};

/// Size, CRC32 (IEEE) and SHA-256 of a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub size: u64,
    pub crc32: u32,
    /// Lowercase hex.
    pub sha256: String,
}

/// A writer that passes bytes through while summarizing them.
pub struct Digesting<W> {
    inner: W,
    sha: Sha256,
    crc: crc32fast::Hasher,
    size: u64,
}

impl<W: Write> Digesting<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, sha: Sha256::new(), crc: crc32fast::Hasher::new(), size: 0 }
    }

    /// The summary and the inner writer, flushed.
    pub fn finish(mut self) -> io::Result<(Summary, W)> {
        self.inner.flush()?;
        let summary = Summary { size: self.size, crc32: self.crc.finalize(), sha256: hex::encode(self.sha.finalize()) };
        Ok((summary, self.inner))
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A blocking [`Read`] over chunks sent by an async task. An `Err` chunk (a digest
/// mismatch, a truncated body) surfaces as a read error, so nothing downstream can
/// mistake a bad stream for a complete one.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self { rx, chunk: Bytes::new() }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

/// Unpacks `input` as the artifact says into `out`, then reads `input` to its end so
/// the whole layer is consumed (and thereby verified) even when the payload ended
/// earlier, e.g. a file in the middle of a tar archive. No decoder may produce more
/// than `max_unpacked` bytes (for a tar archive: the whole decompressed archive):
/// beyond that it fails with an [`io::ErrorKind::FileTooLarge`] error that says so.
pub fn unpack<R: Read, W: Write>(
    input: R,
    artifact: &ArtifactConfig,
    max_unpacked: u64,
    out: &mut W,
) -> io::Result<()> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    match artifact.unpack {
        Unpack::Raw => {
            io::copy(&mut Capped::new(&mut input, max_unpacked), out)?;
        }
        Unpack::Gzip => {
            let decoder = flate2::bufread::MultiGzDecoder::new(&mut input);
            io::copy(&mut Capped::new(decoder, max_unpacked), out)?;
        }
        Unpack::Zstd => {
            io::copy(&mut Capped::new(zstd_decoder(&mut input)?, max_unpacked), out)?;
        }
        Unpack::Tar => {
            let path = artifact.path.as_deref().unwrap_or_default();
            extract_from_tar(&mut input, path, max_unpacked, out)?;
        }
    }
    io::copy(&mut input, &mut io::sink())?;
    Ok(())
}

/// The largest zstd window (log2) a firmware frame may ask for: 64 MiB. Every level up
/// to 21 stays within it, and so does level 22 (`--ultra -22`, 128 MiB) for payloads of
/// up to 64 MiB, since encoders shrink the window to the content; zstd's own default
/// limit is 2^27.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 26;

/// A zstd decoder whose window is at most 2^[`ZSTD_WINDOW_LOG_MAX`] bytes.
fn zstd_decoder<'a, R: BufRead>(input: R) -> io::Result<zstd::stream::read::Decoder<'a, R>> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(input)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    Ok(decoder)
}

/// A reader that fails once more than `max` bytes were read through it.
struct Capped<R> {
    inner: R,
    max: u64,
    read: u64,
}

impl<R: Read> Capped<R> {
    fn new(inner: R, max: u64) -> Self {
        Self { inner, max, read: 0 }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte more than allowed tells "exactly at the cap" from "beyond it".
        let room = self.max.saturating_sub(self.read).saturating_add(1);
        let len = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        self.read += n as u64;
        if self.read > self.max {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("unpacked size exceeds {} bytes (cache.maxBytes): refused as a decompression bomb", self.max),
            ));
        }
        Ok(n)
    }
}

/// Copies the file at `path` out of a tar archive that may be gzip- or
/// zstd-compressed (detected from its first bytes).
fn extract_from_tar<R: BufRead, W: Write>(input: &mut R, path: &str, max: u64, out: &mut W) -> io::Result<()> {
    let head = input.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = Capped::new(flate2::bufread::MultiGzDecoder::new(input), max);
        copy_tar_entry(&mut decoder, path, out)?;
        io::copy(&mut decoder, &mut io::sink()).map(drop)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut decoder = Capped::new(zstd_decoder(input)?, max);
        copy_tar_entry(&mut decoder, path, out)?;
        io::copy(&mut decoder, &mut io::sink()).map(drop)
    } else {
        copy_tar_entry(Capped::new(input, max), path, out)
    }
}

fn copy_tar_entry<R: Read, W: Write>(input: R, path: &str, out: &mut W) -> io::Result<()> {
    let wanted = normalize_tar_path(path);
    let mut archive = tar::Archive::new(input);
    let mut found = false;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let is_wanted = !found
            && entry.header().entry_type().is_file()
            && normalize_tar_path(&entry.path()?.to_string_lossy()) == wanted;
        if is_wanted {
            io::copy(&mut entry, out)?;
            found = true;
        }
        // Other entries are skipped by the iterator, which reads them through.
    }
    if found {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {path:?} in the tar archive")))
    }
}

/// `./fw/app.bin` and `/fw/app.bin` → `fw/app.bin`.
fn normalize_tar_path(path: &str) -> &str {
    let mut p = path;
    loop {
        let next = p.trim_start_matches('/').trim_start_matches("./");
        if next == p {
            return p;
        }
        p = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &[u8] = b"firmware bytes \x00\x01\x02 and more";

    fn run(input: &[u8], unpack_as: Unpack, path: Option<&str>) -> io::Result<Vec<u8>> {
        let artifact = ArtifactConfig { unpack: unpack_as, path: path.map(Into::into), ..Default::default() };
        let mut out = Vec::new();
        unpack(input, &artifact, u64::MAX, &mut out)?;
        Ok(out)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn raw_gzip_zstd() {
        assert_eq!(run(DATA, Unpack::Raw, None).unwrap(), DATA);
        assert_eq!(run(&gzip(DATA), Unpack::Gzip, None).unwrap(), DATA);
        assert_eq!(run(&zstd::encode_all(DATA, 3).unwrap(), Unpack::Zstd, None).unwrap(), DATA);
        assert!(run(DATA, Unpack::Gzip, None).is_err());
    }

    #[test]
    fn tar_plain_and_compressed() {
        let archive = tar_with(&[("README", b"hi"), ("./fw/app.bin", DATA), ("z", b"z")]);
        assert_eq!(run(&archive, Unpack::Tar, Some("fw/app.bin")).unwrap(), DATA);
        assert_eq!(run(&gzip(&archive), Unpack::Tar, Some("/fw/app.bin")).unwrap(), DATA);
        let zst = zstd::encode_all(&archive[..], 3).unwrap();
        assert_eq!(run(&zst, Unpack::Tar, Some("./fw/app.bin")).unwrap(), DATA);
        let missing = run(&archive, Unpack::Tar, Some("nope")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn digesting_matches_independent_hashes() {
        let mut w = Digesting::new(Vec::new());
        w.write_all(DATA).unwrap();
        let (summary, inner) = w.finish().unwrap();
        assert_eq!(inner, DATA);
        assert_eq!(summary.size, DATA.len() as u64);
        assert_eq!(summary.crc32, crc32fast::hash(DATA));
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(DATA)));
    }

    #[test]
    fn channel_reader_surfaces_errors() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"ab"))).unwrap();
        tx.try_send(Err(io::Error::other("digest mismatch"))).unwrap();
        let mut out = Vec::new();
        let err = ChannelReader::new(rx).read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("digest mismatch"));
        assert_eq!(out, b"ab");
    }

    fn capped(input: &[u8], unpack_as: Unpack, path: Option<&str>, max: u64) -> (io::Result<()>, Vec<u8>) {
        let artifact = ArtifactConfig { unpack: unpack_as, path: path.map(Into::into), ..Default::default() };
        let mut out = Vec::new();
        let result = unpack(input, &artifact, max, &mut out);
        (result, out)
    }

    #[test]
    fn decompression_bombs_stop_at_the_cap() {
        let zeros = vec![0u8; 8 << 20];
        let cap = 1 << 20;
        let gz = gzip(&zeros);
        let zst = zstd::encode_all(&zeros[..], 19).unwrap();
        let tar = tar_with(&[("fw.bin", &zeros)]);
        let cases = [
            ("gzip", gz.clone(), Unpack::Gzip, None),
            ("zstd", zst, Unpack::Zstd, None),
            ("tar.gz", gzip(&tar), Unpack::Tar, Some("fw.bin")),
            ("tar.gz, another file wanted", gzip(&tar), Unpack::Tar, Some("other")),
            ("tar", tar, Unpack::Tar, Some("fw.bin")),
            ("raw", zeros.clone(), Unpack::Raw, None),
        ];
        for (name, input, unpack_as, path) in cases {
            let (result, out) = capped(&input, unpack_as, path, cap);
            let err = result.expect_err(name);
            assert_eq!(err.kind(), io::ErrorKind::FileTooLarge, "{name}: {err}");
            assert!(err.to_string().contains("decompression bomb"), "{name}: {err}");
            assert!(out.len() as u64 <= cap, "{name}: wrote {} bytes", out.len());
        }
        let (ok, out) = capped(&gz, Unpack::Gzip, None, zeros.len() as u64);
        ok.expect("exactly at the cap passes");
        assert_eq!(out.len(), zeros.len());
    }

    #[test]
    fn zstd_frames_asking_for_a_window_over_the_limit_are_refused() {
        let data = vec![7u8; 1 << 20];
        let framed = |window_log: u32| {
            let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
            e.window_log(window_log).unwrap();
            e.long_distance_matching(true).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        // Written by a streaming encoder (no content size): the header keeps the window.
        assert_eq!(run(&framed(ZSTD_WINDOW_LOG_MAX), Unpack::Zstd, None).unwrap(), data);
        let err = run(&framed(ZSTD_WINDOW_LOG_MAX + 1), Unpack::Zstd, None).unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
        let archive = tar_with(&[("fw.bin", &data)]);
        let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        e.window_log(27).unwrap();
        e.long_distance_matching(true).unwrap();
        e.write_all(&archive).unwrap();
        let err = run(&e.finish().unwrap(), Unpack::Tar, Some("fw.bin")).unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }

    use proptest::prelude::*;

    fn mode() -> impl Strategy<Value = Unpack> {
        prop::sample::select(vec![Unpack::Raw, Unpack::Gzip, Unpack::Zstd, Unpack::Tar])
    }

    proptest! {
        #[test]
        fn any_bytes_unpack_or_fail_cleanly(input in prop::collection::vec(any::<u8>(), 0..4096), unpack_as in mode(), cap in 0u64..8192) {
            let (result, out) = capped(&input, unpack_as, Some("fw.bin"), cap);
            prop_assert!(out.len() as u64 <= cap);
            if unpack_as == Unpack::Raw && input.len() as u64 <= cap {
                prop_assert!(result.is_ok() && out == input);
            }
        }

        #[test]
        fn round_trips(data in prop::collection::vec(any::<u8>(), 0..20_000), level in 1i32..5) {
            prop_assert_eq!(run(&gzip(&data), Unpack::Gzip, None).unwrap(), data.clone());
            prop_assert_eq!(run(&zstd::encode_all(&data[..], level).unwrap(), Unpack::Zstd, None).unwrap(), data.clone());
            let archive = tar_with(&[("a", b"x"), ("fw/app.bin", &data)]);
            prop_assert_eq!(run(&zstd::encode_all(&archive[..], level).unwrap(), Unpack::Tar, Some("./fw/app.bin")).unwrap(), data);
        }

        #[test]
        fn corrupted_archives_fail_cleanly(data in prop::collection::vec(any::<u8>(), 1..5000),
                                           flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                                           cut in any::<prop::sample::Index>(), format in 0u8..4) {
            let archive = tar_with(&[("fw.bin", &data)]);
            let (mut input, unpack_as) = match format {
                0 => (gzip(&data), Unpack::Gzip),
                1 => (zstd::encode_all(&data[..], 3).unwrap(), Unpack::Zstd),
                2 => (gzip(&archive), Unpack::Tar),
                _ => (archive, Unpack::Tar),
            };
            for (at, byte) in flips {
                let i = at.index(input.len());
                input[i] ^= byte;
            }
            input.truncate(cut.index(input.len() + 1));
            let cap = 2 * data.len() as u64 + 1024;
            let (_, out) = capped(&input, unpack_as, Some("fw.bin"), cap);
            prop_assert!(out.len() as u64 <= cap);
        }
    }
}
