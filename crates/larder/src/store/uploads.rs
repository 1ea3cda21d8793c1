//! The queue of uploads owed to write-back remotes. It lives in the index,
//! so it survives restarts and crashes; a blob in it is never evicted; a row
//! leaves it only once the remote has the blob (and its key).

use super::*;
use index::QueuedUpload;

/// The longest wait between two tries of a failing upload.
const MAX_BACKOFF: i64 = 600;

impl Store {
    /// Owes `remote` the blob `digest` (and `key`, bound to it there).
    pub fn queue_upload(&self, remote: &str, digest: &Digest, key: Option<&str>) -> Result<()> {
        self.write(|tx| {
            if index::blob(tx, digest).map_err(|e| self.idx_err(e))?.is_none() {
                return Err(not_stored(digest));
            }
            index::enqueue(tx, remote, digest, key).map_err(|e| self.idx_err(e))
        })
    }

    /// Every upload owed, oldest first.
    pub fn queued_uploads(&self) -> Result<Vec<QueuedUpload>> {
        index::queued(&self.lock(), None).map_err(|e| self.idx_err(e))
    }

    /// The uploads owed whose next try is due at `now` (seconds since the
    /// epoch), oldest first.
    pub fn due_uploads(&self, now: i64) -> Result<Vec<QueuedUpload>> {
        index::queued(&self.lock(), Some(now)).map_err(|e| self.idx_err(e))
    }

    /// Whether any upload is owed.
    pub fn has_queued_uploads(&self) -> Result<bool> {
        index::any_queued(&self.lock()).map_err(|e| self.idx_err(e))
    }

    /// Notes that every remote has `digest` (and `key`) now: its uploads
    /// leave the queue, whichever remote they were owed to. A lookup by the
    /// digest's index first, so that the common case (nothing owed) takes
    /// no write lock.
    pub fn uploads_sent(&self, digest: &Digest, key: Option<&str>) -> Result<()> {
        if !index::is_queued(&self.lock(), digest, key).map_err(|e| self.idx_err(e))? {
            return Ok(());
        }
        self.write(|tx| index::dequeue_everywhere(tx, digest, key).map_err(|e| self.idx_err(e)))
    }

    /// Notes that `upload` reached its remote.
    pub fn upload_done(&self, upload: &QueuedUpload) -> Result<()> {
        self.write(|tx| {
            index::dequeue(tx, &upload.remote, &upload.digest, upload.key.as_deref())
                .map_err(|e| self.idx_err(e))
        })
    }

    /// Notes that a try of `upload` failed with `error` at `now`; returns
    /// when it may be tried again (5 s, doubling, at most 10 minutes).
    pub fn upload_failed(&self, upload: &QueuedUpload, error: &str, now: i64) -> Result<i64> {
        let backoff = (5i64 << upload.attempts.min(16)).min(MAX_BACKOFF);
        let next_try = now + backoff;
        self.write(|tx| {
            index::upload_failed(
                tx,
                &upload.remote,
                &upload.digest,
                upload.key.as_deref(),
                next_try,
                error,
            )
            .map_err(|e| self.idx_err(e))
        })?;
        Ok(next_try)
    }
}
