//! An upload in one request body: received into a temp file of the state, then
//! committed.

use super::*;

impl Uploads {
    /// Stores a whole body at `path`.
    pub async fn whole(
        &self,
        path: &StorePath,
        declared: Option<u64>,
        options: &Options,
        body: Body,
    ) -> Result<Stored, StoreError> {
        if let Some(len) = declared {
            self.check_size(len)?;
        }
        let target = self.target(path, options)?;
        let tmp = self.own("tmp").join(format!("{}-{}", std::process::id(), unique()));
        let file = OpenOptions::new().create_new(true).read(true).write(true).open(&tmp).map_err(StoreError::io)?;
        let file = Arc::new(file);
        let _cleanup = RemoveOnDrop(tmp.clone());
        let max_bytes = self.max_bytes();
        let limit = declared.unwrap_or(max_bytes).min(max_bytes);
        let pipe = if options.sha256.is_some() { HashPipe::start() } else { None };
        let written = write_body(&file, 0, body, limit, pipe.as_ref(), &Arc::default()).await.map_err(|e| {
            if matches!(e, StoreError::TooLarge { .. }) {
                StoreError::TooLarge { size: limit + 1, limit: max_bytes }
            } else {
                e
            }
        })?;
        if declared.is_some_and(|len| len != written) {
            return Err(StoreError::BadRequest(format!("body has {written} bytes, Content-Length said {declared:?}")));
        }
        let hashed = match pipe {
            Some(pipe) => pipe.finish().await,
            None => None,
        };
        let dirs = self.dirs.clone();
        let (path2, options) = (path.clone(), options.clone());
        let announced = options.sha256.is_some();
        let stored = blocking(move || commit(&dirs, &path2, &target, &tmp, &file, hashed, &options)).await?;
        if !announced {
            self.record_sum_later(path);
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test]
    async fn force_checksums_and_limits() {
        let (_d, dirs) = setup();
        let root = dirs.root.clone();
        let u = Uploads::new(&dirs, 10_000);
        let bytes = data(5000);
        let o = Options::default();
        send(&u, "f", &bytes, 0, 4999, &o).await.unwrap();
        assert!(matches!(send(&u, "f", &bytes, 0, 4999, &o).await, Err(StoreError::Exists(_))));
        assert!(matches!(u.whole(&p("f"), None, &o, Body::from(vec![1u8; 10])).await, Err(StoreError::Exists(_))));
        let replacement = data(3000);
        let forced = Options { force: true, sha256: Some("00".repeat(32)), ..Default::default() };
        assert!(matches!(
            u.whole(&p("f"), None, &forced, Body::from(replacement.clone())).await,
            Err(StoreError::Mismatch(_))
        ));
        assert_eq!(visible(&root, "f").unwrap(), bytes);
        let forced =
            Options { force: true, sha256: Some(hex::encode(Sha256::digest(&replacement))), ..Default::default() };
        u.whole(&p("f"), None, &forced, Body::from(replacement.clone())).await.unwrap();
        assert_eq!(visible(&root, "f").unwrap(), replacement);
        let big = data(20_000);
        assert!(matches!(u.whole(&p("g"), None, &o, Body::from(big.clone())).await, Err(StoreError::TooLarge { .. })));
        assert!(matches!(send(&u, "g", &big, 0, 999, &o).await, Err(StoreError::TooLarge { .. })));
        assert_eq!(visible(&root, "g"), None);
        assert_eq!(fs::read_dir(dirs.own("tmp")).unwrap().count(), 0);
    }
}
