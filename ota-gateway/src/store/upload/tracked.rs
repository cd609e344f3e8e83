//! What this process keeps of the partials it is receiving between chunks: their records,
//! their data file and range log held open, the hash of the bytes seen in order. A
//! cache of what is on disk, bounded ([`MAX_TRACKED`]): a forgotten upload is read back
//! from its partial.

use super::*;

/// What this process knows of one partial (a cache of the records, plus the hash of
/// the bytes received in order so far, and its data file and range log kept open
/// across chunks).
pub(super) struct Tracked {
    pub(super) info: Info,
    /// The partial's data file and its inode, and this process's range log in the same
    /// partial, opened by the first chunk this process wrote and kept until the upload
    /// ends here.
    pub(super) data: Option<Open>,
    /// from → to (inclusive).
    pub(super) ranges: BTreeMap<u64, u64>,
    /// SHA-256 of bytes `0..n` (being computed) when this process saw them in order.
    pub(super) hashed: Option<(u64, HashPipe)>,
    /// Set while a background `fdatasync` of the partial runs: written chunks reach
    /// the disk while later ones arrive, so the sync before the rename has little left.
    pub(super) flushing: Arc<AtomicBool>,
}

impl Tracked {
    pub(super) fn new(info: Info, ranges: BTreeMap<u64, u64>, hashed: Option<(u64, HashPipe)>) -> Self {
        Self { info, data: None, ranges, hashed, flushing: Arc::default() }
    }

    /// The partial's data file in `dir` and its inode, opened once per upload (with
    /// this process's range log beside it).
    pub(super) fn data_file(&mut self, dir: &Path, writer: &str) -> Result<(Arc<File>, u64), StoreError> {
        if let Some(open) = &self.data {
            return Ok((open.file.clone(), open.ino));
        }
        let file = OpenOptions::new().write(true).open(dir.join("data")).map_err(StoreError::io)?;
        let ino = file.metadata()?.ino();
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("ranges").join(format!("{writer}.log")))
            .map_err(StoreError::io)?;
        let open = Open { file: Arc::new(file), ino, log };
        let found = (open.file.clone(), ino);
        self.data = Some(open);
        Ok(found)
    }

    /// Records `chunk` as written, in the log [`Tracked::data_file`] opened. One
    /// write of one record on a file opened for appending: a reader sees the whole
    /// record or none of it, and a torn one (a crash mid-write) fails its check.
    pub(super) fn record(&mut self, chunk: &Chunk) -> Result<(), StoreError> {
        let open = self.data.as_mut().expect("the data file is opened before a chunk is written");
        open.log.write_all(&Record { from: chunk.from, to: chunk.to }.encode()).map_err(StoreError::io)?;
        self.ranges.insert(chunk.from, chunk.to);
        Ok(())
    }

    pub(super) fn covers(&self, size: u64) -> bool {
        let mut next = 0;
        for (&from, &to) in &self.ranges {
            if from > next {
                return false;
            }
            next = next.max(to + 1);
        }
        next >= size
    }

    pub(super) fn contiguous_before(&self, offset: u64) -> bool {
        let mut next = 0;
        for (&from, &to) in self.ranges.range(..offset) {
            if from > next {
                return false;
            }
            next = next.max(to + 1);
        }
        next >= offset
    }

    /// Exactly this range is recorded (a retry), some other overlaps it (a conflict),
    /// or it is new.
    pub(super) fn overlap(&self, chunk: &Chunk) -> Overlap {
        if self.ranges.get(&chunk.from) == Some(&chunk.to) {
            return Overlap::Same;
        }
        let clash = self.ranges.range(..=chunk.to).next_back().is_some_and(|(_, &to)| to >= chunk.from);
        if clash {
            Overlap::Conflict
        } else {
            Overlap::None
        }
    }
}

/// Uploads whose partial this process keeps open (its data file and range log) and
/// cached between chunks. Past this many, the uploads nobody is sending to at that
/// moment are forgotten: their next chunk reads the partial back from disk. Without
/// it every abandoned upload kept two descriptors until the sweep, and clients that
/// gave up (or one client with the write key) could exhaust the process's descriptors,
/// failing every upload and download with "Too many open files".
pub(super) const MAX_TRACKED: usize = 256;

/// A partial's data file, opened once per upload, and this process's range log.
pub(super) struct Open {
    pub(super) file: Arc<File>,
    pub(super) ino: u64,
    pub(super) log: File,
}

pub(super) enum Overlap {
    None,
    Same,
    Conflict,
}
