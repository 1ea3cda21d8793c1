//! Sending the write-back queue: what the write-back remotes are owed, sent
//! by `larder push --queued`, on `close`, and by the background uploader,
//! which retries until the queue is empty. A row leaves the queue only once
//! its remote has the blob and its key.

use std::time::{Duration, Instant};

use super::{Larder, in_parallel};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{NoProgress, Progress};

/// What [`Larder::drain`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DrainReport {
    /// Uploads that reached their remote.
    pub sent: u64,
    /// Uploads tried that failed (they stay queued).
    pub failed: u64,
    /// Uploads still owed.
    pub left: u64,
    /// The last failure, if any.
    #[serde(rename = "error")]
    pub last_error: Option<String>,
}

impl Larder {
    /// Tries the uploads owed whose time has come (all of them with
    /// `everything`), oldest first. Failures stay queued, tried again later
    /// with a growing wait.
    pub fn drain(&self, everything: bool, progress: &dyn Progress) -> Result<DrainReport> {
        let now = crate::time::now();
        let due =
            if everything { self.store.queued_uploads()? } else { self.store.due_uploads(now)? };
        let mut report = DrainReport::default();
        let bytes: u64 = due.iter().map(|u| u.size).sum();
        if !due.is_empty() {
            progress.start("uploading what the write-back remotes are owed", Some(bytes));
        }
        let outcomes = in_parallel(&due, |upload| {
            let Some(remote) = self.remotes.iter().find(|r| r.name() == upload.remote) else {
                // Kept for when the remote is configured again.
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "uploads are owed to the remote {}, which is not configured",
                        upload.remote
                    ),
                ));
            };
            let sent = self.send_to(remote, &upload.digest, upload.key.as_deref());
            progress.advance(upload.size);
            match sent {
                Ok(_) => self.store.upload_done(upload).map(|()| true),
                // The blob left on purpose (larder rm): nothing to send.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.store.upload_done(upload).map(|()| false)
                }
                Err(e) => {
                    self.store.upload_failed(upload, &e.to_string(), crate::time::now())?;
                    Err(e)
                }
            }
        });
        for outcome in outcomes {
            match outcome {
                Ok(true) => report.sent += 1,
                Ok(false) => {}
                Err(e) => {
                    if e.kind() != ErrorKind::Config {
                        report.failed += 1;
                    }
                    report.last_error = Some(e.to_string());
                }
            }
        }
        if !due.is_empty() {
            progress.finish();
        }
        report.left = self.store.queued_uploads()?.len() as u64;
        Ok(report)
    }

    /// Drains the upload queue as a background job: tries what is due,
    /// sleeps until the next try is due, and stops when the queue is empty
    /// or nothing succeeded for `give_up_after` (the next larder command
    /// that finds uploads owed starts another). Returns `None` at once if
    /// another process is draining this home's queue.
    pub fn drain_until_done(&self, give_up_after: Duration) -> Result<Option<DrainReport>> {
        let lock_path = self.store.home().join("upload-queue.lock");
        let Some(_held) = crate::lockfile::try_lock(&lock_path)? else { return Ok(None) };
        let mut total = DrainReport::default();
        let mut last_success = Instant::now();
        loop {
            let report = self.drain(false, &NoProgress)?;
            total.sent += report.sent;
            total.failed += report.failed;
            total.left = report.left;
            if report.last_error.is_some() {
                total.last_error = report.last_error;
            }
            if report.sent > 0 {
                last_success = Instant::now();
            }
            // A home removed under it (a test's folder, say) has nothing left to send.
            let gone = !self.store.home().exists();
            if report.left == 0 || gone || last_success.elapsed() >= give_up_after {
                return Ok(Some(total));
            }
            let now = crate::time::now();
            let next = self.store.queued_uploads()?.iter().map(|u| u.next_try).min();
            let wait = next.map_or(1, |t| (t - now).clamp(1, 60));
            std::thread::sleep(Duration::from_secs(wait as u64));
        }
    }

    /// Drops `digest` (with `key`) from the write-back queue: every remote
    /// that takes writes has it now. One indexed lookup, not a scan of the
    /// queue, so sending many blobs stays linear.
    pub(super) fn owed_no_more(&self, digest: &Digest, key: Option<&str>) -> Result<()> {
        self.store.uploads_sent(digest, key)
    }
}
