//! Bazel's remote API (REAPI v2) over gRPC, on the same port and over the
//! same store as the HTTP doors: Capabilities, ActionCache,
//! ContentAddressableStorage and ByteStream, for Bazel, Buck2, Pants,
//! BuildStream, recc and the other clients that speak nothing else.
//!
//! [`beside`] hands a request whose `content-type` starts with
//! `application/grpc` to the gRPC services and every other one to the HTTP
//! router. Both doors see one store: a blob written over gRPC is a hit over
//! HTTP, and the action result of an instance name is the key
//! [`crate::paths::ac_key`] names, whichever door wrote it. What HTTP
//! promises holds here too: bytes are checked against their digest before
//! anything is kept, uploads are stored whole or not at all, and memory
//! stays flat whatever the size (ByteStream streams through the store).
//!
//! - `capabilities.rs`: what the server says it does, as bazel-remote does.
//! - `action_cache.rs`: action results, served only while every output they
//!   name is in the CAS.
//! - `cas.rs`: FindMissingBlobs, the batch calls, GetTree.
//! - `bytestream.rs`: Read and resumable Write, plain or zstd.
//! - `resource.rs`: ByteStream resource names.

mod action_cache;
mod bytestream;
mod capabilities;
mod cas;
mod resource;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream::byte_stream_server::ByteStreamServer;
use larder::{Digest, Error, ErrorKind, PutOptions, Store, Target};
use re::action_cache_server::ActionCacheServer;
use re::capabilities_server::CapabilitiesServer;
use re::content_addressable_storage_server::ContentAddressableStorageServer;
use tonic::{Code, Status};
use tower::ServiceExt as _;

use crate::auth::{Access, Decision};
use crate::blobs::read_found;
use crate::metrics::{Metrics, Service};
use crate::state::{AppState, Core};

/// The largest gRPC message taken: room for a batch of [`MAX_BATCH`] bytes
/// of blobs however many they are, and bounded, since a message is decoded
/// whole. Blobs larger than a batch travel by ByteStream, in pieces.
pub const MAX_MESSAGE: usize = 8 << 20;

/// The most blob bytes in one batch call, as advertised: below the 4 MiB
/// that clients take in one message by default, with room for the digests
/// and framing of the answer.
pub const MAX_BATCH: u64 = (4 << 20) - (256 << 10);

/// The gRPC services, sharing the doors' core.
#[derive(Clone)]
pub struct Reapi {
    core: Arc<Core>,
    /// ByteStream writes in progress, or paused until resumed.
    uploads: Arc<bytestream::Uploads>,
    /// Whether the empty blob is known to be stored (see [`Reapi::keep_empty`]).
    empty_stored: Arc<std::sync::atomic::AtomicBool>,
}

impl Reapi {
    /// REAPI clients take the empty blob as always there and never upload
    /// it, though their action results name it (empty stdout): it is stored,
    /// pinned, the first time a call relies on it, so the HTTP door has it
    /// too.
    async fn keep_empty(&self) -> Result<(), Status> {
        use std::sync::atomic::Ordering;
        if self.empty_stored.load(Ordering::Relaxed) {
            return Ok(());
        }
        let pinned = PutOptions { pin: true, ..Default::default() };
        self.core
            .pool
            .run(move |store| store.put_bytes(b"", &pinned))
            .await
            .map_err(|e| status_of(&e))?;
        self.empty_stored.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The whole server: `http` for HTTP requests, the gRPC services for gRPC
/// ones (`content-type: application/grpc…`, over HTTP/2: h2c, or TLS with
/// ALPN). This is the one place where the two doors meet.
pub fn beside(http: Router, state: Arc<AppState>) -> Router {
    let reapi =
        Reapi { core: state.core.clone(), uploads: Arc::default(), empty_stored: Arc::default() };
    let grpc = tonic::service::Routes::new(
        CapabilitiesServer::new(reapi.clone()).max_decoding_message_size(MAX_MESSAGE),
    )
    .add_service(ActionCacheServer::new(reapi.clone()).max_decoding_message_size(MAX_MESSAGE))
    .add_service(
        ContentAddressableStorageServer::new(reapi.clone()).max_decoding_message_size(MAX_MESSAGE),
    )
    .add_service(ByteStreamServer::new(reapi).max_decoding_message_size(MAX_MESSAGE))
    .into_axum_router();
    Router::new().fallback_service(tower::service_fn(move |request: Request| {
        let (http, grpc, state) = (http.clone(), grpc.clone(), state.clone());
        async move {
            if !is_grpc(request.headers()) {
                return http.oneshot(request).await;
            }
            Ok(call(&state, grpc, request).await)
        }
    }))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A gRPC call: counted, authorized, answered.
async fn call(state: &Arc<AppState>, grpc: Router, request: Request) -> Response {
    let (service, access) = method(request.uri().path());
    if let Some(service) = service {
        Metrics::add(&state.core.metrics.grpc(service).calls, 1);
    }
    if let Err(refused) = authorize(state, request.headers(), access).await {
        return refused.into_http();
    }
    let response = match grpc.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    too_large_is_resource_exhausted(response)
}

/// The service a gRPC method belongs to, and the access it needs: only the
/// calls that change nothing are reads.
fn method(path: &str) -> (Option<Service>, Access) {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let service = match service {
        "build.bazel.remote.execution.v2.Capabilities" => Some(Service::Capabilities),
        "build.bazel.remote.execution.v2.ActionCache" => Some(Service::ActionCache),
        "build.bazel.remote.execution.v2.ContentAddressableStorage" => Some(Service::Cas),
        "google.bytestream.ByteStream" => Some(Service::ByteStream),
        _ => None,
    };
    let reads = [
        "GetCapabilities",
        "GetActionResult",
        "FindMissingBlobs",
        "BatchReadBlobs",
        "GetTree",
        "Read",
        "QueryWriteStatus",
    ];
    let access = match service {
        Some(_) if reads.contains(&method) => Access::Read,
        _ => Access::Write,
    };
    (service, access)
}

/// Checks the call's `authorization` metadata (HTTP Basic, as over HTTP)
/// with the server's one check.
async fn authorize(state: &AppState, headers: &HeaderMap, access: Access) -> Result<(), Status> {
    match state.decide(headers, access).await {
        Decision::Allow => Ok(()),
        Decision::Unauthorized => Err(Status::unauthenticated(
            "credentials needed or wrong: send an htpasswd user's as HTTP Basic in the \
                 authorization metadata (Bazel: --remote_header=Authorization=Basic …)",
        )),
        Decision::Forbidden(why) => Err(Status::permission_denied(why)),
    }
}

/// tonic refuses a message past its limit with OUT_OF_RANGE; gRPC says
/// RESOURCE_EXHAUSTED for that, and clients expect it.
fn too_large_is_resource_exhausted(response: Response) -> Response {
    match response.extensions().get::<Status>() {
        Some(status) if is_too_large(status) => resource_exhausted(status).into_http(),
        _ => response,
    }
}

fn is_too_large(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("message length too large")
}

fn resource_exhausted(status: &Status) -> Status {
    Status::resource_exhausted(format!(
        "{}; send blobs this large with ByteStream Write",
        status.message()
    ))
}

/// The gRPC status of a library error: what HTTP tells of it (nothing of
/// the server's own paths), with the code of its HTTP status.
fn status_of(e: &Error) -> Status {
    let (status, line) = crate::respond::told(e);
    let code = match status {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::CONFLICT => Code::Aborted,
        StatusCode::INSUFFICIENT_STORAGE => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, line)
}

/// A blob as REAPI names it: digest and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Blob {
    digest: Digest,
    size: u64,
}

impl Blob {
    /// Reads a REAPI digest; `Err` (INVALID_ARGUMENT) names what is wrong.
    fn of(digest: &re::Digest) -> Result<Blob, Status> {
        let hash = &digest.hash;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(format!(
                "digest `{}/{}` is malformed: its hash must be 64 hex digits (SHA-256)",
                hash.escape_debug(),
                digest.size_bytes
            )));
        }
        let size = u64::try_from(digest.size_bytes).map_err(|_| {
            Status::invalid_argument(format!(
                "digest `{hash}/{}` has a negative size",
                digest.size_bytes
            ))
        })?;
        let digest = format!("sha256:{hash}").parse::<Digest>().map_err(|e| status_of(&e))?;
        Ok(Blob { digest, size })
    }

    /// Reads an optional digest, which the request needs.
    fn required(digest: Option<&re::Digest>, what: &str) -> Result<Blob, Status> {
        let digest =
            digest.ok_or_else(|| Status::invalid_argument(format!("{what} is missing")))?;
        Blob::of(digest)
    }

    fn proto(&self) -> re::Digest {
        re::Digest { hash: self.digest.hex(), size_bytes: self.size as i64 }
    }

    /// The empty blob, which is always there, stored or not.
    fn is_empty(&self) -> bool {
        self.size == 0 && self.digest == empty()
    }
}

impl std::fmt::Display for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.digest.hex(), self.size)
    }
}

/// The digest of no bytes.
fn empty() -> Digest {
    static EMPTY: std::sync::OnceLock<Digest> = std::sync::OnceLock::new();
    *EMPTY.get_or_init(|| Digest::of(b""))
}

/// Refuses a request for a digest function other than SHA-256.
fn check_digest_function(value: i32) -> Result<(), Status> {
    use re::digest_function::Value;
    match Value::try_from(value) {
        Ok(Value::Unknown | Value::Sha256) => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "digest function {value} is not served here: only SHA-256 (1) is"
        ))),
    }
}

/// Which of `blobs` the store holds at their size; the empty blob always.
/// One lookup each, nothing opened or written.
fn present(store: &Store, blobs: &[Blob]) -> Result<Vec<bool>, Error> {
    let digests: Vec<Digest> = blobs.iter().map(|b| b.digest).collect();
    let sizes = store.stored_sizes(&digests)?;
    Ok(blobs.iter().zip(sizes).map(|(b, size)| b.is_empty() || size == Some(b.size)).collect())
}

/// Reads a small blob whole, checked against its digest; `None` if it is
/// not stored (or not at this size). `limit` bounds what is read into
/// memory: a larger blob is an error.
fn read_whole(store: &Store, blob: &Blob, limit: u64) -> Result<Option<Vec<u8>>, Error> {
    if blob.is_empty() {
        return Ok(Some(Vec::new()));
    }
    if blob.size > limit {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{blob} is larger than the {limit} bytes read in one message; read it with ByteStream"
            ),
        ));
    }
    let Some(found) = store.open_checked(&Target::Digest(blob.digest))? else { return Ok(None) };
    if found.size != blob.size {
        return Ok(None);
    }
    read_found(&found).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_read_access_and_the_rest_write() {
        let cas = "/build.bazel.remote.execution.v2.ContentAddressableStorage";
        assert_eq!(method(&format!("{cas}/FindMissingBlobs")), (Some(Service::Cas), Access::Read));
        assert_eq!(method(&format!("{cas}/BatchUpdateBlobs")), (Some(Service::Cas), Access::Write));
        assert_eq!(
            method("/google.bytestream.ByteStream/Write"),
            (Some(Service::ByteStream), Access::Write)
        );
        assert_eq!(
            method("/build.bazel.remote.execution.v2.ActionCache/GetActionResult"),
            (Some(Service::ActionCache), Access::Read)
        );
        assert_eq!(method("/other.Service/Read"), (None, Access::Write));
    }

    /// What fails on the server is logged; a gRPC client is told what
    /// happened, as an HTTP one is, not the server's paths.
    #[test]
    fn server_failures_name_no_server_paths() {
        let path = std::path::Path::new("/srv/larder/blobs/ab/cd");
        let failed = Error::io("read", path, std::io::Error::other("input/output error"));
        let status = status_of(&failed);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/srv/larder"), "{}", status.message());
        let bad = Error::new(ErrorKind::InvalidInput, "the upload of x hashes to y");
        assert_eq!(status_of(&bad).code(), Code::InvalidArgument);
        assert_eq!(status_of(&bad).message(), "the upload of x hashes to y");
    }

    #[test]
    fn digests() {
        let ok = re::Digest { hash: "ab".repeat(32), size_bytes: 3 };
        assert_eq!(Blob::of(&ok).expect("digest").to_string(), format!("{}/3", "ab".repeat(32)));
        let short = re::Digest { hash: "ab".into(), size_bytes: 3 };
        assert_eq!(Blob::of(&short).expect_err("short").code(), Code::InvalidArgument);
        let negative = re::Digest { hash: "ab".repeat(32), size_bytes: -1 };
        assert_eq!(Blob::of(&negative).expect_err("negative").code(), Code::InvalidArgument);
        let empty = re::Digest { hash: Digest::of(b"").hex(), size_bytes: 0 };
        assert!(Blob::of(&empty).expect("empty").is_empty());
    }
}
