//! Turning a layer's bytes into the payload, on a blocking thread, streaming.
//!
//! The async side feeds verified chunks through a bounded channel
//! ([`ChannelReader`]); a decoder chosen by [`Unpack`] reads from it and writes into
//! a [`Digesting`] writer that computes size, CRC32 and SHA-256 on the way to the
//! cache's temp file. Memory stays bounded by the channel and decoder buffers.

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
/// earlier, e.g. a file in the middle of a tar archive.
pub fn unpack<R: Read, W: Write>(input: R, artifact: &ArtifactConfig, out: &mut W) -> io::Result<()> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    match artifact.unpack {
        Unpack::Raw => {
            io::copy(&mut input, out)?;
        }
        Unpack::Gzip => {
            io::copy(&mut flate2::bufread::MultiGzDecoder::new(&mut input), out)?;
        }
        Unpack::Zstd => {
            io::copy(&mut zstd::stream::read::Decoder::with_buffer(&mut input)?, out)?;
        }
        Unpack::Tar => {
            let path = artifact.path.as_deref().unwrap_or_default();
            extract_from_tar(&mut input, path, out)?;
        }
    }
    io::copy(&mut input, &mut io::sink())?;
    Ok(())
}

/// Copies the file at `path` out of a tar archive that may be gzip- or
/// zstd-compressed (detected from its first bytes).
fn extract_from_tar<R: BufRead, W: Write>(input: &mut R, path: &str, out: &mut W) -> io::Result<()> {
    let head = input.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = flate2::bufread::MultiGzDecoder::new(input);
        copy_tar_entry(&mut decoder, path, out)?;
        io::copy(&mut decoder, &mut io::sink()).map(drop)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut decoder = zstd::stream::read::Decoder::with_buffer(input)?;
        copy_tar_entry(&mut decoder, path, out)?;
        io::copy(&mut decoder, &mut io::sink()).map(drop)
    } else {
        copy_tar_entry(input, path, out)
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
        unpack(input, &artifact, &mut out)?;
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
}
