//! Files the gateway follows while it runs: the config file, the TLS certificate and
//! key, key files. One rule for all of them.
//!
//! They are polled, not watched: kubelet updates a mounted ConfigMap or Secret by
//! swapping a symlink, which inotify on the file misses. A file's [`Stamp`] (device,
//! inode, size, modification time) says, without reading it, whether it may have
//! changed; only then is it read again. [`ConfigFile`] also compares the content, so a
//! file rewritten with the same bytes changes nothing. [`poll_every`] is the one
//! polling loop.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How often followed files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    /// The stamp of the file at `path` (symlinks followed); `None` when it cannot be
    /// stat'ed (a missing file is a state like any other: its return is a change).
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// A set of files and their stamps when last asked.
#[derive(Debug)]
pub struct Files {
    paths: Vec<PathBuf>,
    seen: Vec<Option<Stamp>>,
}

impl Files {
    /// Follows `paths`, as they are now.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let seen = paths.iter().map(|p| Stamp::of(p)).collect();
        Self { paths, seen }
    }

    /// Whether any of the files changed since the last call (or since [`Files::new`]).
    pub fn changed(&mut self) -> bool {
        let now: Vec<_> = self.paths.iter().map(|p| Stamp::of(p)).collect();
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

/// A config file: its new content, once per change of content.
#[derive(Debug)]
pub struct ConfigFile {
    files: Files,
    /// SHA-256 of the content last handed out (or present at start).
    seen: [u8; 32],
}

impl ConfigFile {
    /// Follows `path`, whose current content counts as seen.
    pub fn new(path: PathBuf) -> Self {
        let seen = std::fs::read(&path).map(|b| Sha256::digest(&b).into()).unwrap_or_default();
        Self { files: Files::new(vec![path]), seen }
    }

    pub fn path(&self) -> &Path {
        &self.files.paths()[0]
    }

    /// The file's content when it changed since last asked; `None` when it did not (or
    /// was rewritten with the same bytes). An unreadable file is logged and counts as
    /// no change: whoever reads the config keeps the last one.
    pub fn changed(&mut self) -> Option<Vec<u8>> {
        if !self.files.changed() {
            return None;
        }
        let content = match std::fs::read(self.path()) {
            Ok(content) => content,
            Err(e) => {
                tracing::warn!(path = %self.path().display(), error = %e, "config file unreadable; keeping the last good config");
                return None;
            }
        };
        let digest: [u8; 32] = Sha256::digest(&content).into();
        if digest == self.seen {
            return None;
        }
        self.seen = digest;
        Some(content)
    }
}

/// Calls `poll` every `interval` (a late tick is delayed, not doubled up) for as long as
/// it returns `true`.
pub async fn poll_every(interval: Duration, mut poll: impl FnMut() -> bool) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !poll() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_told_once_and_a_missing_file_is_a_state() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "one").unwrap();
        let mut files = Files::new(vec![a.clone(), b.clone()]);
        assert!(!files.changed());
        std::fs::write(&b, "appears").unwrap();
        assert!(files.changed());
        assert!(!files.changed(), "told once");
        // Replaced by rename (as kubelet swaps a Secret): a new inode, same size.
        std::fs::write(dir.path().join("next"), "two").unwrap();
        std::fs::rename(dir.path().join("next"), &a).unwrap();
        assert!(files.changed());
        std::fs::remove_file(&b).unwrap();
        assert!(files.changed());
        assert!(!files.changed());
    }

    #[test]
    fn a_config_file_hands_out_new_content_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let mut file = ConfigFile::new(path.clone());
        assert_eq!(file.changed(), None, "present at start: seen");
        let rewrite = |content: &str| {
            std::fs::write(dir.path().join("next"), content).unwrap();
            std::fs::rename(dir.path().join("next"), &path).unwrap();
        };
        rewrite("a: 1\n");
        assert_eq!(file.changed(), None, "same bytes, new inode");
        rewrite("a: 2\n");
        assert_eq!(file.changed().as_deref(), Some(&b"a: 2\n"[..]));
        assert_eq!(file.changed(), None);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.changed(), None, "gone: nothing to apply");
        rewrite("a: 2\n");
        assert_eq!(file.changed(), None, "back with the content last applied");
    }

    #[tokio::test]
    async fn the_loop_polls_until_told_to_stop() {
        let mut calls = 0;
        poll_every(Duration::from_millis(1), || {
            calls += 1;
            calls < 3
        })
        .await;
        assert_eq!(calls, 3);
    }
}
