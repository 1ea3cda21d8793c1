//! Blobs and keys: GET and HEAD (from memory, or from the file, whole or a
//! range, or zstd-compressed for Bazel's paths), PUT (streamed into the
//! store, decoded first if zstd, checked against the digest a CAS path
//! names) and DELETE.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use larder::{Digest, Error, ErrorKind, Found, PutOptions, Target};

use crate::body::{self, NoTap, Pump, Upload};
use crate::encoding::{self, ZstdUpload};
use crate::hot::Hot;
use crate::metrics::Metrics;
use crate::respond::{self, Range, text};
use crate::state::{Core, Uploads};

/// Blobs up to this size are read in one go; larger ones are streamed.
const SMALL: u64 = 256 << 10;
/// The chunks large blobs are streamed in.
const CHUNK: usize = 256 << 10;

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

impl Source {
    fn positioned(self) -> Arc<dyn encoding::Positioned> {
        match self {
            Source::Memory(bytes) => Arc::new(bytes),
            Source::File(found) => Arc::new(found.file),
        }
    }
}

/// Answers a GET or HEAD of `target`: from memory, or from its file.
pub async fn get(core: &Arc<Core>, request: &Parts, target: Target) -> Response {
    let head = request.method == Method::HEAD;
    // Bazel's blobs go zstd-compressed to clients that take it.
    let zstd = encoding::accepts_zstd(&request.headers)
        && encoding::compressible(&target)
        && !request.headers.contains_key(header::RANGE);
    let hot = core.hot.get(&target);
    if let Some(hot) = &hot {
        let plain = !zstd
            && !request.headers.contains_key(header::RANGE)
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
    send(core, request, zstd, digest, size, modified, source)
}

/// Answers a GET or HEAD with a file found outside the store (a package of
/// the served folder), whole or a range.
pub fn send_found(core: &Arc<Core>, request: &Parts, found: Found) -> Response {
    let (digest, size, modified) = (found.digest, found.size, found.modified);
    send(core, request, false, digest, size, modified, Source::File(found))
}

/// The answer with a blob's bytes: 304 if the client has them, a range, or
/// the whole (zstd-compressed if `zstd`).
fn send(
    core: &Arc<Core>,
    request: &Parts,
    zstd: bool,
    digest: Digest,
    size: u64,
    modified: i64,
    source: Source,
) -> Response {
    let head = request.method == Method::HEAD;
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
    if zstd {
        return encoding::zstd_answer(headers, source.positioned(), size);
    }
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
            // Bytes are served only once they hashed right since their file
            // last changed; a corrupt blob is quarantined and is a miss.
            let Some(found) = store.open_checked(&target)? else { return Ok(None) };
            let (digest, size, modified) = (found.digest, found.size, found.modified);
            if size > SMALL {
                return Ok(Some((digest, size, modified, Source::File(found))));
            }
            let body = Bytes::from(read_found(&found)?);
            if let Some(version) = version {
                let headers = whole_headers(&digest, size, modified);
                let entry = Hot { digest, body: body.clone(), modified, headers };
                hot.insert(&target, entry, version);
            }
            Ok(Some((digest, size, modified, Source::Memory(body))))
        })
        .await
}

/// The whole of a found blob, read into memory (a small one: the caller
/// bounds its size).
pub fn read_found(found: &Found) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; found.size as usize];
    found
        .file
        .read_exact_at(&mut buf, 0)
        .map_err(|e| Error::new(ErrorKind::Io, format!("reading {}: {e}", found.digest)))?;
    Ok(buf)
}

/// The bytes `start..start+len` of a found blob, streamed in chunks read a
/// few ahead of the client.
fn body_of(found: Found, start: u64, len: u64) -> Body {
    Body::from_stream(encoding::chunks(Arc::new(found.file), start, len, CHUNK))
}

/// Stores a PUT's body under `key`, or as the blob `expect` names (checked
/// against it). Bazel may send zstd (`Content-Encoding: zstd`): what is
/// stored and checked is what it decodes to, at most the limit.
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
    let zstd = encoding::is_zstd(&request.headers);
    let decoding = Arc::new(Mutex::new(None::<Upload>));
    let (tx, mut rx) = body::channel();
    let storing = core.pool.run({
        let decoding = decoding.clone();
        move |store| {
            let opts = PutOptions { key, pin: false, ..Default::default() };
            if zstd {
                let mut plain = ZstdUpload::new(rx, limit, decoding)
                    .map_err(|e| Error::new(ErrorKind::Io, format!("cannot decode {what}: {e}")))?;
                return store.put_checked(&mut plain, &what, expect, &opts);
            }
            store.put_checked(&mut rx, &what, expect, &opts)
        }
    });
    let timeout = core.uploads.timeout;
    let how = Pump { limit, silence: Some(timeout), declared, counter: &core.metrics.bytes_in };
    let mut tap = NoTap;
    let pumping = body::pump(body.into_data_stream(), tx, how, &mut tap);
    let (stored, pumped) = tokio::join!(storing, pumping);
    // The body's own failure comes first; then what decoding it found.
    let decoded = decoding.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (stored, pumped, decoded) {
        (_, Err(Upload::TooLarge(n)), _) => too_large(n, limit),
        (_, Err(Upload::TimedOut), _) => text(
            StatusCode::REQUEST_TIMEOUT,
            format!("no bytes of the body for {}s; nothing was stored", timeout.as_secs()),
        ),
        (_, Err(Upload::NotRead) | Ok(_), Some(Upload::TooLarge(n))) => too_large(n, limit),
        (_, Err(Upload::NotRead) | Ok(_), Some(why)) => {
            text(StatusCode::BAD_REQUEST, format!("{why}; nothing was stored"))
        }
        (Err(e), Err(Upload::NotRead) | Ok(_), None) => respond::error(&e),
        (_, Err(why), _) => {
            text(StatusCode::BAD_REQUEST, format!("the body broke off ({why}); nothing was stored"))
        }
        (Ok(_), Ok(_), None) => {
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
