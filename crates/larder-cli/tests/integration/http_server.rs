//! A small HTTP/1.1 file server for tests, on 127.0.0.1: it counts requests
//! per path, honours `Range`, answers conditional requests (`If-None-Match`,
//! `If-Modified-Since`) with `304`, and can be told to fail, hang before
//! answering, stall, drop the connection, redirect, send slowly or stop.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does with the next request for a path, before it serves
/// normally again.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answers with this status and no body.
    Status(u16),
    /// Sends the headers and this many bytes of the body, then goes silent.
    Stall(usize),
    /// Sends the headers and this many bytes of the body, then closes.
    Drop(usize),
    /// Ignores Range, sends the whole body from its start, and closes after
    /// this many bytes (a cache that does not have the file yet).
    WholeThenDrop(usize),
}

#[derive(Debug, Clone, Default)]
struct Resource {
    body: Arc<Vec<u8>>,
    faults: VecDeque<Fault>,
    /// Bytes per second, if throttled.
    rate: Option<usize>,
    /// Serve Range requests (a server that ignores them sends everything).
    ranges: bool,
    /// Answer every request with this status.
    always: Option<u16>,
    /// Redirect here.
    redirect: Option<String>,
    /// Take every request and never answer it.
    hang: bool,
    /// How many times the body was replaced: its Last-Modified moves with it.
    version: u32,
}

impl Resource {
    /// A strong ETag from the body's bytes.
    fn etag(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.body.hash(&mut hasher);
        format!("\"{:016x}-{}\"", hasher.finish(), self.body.len())
    }

    fn last_modified(&self) -> String {
        format!("Mon, 07 Dec 2026 00:{:02}:{:02} GMT", self.version / 60, self.version % 60)
    }
}

/// One request the server received.
#[derive(Debug, Clone, Default)]
struct Request {
    range: String,
    /// It carried If-None-Match or If-Modified-Since.
    conditional: bool,
    /// It was answered `304 Not Modified`.
    not_modified: bool,
}

#[derive(Default)]
struct State {
    resources: HashMap<String, Resource>,
    requests: HashMap<String, Vec<Request>>,
}

/// The server; it runs until the test process ends.
#[derive(Clone)]
pub struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
    stopped: Arc<AtomicBool>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = Server { port, state: Arc::default(), stopped: Arc::default() };
        let handle = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if handle.stopped.load(Ordering::SeqCst) {
                    // Dropping the listener refuses every later connection.
                    return;
                }
                let handle = handle.clone();
                std::thread::spawn(move || {
                    let _ = handle.serve(stream);
                });
            }
        });
        server
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `body` at `path`, with Range support; a body that replaces
    /// another gets a new ETag and Last-Modified.
    pub fn add(&self, path: &str, body: Vec<u8>) {
        let mut state = self.lock();
        let version = state.resources.get(path).map_or(0, |r| r.version + 1);
        let resource =
            Resource { body: Arc::new(body), ranges: true, version, ..Resource::default() };
        state.resources.insert(path.to_string(), resource);
    }

    /// Stops listening: connections are refused from now on.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn with(&self, path: &str, f: impl FnOnce(&mut Resource)) {
        let mut state = self.lock();
        let resource = state.resources.entry(path.to_string()).or_default();
        f(resource);
    }

    /// The next requests for `path` meet these faults, one each.
    pub fn faults(&self, path: &str, faults: &[Fault]) {
        self.with(path, |r| r.faults.extend(faults.iter().cloned()));
    }

    /// Sends `path` at `bytes_per_sec`.
    pub fn throttle(&self, path: &str, bytes_per_sec: usize) {
        self.with(path, |r| r.rate = Some(bytes_per_sec));
    }

    /// Answers every request for `path` with `status`.
    pub fn always(&self, path: &str, status: u16) {
        self.with(path, |r| r.always = Some(status));
    }

    /// Takes every request for `path` and never answers (`false`: serves again).
    pub fn hang(&self, path: &str, on: bool) {
        self.with(path, |r| r.hang = on);
    }

    /// Ignores Range on `path`.
    pub fn no_ranges(&self, path: &str) {
        self.with(path, |r| r.ranges = false);
    }

    /// Redirects `path` to `to`.
    pub fn redirect(&self, path: &str, to: &str) {
        self.with(path, |r| r.redirect = Some(to.to_string()));
    }

    /// How many requests `path` got.
    pub fn count(&self, path: &str) -> usize {
        self.lock().requests.get(path).map_or(0, Vec::len)
    }

    /// The Range header of each request for `path` (empty if none).
    pub fn ranges(&self, path: &str) -> Vec<String> {
        self.requests(path).into_iter().map(|r| r.range).collect()
    }

    /// How many requests for `path` were conditional.
    pub fn conditional_gets(&self, path: &str) -> usize {
        self.requests(path).iter().filter(|r| r.conditional).count()
    }

    /// How many requests for `path` were answered `304 Not Modified`.
    pub fn not_modified(&self, path: &str) -> usize {
        self.requests(path).iter().filter(|r| r.not_modified).count()
    }

    /// How many requests for `path` were sent the whole body: not
    /// conditional, or conditional on a version that changed.
    pub fn full_gets(&self, path: &str) -> usize {
        self.requests(path).iter().filter(|r| r.range.is_empty() && !r.not_modified).count()
    }

    fn requests(&self, path: &str) -> Vec<Request> {
        self.lock().requests.get(path).cloned().unwrap_or_default()
    }

    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut range = String::new();
        let mut if_none_match = None;
        let mut if_modified_since = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                let v = v.trim().to_string();
                if k.eq_ignore_ascii_case("range") {
                    range = v;
                } else if k.eq_ignore_ascii_case("if-none-match") {
                    if_none_match = Some(v);
                } else if k.eq_ignore_ascii_case("if-modified-since") {
                    if_modified_since = Some(v);
                }
            }
        }
        let resource = {
            let mut state = self.lock();
            let conditional = if_none_match.is_some() || if_modified_since.is_some();
            let request = Request { range: range.clone(), conditional, not_modified: false };
            state.requests.entry(path.clone()).or_default().push(request);
            let Some(r) = state.resources.get_mut(&path) else {
                drop(state);
                return respond(&stream, 404, &[], b"");
            };
            let fault = r.faults.pop_front();
            let r = r.clone();
            // If-None-Match decides when sent (RFC 9110, 13.2.2).
            let unchanged = match (&if_none_match, &if_modified_since) {
                (Some(tags), _) => tags.split(',').any(|t| t.trim() == r.etag()),
                (None, Some(date)) => *date == r.last_modified(),
                (None, None) => false,
            };
            let unchanged = unchanged && fault.is_none() && r.always.is_none();
            if unchanged
                && let Some(last) = state.requests.get_mut(&path).and_then(|v| v.last_mut())
            {
                last.not_modified = true;
            }
            (r, fault, unchanged)
        };
        let (resource, fault, unchanged) = resource;
        let mut out = stream;
        if resource.hang {
            std::thread::sleep(Duration::from_secs(120));
            return Ok(());
        }
        if let Some(to) = &resource.redirect {
            return respond(&out, 302, &[("Location", to.clone())], b"");
        }
        if let Some(status) = resource.always {
            return respond(&out, status, &[], b"");
        }
        if let Some(Fault::Status(status)) = fault {
            return respond(&out, status, &[], b"");
        }
        let body = &resource.body;
        let ignore_range = matches!(fault, Some(Fault::WholeThenDrop(_)));
        let start = range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|_| resource.ranges && !ignore_range)
            .unwrap_or(0)
            .min(body.len());
        let validators = [("ETag", resource.etag()), ("Last-Modified", resource.last_modified())];
        if unchanged {
            return respond(&out, 304, &validators, b"");
        }
        let mut headers = vec![
            ("Content-Length", (body.len() - start).to_string()),
            ("Accept-Ranges", "bytes".to_string()),
        ];
        headers.extend(validators);
        let status = if start > 0 {
            headers.push((
                "Content-Range",
                format!("bytes {start}-{}/{}", body.len() - 1, body.len()),
            ));
            206
        } else {
            200
        };
        write_head(&mut out, status, &headers)?;
        if method == "HEAD" {
            return Ok(());
        }
        let rest = &body[start..];
        let (limit, then) = match fault {
            Some(Fault::Stall(n)) => (n.min(rest.len()), Some(true)),
            Some(Fault::Drop(n) | Fault::WholeThenDrop(n)) => (n.min(rest.len()), Some(false)),
            _ => (rest.len(), None),
        };
        send(&mut out, &rest[..limit], resource.rate)?;
        match then {
            Some(true) => {
                out.flush()?;
                std::thread::sleep(Duration::from_secs(30));
            }
            Some(false) => {
                let _ = out.shutdown(std::net::Shutdown::Both);
            }
            None => {}
        }
        Ok(())
    }
}

fn send(out: &mut TcpStream, bytes: &[u8], rate: Option<usize>) -> std::io::Result<()> {
    match rate {
        None => out.write_all(bytes),
        Some(rate) => {
            // Ten slices a second.
            let slice = (rate / 10).max(1);
            for chunk in bytes.chunks(slice) {
                out.write_all(chunk)?;
                out.flush()?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
    }
}

fn write_head(out: &mut TcpStream, status: u16, headers: &[(&str, String)]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        302 => "Found",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn respond(
    mut out: &TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut all = headers.to_vec();
    all.push(("Content-Length", body.len().to_string()));
    let mut stream = out.try_clone()?;
    write_head(&mut stream, status, &all)?;
    out.write_all(body)
}
