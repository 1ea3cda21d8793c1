//! Putting blobs in: streaming into `tmp/` while hashing, flushing, and
//! recording a batch in one transaction that also evicts to make room.

use super::*;

impl Store {
    /// Stores the file at `path` and returns its digest (cloud-manager's `upload`).
    pub fn put(&self, path: &Path) -> Result<Digest> {
        self.put_file(path, &PutOptions::default(), &NoProgress)
    }

    /// Stores one file with options.
    pub fn put_file(
        &self,
        path: &Path,
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        let mut results = self.put_files(&[path], opts, progress);
        results.pop().unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "put returned nothing")))
    }

    /// Stores many files, each result in the order given. Files are written and
    /// flushed in batches with one filesystem sync and one index transaction
    /// per batch, so thousands of small files cost a few disk round trips.
    pub fn put_files<P: AsRef<Path>>(
        &self,
        paths: &[P],
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Vec<Result<Digest>> {
        if let Some(key) = &opts.key {
            if let Err(e) = validate_key(key) {
                return paths.iter().map(|_| Err(clone_error(&e))).collect();
            }
            if paths.len() > 1 {
                let e = Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "--key names one entry but {} files were given; put them one at a time",
                        paths.len()
                    ),
                );
                return paths.iter().map(|_| Err(clone_error(&e))).collect();
            }
        }
        const BATCH_FILES: usize = 512;
        const BATCH_BYTES: u64 = 256 << 20;
        let mut results: Vec<Result<Digest>> = Vec::with_capacity(paths.len());
        let mut staged: Vec<(usize, Staged)> = Vec::new();
        let mut staged_bytes = 0;
        for (i, path) in paths.iter().enumerate() {
            let path = path.as_ref();
            results.push(Err(Error::new(ErrorKind::Io, "not stored")));
            match self.stage_file(path, &mut [], progress) {
                Ok(s) => {
                    staged_bytes += s.size;
                    staged.push((i, s));
                }
                Err(e) => results[i] = Err(e),
            }
            if staged.len() >= BATCH_FILES || staged_bytes >= BATCH_BYTES {
                self.commit_batch(std::mem::take(&mut staged), &|_| opts, &mut results);
                staged_bytes = 0;
            }
        }
        self.commit_batch(staged, &|_| opts, &mut results);
        results
    }

    /// Stores many files, each with its own options (its own key), in
    /// batches as [`Store::put_files`] does; each result in the order given.
    pub fn put_files_each<P: AsRef<Path>>(
        &self,
        items: &[(P, PutOptions)],
        progress: &dyn Progress,
    ) -> Vec<Result<Digest>> {
        const BATCH_FILES: usize = 512;
        const BATCH_BYTES: u64 = 256 << 20;
        let mut results: Vec<Result<Digest>> = Vec::with_capacity(items.len());
        let mut staged: Vec<(usize, Staged)> = Vec::new();
        let mut staged_bytes = 0;
        let opts_of = |i: usize| &items[i].1;
        for (i, (path, opts)) in items.iter().enumerate() {
            results.push(Err(Error::new(ErrorKind::Io, "not stored")));
            if let Some(key) = &opts.key
                && let Err(e) = validate_key(key)
            {
                results[i] = Err(e);
                continue;
            }
            match self.stage_file(path.as_ref(), &mut [], progress) {
                Ok(s) => {
                    staged_bytes += s.size;
                    staged.push((i, s));
                }
                Err(e) => results[i] = Err(e),
            }
            if staged.len() >= BATCH_FILES || staged_bytes >= BATCH_BYTES {
                self.commit_batch(std::mem::take(&mut staged), &opts_of, &mut results);
                staged_bytes = 0;
            }
        }
        self.commit_batch(staged, &opts_of, &mut results);
        results
    }

    /// Stores everything `reader` (standard input) yields.
    pub fn put_reader(
        &self,
        reader: &mut dyn Read,
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        self.put_named(reader, "standard input", opts, progress)
    }

    /// Stores everything `reader` yields; `what` names it in errors.
    fn put_named(
        &self,
        reader: &mut dyn Read,
        what: &str,
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        if let Some(key) = &opts.key {
            validate_key(key)?;
        }
        let staged = self.stage(Input::Stream(reader, None), what, progress)?;
        let mut results = vec![Err(Error::new(ErrorKind::Io, "not stored"))];
        self.commit_batch(vec![(0, staged)], &|_| opts, &mut results);
        results.pop().unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "put returned nothing")))
    }

    /// Streams `reader` into the store without recording it yet: the caller
    /// checks what it needs to, then commits the blob, or drops it and nothing
    /// is kept. `what` names the stream in progress and errors; `total` is its
    /// length if known.
    pub fn stage_stream(
        &self,
        reader: &mut dyn Read,
        what: &str,
        total: Option<u64>,
        progress: &dyn Progress,
    ) -> Result<Pending<'_>> {
        let staged = self.stage(Input::Stream(reader, total), what, progress)?;
        Ok(Pending { store: self, staged: Some(staged) })
    }

    /// Streams the file at `path` into the store without recording it yet,
    /// as [`Store::stage_stream`] does for a reader.
    pub fn stage_path(&self, path: &Path, progress: &dyn Progress) -> Result<Pending<'_>> {
        self.stage_path_following(path, &mut [], progress)
    }

    /// Stages the file at `path` as [`Store::stage_path`] does, handing each
    /// of `followers` the staged bytes as they land (when the kernel copies
    /// them; a follower that then holds less than the whole was left out).
    pub fn stage_path_following(
        &self,
        path: &Path,
        followers: &mut [&mut dyn Follower],
        progress: &dyn Progress,
    ) -> Result<Pending<'_>> {
        let staged = self.stage_file(path, followers, progress)?;
        Ok(Pending { store: self, staged: Some(staged) })
    }

    /// Records staged blobs together: one flush for all of them and one
    /// transaction, rather than one of each per blob. Returns each one's
    /// outcome, in order.
    pub fn commit_staged(&self, pending: Vec<Pending<'_>>) -> Vec<Result<Digest>> {
        let mut results: Vec<Result<Digest>> = (0..pending.len())
            .map(|_| Err(Error::new(ErrorKind::Io, "nothing was staged")))
            .collect();
        let staged: Vec<(usize, Staged)> = pending
            .into_iter()
            .enumerate()
            .filter_map(|(i, mut p)| p.staged.take().map(|s| (i, s)))
            .collect();
        let opts = PutOptions::default();
        self.commit_batch(staged, &|_| &opts, &mut results);
        results
    }

    /// Stores `bytes`.
    pub fn put_bytes(&self, bytes: &[u8], opts: &PutOptions) -> Result<Digest> {
        self.put_named(&mut &bytes[..], "the blob", opts, &NoProgress)
    }

    fn stage_file(
        &self,
        path: &Path,
        followers: &mut [&mut dyn Follower],
        progress: &dyn Progress,
    ) -> Result<Staged> {
        let mut file = File::open(path).map_err(|e| input_error(path, e))?;
        let meta = file.metadata().map_err(|e| input_error(path, e))?;
        if meta.is_dir() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is a folder; put the files in it (larder put -r {})",
                    path.display(),
                    path.display()
                ),
            ));
        }
        if meta.is_file() && meta.len() > self.capacity {
            return Err(too_large(&path.display().to_string(), meta.len(), self.capacity));
        }
        let what = path.display().to_string();
        let input = if meta.is_file() {
            Input::File(&mut file, meta.len(), followers)
        } else {
            Input::Stream(&mut file, None)
        };
        self.stage(input, &what, progress)
    }

    /// Streams `reader` into a new file in `tmp/`, hashing as it goes.
    fn stage(&self, input: Input<'_, '_>, what: &str, progress: &dyn Progress) -> Result<Staged> {
        let partial = self.layout.partial(self.me);
        // Created read-only: this descriptor can write, nobody else can.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&partial)
            .map_err(|e| Error::io("create", &partial, e))?;
        let copied = match input {
            Input::File(src, len, followers) => {
                progress.start(what, Some(len));
                copy_file_to_file(src, len, &mut file, self.capacity, true, followers, progress)
            }
            Input::Stream(reader, total) => {
                progress.start(what, total);
                copy_hashing(reader, Some(&mut file), self.capacity, progress)
            }
        };
        progress.finish();
        let (digest, size) = match copied {
            Ok(done) => done,
            Err(e) => {
                drop(file);
                let _ = fs::remove_file(&partial);
                return Err(match e {
                    CopyError::Read(e) => Error::io("read", Path::new(what), e),
                    CopyError::Write(e) => Error::io("write", &partial, e),
                    CopyError::TooLarge(limit) => too_large(what, limit + 1, limit),
                });
            }
        };
        let temp = self.layout.put_temp(self.me, &digest);
        if let Err(e) = fs::rename(&partial, &temp) {
            let _ = fs::remove_file(&partial);
            return Err(Error::io("rename", &partial, e));
        }
        // The descriptor closes here: a batch of thousands must not hold
        // thousands of descriptors open.
        drop(file);
        Ok(Staged { temp, digest, size, what: what.to_string() })
    }

    /// Makes the staged files durable, then records them in one transaction.
    fn commit_batch<'o>(
        &self,
        staged: Vec<(usize, Staged)>,
        opts: &dyn Fn(usize) -> &'o PutOptions,
        results: &mut [Result<Digest>],
    ) {
        if staged.is_empty() {
            return;
        }
        let durable = if staged.len() == 1 {
            let temp = &staged[0].1.temp;
            File::open(temp).and_then(|f| f.sync_data()).map_err(|e| Error::io("flush", temp, e))
        } else {
            let tmp = self.layout.tmp();
            fsutil::sync_filesystem(&tmp).map_err(|e| Error::io("flush", &tmp, e))
        };
        if let Err(e) = durable {
            for (i, s) in staged {
                let _ = fs::remove_file(&s.temp);
                results[i] = Err(clone_error(&e));
            }
            return;
        }
        let mut journal = Journal::default();
        let outcome = self.write(|tx| {
            let exclude: HashSet<Digest> = staged.iter().map(|(_, s)| s.digest).collect();
            for (i, s) in &staged {
                results[*i] = self.record(tx, s, opts(*i), &exclude, &mut journal);
            }
            Ok(())
        });
        if let Err(e) = &outcome {
            for (i, _) in &staged {
                results[*i] = Err(clone_error(e));
            }
        }
        journal.finish(outcome.is_ok());
        for (_, s) in &staged {
            let _ = fs::remove_file(&s.temp);
        }
    }

    /// Records one staged blob inside the batch's transaction. A failure undoes
    /// this blob's changes (a savepoint and its file moves) and no other's.
    fn record(
        &self,
        tx: &Transaction<'_>,
        s: &Staged,
        opts: &PutOptions,
        exclude: &HashSet<Digest>,
        journal: &mut Journal,
    ) -> Result<Digest> {
        let idx = |e| Error::index(&self.layout.index(), e);
        index::begin_record(tx).map_err(idx)?;
        let mark = journal.mark();
        let result = self.record_in_savepoint(tx, s, opts, exclude, journal);
        if result.is_err() {
            journal.undo_to(mark);
        }
        index::end_record(tx, result.is_ok()).map_err(idx)?;
        result
    }

    fn record_in_savepoint(
        &self,
        tx: &Transaction<'_>,
        s: &Staged,
        opts: &PutOptions,
        exclude: &HashSet<Digest>,
        journal: &mut Journal,
    ) -> Result<Digest> {
        let dest = self.layout.blob(&s.digest);
        let idx = |e| Error::index(&self.layout.index(), e);
        match index::blob(tx, &s.digest).map_err(idx)? {
            Some(_) => {
                index::touch(tx, &s.digest).map_err(idx)?;
                if !dest.exists() {
                    link_into_place(&s.temp, &dest)?;
                    journal.linked(s.temp.clone(), dest.clone());
                    if let Ok(meta) = fs::metadata(&dest) {
                        index::set_stamp(tx, &s.digest, &stamp(&meta)).map_err(idx)?;
                    }
                }
            }
            None => {
                self.make_room(tx, s.size, exclude, self.capacity, &s.what, journal)?;
                link_into_place(&s.temp, &dest)?;
                journal.linked(s.temp.clone(), dest.clone());
                let stamp = fs::metadata(&dest).ok().map(|m| stamp(&m));
                index::insert(tx, &s.digest, s.size, false, stamp.as_deref()).map_err(idx)?;
            }
        }
        if opts.pin {
            index::set_pinned(tx, &s.digest, true).map_err(idx)?;
        }
        if let Some(key) = &opts.key {
            index::bind_key(tx, key, &s.digest).map_err(idx)?;
        }
        for remote in &opts.upload_to {
            index::enqueue(tx, remote, &s.digest, opts.key.as_deref()).map_err(idx)?;
        }
        Ok(s.digest)
    }

    /// Evicts least-recently-used unpinned blobs (never those in `exclude`)
    /// until `need` more bytes fit under `limit`.
    fn make_room(
        &self,
        tx: &Transaction<'_>,
        need: u64,
        exclude: &HashSet<Digest>,
        limit: u64,
        what: &str,
        journal: &mut Journal,
    ) -> Result<()> {
        let idx = |e| Error::index(&self.layout.index(), e);
        let totals = index::totals(tx).map_err(idx)?;
        let excess = (totals.bytes + need).saturating_sub(limit);
        if excess == 0 {
            return Ok(());
        }
        if need > limit {
            return Err(too_large(what, need, limit));
        }
        let mut victims = Vec::new();
        let mut freed = 0;
        index::lru_unpinned(tx, |digest, size, _| {
            if !exclude.contains(&digest) {
                victims.push(digest);
                freed += size;
            }
            freed < excess
        })
        .map_err(idx)?;
        if freed < excess {
            let queued = index::queued_bytes(tx).map_err(idx)?;
            let waiting = if queued > 0 {
                format!(
                    ", and {} waits to be uploaded to write-back remotes (larder push sends it)",
                    format_size(queued)
                )
            } else {
                String::new()
            };
            return Err(Error::new(
                ErrorKind::StoreFull,
                format!(
                    "no room for {what} ({}): the store in {} holds {} of its {} capacity, {} of it pinned{waiting}; unpin entries (larder unpin) or raise the capacity",
                    format_size(need),
                    self.home.display(),
                    format_size(totals.bytes),
                    format_size(limit),
                    format_size(totals.pinned_bytes),
                ),
            ));
        }
        self.evict(tx, &victims, journal)
    }

    /// Moves each victim's file out of `content/` and drops its row.
    pub(super) fn evict(
        &self,
        tx: &Transaction<'_>,
        victims: &[Digest],
        journal: &mut Journal,
    ) -> Result<()> {
        for digest in victims {
            let from = self.layout.blob(digest);
            let to = self.layout.evict_temp(self.me, digest);
            match fs::rename(&from, &to) {
                Ok(()) => journal.evicted(from, to),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("evict", &from, e)),
            }
            index::delete(tx, digest).map_err(|e| Error::index(&self.layout.index(), e))?;
            tracing::debug!(%digest, "evicted");
        }
        Ok(())
    }
}

/// What a put reads from.
enum Input<'a, 'f> {
    /// A regular file, its length when opened, and who copies it on.
    File(&'a mut File, u64, &'a mut [&'f mut dyn Follower]),
    /// Anything else: a pipe, a socket, bytes in memory; and its length if known.
    Stream(&'a mut dyn Read, Option<u64>),
}

/// A blob streamed into `tmp/` and hashed, waiting for its caller to commit
/// it; dropped uncommitted, it leaves nothing behind.
pub struct Pending<'s> {
    store: &'s Store,
    staged: Option<Staged>,
}

impl Pending<'_> {
    /// The digest of the staged bytes.
    pub fn digest(&self) -> Option<Digest> {
        self.staged.as_ref().map(|s| s.digest)
    }

    /// The number of staged bytes.
    pub fn size(&self) -> u64 {
        self.staged.as_ref().map_or(0, |s| s.size)
    }

    /// Opens the staged bytes for reading, before they are committed.
    pub fn open(&self) -> Result<File> {
        let staged =
            self.staged.as_ref().ok_or_else(|| Error::new(ErrorKind::Io, "nothing staged"))?;
        File::open(&staged.temp).map_err(|e| Error::io("read", &staged.temp, e))
    }

    /// Records the blob (binding `opts.key` to it), evicting to make room.
    pub fn commit(mut self, opts: &PutOptions) -> Result<Digest> {
        let staged =
            self.staged.take().ok_or_else(|| Error::new(ErrorKind::Io, "nothing staged"))?;
        let mut results = vec![Err(Error::new(ErrorKind::Io, "not stored"))];
        self.store.commit_batch(vec![(0, staged)], &|_| opts, &mut results);
        results.pop().unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "put returned nothing")))
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.staged.take() {
            let _ = fs::remove_file(&s.temp);
        }
    }
}

/// A blob streamed into `tmp/`, hashed, not yet recorded.
struct Staged {
    temp: PathBuf,
    digest: Digest,
    size: u64,
    what: String,
}
