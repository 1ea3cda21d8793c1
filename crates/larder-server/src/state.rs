//! What the handlers share: the store's handles, the memory cache, the
//! counters and the upload limits (`Core`, which every door uses, HTTP's
//! and gRPC's), and who may do what (`AppState`, which both check before
//! any door).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::auth::{Access, Auth, Decision};
use crate::hot::HotCache;
use crate::metrics::Metrics;
use crate::pool::StorePool;
use crate::respond::{text, with_reason};

/// What every door shares.
pub struct Core {
    pub pool: Arc<StorePool>,
    /// Small blobs read lately, kept in memory.
    pub hot: Arc<HotCache>,
    pub metrics: Arc<Metrics>,
    pub uploads: Uploads,
}

/// Uploads streaming into the store, over HTTP or gRPC: each holds a
/// blocking thread and a store handle, so they are limited apart from
/// connections.
pub struct Uploads {
    permits: Arc<tokio::sync::Semaphore>,
    /// The largest body accepted (never more than the store's capacity).
    pub limit: u64,
    /// How long a client may leave an upload without sending a byte.
    pub timeout: Duration,
}

/// Uploads taken at once; more get 503 (gRPC: UNAVAILABLE) and retry.
pub const UPLOADS_AT_ONCE: usize = 128;

impl Uploads {
    pub fn new(limit: u64, timeout: Duration) -> Uploads {
        let permits = Arc::new(tokio::sync::Semaphore::new(UPLOADS_AT_ONCE));
        Uploads { permits, limit, timeout }
    }

    /// A permit to stream an upload into the store, or `None`: too many now.
    pub fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.permits.try_acquire().ok()
    }

    /// A permit held apart from any one request (a ByteStream Write that
    /// waits to be resumed holds its slot), or `None`: too many now.
    pub fn owned_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// What a client past [`UPLOADS_AT_ONCE`] is told.
    pub fn too_many_line() -> String {
        format!("{UPLOADS_AT_ONCE} uploads are in progress; retry in a moment")
    }

    /// The 503 for an upload past [`UPLOADS_AT_ONCE`], which says to retry.
    pub fn too_many() -> Response {
        let mut response = text(StatusCode::SERVICE_UNAVAILABLE, Uploads::too_many_line());
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }

    /// Uploads streaming now (or waiting to be resumed).
    pub fn in_flight(&self) -> usize {
        UPLOADS_AT_ONCE - self.permits.available_permits()
    }
}

/// The whole server's state: the core, and who may use it.
pub struct AppState {
    pub core: Arc<Core>,
    pub auth: Option<Arc<Auth>>,
    pub started: Instant,
    /// When the server started, in seconds since the epoch.
    pub started_at: i64,
    /// Whether every request is logged to standard error (`--access-log`).
    pub access_log: bool,
}

/// The address a request came from, as the listener accepted it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl AppState {
    /// Whether the request's credentials (HTTP's `Authorization` header, or
    /// gRPC's `authorization` metadata, which is the same) allow `access`;
    /// refusals for missing or wrong credentials are counted.
    pub async fn decide(&self, headers: &HeaderMap, access: Access) -> Decision {
        let Some(auth) = &self.auth else { return Decision::Allow };
        let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let decision = auth.check(header, access).await;
        if decision == Decision::Unauthorized {
            Metrics::add(&self.core.metrics.auth_failures, 1);
        }
        decision
    }
}

/// Checks the request's credentials for `access`; `Err` is the answer.
pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    access: Access,
) -> Result<(), Response> {
    match state.decide(headers, access).await {
        Decision::Allow => Ok(()),
        Decision::Unauthorized => {
            let mut response = text(StatusCode::UNAUTHORIZED, "credentials needed or wrong");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"larder\""),
            );
            Err(response)
        }
        // twine prints the reason phrase, not the body: the reason goes there too.
        Decision::Forbidden(why) => Err(with_reason(StatusCode::FORBIDDEN, &why)),
    }
}
