//! A remote that fails, for tests: another remote behind a switch. While its
//! [`Outage`] lasts, every call fails as a server that does not answer; once
//! it ends, calls reach the remote behind it again.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Capabilities, Remote, RemoteBlob, RemoteEntry, RemoteStats};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::store::Target;

/// A remote that fails while its outage lasts.
pub struct FailingRemote {
    inner: Box<dyn Remote>,
    outage: Outage,
}

/// The switch of a [`FailingRemote`]; clones are the same switch.
#[derive(Clone, Debug, Default)]
pub struct Outage {
    down: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl Outage {
    /// Every call fails from now on.
    pub fn start(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    /// Calls reach the remote again.
    pub fn end(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Calls that failed so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl FailingRemote {
    /// A remote that is down for good.
    pub fn down() -> FailingRemote {
        let (remote, outage) = FailingRemote::wrapping(Box::new(super::InMemoryRemote::new()));
        outage.start();
        remote
    }

    /// `inner` behind a switch, up until the outage starts.
    pub fn wrapping(inner: Box<dyn Remote>) -> (FailingRemote, Outage) {
        let outage = Outage::default();
        (FailingRemote { inner, outage: outage.clone() }, outage)
    }

    fn up(&self, what: &str) -> Result<()> {
        if self.outage.down.load(Ordering::SeqCst) {
            self.outage.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "remote {}: {what}: cannot connect; check that the server runs, or use --local",
                    self.location()
                ),
            ));
        }
        Ok(())
    }
}

impl Remote for FailingRemote {
    fn location(&self) -> String {
        format!("failing {}", self.inner.location())
    }

    fn open(&self, target: &Target) -> Result<Option<RemoteBlob>> {
        self.up("reading")?;
        self.inner.open(target)
    }

    fn open_sized(&self, digest: &Digest, size: u64) -> Result<Option<RemoteBlob>> {
        self.up("reading")?;
        self.inner.open_sized(digest, size)
    }

    fn head(&self, target: &Target) -> Result<Option<RemoteEntry>> {
        self.up("looking")?;
        self.inner.head(target)
    }

    fn upload(&self, digest: &Digest, file: File, size: u64) -> Result<bool> {
        self.up("uploading")?;
        self.inner.upload(digest, file, size)
    }

    fn bind(&self, key: &str, digest: &Digest) -> Result<()> {
        self.up("binding")?;
        self.inner.bind(key, digest)
    }

    fn delete(&self, target: &Target) -> Result<bool> {
        self.up("removing")?;
        self.inner.delete(target)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.up("listing")?;
        self.inner.list(prefix)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn stats(&self) -> Result<RemoteStats> {
        self.up("reading its status")?;
        self.inner.stats()
    }
}
