//! filuxe's chunked upload: `Content-Range: bytes FROM-TO/SIZE`, chunks in any order,
//! to any replica sharing the volume; the request whose chunk completes the records
//! commits the file.

use super::*;

/// `Content-Range: bytes FROM-TO/SIZE` of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub from: u64,
    pub to: u64,
    pub size: u64,
}

impl Chunk {
    /// Parses a Content-Range header value of an upload.
    pub fn parse(value: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::BadRequest(format!("Content-Range {value:?} is not `bytes FROM-TO/SIZE`"));
        let spec = value.trim().strip_prefix("bytes ").ok_or_else(bad)?;
        let (span, size) = spec.split_once('/').ok_or_else(bad)?;
        let (from, to) = span.split_once('-').ok_or_else(bad)?;
        let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
        let chunk = Chunk { from: num(from)?, to: num(to)?, size: num(size)? };
        if chunk.from > chunk.to || chunk.to >= chunk.size {
            return Err(StoreError::BadRequest(format!("Content-Range {value:?} does not lie inside the file")));
        }
        Ok(chunk)
    }

    pub(super) fn len(&self) -> u64 {
        self.to - self.from + 1
    }
}

impl Uploads {
    /// Stores one chunk of the file at `path`.
    pub async fn chunk(
        &self,
        path: &StorePath,
        chunk: Chunk,
        options: &Options,
        body: Body,
    ) -> Result<Stored, StoreError> {
        self.check_size(chunk.size)?;
        self.target(path, options)?;
        let id = hex::encode(&Sha256::digest(path.as_str().as_bytes())[..20]);
        let slot = {
            let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
            if tracked.len() >= MAX_TRACKED && !tracked.contains_key(&id) {
                // A slot only the map holds has no request in flight (requests clone
                // it under this lock).
                tracked.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            tracked.entry(id.clone()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        let dir = self.own("partial").join(&id);
        let info = Info::new(path, chunk.size, options);
        let tracked = match guard.take() {
            Some(t) if t.info == info => t,
            _ => {
                blocking({
                    let (dir, info) = (dir.clone(), info.clone());
                    let hash = options.sha256.is_some();
                    move || load_or_start(&dir, &info, chunk.from == 0, hash)
                })
                .await?
            }
        };
        let tracked = guard.insert(tracked);
        match tracked.overlap(&chunk) {
            Overlap::Conflict => {
                return Err(StoreError::Conflict(format!(
                    "bytes {}-{} overlap a different chunk already received for {}",
                    chunk.from,
                    chunk.to,
                    path.as_str()
                )))
            }
            Overlap::Same => drain(body).await,
            Overlap::None => {
                let (file, ino) = tracked.data_file(&dir, &self.writer)?;
                let pipe = match tracked.hashed.take() {
                    Some((n, pipe)) if n == chunk.from => Some(pipe),
                    other => {
                        tracked.hashed = other;
                        None
                    }
                };
                let written =
                    write_body(&file, chunk.from, body, chunk.len(), pipe.as_ref(), &tracked.flushing).await?;
                if written != chunk.len() {
                    return Err(StoreError::BadRequest(format!(
                        "chunk body has {written} bytes, Content-Range says {}",
                        chunk.len()
                    )));
                }
                tracked.hashed = pipe.map(|pipe| (chunk.to + 1, pipe));
                // Another replica may have restarted the partial (a different file from
                // byte 0) while this chunk was written: then its bytes are not in it.
                let still_ours = fs::metadata(dir.join("data")).map(|m| m.ino()).ok() == Some(ino);
                if !still_ours {
                    tracked.hashed = None;
                    tracked.data = None;
                    return Err(StoreError::Conflict(format!(
                        "the upload of {} was restarted with another file while this chunk was written",
                        path.as_str()
                    )));
                }
                tracked.record(&chunk)?;
            }
        }
        if !tracked.covers(chunk.size) && (chunk.to + 1 == chunk.size || !tracked.contiguous_before(chunk.from)) {
            // Other replicas may have written the missing chunks.
            tracked.ranges = read_ranges(&dir)?;
        }
        if !tracked.covers(chunk.size) {
            return Ok(Stored::Partial);
        }
        let hashed = match tracked.hashed.take() {
            Some((n, pipe)) if n == chunk.size => pipe.finish().await,
            _ => None,
        };
        let held = tracked.data.take().map(|open| (open.file, open.ino));
        let target = self.target(path, options);
        let (dirs, path2, options2) = (self.dirs.clone(), path.clone(), options.clone());
        let committing = self.own("committing");
        let result = match target {
            Ok(target) => {
                let take = Takeover { dir, committing, id: id.clone(), info, held };
                blocking(move || take.commit(&dirs, &path2, &target, hashed, &options2)).await
            }
            Err(e) => Err(e),
        };
        if matches!(result, Ok(Stored::Committed)) && options.sha256.is_none() {
            self.record_sum_later(path);
        }
        *guard = None;
        drop(guard);
        self.tracked.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(Chunk::parse("bytes 0-9/10").unwrap(), Chunk { from: 0, to: 9, size: 10 });
        for bad in ["bytes 5-4/10", "bytes 0-10/10", "bytes 0-9", "items 0-9/10", "bytes -1-9/10", "bytes 0-9/*"] {
            assert!(Chunk::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn chunks_in_any_order_assemble_and_appear_only_when_complete() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 1 << 30);
        let bytes = data(300_000);
        let o = Options { time: Some(1_600_000_000.5), ..Default::default() };
        assert_eq!(send(&u, "a/f.bin", &bytes, 200_000, 299_999, &o).await.unwrap(), Stored::Partial);
        assert_eq!(visible(&root, "a/f.bin"), None);
        assert_eq!(send(&u, "a/f.bin", &bytes, 0, 99_999, &o).await.unwrap(), Stored::Partial);
        // The same chunk again is a retry.
        assert_eq!(send(&u, "a/f.bin", &bytes, 0, 99_999, &o).await.unwrap(), Stored::Partial);
        // A chunk overlapping another differently is refused.
        assert!(matches!(send(&u, "a/f.bin", &bytes, 50_000, 150_000, &o).await, Err(StoreError::Conflict(_))));
        assert_eq!(visible(&root, "a/f.bin"), None);
        assert_eq!(send(&u, "a/f.bin", &bytes, 100_000, 199_999, &o).await.unwrap(), Stored::Committed);
        assert_eq!(visible(&root, "a/f.bin").unwrap(), bytes);
        let meta = fs::metadata(root.join("a/f.bin")).unwrap();
        let stamp = Stamp::of(&meta);
        assert_eq!(stamp.time(), 1_600_000_000.5);
        // No checksum was announced: it is recorded after the answer.
        let expected = hex::encode(Sha256::digest(&bytes));
        for _ in 0..100 {
            if sums::read(&dirs.state, &p("a/f.bin"), stamp).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sums::read(&dirs.state, &p("a/f.bin"), stamp), Some(expected));
        assert_eq!(fs::read_dir(dirs.own("partial")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn chunks_reaching_two_replicas_assemble() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let (a, b) = (Uploads::new(&dirs, 1 << 30), Uploads::new(&dirs, 1 << 30));
        let bytes = data(1_000_000);
        let o = Options::default();
        let step = 100_000;
        for (i, from) in (0..bytes.len()).step_by(step).enumerate() {
            let replica = if i % 3 == 1 { &b } else { &a };
            let result = send(replica, "f", &bytes, from, from + step - 1, &o).await.unwrap();
            assert_eq!(result == Stored::Committed, from + step == bytes.len(), "chunk {i}");
        }
        assert_eq!(visible(&root, "f").unwrap(), bytes);
    }

    #[tokio::test]
    async fn a_different_file_restarts_from_byte_zero_only() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 1 << 30);
        let old = data(1000);
        let o = Options { time: Some(100.0), ..Default::default() };
        send(&u, "f", &old, 0, 499, &o).await.unwrap();
        let new: Vec<u8> = data(1200).into_iter().rev().collect();
        let o2 = Options { time: Some(200.0), ..Default::default() };
        assert!(matches!(send(&u, "f", &new, 600, 1199, &o2).await, Err(StoreError::Conflict(_))));
        send(&u, "f", &new, 0, 599, &o2).await.unwrap();
        assert_eq!(send(&u, "f", &new, 600, 1199, &o2).await.unwrap(), Stored::Committed);
        assert_eq!(visible(&root, "f").unwrap(), new);
    }

    /// filuxe's upload with Python's float times: the chunk that completes the file
    /// answers Committed, the bytes are there, and the listing's time is the float sent.
    #[tokio::test]
    async fn uploads_with_python_float_times_commit_with_their_last_chunk() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 1 << 30);
        let bytes = data(250_000);
        for (i, text) in PYTHON_TIMES.iter().enumerate() {
            let time: f64 = text.parse().unwrap();
            let o = Options { time: Some(time), force: i % 2 == 1, ..Default::default() };
            let name = format!("t/{i}.bin");
            assert_eq!(send(&u, &name, &bytes, 100_000, 199_999, &o).await.unwrap(), Stored::Partial);
            assert_eq!(send(&u, &name, &bytes, 0, 99_999, &o).await.unwrap(), Stored::Partial);
            assert_eq!(send(&u, &name, &bytes, 200_000, 249_999, &o).await.unwrap(), Stored::Committed, "{text}");
            assert_eq!(visible(&root, &name).unwrap(), bytes, "{text}");
            let stamp = Stamp::of(&fs::metadata(root.join(&name)).unwrap());
            if time > 8_388_608.0 {
                assert_eq!(stamp.time().to_bits(), time.to_bits(), "{text}");
            }
        }
    }

    /// The request whose chunk completes the records never answers "kept, not complete
    /// yet" (a 201 to filuxe's client) when the record on disk disagrees with it: that
    /// is how a time read back inexactly lost 1 upload in 10. It is an error the client
    /// retries on, and nothing appears.
    #[tokio::test]
    async fn covering_records_that_disagree_with_the_partial_on_disk_are_an_error() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 1 << 30);
        let bytes = data(300_000);
        let time: f64 = "1796555001.0810335".parse().unwrap();
        let o = Options { time: Some(time), ..Default::default() };
        send(&u, "f", &bytes, 0, 99_999, &o).await.unwrap();
        send(&u, "f", &bytes, 100_000, 199_999, &o).await.unwrap();
        // What a parser that reads the time back as its neighbour would see.
        let id = hex::encode(&Sha256::digest(b"f")[..20]);
        let info = dirs.own("partial").join(&id).join("info.json");
        let misread = Info { time_bits: Some(time.to_bits() + 1), ..Info::new(&p("f"), 300_000, &o) };
        fs::write(&info, serde_json::to_vec(&misread).unwrap()).unwrap();
        let last = send(&u, "f", &bytes, 200_000, 299_999, &o).await;
        assert!(matches!(last, Err(StoreError::NotCommitted(_))), "{last:?}");
        assert_eq!(visible(&root, "f"), None);
        // The client's retry from byte 0 stores the file.
        send(&u, "f", &bytes, 0, 99_999, &o).await.unwrap();
        send(&u, "f", &bytes, 100_000, 199_999, &o).await.unwrap();
        assert_eq!(send(&u, "f", &bytes, 200_000, 299_999, &o).await.unwrap(), Stored::Committed);
        assert_eq!(visible(&root, "f").unwrap(), bytes);
    }
}
