//! The legacy upload API that twine and `uv publish` speak: a multipart POST
//! with `:action=file_upload`, the file in `content`, and its metadata in
//! other fields. The file streams into the store and is kept only once every
//! check passed; errors are a 400 whose reason phrase (which twine prints)
//! says what is wrong.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;
use larder::PutOptions;

use super::index::{FOLDER, FileRow, UPLOADED};
use super::manage::{Change, Chosen};
use super::names::{self, Kind};
use super::{PypiState, file_key, meta, now};
use crate::body::{self, NoTap, Pump, Upload};
use crate::metrics::Metrics;
use crate::respond::{self, with_reason as reply};
use crate::state::Uploads;

/// The fields an upload reads besides the file; the others are dropped.
const READ: [&str; 8] = [
    ":action",
    "name",
    "version",
    "filetype",
    "sha256_digest",
    "requires_python",
    // Removing and yanking.
    "filename",
    "reason",
];

/// The largest field read: names, versions and digests are short.
const FIELD_LIMIT: usize = 64 << 10;

/// All the fields besides the file, read or dropped: twine sends the README
/// as the description.
const FIELDS_LIMIT: u64 = 64 << 20;

/// The most non-file fields read: twine sends about thirty, more with
/// many classifiers.
const MAX_FIELDS: usize = 1000;

/// Waits for the next part of the body, for as long as a client may stay silent.
async fn timed<T>(
    state: &PypiState,
    next: impl std::future::Future<Output = T>,
) -> Result<T, Response> {
    let timeout = state.core.uploads.timeout;
    tokio::time::timeout(timeout, next).await.map_err(|_| timed_out(timeout))
}

fn timed_out(timeout: std::time::Duration) -> Response {
    reply(
        StatusCode::REQUEST_TIMEOUT,
        &format!("no bytes of the upload for {}s; nothing was stored", timeout.as_secs()),
    )
}

fn bad(message: impl AsRef<str>) -> Response {
    reply(StatusCode::BAD_REQUEST, message.as_ref())
}

/// Handles an upload; the router checked the credentials for writing.
pub async fn upload(
    State(state): State<Arc<PypiState>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let state = &state;
    let Some(_permit) = state.core.uploads.permit() else { return Uploads::too_many() };
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => return bad(format!("the upload is not multipart/form-data ({})", e.body_text())),
    };
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut staged: Option<(String, Staged)> = None;
    let mut count = 0usize;
    let mut others = 0u64;
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
        // Only the fields read are kept (the first of each), each small; the
        // others (the description, classifiers...) are read past, within a
        // budget, and dropped.
        let keep = READ.contains(&name.as_str()) && !fields.contains_key(&name);
        let mut value = Vec::new();
        let mut field = field;
        loop {
            match timed(state, field.chunk()).await {
                Err(response) => return response,
                Ok(Ok(Some(chunk))) => {
                    others += chunk.len() as u64;
                    if others > FIELDS_LIMIT {
                        return bad(format!(
                            "the upload's fields besides the file are larger than {} MiB",
                            FIELDS_LIMIT >> 20
                        ));
                    }
                    if !keep {
                        continue;
                    }
                    if value.len() + chunk.len() > FIELD_LIMIT {
                        return bad(format!(
                            "the field {name} is larger than {} KiB",
                            FIELD_LIMIT >> 10
                        ));
                    }
                    value.extend_from_slice(&chunk);
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return bad(format!("a malformed multipart body ({})", e.body_text()));
                }
            }
        }
        if keep {
            fields.insert(name, String::from_utf8_lossy(&value).into_owned());
        }
    }
    match fields.get(":action").map(String::as_str) {
        Some("file_upload") => {}
        Some(action @ ("remove_pkg" | "yank" | "unyank")) => {
            let change = match action {
                "remove_pkg" => Change::Remove,
                "yank" => Change::Yank(fields.get("reason").cloned().unwrap_or_default()),
                _ => Change::Unyank,
            };
            let Some(project) = fields.get("name").cloned() else {
                return bad(format!("{action} needs the project's name"));
            };
            let (version, filename) =
                (fields.get("version").cloned(), fields.get("filename").cloned());
            if version.is_none() && filename.is_none() {
                return bad(format!("{action} needs a version (or a filename)"));
            }
            return super::change(state, Chosen { project, version, filename }, change).await;
        }
        Some(other) => {
            return bad(format!(
                "the action {other} is not supported; file_upload, remove_pkg, yank and unyank are"
            ));
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
    /// The row of the file kept (in the store, or in the served folder).
    done: tokio::sync::oneshot::Receiver<Result<Option<FileRow>, larder::Error>>,
}

/// Streams the file into the store (not yet kept), and reads its metadata.
async fn stage(
    state: &Arc<PypiState>,
    field: axum::extract::multipart::Field<'_>,
) -> Result<Staged, Response> {
    let filename = field.file_name().unwrap_or("").to_string();
    let Some(dist) = names::parse_filename(&filename) else {
        return Err(bad(format!(
            "`{filename}` is not the name of a wheel or an sdist (NAME-VERSION-TAGS.whl, NAME-VERSION.tar.gz)"
        )));
    };
    if let Some(why) = names::wheel_tags_problem(&filename) {
        return Err(bad(format!("{filename}: {why}; nothing was stored")));
    }
    let (tx, mut rx) = body::channel();
    let (staged_tx, staged_rx) = tokio::sync::oneshot::channel();
    let (decide_tx, decide_rx) = tokio::sync::oneshot::channel::<Option<(FileRow, String)>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let core = &state.core;
    let pool = core.pool.clone();
    let limit = core.uploads.limit.min(core.pool.capacity());
    let kind = dist.kind;
    let what = filename.clone();
    let pypi = state.clone();
    tokio::task::spawn_blocking(move || {
        let result = pool.with(|store| {
            let pending = store.stage_stream(&mut rx, &what, None, &larder::NoProgress)?;
            let meta = match pending.open() {
                Ok(file) => meta::read(file, kind),
                Err(e) => {
                    tracing::error!("{e}");
                    Err("the server cannot read the file it stored; its log says why".into())
                }
            };
            let digest = pending.digest().unwrap_or_else(|| larder::Digest::of(b""));
            let _ = staged_tx.send((digest, pending.size(), meta));
            // Kept only if the upload checks out.
            match decide_rx.blocking_recv() {
                // A served folder gets the file itself; the store keeps nothing.
                Ok(Some((mut row, key))) => {
                    match &pypi.folder {
                        Some(folder) => {
                            let (path, stamp) = folder.place(pending.open()?, &row.filename)?;
                            row.origin = FOLDER.to_string();
                            row.path = Some(path.display().to_string());
                            row.stamp = Some(stamp);
                        }
                        None => {
                            pending.commit(&PutOptions {
                                key: Some(key),
                                pin: true,
                                ..Default::default()
                            })?;
                        }
                    }
                    Ok(Some(row))
                }
                _ => Ok(None),
            }
        });
        let _ = done_tx.send(result);
    });
    let how = Pump {
        limit,
        silence: Some(core.uploads.timeout),
        declared: None,
        counter: &core.metrics.bytes_in,
    };
    match body::pump(field, tx, how, &mut NoTap).await {
        Ok(_) | Err(Upload::NotRead) => {}
        Err(Upload::TimedOut) => return Err(timed_out(core.uploads.timeout)),
        Err(Upload::TooLarge(_)) => {
            return Err(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("{filename} is larger than this server takes ({limit} bytes)"),
            ));
        }
        Err(Upload::Broken(why)) => {
            return Err(bad(format!("the file broke off ({why}); nothing was stored")));
        }
    }
    match staged_rx.await {
        Ok((digest, size, meta)) => {
            Ok(Staged { digest, size, meta, decide: decide_tx, done: done_rx })
        }
        Err(_) => Err(match done_rx.await {
            Ok(Err(e)) => respond::error(&e),
            _ => reply(StatusCode::INTERNAL_SERVER_ERROR, "the store stopped"),
        }),
    }
}

async fn finish(
    state: &Arc<PypiState>,
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
        && !names::same_version(version, &dist.version)
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
    // What the file says of itself must be what its name says, as on PyPI:
    // otherwise pages list one project and installers get another.
    let inside = format!("{filename}'s metadata ({})", dist.kind.metadata_file());
    match meta.name.as_deref() {
        Some(name) if names::normalize(name) == dist.project => {}
        Some(name) => {
            return refuse(
                decide,
                bad(format!(
                    "{inside} names the project {name}, not {}; nothing was stored",
                    dist.project
                )),
            );
        }
        None => return refuse(decide, bad(format!("{inside} has no Name; nothing was stored"))),
    }
    match meta.version.as_deref() {
        Some(version) if names::same_version(version, &dist.version) => {}
        Some(version) => {
            return refuse(
                decide,
                bad(format!(
                    "{inside} names the version {version}, not {}; nothing was stored",
                    dist.version
                )),
            );
        }
        None => return refuse(decide, bad(format!("{inside} has no Version; nothing was stored"))),
    }
    // The same name again: the same bytes are fine, other bytes never replace them.
    let _publishing = state.publishing.lock().await;
    let existing = {
        let pypi = state.clone();
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
                .core
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
                    return refuse(decide, respond::error(&e));
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
    let row = match done.await {
        Ok(Ok(Some(row))) => row,
        Ok(Ok(None)) => return reply(StatusCode::INTERNAL_SERVER_ERROR, "the upload was dropped"),
        Ok(Err(e)) => return respond::error(&e),
        Err(_) => return reply(StatusCode::INTERNAL_SERVER_ERROR, "the store stopped"),
    };
    let pypi = state.clone();
    let saved = tokio::task::spawn_blocking(move || pypi.index.put(&row)).await;
    match saved {
        Ok(Ok(())) => {
            state.changed();
            Metrics::add(&state.core.metrics.uploads, 1);
            reply(StatusCode::OK, "OK")
        }
        Ok(Err(e)) => respond::error(&e),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
