//! Receiving a request body into a file: pieces written on blocking threads while the
//! next arrives, within a limit, fed to the hash, synced behind.

use super::*;

/// Body bytes gathered (as the frames hyper hands over, never copied) before they
/// are written. One such piece is written on a blocking thread while the next one
/// arrives, so receiving and writing overlap.
pub(super) const PIECE: usize = 256 << 10;

/// A long body (or the chunks of one upload) starts a background `fdatasync` each
/// time this much more arrived.
pub(super) const FLUSH_EVERY: u64 = 32 << 20;

/// Writes `body` into `file` from `offset`, at most `limit` bytes (more is an error),
/// feeding `hash`. The frames of about [`PIECE`] bytes are written together on a
/// blocking thread while the next piece arrives (one write in flight at a time);
/// nothing is copied in user space. Returns the bytes written.
pub(super) async fn write_body(
    file: &Arc<File>,
    offset: u64,
    body: Body,
    limit: u64,
    hash: Option<&HashPipe>,
    flushing: &Arc<AtomicBool>,
) -> Result<u64, StoreError> {
    let mut stream = body.into_data_stream();
    let mut piece: Vec<Bytes> = Vec::new();
    let mut gathered = 0usize;
    // Bytes received so far, and bytes whose write has been started.
    let (mut received, mut started) = (0u64, 0u64);
    let mut in_flight: Option<tokio::task::JoinHandle<Result<(), StoreError>>> = None;
    loop {
        let next = stream.next().await;
        let end = next.is_none();
        if let Some(frame) = next {
            let refused = match frame {
                Ok(frame) => {
                    received += frame.len() as u64;
                    gathered += frame.len();
                    if !frame.is_empty() {
                        piece.push(frame);
                    }
                    (received > limit).then_some(StoreError::TooLarge { size: received, limit })
                }
                Err(e) => Some(StoreError::BadRequest(format!("upload body: {e}"))),
            };
            if let Some(refused) = refused {
                // Nothing of this body is written after the answer.
                if let Some(write) = in_flight.take() {
                    let _ = write.await;
                }
                return Err(refused);
            }
        }
        if gathered >= PIECE || (end && gathered > 0) {
            if let Some(write) = in_flight.take() {
                write.await.map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
            }
            let piece = Arc::new(std::mem::take(&mut piece));
            let at = offset + started;
            started += gathered as u64;
            let crossed = at / FLUSH_EVERY != (offset + started) / FLUSH_EVERY;
            gathered = 0;
            let (to_write, writer) = (piece.clone(), file.clone());
            in_flight = Some(tokio::task::spawn_blocking(move || {
                let mut at = at;
                for bytes in to_write.iter() {
                    writer.write_all_at(bytes, at).map_err(StoreError::io)?;
                    at += bytes.len() as u64;
                }
                Ok(())
            }));
            if let Some(pipe) = hash {
                // The hashing thread only ends when the pipe is dropped.
                let _ = pipe.tx.send(piece).await;
            }
            // Large files: start writing back what arrived while the rest comes in, so
            // the sync before the rename has little left to do.
            if crossed {
                flush_behind(file, flushing);
            }
        }
        if end {
            break;
        }
    }
    if let Some(write) = in_flight.take() {
        write.await.map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
    }
    Ok(received)
}

/// Starts an `fdatasync` of `file` in the background unless one is under way.
pub(super) fn flush_behind(file: &Arc<File>, flushing: &Arc<AtomicBool>) {
    if flushing.swap(true, Ordering::AcqRel) {
        return;
    }
    let (file, flushing) = (file.clone(), flushing.clone());
    tokio::task::spawn_blocking(move || {
        let _ = file.sync_data();
        flushing.store(false, Ordering::Release);
    });
}

pub(super) async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}
