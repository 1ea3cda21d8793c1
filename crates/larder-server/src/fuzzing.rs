//! What the fuzz targets (`fuzz/` at the top of the repository) call: the
//! server's readers of what clients and upstream indexes send. Built only
//! with `--cfg fuzzing`, which `cargo fuzz` sets; not an API.

use std::path::Path;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, header};
use tower::ServiceExt;

use crate::htpasswd::Htpasswd;
use crate::respond::Range;

/// htpasswd text: read or refused with a line number; every user read can
/// be checked against a password (bcrypt costs kept low for speed).
pub fn htpasswd(text: &str) {
    if let Ok(users) = Htpasswd::parse(text)
        && let Some(hash) = users.costliest()
        && hash.cost() <= 4
    {
        let _ = hash.verify("password");
    }
}

/// A `Range` header for a body of `size` bytes: what it asks is within the
/// body, or the whole, or unsatisfiable.
pub fn range(value: &[u8], size: u64) {
    let Ok(value) = HeaderValue::from_bytes(value) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(header::RANGE, value);
    if let Range::Part { start, end } = Range::of(&headers, size) {
        assert!(start <= end && end < size, "{start}..={end} of {size}");
    }
}

/// A project page from an upstream index, HTML and JSON.
pub fn simple_page(body: &str) {
    crate::pypi::upstream::parse_page_for_fuzzing(body);
}

/// A server on a home of its own, in process, for multipart uploads.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

impl Server {
    /// A server whose home is the empty folder `home`.
    pub fn new(home: &Path) -> Server {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let addr = "127.0.0.1:0".parse().expect("an address");
        let options = crate::ServeOptions::new(home.to_path_buf(), 64 << 20, addr);
        let router = runtime.block_on(async {
            crate::Assembled::open(&options).expect("open the server").router()
        });
        Server { runtime, router }
    }

    /// POSTs `body` as a `multipart/form-data` upload (boundary `x`); the
    /// status, which is never a 5xx other than 503/507.
    pub fn upload(&self, body: &[u8]) -> u16 {
        let request = Request::builder()
            .method("POST")
            .uri("/legacy/")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=x")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body.to_vec()))
            .expect("a request");
        let router = self.router.clone();
        let status = self
            .runtime
            .block_on(async move { router.oneshot(request).await.expect("infallible").status() });
        let code = status.as_u16();
        assert!(code < 500 || code == 503 || code == 507, "answered {status}");
        code
    }
}
