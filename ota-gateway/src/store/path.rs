//! Store paths: what a client may name, and where that lands on disk.
//!
//! A [`StorePath`] is a relative path of plain components (no `.`, `..`, empty or
//! reserved component, no backslash, NUL or control character, nothing that a second
//! percent-decoding would turn into a separator or a dot segment). Resolving it checks
//! that the deepest existing ancestor, symlinks followed, is still inside the store's
//! root, so a symlink planted in the store cannot lead a write or a read outside it.

use std::io;
use std::path::{Path, PathBuf};

use super::error::StoreError;

/// The store's own directory inside the served one: where earlier versions kept their
/// state, and where it stays when no sibling is on the same filesystem (`layout`).
/// Never addressable.
pub const RESERVED: &str = ".updraft";

/// The longest store path accepted: the kernel's `PATH_MAX` less its NUL. (The store's
/// root adds to it: what still exceeds the kernel's limit fails with `ENAMETOOLONG`,
/// a client error too, see `error.rs`.)
pub const MAX_PATH: usize = 4095;

/// A validated relative path inside a store, components joined by `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StorePath(String);

impl StorePath {
    /// Validates a path as captured from the URL (already percent-decoded once).
    /// `allow_root` admits the empty path (the store's root, for listings).
    pub fn parse(raw: &str, allow_root: bool) -> Result<Self, StoreError> {
        let bad = |why: &str| Err(StoreError::BadPath(format!("{raw:?}: {why}")));
        if raw.starts_with('/') || raw.starts_with('\\') {
            return bad("absolute paths are not allowed");
        }
        if raw.len() > MAX_PATH {
            return bad("longer than PATH_MAX");
        }
        let trimmed = raw.strip_suffix('/').unwrap_or(raw);
        if trimmed.is_empty() {
            return if allow_root { Ok(Self(String::new())) } else { bad("names no file") };
        }
        for part in trimmed.split('/') {
            if part.is_empty() {
                return bad("empty path component");
            }
            if part == "." || part == ".." {
                return bad("dot segments are not allowed");
            }
            if part.chars().any(|c| c == '\\' || c.is_control()) {
                return bad("backslashes and control characters are not allowed");
            }
            let decoded = percent_encoding::percent_decode_str(part).decode_utf8_lossy();
            if decoded != part
                && (decoded == "." || decoded == ".." || decoded.contains(['/', '\\']) || decoded.contains('\0'))
            {
                return bad("encoded separators or dot segments are not allowed");
            }
            if part.len() > 255 {
                return bad("a path component is longer than 255 bytes");
            }
        }
        if trimmed.split('/').next() == Some(RESERVED) {
            return bad("the store's own directory is not addressable");
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component (the file name), or "" for the root.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The path under `root` (no checks: see [`resolve`]).
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.0.is_empty() {
            root.to_owned()
        } else {
            root.join(&self.0)
        }
    }
}

/// `path` under `root` (the canonical store root), after checking that its deepest
/// existing ancestor (the path itself when it exists), symlinks followed, lies inside
/// `root`.
pub fn resolve(root: &Path, path: &StorePath) -> Result<PathBuf, StoreError> {
    let full = path.under(root);
    let mut probe = full.as_path();
    loop {
        match probe.canonicalize() {
            Ok(real) if real.starts_with(root) => return Ok(full),
            Ok(_) => return Err(StoreError::BadPath(format!("{:?}: leads outside the store", path.as_str()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A component that is a file (`a/x` with `a` a file): no such file, a client error.
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(StoreError::BadPath(format!("{:?}: a parent of it is a file", path.as_str())))
            }
            Err(e) => return Err(StoreError::Io(e)),
        }
        // A dangling symlink is "not found" for canonicalize, but must not be written through.
        if probe.symlink_metadata().is_ok() {
            return Err(StoreError::BadPath(format!("{:?}: leads through a dangling link", path.as_str())));
        }
        probe = match probe.parent() {
            Some(parent) if parent.starts_with(root) => parent,
            _ => return Err(StoreError::BadPath(format!("{:?}: leads outside the store", path.as_str()))),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        assert_eq!(StorePath::parse("a/b:1.2.3:x.zip", false).unwrap().as_str(), "a/b:1.2.3:x.zip");
        assert_eq!(StorePath::parse("dir/", true).unwrap().as_str(), "dir");
        assert_eq!(StorePath::parse("", true).unwrap().as_str(), "");
        assert_eq!(StorePath::parse("a b/%41.bin", false).unwrap().file_name(), "%41.bin");
        assert_eq!(StorePath::parse(".updraftish/x", false).unwrap().as_str(), ".updraftish/x");
    }

    #[test]
    fn traversal_and_odd_names_are_refused() {
        for raw in [
            "",
            "/etc/passwd",
            "\\x",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "..",
            "a/..",
            "%2e%2e/x",
            "a/%2E%2e",
            "a%2fb/../c",
            "a%2F..%2Fb",
            "a%5cb",
            "a\\b",
            "a\u{0}b",
            "a\nb",
            ".updraft/partial/x",
            ".updraft",
        ] {
            assert!(StorePath::parse(raw, false).is_err(), "{raw:?} was accepted");
        }
        assert!(StorePath::parse(&"x".repeat(256), false).is_err());
        let long = vec!["x".repeat(200); 21].join("/");
        assert!(long.len() > MAX_PATH);
        assert!(matches!(StorePath::parse(&long, false), Err(StoreError::BadPath(_))));
    }

    #[test]
    fn symlinks_out_of_the_store_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let root = store.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("inside")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.join("inside"), root.join("alias")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
        let p = |s: &str| StorePath::parse(s, false).unwrap();
        assert!(resolve(&root, &p("escape/file")).is_err());
        assert!(resolve(&root, &p("escape/new/dir/file")).is_err());
        assert!(resolve(&root, &p("escape")).is_err());
        assert!(resolve(&root, &p("dangling")).is_err());
        assert!(resolve(&root, &p("dangling/x")).is_err());
        assert_eq!(resolve(&root, &p("alias/file")).unwrap(), root.join("alias/file"));
        assert_eq!(resolve(&root, &p("new/dir/file")).unwrap(), root.join("new/dir/file"));
        assert_eq!(resolve(&root, &StorePath::parse("", true).unwrap()).unwrap(), root);
    }
}
