//! One upstream download of a file, however many clients ask for it at once.
//!
//! The first request for a file the store lacks starts a download that no
//! client owns: it writes the upstream's bytes to the store and to a spool
//! (an unnamed temporary file), and every client, the first included, reads
//! the spool as it grows. The last chunk is released only once the whole
//! file hashed right, so no client ever gets all of a wrong file. A file that
//! does not match the hash its page gives is remembered as bad for a while:
//! clients are told "hash mismatch" at once and the upstream is not asked
//! again however often they retry.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use larder::PutOptions;
use tokio::sync::watch;

use super::PypiState;
use crate::body::{self, Pump, Tap, Upload};
use crate::respond::{text, with_reason};

/// How long a file that did not match its hash is answered as such without
/// asking the upstream again.
pub const BAD_FILE_MEMORY: Duration = Duration::from_secs(600);

/// The most bytes a client is sent in one piece.
const PIECE: u64 = 256 << 10;

/// Where a download stands.
#[derive(Debug, Clone)]
enum Stage {
    /// The upstream has not answered yet.
    Asking,
    /// Coming: `released` bytes may be sent (the last chunk waits for the
    /// hash of the whole file).
    Coming {
        length: Option<u64>,
        released: u64,
    },
    /// Whole, and right.
    Whole(u64),
    /// The store had it already: read it there.
    Stored,
    Failed(Failure),
}

/// Why a file cannot be sent.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The upstream does not have it.
    NotFound(String),
    /// The upstream could not be reached, answered an error, or broke off.
    Upstream(String),
    /// The upstream's bytes are not the ones its page promised.
    HashMismatch(String),
}

impl Failure {
    fn response(&self) -> Response {
        match self {
            Failure::NotFound(why) => text(StatusCode::NOT_FOUND, why.clone()),
            Failure::Upstream(why) => with_reason(StatusCode::BAD_GATEWAY, why),
            // Not a 502, which pip retries and then reports without its
            // reason: a 409 it reports at once, with the reason phrase.
            Failure::HashMismatch(why) => {
                with_reason(StatusCode::CONFLICT, &format!("hash mismatch: {why}"))
            }
        }
    }
}

/// A download in progress.
struct Flight {
    spool: std::fs::File,
    stage: watch::Sender<Stage>,
}

enum Entry {
    Flying(Arc<Flight>),
    /// Answered as bad until this instant.
    Bad(Instant, Failure),
}

/// The downloads in progress, and the files remembered as bad, by store key.
#[derive(Default)]
pub struct Flights(Mutex<HashMap<String, Entry>>);

/// The most bad files remembered; past it the ones whose time is up go.
const BAD_LIMIT: usize = 4096;

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a finished download off the list; a bad file stays remembered.
    fn land(&self, key: &str, bad: Option<Failure>) {
        let mut map = self.lock();
        match bad {
            Some(failure) => {
                if map.len() >= BAD_LIMIT {
                    let now = Instant::now();
                    map.retain(|_, e| !matches!(e, Entry::Bad(until, _) if *until <= now));
                }
                map.insert(key.to_string(), Entry::Bad(Instant::now() + BAD_FILE_MEMORY, failure));
            }
            None => {
                map.remove(key);
            }
        }
    }
}

/// What to fetch, and what it must hash to.
pub struct Wanted {
    pub key: String,
    pub url: String,
    /// The sha256 the upstream's page gives, if it gives one.
    pub expect: Option<larder::Digest>,
}

/// Sends the file under `wanted.key`: joins the download in progress, or
/// starts one. `None`: the store has it now (read it there).
pub async fn send(state: &Arc<PypiState>, parts: &Parts, wanted: Wanted) -> Option<Response> {
    let flight = {
        let mut map = state.flights.lock();
        match map.get(&wanted.key) {
            Some(Entry::Flying(f)) => f.clone(),
            Some(Entry::Bad(until, failure)) if *until > Instant::now() => {
                return Some(failure.response());
            }
            _ => {
                let spool = match tempfile::tempfile_in(&state.spool_dir) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(
                            "cannot make a spool file in {}: {e}",
                            state.spool_dir.display()
                        );
                        return Some(text(
                            StatusCode::INSUFFICIENT_STORAGE,
                            "the server cannot make a temporary file",
                        ));
                    }
                };
                let flight = Arc::new(Flight { spool, stage: watch::Sender::new(Stage::Asking) });
                map.insert(wanted.key.clone(), Entry::Flying(flight.clone()));
                tokio::spawn(fly(state.clone(), flight.clone(), wanted));
                flight
            }
        }
    };
    let mut stage = flight.stage.subscribe();
    let what = parts.uri.path().to_string();
    let waiting = HangUp::new(format!("the upstream's answer for {what}"));
    let now = stage.wait_for(|s| !matches!(s, Stage::Asking)).await.ok()?.clone();
    waiting.disarm();
    let length = match now {
        Stage::Asking | Stage::Stored => return None,
        Stage::Failed(failure) => return Some(failure.response()),
        Stage::Coming { length, .. } => length,
        Stage::Whole(total) => Some(total),
    };
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some(n) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if parts.method == Method::HEAD {
        return Some((StatusCode::OK, headers).into_response());
    }
    let reader = Reader { flight, stage, offset: 0, hang_up: Some(HangUp::new(what)), done: false };
    let body = Body::from_stream(futures_util::stream::unfold(reader, Reader::next));
    Some((StatusCode::OK, headers, body).into_response())
}

/// A client's place in a download.
struct Reader {
    flight: Arc<Flight>,
    stage: watch::Receiver<Stage>,
    offset: u64,
    /// Logs if the client goes before the end.
    hang_up: Option<HangUp>,
    done: bool,
}

impl Reader {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Reader)> {
        if self.done {
            return None;
        }
        loop {
            let now = self.stage.borrow_and_update().clone();
            let (released, end) = match now {
                Stage::Asking | Stage::Stored => (0, None),
                Stage::Coming { released, .. } => (released, None),
                Stage::Whole(total) => (total, Some(total)),
                Stage::Failed(failure) => {
                    self.quiet();
                    let why = match failure {
                        Failure::NotFound(w) | Failure::Upstream(w) => w,
                        Failure::HashMismatch(w) => format!("hash mismatch: {w}"),
                    };
                    // An error ends the body short: the client sees it broke off.
                    return Some((Err(std::io::Error::other(why)), self.ended()));
                }
            };
            if self.offset < released {
                let n = (released - self.offset).min(PIECE);
                let flight = self.flight.clone();
                let at = self.offset;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0; n as usize];
                    flight.spool.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                return match read {
                    Ok(piece) => {
                        self.offset += piece.len() as u64;
                        Some((Ok(piece), self))
                    }
                    Err(e) => Some((Err(e), self.ended())),
                };
            }
            if end.is_some() {
                self.quiet();
                return None;
            }
            if self.stage.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Ends without the hang-up being logged.
    fn quiet(&mut self) {
        if let Some(hang_up) = self.hang_up.take() {
            hang_up.disarm();
        }
    }

    /// The reader once its body ended with an error: it yields nothing more.
    fn ended(mut self) -> Reader {
        self.quiet();
        self.done = true;
        self
    }
}

/// Logs that a client hung up while it waited for `what`, unless disarmed.
pub struct HangUp {
    what: String,
    since: Instant,
    armed: bool,
}

impl HangUp {
    pub fn new(what: String) -> HangUp {
        HangUp { what, since: Instant::now(), armed: true }
    }

    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for HangUp {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(
                "a client hung up after {:.1} s waiting for {}",
                self.since.elapsed().as_secs_f64(),
                self.what
            );
        }
    }
}

/// The download itself: upstream to store and spool.
async fn fly(state: Arc<PypiState>, flight: Arc<Flight>, wanted: Wanted) {
    let Wanted { key, url, expect } = wanted;
    // Another download may have kept it between the client's look and now.
    let k = key.clone();
    if state
        .core
        .pool
        .run(move |store| store.contains(larder::Target::Key(k)))
        .await
        .unwrap_or(false)
    {
        flight.stage.send_replace(Stage::Stored);
        state.flights.land(&key, None);
        return;
    }
    let failed = |failure: Failure| {
        flight.stage.send_replace(Stage::Failed(failure));
        state.flights.land(&key, None);
    };
    let response = match state.client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("upstream file {url}: {e}");
            return failed(Failure::Upstream(format!("the upstream is unreachable ({e})")));
        }
    };
    if response.status() == StatusCode::NOT_FOUND {
        return failed(Failure::NotFound(format!("the upstream has no {url}")));
    }
    if !response.status().is_success() {
        tracing::warn!("upstream file {url}: it answered {}", response.status());
        return failed(Failure::Upstream(format!("the upstream answered {}", response.status())));
    }
    let length = response.content_length();
    flight.stage.send_replace(Stage::Coming { length, released: 0 });
    // The store takes the bytes on a blocking thread, and keeps them only if
    // they are whole and right.
    let (to_store, mut from_upstream) = body::channel();
    let core = state.core.clone();
    let (what, keep_as) = (url.clone(), key.clone());
    let storing = core.pool.run(move |store| {
        store.put_checked(
            &mut from_upstream,
            &what,
            expect,
            &PutOptions { key: Some(keep_as), pin: false, ..Default::default() },
        )
    });
    let mut spool = Spool {
        flight: flight.clone(),
        written: 0,
        hasher: Some(larder::Hasher::new()),
        expect,
        source: url.clone(),
        mismatch: None,
    };
    let how =
        Pump { limit: u64::MAX, silence: None, declared: length, counter: &core.metrics.bytes_out };
    let pumping = body::pump(response.bytes_stream(), to_store, how, &mut spool);
    let (verdict, stored) = tokio::join!(pumping, storing);
    match &verdict {
        Ok(total) => {
            flight.stage.send_replace(Stage::Whole(*total));
            if let Err(e) = stored {
                tracing::warn!("not keeping {url}: {e}");
            }
            state.flights.land(&key, None);
        }
        Err(why) => {
            tracing::warn!("not keeping {url}: {why}");
            let failure = match spool.mismatch.take() {
                Some(m) => Failure::HashMismatch(m),
                None => Failure::Upstream(format!("the upstream's file broke off ({why})")),
            };
            let bad = matches!(failure, Failure::HashMismatch(_)).then(|| failure.clone());
            flight.stage.send_replace(Stage::Failed(failure));
            state.flights.land(&key, bad);
        }
    }
}

/// The spool side of a download: every chunk written, all but the last
/// released until the whole file is known to be right.
struct Spool {
    flight: Arc<Flight>,
    written: u64,
    hasher: Option<larder::Hasher>,
    expect: Option<larder::Digest>,
    source: String,
    mismatch: Option<String>,
}

impl Tap for Spool {
    async fn chunk(&mut self, chunk: &Bytes) -> bool {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(chunk);
        }
        let flight = self.flight.clone();
        let (piece, at) = (chunk.clone(), self.written);
        let wrote = tokio::task::spawn_blocking(move || flight.spool.write_all_at(&piece, at))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = wrote {
            tracing::error!("cannot write a spool file: {e}");
            return false;
        }
        let released = self.written;
        self.written += chunk.len() as u64;
        self.flight.stage.send_modify(|s| {
            if let Stage::Coming { released: r, .. } = s {
                *r = released;
            }
        });
        true
    }

    fn check(&mut self, total: u64) -> Result<(), Upload> {
        if total != self.written {
            return Err(Upload::Broken("the spool file is short".into()));
        }
        let Some(got) = self.hasher.take().map(larder::Hasher::finish) else { return Ok(()) };
        match self.expect {
            Some(want) if want != got => {
                let why = format!(
                    "the upstream's {} is {got}, not the {want} its page gives",
                    self.source
                );
                self.mismatch = Some(why.clone());
                Err(Upload::Broken(why))
            }
            _ => Ok(()),
        }
    }
}
