//! The routes: every front door of the one store.
//!
//! - `[/<instance>]/ac/<sha256>` and `[/<instance>]/cas/<sha256>`: Bazel's
//!   HTTP cache; CAS bodies are checked against their digest.
//! - Any other path is a key: GET, HEAD, PUT, DELETE (ccache, Gradle, curl).
//! - PROPFIND and MKCOL on the same key space, for WebDAV clients (sccache).
//! - `/status`, `/metrics`, `/healthz`, and `/`, a page for people.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use larder::{Digest, Error, ErrorKind, Found, PutOptions, Target};

use crate::auth::{Access, Auth, Decision};
use crate::metrics::Metrics;
use crate::paths::{Resource, classify};
use crate::pool::StorePool;

/// Blobs up to this size are read in one go; larger ones are streamed.
const SMALL: u64 = 256 << 10;
/// The chunks large blobs are streamed in.
const CHUNK: usize = 256 << 10;

/// What every request handler shares.
pub struct AppState {
    pub pool: Arc<StorePool>,
    /// Small blobs read lately, kept in memory.
    pub hot: Arc<crate::hot::HotCache>,
    /// The Python package index.
    pub pypi: Arc<crate::pypi::Pypi>,
    pub auth: Option<Arc<Auth>>,
    pub metrics: Arc<Metrics>,
    /// The largest body accepted.
    pub max_blob: u64,
    /// How long a client may leave an upload without sending a byte.
    pub body_timeout: Duration,
    /// Uploads streaming into the store now; each holds a blocking thread
    /// and a store handle, so they are limited apart from connections.
    pub uploads: tokio::sync::Semaphore,
    pub started: Instant,
    /// When the server started, in seconds since the epoch.
    pub started_at: i64,
}

/// Uploads taken at once; more get 503 and retry.
pub const UPLOADS_AT_ONCE: usize = 128;

/// A permit to stream an upload into the store, or `None`: too many now.
pub(crate) fn upload_permit(state: &AppState) -> Option<tokio::sync::SemaphorePermit<'_>> {
    state.uploads.try_acquire().ok()
}

/// The 503 for an upload past [`UPLOADS_AT_ONCE`], which says to retry.
pub(crate) fn too_many_uploads() -> Response {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{UPLOADS_AT_ONCE} uploads are in progress; retry in a moment"),
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The whole application.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/status", axum::routing::get(crate::status::status))
        .route("/metrics", axum::routing::get(crate::status::metrics))
        .fallback(handle)
        // Bodies stream to the store with their own limit (`max_blob`).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// An error answer: a status and one line of text, as curl and twine show it.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut line = message.into();
    line.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line).into_response()
}

/// The HTTP status for a library error.
pub fn status_of(e: &Error) -> StatusCode {
    match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput | ErrorKind::Corrupt => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::StoreFull | ErrorKind::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Config | ErrorKind::Io => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(e: &Error) -> Response {
    text(status_of(e), e.to_string())
}

/// Checks the request's credentials for `access`; `Err` is the answer.
pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    access: Access,
) -> Result<(), Response> {
    let Some(auth) = &state.auth else { return Ok(()) };
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match auth.check(header, access).await {
        Decision::Allow => Ok(()),
        Decision::Unauthorized => {
            Metrics::add(&state.metrics.auth_failures, 1);
            let mut response = text(StatusCode::UNAUTHORIZED, "credentials needed or wrong");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"larder\""),
            );
            Err(response)
        }
        Decision::Forbidden(why) => Err(text(StatusCode::FORBIDDEN, why)),
    }
}

async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.metrics.request(request.method().as_str());
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (request.method().clone(), request.uri().clone()));
    let response = route(&state, request).await;
    state.metrics.response(response.status().as_u16());
    if let Some((method, uri)) = logged {
        tracing::debug!("{method} {uri} {}", response.status().as_u16());
    }
    response
}

async fn route(state: &Arc<AppState>, request: Request) -> Response {
    // Parts only: a body cannot be shared across the awaits below.
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let access = match method.as_str() {
        "GET" | "HEAD" | "PROPFIND" | "OPTIONS" => Access::Read,
        "PUT" | "DELETE" | "MKCOL" | "POST" => Access::Write,
        other => {
            return text(StatusCode::METHOD_NOT_ALLOWED, format!("{other} is not served here"));
        }
    };
    if let Err(refused) = authorize(state, &parts.headers, access).await {
        return refused;
    }
    let path = parts.uri.path();
    if method == Method::POST || path.starts_with("/simple") || path.starts_with("/packages/") {
        if let Some(response) = crate::pypi::route(state, &parts, body).await {
            return response;
        }
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on this path"),
        );
    }
    let resource = match classify(parts.uri.path()) {
        Ok(r) => r,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    match (method.as_str(), resource) {
        ("PUT" | "DELETE" | "MKCOL", Resource::Key(k) | Resource::Folder(k))
            if is_index_key(&k) =>
        {
            text(
                StatusCode::FORBIDDEN,
                format!(
                    "{k} belongs to the package index; upload with twine or uv publish instead"
                ),
            )
        }
        ("PUT" | "DELETE" | "MKCOL", Resource::Key(k) | Resource::Folder(k))
            if k.starts_with(larder::INTERNAL_KEY_PREFIX) =>
        {
            text(
                StatusCode::FORBIDDEN,
                format!("{k} is larder's own (recipe downloads); it cannot be written over HTTP"),
            )
        }
        ("OPTIONS", _) => options(),
        ("PROPFIND", resource) => crate::webdav::propfind(state, &parts, body, resource).await,
        ("MKCOL", resource) => crate::webdav::mkcol(state, resource).await,
        ("GET" | "HEAD", Resource::Root) => {
            crate::status::page(state, method == Method::HEAD).await
        }
        ("GET" | "HEAD", Resource::Folder(_)) => {
            text(StatusCode::NOT_FOUND, "a folder of keys has no content; PROPFIND lists it")
        }
        ("GET" | "HEAD", Resource::Blob(d)) => get(state, &parts, Target::Digest(d)).await,
        ("GET" | "HEAD", Resource::Key(k)) => get(state, &parts, Target::Key(k)).await,
        ("PUT", Resource::Blob(d)) => put(state, &parts, body, None, Some(d)).await,
        ("PUT", Resource::Key(k)) => put(state, &parts, body, Some(k), None).await,
        ("DELETE", Resource::Blob(d)) => delete(state, Target::Digest(d)).await,
        ("DELETE", Resource::Key(k)) => delete(state, Target::Key(k)).await,
        (m, _) => text(StatusCode::METHOD_NOT_ALLOWED, format!("{m} is not allowed on this path")),
    }
}

/// Keys the package index keeps: released files never change, so the
/// generic door may read them but not write them.
pub(crate) fn is_index_key(key: &str) -> bool {
    key == "pypi" || key.starts_with("pypi/")
}

fn options() -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, PUT, DELETE, PROPFIND, MKCOL, OPTIONS"),
    );
    headers.insert("DAV", HeaderValue::from_static("1"));
    response
}

/// The ETag of a blob: its digest, which never names other bytes.
fn etag(digest: &Digest) -> String {
    format!("\"{digest}\"")
}

/// A single byte range asked for, as (start, end inclusive), or `Err` if it
/// cannot be satisfied.
fn range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // several ranges: send it all
    }
    let (start, end) = spec.split_once('-')?;
    let parsed = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            if n == 0 || size == 0 {
                return Some(Err(()));
            }
            Ok((size.saturating_sub(n), size - 1))
        }
        (start, "") => {
            let start: u64 = start.parse().ok()?;
            if start >= size { Err(()) } else { Ok((start, size - 1)) }
        }
        (start, end) => {
            let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
            if start > end || start >= size { Err(()) } else { Ok((start, end.min(size - 1))) }
        }
    };
    Some(parsed)
}

/// The headers of a whole-body answer for a blob.
fn whole_headers(digest: &Digest, size: u64, modified: i64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag(digest)) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        headers.insert("x-larder-digest", v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(modified)) {
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
    fn positioned(self) -> Arc<dyn crate::encoding::Positioned> {
        match self {
            Source::Memory(bytes) => Arc::new(bytes),
            Source::File(found) => Arc::new(found.file),
        }
    }
}

/// Answers a GET or HEAD of `target`: from memory, or from its file.
pub(crate) async fn get_target(state: &Arc<AppState>, request: &Parts, target: Target) -> Response {
    get(state, request, target).await
}

async fn get(state: &Arc<AppState>, request: &Parts, target: Target) -> Response {
    let head = request.method == Method::HEAD;
    // Bazel's blobs go zstd-compressed to clients that take it.
    let zstd = crate::encoding::accepts_zstd(&request.headers)
        && crate::encoding::compressible(&target)
        && !request.headers.contains_key(header::RANGE);
    let hot = state.hot.get(&target);
    if let Some(hot) = &hot {
        let plain = !zstd
            && !request.headers.contains_key(header::RANGE)
            && !request.headers.contains_key(header::IF_NONE_MATCH);
        if plain {
            // The common case, with headers made once.
            state.pool.note(Some(hot.digest));
            Metrics::add(&state.metrics.hits, 1);
            if head {
                return (StatusCode::OK, hot.headers.clone()).into_response();
            }
            Metrics::add(&state.metrics.bytes_out, hot.body.len() as u64);
            return (StatusCode::OK, hot.headers.clone(), Body::from(hot.body.clone()))
                .into_response();
        }
    }
    let (digest, size, modified, source) = match hot {
        Some(hot) => {
            (hot.digest, hot.body.len() as u64, hot.modified, Source::Memory(hot.body.clone()))
        }
        None => match load(state, target).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                state.pool.note(None);
                Metrics::add(&state.metrics.misses, 1);
                let path = request.uri.path();
                return text(StatusCode::NOT_FOUND, format!("{path} is not in the cache"));
            }
            Err(e) => return error_response(&e),
        },
    };
    state.pool.note(Some(digest));
    Metrics::add(&state.metrics.hits, 1);
    let tag = etag(&digest);
    let mut headers = whole_headers(&digest, size, modified);
    headers.remove(header::CONTENT_LENGTH);
    let not_modified = request
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if not_modified {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let (status, start, len) = match range(&request.headers, size) {
        None => (StatusCode::OK, 0, size),
        Some(Ok((start, end))) => {
            let value = format!("bytes {start}-{end}/{size}");
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Some(Err(())) => {
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
    Metrics::add(&state.metrics.bytes_out, len);
    if zstd {
        return crate::encoding::zstd_answer(headers, source.positioned(), size);
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
    state: &Arc<AppState>,
    target: Target,
) -> Result<Option<(Digest, u64, i64, Source)>, Error> {
    let hot = state.hot.clone();
    state
        .pool
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
                let entry = crate::hot::Hot { digest, body: body.clone(), modified, headers };
                hot.insert(&target, entry, version);
            }
            Ok(Some((digest, size, modified, Source::Memory(body))))
        })
        .await
}

/// The bytes `start..start+len` of a found blob, streamed in chunks read a
/// few ahead of the client.
fn body_of(found: Found, start: u64, len: u64) -> Body {
    Body::from_stream(crate::encoding::chunks(Arc::new(found.file), start, len, CHUNK))
}

/// Why an upload stopped early.
#[derive(Debug)]
pub(crate) enum Upload {
    TooLarge(u64),
    TimedOut,
    Broken(String),
}

/// What a body's reader hands the store: bytes, then an explicit end, so a
/// sender that vanished midway is never taken for a whole body.
pub(crate) enum BodyPart {
    Data(Bytes),
    End,
    Failed(Upload),
}

async fn put(
    state: &Arc<AppState>,
    request: &Parts,
    body: Body,
    key: Option<String>,
    expect: Option<Digest>,
) -> Response {
    let limit = state.max_blob.min(state.pool.capacity());
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
        return match state.pool.run(move |store| store.bind(&key, &digest)).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => error_response(&e),
        };
    }
    let Some(_permit) = upload_permit(state) else { return too_many_uploads() };
    // Bazel may send zstd (`Content-Encoding: zstd`); what is stored and
    // checked is what it decodes to.
    let zstd = crate::encoding::is_zstd(&request.headers);
    let what = match (&key, &expect) {
        (Some(k), _) => format!("the upload of {k}"),
        (None, Some(d)) => format!("the upload of {d}"),
        (None, None) => "the upload".to_string(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<BodyPart>(4);
    let timeout = state.body_timeout;
    let metrics = state.metrics.clone();
    // Reads the body here, hands it to the store on a blocking thread.
    let reader = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        loop {
            let item = match tokio::time::timeout(timeout, stream.next()).await {
                Err(_) => BodyPart::Failed(Upload::TimedOut),
                Ok(None) => match declared {
                    Some(n) if n != total => BodyPart::Failed(Upload::Broken(format!(
                        "{total} of the {n} bytes Content-Length promised"
                    ))),
                    _ => BodyPart::End,
                },
                Ok(Some(Ok(chunk))) => {
                    total += chunk.len() as u64;
                    Metrics::add(&metrics.bytes_in, chunk.len() as u64);
                    if total > limit {
                        BodyPart::Failed(Upload::TooLarge(total))
                    } else {
                        BodyPart::Data(chunk)
                    }
                }
                Ok(Some(Err(e))) => BodyPart::Failed(Upload::Broken(e.to_string())),
            };
            let last = !matches!(item, BodyPart::Data(_));
            if tx.send(item).await.is_err() || last {
                break;
            }
        }
    });
    let failure = Arc::new(std::sync::Mutex::new(None::<Upload>));
    let seen = failure.clone();
    let stored = state
        .pool
        .run(move |store| {
            let mut input = BodyReader::new(rx, seen.clone());
            let opts = PutOptions { key, pin: false, ..Default::default() };
            if zstd {
                let mut plain = crate::encoding::ZstdUpload::new(input, limit, seen)
                    .map_err(|e| Error::new(ErrorKind::Io, format!("cannot decode {what}: {e}")))?;
                return store.put_checked(&mut plain, &what, expect, &opts);
            }
            store.put_checked(&mut input, &what, expect, &opts)
        })
        .await;
    let _ = reader.await;
    let failure = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (stored, failure) {
        (_, Some(Upload::TooLarge(n))) => too_large(n, limit),
        (_, Some(Upload::TimedOut)) => text(
            StatusCode::REQUEST_TIMEOUT,
            format!("no bytes of the body for {}s; nothing was stored", timeout.as_secs()),
        ),
        (_, Some(Upload::Broken(why))) => {
            text(StatusCode::BAD_REQUEST, format!("the body broke off ({why}); nothing was stored"))
        }
        (Ok(_), None) => {
            Metrics::add(&state.metrics.uploads, 1);
            StatusCode::CREATED.into_response()
        }
        (Err(e), None) => error_response(&e),
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

/// The request body as a `Read` for the store, on its blocking thread.
pub(crate) struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<BodyPart>,
    buf: Bytes,
    ended: bool,
    failure: Arc<std::sync::Mutex<Option<Upload>>>,
}

impl BodyReader {
    pub(crate) fn new(
        rx: tokio::sync::mpsc::Receiver<BodyPart>,
        failure: Arc<std::sync::Mutex<Option<Upload>>>,
    ) -> BodyReader {
        BodyReader { rx, buf: Bytes::new(), ended: false, failure }
    }
}

impl std::io::Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(BodyPart::Data(chunk)) => self.buf = chunk,
                Some(BodyPart::End) => self.ended = true,
                Some(BodyPart::Failed(why)) => {
                    let message = format!("{why:?}");
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    return Err(std::io::Error::other(message));
                }
                None => {
                    let why = Upload::Broken("the body stopped before its end".into());
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    return Err(std::io::Error::other("the body stopped before its end"));
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

async fn delete(state: &Arc<AppState>, target: Target) -> Response {
    let what = target_name(&target);
    match state.pool.run(move |store| store.remove(&target, false)).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            text(StatusCode::NOT_FOUND, format!("{what} is not in the cache"))
        }
        Err(e) => error_response(&e),
    }
}

fn target_name(target: &Target) -> String {
    match target {
        Target::Digest(d) => d.to_string(),
        Target::Key(k) => k.clone(),
    }
}

/// An HTTP date (RFC 9110 IMF-fixdate) for seconds since the epoch.
pub fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let iso = larder::time::format_rfc3339(secs);
    // 2026-11-23T10:00:00Z
    let (y, m, d) = (&iso[0..4], &iso[5..7], &iso[8..10]);
    let month =
        m.parse::<usize>().ok().and_then(|m| MONTHS.get(m.wrapping_sub(1))).unwrap_or(&"Jan");
    let day = DAYS[secs.div_euclid(86_400).rem_euclid(7) as usize];
    format!("{day}, {d} {month} {y} {} GMT", &iso[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn ranges() {
        let check = |value: &str, size: u64, expected: Option<Result<(u64, u64), ()>>| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RANGE, HeaderValue::from_str(value).expect("header"));
            assert_eq!(range(&headers, size), expected, "{value}");
        };
        check("bytes=0-9", 100, Some(Ok((0, 9))));
        check("bytes=90-", 100, Some(Ok((90, 99))));
        check("bytes=-10", 100, Some(Ok((90, 99))));
        check("bytes=50-500", 100, Some(Ok((50, 99))));
        check("bytes=100-", 100, Some(Err(())));
        check("bytes=0-1,5-6", 100, None);
        check("items=0-1", 100, None);
    }
}
