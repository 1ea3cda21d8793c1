//! The routes: every front door of the one store.
//!
//! - `[/<instance>]/ac/<sha256>` and `[/<instance>]/cas/<sha256>`: Bazel's
//!   HTTP cache; CAS bodies are checked against their digest.
//! - Any other path is a key: GET, HEAD, PUT, DELETE (ccache, Gradle, curl).
//! - PROPFIND and MKCOL on the same key space, for WebDAV clients (sccache).
//! - The package index's paths (`/simple/`, `/packages/`, uploads), its own
//!   router.
//! - `/status`, `/metrics`, `/healthz`, and `/`, a page for people.
//!
//! Every request is counted and its credentials checked here, once, before
//! any door sees it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use larder::Target;

use crate::auth::Access;
use crate::paths::{Resource, classify};
use crate::pypi::PypiState;
use crate::respond::text;
use crate::state::{AppState, authorize};

/// The whole application: the store's doors and the package index's.
pub fn router(state: Arc<AppState>, index: Arc<PypiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(crate::status::status))
        .route("/metrics", get(crate::status::metrics))
        // `/` is the page for people, a WebDAV folder, and (POST) the
        // package index's upload.
        .route("/", get(crate::status::page).fallback(door))
        .fallback(door)
        .with_state(state.clone())
        .merge(crate::pypi::router(index))
        .layer(axum::middleware::from_fn_with_state(state, front))
        // Bodies stream to the store with their own limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// Counts every request and its answer, and checks its credentials.
async fn front(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let metrics = &state.core.metrics;
    metrics.request(request.method().as_str());
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (request.method().clone(), request.uri().clone()));
    let access_line = state.access_log.then(|| AccessLine::of(&request));
    let response = if request.uri().path() == "/healthz" {
        next.run(request).await
    } else {
        match access(request.method()) {
            None => {
                let method = request.method();
                text(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not served here"))
            }
            Some(access) => match authorize(&state, request.headers(), access).await {
                Ok(()) => next.run(request).await,
                Err(refused) => refused,
            },
        }
    };
    metrics.response(response.status().as_u16());
    if let Some((method, uri)) = logged {
        tracing::debug!("{method} {uri} {}", response.status().as_u16());
    }
    if let Some(line) = access_line {
        line.write(&response);
    }
    response
}

/// What the access log says of a request, taken before it is served.
struct AccessLine {
    peer: String,
    user: String,
    request: String,
    started: std::time::Instant,
}

impl AccessLine {
    fn of(request: &Request) -> AccessLine {
        let peer = request
            .extensions()
            .get::<crate::state::Peer>()
            .map_or_else(|| "-".to_string(), |p| p.0.ip().to_string());
        let user = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::parse_basic)
            .map_or_else(|| "-".to_string(), |(user, _)| user);
        let request_line =
            format!("{} {} {:?}", request.method(), request.uri(), request.version());
        AccessLine { peer, user, request: request_line, started: std::time::Instant::now() }
    }

    /// One line on standard error, much as web servers' combined logs
    /// write it (the body's size is `-` when it streams without a length).
    fn write(self, response: &Response) {
        use std::io::Write;
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let line = format!(
            "{} - {} [{}] \"{}\" {} {bytes} {}ms\n",
            self.peer,
            self.user,
            larder::time::format_rfc3339(larder::time::now()),
            self.request,
            response.status().as_u16(),
            self.started.elapsed().as_millis(),
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// What a method needs to be allowed; `None`: nothing here serves it (the
/// health probe needs nothing).
fn access(method: &Method) -> Option<Access> {
    match method.as_str() {
        "GET" | "HEAD" | "PROPFIND" | "OPTIONS" => Some(Access::Read),
        "PUT" | "DELETE" | "MKCOL" | "POST" => Some(Access::Write),
        _ => None,
    }
}

/// The store's generic door: what a path names, by method.
async fn door(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let resource = match classify(parts.uri.path()) {
        Ok(r) => r,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let core = &state.core;
    match (parts.method.as_str(), resource) {
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
        ("PROPFIND", resource) => {
            crate::webdav::propfind(core, &parts, body, resource, state.started_at).await
        }
        ("MKCOL", resource) => crate::webdav::mkcol(core, resource).await,
        ("GET" | "HEAD", Resource::Root) => {
            crate::status::page(State(state.clone()), parts.method.clone()).await
        }
        ("GET" | "HEAD", Resource::Folder(_)) => {
            text(StatusCode::NOT_FOUND, "a folder of keys has no content; PROPFIND lists it")
        }
        ("GET" | "HEAD", Resource::Blob(d)) => {
            crate::blobs::get(core, &parts, Target::Digest(d)).await
        }
        ("GET" | "HEAD", Resource::Key(k)) => crate::blobs::get(core, &parts, Target::Key(k)).await,
        ("PUT", Resource::Blob(d)) => crate::blobs::put(core, &parts, body, None, Some(d)).await,
        ("PUT", Resource::Key(k)) => crate::blobs::put(core, &parts, body, Some(k), None).await,
        ("DELETE", Resource::Blob(d)) => crate::blobs::delete(core, Target::Digest(d)).await,
        ("DELETE", Resource::Key(k)) => crate::blobs::delete(core, Target::Key(k)).await,
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
