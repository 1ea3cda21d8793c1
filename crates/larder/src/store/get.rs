//! Getting blobs out: lookups that count hits and misses, verified copies
//! and links, and quarantine of blobs whose bytes no longer match.

use super::*;

/// A blob found and opened for reading.
struct Opened {
    digest: Digest,
    file: File,
    size: u64,
    /// Whether its file is unchanged since its bytes last hashed right.
    trusted: bool,
}

impl Store {
    /// Marks `target` used (a hit), or counts a miss and says what is
    /// missing; its digest.
    pub fn mark_used(&self, target: &Target) -> Result<Digest> {
        Ok(self.open_blob(target)?.digest)
    }

    /// Looks `target` up, opens its file, and counts the hit or miss.
    fn open_blob(&self, target: &Target) -> Result<Opened> {
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
                    let unchanged = match (&row.stamp, file.metadata()) {
                        (Some(was), Ok(meta)) => *was == stamp(&meta),
                        _ => false,
                    };
                    let trusted = unchanged && !self.verify_reads;
                    Ok(Some((digest, Some(Opened { digest, file, size: row.size, trusted }))))
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
            Some((_, Some(opened))) => Ok(opened),
        }
    }

    /// Writes the blob `target` names to `out`, only after checking that its
    /// bytes still match its digest (unless its file is unchanged since they
    /// last did; see the store's module documentation).
    pub fn get_to_writer(
        &self,
        target: &Target,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        let Opened { digest, mut file, size, trusted } = self.open_blob(target)?;
        if !trusted {
            self.check_bytes(&digest, &mut file, size, progress)?;
        }
        file.rewind().map_err(|e| Error::io("read", &self.layout.blob(&digest), e))?;
        io::copy(&mut file, out).map_err(|e| {
            Error::new(ErrorKind::Io, format!("cannot write {digest} to the output: {e}"))
                .with_source(e)
        })?;
        Ok(digest)
    }

    /// Opens the blob `target` names for reading, after checking its bytes if
    /// its file changed since they last hashed right. Returns its digest, the
    /// file (at its start) and its size.
    pub(crate) fn open_verified(
        &self,
        target: &Target,
        progress: &dyn Progress,
    ) -> Result<(Digest, File, u64)> {
        let Opened { digest, mut file, size, trusted } = self.open_blob(target)?;
        if !trusted {
            self.check_bytes(&digest, &mut file, size, progress)?;
        }
        file.rewind().map_err(|e| Error::io("read", &self.layout.blob(&digest), e))?;
        Ok((digest, file, size))
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
        let opened = self.open_blob(target)?;
        self.deliver_to_path(opened, target, dest, mode, progress)
    }

    /// Writes a blob found by [`Store::lookup`] (its read noted by the
    /// caller, in a batch) to `dest`, as [`Store::get_to_path`] does.
    pub fn get_found_to_path(
        &self,
        found: Found,
        target: &Target,
        dest: &Path,
        mode: GetMode,
        progress: &dyn Progress,
    ) -> Result<(Digest, Delivery)> {
        let Found { digest, file, size, trusted, .. } = found;
        self.deliver_to_path(Opened { digest, file, size, trusted }, target, dest, mode, progress)
    }

    fn deliver_to_path(
        &self,
        opened: Opened,
        target: &Target,
        dest: &Path,
        mode: GetMode,
        progress: &dyn Progress,
    ) -> Result<(Digest, Delivery)> {
        let Opened { digest, mut file, size, trusted } = opened;
        // A device or a fifo (`-o /dev/null`) is written to, never replaced.
        if let Ok(meta) = fs::metadata(dest)
            && !meta.is_file()
            && !meta.is_dir()
        {
            if !trusted {
                self.check_bytes(&digest, &mut file, size, progress)?;
            }
            file.rewind().map_err(|e| Error::io("read", &self.layout.blob(&digest), e))?;
            let mut out = OpenOptions::new()
                .write(true)
                .open(dest)
                .map_err(|e| Error::io("write", dest, e))?;
            progress.start(&digest.to_string(), Some(size));
            let copied = copy_file_plain(&mut file, size, &mut out, progress);
            progress.finish();
            copied.map_err(|e| match e {
                CopyError::Write(e) => Error::io("write", dest, e),
                CopyError::Read(e) => Error::io("read", &self.layout.blob(&digest), e),
                CopyError::TooLarge(_) => Error::new(ErrorKind::Io, "unexpected size limit"),
            })?;
            return Ok((digest, Delivery::Copied));
        }
        let dest = if dest.is_dir() {
            let name = match target {
                Target::Key(k) => k.rsplit('/').next().unwrap_or(k).to_string(),
                Target::Digest(d) => d.hex(),
            };
            dest.join(name)
        } else {
            dest.to_path_buf()
        };
        let temp = crate::fsutil::output_temp(&dest);

        if mode == GetMode::Link {
            if !trusted {
                self.check_bytes(&digest, &mut file, size, progress)?;
            }
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
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io("write", &dest, e))?;
        progress.start(&digest.to_string(), Some(size));
        // The digest of the copy, not of the stored file, is what is checked:
        // what lands at `dest` is exactly what was verified.
        let copied = if trusted {
            copy_file_plain(&mut file, size, &mut out, progress).map(|_| digest)
        } else {
            copy_file_to_file(&mut file, size, &mut out, u64::MAX, false, &mut [], progress)
                .map(|(d, _)| d)
        };
        progress.finish();
        drop(out);
        let actual = match copied {
            Ok(actual) => actual,
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
        if !trusted {
            self.mark_verified(&digest, &file);
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
    pub(super) fn check_bytes(
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
            Ok((actual, _)) if actual == *digest => {
                self.mark_verified(digest, file);
                Ok(())
            }
            Ok((actual, _)) => Err(self.corrupt(digest, &actual)),
            Err(CopyError::Read(e)) => Err(Error::io("read", &self.layout.blob(digest), e)),
            Err(_) => Err(Error::new(ErrorKind::Io, "unexpected copy failure")),
        }
    }

    /// Records that `file` hashed right as it looks now, so later reads can
    /// skip the hash while it stays so. A failure only costs a later re-hash.
    fn mark_verified(&self, digest: &Digest, file: &File) {
        if let Ok(meta) = file.metadata() {
            let _ = self.write(|tx| {
                index::set_stamp(tx, digest, &stamp(&meta)).map_err(|e| self.idx_err(e))
            });
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
    pub(super) fn quarantine(&self, digest: &Digest) -> Result<Option<PathBuf>> {
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
}
