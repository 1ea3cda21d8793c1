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
mod get;
mod index;
mod journal;
mod layout;
mod maintain;
mod put;
mod shared;
mod uploads;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;
use crate::holder::ProcessId;
use crate::progress::{NoProgress, Progress};
use crate::size::format_size;
pub use copy::Follower;
pub(crate) use copy::copy_range;
use copy::{CopyError, copy_file_plain, copy_file_to_file, copy_hashing};
pub(crate) use index::DownloadVersion;
pub use index::QueuedUpload;
use journal::Journal;
use layout::{Layout, TempKind, parse_temp};
pub use put::Pending;
pub use shared::{Found, KeyEntry};

/// What a command names: a blob by its digest, or a key bound to one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// The digest (`sha256:…`) or the key, as the command line takes them.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Digest(d) => d.fmt(f),
            Target::Key(k) => f.write_str(k),
        }
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

/// The prefix of the keys larder binds for itself (recipe downloads, under
/// `larder/downloads/`). Their names are computable from a public recipe, so
/// only larder may bind them: users and the HTTP door may read them, not
/// write them.
pub const INTERNAL_KEY_PREFIX: &str = "larder/";

/// Checks a key a user asks to bind: a valid key, and not one of larder's own.
pub fn validate_user_key(key: &str) -> Result<()> {
    validate_key(key)?;
    if key.starts_with(INTERNAL_KEY_PREFIX) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "key `{key}` is under `{INTERNAL_KEY_PREFIX}`, which larder keeps for itself; \
                 choose another name"
            ),
        ));
    }
    Ok(())
}

/// Options for a put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Bind this key to the blob.
    pub key: Option<String>,
    /// Pin the blob so eviction never removes it.
    pub pin: bool,
    /// Write-back remotes that are owed the blob (and key): queued in the
    /// same transaction that stores it, so a crash cannot lose the upload.
    pub upload_to: Vec<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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

/// What [`Store::gc_with`] removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Evict least-recently-used unpinned blobs down to this many bytes
    /// (the capacity by default).
    pub to: Option<u64>,
    /// Also evict unpinned blobs not used for this long (ccache's
    /// `--evict-older-than`).
    pub older_than: Option<std::time::Duration>,
    /// Say what would go, and remove nothing.
    pub dry_run: bool,
    /// Delete what `quarantine/` holds (corrupt blobs kept for inspection).
    pub empty_quarantine: bool,
}

/// What `gc` did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Whether nothing was removed: the figures say what would have been.
    pub dry_run: bool,
    /// Blobs evicted.
    pub evicted: u64,
    /// Bytes they held.
    pub freed: u64,
    /// Files deleted from `quarantine/`.
    pub quarantine_emptied: u64,
    /// Leftovers of dead processes cleaned from `tmp/`.
    pub swept: u64,
    /// Bytes in use afterwards.
    pub bytes: u64,
    /// The target it aimed for.
    pub target: u64,
}

/// What `verify` found (and, with repair, fixed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Blobs whose bytes did not match, with where they were quarantined.
    pub corrupt: Vec<Quarantined>,
    /// Indexed blobs whose file is gone.
    pub missing: Vec<Digest>,
    /// Files in the content folder the index does not know.
    pub orphans: Vec<PathBuf>,
    /// Orphans added back to the index (with repair).
    pub adopted: u64,
    /// Index rows of missing files dropped (with repair).
    pub dropped: u64,
    /// Whether the store was found consistent (after any repair).
    pub clean: bool,
}

/// A blob whose bytes did not match its digest, moved aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    /// The digest it was stored under.
    pub digest: Digest,
    /// Where its file went.
    pub quarantined: PathBuf,
}

impl VerifyReport {
    /// Whether what was found leaves the store consistent, after a repair
    /// if there was one.
    fn is_clean(&self, repaired: bool) -> bool {
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
    verify_reads: bool,
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
            verify_reads: false,
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

    /// Re-hash every blob on every read, even one whose file is unchanged since
    /// it last hashed right. Off by default; see the module documentation for why.
    pub fn with_verify_reads(mut self, on: bool) -> Store {
        self.verify_reads = on;
        self
    }

    /// The home this store lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
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

    /// Whether the store (the local tier) holds `target`.
    pub fn contains(&self, target: impl Into<Target>) -> Result<bool> {
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

    /// What `text` names, as [`Target::parse`] reads it, except that a digest
    /// may be shortened to a prefix of at least 4 hex digits (`sha256:5f2b`,
    /// as `larder ls` prints them) if one stored blob alone starts with it.
    pub fn parse_target(&self, text: &str) -> Result<Target> {
        let parsed = Target::parse(text);
        let Some(hex) = text.strip_prefix("sha256:") else { return parsed };
        if parsed.is_ok()
            || !(MIN_PREFIX..64).contains(&hex.len())
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return parsed;
        }
        let prefix = format!("sha256:{}", hex.to_ascii_lowercase());
        let found =
            index::digests_starting(&self.lock(), &prefix, 3).map_err(|e| self.idx_err(e))?;
        match found[..] {
            [digest] => Ok(Target::Digest(digest)),
            [] => Err(Error::new(
                ErrorKind::NotFound,
                format!("no stored blob's digest starts with {prefix}; `larder ls` lists them"),
            )),
            _ => {
                let shown: Vec<String> = found.iter().take(2).map(|d| d.to_string()).collect();
                Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{prefix} is ambiguous: {} and {}{} start with it; give more digits",
                        shown[0],
                        shown[1],
                        if found.len() > 2 { " and more" } else { "" }
                    ),
                ))
            }
        }
    }

    /// Counts a read the remote `remote` served because this tier lacked it.
    pub fn count_remote_hit(&self, remote: &str) -> Result<()> {
        self.write(|tx| index::count_remote_hit(tx, remote).map_err(|e| self.idx_err(e)))
    }

    /// The reads the remote `remote` served, as [`Store::count_remote_hit`] counted them.
    pub fn remote_hits(&self, remote: &str) -> Result<u64> {
        index::remote_hits(&self.lock(), remote).map_err(|e| self.idx_err(e))
    }

    /// Sets the hits and misses (the remotes' too) back to zero, as
    /// `ccache --zero-stats` does; what the store holds is not touched.
    pub fn zero_stats(&self) -> Result<()> {
        self.write(|tx| index::zero_hits(tx).map_err(|e| self.idx_err(e)))
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

    /// What the server last said of the download kept under the internal key
    /// `key` (its ETag and Last-Modified, and when), if that is still the
    /// blob the key names.
    pub(crate) fn download_version(&self, key: &str) -> Result<Option<DownloadVersion>> {
        index::download_version(&self.lock(), key).map_err(|e| self.idx_err(e))
    }

    /// Records the ETag and Last-Modified the server gave for the download
    /// `digest` kept under the internal key `key`. Kept beside the index's
    /// own rows, never under a key anyone can bind.
    pub(crate) fn set_download_validators(
        &self,
        key: &str,
        digest: &Digest,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<()> {
        self.write(|tx| {
            index::set_download_validators(tx, key, digest, etag, last_modified)
                .map_err(|e| self.idx_err(e))
        })
    }

    /// Closes the store. Dropping the store does the
    /// same, without reporting errors. Every change is already committed.
    pub fn close(self) -> Result<()> {
        let conn = self.conn.into_inner().unwrap_or_else(|p| p.into_inner());
        let index = self.layout.index();
        conn.close().map_err(|(_, e)| Error::index(&index, e))
    }
}

/// How a content file looks: inode, size and modification time, to the
/// nanosecond.
///
/// Bytes are hashed as they enter the store, and a read re-hashes them only
/// when the file no longer looks as it did then. Every write to a file through
/// the filesystem changes its modification time, and content files are
/// read-only, so anything that modifies one (a process writing to a hardlink
/// `get --link` handed out, a hand edit) is caught at the next read, which
/// re-hashes and quarantines. What a stamp cannot see is the disk itself
/// flipping bits under an unchanged file: `larder verify` re-hashes everything
/// for that, and `verify_reads` makes every read re-hash, for users who would
/// rather pay SHA-256 on each read (about 0.5 s per GiB on one core).
pub(crate) fn stamp(meta: &fs::Metadata) -> String {
    format!("{}:{}:{}.{:09}", meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec())
}

/// Refuses a home another user owns; creates a missing one.
pub(crate) fn check_home(home: &Path) -> Result<()> {
    match fs::metadata(home) {
        Ok(meta) => {
            let me = fsutil::effective_uid();
            let owner = meta.uid();
            let shared = crate::sharing::is_shared(&meta);
            if owner == me || (shared && crate::sharing::in_group(meta.gid())) {
                if shared {
                    crate::sharing::let_group_write();
                }
                return Ok(());
            }
            let who = fsutil::user_name(owner).map(|n| format!(" ({n})")).unwrap_or_default();
            let group = crate::sharing::group_name(meta.gid())
                .unwrap_or_else(|| format!("gid {}", meta.gid()));
            let why = if shared {
                format!(
                    "; it is shared with group {group}, which you are not in (ask for it: usermod -aG {group} YOU)"
                )
            } else {
                "; set LARDER_HOME to a folder of your own, or ask its owner to share it with a group of yours (larder init --shared-group GROUP)".to_string()
            };
            Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "larder home {} belongs to uid {owner}{who}, not to you (uid {me}){why}",
                    home.display()
                ),
            ))
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

/// The fewest hex digits a shortened digest may have, as git asks.
const MIN_PREFIX: usize = 4;

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
