//! The local store with its remote tiers behind it: reads fall through the
//! tiers in order and fill the local one, checking what a remote sends
//! against its digest; writes go local first, then to every write-through
//! remote at once, and to write-back remotes from the upload queue.

use std::fs::File;
use std::path::Path;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::remote::{GrowingUpload, RemoteMode, Tier};
use crate::store::{Follower, PutOptions, Store, Target};

mod ops;
mod queue;
mod stats;

pub use ops::{GetTo, Put, Stored};
pub use queue::DrainReport;
pub use stats::{Figures, LarderStats, RemoteTierStats, TierStats};

/// The local tier and its remotes.
pub struct Larder {
    store: Store,
    remotes: Vec<Tier>,
    /// How to start a background uploader, when uploads are owed.
    uploader: Option<crate::home::StartUploader>,
}

/// What [`Larder::push`] did for one remote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    /// The remote's name.
    pub remote: String,
    /// Blobs sent.
    pub uploaded: u64,
    /// Blobs it had already.
    pub present: u64,
    /// Keys bound.
    pub keys: u64,
}

impl Larder {
    /// The store with these remotes behind it, in order.
    pub fn new(store: Store, remotes: Vec<Tier>) -> Larder {
        Larder { store, remotes, uploader: None }
    }

    /// Starts a background uploader with `start` when closing leaves uploads
    /// owed (see [`crate::Home::with_uploader`]).
    pub fn with_uploader(mut self, start: crate::home::StartUploader) -> Larder {
        self.uploader = Some(start);
        self
    }

    /// Starts the background uploader if uploads are owed and there is one.
    pub(crate) fn start_uploader_if_needed(&self) -> Result<()> {
        if let Some(start) = &self.uploader
            && self.uploader_needed()?
        {
            start(self.store.home());
        }
        Ok(())
    }

    /// The store and remotes a configuration describes.
    pub fn open(config: &crate::Config) -> Result<Larder> {
        let store =
            Store::open(&config.home, config.capacity)?.with_verify_reads(config.verify_reads);
        let remotes = config
            .remotes
            .iter()
            .map(|r| Tier::open(r, &config.http, &config.env))
            .collect::<Result<Vec<_>>>()?;
        Ok(Larder::new(store, remotes))
    }

    /// The local tier.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The remote tiers, in order.
    pub fn remotes(&self) -> &[Tier] {
        &self.remotes
    }

    /// Closes the local tier, leaving what the write-back remotes are owed
    /// to the background uploader (started now, if there is one to start).
    pub fn close_local(self) -> Result<()> {
        let owed = self.uploader.is_some() && self.uploader_needed()?;
        let home = self.store.home().to_path_buf();
        let Larder { store, uploader, .. } = self;
        store.close()?;
        if let (true, Some(start)) = (owed, uploader) {
            start(&home);
        }
        Ok(())
    }

    /// Sends what the write-back remotes are owed, then closes the local
    /// tier (cloud-manager's `close`). Uploads that fail stay queued for the
    /// next run, and the error says so.
    pub fn close(self) -> Result<()> {
        let report = self.drain(true, &crate::progress::NoProgress)?;
        self.store.close()?;
        if report.left > 0 {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} still owed and stay queued: {}",
                    crate::size::plural(report.left, "upload"),
                    report.last_error.unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// Makes sure the local tier holds `target`, fetching it from the first
    /// remote that has it. A remote's copy is
    /// kept only if it hashes to the digest asked for (or, for a key, that the
    /// remote gave).
    pub fn fetch(&self, target: &Target, progress: &dyn Progress) -> Result<Digest> {
        if self.store.contains(target.clone())? {
            return self.store.resolve(target);
        }
        self.fetch_each(target, |remote| self.fetch_from(remote, target, progress))
    }

    /// Makes sure the local tier holds every blob of `wanted` (digest and
    /// size), fetching the missing ones from the remotes a few at once and
    /// recording them in batches: one flush and one transaction per batch,
    /// not per blob. Each is checked against its digest as it arrives.
    pub(crate) fn fetch_all(&self, wanted: &[(Digest, u64)]) -> Result<()> {
        const BATCH: usize = 512;
        const SMALL_BLOB: u64 = 1 << 20;
        let mut missing = Vec::new();
        for (digest, size) in wanted {
            if !self.store.contains(Target::Digest(*digest))? {
                missing.push((*digest, *size));
            }
        }
        for chunk in missing.chunks(BATCH) {
            let small = chunk.iter().all(|(_, size)| *size <= SMALL_BLOB);
            let at_once = if small { SMALL_FETCHES_AT_ONCE } else { TRANSFERS_AT_ONCE };
            let staged =
                in_parallel_n(chunk, at_once, |(digest, size)| self.stage_blob(digest, *size));
            let mut pending = Vec::with_capacity(staged.len());
            for one in staged {
                // On an error the others are dropped, which removes them.
                pending.push(one?);
            }
            for stored in self.store.commit_staged(pending) {
                stored?;
            }
        }
        Ok(())
    }

    /// Streams the blob `digest` of `size` bytes from the first remote that
    /// has it into the store's staging area, checked.
    fn stage_blob(&self, digest: &Digest, size: u64) -> Result<crate::Pending<'_>> {
        let mut errors = Vec::new();
        for remote in &self.remotes {
            let blob = match remote.remote().open_sized(digest, size) {
                Ok(Some(blob)) => blob,
                Ok(None) => continue,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let what = format!("remote {}'s copy of {digest}", remote.name());
            let mut reader = blob.reader;
            let pending = self.store.stage_stream(
                &mut reader,
                &what,
                Some(size),
                &crate::progress::NoProgress,
            )?;
            if pending.digest() != Some(*digest) {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{what} hashes to {}: the remote's copy is corrupt and was not kept",
                        pending.digest().map_or_else(|| "nothing".into(), |d| d.to_string())
                    ),
                ));
            }
            return Ok(pending);
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!("no tier holds {digest}; was it pushed?"),
            )),
        }
    }

    pub(crate) fn fetch_from(
        &self,
        remote: &Tier,
        target: &Target,
        progress: &dyn Progress,
    ) -> Result<Option<Digest>> {
        self.fetch_from_into(remote, target, progress, None)
    }

    /// [`Larder::fetch`], writing `target` to `dest` in the same pass when it
    /// comes from a remote: a cold `get -o FILE` reads the remote once and
    /// writes the output as the bytes arrive, instead of copying the stored
    /// blob afterwards. The output appears at `dest` only once the bytes
    /// hashed right and are stored. `None`: the local tier had it (or `dest`
    /// is a folder or a device), nothing was written, and the store hands
    /// it out.
    pub fn fetch_to_path(
        &self,
        target: &Target,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<Option<Digest>> {
        if self.store.contains(target.clone())? {
            return Ok(None);
        }
        if self.remotes.is_empty() || std::fs::metadata(dest).is_ok_and(|m| !m.is_file()) {
            self.fetch_each(target, |remote| self.fetch_from(remote, target, progress))?;
            return Ok(None);
        }
        let temp = crate::fsutil::output_temp(dest);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io("write", dest, e))?;
        let fetched = self.fetch_each(target, |remote| {
            // A remote that failed part way leaves nothing for the next.
            out.set_len(0).map_err(|e| Error::io("write", dest, e))?;
            std::io::Seek::rewind(&mut out).map_err(|e| Error::io("write", dest, e))?;
            self.fetch_from_into(remote, target, progress, Some(&mut out))
        });
        let done = fetched.and_then(|digest| {
            std::fs::rename(&temp, dest).map_err(|e| Error::io("write", dest, e))?;
            Ok(Some(digest))
        });
        if done.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        done
    }

    /// Asks each remote in turn with `ask` until one has `target`; the
    /// first error if none had it and some failed, else the miss.
    fn fetch_each(
        &self,
        target: &Target,
        mut ask: impl FnMut(&Tier) -> Result<Option<Digest>>,
    ) -> Result<Digest> {
        let mut errors = Vec::new();
        for remote in &self.remotes {
            match ask(remote) {
                Ok(Some(digest)) => {
                    for e in &errors {
                        tracing::warn!("{e}");
                    }
                    tracing::info!("{digest}: served by remote {}", remote.name());
                    if let Err(e) = self.store.count_remote_hit(remote.name()) {
                        tracing::warn!("counting the hit of remote {}: {e}", remote.name());
                    }
                    return Ok(digest);
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            let first = errors.remove(0);
            for e in &errors {
                tracing::warn!("{e}");
            }
            return Err(first);
        }
        // Counts the miss, and says what is missing as the store does.
        self.store.mark_used(target)
    }

    fn fetch_from_into(
        &self,
        remote: &Tier,
        target: &Target,
        progress: &dyn Progress,
        copy_to: Option<&mut std::fs::File>,
    ) -> Result<Option<Digest>> {
        if let Target::Key(k) = target {
            // A bad key is the caller's mistake, not the remote's corruption.
            crate::validate_key(k)?;
        }
        let Some(blob) = remote.remote().open(target)? else { return Ok(None) };
        let (expect, key) = match (target, blob.digest) {
            (Target::Digest(d), _) => (Some(*d), None),
            (Target::Key(k), Some(d)) => (Some(d), Some(k.clone())),
            // Without the digest there is nothing to check the bytes against.
            (Target::Key(k), None) => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "remote {} sent {k} without its digest (X-Larder-Digest); is it a larder server?",
                        remote.name()
                    ),
                ));
            }
        };
        let what = match target {
            Target::Digest(d) => format!("remote {}'s copy of {d}", remote.name()),
            Target::Key(k) => format!("remote {}'s copy of {k}", remote.name()),
        };
        progress.start(&what, blob.size);
        let mut metered = Metered { inner: blob.reader, progress };
        let mut tee;
        let reader: &mut dyn std::io::Read = match copy_to {
            Some(out) => {
                tee = Tee { inner: &mut metered, out };
                &mut tee
            }
            None => &mut metered,
        };
        let stored = self.store.put_checked(
            reader,
            &what,
            expect,
            &PutOptions { key, pin: false, ..Default::default() },
        );
        progress.finish();
        match stored {
            Ok(digest) => Ok(Some(digest)),
            Err(e) if e.kind() == ErrorKind::InvalidInput => Err(Error::new(
                ErrorKind::Corrupt,
                format!("{e}: the remote's copy is corrupt and was not kept"),
            )),
            Err(e) => Err(e),
        }
    }

    /// Whether any tier holds `target`.
    pub fn contains(&self, target: &Target) -> Result<bool> {
        if self.store.contains(target.clone())? {
            tracing::info!("{}: in the local tier", target);
            return Ok(true);
        }
        for remote in &self.remotes {
            tracing::debug!("asking remote {} for {}", remote.name(), target);
            if remote.remote().head(target)?.is_some() {
                tracing::info!("{}: in remote {}", target, remote.name());
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The names of the tiers that hold `target`: `local` and remotes' names.
    pub fn where_is(&self, target: &Target) -> Result<Vec<String>> {
        let mut tiers = Vec::new();
        if self.store.contains(target.clone())? {
            tiers.push("local".to_string());
        }
        for remote in &self.remotes {
            if remote.remote().head(target)?.is_some() {
                tiers.push(remote.name().to_string());
            }
        }
        Ok(tiers)
    }

    /// Whether some remote takes writes.
    pub fn has_writable_remote(&self) -> bool {
        self.remotes.iter().any(Tier::writable)
    }

    /// An error saying how to add one unless a remote takes writes.
    pub fn require_writable_remote(&self) -> Result<()> {
        if self.has_writable_remote() { Ok(()) } else { Err(no_writable_remote()) }
    }

    /// Whether uploads are owed to a write-back remote: then a background
    /// uploader should be running (the binary starts one; it exits at once
    /// if another drains this home's queue).
    pub fn uploader_needed(&self) -> Result<bool> {
        let write_back = self.remotes.iter().any(|r| r.mode() == RemoteMode::WriteBack);
        Ok(write_back && self.store.has_queued_uploads()?)
    }

    /// Options for a put that owes the write-back remotes an upload.
    pub fn put_options(&self, key: Option<String>, pin: bool) -> PutOptions {
        let upload_to = self
            .remotes
            .iter()
            .filter(|r| r.mode() == RemoteMode::WriteBack)
            .map(|r| r.name().to_string())
            .collect();
        PutOptions { key, pin, upload_to }
    }

    /// Sends the stored blob `digest` (and `key`, bound to it) to every
    /// write-through remote; write-back ones get it from the queue.
    pub fn send(&self, digest: &Digest, key: Option<&str>) -> Result<()> {
        for remote in self.remotes.iter().filter(|r| r.mode() == RemoteMode::WriteThrough) {
            self.send_to(remote, digest, key)?;
        }
        Ok(())
    }

    /// [`Larder::send`] (or, with `now`, [`Larder::send_now`]) for many
    /// blobs, a few at once; one result for each, in order.
    pub fn send_all(&self, items: &[(Digest, Option<String>)], now: bool) -> Vec<Result<()>> {
        in_parallel(items, |(digest, key)| {
            if now {
                self.send_now(digest, key.as_deref())
            } else {
                self.send(digest, key.as_deref())
            }
        })
    }

    /// Sends the stored blob `digest` (and `key`) to every remote that takes
    /// writes now, write-back ones included (whose queue it then leaves).
    pub fn send_now(&self, digest: &Digest, key: Option<&str>) -> Result<()> {
        for remote in self.remotes.iter().filter(|r| r.writable()) {
            self.send_to(remote, digest, key)?;
        }
        self.owed_no_more(digest, key)
    }

    pub(crate) fn send_to(
        &self,
        remote: &Tier,
        digest: &Digest,
        key: Option<&str>,
    ) -> Result<bool> {
        let Some(found) = self.store.lookup(&Target::Digest(*digest))? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{digest} left the local tier before it could be sent to {}",
                    remote.name()
                ),
            ));
        };
        let mut found = found;
        self.store.check_found(&mut found)?;
        let sent = remote.remote().upload(digest, found.file, found.size)?;
        if let Some(key) = key {
            remote.remote().bind(key, digest)?;
        }
        Ok(sent)
    }

    /// Stores a file and sends it to every remote that takes writes; the
    /// digest comes back only once they have it (cloud-manager's `upload`).
    pub fn upload(&self, path: &Path) -> Result<Digest> {
        self.require_writable_remote()?;
        self.put_uploading(path, &self.put_options(None, false), &crate::progress::NoProgress)
    }

    /// Stores the file at `path` and sends it to every remote that takes
    /// writes. A remote that can take the bytes as they are staged (a
    /// folder) is sent them while they are hashed; the others are sent the
    /// staged file once hashed, while the local copy is flushed and
    /// recorded. If an upload fails the local copy stays, and the error
    /// says so.
    pub fn put_uploading(
        &self,
        path: &Path,
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        if let Some(key) = &opts.key {
            crate::validate_key(key)?;
        }
        let mut growing = Vec::new();
        let mut whole = Vec::new();
        for remote in self.remotes.iter().filter(|r| r.writable()) {
            match remote.remote().begin_upload() {
                Ok(Some(upload)) => growing.push((remote.remote(), upload)),
                Ok(None) => whole.push(remote.remote()),
                Err(e) => {
                    // Sent whole instead, which says what is wrong if it still is.
                    tracing::info!("remote {}: {e}", remote.name());
                    whole.push(remote.remote());
                }
            }
        }
        let pending = {
            let mut followers: Vec<&mut dyn Follower> =
                growing.iter_mut().map(|(_, upload)| &mut **upload as &mut dyn Follower).collect();
            self.store.stage_path_following(path, &mut followers, progress)?
        };
        let (Some(digest), size) = (pending.digest(), pending.size()) else {
            return Err(Error::new(ErrorKind::Io, "nothing was staged"));
        };
        // Whole files: one handle per remote, opened before the commit
        // renames the file. A growing upload that missed bytes (the kernel
        // could not copy them) is sent whole too.
        let mut sends = Vec::new();
        for (remote, upload) in growing {
            if upload.covered() == size {
                sends.push((remote, Outgoing::Growing(upload)));
            } else {
                sends.push((remote, Outgoing::Whole(pending.open()?)));
            }
        }
        for remote in whole {
            sends.push((remote, Outgoing::Whole(pending.open()?)));
        }
        let key = opts.key.as_deref();
        let (stored, sent) = std::thread::scope(|scope| {
            let uploads: Vec<_> = sends
                .into_iter()
                .map(|(remote, send)| {
                    scope.spawn(move || {
                        match send {
                            Outgoing::Whole(file) => remote.upload(&digest, file, size)?,
                            Outgoing::Growing(upload) => upload.finish(&digest)?,
                        };
                        if let Some(key) = key {
                            remote.bind(key, &digest)?;
                        }
                        Ok::<(), Error>(())
                    })
                })
                .collect();
            let stored = pending.commit(opts);
            let sent: Vec<Result<()>> = uploads
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::new(ErrorKind::Io, "an upload thread panicked; see the log"))
                    })
                })
                .collect();
            (stored, sent)
        });
        let digest = stored?;
        if let Some(e) = sent.into_iter().find_map(Result::err) {
            return Err(Error::new(e.kind(), format!("{digest} is stored locally, but: {e}")));
        }
        self.owed_no_more(&digest, key)?;
        Ok(digest)
    }

    /// Sends everything the local tier holds to every remote that takes
    /// writes, blobs the remote lacks and every key.
    pub fn push(&self, progress: &dyn Progress) -> Result<Vec<PushReport>> {
        self.require_writable_remote()?;
        // What the queue owes goes first, so it leaves the queue.
        self.drain(true, progress)?;
        let entries = self.store.list()?;
        let mut reports = Vec::new();
        for remote in self.remotes.iter().filter(|r| r.writable()) {
            let mut report =
                PushReport { remote: remote.name().to_string(), ..PushReport::default() };
            progress.start(&format!("pushing to {}", remote.name()), Some(entries.len() as u64));
            for entry in &entries {
                if self.send_to(remote, &entry.digest, None)? {
                    report.uploaded += 1;
                } else {
                    report.present += 1;
                }
                for key in &entry.keys {
                    remote.remote().bind(key, &entry.digest)?;
                    report.keys += 1;
                }
                progress.advance(1);
            }
            progress.finish();
            reports.push(report);
        }
        let left = self.store.queued_uploads()?;
        if let Some(first) = left.first() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} uploads are still owed (to {}{}); larder tries again later, or run larder push again",
                    left.len(),
                    first.remote,
                    first.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                ),
            ));
        }
        Ok(reports)
    }
}

/// Transfers at once: enough to hide a remote's round trips, few enough
/// not to swamp it.
const TRANSFERS_AT_ONCE: usize = 8;

/// Small downloads at once. A small object costs a round trip and almost no
/// work on either side, and servers answer each after a pause of their own
/// (tens of milliseconds for some), so many wait at once.
const SMALL_FETCHES_AT_ONCE: usize = 32;

/// Runs `job` on every item, a few at once on scoped threads; the results
/// in the items' order.
pub(crate) fn in_parallel<T: Sync, R: Send>(items: &[T], job: impl Fn(&T) -> R + Sync) -> Vec<R> {
    in_parallel_n(items, TRANSFERS_AT_ONCE, job)
}

/// [`in_parallel`], `at_once` at a time.
fn in_parallel_n<T: Sync, R: Send>(
    items: &[T],
    at_once: usize,
    job: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(&job).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<R>>> =
        std::sync::Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..at_once.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = job(item);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

fn no_writable_remote() -> Error {
    Error::new(
        ErrorKind::Config,
        "no remote takes writes: add a [[remote]] with mode = \"write-through\" to the configuration",
    )
}

/// Writes what is read through it to `out` as well.
struct Tee<'a> {
    inner: &'a mut dyn std::io::Read,
    out: &'a mut std::fs::File,
}

impl std::io::Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(self.out, &buf[..n])?;
        Ok(n)
    }
}

/// Reports bytes read from a remote.
struct Metered<'a> {
    inner: Box<dyn std::io::Read + Send>,
    progress: &'a dyn Progress,
}

impl std::io::Read for Metered<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// How a staged blob goes to one remote.
enum Outgoing {
    /// The staged file, read whole once hashed.
    Whole(File),
    /// The bytes it was handed while they were staged.
    Growing(Box<dyn GrowingUpload>),
}

#[cfg(test)]
mod tests;
