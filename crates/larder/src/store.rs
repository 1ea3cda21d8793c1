//! The content store's local tier: blobs by digest in a folder, an SQLite
//! index, a capacity enforced by evicting least-recently-used unpinned blobs.
//!
//! Crash safety rests on three rules:
//! - bytes are written to `tmp/`, hashed while streaming, flushed, and only then
//!   linked into `content/`, inside the index transaction that records them;
//! - files in `tmp/` carry their owner's pid and start time, so whoever opens
//!   the store next can tell a write in progress from a write whose process
//!   died, and finish or undo the latter (see [`Store::sweep`]);
//! - evicted blobs leave `content/` by a rename into `tmp/` inside the
//!   transaction that drops their row, and are deleted after it commits.
//!
//! Many processes share one store: every change runs in an `IMMEDIATE`
//! transaction, which SQLite serializes across processes.

mod copy;
mod index;
mod layout;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;
use crate::holder::ProcessId;
use crate::progress::{NoProgress, Progress};
use crate::size::format_size;
use copy::{CopyError, copy_hashing};
use layout::{Layout, TempKind, parse_temp};

/// What a command names: a blob by its digest, or a key bound to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A blob, by digest.
    Digest(Digest),
    /// A key bound to a blob.
    Key(String),
}

impl Target {
    /// Parses `sha256:<hex>` (or 64 bare hex digits) as a digest and anything
    /// else as a key. Text that starts like a digest but is malformed is an
    /// error, not a key, so a mistyped digest is never silently a miss.
    pub fn parse(text: &str) -> Result<Target> {
        if Digest::looks_like_digest(text) {
            return text.parse().map(Target::Digest);
        }
        validate_key(text)?;
        Ok(Target::Key(text.to_string()))
    }
}

impl From<Digest> for Target {
    fn from(digest: Digest) -> Target {
        Target::Digest(digest)
    }
}

impl From<&Digest> for Target {
    fn from(digest: &Digest) -> Target {
        Target::Digest(*digest)
    }
}

/// Checks that `key` can name an entry.
pub fn validate_key(key: &str) -> Result<()> {
    let problem = if key.is_empty() {
        Some("is empty")
    } else if key.len() > 1024 {
        Some("is longer than 1024 bytes")
    } else if key.chars().any(char::is_control) {
        Some("contains a control character")
    } else if Digest::looks_like_digest(key) {
        Some("looks like a digest")
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "key `{}` {p}; keys are names such as `datasets/mnist.tar`",
                key.escape_debug()
            ),
        )),
        None => Ok(()),
    }
}

/// Options for a put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Bind this key to the blob.
    pub key: Option<String>,
    /// Pin the blob so eviction never removes it.
    pub pin: bool,
}

/// How `get` hands a blob to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetMode {
    /// A private copy.
    Copy,
    /// A reflink where the filesystem can, else a read-only hardlink, else a copy.
    Link,
}

/// How a blob reached the path `get` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Copied byte by byte.
    Copied,
    /// A copy-on-write clone sharing the stored extents.
    Reflinked,
    /// A read-only hardlink to the stored file.
    Hardlinked,
}

/// One entry, as `larder ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Whether eviction must leave it alone.
    pub pinned: bool,
    /// Last use, in seconds since the Unix epoch.
    pub used_at: i64,
    /// When it was stored, in seconds since the Unix epoch.
    pub created_at: i64,
    /// Keys bound to it.
    pub keys: Vec<String>,
}

/// The store's totals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Blobs held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Bytes held by pinned blobs.
    pub pinned_bytes: u64,
    /// The capacity in bytes.
    pub capacity: u64,
    /// `bytes / capacity`.
    pub usage_ratio: f64,
    /// Reads that found their blob.
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
}

/// What `gc` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs evicted.
    pub evicted: u64,
    /// Bytes they held.
    pub freed: u64,
    /// Leftovers of dead processes cleaned from `tmp/`.
    pub swept: u64,
    /// Bytes in use afterwards.
    pub bytes: u64,
    /// The target it aimed for.
    pub target: u64,
}

/// What `verify` found (and, with repair, fixed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Blobs whose bytes did not match, with where they were quarantined.
    pub corrupt: Vec<(Digest, PathBuf)>,
    /// Indexed blobs whose file is gone.
    pub missing: Vec<Digest>,
    /// Files in the content folder the index does not know.
    pub orphans: Vec<PathBuf>,
    /// Orphans added back to the index (with repair).
    pub adopted: u64,
    /// Index rows of missing files dropped (with repair).
    pub dropped: u64,
}

impl VerifyReport {
    /// Whether the store was found consistent (after any repair).
    pub fn is_clean(&self, repaired: bool) -> bool {
        self.corrupt.is_empty()
            && (repaired || (self.missing.is_empty() && self.orphans.is_empty()))
    }
}

/// What `rm` removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// A blob and every key bound to it.
    Blob {
        /// The blob.
        digest: Digest,
        /// The keys that were bound to it.
        keys: Vec<String>,
    },
    /// A key; its blob too if no other key was bound to it and it was not pinned.
    Key {
        /// The key.
        key: String,
        /// The blob it named.
        digest: Digest,
        /// Whether the blob went as well.
        blob_removed: bool,
    },
}

/// The local tier of the content store.
pub struct Store {
    home: PathBuf,
    layout: Layout,
    capacity: u64,
    conn: Mutex<Connection>,
    me: ProcessId,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("home", &self.home).field("capacity", &self.capacity).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `home` with `capacity` bytes,
    /// and cleans up after processes that died while writing to it.
    pub fn open(home: &Path, capacity: u64) -> Result<Store> {
        check_home(home)?;
        let layout = Layout::new(home);
        for dir in [layout.root.clone(), layout.tmp(), layout.content_root(), layout.quarantine()] {
            fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        let index_path = layout.index();
        let index_existed = index_path.exists();
        let conn = crate::sqlite::open(&index_path, index::MIGRATIONS)?;
        let store = Store {
            home: home.to_path_buf(),
            layout,
            capacity,
            conn: Mutex::new(conn),
            me: ProcessId::current(),
        };
        if !index_existed && store.has_content_files() {
            tracing::warn!(
                "the index of {} was missing and has been created anew; run `larder verify --repair` to add the blobs already in its content folder",
                home.display()
            );
        }
        store.sweep()?;
        Ok(store)
    }

    /// The home this store lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

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
        const BATCH_FILES: usize = 1024;
        const BATCH_BYTES: u64 = 256 << 20;
        let mut results: Vec<Result<Digest>> = Vec::with_capacity(paths.len());
        let mut staged: Vec<(usize, Staged)> = Vec::new();
        let mut staged_bytes = 0;
        for (i, path) in paths.iter().enumerate() {
            let path = path.as_ref();
            results.push(Err(Error::new(ErrorKind::Io, "not stored")));
            match self.stage_file(path, progress) {
                Ok(s) => {
                    staged_bytes += s.size;
                    staged.push((i, s));
                }
                Err(e) => results[i] = Err(e),
            }
            if staged.len() >= BATCH_FILES || staged_bytes >= BATCH_BYTES {
                self.commit_batch(std::mem::take(&mut staged), opts, &mut results);
                staged_bytes = 0;
            }
        }
        self.commit_batch(staged, opts, &mut results);
        results
    }

    /// Stores everything `reader` yields.
    pub fn put_reader(
        &self,
        reader: &mut dyn Read,
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        if let Some(key) = &opts.key {
            validate_key(key)?;
        }
        let staged = self.stage(reader, "standard input", None, progress)?;
        let mut results = vec![Err(Error::new(ErrorKind::Io, "not stored"))];
        self.commit_batch(vec![(0, staged)], opts, &mut results);
        results.pop().unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "put returned nothing")))
    }

    /// Stores `bytes`.
    pub fn put_bytes(&self, bytes: &[u8], opts: &PutOptions) -> Result<Digest> {
        self.put_reader(&mut &bytes[..], opts, &NoProgress)
    }

    fn stage_file(&self, path: &Path, progress: &dyn Progress) -> Result<Staged> {
        let mut file = File::open(path).map_err(|e| input_error(path, e))?;
        let meta = file.metadata().map_err(|e| input_error(path, e))?;
        if meta.is_dir() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is a folder; put the files in it (larder put {}/*)",
                    path.display(),
                    path.display()
                ),
            ));
        }
        if meta.is_file() && meta.len() > self.capacity {
            return Err(too_large(&path.display().to_string(), meta.len(), self.capacity));
        }
        let what = path.display().to_string();
        let total = meta.is_file().then_some(meta.len());
        self.stage(&mut file, &what, total, progress)
    }

    /// Streams `reader` into a new file in `tmp/`, hashing as it goes.
    fn stage(
        &self,
        reader: &mut dyn Read,
        what: &str,
        total: Option<u64>,
        progress: &dyn Progress,
    ) -> Result<Staged> {
        let partial = self.layout.partial(self.me);
        // Created read-only: the descriptor can write, nobody else can.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&partial)
            .map_err(|e| Error::io("create", &partial, e))?;
        progress.start(what, total);
        let copied = copy_hashing(reader, Some(&mut file), self.capacity, progress);
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
        Ok(Staged { temp, file, digest, size, what: what.to_string() })
    }

    /// Makes the staged files durable, then records them in one transaction.
    fn commit_batch(
        &self,
        staged: Vec<(usize, Staged)>,
        opts: &PutOptions,
        results: &mut [Result<Digest>],
    ) {
        if staged.is_empty() {
            return;
        }
        let durable = if staged.len() == 1 {
            staged[0].1.file.sync_data().map_err(|e| Error::io("flush", &staged[0].1.temp, e))
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
        let mut linked: Vec<PathBuf> = Vec::new();
        let mut evicted: Vec<PathBuf> = Vec::new();
        let outcome = self.write(|tx| {
            let exclude: HashSet<Digest> = staged.iter().map(|(_, s)| s.digest).collect();
            for (i, s) in &staged {
                results[*i] = self.record(tx, s, opts, &exclude, &mut linked, &mut evicted);
            }
            Ok(())
        });
        if let Err(e) = outcome {
            // Nothing was recorded: undo the links so no blob sits unindexed.
            for (i, s) in &staged {
                let dest = self.layout.blob(&s.digest);
                if linked.contains(&dest) && same_file(&dest, &s.temp) {
                    let _ = fs::remove_file(&dest);
                }
                results[*i] = Err(clone_error(&e));
            }
            evicted.clear();
        }
        for (_, s) in &staged {
            let _ = fs::remove_file(&s.temp);
        }
        for path in evicted {
            let _ = fs::remove_file(path);
        }
    }

    /// Records one staged blob inside the batch's transaction.
    fn record(
        &self,
        tx: &Transaction<'_>,
        s: &Staged,
        opts: &PutOptions,
        exclude: &HashSet<Digest>,
        linked: &mut Vec<PathBuf>,
        evicted: &mut Vec<PathBuf>,
    ) -> Result<Digest> {
        let dest = self.layout.blob(&s.digest);
        let idx = |e| Error::index(&self.layout.index(), e);
        match index::blob(tx, &s.digest).map_err(idx)? {
            Some(_) => {
                index::touch(tx, &s.digest).map_err(idx)?;
                if !dest.exists() {
                    link_into_place(&s.temp, &dest)?;
                    linked.push(dest);
                }
            }
            None => {
                evicted.extend(self.make_room(tx, s.size, exclude, self.capacity, &s.what)?);
                link_into_place(&s.temp, &dest)?;
                linked.push(dest);
                index::insert(tx, &s.digest, s.size, false).map_err(idx)?;
            }
        }
        if opts.pin {
            index::set_pinned(tx, &s.digest, true).map_err(idx)?;
        }
        if let Some(key) = &opts.key {
            index::bind_key(tx, key, &s.digest).map_err(idx)?;
        }
        Ok(s.digest)
    }

    /// Evicts least-recently-used unpinned blobs (never those in `exclude`)
    /// until `need` more bytes fit under `limit`. Returns the moved-out files,
    /// to delete once the transaction commits.
    fn make_room(
        &self,
        tx: &Transaction<'_>,
        need: u64,
        exclude: &HashSet<Digest>,
        limit: u64,
        what: &str,
    ) -> Result<Vec<PathBuf>> {
        let idx = |e| Error::index(&self.layout.index(), e);
        let totals = index::totals(tx).map_err(idx)?;
        let excess = (totals.bytes + need).saturating_sub(limit);
        if excess == 0 {
            return Ok(Vec::new());
        }
        if need > limit {
            return Err(too_large(what, need, limit));
        }
        let mut victims = Vec::new();
        let mut freed = 0;
        index::lru_unpinned(tx, |digest, size| {
            if !exclude.contains(&digest) {
                victims.push(digest);
                freed += size;
            }
            freed < excess
        })
        .map_err(idx)?;
        if freed < excess {
            return Err(Error::new(
                ErrorKind::StoreFull,
                format!(
                    "no room for {what} ({}): the store in {} holds {} of its {} capacity and {} of it is pinned; unpin entries (larder unpin) or raise the capacity",
                    format_size(need),
                    self.home.display(),
                    format_size(totals.bytes),
                    format_size(limit),
                    format_size(totals.pinned_bytes),
                ),
            ));
        }
        self.evict(tx, &victims)
    }

    /// Moves each victim's file out of `content/` and drops its row.
    fn evict(&self, tx: &Transaction<'_>, victims: &[Digest]) -> Result<Vec<PathBuf>> {
        let mut moved = Vec::new();
        for digest in victims {
            let from = self.layout.blob(digest);
            let to = self.layout.evict_temp(self.me, digest);
            match fs::rename(&from, &to) {
                Ok(()) => moved.push(to),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("evict", &from, e)),
            }
            index::delete(tx, digest).map_err(|e| Error::index(&self.layout.index(), e))?;
            tracing::debug!(%digest, "evicted");
        }
        Ok(moved)
    }

    /// Runs `f` in an immediate (write-locked) transaction and commits it.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let index = self.layout.index();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::index(&index, e))?;
        let value = f(&tx)?;
        tx.commit().map_err(|e| Error::index(&index, e))?;
        Ok(value)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic elsewhere cannot leave the connection half-changed: every
        // change is a transaction that rolls back when dropped.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn idx_err(&self, e: rusqlite::Error) -> Error {
        Error::index(&self.layout.index(), e)
    }

    /// The digest a target names.
    pub fn resolve(&self, target: &Target) -> Result<Digest> {
        match target {
            Target::Digest(d) => Ok(*d),
            Target::Key(k) => index::key(&self.lock(), k)
                .map_err(|e| self.idx_err(e))?
                .ok_or_else(|| unknown_key(k)),
        }
    }

    /// Whether the store holds `target` in any tier (cloud-manager's `exists`).
    /// With only the local tier, the same as [`Store::on_cache`].
    pub fn contains(&self, target: impl Into<Target>) -> Result<bool> {
        self.on_cache(target)
    }

    /// Whether the local tier holds `target` (cloud-manager's `on_cache`).
    pub fn on_cache(&self, target: impl Into<Target>) -> Result<bool> {
        let target = target.into();
        let conn = self.lock();
        let digest = match &target {
            Target::Digest(d) => *d,
            Target::Key(k) => match index::key(&conn, k).map_err(|e| self.idx_err(e))? {
                Some(d) => d,
                None => return Ok(false),
            },
        };
        let row = index::blob(&conn, &digest).map_err(|e| self.idx_err(e))?;
        Ok(row.is_some() && self.layout.blob(&digest).exists())
    }

    /// Makes sure `target` is in the local tier and marks it used
    /// (cloud-manager's `warm_up`).
    pub fn warm_up(&self, target: impl Into<Target>) -> Result<Digest> {
        let (digest, _, _) = self.open_blob(&target.into())?;
        Ok(digest)
    }

    /// The same as [`Store::warm_up`] (cloud-manager's `download`).
    pub fn download(&self, target: impl Into<Target>) -> Result<Digest> {
        self.warm_up(target)
    }

    /// Looks `target` up, opens its file, and counts the hit or miss.
    fn open_blob(&self, target: &Target) -> Result<(Digest, File, u64)> {
        let mut missing_file = false;
        let found = self.write(|tx| {
            let idx = |e| self.idx_err(e);
            let digest = match target {
                Target::Digest(d) => *d,
                Target::Key(k) => match index::key(tx, k).map_err(idx)? {
                    Some(d) => d,
                    None => {
                        index::count(tx, "misses").map_err(idx)?;
                        return Ok(None);
                    }
                },
            };
            let Some(row) = index::blob(tx, &digest).map_err(idx)? else {
                index::count(tx, "misses").map_err(idx)?;
                return Ok(Some((digest, None)));
            };
            let path = self.layout.blob(&digest);
            match File::open(&path) {
                Ok(file) => {
                    index::touch(tx, &digest).map_err(idx)?;
                    index::count(tx, "hits").map_err(idx)?;
                    Ok(Some((digest, Some((file, row.size)))))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // The file went behind the index's back: heal the index.
                    index::delete(tx, &digest).map_err(idx)?;
                    index::count(tx, "misses").map_err(idx)?;
                    missing_file = true;
                    Ok(Some((digest, None)))
                }
                Err(e) => Err(Error::io("open", &path, e)),
            }
        })?;
        match found {
            None => Err(match target {
                Target::Key(k) => unknown_key(k),
                Target::Digest(d) => not_stored(d),
            }),
            Some((digest, None)) if missing_file => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{digest} was in the index but its file is gone (deleted by hand?); it is dropped from the index, put it again"
                ),
            )),
            Some((digest, None)) => Err(not_stored(&digest)),
            Some((digest, Some((file, size)))) => Ok((digest, file, size)),
        }
    }

    /// Writes the blob `target` names to `out`, only after checking that its
    /// bytes still match its digest.
    pub fn get_to_writer(
        &self,
        target: &Target,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        let (digest, mut file, size) = self.open_blob(target)?;
        self.check_bytes(&digest, &mut file, size, progress)?;
        file.rewind().map_err(|e| Error::io("read", &self.layout.blob(&digest), e))?;
        io::copy(&mut file, out).map_err(|e| {
            Error::new(ErrorKind::Io, format!("cannot write {digest} to the output: {e}"))
                .with_source(e)
        })?;
        Ok(digest)
    }

    /// Reads a whole blob into memory, verified.
    pub fn read(&self, target: &Target) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_to_writer(target, &mut out, &NoProgress)?;
        Ok(out)
    }

    /// Writes the blob `target` names to `dest` (a file path, or a folder to
    /// put it in). The file appears only complete and verified: bytes go to a
    /// hidden temporary beside it, which is renamed into place.
    pub fn get_to_path(
        &self,
        target: &Target,
        dest: &Path,
        mode: GetMode,
        progress: &dyn Progress,
    ) -> Result<(Digest, Delivery)> {
        let (digest, mut file, size) = self.open_blob(target)?;
        let dest = if dest.is_dir() {
            let name = match target {
                Target::Key(k) => k.rsplit('/').next().unwrap_or(k).to_string(),
                Target::Digest(d) => d.hex(),
            };
            dest.join(name)
        } else {
            dest.to_path_buf()
        };
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = dir.join(format!(".{name}.larder-get.{}", self.me));
        let _ = fs::remove_file(&temp);

        if mode == GetMode::Link {
            self.check_bytes(&digest, &mut file, size, progress)?;
            if let Some(how) = self.link_out(&file, &digest, &temp) {
                if let Err(e) = fs::rename(&temp, &dest) {
                    let _ = fs::remove_file(&temp);
                    return Err(Error::io("write", &dest, e));
                }
                return Ok((digest, how));
            }
            file.rewind().map_err(|e| Error::io("read", &self.layout.blob(&digest), e))?;
        }

        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io("write", &dest, e))?;
        progress.start(&digest.to_string(), Some(size));
        let copied = copy_hashing(&mut file, Some(&mut out), u64::MAX, progress);
        progress.finish();
        drop(out);
        let actual = match copied {
            Ok((actual, _)) => actual,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(match e {
                    CopyError::Write(e) => Error::io("write", &dest, e),
                    CopyError::Read(e) => Error::io("read", &self.layout.blob(&digest), e),
                    CopyError::TooLarge(_) => Error::new(ErrorKind::Io, "unexpected size limit"),
                });
            }
        };
        if actual != digest {
            let _ = fs::remove_file(&temp);
            return Err(self.corrupt(&digest, &actual));
        }
        fs::rename(&temp, &dest).map_err(|e| {
            let _ = fs::remove_file(&temp);
            Error::io("write", &dest, e)
        })?;
        Ok((digest, Delivery::Copied))
    }

    /// Tries a reflink, then a hardlink, of the stored file to `temp`.
    fn link_out(&self, file: &File, digest: &Digest, temp: &Path) -> Option<Delivery> {
        if let Ok(out) = OpenOptions::new().write(true).create_new(true).open(temp) {
            if fsutil::reflink(file, &out).is_ok() {
                return Some(Delivery::Reflinked);
            }
            drop(out);
            let _ = fs::remove_file(temp);
        }
        match fs::hard_link(self.layout.blob(digest), temp) {
            Ok(()) => Some(Delivery::Hardlinked),
            Err(e) => {
                tracing::info!("cannot link {digest} out ({e}); copying instead");
                None
            }
        }
    }

    /// Re-hashes an open blob; on a mismatch, quarantines it.
    fn check_bytes(
        &self,
        digest: &Digest,
        file: &mut File,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        progress.start(&format!("checking {digest}"), Some(size));
        let hashed = copy_hashing(file, None, u64::MAX, progress);
        progress.finish();
        match hashed {
            Ok((actual, _)) if actual == *digest => Ok(()),
            Ok((actual, _)) => Err(self.corrupt(digest, &actual)),
            Err(CopyError::Read(e)) => Err(Error::io("read", &self.layout.blob(digest), e)),
            Err(_) => Err(Error::new(ErrorKind::Io, "unexpected copy failure")),
        }
    }

    /// Quarantines a blob found corrupt and returns the error to report.
    fn corrupt(&self, digest: &Digest, actual: &Digest) -> Error {
        let place = match self.quarantine(digest) {
            Ok(Some(path)) => format!("moved it to {}", path.display()),
            Ok(None) => "it is already gone from the store".to_string(),
            Err(e) => format!("could not move it aside ({e})"),
        };
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "{digest} is corrupt: its stored bytes hash to {actual}; {place} and dropped it from the index; put the original again to restore it"
            ),
        )
    }

    /// Moves a blob into `quarantine/` and drops its row.
    fn quarantine(&self, digest: &Digest) -> Result<Option<PathBuf>> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let to = self.layout.quarantine().join(format!("{}.{stamp}", digest.hex()));
        self.write(|tx| {
            let from = self.layout.blob(digest);
            let moved = match fs::rename(&from, &to) {
                Ok(()) => Some(to.clone()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("quarantine", &from, e)),
            };
            index::delete(tx, digest).map_err(|e| self.idx_err(e))?;
            tracing::info!(%digest, "quarantined a corrupt blob");
            Ok(moved)
        })
    }

    /// Removes a blob (with its keys), or a key (with its blob when nothing
    /// else names it and it is not pinned). Pinned blobs need `force`.
    pub fn remove(&self, target: &Target, force: bool) -> Result<Removed> {
        let mut moved = Vec::new();
        let removed = self.write(|tx| {
            let idx = |e| self.idx_err(e);
            let (digest, key) = match target {
                Target::Digest(d) => (*d, None),
                Target::Key(k) => {
                    (index::key(tx, k).map_err(idx)?.ok_or_else(|| unknown_key(k))?, Some(k))
                }
            };
            let row = index::blob(tx, &digest).map_err(idx)?;
            if let Some(k) = key {
                index::unbind_key(tx, k).map_err(idx)?;
                let others = index::keys_of(tx, &digest).map_err(idx)?;
                let blob_removed =
                    others.is_empty() && row.as_ref().is_some_and(|r| force || !r.pinned);
                if blob_removed {
                    moved = self.evict(tx, &[digest])?;
                }
                return Ok(Removed::Key { key: k.clone(), digest, blob_removed });
            }
            let row = row.ok_or_else(|| not_stored(&digest))?;
            if row.pinned && !force {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{digest} is pinned; unpin it first (larder unpin {digest}) or pass --force"
                    ),
                ));
            }
            let keys = index::keys_of(tx, &digest).map_err(idx)?;
            moved = self.evict(tx, &[digest])?;
            Ok(Removed::Blob { digest, keys })
        })?;
        for path in moved {
            let _ = fs::remove_file(path);
        }
        Ok(removed)
    }

    /// Pins or unpins the blob `target` names.
    pub fn set_pinned(&self, target: &Target, pinned: bool) -> Result<Digest> {
        self.write(|tx| {
            let idx = |e| self.idx_err(e);
            let digest = match target {
                Target::Digest(d) => *d,
                Target::Key(k) => index::key(tx, k).map_err(idx)?.ok_or_else(|| unknown_key(k))?,
            };
            if index::blob(tx, &digest).map_err(idx)?.is_none() {
                return Err(not_stored(&digest));
            }
            index::set_pinned(tx, &digest, pinned).map_err(idx)?;
            Ok(digest)
        })
    }

    /// Every entry, most recently used first.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let rows = index::list(&self.lock()).map_err(|e| self.idx_err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| Entry {
                digest: r.digest,
                size: r.size,
                pinned: r.pinned,
                used_at: r.used_at,
                created_at: r.created_at,
                keys: r.keys,
            })
            .collect())
    }

    /// Digests from least to most recently used (eviction order, pins included).
    pub fn recency_order(&self) -> Result<Vec<Digest>> {
        let mut rows = index::list(&self.lock()).map_err(|e| self.idx_err(e))?;
        rows.sort_by_key(|r| r.last_use);
        Ok(rows.into_iter().map(|r| r.digest).collect())
    }

    /// The store's totals.
    pub fn stats(&self) -> Result<Stats> {
        let t = index::totals(&self.lock()).map_err(|e| self.idx_err(e))?;
        Ok(Stats {
            entries: t.entries,
            bytes: t.bytes,
            pinned_bytes: t.pinned_bytes,
            capacity: self.capacity,
            usage_ratio: ratio(t.bytes, self.capacity),
            hits: t.hits,
            misses: t.misses,
        })
    }

    /// Bytes held over capacity (cloud-manager's `usage_ratio`).
    pub fn usage_ratio(&self) -> Result<f64> {
        Ok(self.stats()?.usage_ratio)
    }

    /// Evicts least-recently-used unpinned blobs until at most `to` bytes (by
    /// default the capacity) are held, and cleans up after dead processes.
    pub fn gc(&self, to: Option<u64>) -> Result<GcReport> {
        let swept = self.sweep()?;
        let target = to.unwrap_or(self.capacity);
        let mut moved = Vec::new();
        let (evicted, freed, bytes) = self.write(|tx| {
            let idx = |e| self.idx_err(e);
            let before = index::totals(tx).map_err(idx)?;
            let excess = before.bytes.saturating_sub(target);
            let mut victims = Vec::new();
            let mut freed = 0;
            if excess > 0 {
                index::lru_unpinned(tx, |d, size| {
                    victims.push(d);
                    freed += size;
                    freed < excess
                })
                .map_err(idx)?;
            }
            moved = self.evict(tx, &victims)?;
            Ok((victims.len() as u64, freed, before.bytes - freed))
        })?;
        for path in moved {
            let _ = fs::remove_file(path);
        }
        Ok(GcReport { evicted, freed, swept, bytes, target })
    }

    /// Re-hashes every blob, quarantines the corrupt ones, and finds index rows
    /// without files and files without rows. With `repair`, drops the former and
    /// adds the latter back (which rebuilds a lost index from the content folder).
    pub fn verify(&self, repair: bool, progress: &dyn Progress) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let rows = index::all_blobs(&self.lock()).map_err(|e| self.idx_err(e))?;
        let total: u64 = rows.iter().map(|(_, s)| s).sum();
        progress.start("verifying", Some(total));
        let mut indexed = HashSet::new();
        for (digest, size) in rows {
            indexed.insert(digest);
            let path = self.layout.blob(&digest);
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    report.missing.push(digest);
                    progress.advance(size);
                    continue;
                }
                Err(e) => return Err(Error::io("open", &path, e)),
            };
            match copy_hashing(&mut file, None, u64::MAX, progress) {
                Ok((actual, n)) => {
                    report.checked += 1;
                    report.bytes += n;
                    if actual != digest || n != size {
                        if let Some(q) = self.quarantine(&digest)? {
                            report.corrupt.push((digest, q));
                        }
                    }
                }
                Err(CopyError::Read(e)) => return Err(Error::io("read", &path, e)),
                Err(_) => return Err(Error::new(ErrorKind::Io, "unexpected copy failure")),
            }
        }
        progress.finish();
        for shard in read_dir_sorted(&self.layout.content_root())? {
            for path in read_dir_sorted(&shard)? {
                let parsed = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<Digest>().ok());
                match parsed {
                    Some(d) if indexed.contains(&d) => {}
                    _ => report.orphans.push(path),
                }
            }
        }
        if repair {
            self.repair(&mut report)?;
        }
        Ok(report)
    }

    fn repair(&self, report: &mut VerifyReport) -> Result<()> {
        let missing = report.missing.clone();
        report.dropped = self.write(|tx| {
            let mut dropped = 0;
            for digest in &missing {
                if !self.layout.blob(digest).exists() {
                    index::delete(tx, digest).map_err(|e| self.idx_err(e))?;
                    dropped += 1;
                }
            }
            Ok(dropped)
        })?;
        for path in report.orphans.clone() {
            let named =
                path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<Digest>().ok());
            let hashed = File::open(&path)
                .ok()
                .and_then(|mut f| copy_hashing(&mut f, None, u64::MAX, &NoProgress).ok());
            match (named, hashed) {
                (Some(name), Some((actual, size)))
                    if name == actual && path == self.layout.blob(&name) =>
                {
                    let adopted = self.write(|tx| {
                        if index::blob(tx, &name).map_err(|e| self.idx_err(e))?.is_some() {
                            return Ok(false);
                        }
                        index::insert(tx, &name, size, false).map_err(|e| self.idx_err(e))?;
                        Ok(true)
                    })?;
                    report.adopted += u64::from(adopted);
                }
                _ => {
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let to = self.layout.quarantine().join(format!("{name}.orphan"));
                    fs::rename(&path, &to).map_err(|e| Error::io("quarantine", &path, e))?;
                }
            }
        }
        if report.adopted > 0 {
            self.gc(None)?;
        }
        Ok(())
    }

    /// Cleans `tmp/` of what dead processes left: partial writes are deleted; a
    /// complete blob that was linked into `content/` but never recorded is
    /// unlinked; an eviction that never committed is put back. Returns how many
    /// leftovers it handled.
    pub fn sweep(&self) -> Result<u64> {
        let tmp = self.layout.tmp();
        let mut dead = Vec::new();
        for path in read_dir_sorted(&tmp)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if let Some((owner, kind)) = parse_temp(name)
                && !owner.is_alive()
            {
                dead.push((path, kind));
            }
        }
        if dead.is_empty() {
            return Ok(0);
        }
        let count = dead.len() as u64;
        self.write(|tx| {
            for (path, kind) in &dead {
                let digest = match kind {
                    TempKind::Partial => None,
                    TempKind::Put(hex) | TempKind::Evict(hex) => hex.parse::<Digest>().ok(),
                };
                let row = match digest {
                    Some(d) => index::blob(tx, &d).map_err(|e| self.idx_err(e))?,
                    None => None,
                };
                match (kind, digest) {
                    (TempKind::Put(_), Some(d)) if row.is_none() => {
                        let dest = self.layout.blob(&d);
                        if same_file(&dest, path) {
                            let _ = fs::remove_file(&dest);
                        }
                    }
                    (TempKind::Evict(_), Some(d)) if row.is_some() => {
                        let dest = self.layout.blob(&d);
                        if !dest.exists() {
                            let _ = fs::rename(path, &dest);
                        }
                    }
                    _ => {}
                }
                let _ = fs::remove_file(path);
                tracing::info!(path = %path.display(), "swept a leftover of a dead process");
            }
            Ok(())
        })?;
        Ok(count)
    }

    fn has_content_files(&self) -> bool {
        read_dir_sorted(&self.layout.content_root())
            .ok()
            .into_iter()
            .flatten()
            .any(|shard| fs::read_dir(shard).map(|mut d| d.next().is_some()).unwrap_or(false))
    }

    /// Flushes and closes the store (cloud-manager's `close`). Dropping the
    /// store does the same, without reporting errors.
    pub fn close(self) -> Result<()> {
        let conn = self.conn.into_inner().unwrap_or_else(|p| p.into_inner());
        let index = self.layout.index();
        conn.execute_batch("PRAGMA optimize").map_err(|e| Error::index(&index, e))?;
        conn.close().map_err(|(_, e)| Error::index(&index, e))
    }

    /// Fills the index with `count` synthetic unpinned entries of `size` bytes
    /// that have no content files, for benchmarks of a large index.
    #[doc(hidden)]
    pub fn bench_fill_index(&self, count: u64, size: u64) -> Result<()> {
        self.write(|tx| {
            for i in 0..count {
                let digest = Digest::of(format!("bench-{i}").as_bytes());
                index::insert(tx, &digest, size, false).map_err(|e| self.idx_err(e))?;
            }
            Ok(())
        })
    }
}

/// A blob streamed into `tmp/`, hashed, not yet recorded.
struct Staged {
    temp: PathBuf,
    file: File,
    digest: Digest,
    size: u64,
    what: String,
}

fn check_home(home: &Path) -> Result<()> {
    match fsutil::owner(home) {
        Ok(owner) => {
            let me = fsutil::effective_uid();
            if owner != me {
                let who = fsutil::user_name(owner).map(|n| format!(" ({n})")).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "larder home {} belongs to uid {owner}{who}, not to you (uid {me}); set LARDER_HOME to a folder of your own",
                        home.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(home).map_err(|e| Error::io("create larder home", home, e))
        }
        Err(e) => Err(Error::io("open larder home", home, e)),
    }
}

fn link_into_place(temp: &Path, dest: &Path) -> Result<()> {
    let attempt = fs::hard_link(temp, dest);
    let attempt = match attempt {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            fs::hard_link(temp, dest)
        }
        other => other,
    };
    match attempt {
        Ok(()) => Ok(()),
        // An unindexed file from an earlier crash, or a filesystem without
        // hardlinks: replace it with the bytes just verified.
        Err(_) => fs::rename(temp, dest).map_err(|e| Error::io("store", dest, e)),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    out.sort();
    Ok(out)
}

fn ratio(bytes: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        if bytes == 0 { 0.0 } else { f64::INFINITY }
    } else {
        bytes as f64 / capacity as f64
    }
}

fn input_error(path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::new(
            ErrorKind::NotFound,
            format!("{} does not exist; check the path", path.display()),
        )
        .with_source(e)
    } else {
        Error::io("read", path, e)
    }
}

fn too_large(what: &str, size: u64, capacity: u64) -> Error {
    Error::new(
        ErrorKind::StoreFull,
        format!(
            "{what} ({}) is larger than the store's whole capacity ({}); raise the capacity (LARDER_CAPACITY or --capacity)",
            if size > capacity {
                format!("over {}", format_size(capacity))
            } else {
                format_size(size)
            },
            format_size(capacity)
        ),
    )
}

fn not_stored(digest: &Digest) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("{digest} is not in the store; `larder ls` lists what is"),
    )
}

fn unknown_key(key: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no entry has the key `{key}`; `larder ls` lists the keys"),
    )
}

fn clone_error(e: &Error) -> Error {
    Error::new(e.kind(), e.to_string())
}

#[cfg(test)]
mod tests;
