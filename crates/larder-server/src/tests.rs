//! The router in process: requests answered without a socket, for what
//! needs no real client (the real clients are in the integration tests).

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use tower::ServiceExt;

use super::{Assembled, ServeOptions};

/// A server on a home of its own.
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub server: Assembled,
}

/// What the server answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    /// A server whose options `change` adjusts.
    pub fn with(change: impl FnOnce(&mut ServeOptions)) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = "127.0.0.1:0".parse().expect("addr");
        let mut options = ServeOptions::new(dir.path().to_path_buf(), 1 << 30, addr);
        change(&mut options);
        let server = Assembled::open(&options).expect("open the server");
        Fixture { _dir: dir, server }
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.server.router().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        Answer { status: parts.status, headers: parts.headers, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(request("GET", path, &[], Body::empty())).await
    }

    pub async fn put(&self, path: &str, bytes: &[u8]) -> Answer {
        let length = bytes.len().to_string();
        let body = Body::from(bytes.to_vec());
        self.send(request("PUT", path, &[("content-length", &length)], body)).await
    }
}

/// A request with `headers`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(body).expect("request")
}

fn sha256_hex(bytes: &[u8]) -> String {
    larder::Digest::of(bytes).hex()
}

#[tokio::test]
async fn ranges_and_etags() {
    let f = Fixture::new();
    assert_eq!(f.put("/k/hello", b"hello\n").await.status, StatusCode::CREATED);
    // Twice: once from the file, once from memory.
    for _ in 0..2 {
        let got = f.get("/k/hello").await;
        assert_eq!((got.status, got.text().as_str()), (StatusCode::OK, "hello\n"));
        let tag = format!("\"sha256:{}\"", sha256_hex(b"hello\n"));
        assert_eq!(got.header("etag"), Some(tag.as_str()));
        assert_eq!(got.header("content-length"), Some("6"));
        for condition in [tag.as_str(), "\"other\", W/".to_owned().as_str(), "*"] {
            let asked = request("GET", "/k/hello", &[("if-none-match", condition)], Body::empty());
            let expected =
                if condition.contains("other") { StatusCode::OK } else { StatusCode::NOT_MODIFIED };
            assert_eq!(f.send(asked).await.status, expected, "{condition}");
        }
        let part =
            f.send(request("GET", "/k/hello", &[("range", "bytes=1-3")], Body::empty())).await;
        assert_eq!((part.status, part.text().as_str()), (StatusCode::PARTIAL_CONTENT, "ell"));
        assert_eq!(part.header("content-range"), Some("bytes 1-3/6"));
        assert_eq!(part.header("content-length"), Some("3"));
        let past =
            f.send(request("GET", "/k/hello", &[("range", "bytes=10-")], Body::empty())).await;
        assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(past.header("content-range"), Some("bytes */6"));
        let several =
            f.send(request("GET", "/k/hello", &[("range", "bytes=0-1,3-4")], Body::empty())).await;
        assert_eq!((several.status, several.text().as_str()), (StatusCode::OK, "hello\n"));
    }
    let head = f.send(request("HEAD", "/k/hello", &[], Body::empty())).await;
    assert_eq!((head.status, head.header("content-length")), (StatusCode::OK, Some("6")));
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn bad_paths_are_400_and_store_nothing() {
    let f = Fixture::new();
    for path in ["/a/../b", "/a/%2e%2e/b", "/a/%2E%2E", "/a//b", "/a/%00", "/%ff"] {
        assert_eq!(f.get(path).await.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(f.put(path, b"x").await.status, StatusCode::BAD_REQUEST, "{path}");
    }
    let wrong = f.put(&format!("/cas/{}", "0".repeat(64)), b"not zeros").await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.text());
    assert_eq!(f.get(&format!("/cas/{}", "0".repeat(64))).await.status, StatusCode::NOT_FOUND);
    let right = format!("/cas/{}", sha256_hex(b"zeros"));
    assert_eq!(f.put(&right, b"zeros").await.status, StatusCode::CREATED);
    assert_eq!(f.get(&right).await.text(), "zeros");
}

#[tokio::test]
async fn the_index_keys_and_larders_own_are_not_written_through_the_generic_door() {
    let f = Fixture::new();
    for path in ["/pypi/x/x-1.0.tar.gz", "/pypi", "/larder/downloads/abc"] {
        for method in ["PUT", "DELETE", "MKCOL"] {
            let got = f.send(request(method, path, &[], Body::from("x"))).await;
            assert_eq!(got.status, StatusCode::FORBIDDEN, "{method} {path}: {}", got.text());
        }
    }
    // Reading them is fine.
    assert_eq!(f.get("/larder/downloads/abc").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn head_of_the_root_options_and_unknown_methods() {
    let f = Fixture::new();
    let head = f.send(request("HEAD", "/", &[], Body::empty())).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-type"), Some("text/html"));
    assert!(f.get("/").await.text().contains("hit ratio"));
    let options = f.send(request("OPTIONS", "/anything", &[], Body::empty())).await;
    assert_eq!(options.status, StatusCode::OK);
    assert_eq!(options.header("dav"), Some("1"));
    assert!(options.header("allow").is_some_and(|a| a.contains("PROPFIND")));
    let patch = f.send(request("PATCH", "/x", &[], Body::empty())).await;
    assert_eq!(patch.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(f.put("/", b"x").await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(f.get("/healthz").await.text(), "ok\n");
}

#[tokio::test]
async fn the_package_index_has_its_paths_and_no_others() {
    let f = Fixture::new();
    let simple = f.get("/simple").await;
    assert_eq!(simple.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(simple.header("location"), Some("/simple/"));
    assert_eq!(f.get("/simple/").await.status, StatusCode::OK);
    let project = f.get("/simple/Some_Project").await;
    assert_eq!(project.header("location"), Some("/simple/some-project/"));
    assert_eq!(f.get("/simple/some-project/").await.status, StatusCode::NOT_FOUND);
    let post = f.send(request("POST", "/simple/", &[], Body::empty())).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(post.text().contains("upload to / or /legacy/"), "{}", post.text());
    assert_eq!(f.put("/simple/x/", b"x").await.status, StatusCode::METHOD_NOT_ALLOWED);
    let upload = f.send(request("POST", "/legacy/", &[], Body::from("x"))).await;
    assert_eq!(upload.status, StatusCode::BAD_REQUEST);
    assert!(upload.text().contains("not multipart/form-data"), "{}", upload.text());
    // Paths that merely start like the index's are keys.
    assert_eq!(f.put("/simplex", b"key").await.status, StatusCode::CREATED);
    assert_eq!(f.get("/simplex").await.text(), "key");
}

/// Every request and every answer is counted, `/status` and `/metrics`
/// included.
#[tokio::test]
async fn status_and_metrics_answers_are_counted() {
    let f = Fixture::new();
    f.get("/status").await;
    f.get("/metrics").await;
    f.get("/missing").await;
    let status: serde_json::Value =
        serde_json::from_slice(&f.get("/status").await.body).expect("json");
    assert_eq!(status["requests"], 4, "{status}");
    assert_eq!(status["uploads_in_flight"], 0, "{status}");
    let metrics = f.get("/metrics").await.text();
    // Five requests; the one being answered is not counted yet.
    assert!(metrics.contains("larder_http_requests_total{method=\"GET\"} 5"), "{metrics}");
    assert!(metrics.contains("larder_http_responses_total{class=\"2xx\"} 3"), "{metrics}");
    assert!(metrics.contains("larder_http_responses_total{class=\"4xx\"} 1"), "{metrics}");
}

/// An upstream index on a port of its own: `page` at every project page,
/// and how many times it was asked.
struct Upstream {
    url: String,
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    async fn start(page: String) -> Upstream {
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        let app = axum::Router::new().fallback(move || {
            let page = page.clone();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { ([("content-type", "text/html")], page) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/simple/", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { url, asked }
    }

    fn asked(&self) -> usize {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

const LINK: &str = "<a href=\"/files/pkg-1.0.tar.gz\">pkg-1.0.tar.gz</a>";

/// Two indexes in one process keep their own record of what they checked:
/// one's visit does not make the other trust a page it never read.
#[tokio::test]
async fn two_servers_in_one_process_check_upstreams_apart() {
    let upstream = Upstream::start(LINK.to_string()).await;
    let one = Fixture::with(|o| o.upstreams = vec![upstream.url.clone()]);
    let two = Fixture::with(|o| o.upstreams = vec![upstream.url.clone()]);
    let page = one.get("/simple/pkg/").await;
    assert!(page.text().contains("pkg-1.0.tar.gz"), "{}", page.text());
    one.get("/simple/pkg/").await;
    assert_eq!(upstream.asked(), 1, "within its TTL, a page is not asked again");
    let page = two.get("/simple/pkg/").await;
    assert!(page.text().contains("pkg-1.0.tar.gz"), "{}", page.text());
    assert_eq!(upstream.asked(), 2);
}

/// An upstream page larger than the limit is refused, not read into memory
/// and listed.
#[tokio::test]
async fn an_upstream_page_past_the_limit_is_not_read() {
    let limit = crate::pypi::upstream::PAGE_LIMIT as usize;
    let padding = " ".repeat(limit);
    let upstream = Upstream::start(format!("<html>{LINK}{padding}</html>")).await;
    let f = Fixture::with(|o| o.upstreams = vec![upstream.url.clone()]);
    let page = f.get("/simple/pkg/").await;
    assert_eq!(upstream.asked(), 1);
    // Nothing listed, and the upstream's page could not be read: a 502 that
    // says why, not a 404.
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.text());
    assert!(page.text().contains("the page is larger than 32 MiB"), "{}", page.text());
}

/// A wheel whose METADATA says `Name: name` and `Version: version`.
fn wheel(name: &str, version: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("pkg-1.0.dist-info/METADATA", stored).expect("zip");
    write!(zip, "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n").expect("zip");
    zip.finish().expect("zip").into_inner()
}

/// An upload as twine sends it: `fields`, then the file.
fn upload(fields: &[(&str, &str)], filename: &str, file: &[u8]) -> Request<Body> {
    let boundary = "larder-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    request("POST", "/legacy/", &[("content-type", &content_type)], Body::from(body))
}

const ACTION: (&str, &str) = (":action", "file_upload");

/// Fields an upload does not read (a long description) are read past, not
/// kept in memory, so their size is not limited as a field's; the fields it
/// reads are kept small.
#[tokio::test]
async fn fields_an_upload_does_not_read_are_not_kept() {
    let f = Fixture::new();
    let description = "x".repeat(3 << 20);
    let fields = [ACTION, ("name", "pkg"), ("version", "1.0"), ("description", &description)];
    let got = f.send(upload(&fields, "pkg-1.0-py3-none-any.whl", &wheel("pkg", "1.0"))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let long_name = "p".repeat(100 << 10);
    let fields = [ACTION, ("name", &long_name), ("version", "2.0")];
    let got = f.send(upload(&fields, "pkg-2.0-py3-none-any.whl", &wheel("pkg", "2.0"))).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text());
    assert!(got.text().contains("the field name is larger than 64 KiB"), "{}", got.text());
}

/// A file whose metadata names another project or version than its name is
/// refused, with PEP 440's idea of a version (`1.0` is not `10`).
#[tokio::test]
async fn uploads_whose_metadata_disagrees_with_their_name_are_refused() {
    let f = Fixture::new();
    let cases = [
        ("liewhl-1.0-py3-none-any.whl", "numpy", "1.0", "names the project numpy"),
        ("pkg-1.0-py3-none-any.whl", "pkg", "10", "names the version 10"),
        ("pkg-1.1.0-py3-none-any.whl", "pkg", "11.0", "names the version 11.0"),
    ];
    for (filename, name, version, why) in cases {
        let file = wheel(name, version);
        let project = filename.split('-').next().expect("name");
        let got = f.send(upload(&[ACTION, ("name", project)], filename, &file)).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{filename}: {}", got.text());
        assert!(got.text().contains(why), "{filename}: {}", got.text());
    }
    // The form's version field is compared the same way.
    let file = wheel("pkg", "1.0");
    let fields = [ACTION, ("name", "pkg"), ("version", "10")];
    let got = f.send(upload(&fields, "pkg-1.0-py3-none-any.whl", &file)).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text());
    assert_eq!(f.get("/simple/pkg/").await.status, StatusCode::NOT_FOUND);
    // Spellings PEP 440 holds equal are one version.
    let fields = [ACTION, ("name", "Pkg"), ("version", "1.0.0")];
    let got = f.send(upload(&fields, "pkg-1.0-py3-none-any.whl", &wheel("PKG", "1.0"))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
}

/// What fails on the server is logged; the client is told what happened
/// and who can fix it, not the server's paths or temporary files.
#[tokio::test]
async fn error_answers_name_no_server_paths() {
    let f = Fixture::with(|o| o.capacity = 1 << 20);
    let pinned = larder::PutOptions { key: Some("pinned".into()), pin: true, ..Default::default() };
    f.server
        .state
        .core
        .pool
        .with(|store| store.put_bytes(&vec![7u8; 900 << 10], &pinned))
        .expect("put");
    let got = f.put("/more", &[1u8; 200 << 10]).await;
    assert_eq!(got.status, StatusCode::INSUFFICIENT_STORAGE, "{}", got.text());
    let home = f._dir.path().display().to_string();
    assert!(!got.text().contains(&home), "{}", got.text());
    assert!(!got.text().contains("tmp/"), "{}", got.text());
    assert!(got.text().contains("raise its capacity"), "{}", got.text());
}

/// A zstd PUT is held to the limit by what it decodes to, not by the bytes
/// sent; bytes that do not decode are the client's error.
#[tokio::test]
async fn zstd_uploads_are_limited_by_what_they_decode_to() {
    let f = Fixture::with(|o| o.max_blob_size = Some(64 << 10));
    let zstd = |bytes: &[u8]| zstd::bulk::compress(bytes, 3).expect("zstd");
    let path = format!("/ac/{}", sha256_hex(b"action"));
    let put = |body: Vec<u8>| {
        let length = body.len().to_string();
        let headers = [("content-length", length.as_str()), ("content-encoding", "zstd")];
        request("PUT", &path, &headers, Body::from(body))
    };
    let large = zstd(&vec![0u8; 1 << 20]);
    assert!(large.len() < 64 << 10);
    let got = f.send(put(large)).await;
    assert_eq!(got.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", got.text());
    let got = f.send(put(b"not zstd".to_vec())).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text());
    assert!(got.text().contains("zstd"), "{}", got.text());
    assert_eq!(f.get(&path).await.status, StatusCode::NOT_FOUND);
    let got = f.send(put(zstd(b"small"))).await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.text());
    assert_eq!(f.get(&path).await.body, &b"small"[..]);
}
