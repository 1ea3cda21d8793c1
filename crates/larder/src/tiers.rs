//! The local store with its remote tiers behind it: reads fall through the
//! tiers in order and fill the local one, checking what a remote sends
//! against its digest; writes go local first, then to every remote that takes
//! writes.

use std::path::Path;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::remote::{self, Remote};
use crate::store::{PutOptions, Store, Target};

/// The local tier and its remotes.
pub struct Larder {
    store: Store,
    remotes: Vec<Box<dyn Remote>>,
}

/// What [`Larder::push`] did for one remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    pub fn new(store: Store, remotes: Vec<Box<dyn Remote>>) -> Larder {
        Larder { store, remotes }
    }

    /// The store and remotes a configuration describes.
    pub fn open(config: &crate::Config) -> Result<Larder> {
        let store =
            Store::open(&config.home, config.capacity)?.with_verify_reads(config.verify_reads);
        let remotes = config
            .remotes
            .iter()
            .map(|r| remote::open(r, &config.fetch))
            .collect::<Result<Vec<_>>>()?;
        Ok(Larder::new(store, remotes))
    }

    /// The local tier.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The remote tiers, in order.
    pub fn remotes(&self) -> &[Box<dyn Remote>] {
        &self.remotes
    }

    /// Closes the local tier.
    pub fn close(self) -> Result<()> {
        self.store.close()
    }

    /// Makes sure the local tier holds `target`, fetching it from the first
    /// remote that has it (cloud-manager's `warm_up`). A remote's copy is
    /// kept only if it hashes to the digest asked for (or, for a key, that the
    /// remote gave).
    pub fn fetch(&self, target: &Target, progress: &dyn Progress) -> Result<Digest> {
        if self.store.on_cache(target.clone())? {
            return self.store.resolve(target);
        }
        let mut errors = Vec::new();
        for remote in &self.remotes {
            match self.fetch_from(remote.as_ref(), target, progress) {
                Ok(Some(digest)) => {
                    for e in &errors {
                        tracing::warn!("{e}");
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
        self.store.warm_up(target.clone())
    }

    fn fetch_from(
        &self,
        remote: &dyn Remote,
        target: &Target,
        progress: &dyn Progress,
    ) -> Result<Option<Digest>> {
        if let Target::Key(k) = target {
            // A bad key is the caller's mistake, not the remote's corruption.
            crate::validate_key(k)?;
        }
        let Some(blob) = remote.open(target)? else { return Ok(None) };
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
        let mut reader = Metered { inner: blob.reader, progress };
        let stored =
            self.store.put_checked(&mut reader, &what, expect, &PutOptions { key, pin: false });
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

    /// Whether any tier holds `target` (cloud-manager's `exists`).
    pub fn contains(&self, target: &Target) -> Result<bool> {
        if self.store.on_cache(target.clone())? {
            return Ok(true);
        }
        for remote in &self.remotes {
            if remote.head(target)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The names of the tiers that hold `target`: `local` and remotes' names.
    pub fn where_is(&self, target: &Target) -> Result<Vec<String>> {
        let mut tiers = Vec::new();
        if self.store.on_cache(target.clone())? {
            tiers.push("local".to_string());
        }
        for remote in &self.remotes {
            if remote.head(target)?.is_some() {
                tiers.push(remote.name().to_string());
            }
        }
        Ok(tiers)
    }

    /// Whether some remote takes writes.
    pub fn has_writable_remote(&self) -> bool {
        self.remotes.iter().any(|r| r.mode().writable())
    }

    /// Sends the stored blob `digest` (and `key`, bound to it) to every remote
    /// that takes writes.
    pub fn send(&self, digest: &Digest, key: Option<&str>) -> Result<()> {
        for remote in self.remotes.iter().filter(|r| r.mode().writable()) {
            self.send_to(remote.as_ref(), digest, key)?;
        }
        Ok(())
    }

    fn send_to(&self, remote: &dyn Remote, digest: &Digest, key: Option<&str>) -> Result<bool> {
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
        let sent = remote.upload(digest, found.file, found.size)?;
        if let Some(key) = key {
            remote.bind(key, digest)?;
        }
        Ok(sent)
    }

    /// Stores a file and sends it to every remote that takes writes; the
    /// digest comes back only once they have it (cloud-manager's `upload`).
    pub fn upload(&self, path: &Path) -> Result<Digest> {
        if !self.has_writable_remote() {
            return Err(no_writable_remote());
        }
        let digest = self.store.put(path)?;
        self.send(&digest, None)?;
        Ok(digest)
    }

    /// Sends everything the local tier holds to every remote that takes
    /// writes, blobs the remote lacks and every key.
    pub fn push(&self, progress: &dyn Progress) -> Result<Vec<PushReport>> {
        if !self.has_writable_remote() {
            return Err(no_writable_remote());
        }
        let entries = self.store.list()?;
        let mut reports = Vec::new();
        for remote in self.remotes.iter().filter(|r| r.mode().writable()) {
            let mut report =
                PushReport { remote: remote.name().to_string(), ..PushReport::default() };
            progress.start(&format!("pushing to {}", remote.name()), Some(entries.len() as u64));
            for entry in &entries {
                if self.send_to(remote.as_ref(), &entry.digest, None)? {
                    report.uploaded += 1;
                } else {
                    report.present += 1;
                }
                for key in &entry.keys {
                    remote.bind(key, &entry.digest)?;
                    report.keys += 1;
                }
                progress.advance(1);
            }
            progress.finish();
            reports.push(report);
        }
        Ok(reports)
    }
}

fn no_writable_remote() -> Error {
    Error::new(
        ErrorKind::Config,
        "no remote takes writes: add a [[remote]] with mode = \"write-through\" to the configuration",
    )
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
