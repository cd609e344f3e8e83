//! Making a complete upload visible: the takeover of a partial by the request whose
//! chunk completed it (one atomic rename, so exactly one replica commits), and the
//! commit itself (checksum, sync, time, rename or link into place).

use super::*;

/// How long a request whose partial another replica took over waits for that replica
/// to finish committing it before answering that it cannot tell.
pub(super) const WINNER_WAIT: Duration = Duration::from_secs(60);

/// The commit of a partial by the request whose records cover it. It answers
/// [`Stored::Committed`] only when the file is in place: committed by this request, or
/// by a replica that took the partial over first (the file at the target is then the
/// partial's own inode, which this request holds open so it cannot be reused).
/// Whenever the records cover the file but it cannot be committed, the answer is an
/// error ([`StoreError::NotCommitted`], or why the commit failed), never a success.
pub(super) struct Takeover {
    /// The partial.
    pub(super) dir: PathBuf,
    /// `committing/` of the state, where a partial is taken to be committed.
    pub(super) committing: PathBuf,
    /// The partial's name (the same for every replica).
    pub(super) id: String,
    pub(super) info: Info,
    /// The partial's data file and its inode, if this process has it open.
    pub(super) held: Option<(Arc<File>, u64)>,
}

impl Takeover {
    pub(super) fn not_committed(&self, why: &str) -> StoreError {
        StoreError::NotCommitted(format!(
            "every chunk of {} arrived, but {why}; nothing is stored, upload the file again",
            self.info.path
        ))
    }

    /// Blocking.
    pub(super) fn commit(
        self,
        dirs: &Dirs,
        path: &StorePath,
        target: &Path,
        hashed: Option<String>,
        options: &Options,
    ) -> Result<Stored, StoreError> {
        let (_held, ino) = match self.held.clone() {
            Some((file, ino)) => (file, ino),
            None => match File::open(self.dir.join("data")) {
                Ok(file) => {
                    let ino = file.metadata()?.ino();
                    (Arc::new(file), ino)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(self.not_committed("the upload was taken over or restarted meanwhile"))
                }
                Err(e) => return Err(StoreError::io(e)),
            },
        };
        // Records on disk are the truth: another replica may have restarted the partial.
        let same = |dir: &Path| -> Result<bool, StoreError> {
            let data = fs::metadata(dir.join("data")).map(|m| m.ino()).ok();
            Ok(data == Some(ino) && covers_on_disk(dir, &self.info)?)
        };
        if !same(&self.dir)? {
            return Err(self.not_committed("another upload of the same path restarted it meanwhile"));
        }
        let taken = self.committing.join(format!("{}-{}", self.id, unique()));
        match fs::rename(&self.dir, &taken) {
            Ok(()) => {}
            // Another request (another replica) took it over first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.after_winner(target, ino, options),
            Err(e) => return Err(StoreError::io(e)),
        }
        let _cleanup = RemoveOnDrop(taken.clone());
        // Checked again now that nobody else can change it: a restart between the
        // check and the rename would have put another file's partial here.
        if !same(&taken)? {
            let _ = fs::rename(&taken, &self.dir);
            return Err(self.not_committed("another upload of the same path restarted it meanwhile"));
        }
        let data = taken.join("data");
        let file = OpenOptions::new().read(true).write(true).open(&data).map_err(StoreError::io)?;
        commit(dirs, path, target, &data, &file, hashed, options)
    }

    /// The answer of a request that lost the takeover to another: waits until no
    /// replica is committing this partial any more, then looks at what is in place.
    pub(super) fn after_winner(&self, target: &Path, ino: u64, options: &Options) -> Result<Stored, StoreError> {
        self.wait_for_winner(WINNER_WAIT)?;
        match fs::metadata(target) {
            Ok(meta) if meta.ino() == ino => Ok(Stored::Committed),
            Ok(_) if !options.force => Err(StoreError::Exists(self.info.path.clone())),
            _ => Err(self.not_committed("the replica that took it over to commit it did not")),
        }
    }

    pub(super) fn wait_for_winner(&self, patience: Duration) -> Result<(), StoreError> {
        let prefix = format!("{}-", self.id);
        let deadline = std::time::Instant::now() + patience;
        loop {
            let busy = fs::read_dir(&self.committing)?
                .flatten()
                .any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)));
            if !busy {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(self.not_committed("another replica is still committing it"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Checks, syncs, times and renames the complete file `data` into `target`. `hashed`
/// is the SHA-256 computed as the bytes arrived, if it was; when the client announced
/// one and none was computed, it is read back from `file` here. Blocking.
pub(super) fn commit(
    dirs: &Dirs,
    path: &StorePath,
    target: &Path,
    data: &Path,
    file: &File,
    hashed: Option<String>,
    options: &Options,
) -> Result<Stored, StoreError> {
    let sha256 = match (hashed, &options.sha256) {
        (Some(sum), _) => Some(sum),
        (None, Some(_)) => Some(sums::hash(file.try_clone()?)?),
        (None, None) => None,
    };
    if let (Some(expected), Some(sha256)) = (&options.sha256, &sha256) {
        if !expected.eq_ignore_ascii_case(sha256) {
            return Err(StoreError::Mismatch(format!(
                "{} has sha256 {sha256}, the client announced {expected}; nothing stored",
                path.as_str()
            )));
        }
    }
    if let Some(time) = options.time.filter(|t| *t > 0.0) {
        file.set_modified(time::to_system_time(time)).map_err(StoreError::io)?;
    }
    file.sync_all().map_err(StoreError::io)?;
    // Recorded before the file appears, so a listing never shows it without its
    // checksum (rename and link keep the inode the record names).
    let stamp = Stamp::of(&file.metadata()?);
    if let Some(sha256) = &sha256 {
        if let Err(e) = sums::write(&dirs.state, path, stamp, sha256) {
            tracing::debug!(error = %e, "cannot record a checksum");
        }
    }
    let parent = target.parent().expect("a file path has a parent");
    // Re-resolved now: directories may have changed while the upload ran.
    path::resolve(&dirs.root, path)?;
    fs::create_dir_all(parent).map_err(StoreError::io)?;
    path::resolve(&dirs.root, path)?;
    if options.force {
        fs::rename(data, target).map_err(StoreError::io)?;
    } else {
        match fs::hard_link(data, target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists(path.as_str().to_owned()))
            }
            Err(e) => return Err(StoreError::io(e)),
        }
        let _ = fs::remove_file(data);
    }
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    tracing::info!(
        path = path.as_str(),
        size = stamp.size,
        sha256 = sha256.as_deref().unwrap_or("(computed next)"),
        "stored"
    );
    Ok(Stored::Committed)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    /// A request that lost the takeover to another replica answers what that replica
    /// did: Committed only when the partial's own inode is in place.
    #[test]
    fn the_loser_of_a_takeover_answers_what_the_winner_did() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let committing = root.join("committing");
        fs::create_dir_all(&committing).unwrap();
        let data = root.join("data");
        fs::write(&data, b"partial").unwrap();
        let held = File::open(&data).unwrap();
        let ino = held.metadata().unwrap().ino();
        let info = Info::new(&p("f"), 7, &Options::default());
        let take = Takeover {
            dir: root.join("partial"),
            committing: committing.clone(),
            id: "0123".into(),
            info,
            held: Some((Arc::new(held), ino)),
        };
        let target = root.join("f");
        let (keep, force) = (Options::default(), Options { force: true, ..Default::default() });
        // Nothing in place: the winner failed.
        assert!(matches!(take.after_winner(&target, ino, &force), Err(StoreError::NotCommitted(_))));
        // Another file in place.
        fs::write(&target, b"other").unwrap();
        assert!(matches!(take.after_winner(&target, ino, &keep), Err(StoreError::Exists(_))));
        assert!(matches!(take.after_winner(&target, ino, &force), Err(StoreError::NotCommitted(_))));
        fs::remove_file(&target).unwrap();
        // The winner is still committing: the loser waits for it, then sees its file.
        let busy = committing.join("0123-winner");
        fs::create_dir(&busy).unwrap();
        let winner = std::thread::spawn({
            let (data, target) = (data.clone(), target.clone());
            move || {
                std::thread::sleep(Duration::from_millis(200));
                fs::hard_link(&data, &target).unwrap();
                fs::remove_dir(&busy).unwrap();
            }
        });
        assert_eq!(take.after_winner(&target, ino, &keep).unwrap(), Stored::Committed);
        winner.join().unwrap();
        // A winner that never finishes: an error after the wait, never a success.
        fs::create_dir(committing.join("0123-stuck")).unwrap();
        assert!(matches!(take.wait_for_winner(Duration::from_millis(100)), Err(StoreError::NotCommitted(_))));
    }
}
