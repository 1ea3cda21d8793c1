//! What the handlers share: the store's handles, the memory cache, the
//! counters and the upload limits (`Core`, which every door uses), and who
//! may do what (`AppState`, which the router checks before any door).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::auth::{Access, Auth, Decision};
use crate::hot::HotCache;
use crate::metrics::Metrics;
use crate::pool::StorePool;
use crate::respond::text;

/// What every door shares.
pub struct Core {
    pub pool: Arc<StorePool>,
    /// Small blobs read lately, kept in memory.
    pub hot: Arc<HotCache>,
    pub metrics: Arc<Metrics>,
    pub uploads: Uploads,
}

/// Uploads streaming into the store: each holds a blocking thread and a
/// store handle, so they are limited apart from connections.
pub struct Uploads {
    permits: tokio::sync::Semaphore,
    /// The largest body accepted (never more than the store's capacity).
    pub limit: u64,
    /// How long a client may leave an upload without sending a byte.
    pub timeout: Duration,
}

/// Uploads taken at once; more get 503 and retry.
pub const UPLOADS_AT_ONCE: usize = 128;

impl Uploads {
    pub fn new(limit: u64, timeout: Duration) -> Uploads {
        Uploads { permits: tokio::sync::Semaphore::new(UPLOADS_AT_ONCE), limit, timeout }
    }

    /// A permit to stream an upload into the store, or `None`: too many now.
    pub fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.permits.try_acquire().ok()
    }

    /// The 503 for an upload past [`UPLOADS_AT_ONCE`], which says to retry.
    pub fn too_many() -> Response {
        let mut response = text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{UPLOADS_AT_ONCE} uploads are in progress; retry in a moment"),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }

    /// Uploads streaming now.
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
            Metrics::add(&state.core.metrics.auth_failures, 1);
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
