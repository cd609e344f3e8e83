//! Zero-copy downloads: payload bodies leave through `sendfile(2)`.
//!
//! A cached payload is a read-only memory map of an immutable file (`map_payload`),
//! and a download's body is a slice of that map. hyper only ever sees byte slices, so
//! it would `writev` them, copying every body into the socket. Instead, each mapped
//! payload registers its address range and file, and device connections
//! ([`DeviceListener`]) recognise a slice lying inside a registered range: they send
//! it with `sendfile` from the file at the matching offset, which hands page-cache
//! pages to the socket without a copy. Everything else is written as usual, and so
//! is the part of a body beyond `MAX_SENDFILE`, which measured faster copied.
//! With `sendfile: false` in the config ([`DeviceListener::with_sendfile`]) every
//! write is a plain vectored write (bodies still come from the mapping).
//!
//! Soundness rests on two facts: a mapped file is never modified while mapped (the
//! promise each caller of the `unsafe` `map_payload` makes), and a slice handed to
//! a write borrows the mapping, so the mapping and the descriptor registered with it
//! outlive the `sendfile` call. This module and [`crate::memory`] (one call to
//! `malloc_trim`) hold the crate's `unsafe` code; `map_payload` is the one `unsafe fn`
//! others call.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{LazyLock, RwLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Slices shorter than this are copied: a lookup and a second syscall cost more than
/// copying a few pages.
const MIN_SENDFILE: usize = 16 * 1024;

/// Slices longer than this are copied from the mapping too. Measured with
/// `bench/bench.sh` (loopback, 64 connections): sendfile wins for a 1 MiB body
/// (1.00× nginx against 0.92× copying), but copying a 64 MiB body from the
/// already-faulted-in mapping in socket-buffer-sized writes beats splicing it page by
/// page (1.15× against 0.97×). A large body's last 8 MiB still leave by sendfile.
const MAX_SENDFILE: usize = 8 << 20;

/// Socket send buffer of device connections (the kernel caps it at `net.core.wmem_max`):
/// one `sendfile` can then hand over a typical firmware whole.
const SEND_BUFFER: usize = 4 << 20;

/// Bytes device connections have sent with `sendfile`, without a copy. One process-wide
/// counter: every [`crate::metrics::Metrics`] registry exports it.
pub(crate) static SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new("sendfile_bytes_total", "Payload bytes sent with sendfile, without a copy").expect("valid metric")
});

/// Bytes device connections have sent with `sendfile` since start.
pub fn bytes_sent() -> u64 {
    SENT.get()
}

/// Live payload mappings: start address → (length, file descriptor).
static REGIONS: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());

/// A payload file mapped read-only and registered for `sendfile`.
struct MappedPayload {
    map: memmap2::Mmap,
    // Closed only after the region is unregistered (fields drop after `Drop::drop`).
    _file: File,
}

impl MappedPayload {
    fn start(&self) -> usize {
        self.map.as_ptr() as usize
    }
}

impl AsRef<[u8]> for MappedPayload {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for MappedPayload {
    fn drop(&mut self) {
        REGIONS.write().unwrap_or_else(|e| e.into_inner()).remove(&self.start());
    }
}

/// Maps a payload file read-only and returns it as `Bytes` whose slices device
/// connections send with `sendfile`. Empty files cannot be mapped and need not be.
///
/// # Safety
///
/// The file's contents must not change, nor the file shrink, for as long as the
/// returned `Bytes` or any slice of it lives: no process may write to it or truncate
/// it. A mapped file that changes would change bytes the program holds as immutable
/// (undefined behaviour), and one that shrinks would fault on access. Publishing files
/// by writing a temp file and renaming it into place, and removing them only by
/// unlinking, keeps this promise: a mapping and its descriptor keep an unlinked file's
/// data.
pub(crate) unsafe fn map_payload(file: File) -> io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the caller promises that the file does not change while mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let payload = MappedPayload { map, _file: file };
    REGIONS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(payload.start(), (payload.map.len(), payload._file.as_raw_fd()));
    Ok(Bytes::from_owner(payload))
}

/// Raises the soft limit on open files to the hard limit: each payload in use keeps
/// its file open for `sendfile`, next to one descriptor per connection. Returns the
/// limit now in force.
pub(crate) fn raise_open_file_limit() -> io::Result<u64> {
    // SAFETY: plain libc calls on a stack value.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(limit.rlim_cur as u64)
    }
}

/// The file and offset behind `slice`, if it lies inside a registered payload mapping.
fn region_of(slice: &[u8]) -> Option<(RawFd, i64)> {
    let addr = slice.as_ptr() as usize;
    let regions = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    let (&start, &(len, fd)) = regions.range(..=addr).next_back()?;
    (addr + slice.len() <= start + len).then(|| (fd, (addr - start) as i64))
}

/// Accepts device connections: no Nagle delay (responses are written whole), a large
/// send buffer, and payload bodies sent with `sendfile` (unless turned off).
pub struct DeviceListener {
    listener: TcpListener,
    sendfile: bool,
}

impl DeviceListener {
    /// Listens on `addr`, with `sendfile` on.
    pub async fn bind(addr: &str) -> io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(addr).await?, sendfile: true })
    }

    /// Whether connections send payload slices with `sendfile` (`false`: plain writes).
    pub fn with_sendfile(self, sendfile: bool) -> Self {
        Self { sendfile, ..self }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl axum::serve::Listener for DeviceListener {
    type Io = DeviceStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((tcp, addr)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    if let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER) {
                        tracing::debug!(error = %e, "cannot set SO_SNDBUF");
                    }
                    return (DeviceStream { tcp, sendfile: self.sendfile }, addr);
                }
                // Out of descriptors or a connection reset before accept: keep serving
                // the connections we have, as axum's own listener does.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A device connection whose writes send payload slices with `sendfile`.
pub struct DeviceStream {
    tcp: TcpStream,
    sendfile: bool,
}

impl AsyncRead for DeviceStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for DeviceStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.sendfile {
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        }
        let tcp = &self.tcp;
        loop {
            ready!(tcp.poll_write_ready(cx))?;
            // `try_io` clears the readiness on WouldBlock, so the next poll waits.
            match tcp.try_io(Interest::WRITABLE, || write_slices(tcp.as_raw_fd(), bufs)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Writes `bufs` in order to the non-blocking socket `sock`: runs of ordinary slices
/// with one `sendmsg`, payload slices with `sendfile`. Returns the bytes written;
/// WouldBlock (or another error) only when nothing was written.
fn write_slices(sock: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let mut written = 0;
    let mut rest = bufs;
    while !rest.is_empty() {
        let payload = rest.iter().enumerate().find_map(|(i, b)| sendable(b).map(|region| (i, region)));
        let (plain, tail) = rest.split_at(payload.map_or(rest.len(), |(i, _)| i));
        if !plain.is_empty() {
            // Headers followed by a payload: MSG_MORE keeps them for the payload's
            // first segment instead of sending a small packet of their own.
            let want = plain.iter().map(|b| b.len()).sum();
            if let Some(done) = settle(&mut written, send_plain(sock, plain, payload.is_some()), want) {
                return done;
            }
        }
        let Some((_, (fd, offset))) = payload else { break };
        if let Some(done) = settle(&mut written, send_file(sock, fd, offset, tail[0].len()), tail[0].len()) {
            return done;
        }
        rest = &tail[1..];
    }
    Ok(written)
}

/// The file and offset to send `slice` from, when it is a payload slice worth a
/// `sendfile` (see [`MIN_SENDFILE`] and [`MAX_SENDFILE`]).
fn sendable(slice: &[u8]) -> Option<(RawFd, i64)> {
    (MIN_SENDFILE..=MAX_SENDFILE).contains(&slice.len()).then(|| region_of(slice)).flatten()
}

/// Adds one write of `want` bytes to `written`. `Some` ends the call: the write was
/// partial, or it failed (reported only when nothing was written before it).
fn settle(written: &mut usize, result: io::Result<usize>, want: usize) -> Option<io::Result<usize>> {
    match result {
        Ok(n) => {
            *written += n;
            (n < want).then_some(Ok(*written))
        }
        Err(_) if *written > 0 => Some(Ok(*written)),
        Err(e) => Some(Err(e)),
    }
}

fn send_plain(sock: RawFd, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
    let iov = &bufs[..bufs.len().min(libc::UIO_MAXIOV as usize)];
    // SAFETY: msghdr is plain data; an all-zero value is valid and we set the iovec.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix.
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: `msg` points at live slices for the duration of the call.
    let n = unsafe { libc::sendmsg(sock, &msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn send_file(sock: RawFd, file: RawFd, offset: i64, len: usize) -> io::Result<usize> {
    let mut offset = offset as libc::off_t;
    // SAFETY: both descriptors are open for the duration of the call (see module docs).
    let n = unsafe { libc::sendfile(sock, file, &mut offset, len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    SENT.inc_by(n as u64);
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn payload(len: usize) -> (tempfile::NamedTempFile, Bytes, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&data).unwrap();
        // SAFETY: the test's temp file is not written again.
        let bytes = unsafe { map_payload(File::open(file.path()).unwrap()).unwrap() };
        (file, bytes, data)
    }

    #[test]
    fn slices_of_a_mapping_are_found_with_their_offset() {
        let (_file, bytes, _) = payload(100_000);
        let fd = region_of(&bytes).unwrap().0;
        assert_eq!(region_of(&bytes.slice(4096..50_000)), Some((fd, 4096)));
        assert_eq!(region_of(&bytes[99_999..]), Some((fd, 99_999)));
        assert_eq!(region_of(&vec![0u8; 100_000]), None);
        // SAFETY: an empty file is not mapped at all.
        assert_eq!(unsafe { map_payload(tempfile::tempfile().unwrap()) }.unwrap().len(), 0);
    }

    #[test]
    fn dropping_the_last_slice_unregisters_the_mapping() {
        let (_file, bytes, _) = payload(100_000);
        let start = bytes.as_ptr() as usize;
        let tail = bytes.slice(50_000..);
        drop(bytes);
        assert!(REGIONS.read().unwrap().contains_key(&start));
        drop(tail);
        assert!(!REGIONS.read().unwrap().contains_key(&start));
    }

    /// Writes headers, a mapped body and a trailer through a real socket pair the way
    /// hyper does (vectored, advancing over partial writes) to a slow reader, and
    /// returns what arrived, what should have, and the body's length.
    async fn send_through(sendfile: bool) -> (Vec<u8>, Vec<u8>, usize) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // Longer than MAX_SENDFILE: copied until the rest fits, then sendfile.
        let (_file, bytes, data) = payload(MAX_SENDFILE + (3 << 20));
        let listener = DeviceListener::bind("127.0.0.1:0").await.unwrap().with_sendfile(sendfile);
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut received = Vec::new();
            let mut chunk = vec![0u8; 7919];
            loop {
                let n = client.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break received;
                }
                received.extend_from_slice(&chunk[..n]);
                tokio::task::yield_now().await;
            }
        });
        let mut listener = listener;
        let (mut stream, _) = axum::serve::Listener::accept(&mut listener).await;
        let body = bytes.slice(1000..);
        let mut parts = [&b"HTTP/1.1 200 OK\r\n\r\n"[..], &body[..], &b"trailer"[..]];
        let mut expected = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        expected.extend_from_slice(&data[1000..]);
        expected.extend_from_slice(b"trailer");
        while parts.iter().any(|p| !p.is_empty()) {
            let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            let mut n = stream.write_vectored(&slices).await.unwrap();
            for part in parts.iter_mut() {
                let take = n.min(part.len());
                *part = &part[take..];
                n -= take;
            }
        }
        stream.shutdown().await.unwrap();
        drop(stream);
        (reader.await.unwrap(), expected, body.len())
    }

    /// The body leaves partly copied, partly by sendfile, and arrives byte-exact,
    /// including when the receiver is slow and writes are partial.
    #[tokio::test]
    async fn mixed_writes_arrive_in_order() {
        let sent_before = bytes_sent();
        let (received, expected, body_len) = send_through(true).await;
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes differ");
        let zero_copy = bytes_sent() - sent_before;
        assert!(zero_copy >= MIN_SENDFILE as u64, "the body's tail did not go through sendfile");
        assert!(zero_copy < body_len as u64, "the body's head was not copied");
    }

    /// With sendfile off, the same writes arrive byte-exact as plain writes. (That no
    /// byte went through sendfile is checked in `tests/plain_writes.rs`, a process of
    /// its own: the counter is process-wide and unit tests run in parallel.)
    #[tokio::test]
    async fn plain_writes_arrive_in_order() {
        let (received, expected, _) = send_through(false).await;
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes differ");
    }
}
