//! A Python package index on the store: the simple repository API for pip
//! and uv (PEP 503 HTML and PEP 691 JSON, with PEP 658 metadata files and
//! PEP 700 fields), the legacy upload API for twine and `uv publish`, the
//! wheels and sdists of the served folder, and a caching proxy of upstream
//! indexes whose projects this server's own files shadow.
//!
//! Routes: `/simple/`, `/simple/<project>/`, `/packages/<project>/<file>`
//! (and `<file>.metadata`), uploads `POST /` and `POST /legacy/`.

mod flight;
pub mod folder;
mod json;
mod pages;
mod upload;
pub(crate) mod upstream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{any, post};
use larder::{Error, Target};

use crate::respond::{self, redirect, text};
use crate::state::Core;
pub use larder::pypi::{Index, file_key};
use larder::pypi::{folder as served, index, manage, meta, names};

/// The package index of a server: its own database and caches, and the
/// store's core it keeps its files in.
pub struct PypiState {
    /// The store and what every door shares.
    pub core: Arc<Core>,
    /// The index's own database.
    pub index: Index,
    /// Simple indexes to proxy, in order (each ending in `/`).
    pub upstreams: Vec<String>,
    /// How long an upstream page is trusted before it is asked again.
    pub ttl: Duration,
    /// How long an upstream may stay silent, and how long a request with
    /// nothing to fall back on waits for an upstream's page.
    pub upstream_timeout: Duration,
    /// Asks the upstreams.
    pub client: reqwest::Client,
    /// Upstream files on their way in, and those remembered as bad.
    flights: flight::Flights,
    /// Where downloads in progress are spooled (unnamed files).
    spool_dir: PathBuf,
    /// Grows at every change, so rendered pages know when they are stale.
    version: AtomicU64,
    pages: std::sync::Mutex<pages::Pages>,
    /// When each upstream's page of each project was last checked.
    checked: std::sync::Mutex<upstream::Checked>,
    /// The refreshes running, by project: each says when it is done.
    refreshing: std::sync::Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    /// The served folder, whose files are served in place; uploads land in
    /// it. Without one, files are store blobs.
    pub folder: Option<served::Folder>,
    /// One scan of the folder at a time; requests that find it changed wait on it.
    scanning: tokio::sync::Mutex<()>,
    /// Uploads decide and keep one at a time, so two uploads of one file
    /// name with other bytes cannot both be taken.
    publishing: tokio::sync::Mutex<()>,
}

impl PypiState {
    /// The package index of the home `home`, serving the packages of
    /// `folder` in place and proxying `upstreams`.
    pub fn open(
        home: &Path,
        folder: Option<PathBuf>,
        core: Arc<Core>,
        upstreams: Vec<String>,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<PypiState, Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("larder/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::new(larder::ErrorKind::Io, format!("cannot start an http client: {e}"))
            })?;
        let upstreams = upstreams
            .into_iter()
            .map(|u| if u.ends_with('/') { u } else { format!("{u}/") })
            .collect();
        Ok(PypiState {
            core,
            index: Index::open(home)?,
            upstreams,
            ttl,
            upstream_timeout: timeout,
            client,
            flights: flight::Flights::default(),
            spool_dir: home.to_path_buf(),
            version: AtomicU64::new(1),
            pages: std::sync::Mutex::default(),
            checked: std::sync::Mutex::default(),
            refreshing: std::sync::Mutex::default(),
            folder: folder.map(|root| served::Folder::open(root, home)).transpose()?,
            scanning: tokio::sync::Mutex::const_new(()),
            publishing: tokio::sync::Mutex::const_new(()),
        })
    }

    /// Notes a change: rendered pages are made again.
    pub fn changed(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }
}

/// The package index's routes: `/simple/…`, `/packages/…`, and uploads
/// (`POST` to `/`, `/legacy` and `/legacy/`).
pub fn router(state: Arc<PypiState>) -> Router {
    Router::new()
        .route("/simple", any(simple))
        .route("/simple/", any(simple))
        .route("/simple/{*project}", any(simple))
        .route("/packages/{*file}", any(packages))
        .route("/", post(upload::upload))
        .route("/legacy", post(upload::upload))
        .route("/legacy/", post(upload::upload))
        .with_state(state)
}

fn not_allowed(method: &Method) -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on this path"))
}

/// `/simple/` and `/simple/<project>/`, in the form the client accepts.
async fn simple(State(state): State<Arc<PypiState>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    match parts.method {
        Method::GET | Method::HEAD => {}
        Method::POST => {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "this is the simple index; upload to / or /legacy/",
            );
        }
        ref other => return not_allowed(other),
    }
    let Some(rest) = parts.uri.path().strip_prefix("/simple/") else {
        return redirect("/simple/");
    };
    // A package copied into the served folder is listed at once.
    folder::refresh(&state, false).await;
    if rest.is_empty() {
        return pages::project_list(&state, &parts).await;
    }
    let (name, slash) = match rest.strip_suffix('/') {
        Some(n) => (n, true),
        None => (rest, false),
    };
    if name.contains('/') || !names::is_valid_project(name) {
        return text(StatusCode::NOT_FOUND, format!("no project named {name}"));
    }
    let normal = names::normalize(name);
    if normal != name || !slash {
        return redirect(&format!("/simple/{normal}/"));
    }
    pages::project_page(&state, &parts, &normal).await
}

/// `/packages/<project>/<file>`: read, or removed (DELETE).
async fn packages(State(state): State<Arc<PypiState>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::DELETE) {
        return not_allowed(&parts.method);
    }
    let rest = parts.uri.path().strip_prefix("/packages/").unwrap_or_default();
    let Some((project, filename)) = rest.split_once('/') else {
        return text(StatusCode::NOT_FOUND, "files are at /packages/<project>/<file>");
    };
    let filename = larder::percent::decode_lossy(filename);
    if parts.method == Method::DELETE {
        if filename.ends_with(".metadata") {
            return respond::with_reason(
                StatusCode::BAD_REQUEST,
                "a .metadata file goes with its wheel: DELETE the wheel",
            );
        }
        let chosen = manage::Chosen {
            project: project.to_string(),
            version: None,
            filename: Some(filename.to_string()),
        };
        return change(&state, chosen, manage::Change::Remove).await;
    }
    file(&state, &parts, project, &filename).await
}

/// Applies a lifecycle change (the caller was authorized to write).
pub async fn change(
    state: &Arc<PypiState>,
    chosen: manage::Chosen,
    change: manage::Change,
) -> Response {
    let _publishing = state.publishing.lock().await;
    let pypi = state.clone();
    let verb = match &change {
        manage::Change::Remove => "removed",
        manage::Change::Yank(_) => "yanked",
        manage::Change::Unyank => "unyanked",
    };
    let done =
        state.core.pool.run(move |store| manage::apply(&pypi.index, store, &chosen, &change)).await;
    state.changed();
    match done {
        Ok(files) => {
            respond::with_reason(StatusCode::OK, &format!("OK, {verb} {}", files.join(", ")))
        }
        Err(e) => {
            let (status, message) = respond::told(&e);
            respond::with_reason(status, &message)
        }
    }
}

/// A distribution file, or its `.metadata`: from the store, or fetched from
/// its upstream and kept while it is sent.
async fn file(state: &Arc<PypiState>, parts: &Parts, project: &str, filename: &str) -> Response {
    let (dist, metadata) = match filename.strip_suffix(".metadata") {
        Some(dist) => (dist, true),
        None => (filename, false),
    };
    let listable = names::parse_filename(dist).is_some() || names::parse_legacy(dist).is_some();
    if !listable || names::normalize(project) != project {
        return text(StatusCode::NOT_FOUND, format!("no file {filename}"));
    }
    let key = file_key(project, filename);
    let target = Target::Key(key.clone());
    let from_folder = match state.folder.is_some() && !metadata {
        true => in_folder(state, parts, project, dist).await,
        false => None,
    };
    let mut response = match from_folder {
        Some(response) => response,
        None => crate::blobs::get(&state.core, parts, target.clone()).await,
    };
    if response.status() == StatusCode::NOT_FOUND
        && !state.upstreams.is_empty()
        && let Some(wanted) = upstream_file(state, project, dist, metadata, &key).await
    {
        response = match flight::send(state, parts, wanted).await {
            Some(r) => r,
            // Kept meanwhile by another request's download.
            None => crate::blobs::get(&state.core, parts, target).await,
        };
    }
    if response.status().is_success() {
        // Files never change under their name.
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
    }
    response
}

/// A file of the served folder, sent from where it is; indexed again first
/// if it changed since it was. `None` if the folder has no such file.
async fn in_folder(
    state: &Arc<PypiState>,
    parts: &Parts,
    project: &str,
    filename: &str,
) -> Option<Response> {
    folder::refresh(state, false).await;
    for again in [false, true] {
        let pypi = state.clone();
        let (name, project) = (filename.to_string(), project.to_string());
        let opened = tokio::task::spawn_blocking(move || {
            let Some(row) = pypi.index.file(&name)? else { return Ok(None) };
            if row.origin != index::FOLDER || row.project != project {
                return Ok(None);
            }
            Ok(Some(served::open_unchanged(&row)?))
        })
        .await
        .unwrap_or_else(|e| Err(Error::new(larder::ErrorKind::Io, e.to_string())));
        match opened {
            Ok(None) => return None,
            Ok(Some(Some(found))) => {
                return Some(crate::blobs::send_found(&state.core, parts, found));
            }
            // Changed since it was indexed: indexed again, then sent.
            Ok(Some(None)) if !again => {
                folder::refresh(state, true).await;
            }
            Ok(Some(None)) => {
                return Some(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{filename} is changing; try again"),
                ));
            }
            Err(e) => return Some(respond::error(&e)),
        }
    }
    None
}

/// Where an upstream serves `dist` (or its metadata file), if one lists it
/// and this server has no files of its own for `project` (which shadow the
/// upstreams'). A project whose page was never fetched is fetched first, so
/// a client that knows a file's URL gets it without the page.
async fn upstream_file(
    state: &Arc<PypiState>,
    project: &str,
    dist: &str,
    metadata: bool,
    key: &str,
) -> Option<flight::Wanted> {
    let rows_of = |state: Arc<PypiState>, project: String| async move {
        tokio::task::spawn_blocking(move || state.index.files_of(&project))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let mut rows = rows_of(state.clone(), project.to_string()).await;
    if !rows.iter().any(|r| r.filename == dist) {
        // Checked lately, this changes nothing; otherwise it fetches the page.
        let _ = upstream::refresh(state, project).await;
        rows = rows_of(state.clone(), project.to_string()).await;
    }
    if rows.iter().any(|r| r.is_local()) {
        return None;
    }
    let row = rows.into_iter().find(|r| r.filename == dist)?;
    // A metadata file is asked of an upstream only if it said it has one.
    let expect = if metadata { Some(row.metadata_sha256.clone()?) } else { row.sha256.clone() };
    let url = row.url?;
    Some(flight::Wanted {
        key: key.to_string(),
        url: if metadata { format!("{url}.metadata") } else { url },
        expect: expect.and_then(|hex| format!("sha256:{hex}").parse().ok()),
    })
}

pub use larder::time::now;
