//! The one way bytes from a registry or an upstream become a cache temp file: streamed
//! through a bounded channel to a blocking thread that unpacks them (or copies them,
//! for a raw blob) through a [`Digesting`] writer into [`Cache::temp_file`], while the
//! async side counts them against the size the descriptor or the index promised.
//!
//! What is checked, whoever calls:
//! - never more bytes than promised (the stream stops at the first byte too many), and
//!   never fewer (a short body is an error, not a short file);
//! - the digest: oci-client checks a registry blob's digest as it streams; for a raw
//!   file the SHA-256 of what was written is compared with the one expected too, so a
//!   source that verifies nothing (plain HTTP) is checked all the same;
//! - what a decoder may produce: at most the cache's whole budget (a decompression
//!   bomb ends in an error, not a full disk).
//!
//! A body that sends nothing for [`RELEASE_SLOT_AFTER`] gives its fetch slot back
//! (see [`super`]) while it waits out the client's read timeout.

use std::io::{self, BufWriter};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::FetchError;
use crate::cache::Cache;
use crate::unpack::{self, ChannelReader, Digesting, Summary};
use updraft_core::config::ArtifactConfig;

/// A fetch whose body sends nothing for this long gives its slot to the next fetch
/// while it waits out the client's read timeout: stalled fetches never hold up others.
pub(crate) const RELEASE_SLOT_AFTER: Duration = Duration::from_secs(5);

/// A fetch's place among the concurrent fetches, given up when its body stalls.
pub(crate) struct Slot(pub(super) Option<OwnedSemaphorePermit>);

/// A verified temp file and the summary of what it holds.
pub(crate) type Written = (tempfile::NamedTempFile, Summary);

/// What the bytes received must be.
pub(crate) struct Expected<'a> {
    /// Bytes the body has, exactly.
    pub(crate) size: u64,
    /// `sha256:<hex>` of the bytes written, for a raw file; `None` when the source
    /// verified the digest itself and the payload is unpacked (a firmware layer).
    pub(crate) digest: Option<&'a str>,
}

/// Streams `body` into a temp file of `cache`, unpacked as `artifact` says, and
/// checks it against `expected`: the file is returned only when every check passed.
pub(crate) async fn temp_file<S>(
    cache: &Cache,
    body: S,
    expected: Expected<'_>,
    artifact: &ArtifactConfig,
    slot: &mut Slot,
) -> Result<Written, FetchError>
where
    S: Stream<Item = io::Result<Bytes>>,
{
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let file = cache.temp_file()?;
    let artifact = artifact.clone();
    let max_unpacked = cache.max_bytes();
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = Digesting::new(BufWriter::with_capacity(256 * 1024, file));
        unpack::unpack(ChannelReader::new(rx), &artifact, max_unpacked, &mut out)?;
        let (summary, buffered) = out.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        Ok::<_, io::Error>((file, summary))
    });
    let fed = feed(body, tx, expected.size, slot).await;
    let written = writer.await?;
    // A stream error explains a writer error ("broken pipe"), so report it first.
    fed?;
    let (file, summary) = written?;
    if let Some(digest) = expected.digest {
        if summary.size != expected.size || format!("sha256:{}", summary.sha256) != digest {
            return Err(FetchError::Blob(format!(
                "{digest} failed verification: got sha256:{} ({} bytes)",
                summary.sha256, summary.size
            )));
        }
    }
    Ok((file, summary))
}

/// Sends the body to the writer; the writer sees an error instead of a clean end
/// whenever the body is short, long, or fails. When the body sends nothing for
/// [`RELEASE_SLOT_AFTER`], the fetch slot is given up.
async fn feed<S>(body: S, tx: mpsc::Sender<io::Result<Bytes>>, expected: u64, slot: &mut Slot) -> Result<(), FetchError>
where
    S: Stream<Item = io::Result<Bytes>>,
{
    let mut body = std::pin::pin!(body);
    let mut received = 0u64;
    loop {
        let next = if slot.0.is_some() {
            match tokio::time::timeout(RELEASE_SLOT_AFTER, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!(received, expected, "blob stalled; its fetch slot goes to the next fetch");
                    slot.0 = None;
                    continue;
                }
            }
        } else {
            body.next().await
        };
        let Some(chunk) = next else { break };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let reason = e.to_string();
                let _ = tx.send(Err(e)).await;
                return Err(FetchError::Blob(reason));
            }
        };
        received += chunk.len() as u64;
        if received > expected {
            let _ = tx.send(Err(io::Error::other("blob longer than promised"))).await;
            return Err(FetchError::Blob(format!("blob longer than the {expected} bytes its descriptor says")));
        }
        if tx.send(Ok(chunk)).await.is_err() {
            // The writer stopped (unpack error); its own error says why.
            return Ok(());
        }
    }
    if received != expected {
        let _ = tx.send(Err(io::Error::other("blob truncated"))).await;
        return Err(FetchError::Blob(format!("blob truncated: {received} of {expected} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use sha2::{Digest as _, Sha256};
    use std::sync::Arc;

    fn body(chunks: &[&'static [u8]]) -> impl Stream<Item = io::Result<Bytes>> {
        futures::stream::iter(chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect::<Vec<_>>())
    }

    async fn write(chunks: &[&'static [u8]], size: u64, digest: &str) -> Result<Summary, FetchError> {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20, Arc::new(Metrics::new())).unwrap();
        let expected = Expected { size, digest: Some(digest) };
        let raw = ArtifactConfig::default();
        temp_file(&cache, body(chunks), expected, &raw, &mut Slot(None)).await.map(|(_, summary)| summary)
    }

    #[tokio::test]
    async fn a_raw_file_is_checked_for_size_and_digest() {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(b"hello world")));
        let summary = write(&[b"hello ", b"world"], 11, &digest).await.unwrap();
        assert_eq!(summary.size, 11);
        let short = write(&[b"hello "], 11, &digest).await.unwrap_err();
        assert!(short.to_string().contains("truncated: 6 of 11"), "{short}");
        let long = write(&[b"hello ", b"world", b"!"], 11, &digest).await.unwrap_err();
        assert!(long.to_string().contains("longer than the 11 bytes"), "{long}");
        let other = write(&[b"hello ", b"World"], 11, &digest).await.unwrap_err();
        assert!(other.to_string().contains("failed verification"), "{other}");
    }
}
