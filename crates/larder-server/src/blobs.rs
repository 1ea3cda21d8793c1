//! Blobs and keys: GET and HEAD (from memory, or from the file, whole or a
//! range), PUT (streamed into the store, checked against the digest a CAS
//! path names) and DELETE.

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use larder::{Digest, Error, ErrorKind, Found, PutOptions, Target};

use crate::body::{self, NoTap, Pump, Upload};
use crate::hot::Hot;
use crate::metrics::Metrics;
use crate::respond::{self, Range, text};
use crate::state::{Core, Uploads};

/// Blobs up to this size are read in one go; larger ones are streamed.
const SMALL: u64 = 256 << 10;
/// The chunks large blobs are streamed in, and how many are read ahead.
const CHUNK: usize = 256 << 10;
const READ_AHEAD: usize = 4;

/// The headers of a whole-body answer for a blob.
pub fn whole_headers(digest: &Digest, size: u64, modified: i64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&respond::etag(digest)) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        headers.insert("x-larder-digest", v);
    }
    if let Ok(v) = HeaderValue::from_str(&respond::http_date(modified)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers
}

/// A blob to send: in memory (small, and kept hot), or an open file.
enum Source {
    Memory(Bytes),
    File(Found),
}

/// Answers a GET or HEAD of `target`: from memory, or from its file.
pub async fn get(core: &Arc<Core>, request: &Parts, target: Target) -> Response {
    let head = request.method == Method::HEAD;
    let hot = core.hot.get(&target);
    if let Some(hot) = &hot {
        let plain = !request.headers.contains_key(header::RANGE)
            && !request.headers.contains_key(header::IF_NONE_MATCH);
        if plain {
            // The common case, with headers made once.
            core.pool.note(Some(hot.digest));
            Metrics::add(&core.metrics.hits, 1);
            // The headers are set whole, not merged one by one.
            let body = if head {
                Body::empty()
            } else {
                Metrics::add(&core.metrics.bytes_out, hot.body.len() as u64);
                Body::from(hot.body.clone())
            };
            let mut response = Response::new(body);
            *response.headers_mut() = hot.headers.clone();
            return response;
        }
    }
    let (digest, size, modified, source) = match hot {
        Some(hot) => {
            (hot.digest, hot.body.len() as u64, hot.modified, Source::Memory(hot.body.clone()))
        }
        None => match load(core, target).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                core.pool.note(None);
                Metrics::add(&core.metrics.misses, 1);
                let path = request.uri.path();
                return text(StatusCode::NOT_FOUND, format!("{path} is not in the cache"));
            }
            Err(e) => return respond::error(&e),
        },
    };
    core.pool.note(Some(digest));
    Metrics::add(&core.metrics.hits, 1);
    let mut headers = whole_headers(&digest, size, modified);
    headers.remove(header::CONTENT_LENGTH);
    if respond::client_has(&request.headers, &respond::etag(&digest)) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let (status, start, len) = match Range::of(&request.headers, size) {
        Range::Whole => (StatusCode::OK, 0, size),
        Range::Part { start, end } => {
            let value = format!("bytes {start}-{end}/{size}");
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Range::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            return (StatusCode::RANGE_NOT_SATISFIABLE, headers).into_response();
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if head {
        return (status, headers).into_response();
    }
    Metrics::add(&core.metrics.bytes_out, len);
    let body = match source {
        Source::Memory(bytes) => Body::from(bytes.slice(start as usize..(start + len) as usize)),
        Source::File(found) => body_of(found, start, len),
    };
    (status, headers, body).into_response()
}

/// Looks a blob up on a blocking thread, checks its bytes if its file
/// changed, and reads it whole if it is small (keeping it hot).
async fn load(
    core: &Arc<Core>,
    target: Target,
) -> Result<Option<(Digest, u64, i64, Source)>, Error> {
    let hot = core.hot.clone();
    core.pool
        .run(move |store| {
            // Taken before the lookup, so an entry read under a version that
            // then changed is never kept.
            let version = hot.version();
            let Some(mut found) = store.lookup(&target)? else { return Ok(None) };
            // Bytes are served only once they hashed right since their file
            // last changed; a corrupt blob is quarantined and is a miss.
            match store.check_found(&mut found) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::warn!("{e}");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            let (digest, size, modified) = (found.digest, found.size, found.modified);
            if size > SMALL {
                return Ok(Some((digest, size, modified, Source::File(found))));
            }
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; size as usize];
            found
                .file
                .read_exact_at(&mut buf, 0)
                .map_err(|e| Error::new(ErrorKind::Io, format!("reading {digest}: {e}")))?;
            let body = Bytes::from(buf);
            if let Some(version) = version {
                let headers = whole_headers(&digest, size, modified);
                let entry = Hot { digest, body: body.clone(), modified, headers };
                hot.insert(&target, entry, version);
            }
            Ok(Some((digest, size, modified, Source::Memory(body))))
        })
        .await
}

/// The bytes `start..start+len` of a found blob, read in chunks on blocking
/// threads, a few ahead of the client: memory stays at a few chunks whatever
/// the size, and a client that stops reading holds no thread.
fn body_of(found: Found, start: u64, len: u64) -> Body {
    use std::os::unix::fs::FileExt;
    let file = Arc::new(found.file);
    let end = start + len;
    let offsets = (start..end).step_by(CHUNK);
    let chunks = futures_util::stream::iter(offsets)
        .map(move |offset| {
            let file = file.clone();
            async move {
                let n = (end - offset).min(CHUNK as u64) as usize;
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, offset).map(|()| Bytes::from(buf))
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
        })
        .buffered(READ_AHEAD);
    Body::from_stream(chunks)
}

/// Stores a PUT's body under `key`, or as the blob `expect` names (checked
/// against it).
pub async fn put(
    core: &Arc<Core>,
    request: &Parts,
    body: Body,
    key: Option<String>,
    expect: Option<Digest>,
) -> Response {
    let limit = core.uploads.limit.min(core.pool.capacity());
    let declared = request
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > limit
    {
        return too_large(n, limit);
    }
    // larder's own client binds a key to a blob the server has by digest,
    // without sending the bytes again.
    let bind_to = request
        .headers
        .get("x-larder-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    if let (Some(key), Some(digest), Some(0)) = (&key, bind_to, declared) {
        let key = key.clone();
        return match core.pool.run(move |store| store.bind(&key, &digest)).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => respond::error(&e),
        };
    }
    let Some(_permit) = core.uploads.permit() else { return Uploads::too_many() };
    let what = match (&key, &expect) {
        (Some(k), _) => format!("the upload of {k}"),
        (None, Some(d)) => format!("the upload of {d}"),
        (None, None) => "the upload".to_string(),
    };
    let (tx, mut rx) = body::channel();
    let storing = core.pool.run(move |store| {
        let opts = PutOptions { key, pin: false, ..Default::default() };
        store.put_checked(&mut rx, &what, expect, &opts)
    });
    let timeout = core.uploads.timeout;
    let how = Pump { limit, silence: Some(timeout), declared, counter: &core.metrics.bytes_in };
    let mut tap = NoTap;
    let pumping = body::pump(body.into_data_stream(), tx, how, &mut tap);
    let (stored, pumped) = tokio::join!(storing, pumping);
    match (stored, pumped) {
        (_, Err(Upload::TooLarge(n))) => too_large(n, limit),
        (_, Err(Upload::TimedOut)) => text(
            StatusCode::REQUEST_TIMEOUT,
            format!("no bytes of the body for {}s; nothing was stored", timeout.as_secs()),
        ),
        (Err(e), Err(Upload::NotRead) | Ok(_)) => respond::error(&e),
        (_, Err(why)) => {
            text(StatusCode::BAD_REQUEST, format!("the body broke off ({why}); nothing was stored"))
        }
        (Ok(_), Ok(_)) => {
            Metrics::add(&core.metrics.uploads, 1);
            StatusCode::CREATED.into_response()
        }
    }
}

fn too_large(size: u64, limit: u64) -> Response {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the body ({size} bytes or more) is larger than this server takes ({limit} bytes); nothing was stored"
        ),
    )
}

/// Removes a key, or a blob by digest.
pub async fn delete(core: &Arc<Core>, target: Target) -> Response {
    let what = match &target {
        Target::Digest(d) => d.to_string(),
        Target::Key(k) => k.clone(),
    };
    match core.pool.run(move |store| store.remove(&target, false)).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            text(StatusCode::NOT_FOUND, format!("{what} is not in the cache"))
        }
        Err(e) => respond::error(&e),
    }
}
