//! The SHA-256 of an upload computed while its bytes arrive, beside the writes.

use super::*;

/// SHA-256 computed beside the writes, in order, on a blocking thread of its own, for
/// an upload whose client announced a checksum (which the commit must check): a
/// request waits for its bytes to be written, not hashed; only the commit waits for
/// the hash. At most [`HASH_QUEUE`] pieces wait, so memory stays bounded.
pub(super) struct HashPipe {
    pub(super) tx: tokio::sync::mpsc::Sender<Arc<Vec<Bytes>>>,
    pub(super) done: tokio::task::JoinHandle<Sha256>,
}

/// Pieces (of about [`PIECE`] bytes) queued for hashing per upload.
pub(super) const HASH_QUEUE: usize = 32;

/// Hashing threads alive at once in the process. Each holds a blocking thread until
/// its upload completes or is swept; past this many, an upload is hashed by reading
/// the file at commit instead, so unfinished uploads never take tokio's blocking pool
/// (which every write, download and listing needs).
pub(super) const MAX_HASH_PIPES: usize = 32;
pub(super) static HASH_PIPES: Semaphore = Semaphore::const_new(MAX_HASH_PIPES);

impl HashPipe {
    /// A hashing thread, or `None` when [`MAX_HASH_PIPES`] are alive.
    pub(super) fn start() -> Option<Self> {
        let alive = HASH_PIPES.try_acquire().ok()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Vec<Bytes>>>(HASH_QUEUE);
        let done = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(piece) = rx.blocking_recv() {
                for bytes in piece.iter() {
                    hasher.update(bytes);
                }
            }
            drop(alive);
            hasher
        });
        Some(Self { tx, done })
    }

    /// The hex digest of everything fed.
    pub(super) async fn finish(self) -> Option<String> {
        drop(self.tx);
        self.done.await.ok().map(|h| hex::encode(h.finalize()))
    }
}
