//! Where a store keeps its own state (partial uploads, temp files, commits under way,
//! checksums): beside the directory it serves, never inside it, so the served
//! directory holds exactly the users' files. filuxe's forwarder watches its LAN
//! store's directory with inotify and walks it: state inside was forwarded, and its
//! per-folder file limit deleted the store's checksum records.
//!
//! The served directory `<parent>/<name>` keeps its state in `<parent>/.<name>.updraft`,
//! on the same filesystem (an upload is renamed from the state into place). When
//! `<parent>` is another filesystem (a volume mounted straight at the served
//! directory) no sibling is on the volume: the state then stays inside, at
//! `<dir>/.updraft` (unaddressable, left out of listings), and the store warns that a
//! subdirectory of the volume should be served instead. The operator serves
//! `files/` of the volume it mounts.
//!
//! Migrations, at open, before anything is served; each is a series of renames that
//! a crash can interrupt and the next open finishes, losing nothing:
//!
//! - state inside (`<dir>/.updraft`, earlier versions) → the sibling: one rename, or,
//!   when both exist, entry by entry;
//! - a volume whose files were served from its root and are now served from a
//!   subdirectory of it (the operator's layout change): `<parent>/.updraft` marks
//!   `<parent>` as an earlier store's root. Its entries move down into `<dir>`, then its
//!   state into the sibling. A marker in the sibling (`moving-in`) says a move is under
//!   way, so the next open finishes it. An earlier store root whose new served
//!   directory already holds files, with no marker and no sibling state, is refused,
//!   not merged (it is a user's directory). During a rolling update, replicas of the
//!   earlier version still write at the earlier root: the store opens its layout
//!   again every hour (`Store::spawn_sweeper`), which moves such files down.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::path::RESERVED;

/// The state's subdirectories.
pub const SUBDIRS: [&str; 4] = ["partial", "tmp", "committing", "sums"];

/// Marks a move of an earlier root's files into the served directory as under way.
const MOVING_IN: &str = "moving-in";

/// What is never moved from an earlier root: the filesystem's own directory.
const KEEP_AT_VOLUME_ROOT: [&str; 1] = ["lost+found"];

/// A store's directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirs {
    /// The served directory (canonical).
    pub root: PathBuf,
    /// The store's own state.
    pub state: PathBuf,
}

impl Dirs {
    /// `sub` of the state.
    pub fn own(&self, sub: &str) -> PathBuf {
        self.state.join(sub)
    }
}

/// Opens the store at `dir`: creates it, finishes or runs the migrations, creates the
/// state's subdirectories. Blocking.
pub fn open(dir: &Path) -> io::Result<Dirs> {
    let existed = dir.exists();
    let parent =
        dir.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_owned).unwrap_or_else(|| PathBuf::from("."));
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    fs::create_dir_all(&parent)?;
    let parent = parent.canonicalize()?;
    let sibling = name.as_ref().map(|n| parent.join(format!(".{n}.updraft")));
    let earlier_root = parent.join(RESERVED);
    // The move down of an earlier root's files: begun before, or to begin now.
    if let (Some(name), Some(sibling)) = (&name, &sibling) {
        let marker = sibling.join(MOVING_IN);
        let moving = marker.exists();
        if moving || is_state(&earlier_root) {
            // A sibling state means this layout ran before: what is at the earlier root
            // now was written there by a replica of the earlier version during a rolling
            // update, and moves down too. Without one, a non-empty directory is a user's.
            if !moving && existed && !sibling.exists() && fs::read_dir(dir)?.next().is_some() {
                return Err(io::Error::other(format!(
                    "{} holds an earlier store's files (its {RESERVED}/) and {} is not empty: \
                     move the files into it by hand, or serve {} itself",
                    parent.display(),
                    dir.display(),
                    parent.display()
                )));
            }
            fs::create_dir_all(sibling)?;
            fs::write(&marker, b"")?;
            sync_dir(sibling);
            fs::create_dir_all(dir)?;
            move_down(&parent, name, sibling, dir)?;
            if earlier_root.exists() {
                merge_state(&earlier_root, sibling)?;
            }
            match fs::remove_file(&marker) {
                // Another replica finished the same move.
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            sync_dir(sibling);
            tracing::info!(from = %parent.display(), to = %dir.display(), "moved an earlier store root's files into the served directory");
        }
    }
    fs::create_dir_all(dir)?;
    let root = dir.canonicalize()?;
    let inside = root.join(RESERVED);
    let state = match &sibling {
        Some(sibling) if same_filesystem(&root, &parent)? => {
            if inside.exists() {
                merge_state(&inside, sibling)?;
                tracing::info!(from = %inside.display(), to = %sibling.display(), "moved the store's state out of the served directory");
            }
            sibling.clone()
        }
        _ => {
            tracing::warn!(
                dir = %root.display(),
                "the store's directory is the root of its filesystem: its state stays inside, at {RESERVED}/; \
                 serve a subdirectory of the volume to keep the served directory to the users' files"
            );
            inside
        }
    };
    for sub in SUBDIRS {
        fs::create_dir_all(state.join(sub))?;
    }
    Ok(Dirs { root, state })
}

/// Whether `dir` is a store's state directory (of this version or an earlier one).
fn is_state(dir: &Path) -> bool {
    dir.is_dir() && SUBDIRS.iter().any(|sub| dir.join(sub).is_dir())
}

fn same_filesystem(a: &Path, b: &Path) -> io::Result<bool> {
    Ok(fs::metadata(a)?.dev() == fs::metadata(b)?.dev())
}

/// Moves every entry of the earlier root `parent` into `dir` (named `name` in it),
/// except `dir` itself, the states and the filesystem's own directory. An entry
/// another replica moved meanwhile is skipped; one whose name is taken in `dir` stays
/// (and is reported).
fn move_down(parent: &Path, name: &str, sibling: &Path, dir: &Path) -> io::Result<()> {
    let sibling_name = sibling.file_name().map(|n| n.to_os_string());
    for entry in fs::read_dir(parent)? {
        let entry = entry?;
        let entry_name = entry.file_name();
        let skip = entry_name == name
            || entry_name == RESERVED
            || Some(&entry_name) == sibling_name.as_ref()
            || KEEP_AT_VOLUME_ROOT.iter().any(|k| entry_name == *k);
        if skip {
            continue;
        }
        let to = dir.join(&entry_name);
        if to.symlink_metadata().is_ok() {
            tracing::warn!(entry = %entry.path().display(), "not moved into the served directory: the name is taken there");
            continue;
        }
        match fs::rename(entry.path(), &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    sync_dir(dir);
    sync_dir(parent);
    Ok(())
}

/// Moves the state `from` into `to`: one rename when `to` does not exist, else entry
/// by entry (an entry `to` already has wins), then removes what is left of `from`.
fn merge_state(from: &Path, to: &Path) -> io::Result<()> {
    if !to.exists() {
        match fs::rename(from, to) {
            Ok(()) => {
                sync_dir(to.parent().unwrap_or(to));
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Another replica created it meanwhile: merge below.
            Err(_) => {}
        }
    }
    fs::create_dir_all(to)?;
    for sub in SUBDIRS {
        let (old, new) = (from.join(sub), to.join(sub));
        let Ok(entries) = fs::read_dir(&old) else { continue };
        fs::create_dir_all(&new)?;
        for entry in entries.flatten() {
            let target = new.join(entry.file_name());
            if target.symlink_metadata().is_err() {
                match fs::rename(entry.path(), &target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        sync_dir(&new);
    }
    match fs::remove_dir_all(from) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_owned()];
        while let Some(d) = pending.pop() {
            for entry in fs::read_dir(&d).unwrap().flatten() {
                let path = entry.path();
                found.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                if entry.file_type().unwrap().is_dir() {
                    pending.push(path);
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn a_new_store_keeps_its_state_beside_the_served_directory() {
        let top = tempfile::tempdir().unwrap();
        let dirs = open(&top.path().join("files")).unwrap();
        let top = top.path().canonicalize().unwrap();
        assert_eq!(dirs.root, top.join("files"));
        assert_eq!(dirs.state, top.join(".files.updraft"));
        assert!(!dirs.state.starts_with(&dirs.root));
        assert!(tree(&dirs.root).is_empty(), "the served directory holds nothing of the store's");
        for sub in SUBDIRS {
            assert!(dirs.own(sub).is_dir());
        }
    }

    #[test]
    fn state_inside_an_existing_store_moves_out() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("store");
        fs::create_dir_all(dir.join(".updraft/sums")).unwrap();
        fs::create_dir_all(dir.join(".updraft/partial/abc/ranges")).unwrap();
        fs::write(dir.join(".updraft/sums/rec"), b"sum").unwrap();
        fs::write(dir.join(".updraft/partial/abc/data"), b"part").unwrap();
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::write(dir.join("a/f.zip"), b"zip").unwrap();
        let dirs = open(&dir).unwrap();
        assert_eq!(tree(&dirs.root), ["a", "a/f.zip"]);
        assert_eq!(fs::read(dirs.own("sums").join("rec")).unwrap(), b"sum");
        assert_eq!(fs::read(dirs.own("partial").join("abc/data")).unwrap(), b"part");
        // Opening again changes nothing.
        assert_eq!(open(&dir).unwrap(), dirs);
        assert_eq!(tree(&dirs.root), ["a", "a/f.zip"]);
    }

    /// A crash between the two steps of a merge (state both inside and beside): the
    /// next open finishes it; what the sibling already had wins.
    #[test]
    fn an_interrupted_move_of_the_state_is_finished() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("store");
        fs::create_dir_all(dir.join(".updraft/sums")).unwrap();
        fs::write(dir.join(".updraft/sums/old"), b"1").unwrap();
        fs::write(dir.join(".updraft/sums/both"), b"inside").unwrap();
        let sibling = top.path().join(".store.updraft");
        fs::create_dir_all(sibling.join("sums")).unwrap();
        fs::write(sibling.join("sums/both"), b"beside").unwrap();
        let dirs = open(&dir).unwrap();
        assert!(tree(&dirs.root).is_empty());
        assert_eq!(fs::read(dirs.own("sums").join("old")).unwrap(), b"1");
        assert_eq!(fs::read(dirs.own("sums").join("both")).unwrap(), b"beside");
    }

    /// The operator's change: the volume's root was served, now its `files/` is. The
    /// files move down (keeping their inodes, so their checksum records still hold),
    /// the state moves beside, `lost+found` stays.
    #[test]
    fn an_earlier_root_moves_down_into_the_served_subdirectory() {
        let top = tempfile::tempdir().unwrap();
        let volume = top.path();
        fs::create_dir_all(volume.join(".updraft/sums")).unwrap();
        fs::write(volume.join(".updraft/sums/rec"), b"sum").unwrap();
        fs::create_dir_all(volume.join("lost+found")).unwrap();
        fs::create_dir_all(volume.join("first")).unwrap();
        fs::write(volume.join("first/a:1.2.3.zip"), b"a").unwrap();
        fs::write(volume.join("b.zip"), b"b").unwrap();
        let ino = fs::metadata(volume.join("b.zip")).unwrap().ino();
        let dirs = open(&volume.join("files")).unwrap();
        assert_eq!(tree(&dirs.root), ["b.zip", "first", "first/a:1.2.3.zip"]);
        assert_eq!(fs::metadata(dirs.root.join("b.zip")).unwrap().ino(), ino);
        assert_eq!(fs::read(dirs.own("sums").join("rec")).unwrap(), b"sum");
        let mut left: Vec<_> = fs::read_dir(volume).unwrap().flatten().map(|e| e.file_name()).collect();
        left.sort();
        assert_eq!(left, [".files.updraft", "files", "lost+found"]);
        assert!(!dirs.own(MOVING_IN).exists());
    }

    /// A crash in the middle of the move down (the marker written, some files moved):
    /// the next open moves the rest.
    #[test]
    fn an_interrupted_move_down_is_finished() {
        let top = tempfile::tempdir().unwrap();
        let volume = top.path();
        fs::create_dir_all(volume.join(".updraft/partial")).unwrap();
        fs::create_dir_all(volume.join(".files.updraft")).unwrap();
        fs::write(volume.join(".files.updraft").join(MOVING_IN), b"").unwrap();
        fs::create_dir_all(volume.join("files")).unwrap();
        fs::write(volume.join("files/moved.zip"), b"1").unwrap();
        fs::write(volume.join("left.zip"), b"2").unwrap();
        let dirs = open(&volume.join("files")).unwrap();
        assert_eq!(tree(&dirs.root), ["left.zip", "moved.zip"]);
        assert!(!volume.join(".updraft").exists());
        assert!(!dirs.own(MOVING_IN).exists());
    }

    /// Files an earlier version's replica wrote at the earlier root after the move
    /// (a rolling update) move down at the next open.
    #[test]
    fn files_left_at_an_earlier_root_after_the_move_move_down_later() {
        let top = tempfile::tempdir().unwrap();
        let volume = top.path();
        fs::create_dir_all(volume.join(".updraft/sums")).unwrap();
        fs::write(volume.join("a.zip"), b"1").unwrap();
        let dirs = open(&volume.join("files")).unwrap();
        // The earlier version's replica: recreates its state, stores a file at the root.
        fs::create_dir_all(volume.join(".updraft/partial")).unwrap();
        fs::write(volume.join("late.zip"), b"2").unwrap();
        assert_eq!(open(&volume.join("files")).unwrap(), dirs);
        assert_eq!(tree(&dirs.root), ["a.zip", "late.zip"]);
        assert!(!volume.join(".updraft").exists());
    }

    /// An earlier root whose new served directory already holds files (a user's own
    /// `files/` at the old root) is not merged into it.
    #[test]
    fn an_earlier_root_is_not_merged_into_a_directory_of_its_own() {
        let top = tempfile::tempdir().unwrap();
        let volume = top.path();
        fs::create_dir_all(volume.join(".updraft/sums")).unwrap();
        fs::create_dir_all(volume.join("files")).unwrap();
        fs::write(volume.join("files/user.zip"), b"1").unwrap();
        fs::write(volume.join("other.zip"), b"2").unwrap();
        let error = open(&volume.join("files")).unwrap_err();
        assert!(error.to_string().contains("by hand"), "{error}");
        assert!(volume.join("other.zip").exists());
    }
}
