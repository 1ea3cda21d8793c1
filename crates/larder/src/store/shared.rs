//! What a long-running process that shares the store (a server) needs beyond
//! the command line: lookups that write nothing, reads recorded in batches,
//! uploads checked against the digest they claim, and key listings by prefix.

use super::*;

/// A blob found for reading, its file already open: eviction may rename it
/// away afterwards, but this descriptor keeps reading the same bytes.
#[derive(Debug)]
pub struct Found {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its open file, at the start.
    pub file: File,
    /// Whether its file is unchanged since its bytes last hashed right; if
    /// not, [`Store::check_found`] must re-hash it before it is served.
    pub trusted: bool,
    /// When the key was bound, or the blob stored, in seconds since the epoch.
    pub modified: i64,
}

/// A key and what it names, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key.
    pub key: String,
    /// Its blob.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// When the key was bound, in seconds since the epoch.
    pub modified: i64,
}

impl Store {
    /// Looks `target` up and opens its file, without writing anything: no
    /// recency update, no hit count (see [`Store::note_reads`]). `None` if it
    /// is not stored.
    pub fn lookup(&self, target: &Target) -> Result<Option<Found>> {
        let conn = self.lock();
        let idx = |e| self.idx_err(e);
        let (digest, key_time) = match target {
            Target::Digest(d) => (*d, None),
            Target::Key(k) => match index::key_with_time(&conn, k).map_err(idx)? {
                Some((d, t)) => (d, Some(t)),
                None => return Ok(None),
            },
        };
        let Some((row, created_at)) = index::blob_with_time(&conn, &digest).map_err(idx)? else {
            return Ok(None);
        };
        drop(conn);
        let path = self.layout.blob(&digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let unchanged = match (&row.stamp, file.metadata()) {
            (Some(was), Ok(meta)) => *was == stamp(&meta),
            _ => false,
        };
        Ok(Some(Found {
            digest,
            size: row.size,
            file,
            trusted: unchanged && !self.verify_reads,
            modified: key_time.unwrap_or(created_at),
        }))
    }

    /// Re-hashes a found blob that is not trusted, quarantining it if its
    /// bytes no longer match; leaves its file at the start.
    pub fn check_found(&self, found: &mut Found) -> Result<()> {
        if !found.trusted {
            self.check_bytes(&found.digest, &mut found.file, found.size, &NoProgress)?;
            found.trusted = true;
        }
        found.file.rewind().map_err(|e| Error::io("read", &self.layout.blob(&found.digest), e))
    }

    /// [`Store::lookup`] then [`Store::check_found`]: the blob ready to
    /// serve, or `None` if it is not stored or its bytes no longer match its
    /// digest (then it is quarantined and logged, and counts as absent).
    pub fn open_checked(&self, target: &Target) -> Result<Option<Found>> {
        let Some(mut found) = self.lookup(target)? else { return Ok(None) };
        match self.check_found(&mut found) {
            Ok(()) => Ok(Some(found)),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                tracing::warn!("{e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The size of each blob of `digests` the index holds, `None` for the
    /// others, in order: one lookup each under one lock, no file opened and
    /// nothing written (see [`Store::note_reads`]).
    pub fn stored_sizes(&self, digests: &[Digest]) -> Result<Vec<Option<u64>>> {
        let conn = self.lock();
        digests
            .iter()
            .map(|d| index::blob(&conn, d).map(|row| row.map(|r| r.size)))
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.idx_err(e))
    }

    /// Records reads made with [`Store::lookup`] in one transaction: the blobs
    /// used (most recent last) and the hits and misses counted.
    pub fn note_reads(&self, used: &[Digest], hits: u64, misses: u64) -> Result<()> {
        if used.is_empty() && hits == 0 && misses == 0 {
            return Ok(());
        }
        self.write(|tx| {
            let idx = |e| self.idx_err(e);
            for digest in used {
                index::touch(tx, digest).map_err(idx)?;
            }
            index::add(tx, "hits", hits).map_err(idx)?;
            index::add(tx, "misses", misses).map_err(idx)
        })
    }

    /// Stores what `reader` yields, failing without keeping anything if it is
    /// not the blob `expect` names, and binds `opts.key` to it. `what` names
    /// the stream in errors.
    pub fn put_checked(
        &self,
        reader: &mut dyn Read,
        what: &str,
        expect: Option<Digest>,
        opts: &PutOptions,
    ) -> Result<Digest> {
        if let Some(key) = &opts.key {
            validate_key(key)?;
        }
        let pending = self.stage_stream(reader, what, None, &NoProgress)?;
        if let Some(expected) = expect
            && pending.digest() != Some(expected)
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{what} hashes to {}, not to {expected}; nothing was stored",
                    pending.digest().map_or_else(|| "nothing".to_string(), |d| d.to_string())
                ),
            ));
        }
        pending.commit(opts)
    }

    /// Binds `key` to the stored blob `digest`.
    pub fn bind(&self, key: &str, digest: &Digest) -> Result<()> {
        validate_key(key)?;
        self.write(|tx| {
            let idx = |e| self.idx_err(e);
            if index::blob(tx, digest).map_err(idx)?.is_none() {
                return Err(not_stored(digest));
            }
            index::bind_key(tx, key, digest).map_err(idx)
        })
    }

    /// A number that changes whenever another connection (another handle, or
    /// another process) commits a change to the index; this handle's own
    /// changes leave it alone. Cheap: no disk access.
    pub fn changes(&self) -> Result<i64> {
        index::data_version(&self.lock()).map_err(|e| self.idx_err(e))
    }

    /// The index's WAL-index file (`index.sqlite-shm`), open for reading. Its
    /// first 48 bytes (SQLite's WAL-index header) are rewritten by every
    /// commit, whoever makes it: while they read the same, nothing was
    /// committed, and [`Store::changes`] need not be asked. `None` if there
    /// is no such file (the index is not in WAL mode).
    pub fn open_commit_marker(&self) -> Option<File> {
        let mut path = self.layout.index().into_os_string();
        path.push("-shm");
        File::open(path).ok()
    }

    /// Keys that start with `prefix`, in order, at most `limit` of them.
    pub fn keys_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<KeyEntry>> {
        let rows =
            index::keys_with_prefix(&self.lock(), prefix, limit).map_err(|e| self.idx_err(e))?;
        Ok(rows
            .into_iter()
            .map(|(key, digest, size, modified)| KeyEntry { key, digest, size, modified })
            .collect())
    }
}
