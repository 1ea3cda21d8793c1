//! ByteStream: blobs of any size, in pieces, plain or zstd-compressed.
//!
//! A Read streams the blob's file from the requested offset, a few chunks
//! ahead of the client. A Write streams into the store as it arrives
//! (`Store::stage_stream` on a blocking thread, fed through the body
//! channel HTTP uploads use) and is committed only once it ended, at the
//! size its name declares, hashing to its digest. A Write that breaks off keeps what it
//! sent, staged, for as long as a client may stay silent: QueryWriteStatus
//! says how much, and a Write from there goes on where it stopped. Only
//! plain uploads resume; REAPI counts a compressed upload's offsets in two
//! units, so one that breaks off starts again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bazel_remote_apis::google::bytestream as bs;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use larder::{Error, ErrorKind, NoProgress, PutOptions, Target};
use tonic::{Request, Response, Status, Streaming};

use super::resource::{self, BlobName};
use super::{Blob, Reapi, is_too_large, present, resource_exhausted, status_of};
use crate::body::{self, BodySender, Upload};
use crate::encoding::{Positioned, ZstdUpload, chunks, zstd_chunks};
use crate::metrics::{Metrics, Service};

/// The bytes of one ReadResponse: well under the 4 MiB clients take in a
/// message.
const CHUNK: usize = 1 << 20;

/// The ByteStream writes in progress or paused, by resource name.
#[derive(Default)]
pub struct Uploads {
    sessions: Mutex<HashMap<String, Session>>,
}

struct Session {
    /// Bytes taken so far, as QueryWriteStatus reports them.
    received: Arc<AtomicU64>,
    /// The upload while paused; a Write that resumes takes it.
    paused: Option<Staging>,
    /// Changes at every pause, so a pause's expiry knows it is still due.
    generation: u64,
}

/// An upload streaming into the store on a blocking thread.
struct Staging {
    tx: BodySender,
    stored: tokio::task::JoinHandle<Result<(), Error>>,
    /// Why a zstd upload did not decode, if it did not.
    failure: Arc<Mutex<Option<Upload>>>,
    /// One of the server's upload slots (shared with HTTP), held while the
    /// upload streams or waits to be resumed.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Uploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The paused upload of `name` to resume, or `None` to start one; `Err`
    /// if a Write of it is running now.
    fn take(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Option<(Staging, Arc<AtomicU64>, Running)>, Status> {
        let mut sessions = self.lock();
        match sessions.get_mut(name) {
            None => Ok(None),
            Some(session) => match session.paused.take() {
                Some(staging) => {
                    session.generation += 1;
                    let running = self.running_guard(name, session.generation);
                    Ok(Some((staging, session.received.clone(), running)))
                }
                None => Err(Status::aborted(format!(
                    "another Write of `{name}` is running; wait for it, or ask QueryWriteStatus"
                ))),
            },
        }
    }

    /// Records a new upload of `name` as running, in place of any other.
    fn running(self: &Arc<Self>, name: &str, received: Arc<AtomicU64>) -> Running {
        let mut sessions = self.lock();
        let session = sessions.entry(name.to_string()).or_insert_with(|| Session {
            received: received.clone(),
            paused: None,
            generation: 0,
        });
        // The generation goes on growing, so no earlier pause's expiry
        // mistakes a later pause for its own.
        session.received = received;
        session.paused = None;
        session.generation += 1;
        self.running_guard(name, session.generation)
    }

    fn running_guard(self: &Arc<Self>, name: &str, generation: u64) -> Running {
        Running { uploads: self.clone(), name: name.to_string(), generation }
    }

    /// Keeps `staging` for a Write that resumes it, for `wait` at most.
    fn pause(self: &Arc<Self>, name: &str, staging: Staging, wait: Duration) {
        let generation = {
            let mut sessions = self.lock();
            let Some(session) = sessions.get_mut(name) else { return };
            session.paused = Some(staging);
            session.generation += 1;
            session.generation
        };
        let (uploads, name) = (Arc::downgrade(self), name.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(uploads) = Weak::upgrade(&uploads) {
                let mut sessions = uploads.lock();
                if sessions
                    .get(&name)
                    .is_some_and(|s| s.generation == generation && s.paused.is_some())
                {
                    // Dropping the channel ends the staging: nothing is kept.
                    sessions.remove(&name);
                }
            }
        });
    }

    fn end(&self, name: &str) {
        self.lock().remove(name);
    }

    fn received(&self, name: &str) -> Option<u64> {
        self.lock().get(name).map(|s| s.received.load(Ordering::SeqCst))
    }
}

/// A Write running now. If its call is dropped midway (its client gone
/// without a word), its staging went with it: the session ends too, unless
/// the Write paused or ended it first.
struct Running {
    uploads: Arc<Uploads>,
    name: String,
    generation: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut sessions = self.uploads.lock();
        if sessions
            .get(&self.name)
            .is_some_and(|s| s.generation == self.generation && s.paused.is_none())
        {
            sessions.remove(&self.name);
        }
    }
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl bs::byte_stream_server::ByteStream for Reapi {
    type ReadStream = Answers<bs::ReadResponse>;

    async fn read(
        &self,
        request: Request<bs::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        let name = resource::read(&request.resource_name).map_err(Status::invalid_argument)?;
        let blob = Blob { digest: name.digest, size: name.size };
        let offset = u64::try_from(request.read_offset)
            .ok()
            .filter(|o| *o <= blob.size)
            .ok_or_else(|| {
                Status::out_of_range(format!(
                    "read_offset {} is outside {blob}, of {} bytes",
                    request.read_offset, blob.size
                ))
            })?;
        let limit = u64::try_from(request.read_limit).map_err(|_| {
            Status::invalid_argument(format!("read_limit {} is negative", request.read_limit))
        })?;
        if name.compressed && limit != 0 {
            return Err(Status::invalid_argument(
                "read_limit must be 0 when reading compressed-blobs (REAPI)",
            ));
        }
        let counters = self.core.metrics.grpc(Service::ByteStream);
        let source: Arc<dyn Positioned> = if blob.is_empty() {
            Arc::new(Bytes::new())
        } else {
            let digest = blob.digest;
            let found = self
                .core
                .pool
                .run(move |store| store.open_checked(&Target::Digest(digest)))
                .await
                .map_err(|e| status_of(&e))?;
            match found {
                Some(found) if found.size == blob.size => {
                    self.core.pool.note(Some(digest));
                    Arc::new(found.file)
                }
                _ => {
                    self.core.pool.note(None);
                    Metrics::add(&counters.misses, 1);
                    return Err(Status::not_found(format!("{blob} is not in the CAS")));
                }
            }
        };
        Metrics::add(&counters.hits, 1);
        let rest = blob.size - offset;
        let len = if limit == 0 { rest } else { limit.min(rest) };
        let pieces = if name.compressed {
            zstd_chunks(source, offset, rest, CHUNK).boxed()
        } else {
            chunks(source, offset, len, CHUNK).boxed()
        };
        let metrics = self.core.metrics.clone();
        let answers = pieces.map(move |piece| match piece {
            Ok(bytes) => {
                Metrics::add(&metrics.bytes_out, bytes.len() as u64);
                Ok(bs::ReadResponse { data: Vec::from(bytes) })
            }
            Err(e) => Err(Status::internal(format!("reading {blob}: {e}"))),
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn write(
        &self,
        request: Request<Streaming<bs::WriteRequest>>,
    ) -> Result<Response<bs::WriteResponse>, Status> {
        let wait = self.core.uploads.timeout;
        let mut stream = request.into_inner();
        let Some(mut message) = next(&mut stream, wait).await? else {
            return Err(Status::invalid_argument("the Write sent no request"));
        };
        let name = std::mem::take(&mut message.resource_name);
        let blob = resource::write(&name).map_err(Status::invalid_argument)?;
        let limit = self.core.uploads.limit.min(self.core.pool.capacity());
        if blob.size > limit {
            return Err(Status::invalid_argument(format!(
                "`{name}` is {} bytes, more than this server takes ({limit} bytes); nothing was stored",
                blob.size
            )));
        }
        // Stored already (by anyone): done, whatever this client sends.
        let done = bs::WriteResponse {
            committed_size: if blob.compressed { -1 } else { blob.size as i64 },
        };
        if self.stored(&blob).await? {
            self.uploads.end(&name);
            return Ok(Response::new(done));
        }
        let (staging, received, _running) = match self.uploads.take(&name)? {
            // Compressed uploads do not resume: they start again.
            Some(resumed) if !blob.compressed => resumed,
            _ => {
                let received = Arc::new(AtomicU64::new(0));
                let staging = self.stage(&name, &blob)?;
                let running = self.uploads.running(&name, received.clone());
                (staging, received, running)
            }
        };
        let mut offset = received.load(Ordering::SeqCst);
        if message.write_offset != offset as i64 {
            self.pause_or_drop(&name, &blob, staging);
            return Err(Status::invalid_argument(format!(
                "write_offset {} does not follow the {offset} bytes of `{name}` taken so far: \
                 ask QueryWriteStatus where to go on",
                message.write_offset
            )));
        }
        loop {
            let fail = |status: Status| {
                // Dropping the staging ends it: nothing is kept.
                self.uploads.end(&name);
                Err(status)
            };
            if !message.resource_name.is_empty() && message.resource_name != name {
                return fail(Status::invalid_argument(format!(
                    "a request of the Write of `{name}` names `{}`; nothing was stored",
                    message.resource_name
                )));
            }
            if message.write_offset != offset as i64 {
                return fail(Status::invalid_argument(format!(
                    "write_offset {} does not follow the {offset} bytes sent before; nothing was stored",
                    message.write_offset
                )));
            }
            let piece = Bytes::from(std::mem::take(&mut message.data));
            let len = piece.len() as u64;
            if !blob.compressed && offset + len > blob.size {
                return fail(Status::invalid_argument(format!(
                    "the Write of `{name}` sends more than the {} bytes its name declares; nothing was stored",
                    blob.size
                )));
            }
            if len > 0 && !staging.tx.data(piece).await {
                // The store stopped taking bytes: its error says why.
                self.uploads.end(&name);
                return Err(finish(staging, &blob, false).await.err().unwrap_or_else(|| {
                    Status::internal(format!("the store stopped taking `{name}`"))
                }));
            }
            offset += len;
            received.store(offset, Ordering::SeqCst);
            Metrics::add(&self.core.metrics.bytes_in, len);
            if message.finish_write {
                if !blob.compressed && offset != blob.size {
                    return fail(Status::invalid_argument(format!(
                        "the Write of `{name}` finished after {offset} bytes, not the {} its name declares; nothing was stored",
                        blob.size
                    )));
                }
                self.uploads.end(&name);
                finish(staging, &blob, true).await?;
                Metrics::add(&self.core.metrics.uploads, 1);
                return Ok(Response::new(done));
            }
            message = match next(&mut stream, wait).await {
                Ok(Some(message)) => message,
                // The client stopped before the end, or broke off: what it
                // sent waits for a Write that resumes it.
                Ok(None) => {
                    self.pause_or_drop(&name, &blob, staging);
                    return Ok(Response::new(bs::WriteResponse { committed_size: offset as i64 }));
                }
                Err(status) => {
                    self.pause_or_drop(&name, &blob, staging);
                    return Err(status);
                }
            };
        }
    }

    async fn query_write_status(
        &self,
        request: Request<bs::QueryWriteStatusRequest>,
    ) -> Result<Response<bs::QueryWriteStatusResponse>, Status> {
        let name = request.into_inner().resource_name;
        let blob = resource::write(&name).map_err(Status::invalid_argument)?;
        if self.stored(&blob).await? {
            let committed_size = if blob.compressed { -1 } else { blob.size as i64 };
            return Ok(Response::new(bs::QueryWriteStatusResponse {
                committed_size,
                complete: true,
            }));
        }
        match self.uploads.received(&name) {
            Some(received) => Ok(Response::new(bs::QueryWriteStatusResponse {
                committed_size: received as i64,
                complete: false,
            })),
            None => Err(Status::not_found(format!("no Write of `{name}` is in progress"))),
        }
    }
}

impl Reapi {
    /// Whether the CAS holds the blob a resource name names.
    async fn stored(&self, name: &BlobName) -> Result<bool, Status> {
        let blob = Blob { digest: name.digest, size: name.size };
        let found = self
            .core
            .pool
            .run(move |store| present(store, &[blob]))
            .await
            .map_err(|e| status_of(&e))?;
        Ok(found.first().copied().unwrap_or(false))
    }

    /// Starts staging an upload on a blocking thread: committed only if it
    /// ends cleanly, at the declared size, hashing to the declared digest.
    fn stage(&self, name: &str, blob: &BlobName) -> Result<Staging, Status> {
        let Some(slot) = self.core.uploads.owned_permit() else {
            return Err(Status::unavailable(crate::state::Uploads::too_many_line()));
        };
        let (tx, mut body) = body::channel();
        let failure = Arc::new(Mutex::new(None::<Upload>));
        let seen = failure.clone();
        let pool = self.core.pool.clone();
        let what = format!("the upload of `{name}`");
        let blob = blob.clone();
        let stored = tokio::spawn(async move {
            pool.run(move |store| {
                let pending = if blob.compressed {
                    let mut plain = ZstdUpload::new(body, blob.size, seen).map_err(|e| {
                        Error::new(ErrorKind::Io, format!("cannot decode {what}: {e}"))
                    })?;
                    store.stage_stream(&mut plain, &what, Some(blob.size), &NoProgress)?
                } else {
                    store.stage_stream(&mut body, &what, Some(blob.size), &NoProgress)?
                };
                if pending.size() != blob.size || pending.digest() != Some(blob.digest) {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "{what} is {} bytes hashing to {}, not the blob its name declares; nothing was stored",
                            pending.size(),
                            pending.digest().map_or_else(|| "nothing".into(), |d| d.hex()),
                        ),
                    ));
                }
                pending.commit(&PutOptions::default()).map(|_| ())
            })
            .await
        });
        Ok(Staging { tx, stored, failure, _slot: slot })
    }

    fn pause_or_drop(&self, name: &str, blob: &BlobName, staging: Staging) {
        if blob.compressed {
            self.uploads.end(name);
        } else {
            self.uploads.pause(name, staging, self.core.uploads.timeout);
        }
    }
}

/// The next request of a Write, waiting `wait` at most.
async fn next(
    stream: &mut Streaming<bs::WriteRequest>,
    wait: Duration,
) -> Result<Option<bs::WriteRequest>, Status> {
    match tokio::time::timeout(wait, stream.message()).await {
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no request of the Write for {}s; ask QueryWriteStatus, then go on from there",
            wait.as_secs()
        ))),
        Ok(Err(status)) if is_too_large(&status) => Err(resource_exhausted(&status)),
        Ok(result) => result,
    }
}

/// Ends the upload, `whole` (the store commits it if it checks) or not
/// (nothing is kept), and waits for the store; the error says why it did not
/// take it.
async fn finish(staging: Staging, blob: &BlobName, whole: bool) -> Result<(), Status> {
    let Staging { tx, stored, failure, _slot } = staging;
    if whole {
        tx.end().await;
    } else {
        drop(tx);
    }
    let result = stored.await.unwrap_or_else(|e| Err(Error::new(ErrorKind::Io, e.to_string())));
    let failure = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (result, failure) {
        (_, Some(Upload::TooLarge(_))) => Err(Status::invalid_argument(format!(
            "the upload decodes to more than the {} bytes its name declares; nothing was stored",
            blob.size
        ))),
        (_, Some(why)) => Err(Status::invalid_argument(format!("{why}; nothing was stored"))),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(status_of(&e)),
    }
}
