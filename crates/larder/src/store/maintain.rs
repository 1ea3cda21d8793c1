//! Keeping the store in shape: removing, pinning, garbage collection,
//! verification and repair, and sweeping up after dead processes.

use super::*;

impl Store {
    /// Removes a blob (with its keys), or a key (with its blob when nothing
    /// else names it and it is not pinned). Pinned blobs need `force`.
    pub fn remove(&self, target: &Target, force: bool) -> Result<Removed> {
        let mut journal = Journal::default();
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
                // The last name of a pinned blob goes only with the blob, or
                // the blob would stay pinned with nothing naming it.
                if others.is_empty() && !force && row.as_ref().is_some_and(|r| r.pinned) {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "{k} names {digest}, which is pinned; unpin it first (larder unpin {k}) \
                             or pass --force to remove both"
                        ),
                    ));
                }
                let blob_removed = others.is_empty() && row.is_some();
                if blob_removed {
                    self.evict(tx, &[digest], &mut journal)?;
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
            self.evict(tx, &[digest], &mut journal)?;
            Ok(Removed::Blob { digest, keys })
        });
        journal.finish(removed.is_ok());
        removed
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

    /// Evicts least-recently-used unpinned blobs until at most `to` bytes (by
    /// default the capacity) are held, and cleans up after dead processes.
    pub fn gc(&self, to: Option<u64>) -> Result<GcReport> {
        self.gc_with(&GcOptions { to, ..GcOptions::default() })
    }

    /// [`Store::gc`], with the other things `larder gc` can remove: blobs
    /// unused for a while and the quarantine; or only saying what would go.
    pub fn gc_with(&self, options: &GcOptions) -> Result<GcReport> {
        let swept = if options.dry_run { 0 } else { self.sweep()? };
        let target = options.to.unwrap_or(self.capacity);
        let cutoff = options.older_than.map(|age| {
            crate::time::now().saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX))
        });
        let mut journal = Journal::default();
        let outcome = self.write(|tx| {
            let idx = |e| self.idx_err(e);
            let before = index::totals(tx).map_err(idx)?;
            let excess = before.bytes.saturating_sub(target);
            let mut victims = Vec::new();
            let mut freed = 0;
            index::lru_unpinned(tx, |d, size, used_at| {
                let old = cutoff.is_some_and(|cutoff| used_at < cutoff);
                if freed < excess || old {
                    victims.push(d);
                    freed += size;
                }
                // Least recently used first: past the size, only the old ones remain to find.
                freed < excess || cutoff.is_some()
            })
            .map_err(idx)?;
            if !options.dry_run {
                self.evict(tx, &victims, &mut journal)?;
            }
            Ok((victims.len() as u64, freed, before.bytes - freed))
        });
        journal.finish(outcome.is_ok() && !options.dry_run);
        let (evicted, freed, bytes) = outcome?;
        let quarantine_emptied =
            if options.empty_quarantine { self.empty_quarantine(options.dry_run)? } else { 0 };
        Ok(GcReport {
            dry_run: options.dry_run,
            evicted,
            freed,
            quarantine_emptied,
            swept,
            bytes,
            target,
        })
    }

    /// Deletes the files of `quarantine/` (or, in a dry run, counts them).
    fn empty_quarantine(&self, dry_run: bool) -> Result<u64> {
        let mut removed = 0;
        for path in read_dir_sorted(&self.layout.quarantine())? {
            if !dry_run {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("delete", &path, e)),
                }
            }
            removed += 1;
        }
        Ok(removed)
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
        let mut good = Vec::new();
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
            let meta = file.metadata().map_err(|e| Error::io("read", &path, e))?;
            match copy_hashing(&mut file, None, u64::MAX, progress) {
                Ok((actual, n)) => {
                    report.checked += 1;
                    report.bytes += n;
                    if actual == digest && n == size {
                        good.push((digest, stamp(&meta)));
                    } else if let Some(q) = self.quarantine(&digest)? {
                        report.corrupt.push(Quarantined { digest, quarantined: q });
                    }
                }
                Err(CopyError::Read(e)) => return Err(Error::io("read", &path, e)),
                Err(_) => return Err(Error::new(ErrorKind::Io, "unexpected copy failure")),
            }
        }
        progress.finish();
        // Blobs that hashed right are trusted by later reads until they change.
        self.write(|tx| {
            for (digest, stamp) in &good {
                index::set_stamp(tx, digest, stamp).map_err(|e| self.idx_err(e))?;
            }
            Ok(())
        })?;
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
        report.clean = report.is_clean(repair);
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
            let hashed = File::open(&path).ok().and_then(|mut f| {
                let meta = f.metadata().ok()?;
                let (actual, size) = copy_hashing(&mut f, None, u64::MAX, &NoProgress).ok()?;
                Some((actual, size, stamp(&meta)))
            });
            match (named, hashed) {
                (Some(name), Some((actual, size, stamp)))
                    if name == actual && path == self.layout.blob(&name) =>
                {
                    let adopted = self.write(|tx| {
                        if index::blob(tx, &name).map_err(|e| self.idx_err(e))?.is_some() {
                            return Ok(false);
                        }
                        index::insert(tx, &name, size, false, Some(&stamp))
                            .map_err(|e| self.idx_err(e))?;
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

    pub(super) fn has_content_files(&self) -> bool {
        read_dir_sorted(&self.layout.content_root())
            .ok()
            .into_iter()
            .flatten()
            .any(|shard| fs::read_dir(shard).map(|mut d| d.next().is_some()).unwrap_or(false))
    }

    /// Fills the index with `count` synthetic unpinned entries of `size` bytes
    /// that have no content files, for benchmarks of a large index.
    #[doc(hidden)]
    pub fn bench_fill_index(&self, count: u64, size: u64) -> Result<()> {
        self.write(|tx| {
            for i in 0..count {
                let digest = Digest::of(format!("bench-{i}").as_bytes());
                index::insert(tx, &digest, size, false, None).map_err(|e| self.idx_err(e))?;
            }
            Ok(())
        })
    }
}
