//! The legacy upload API that twine and `uv publish` speak: a multipart POST
//! with `:action=file_upload`, the file in `content`, and its metadata in
//! other fields. The file streams into the store and is kept only once every
//! check passed; errors are a 400 whose reason phrase (which twine prints)
//! says what is wrong.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use larder::PutOptions;

use super::index::{FileRow, UPLOADED};
use super::names::{self, Kind};
use super::{file_key, meta, now};
use crate::app::{AppState, BodyPart, Upload};
use crate::metrics::Metrics;

/// The largest non-file field read.
const FIELD_LIMIT: usize = 1 << 20;

/// The most non-file fields read: twine sends about thirty, more with
/// many classifiers.
const MAX_FIELDS: usize = 1000;

/// An answer with `status`, the message as its reason phrase and its body.
pub fn reply(status: StatusCode, message: &str) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    let phrase: String =
        message.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).take(300).collect();
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(phrase) {
        response.extensions_mut().insert(reason);
    }
    response
}

/// Waits for the next part of the body, for as long as a client may stay silent.
async fn timed<T>(
    state: &AppState,
    next: impl std::future::Future<Output = T>,
) -> Result<T, Response> {
    tokio::time::timeout(state.body_timeout, next).await.map_err(|_| {
        reply(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "no bytes of the upload for {}s; nothing was stored",
                state.body_timeout.as_secs()
            ),
        )
    })
}

fn bad(message: impl AsRef<str>) -> Response {
    reply(StatusCode::BAD_REQUEST, message.as_ref())
}

/// Handles an upload; the caller checked the credentials for writing.
pub async fn upload(state: &Arc<AppState>, parts: &Parts, body: Body) -> Response {
    let Some(_permit) = crate::app::upload_permit(state) else {
        return crate::app::too_many_uploads();
    };
    let mut request = Request::builder().method(parts.method.clone()).uri(parts.uri.clone());
    for (k, v) in &parts.headers {
        request = request.header(k, v);
    }
    let Ok(mut request) = request.body(body) else { return bad("a malformed request") };
    // Carries the router's body limit setting (none: the file streams to the store).
    *request.extensions_mut() = parts.extensions.clone();
    let mut multipart = match Multipart::from_request(request, &()).await {
        Ok(m) => m,
        Err(e) => return bad(format!("the upload is not multipart/form-data ({})", e.body_text())),
    };
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut staged: Option<(String, Staged)> = None;
    let mut count = 0usize;
    loop {
        let field = match timed(state, multipart.next_field()).await {
            Err(response) => return response,
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return bad(format!("a malformed multipart body ({})", e.body_text())),
        };
        count += 1;
        if count > MAX_FIELDS {
            return bad(format!("the upload has more than {MAX_FIELDS} fields"));
        }
        let name = field.name().unwrap_or("").to_string();
        if name == "content" {
            let filename = field.file_name().unwrap_or("").to_string();
            if staged.is_some() {
                return bad("the upload has two `content` fields");
            }
            match stage(state, field).await {
                Ok(s) => staged = Some((filename, s)),
                Err(response) => return response,
            }
            continue;
        }
        let mut value = Vec::new();
        let mut field = field;
        loop {
            match timed(state, field.chunk()).await {
                Err(response) => return response,
                Ok(Ok(Some(chunk))) => {
                    if value.len() + chunk.len() > FIELD_LIMIT {
                        return bad(format!("the field {name} is larger than 1 MiB"));
                    }
                    value.extend_from_slice(&chunk);
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return bad(format!("a malformed multipart body ({})", e.body_text()));
                }
            }
        }
        // Repeated fields (classifiers) are not needed here; the first wins.
        fields.entry(name).or_insert_with(|| String::from_utf8_lossy(&value).into_owned());
    }
    match fields.get(":action").map(String::as_str) {
        Some("file_upload") => {}
        Some(other) => {
            return bad(format!("the action {other} is not supported; only file_upload is"));
        }
        None => return bad("the upload has no :action field; send :action=file_upload"),
    }
    let Some((filename, staged)) = staged else {
        return bad("the upload has no `content` field with the file");
    };
    finish(state, fields, filename, staged).await
}

/// A file staged in the store, on its blocking thread, waiting for the
/// verdict: `Some(row)` keeps it, `None` drops it.
struct Staged {
    digest: larder::Digest,
    size: u64,
    meta: Result<meta::Meta, String>,
    decide: tokio::sync::oneshot::Sender<Option<(FileRow, String)>>,
    done: tokio::sync::oneshot::Receiver<Result<(), larder::Error>>,
}

/// Streams the file into the store (not yet kept), and reads its metadata.
async fn stage(
    state: &Arc<AppState>,
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<Staged, Response> {
    let filename = field.file_name().unwrap_or("").to_string();
    let Some(dist) = names::parse_filename(&filename) else {
        return Err(bad(format!(
            "`{filename}` is not the name of a wheel or an sdist (NAME-VERSION-TAGS.whl, NAME-VERSION.tar.gz)"
        )));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<BodyPart>(4);
    let (staged_tx, staged_rx) = tokio::sync::oneshot::channel();
    let (decide_tx, decide_rx) = tokio::sync::oneshot::channel::<Option<(FileRow, String)>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let pool = state.pool.clone();
    let limit = state.max_blob.min(state.pool.capacity());
    let kind = dist.kind;
    let what = filename.clone();
    tokio::task::spawn_blocking(move || {
        let result = pool.with(|store| {
            let failure = Arc::new(std::sync::Mutex::new(None));
            let mut input = crate::app::BodyReader::new(rx, failure);
            let pending = store.stage_stream(&mut input, &what, None, &larder::NoProgress)?;
            let meta = pending.open().map_err(|e| e.to_string()).and_then(|f| meta::read(f, kind));
            let digest = pending.digest().unwrap_or_else(|| larder::Digest::of(b""));
            let _ = staged_tx.send(Ok((digest, pending.size(), meta)));
            // Kept only if the upload checks out.
            match decide_rx.blocking_recv() {
                Ok(Some((row, key))) => {
                    pending.commit(&PutOptions {
                        key: Some(key),
                        pin: true,
                        ..Default::default()
                    })?;
                    Ok(Some(row))
                }
                _ => Ok(None),
            }
        });
        match result {
            Ok(_) => {
                let _ = done_tx.send(Ok(()));
            }
            Err(e) => {
                let _ = done_tx.send(Err(e));
            }
        }
    });
    let mut total = 0u64;
    loop {
        let next = match timed(state, field.chunk()).await {
            Ok(next) => next,
            Err(response) => {
                let _ = tx.send(BodyPart::Failed(Upload::TimedOut)).await;
                return Err(response);
            }
        };
        match next {
            Ok(Some(chunk)) => {
                total += chunk.len() as u64;
                Metrics::add(&state.metrics.bytes_in, chunk.len() as u64);
                if total > limit {
                    let _ = tx.send(BodyPart::Failed(Upload::TooLarge(total))).await;
                    return Err(reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("{filename} is larger than this server takes ({limit} bytes)"),
                    ));
                }
                if tx.send(BodyPart::Data(chunk)).await.is_err() {
                    break;
                }
            }
            Ok(None) => {
                let _ = tx.send(BodyPart::End).await;
                break;
            }
            Err(e) => {
                let _ = tx.send(BodyPart::Failed(Upload::Broken(e.to_string()))).await;
                return Err(bad(format!(
                    "the file broke off ({}); nothing was stored",
                    e.body_text()
                )));
            }
        }
    }
    drop(tx);
    match staged_rx.await {
        Ok(Ok((digest, size, meta))) => {
            Ok(Staged { digest, size, meta, decide: decide_tx, done: done_rx })
        }
        Ok(Err::<_, larder::Error>(e)) => {
            Err(crate::app::text(crate::app::status_of(&e), e.to_string()))
        }
        Err(_) => {
            let e = done_rx.await.ok().and_then(Result::err);
            Err(match e {
                Some(e) => crate::app::text(crate::app::status_of(&e), e.to_string()),
                None => reply(StatusCode::INTERNAL_SERVER_ERROR, "the store stopped"),
            })
        }
    }
}

async fn finish(
    state: &Arc<AppState>,
    fields: HashMap<String, String>,
    filename: String,
    staged: Staged,
) -> Response {
    let Staged { digest, size, meta, decide, done } = staged;
    let refuse = |decide: tokio::sync::oneshot::Sender<Option<(FileRow, String)>>,
                  response: Response| {
        let _ = decide.send(None);
        response
    };
    let Some(dist) = names::parse_filename(&filename) else {
        return refuse(decide, bad(format!("`{filename}` is not the name of a wheel or an sdist")));
    };
    let name = fields.get("name").map(String::as_str).unwrap_or("");
    if !names::is_valid_project(name) {
        return refuse(decide, bad(format!("`{name}` is not a valid project name (PEP 508)")));
    }
    if names::normalize(name) != dist.project {
        return refuse(decide, bad(format!("the file {filename} is not of the project {name}")));
    }
    if let Some(version) = fields.get("version")
        && !same_version(version, &dist.version)
    {
        return refuse(decide, bad(format!("the file {filename} is not of the version {version}")));
    }
    if let Some(filetype) = fields.get("filetype")
        && filetype != dist.kind.filetype()
    {
        return refuse(decide, bad(format!("the file {filename} is not a {filetype}")));
    }
    let hex = digest.hex();
    match fields.get("sha256_digest") {
        Some(claimed) if !claimed.eq_ignore_ascii_case(&hex) => {
            return refuse(
                decide,
                bad(format!(
                    "the file's sha256 is {hex}, not the {claimed} the upload gives; nothing was stored"
                )),
            );
        }
        _ => {}
    }
    let meta = match meta {
        Ok(m) => m,
        Err(why) => return refuse(decide, bad(format!("{filename}: {why}"))),
    };
    // The same name again: the same bytes are fine, other bytes never replace them.
    let _publishing = state.pypi.publishing.lock().await;
    let existing = {
        let pypi = state.pypi.clone();
        let f = filename.clone();
        tokio::task::spawn_blocking(move || pypi.index.file(&f))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    };
    if let Some(row) = existing {
        let response = if row.sha256.as_deref() == Some(hex.as_str()) {
            reply(StatusCode::OK, "OK, already there")
        } else {
            reply(
                StatusCode::CONFLICT,
                &format!(
                    "File already exists ({filename}) with other contents; a released file never changes: bump the version"
                ),
            )
        };
        return refuse(decide, response);
    }
    // A wheel's METADATA is served on its own (PEP 658).
    let metadata_sha256 = match &meta.file {
        Some(bytes) if dist.kind == Kind::Wheel => {
            let bytes = bytes.clone();
            let key = file_key(&dist.project, &format!("{filename}.metadata"));
            let stored = state
                .pool
                .run(move |store| {
                    store.put_bytes(
                        &bytes,
                        &PutOptions { key: Some(key), pin: true, ..Default::default() },
                    )
                })
                .await;
            match stored {
                Ok(d) => Some(d.hex()),
                Err(e) => {
                    return refuse(
                        decide,
                        crate::app::text(crate::app::status_of(&e), e.to_string()),
                    );
                }
            }
        }
        _ => None,
    };
    let row = FileRow {
        filename: filename.clone(),
        project: dist.project.clone(),
        version: dist.version.clone(),
        sha256: Some(hex),
        size: Some(size),
        upload_time: Some(larder::time::format_rfc3339(now())),
        requires_python: meta
            .requires_python
            .clone()
            .or_else(|| fields.get("requires_python").cloned())
            .filter(|s| !s.is_empty()),
        metadata_sha256,
        yanked: None,
        origin: UPLOADED.to_string(),
        url: None,
        path: None,
        stamp: None,
    };
    let _ = decide.send(Some((row.clone(), file_key(&dist.project, &filename))));
    match done.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return crate::app::text(crate::app::status_of(&e), e.to_string()),
        Err(_) => return reply(StatusCode::INTERNAL_SERVER_ERROR, "the store stopped"),
    }
    let pypi = state.pypi.clone();
    let saved = tokio::task::spawn_blocking(move || pypi.index.put(&row)).await;
    match saved {
        Ok(Ok(())) => {
            state.pypi.changed();
            Metrics::add(&state.metrics.uploads, 1);
            reply(StatusCode::OK, "OK")
        }
        Ok(Err(e)) => crate::app::text(crate::app::status_of(&e), e.to_string()),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Whether two spellings name one version (`1.0` and `1.0`, `1.0_rc1` and
/// `1.0rc1`...): compared without case, separators and a leading `v`.
fn same_version(a: &str, b: &str) -> bool {
    let canon = |v: &str| -> String {
        v.trim()
            .trim_start_matches(['v', 'V'])
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | '.'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::same_version;

    #[test]
    fn versions() {
        assert!(same_version("1.0", "1.0"));
        assert!(same_version("1.0.0rc1", "1.0.0_rc1"));
        assert!(!same_version("1.0", "1.1"));
    }
}
