//! Giving freed heap memory back to the kernel after a large, rare piece of work.
//!
//! glibc's allocator keeps freed memory in its arenas for reuse, one arena per thread
//! that allocated, up to eight per core. After a stream's index is rebuilt (the
//! upstream's document parsed, `images.json` rendered) and its newest files fetched on
//! the blocking pool's threads, that work's buffers stay resident although nothing
//! uses them. Measured with `streams-bench.sh` (10,000 versions in 500 products, a
//! release build): RssAnon 75.7 MB with the index loaded; `malloc_trim(0)` called from
//! a debugger at that moment brought it to 32.9 MB. A fixed `M_MMAP_THRESHOLD` would
//! keep such buffers out of the arenas too, but it made 1 MiB chunked store uploads
//! slower (every chunk buffer became an `mmap`/`munmap` pair), so the trim runs only
//! after the work that leaves garbage behind, never on a request's path.
//!
//! This module and [`crate::sendfile`] are the crate's only `unsafe` code.

/// Returns the free memory of every arena to the kernel, on a blocking thread (a trim
/// walks and locks each arena in turn). A no-op where the allocator is not glibc's.
pub(crate) fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        // SAFETY: `malloc_trim` takes no pointer and only changes what the allocator
        // holds in reserve; every live allocation stays where it is.
        unsafe { libc::malloc_trim(0) };
    });
}
