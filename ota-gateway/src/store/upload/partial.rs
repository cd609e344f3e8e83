//! A partial upload on the store volume, as every replica reads and writes it: `info.json`
//! (which file it assembles), `data` (the bytes at their offsets) and `ranges/` (one
//! append-only log of fixed-size records per writing process, plus the one-file-per-chunk
//! markers of partials begun by earlier versions).

use super::*;

/// Which file a partial assembles, in `info.json`. Every chunk's request is compared
/// with it for equality, so every field is a string or an integer (exact through JSON
/// whatever the parser): the time is the float's bit pattern ([`time::bits`]), never a
/// JSON float. A float read back by a parser that rounds differently (serde_json's
/// default one misreads about 1 in 10 of Python's `time.time()` values) made the
/// completing chunk see "a different file" and answer 201 for a file never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Info {
    pub(super) path: String,
    pub(super) size: u64,
    /// `f64::to_bits` of the time asked for; `None` for none. (A partial begun by an
    /// earlier version kept `time` as a float: read as `None`, so it matches only an
    /// upload without a time; the others restart it from byte 0.)
    pub(super) time_bits: Option<u64>,
}

impl Info {
    pub(super) fn new(path: &StorePath, size: u64, options: &Options) -> Self {
        Self { path: path.as_str().to_owned(), size, time_bits: time::bits(options.time) }
    }

    /// The time asked for, for messages.
    pub(super) fn time(&self) -> Option<f64> {
        self.time_bits.map(f64::from_bits)
    }
}

/// One written chunk in a range log: `from`, `to` and a check word, little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) from: u64,
    pub(super) to: u64,
}

impl Record {
    pub(super) const LEN: usize = 24;
    /// Mixed into the check word, so zeros (a hole, a torn write) never read as a chunk.
    const SALT: u64 = u64::from_le_bytes(*b"updraft1");

    pub(super) fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..8].copy_from_slice(&self.from.to_le_bytes());
        out[8..16].copy_from_slice(&self.to.to_le_bytes());
        out[16..].copy_from_slice(&(self.from ^ self.to.rotate_left(17) ^ Self::SALT).to_le_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let record = Self { from: word(0), to: word(8) };
        (record.from <= record.to && record.encode()[16..] == bytes[16..]).then_some(record)
    }
}

/// A name for one [`Uploads`]' range logs, unique among the replicas sharing a volume
/// (the pod's name, the process, the time it started).
pub(super) fn new_writer() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    format!("{host}-{}-{}", std::process::id(), unique())
}

/// The partial at `dir` if it assembles `info`; otherwise a fresh one when `restart`
/// (the chunk starts at byte 0), else a conflict. A fresh one hashes its bytes as they
/// arrive in order when `hash` (the client announced a SHA-256). Blocking.
pub(super) fn load_or_start(dir: &Path, info: &Info, restart: bool, hash: bool) -> Result<Tracked, StoreError> {
    let existing: Option<Info> = fs::read(dir.join("info.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    match existing {
        Some(found) if found == *info => {
            return Ok(Tracked::new(found, read_ranges(dir)?, None));
        }
        Some(found) if !restart => {
            return Err(StoreError::Conflict(format!(
                "an upload of {} with size {} and time {:?} is under way; a different file must start at byte 0",
                found.path,
                found.size,
                found.time()
            )))
        }
        _ => {}
    }
    // Start over: move the old partial aside first, so a replica still writing into
    // it cannot touch the new one.
    if dir.exists() {
        let aside =
            dir.with_file_name(format!("{}.old-{}", dir.file_name().unwrap_or_default().to_string_lossy(), unique()));
        if fs::rename(dir, &aside).is_ok() {
            let _ = fs::remove_dir_all(aside);
        }
    }
    let staging =
        dir.with_file_name(format!("{}.new-{}", dir.file_name().unwrap_or_default().to_string_lossy(), unique()));
    fs::create_dir_all(staging.join("ranges")).map_err(StoreError::io)?;
    fs::write(staging.join("info.json"), serde_json::to_vec(info).expect("info serializes")).map_err(StoreError::io)?;
    File::create(staging.join("data")).map_err(StoreError::io)?;
    match fs::rename(&staging, dir) {
        Ok(()) => {
            let hashed = if hash { HashPipe::start().map(|pipe| (0, pipe)) } else { None };
            Ok(Tracked::new(info.clone(), BTreeMap::new(), hashed))
        }
        // Another replica started the same partial at the same moment: use theirs.
        Err(_) => {
            let _ = fs::remove_dir_all(&staging);
            Ok(Tracked::new(info.clone(), read_ranges(dir)?, None))
        }
    }
}

/// The chunks recorded in the partial at `dir`: every process's range log (and the
/// one-file-per-chunk markers, `FROM-TO`, of partials begun by earlier versions).
pub(super) fn read_ranges(dir: &Path) -> Result<BTreeMap<u64, u64>, StoreError> {
    let mut ranges = BTreeMap::new();
    let entries = match fs::read_dir(dir.join("ranges")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ranges),
        Err(e) => return Err(StoreError::Io(e)),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".log") {
            let bytes = match fs::read(entry.path()) {
                Ok(bytes) => bytes,
                // A partial being restarted by another replica.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Io(e)),
            };
            for record in bytes.chunks(Record::LEN).filter_map(Record::decode) {
                ranges.insert(record.from, record.to);
            }
        } else if let Some((from, to)) =
            name.split_once('-').and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        {
            ranges.insert(from, to);
        }
    }
    Ok(ranges)
}

/// Whether the partial at `dir` still assembles `info` and its records cover it all.
pub(super) fn covers_on_disk(dir: &Path, info: &Info) -> Result<bool, StoreError> {
    let on_disk: Option<Info> = fs::read(dir.join("info.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    if on_disk.as_ref() != Some(info) {
        return Ok(false);
    }
    let tracked = Tracked::new(info.clone(), read_ranges(dir)?, None);
    Ok(tracked.covers(info.size))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn range_records_round_trip_and_reject_torn_or_empty_bytes() {
        let record = Record { from: 1 << 20, to: (2 << 20) - 1 };
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Some(record));
        assert_eq!(Record::decode(&[0; Record::LEN]), None, "a hole is not a chunk");
        assert_eq!(Record::decode(&bytes[..Record::LEN - 1]), None, "a torn record is not a chunk");
        assert_eq!(Record::decode(&bytes[..10]), None, "a torn record is not a chunk");
        let mut flipped = bytes;
        flipped[3] ^= 1;
        assert_eq!(Record::decode(&flipped), None, "a changed offset fails the check");
    }

    /// Two writers' logs (one ending in a torn record) and an old-style marker all
    /// count; nothing else in the directory does.
    #[test]
    fn ranges_are_read_from_every_writers_log_and_old_markers() {
        let (_tmp, dirs) = setup();
        let root = dirs.root.clone();
        let ranges = root.join("ranges");
        fs::create_dir_all(&ranges).unwrap();
        let mut a = Record { from: 0, to: 9 }.encode().to_vec();
        a.extend(Record { from: 20, to: 29 }.encode());
        a.extend(&Record { from: 40, to: 49 }.encode()[..10]);
        fs::write(ranges.join("pod-a-1-x.log"), a).unwrap();
        fs::write(ranges.join("pod-b-1-y.log"), Record { from: 10, to: 19 }.encode()).unwrap();
        File::create(ranges.join("30-39")).unwrap();
        File::create(ranges.join("junk")).unwrap();
        let found: Vec<_> = read_ranges(&root).unwrap().into_iter().collect();
        assert_eq!(found, vec![(0, 9), (10, 19), (20, 29), (30, 39)]);
    }

    fn numbers_are_integers(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::Number(n) => n.is_u64(),
            serde_json::Value::Array(items) => items.iter().all(numbers_are_integers),
            serde_json::Value::Object(fields) => fields.values().all(numbers_are_integers),
            _ => true,
        }
    }

    /// `info.json` is compared for equality with each chunk's request, so it holds no
    /// float: whatever parser reads it back (exact or not), it reads the same record.
    #[test]
    fn partial_records_hold_no_floats_and_compare_exactly() {
        for text in PYTHON_TIMES {
            let time: f64 = text.parse().unwrap();
            let info = Info::new(&p("a/f.bin"), 3 << 20, &Options { time: Some(time), ..Default::default() });
            let json = serde_json::to_vec(&info).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert!(numbers_are_integers(&value), "{text}: {value}");
            let back: Info = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, info, "{text}");
            assert_eq!(back.time().map(f64::to_bits), Some(time.to_bits()));
            // The neighbouring float (what an inexact parse yields) is another file.
            let next = Info { time_bits: Some(time.to_bits() + 1), ..info.clone() };
            assert_ne!(next, info);
        }
    }
}
